"""The evaluation protocol (SPEC §5), the same for every algorithm.

An evaluation runs one trial of `benchmark.eval_episodes` episodes on every task of a split
(or its first `eval_tasks`), with the agent's context carried across the episodes of a trial.
MuJoCo and PointNav: deterministic actions in every episode. Meta-World: the first
`exploration_episodes` adapt with the agent's exploration behaviour (stochastic), the rest are
scored with deterministic actions; success = success at any step of the episode.

Rows, one per episode: iteration, env_steps, split, task (index in the split), episode
(index in the trial), return, success (blank where the benchmark has no success signal), and
what a reader needs to score the row without knowing the benchmark: scored (1 where the episode
counts for the success rate: after Meta-World's exploration episodes, every episode elsewhere),
task_label and task_value (the task's parameter where it has exactly one number, e.g.
HalfCheetahVel's target velocity; blank otherwise).

Per step (`Evaluator.evaluate(..., rewards=[])`, `metarl evaluate --steps`): every step's
reward as a [tasks, episodes, episode_length] float32 array, NaN after an episode that ended
early (`step_rewards`); its sums over steps are the rows' returns to float32 rounding.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Callable

import numpy as np

from metarl.agent import Agent, TrialSpec
from metarl.envs.base import Benchmark, TaskBatchEnv, _name_key
from metarl.sampling import run_trials
from metarl.seeding import eval_agent_seed, eval_env_rngs

# Evaluation tasks run this many at a time (one trial per slot).
EVAL_CHUNK = 25


class Evaluator:
    def __init__(self, benchmark: Benchmark, seed: int, eval_tasks: int = 0):
        self.benchmark = benchmark
        self.seed = seed
        self.eval_tasks = eval_tasks
        self._envs: dict[int, TaskBatchEnv] = {}

    def _env(self, n: int) -> TaskBatchEnv:
        if n not in self._envs:
            self._envs[n] = self.benchmark.make_env(n)
        return self._envs[n]

    def tasks(self, split: str):
        tasks = self.benchmark.split(split)
        return tasks[: self.eval_tasks] if self.eval_tasks else tasks

    def evaluate(self, agent: Agent, split: str, iteration: int, env_steps: int,
                 memory: list[dict[str, np.ndarray]] | None = None,
                 rewards: list[np.ndarray] | None = None,
                 wrap_env: Callable[[TaskBatchEnv, np.ndarray], TaskBatchEnv] | None = None,
                 ) -> list[dict[str, Any]]:
        """Evaluation rows of `split`. With a `memory` list (and an agent that exports its
        episodic memory), one dict per chunk of tasks is appended to it: every evaluated step's
        `memory` vector with its `task` index, `episode` and `step`. With a `rewards` list, one
        array per chunk of tasks is appended to it: `step_rewards` of the chunk's trials
        (concatenated in order, [tasks, episodes, episode_length]). With `wrap_env`, each chunk's
        trials run on `wrap_env(env, task indices)` (an observer such as `metarl.video`'s, which
        must leave the rollout as it is). None of them changes the rows."""
        bench = self.benchmark
        tasks = self.tasks(split)
        key = _name_key(split)
        rows: list[dict[str, Any]] = []
        for chunk, start in enumerate(range(0, len(tasks), EVAL_CHUNK)):
            chunk_tasks = tasks[start : start + EVAL_CHUNK]
            indices = np.arange(start, start + len(chunk_tasks))
            spec = TrialSpec.for_evaluation(bench, eval_agent_seed(self.seed, iteration, key, chunk))
            env = self._env(len(chunk_tasks))
            batch = run_trials(
                env if wrap_env is None else wrap_env(env, indices),
                agent,
                chunk_tasks,
                spec,
                eval_env_rngs(bench.split_seed, key, indices),
                record_extras=memory is not None,
            )
            if memory is not None:
                valid = batch.valid
                memory.append({
                    "memory": batch.extras["memory"][valid],
                    "task": np.broadcast_to(indices[:, None], valid.shape)[valid],
                    "episode": batch.episode[valid],
                    "step": batch.step[valid],
                })
            if rewards is not None:
                rewards.append(step_rewards(batch))
            for row, task_index in enumerate(indices):
                task = tasks[task_index]
                for episode in range(bench.eval_episodes):
                    rows.append(
                        {
                            "iteration": iteration,
                            "env_steps": env_steps,
                            "split": split,
                            "task": int(task_index),
                            "episode": episode,
                            "return": float(batch.episode_returns[row, episode]),
                            "success": float(batch.episode_success[row, episode]) if bench.has_success else None,
                            "scored": episode >= bench.exploration_episodes,
                            "task_label": task.label,
                            "task_value": task_value(task),
                        }
                    )
        return rows

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def task_value(task) -> float | None:
    """The task's parameter where it is a single number (a target velocity, a goal angle)."""
    numbers = [v for v in task.params.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(numbers[0]) if len(numbers) == 1 else None


def step_rewards(batch) -> np.ndarray:
    """Every step's reward of a batch of trials as [trials, episodes, episode_length] float32
    (the sampler's stored rewards), NaN after an episode that ended before its time limit."""
    out = np.full((batch.n, batch.episodes, batch.episode_length), np.nan, np.float32)
    valid = batch.valid
    slot = np.broadcast_to(np.arange(batch.n)[:, None], valid.shape)[valid]
    out[slot, batch.episode[valid], batch.step[valid]] = batch.rewards[valid]
    return out


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """`arrays` as the bytes of a compressed .npz that `np.load` reads (no pickles), the same
    bytes for the same arrays: entries in name order, each with a fixed time stamp and mode
    (`np.savez_compressed` stamps every entry with the current time)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(arrays):
            value = np.asarray(arrays[name])
            if value.dtype == object:
                raise TypeError(f"npz entry {name!r}: object arrays need pickles")
            body = io.BytesIO()
            np.lib.format.write_array(body, value, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, body.getvalue(), compresslevel=6)
    return buffer.getvalue()


def steps_arrays(rewards: list[np.ndarray], benchmark: Benchmark, split: str, iteration: int, env_steps: int,
                 task_labels: list[str]) -> dict[str, np.ndarray]:
    """The contents of `metarl evaluate --steps FILE` (docs/protocol.md): `reward` float32
    [tasks, episodes, episode_length], NaN after an episode that ended early; `benchmark`,
    `split` (strings), `iteration`, `env_steps`, `episode_length` (int64) and `task_labels`."""
    reward = (np.concatenate(rewards) if rewards else
              np.zeros((0, benchmark.eval_episodes, benchmark.episode_length), np.float32))
    return {
        "reward": reward.astype(np.float32, copy=False),
        "benchmark": np.array(benchmark.id),
        "split": np.array(split),
        "iteration": np.array(iteration, np.int64),
        "env_steps": np.array(env_steps, np.int64),
        "episode_length": np.array(benchmark.episode_length, np.int64),
        "task_labels": np.array([str(label) for label in task_labels], dtype=str),
    }


def read_eval_rows(text: str) -> list[dict[str, Any]]:
    """The rows of an eval.csv's text, typed as `Evaluator.evaluate` makes them (the columns
    `summarize` and the readers of a run's logs use): iteration, env_steps, split, task,
    episode, return, success (None where blank), scored. A missing column is a KeyError, a
    malformed number a ValueError."""
    return [{
        "iteration": int(row["iteration"]), "env_steps": int(row["env_steps"]), "split": row["split"],
        "task": int(row["task"]), "episode": int(row["episode"]), "return": float(row["return"]),
        "success": float(row["success"]) if row["success"] else None, "scored": row["scored"] == "1",
    } for row in csv.DictReader(io.StringIO(text))]


def summarize(rows: list[dict[str, Any]], benchmark: Benchmark) -> dict[str, float]:
    """Headline numbers of one evaluation: first-episode and adapted (last-episode) return."""
    returns = np.array([[r["return"] for r in rows if r["episode"] == e] for e in range(benchmark.eval_episodes)])
    out = {"first_return": float(returns[0].mean()), "adapted_return": float(returns[-1].mean())}
    if benchmark.has_success:
        scored = [r["success"] for r in rows if r["scored"]]
        out["success_rate"] = float(np.mean(scored))
    return out
