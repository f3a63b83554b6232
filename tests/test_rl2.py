"""RL²: hidden state kept across the episodes of a trial and reset at its start; the linear
feature baseline; byte-identical reruns and resume; it learns PointNav."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from baselines.rl2 import RL2Agent, linear_baseline
from metarl.learning import LinearFeatureBaseline
from metarl import config as cfg
from metarl.agent import TrialSpec
from metarl.sampling import run_trials
from metarl.seeding import env_rngs, task_rng
from metarl.setup import build_agent, prepare


def _agent(**overrides):
    setup = prepare(cfg.resolve("rl2", "PointNav", 1, "smoke", overrides={"device": "cpu", **overrides}))
    return build_agent(setup)


def test_hidden_state_carries_across_episodes_and_resets_per_trial():
    agent = _agent()
    tokens = np.random.default_rng(0).standard_normal((2, agent.env.token_dim)).astype(np.float32)
    det = np.ones(2, bool)
    agent.start_trial(2, TrialSpec(2, 0, False, 0, agent.env.episode_length))
    first, _ = agent.act(tokens, det)
    h_after_one = agent._h.clone()
    agent.start_episode(np.arange(2))  # a new episode of the same trial: nothing is reset
    assert torch.equal(agent._h, h_after_one)
    second, _ = agent.act(tokens, det)
    assert not np.allclose(first, second)  # same token, different memory
    agent.start_trial(2, TrialSpec(2, 0, False, 0, agent.env.episode_length))
    assert torch.count_nonzero(agent._h) == 0
    again, _ = agent.act(tokens, det)
    np.testing.assert_allclose(again, first, rtol=1e-6)


def test_rollout_and_update_sequences_agree():
    """Stepping the GRU token by token (rollout) equals running it over the whole trial (update)."""
    agent = _agent()
    rng = np.random.default_rng(1)
    seq = rng.standard_normal((3, 7, agent.env.token_dim)).astype(np.float32)
    agent.start_trial(3, TrialSpec(1, 0, False, 0, agent.env.episode_length))
    stepped = [agent.act(seq[:, t], np.ones(3, bool))[0] for t in range(7)]
    with torch.no_grad():
        means, _, _ = agent.net(torch.from_numpy(seq))
    np.testing.assert_allclose(np.stack(stepped, 1), means.numpy(), rtol=1e-5, atol=1e-6)


def test_linear_feature_baseline_fits_a_linear_target():
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((4, 30, 3))
    steps = np.broadcast_to(np.arange(30), (4, 30))
    feats = LinearFeatureBaseline.features(obs, steps)
    true = rng.standard_normal(feats.shape[-1])
    target = feats @ true
    base = LinearFeatureBaseline()
    assert np.all(base.predict(feats) == 0)
    base.fit(feats.reshape(-1, feats.shape[-1]), target.reshape(-1))
    np.testing.assert_allclose(base.predict(feats), target, atol=1e-3)


def test_presets_follow_garage_and_quick_changes_only_the_mujoco_std():
    def own(resolved):  # the algorithm's own settings, without the harness's
        return cfg.split_config(resolved, RL2Agent)[1]

    vel = cfg.resolve("rl2", "HalfCheetahVel", 1, "paper")
    assert (vel["hidden_size"], vel["lr"], vel["ppo_epochs"], vel["minibatch_trials"]) == (64, 1e-3, 10, 32)
    assert (vel["discount"], vel["gae_lambda"], vel["clip"], vel["entropy_coeff"], vel["init_std"]) == (
        0.99, 0.95, 0.2, 0.02, 1.0)
    assert own(cfg.resolve("rl2", "HalfCheetahVel", 1, "quick")) == dataclasses.replace(own(vel), init_std=0.2)
    ml = cfg.resolve("rl2", "ML10", 1, "paper")
    assert (ml["hidden_size"], ml["lr"], ml["min_std"], ml["max_std"], ml["init_std"]) == (256, 5e-4, 0.5, 1.5, 1.0)
    assert own(cfg.resolve("rl2", "ML10", 1, "quick")) == own(ml)


def test_baseline_is_garages_fit_on_rl2_observations_of_this_batch():
    """garage's RL²: the linear baseline is fitted on the RL² observation (obs, a_prev, r_prev,
    done) of this batch, then predicts this batch (not last iteration's fit on the raw obs)."""
    rng = np.random.default_rng(0)
    n, T, d = 6, 40, 7
    tokens = rng.standard_normal((n, T, d))
    valid = np.ones((n, T), bool)
    valid[0, 30:] = False
    returns = rng.standard_normal((n, T))
    values = linear_baseline(tokens, valid, returns)
    assert np.all(values[~valid] == 0)
    # fitted on this batch: the residuals satisfy the (ridge) normal equations of its features
    feats = LinearFeatureBaseline.features(tokens, np.broadcast_to(np.arange(T), (n, T)))[valid]
    assert feats.shape[1] == 2 * d + 4
    residual = feats.T @ (returns[valid] - values[valid])
    np.testing.assert_allclose(residual, 1e-5 * np.linalg.lstsq(feats.T @ feats + 1e-5 * np.eye(2 * d + 4),
                                                                  feats.T @ returns[valid], rcond=None)[0], atol=1e-6)
    # the non-observation columns of the token are features: returns made of the previous
    # reward (the token's second-to-last column) are fitted exactly
    target = 3.0 * tokens[..., -2] * valid
    np.testing.assert_allclose(linear_baseline(tokens, valid, target)[valid], target[valid], atol=1e-3)


def test_update_reports_the_baselines_explained_variance():
    setup = prepare(cfg.resolve("rl2", "PointNav", 1, "smoke", overrides={"device": "cpu"}))
    agent = build_agent(setup)
    bench = setup.benchmark
    batch = run_trials(bench.make_env(4), agent, bench.sample_train_tasks(task_rng(1, 1), 4),
                       TrialSpec(bench.train_episodes, 0, True, 0, bench.episode_length), env_rngs(1, 1, 4))
    metrics = agent.update(batch)
    assert 0.0 < metrics["baseline_explained_variance"] <= 1.0
