"""MuJoCo locomotion meta-tasks, as TrMRL (and VariBAD, PEARL) define them.

Written directly on the `mujoco` bindings with gymnasium's model files (gymnasium 1.4's
`half_cheetah.xml`, `ant.xml`, `humanoid.xml`), because the reference observations and rewards
are those of gym 0.17 / mujoco-py, not of gymnasium's v5 environments:

- HalfCheetah (garage meta base): obs = qpos[1:] (8) + qvel (9) + torso position (3) = 20;
  reset noise qpos += U(−0.1, 0.1), qvel += 0.1·N(0, 1); frame_skip 5 (dt 0.05).
  Vel: r = −|v − v*| − 0.05‖a‖².  Dir: r = d·v − 0.05‖a‖².  Never terminates.
- AntDir (VariBAD, copied by TrMRL): obs = qpos[2:] + qvel = 27; the goal g ∈ {−1, +1} is an
  *angle in radians*; r = v_xy·(cos g, sin g) − 0.5‖a‖² − 0.5e-3‖clip(cfrc_ext, ±1)‖² + 1;
  terminates when the torso height leaves [0.2, 1.0] or the state is not finite.
- HumanoidDir (VariBAD / PEARL): obs = qpos[2:], qvel, cinert, cvel, qfrc_actuator,
  cfrc_ext (376); r = 0.25·Δcom_xy·(cos g, sin g)/timestep − 0.1‖ctrl‖² −
  min(0.5e-6‖cfrc_ext‖², 10) + 5; terminates when the torso height leaves [1, 2].
  (Dividing by the physics timestep rather than dt is the reference's quirk, kept.)

Actions are not clipped by the environment: MuJoCo clamps the control to `ctrlrange`, while
the control cost uses the raw action, as in the references. Positions read after a step are
MuJoCo's kinematics from the start of the last substep, exactly what mujoco-py returned.
"""

from __future__ import annotations

import os
from functools import lru_cache

import gymnasium
import mujoco
import numpy as np

from metarl.envs.base import Benchmark, LoopBatchEnv, SlotEnv, Task, split_rng

ASSETS = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets")
FRAME_SKIP = 5


@lru_cache(maxsize=None)
def _model(xml: str) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(os.path.join(ASSETS, xml))


class MujocoSlotEnv(SlotEnv):
    xml: str

    def __init__(self) -> None:
        self.model = _model(self.xml)
        self.data = mujoco.MjData(self.model)
        self.init_qpos = self.data.qpos.copy()
        self.init_qvel = self.data.qvel.copy()
        self.dt = self.model.opt.timestep * FRAME_SKIP
        ctrl = self.model.actuator_ctrlrange
        self.action_low = ctrl[:, 0].astype(np.float32)
        self.action_high = ctrl[:, 1].astype(np.float32)
        self.act_dim = self.model.nu
        self.task = None

    def set_task(self, task: Task) -> None:
        self.task = task

    def _set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)

    def _simulate(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=FRAME_SKIP)


class HalfCheetahMeta(MujocoSlotEnv):
    """garage's HalfCheetahEnvMetaBase: 20-d observation with the torso position."""

    xml = "half_cheetah.xml"
    obs_dim = 20

    def __init__(self) -> None:
        super().__init__()
        self._torso = self.model.body("torso").id

    def _obs(self) -> np.ndarray:
        d = self.data
        return np.concatenate([d.qpos[1:], d.qvel, d.xpos[self._torso]]).astype(np.float32)

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        qpos = self.init_qpos + rng.uniform(-0.1, 0.1, size=self.model.nq)
        qvel = self.init_qvel + 0.1 * rng.standard_normal(self.model.nv)
        self._set_state(qpos, qvel)
        return self._obs()

    def _forward_velocity(self, action: np.ndarray) -> float:
        x_before = self.data.qpos[0]
        self._simulate(action)
        return (self.data.qpos[0] - x_before) / self.dt


class HalfCheetahVelEnv(HalfCheetahMeta):
    def step(self, action: np.ndarray):
        velocity = self._forward_velocity(action)
        reward = -abs(velocity - self.task.params["velocity"]) - 0.05 * float(action @ action)
        return self._obs(), reward, False, 0.0


class HalfCheetahDirEnv(HalfCheetahMeta):
    def step(self, action: np.ndarray):
        velocity = self._forward_velocity(action)
        reward = self.task.params["direction"] * velocity - 0.05 * float(action @ action)
        return self._obs(), reward, False, 0.0


