"""Benchmarks: every ID steps from a seeded reset; splits are fixed by the split seed; the
MuJoCo tasks compute TrMRL's observations, rewards and terminations."""

from __future__ import annotations

import json
import subprocess
import sys

import mujoco
import numpy as np
import pytest

from metarl.envs import BENCHMARK_IDS, get_benchmark
from metarl.envs.mujoco_tasks import (
    ANT_OOD_MARGIN,
    AntDirEnv,
    HalfCheetahDirEnv,
    HalfCheetahVelEnv,
    HumanoidDirEnv,
    angle_task,
    direction_task,
    velocity_task,
)

LIGHT = ["PointNav", "HalfCheetahVel", "HalfCheetahDir", "AntDir", "HumanoidDir"]


def test_registry_lists_spec_ids():
    assert BENCHMARK_IDS == ("PointNav", "HalfCheetahVel", "HalfCheetahDir", "AntDir", "HumanoidDir",
                             "ML1-reach", "ML1-push", "ML1-pick-place", "ML10", "ML45")


@pytest.mark.parametrize("name", LIGHT)
def test_declared_action_bounds_are_the_environments(name):
    bench = get_benchmark(name)
    env = bench.make_env(1)
    try:
        env.set_tasks([bench.split("test")[0]], [np.random.default_rng(0)])
        assert np.array_equal(bench.action_low, env.action_low) and np.array_equal(bench.action_high, env.action_high)
        assert bench.action_low.dtype == np.float32 and bench.action_low.shape == (bench.act_dim,)
    finally:
        env.close()


@pytest.mark.parametrize("name", LIGHT)
def test_steps_from_seeded_reset(name):
    bench = get_benchmark(name)
    tasks = bench.sample_train_tasks(np.random.default_rng(0), 2)

    def rollout(seed):
        env = bench.make_env(2)
        env.set_tasks(tasks, [np.random.default_rng([seed, k]) for k in range(2)])
        obs = [env.reset(np.arange(2)).copy()]
        rng = np.random.default_rng(1)
        rewards = []
        for _ in range(10):
            a = rng.uniform(env.action_low, env.action_high, size=(2, bench.act_dim)).astype(np.float32)
            o, r, term, succ = env.step(a, np.ones(2, bool))
            obs.append(o.copy())
            rewards.append(r.copy())
        return np.array(obs), np.array(rewards)

    obs, rewards = rollout(3)
    assert obs.shape == (11, 2, bench.obs_dim) and obs.dtype == np.float32
    assert np.isfinite(obs).all() and np.isfinite(rewards).all()
    obs2, rewards2 = rollout(3)
    np.testing.assert_array_equal(obs, obs2)
    np.testing.assert_array_equal(rewards, rewards2)
    if bench.family == "mujoco":  # reset noise comes from the generator, so another seed differs
        assert not np.array_equal(obs[0], rollout(4)[0][0])


def test_benchmark_protocol_constants():
    for name in LIGHT:
        b = get_benchmark(name)
        assert (b.train_episodes, b.eval_episodes, b.exploration_episodes) == (2, 6, 0)
        assert b.episode_length == (20 if name == "PointNav" else 200)
    assert get_benchmark("HalfCheetahVel").obs_dim == 20
    assert get_benchmark("AntDir").obs_dim == 27
    assert get_benchmark("HumanoidDir").obs_dim == 376


_SPLIT_DUMP = """
import json, sys
from metarl.envs import get_benchmark
out = {}
for name in sys.argv[1:]:
    out[name] = {s: [[t.label, t.params] for t in ts] for s, ts in get_benchmark(name).splits().items()}
print(json.dumps(out, sort_keys=True))
"""


def test_splits_identical_in_fresh_processes():
    dumps = [subprocess.run([sys.executable, "-c", _SPLIT_DUMP, *LIGHT], capture_output=True, text=True,
                            check=True).stdout for _ in range(2)]
    assert dumps[0] == dumps[1]
    splits = json.loads(dumps[0])
    assert set(splits["PointNav"]) == {"test", "ood"}
    assert set(splits["HalfCheetahVel"]) == {"test", "ood", "sweep"}
    assert set(splits["HumanoidDir"]) == {"test"}


def test_split_values_pinned():
    """The splits are a contract (SPEC §3): these values change only with a new benchmark ID."""
    pn = get_benchmark("PointNav").splits()
    assert len(pn["test"]) == 20 and len(pn["ood"]) == 20
    assert all(0 <= t.params["angle"] <= np.pi for t in pn["test"])
    assert all(np.pi <= t.params["angle"] <= 2 * np.pi for t in pn["ood"])
    vel = get_benchmark("HalfCheetahVel").splits()
    assert all(0 <= t.params["velocity"] <= 3 for t in vel["test"])
    assert all(3 <= t.params["velocity"] <= 4 for t in vel["ood"])
    assert [t.params["velocity"] for t in vel["sweep"]][:3] == [0.0, 0.1, 0.2]
    assert pn["test"][0].label == PINNED["PointNav"]
    assert vel["test"][0].label == PINNED["HalfCheetahVel"]
    assert vel["ood"][0].label == PINNED["HalfCheetahVel-ood"]
    assert get_benchmark("AntDir").splits()["ood"][0].label == PINNED["AntDir-ood"]
    assert get_benchmark("HumanoidDir").splits()["test"][0].label == PINNED["HumanoidDir"]
    assert [t.params["direction"] for t in get_benchmark("HalfCheetahDir").split("test")] == [-1.0, 1.0]
    assert [t.params["angle"] for t in get_benchmark("AntDir").split("test")] == [-1.0, 1.0]


