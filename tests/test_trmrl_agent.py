"""TrMRL on the harness: window resets and FIFO, rollout vs PPO re-evaluation log-probabilities,
presets, and byte-identical reruns/resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from metarl import config as cfg
from metarl.agent import TrialSpec
from metarl.runs import run_dir_for
from metarl.sampling import run_trials
from metarl.setup import build_agent, prepare
from trmrl.agent import TrMRLAgent

from conftest import run_cli


def _agent(env="PointNav", preset="smoke", **overrides):
    setup = prepare(cfg.resolve("trmrl", env, 1, preset, overrides={"device": "cpu", **overrides}))
    return setup, build_agent(setup)


def test_window_resets_at_episode_start_and_is_fifo():
    _, agent = _agent(window=3)
    agent.start_trial(2, TrialSpec(2, 0, True, 0, agent.env.episode_length))
    agent.start_episode(np.arange(2))
    D = agent.env.token_dim
    tok = lambda k: np.full((2, D), float(k), np.float32)  # noqa: E731
    for k in range(1, 6):
        _, extras = agent.act(tok(k), np.zeros(2, bool))
    # after 5 tokens with window 3: the last three, oldest first
    np.testing.assert_array_equal(extras["window"][0, :, 0], [3, 4, 5])
    assert extras["window_len"].tolist() == [3, 3]
    # while filling: positions 0..len-1 hold the tokens, the rest zeros
    agent.start_episode(np.array([1]))
    _, extras = agent.act(tok(9), np.zeros(2, bool))
    np.testing.assert_array_equal(extras["window"][1, :, 0], [9, 0, 0])
    assert extras["window_len"].tolist() == [3, 1]
    np.testing.assert_array_equal(extras["window"][0, :, 0], [4, 5, 9])


def test_windows_in_a_trial_never_cross_episodes():
    setup, agent = _agent()
    bench = setup.benchmark
    env = bench.make_env(2)
    tasks = bench.sample_train_tasks(np.random.default_rng(0), 2)
    batch = run_trials(env, agent, tasks, TrialSpec(2, 0, True, 0, bench.episode_length),
                       [np.random.default_rng(k) for k in range(2)])
    T, W = bench.episode_length, agent.config.window
    lens = batch.extras["window_len"]
    np.testing.assert_array_equal(lens[:, T], 1)  # second episode starts with a fresh window
    np.testing.assert_array_equal(lens[0, :T], np.minimum(np.arange(1, T + 1), W))
    # the newest window slot is the token acted on
    for t in (0, 3, T, T + 7):
        w = batch.extras["window"][0, t]
        np.testing.assert_array_equal(w[lens[0, t] - 1], batch.tokens[0, t])


def test_rollout_and_update_paths_give_same_log_probs():
    setup, agent = _agent(env="HalfCheetahVel", d_model=32, heads=4, layers=2)
    bench = setup.benchmark
    env = bench.make_env(2)
    tasks = bench.sample_train_tasks(np.random.default_rng(0), 2)
    batch = run_trials(env, agent, tasks, TrialSpec(1, 0, True, 0, bench.episode_length),
                       [np.random.default_rng(k) for k in range(2)])
    windows = torch.from_numpy(batch.extras["window"].reshape(-1, agent.config.window, agent.env.token_dim))
    lengths = torch.from_numpy(batch.extras["window_len"].reshape(-1))
    actions = torch.from_numpy(np.ascontiguousarray(batch.actions).reshape(-1, agent.env.act_dim))
    with torch.no_grad():
        logp = agent.policy.log_prob(windows, lengths, actions)  # one batched call, as in update
    np.testing.assert_allclose(logp.numpy(), batch.extras["logp"].reshape(-1), rtol=1e-5, atol=1e-4)


def test_paper_presets_carry_the_reference_table():
    vel = cfg.resolve("trmrl", "HalfCheetahVel", 1, "paper")
    assert (vel["d_model"], vel["heads"], vel["layers"], vel["dim_ff"], vel["window"]) == (128, 16, 4, 512, 5)
    assert (vel["discount"], vel["gae_lambda"], vel["clip"], vel["policy_lr"], vel["vf_lr"]) == (0.9, 0.8, 0.1, 3e-5, 2.5e-4)
    assert (vel["init_std"], vel["output_gain"], vel["share_network"], vel["minibatch_size"]) == (0.2, 1.0, False, 256)
    ant = cfg.resolve("trmrl", "AntDir", 1, "paper")
    assert (ant["discount"], ant["output_gain"], ant["share_network"], ant["policy_decay_start"]) == (0.92, 0.01, True, 500)
    ml = cfg.resolve("trmrl", "ML1-push", 1, "paper")
    assert (ml["d_model"], ml["heads"], ml["dim_ff"], ml["gae_lambda"], ml["minibatch_size"], ml["meta_batch_size"]) == (
        32, 4, 128, 0.95, 32, 25)
    assert cfg.resolve("trmrl", "ML45", 1, "paper")["meta_batch_size"] == 45
    # the original's sampler fills every iteration to meta_batch x episodes x episode_length steps
    assert vel["fill_batch"] and ant["fill_batch"] and ml["fill_batch"]
    # quick differs from paper in the budget and, on MuJoCo, only in the transformer's width
    quick = cfg.resolve("trmrl", "HalfCheetahVel", 1, "quick")
    def own(resolved):  # the algorithm's own settings, without the harness's
        return cfg.split_config(resolved, TrMRLAgent)[1]

    assert own(quick) == dataclasses.replace(own(vel), d_model=64, heads=4, dim_ff=256)
    assert own(cfg.resolve("trmrl", "ML1-push", 1, "quick")) == own(ml)


def test_shared_network_value_optimiser_updates_transformer():
    _, agent = _agent(env="HalfCheetahDir")
    assert agent.config.share_network
    transformer = {id(p) for p in agent.policy.parameters()}
    vf_params = {id(p) for g in agent.value_opt.param_groups for p in g["params"]}
    assert transformer <= vf_params


SMOKE = ["train", "--algo", "trmrl", "--env", "PointNav", "--seed", "1", "--preset", "smoke"]


def test_export_memory_and_bench_rows(tmp_path):
    run_cli(SMOKE, cwd=tmp_path)
    run = tmp_path / run_dir_for("PointNav", "trmrl", "default", 1)
    run_cli(["evaluate", "--run", str(run), "--split", "ood", "--export-memory"], cwd=tmp_path)
    data = np.load(run / "memory_ood.npz")
    assert data["memory"].shape == (20 * 6 * 20, 16)  # tasks x episodes x steps, d_model 16
    assert set(data["task"].tolist()) == set(range(20)) and data["step"].max() == 19
    assert str(data["split"]) == "ood" and len(data["task_labels"]) == 20
    out = run_cli(["bench", "--env", "PointNav", "--steps", "400", "--slots", "4", "--algo", "trmrl",
                   "--preset", "smoke", "--format", "csv"], cwd=tmp_path).stdout.splitlines()
    measures = [line.split(",")[1] for line in out[1:]]
    assert measures[-7:] == ["trmrl_sampling", "trmrl_update", "trmrl_share_simulate", "trmrl_share_policy",
                             "trmrl_share_sampler", "trmrl_share_update", "trmrl_update_flops"]


def test_export_memory_needs_a_memory(tmp_path):
    run_cli(["train", "--algo", "random", "--env", "PointNav", "--seed", "1", "--preset", "smoke"], cwd=tmp_path)
    run = tmp_path / run_dir_for("PointNav", "random", "default", 1)
    proc = run_cli(["evaluate", "--run", str(run), "--export-memory"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "has no episodic memory" in proc.stderr