class AntDirEnv(MujocoSlotEnv):
    """VariBAD's AntDir: the goal value is used as an angle in radians (±57°, not fwd/bwd)."""

    xml = "ant.xml"
    obs_dim = 27

    def __init__(self) -> None:
        super().__init__()
        self._torso = self.model.body("torso").id

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[2:], self.data.qvel]).astype(np.float32)

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        qpos = self.init_qpos + rng.uniform(-0.1, 0.1, size=self.model.nq)
        qvel = self.init_qvel + 0.1 * rng.standard_normal(self.model.nv)
        self._set_state(qpos, qvel)
        return self._obs()

    def step(self, action: np.ndarray):
        angle = self.task.params["angle"]
        before = self.data.xpos[self._torso, :2].copy()
        self._simulate(action)
        # mujoco >= 2.2 computes cfrc_ext only on request; mujoco-py 2.0 always did.
        mujoco.mj_rnePostConstraint(self.model, self.data)
        velocity = (self.data.xpos[self._torso, :2] - before) / self.dt
        forward = velocity[0] * np.cos(angle) + velocity[1] * np.sin(angle)
        ctrl_cost = 0.5 * float(action @ action)
        contact_cost = 0.5 * 1e-3 * float(np.sum(np.square(np.clip(self.data.cfrc_ext, -1, 1))))
        reward = forward - ctrl_cost - contact_cost + 1.0
        state = np.concatenate([self.data.qpos, self.data.qvel])
        terminated = not (np.isfinite(state).all() and 0.2 <= state[2] <= 1.0)
        return self._obs(), float(reward), terminated, 0.0


class HumanoidDirEnv(MujocoSlotEnv):
    xml = "humanoid.xml"
    obs_dim = 376

    def __init__(self) -> None:
        super().__init__()
        self._mass = self.model.body_mass[:, None] / self.model.body_mass.sum()

    def _mass_center(self) -> np.ndarray:
        return (self._mass * self.data.xipos).sum(axis=0)[:2]

    def _obs(self) -> np.ndarray:
        d = self.data
        return np.concatenate(
            [d.qpos[2:], d.qvel, d.cinert.ravel(), d.cvel.ravel(), d.qfrc_actuator, d.cfrc_ext.ravel()]
        ).astype(np.float32)

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        c = 0.01
        qpos = self.init_qpos + rng.uniform(-c, c, size=self.model.nq)
        qvel = self.init_qvel + rng.uniform(-c, c, size=self.model.nv)
        self._set_state(qpos, qvel)
        mujoco.mj_rnePostConstraint(self.model, self.data)
        return self._obs()

    def step(self, action: np.ndarray):
        angle = self.task.params["angle"]
        before = self._mass_center()
        self._simulate(action)
        mujoco.mj_rnePostConstraint(self.model, self.data)
        after = self._mass_center()
        direction = np.array([np.cos(angle), np.sin(angle)])
        lin_vel = 0.25 * float(direction @ (after - before)) / self.model.opt.timestep
        ctrl_cost = 0.1 * float(np.sum(np.square(self.data.ctrl)))
        impact_cost = min(0.5e-6 * float(np.sum(np.square(self.data.cfrc_ext))), 10.0)
        reward = lin_vel - ctrl_cost - impact_cost + 5.0
        height = self.data.qpos[2]
        terminated = bool(height < 1.0 or height > 2.0)
        return self._obs(), reward, terminated, 0.0


# ----------------------------------------------------------------------------- tasks and splits


def velocity_task(v: float) -> Task:
    return Task(params={"velocity": float(v)}, label=f"v={v:.4f}")


def direction_task(d: float) -> Task:
    return Task(params={"direction": float(d)}, label=f"dir={d:+.0f}")


def angle_task(a: float) -> Task:
    return Task(params={"angle": float(a)}, label=f"angle={a:.4f}")


def _circular_distance(a: np.ndarray, b: float) -> np.ndarray:
    d = np.abs(a - b) % (2 * np.pi)
    return np.minimum(d, 2 * np.pi - d)


# AntDir OOD: directions from U[0, 2π) at least this far (rad) from both training angles ±1.
ANT_OOD_MARGIN = 0.5


def _ant_ood(rng: np.random.Generator, n: int) -> list[Task]:
    angles: list[float] = []
    while len(angles) < n:
        a = rng.uniform(0.0, 2 * np.pi)
        if _circular_distance(np.array(a), 1.0) >= ANT_OOD_MARGIN and _circular_distance(np.array(a), -1.0) >= ANT_OOD_MARGIN:
            angles.append(float(a))
    return [angle_task(a) for a in angles]


def _loop_env(cls):
    # A MuJoCo slot step is mostly mj_step, which releases the GIL: `threads` > 1 steps the slots
    # in parallel (HalfCheetahVel, 20 slots, 2 threads on 2 idle cores: 1.7x the serial loop).
    return lambda n, threads=1: LoopBatchEnv(n, lambda task: cls(), threads=threads)


