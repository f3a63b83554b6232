"""Meta-World v3 benchmarks: fixed splits, deterministic resets, balanced task sampling.

ML10 / ML45 take ~14 s / ~55 s to build, so their tests are marked `slow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from metarl.envs import metaworld_tasks as mwt
from metarl.envs.metaworld_tasks import METAWORLD_BENCHMARKS, ML1_PICK_PLACE, ML1_PUSH, ML1_REACH, ML10, ML45

ML1S = (ML1_REACH, ML1_PUSH, ML1_PICK_PLACE)

_FINGERPRINT_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np
    from metarl.envs.metaworld_tasks import ML1_REACH as b

    def h(a):
        return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()

    train = b.sample_train_tasks(np.random.default_rng(123), 4)
    splits = b.splits()
    env = b.make_env(4)
    tasks = [train[0], train[1], splits["test"][0], splits["test"][7]]
    env.set_tasks(tasks, [np.random.default_rng([5, i]) for i in range(4)])
    obs = env.reset(np.arange(4))
    out = {
        "train": [[t.label, t.params] for t in train],
        "splits": {k: [[t.label, t.params] for t in v] for k, v in splits.items()},
        "obs": h(obs),
    }
    json.dump(out, sys.stdout, sort_keys=True)
    """
)


def _run_fresh(script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_import_is_cheap_and_lazy():
    code = "import sys, metarl.envs.metaworld_tasks as m; print('metaworld' in sys.modules, m.metaworld_benchmark.cache_info().currsize)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "0"]


def test_ml1_reach_splits_identical_in_fresh_processes():
    procs = [_run_fresh(_FINGERPRINT_SCRIPT) for _ in range(2)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        outs.append(json.loads(stdout))
    assert outs[0] == outs[1]
    splits = outs[0]["splits"]
    assert len(splits["test"]) == 50 and splits["ood"] == splits["test"]
    assert len({tuple(p["rand_vec"]) for _, p in splits["test"]}) == 50


def test_contract_fields():
    for b in METAWORLD_BENCHMARKS:
        assert b.family == "metaworld" and b.has_success
        assert (b.episode_length, b.train_episodes, b.eval_episodes, b.exploration_episodes) == (500, 10, 13, 10)
        assert (b.obs_dim, b.act_dim) == (39, 4)
        assert b.facts["reward_function_version"] == "v2"
        assert b.facts["metaworld_version"] == "3.1.1"
    assert [b.task_multiple for b in METAWORLD_BENCHMARKS] == [1, 1, 1, 10, 45]
    assert len({b.split_seed for b in METAWORLD_BENCHMARKS}) == 5


def test_hard_coded_class_lists_match_metaworld():
    from metaworld import env_dict

    assert tuple(env_dict.ML10_V3["train"]) == mwt.ML10_TRAIN
    assert tuple(env_dict.ML10_V3["test"]) == mwt.ML10_TEST
    assert tuple(env_dict.ML45_V3["train"]) == mwt.ML45_TRAIN
    assert tuple(env_dict.ML45_V3["test"]) == mwt.ML45_TEST


def _rollout(benchmark, tasks, seed: int, steps: int = 20):
    """Reset every slot with generators from `seed`, step random actions; returns stacked obs, rewards."""
    env = benchmark.make_env(len(tasks))
    try:
        env.set_tasks(tasks, [np.random.default_rng([seed, i]) for i in range(len(tasks))])
        assert env.action_low.dtype == np.float32 and env.action_high.dtype == np.float32
        assert env.action_low.shape == env.action_high.shape == (4,)
        slots = np.arange(len(tasks))
        obs0 = env.reset(slots)
        assert obs0.dtype == np.float32 and obs0.shape == (len(tasks), 39)
        assert np.all(obs0[:, 36:] == 0.0)  # goal hidden
        for slot, task in enumerate(tasks):  # the env sits where the task says, not re-randomised
            assert np.array_equal(env._envs[slot].env._last_rand_vec, np.array(task.params["rand_vec"]))
        act_rng = np.random.default_rng(seed)
        all_obs, rewards = [obs0.copy()], []
        active = np.ones(len(tasks), dtype=bool)
        for _ in range(steps):
            actions = act_rng.uniform(env.action_low, env.action_high, size=(len(tasks), 4)).astype(np.float32)
            obs, reward, terminated, success = env.step(actions, active)
            assert obs.dtype == np.float32 and obs.shape == (len(tasks), 39)
            assert np.all(np.isfinite(obs)) and np.all(np.isfinite(reward))
            assert not terminated.any()
            assert set(np.unique(success)) <= {0.0, 1.0}
            all_obs.append(obs.copy())
            rewards.append(reward.copy())
        # a second reset after a rollout gives the same initial state (no history dependence)
        assert np.array_equal(env.reset(slots), obs0)
        return np.stack(all_obs), np.array(rewards)
    finally:
        env.close()


def _check_rollouts(benchmark, tasks):
    obs_a, rew_a = _rollout(benchmark, tasks, seed=11)
    obs_b, rew_b = _rollout(benchmark, tasks, seed=11)
    assert np.array_equal(obs_a, obs_b) and np.array_equal(rew_a, rew_b)


@pytest.mark.parametrize("benchmark", ML1S, ids=lambda b: b.id)
def test_ml1_declared_action_bounds_are_the_environments(benchmark):
    env = benchmark.make_env(1)
    try:
        env.set_tasks(benchmark.split("test")[:1], [np.random.default_rng(0)])
        assert np.array_equal(benchmark.action_low, env.action_low)
        assert np.array_equal(benchmark.action_high, env.action_high)
    finally:
        env.close()


@pytest.mark.parametrize("benchmark", ML1S, ids=lambda b: b.id)
def test_ml1_rollouts(benchmark):
    train = benchmark.sample_train_tasks(np.random.default_rng(0), 2)
    assert train[0].params["goal"] != train[1].params["goal"]
    test = benchmark.split("test")[:2]
    _check_rollouts(benchmark, train)
    _check_rollouts(benchmark, [train[0], test[0]])
    obs, _ = _rollout(benchmark, train, seed=11, steps=0)
    assert not np.array_equal(obs[0, 0, 4:7], obs[0, 1, 4:7])  # object placement differs between goals


def test_ml1_sampling_balanced_and_checked():
    b = ML1_REACH
    rng = np.random.default_rng(3)
    tasks = b.sample_train_tasks(rng, 50)
    assert sorted(t.params["goal"] for t in tasks) == list(range(50))  # without replacement
    tasks = b.sample_train_tasks(rng, 120)
    counts = np.bincount([t.params["goal"] for t in tasks], minlength=50)
    assert counts.min() >= 2 and counts.max() <= 3
    assert [t.label for t in b.sample_train_tasks(np.random.default_rng(9), 10)] == [
        t.label for t in b.sample_train_tasks(np.random.default_rng(9), 10)
    ]
    with pytest.raises(ValueError):
        b.sample_train_tasks(rng, 0)
    # held-out goals are disjoint from the training goals
    train_goals = {tuple(t.params["rand_vec"]) for t in mwt._all_tasks("ML1-reach", "train")}
    assert len(train_goals) == 50
    assert not train_goals & {tuple(t.params["rand_vec"]) for t in b.split("test")}


@pytest.mark.parametrize("benchmark,bad", [(ML10, 15), (ML10, 5), (ML45, 10), (ML45, 46)], ids=str)
def test_bad_meta_batch_raises_without_building(benchmark, bad):
    with pytest.raises(ValueError, match="multiple"):
        benchmark.sample_train_tasks(np.random.default_rng(0), bad)


def _check_ml_benchmark(benchmark, n_train: int):
    rng = np.random.default_rng(4)
    k = benchmark.task_multiple
    tasks = benchmark.sample_train_tasks(rng, 2 * k)
    names = [t.params["env_name"] for t in tasks]
    assert sorted(set(names)) == sorted(benchmark.facts["env_names"]["train"])
    assert all(names.count(n) == 2 for n in set(names))
    per_class = {}
    for t in tasks:
        per_class.setdefault(t.params["env_name"], []).append(t.params["goal"])
    assert all(len(set(goals)) == 2 for goals in per_class.values())  # no repeats within a class

    splits = benchmark.splits()
    test = splits["test"]
    assert splits["ood"] == test and len(test) == 50
    assert [t.params["env_name"] for t in test] == [n for n in benchmark.facts["env_names"]["test"] for _ in range(10)]
    assert [t.params["goal"] for t in test] == list(range(10)) * 5

    # one task of every training class and every held-out class, stepped together
    one_each = tasks[::2][:n_train] + test[::10]
    _check_rollouts(benchmark, one_each)


@pytest.mark.slow
def test_ml10():
    _check_ml_benchmark(ML10, 10)


@pytest.mark.slow
def test_ml45():
    _check_ml_benchmark(ML45, 45)
