"""Slots stepped on threads (`threads` > 1): the same bytes as the serial loop, threads joined.

What "same bytes as the serial sampler for the same seed" means here: for the same tasks, reset
generators and agent, every array the trial sampler collects (the per-step record of tokens,
actions, rewards, next observations, terminations and success, and the per-episode returns,
lengths and success) is byte-identical whether the environment batch steps its slots in one
loop or on N threads. That is a property of the environments, so it is checked with agents
whose actions do not depend on torch's thread count (the random agent, a fixed action
sequence). A whole training run with `threads` N need not match one with `threads` 1: the
setting also sets torch's intra-op threads, which may change a learning agent's float
reductions (SPEC: bit-identical per machine *and thread count*). With the random agent it
does match, which the last test checks end to end.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from metarl.agent import AgentConfig, EnvSpec, RandomAgent, TrialSpec
from metarl.config import resolve
from metarl.envs import get_benchmark
from metarl.envs.base import LoopBatchEnv
from metarl.sampling import TrialBatch, run_trials
from metarl.setup import prepare


def _env_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("metarl-env")]


@pytest.fixture(autouse=True)
def no_leaked_threads():
    yield
    assert not _env_threads(), "an environment's worker threads outlived env.close()"


def _trials(bench_id: str, threads: int, n: int = 5) -> tuple[TrialBatch, object]:
    bench = get_benchmark(bench_id)
    env = bench.with_threads(threads).make_env(n)
    try:
        agent = RandomAgent(AgentConfig(n), EnvSpec.of(bench), torch.device("cpu"), 3)
        tasks = bench.sample_train_tasks(np.random.default_rng(4), n)
        batch = run_trials(env, agent, tasks, TrialSpec.for_training(bench),
                           [np.random.default_rng([5, k]) for k in range(n)])
        used_pool = getattr(env, "_workers", None) is not None
    finally:
        env.close()
    return batch, used_pool


def _arrays(batch: TrialBatch) -> dict[str, bytes]:
    return {f.name: getattr(batch, f.name).tobytes() for f in dataclasses.fields(batch)
            if isinstance(getattr(batch, f.name), np.ndarray)}


@pytest.mark.parametrize("bench_id", ["HalfCheetahVel", "AntDir", "PointNav"])
def test_threaded_sampler_collects_the_same_bytes(bench_id):
    serial, serial_pool = _trials(bench_id, 1)
    assert not serial_pool  # threads 1: the plain loop, no pool
    for threads in (2, 3):
        parallel, used_pool = _trials(bench_id, threads)
        # MuJoCo steps its slots on threads; PointNav is one numpy step and ignores `threads`
        assert used_pool == (bench_id != "PointNav")
        assert _arrays(parallel) == _arrays(serial)
    if bench_id == "AntDir":  # some episodes ended early: slots were stepped as subsets
        assert serial.env_steps < serial.valid.size


def test_fixed_actions_any_active_subset_same_bytes():
    """Direct stepping with a fixed action sequence and changing active masks (uneven chunks,
    a single active slot), 7 slots on 1 and 4 threads, compared after every step."""
    bench = get_benchmark("HalfCheetahVel")
    n, steps = 7, 60
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, n, bench.act_dim)).astype(np.float32)
    masks = rng.random((steps, n)) < 0.6
    masks[::10] = True
    masks[5] = np.eye(n, dtype=bool)[2]
    tasks = bench.sample_train_tasks(np.random.default_rng(1), n)
    envs = [bench.with_threads(threads).make_env(n) for threads in (1, 4)]
    try:
        for env in envs:
            env.set_tasks(tasks, [np.random.default_rng([2, k]) for k in range(n)])
        first = [env.reset(np.arange(n)).tobytes() for env in envs]
        assert first[0] == first[1]
        for t in range(steps):
            outs = [[a.tobytes() for a in env.step(actions[t], masks[t])] for env in envs]
            assert outs[0] == outs[1], f"step {t}"
    finally:
        for env in envs:
            env.close()


def test_pool_threads_are_joined_on_close_and_the_env_still_works_after():
    bench = get_benchmark("HalfCheetahVel")
    env = bench.with_threads(3).make_env(4)
    assert isinstance(env, LoopBatchEnv) and env.threads == 3
    tasks = bench.sample_train_tasks(np.random.default_rng(0), 4)
    env.set_tasks(tasks, [np.random.default_rng(k) for k in range(4)])
    env.reset(np.arange(4))
    assert not _env_threads()  # the pool is made on the first parallel step
    env.step(np.zeros((4, bench.act_dim), np.float32), np.ones(4, bool))
    assert 1 <= len(_env_threads()) <= 2  # threads - 1 workers; the caller steps a chunk itself
    env.close()
    assert not _env_threads()
    env.close()  # closing twice is harmless


def test_threads_setting_reaches_the_envs_and_a_random_agent_run_is_the_same(tmp_path):
    from metarl.training import train

    def setup(threads):
        return resolve("random", "HalfCheetahVel", 1, "smoke",
                       overrides={"threads": threads, "total_env_steps": 1600, "device": "cpu"})

    assert prepare(setup(1)).benchmark is get_benchmark("HalfCheetahVel")
    env = prepare(setup(2)).benchmark.make_env(3)
    assert env.threads == 2
    env.close()

    torch_threads = torch.get_num_threads()
    files = {}
    try:
        for threads in (1, 2):
            run = tmp_path / f"threads{threads}"
            assert train(setup(threads), run, tmp_path / f"ckpt{threads}", quiet=True) == 0
            files[threads] = {name: (run / name).read_bytes() for name in ("progress.csv", "eval.csv")}
    finally:
        torch.set_num_threads(torch_threads)
    assert files[1] == files[2]