HALF_CHEETAH_VEL_SPLIT_SEED = 7002
HALF_CHEETAH_DIR_SPLIT_SEED = 7003
ANT_DIR_SPLIT_SEED = 7004
HUMANOID_DIR_SPLIT_SEED = 7005


def _cheetah_vel_splits() -> dict[str, list[Task]]:
    seed = HALF_CHEETAH_VEL_SPLIT_SEED
    return {
        "test": [velocity_task(v) for v in split_rng(seed, "test").uniform(0.0, 3.0, size=20)],
        "ood": [velocity_task(v) for v in split_rng(seed, "ood").uniform(3.0, 4.0, size=20)],
        # fixed grid over in- and out-of-distribution targets, for return-vs-velocity plots
        "sweep": [velocity_task(v) for v in np.round(np.linspace(0.0, 4.0, 41), 10)],
    }


HALF_CHEETAH_VEL = Benchmark(
    id="HalfCheetahVel",
    summary="cheetah runs at a hidden target velocity v* ~ U[0, 3] (OOD: U[3, 4]); 200 steps",
    family="mujoco",
    episode_length=200,
    train_episodes=2,
    eval_episodes=6,
    exploration_episodes=0,
    split_seed=HALF_CHEETAH_VEL_SPLIT_SEED,
    obs_dim=20,
    act_dim=6,
    make_env=_loop_env(HalfCheetahVelEnv),
    sample_train_tasks=lambda rng, n: [velocity_task(v) for v in rng.uniform(0.0, 3.0, size=n)],
    make_splits=_cheetah_vel_splits,
    train_range=(0.0, 3.0),
    split_notes={"test": "target velocity from U[0, 3]", "ood": "target velocity from U[3, 4]",
                 "sweep": "target velocities 0, 0.1, ..., 4"},
)

HALF_CHEETAH_DIR = Benchmark(
    id="HalfCheetahDir",
    summary="cheetah runs forward or backward (d ∈ {−1, +1}, hidden); 200 steps",
    family="mujoco",
    episode_length=200,
    train_episodes=2,
    eval_episodes=6,
    exploration_episodes=0,
    split_seed=HALF_CHEETAH_DIR_SPLIT_SEED,
    obs_dim=20,
    act_dim=6,
    make_env=_loop_env(HalfCheetahDirEnv),
    sample_train_tasks=lambda rng, n: [direction_task(d) for d in rng.choice([-1.0, 1.0], size=n)],
    make_splits=lambda: {"test": [direction_task(-1.0), direction_task(1.0)]},
    split_notes={"test": "both directions"},
)

ANT_DIR = Benchmark(
    id="AntDir",
    summary="ant runs along a hidden angle g ∈ {−1, +1} rad (OOD: other angles); 200 steps, may fall",
    family="mujoco",
    episode_length=200,
    train_episodes=2,
    eval_episodes=6,
    exploration_episodes=0,
    split_seed=ANT_DIR_SPLIT_SEED,
    obs_dim=27,
    act_dim=8,
    make_env=_loop_env(AntDirEnv),
    sample_train_tasks=lambda rng, n: [angle_task(a) for a in rng.choice([-1.0, 1.0], size=n)],
    make_splits=lambda: {
        "test": [angle_task(-1.0), angle_task(1.0)],
        "ood": _ant_ood(split_rng(ANT_DIR_SPLIT_SEED, "ood"), 20),
    },
    split_notes={"test": "both training angles", "ood": "other angles"},
)

HUMANOID_DIR = Benchmark(
    id="HumanoidDir",
    summary="humanoid walks along a hidden direction ~ U[0, 2π); 200 steps, may fall",
    family="mujoco",
    episode_length=200,
    train_episodes=2,
    eval_episodes=6,
    exploration_episodes=0,
    split_seed=HUMANOID_DIR_SPLIT_SEED,
    obs_dim=376,
    act_dim=17,
    action_bound=0.4,  # humanoid.xml's ctrlrange
    make_env=_loop_env(HumanoidDirEnv),
    sample_train_tasks=lambda rng, n: [angle_task(a) for a in rng.uniform(0.0, 2 * np.pi, size=n)],
    make_splits=lambda: {
        "test": [angle_task(a) for a in split_rng(HUMANOID_DIR_SPLIT_SEED, "test").uniform(0.0, 2 * np.pi, size=20)]
    },
    train_range=(0.0, 2 * np.pi),
    split_notes={"test": "directions from U[0, 2π)"},
)