PINNED = {
    "PointNav": "angle=0.9799",
    "HalfCheetahVel": "v=2.4645",
    "HalfCheetahVel-ood": "v=3.1275",
    "AntDir-ood": "angle=3.0082",
    "HumanoidDir": "angle=3.1957",
}


def test_ant_ood_angles_avoid_training_angles():
    for t in get_benchmark("AntDir").split("ood"):
        for g in (1.0, -1.0):
            d = abs(t.params["angle"] - g) % (2 * np.pi)
            assert min(d, 2 * np.pi - d) >= ANT_OOD_MARGIN


def test_train_task_distributions():
    rng = np.random.default_rng(0)
    vels = [t.params["velocity"] for t in get_benchmark("HalfCheetahVel").sample_train_tasks(rng, 500)]
    assert 0 <= min(vels) and max(vels) <= 3 and max(vels) > 2.9
    dirs = {t.params["direction"] for t in get_benchmark("HalfCheetahDir").sample_train_tasks(rng, 50)}
    assert dirs == {-1.0, 1.0}
    angles = {t.params["angle"] for t in get_benchmark("AntDir").sample_train_tasks(rng, 50)}
    assert angles == {-1.0, 1.0}


# ----------------------------------------------------------------------------- reward formulas


def _step(env, task, action, seed=0):
    env.set_task(task)
    env.reset(np.random.default_rng(seed))
    return env.step(np.asarray(action, np.float32))


def test_cheetah_vel_reward_and_obs():
    env = HalfCheetahVelEnv()
    env.set_task(velocity_task(1.5))
    obs0 = env.reset(np.random.default_rng(0))
    assert obs0.shape == (20,)
    x0 = env.data.qpos[0]
    action = np.array([0.5, -0.2, 0.1, 0.9, -1.5, 0.3], np.float32)  # -1.5 is outside ctrlrange
    obs, reward, terminated, success = env.step(action)
    v = (env.data.qpos[0] - x0) / 0.05
    assert reward == pytest.approx(-abs(v - 1.5) - 0.05 * float(np.sum(action.astype(np.float64) ** 2)), rel=1e-6)
    assert not terminated
    np.testing.assert_allclose(obs[:8], env.data.qpos[1:], rtol=1e-6)
    np.testing.assert_allclose(obs[8:17], env.data.qvel, rtol=1e-6)
    np.testing.assert_allclose(obs[17:], env.data.xpos[env.model.body("torso").id], rtol=1e-6)
    assert env.dt == pytest.approx(0.05)


def test_cheetah_dir_reward_sign():
    env = HalfCheetahDirEnv()
    a = np.zeros(6, np.float32)
    env.set_task(direction_task(1.0))
    env.reset(np.random.default_rng(0))
    x0 = env.data.qpos[0]
    _, r_fwd, _, _ = env.step(a)
    v = (env.data.qpos[0] - x0) / env.dt
    assert r_fwd == pytest.approx(v)
    env.set_task(direction_task(-1.0))
    env.reset(np.random.default_rng(0))
    _, r_bwd, _, _ = env.step(a)
    assert r_bwd == pytest.approx(-v)


def test_ant_dir_goal_is_an_angle_in_radians():
    env = AntDirEnv()
    env.set_task(angle_task(1.0))
    env.reset(np.random.default_rng(0))
    torso = env.model.body("torso").id
    before = env.data.xpos[torso, :2].copy()
    action = np.full(8, 0.3, np.float32)
    obs, reward, terminated, _ = env.step(action)
    vel = (env.data.xpos[torso, :2] - before) / env.dt
    contact = 0.5e-3 * np.sum(np.clip(env.data.cfrc_ext, -1, 1) ** 2)
    expected = vel @ [np.cos(1.0), np.sin(1.0)] - 0.5 * np.sum(action.astype(np.float64) ** 2) - contact + 1.0
    assert reward == pytest.approx(expected, rel=1e-6)
    assert obs.shape == (27,) and not terminated
    assert env.action_high.tolist() == [1.0] * 8


def test_ant_terminates_when_torso_leaves_height_band():
    env = AntDirEnv()
    env.set_task(angle_task(-1.0))
    env.reset(np.random.default_rng(0))
    qpos = env.data.qpos.copy()
    qpos[2] = 1.5  # torso far above 1.0
    env._set_state(qpos, np.zeros(env.model.nv))
    *_, terminated, _ = env.step(np.zeros(8, np.float32))
    assert terminated


def test_humanoid_dir_reward_terms():
    env = HumanoidDirEnv()
    env.set_task(angle_task(0.5))
    obs0 = env.reset(np.random.default_rng(0))
    assert obs0.shape == (376,)
    before = env._mass_center().copy()
    action = np.full(17, 0.2, np.float32)
    _, reward, terminated, _ = env.step(action)
    after = env._mass_center()
    lin = 0.25 * (np.array([np.cos(0.5), np.sin(0.5)]) @ (after - before)) / env.model.opt.timestep
    impact = min(0.5e-6 * np.sum(env.data.cfrc_ext ** 2), 10)
    expected = lin - 0.1 * np.sum(env.data.ctrl ** 2) - impact + 5.0
    assert reward == pytest.approx(expected, rel=1e-6)
    assert not terminated
    assert env.model.opt.timestep == pytest.approx(0.003)
    assert mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "torso") >= 0
