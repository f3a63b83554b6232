"""PointNav: a 2-D point that must find a hidden goal on the unit circle (pure numpy, batched).

The point starts at the origin; each action moves it by the action clipped to ±0.1 per axis;
the reward is −‖position − goal‖ every step. Training goals lie on the upper unit half-circle;
the OOD split lies on the lower half-circle. 20-step episodes, so a whole trial is cheap and
every algorithm can be checked for real learning in minutes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from metarl.envs.base import Benchmark, Task, TaskBatchEnv, split_rng

MAX_STEP = 0.1


def goal_task(angle: float) -> Task:
    return Task(params={"angle": float(angle)}, label=f"angle={angle:.4f}")


class PointNavBatch(TaskBatchEnv):
    obs_dim = 2
    act_dim = 2

    def __init__(self, n: int, threads: int = 1):
        # `threads` is ignored: the batch is already one vectorised numpy step.
        self.n = n
        self.action_low = np.full(2, -MAX_STEP, dtype=np.float32)
        self.action_high = np.full(2, MAX_STEP, dtype=np.float32)
        self._pos = np.zeros((n, 2), dtype=np.float64)
        self._goal = np.zeros((n, 2), dtype=np.float64)
        self._obs = np.zeros((n, 2), dtype=np.float32)
        self._reward = np.zeros(n, dtype=np.float64)
        self._terminated = np.zeros(n, dtype=bool)
        self._success = np.zeros(n, dtype=np.float64)

    def set_tasks(self, tasks: Sequence[Task], rngs: Sequence[np.random.Generator]) -> None:
        angles = np.array([t.params["angle"] for t in tasks], dtype=np.float64)
        self._goal[:] = np.stack([np.cos(angles), np.sin(angles)], axis=1)

    def reset(self, slots: np.ndarray) -> np.ndarray:
        # Deterministic start at the origin: the reset generators are not needed.
        self._pos[slots] = 0.0
        return self._pos[slots].astype(np.float32)

    def step(self, actions: np.ndarray, active: np.ndarray):
        move = np.clip(actions, -MAX_STEP, MAX_STEP)
        self._pos[active] += move[active]
        dist = np.linalg.norm(self._pos - self._goal, axis=1)
        self._reward[active] = -dist[active]
        self._obs[active] = self._pos[active]
        return self._obs, self._reward, self._terminated, self._success


def _sample_upper(rng: np.random.Generator, n: int) -> list[Task]:
    return [goal_task(a) for a in rng.uniform(0.0, np.pi, size=n)]


def _splits() -> dict[str, list[Task]]:
    return {
        "test": _sample_upper(split_rng(POINT_NAV_SPLIT_SEED, "test"), 20),
        "ood": [goal_task(a) for a in split_rng(POINT_NAV_SPLIT_SEED, "ood").uniform(np.pi, 2 * np.pi, size=20)],
    }


POINT_NAV_SPLIT_SEED = 7001

POINT_NAV = Benchmark(
    id="PointNav",
    summary="2-D point to a hidden goal on the upper unit half-circle (OOD: lower half); 20 steps",
    family="toy",
    episode_length=20,
    train_episodes=2,
    eval_episodes=6,
    exploration_episodes=0,
    split_seed=POINT_NAV_SPLIT_SEED,
    obs_dim=2,
    act_dim=2,
    action_bound=MAX_STEP,
    make_env=PointNavBatch,
    sample_train_tasks=_sample_upper,
    make_splits=_splits,
    train_range=(0.0, float(np.pi)),
    split_notes={"test": "goals on the upper half-circle", "ood": "goals on the lower half-circle"},
)
