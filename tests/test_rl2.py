"""RL²: hidden state kept across the episodes of a trial and reset at its start; the linear
feature baseline; byte-identical reruns and resume; it learns PointNav."""

from __future__ import annotations

import signal
import time

import numpy as np
import torch

from baselines.rl2 import LinearFeatureBaseline
from metarl import config as cfg
from metarl.agent import TrialSpec
from metarl.runs import ckpt_dir_for, run_dir_for
from metarl.training import build_agent, prepare

from conftest import files_of, popen_cli, run_cli


def _agent(**overrides):
    setup = prepare(cfg.resolve("rl2", "PointNav", 1, "smoke", overrides={"device": "cpu", **overrides}))
    return build_agent(setup)


def test_hidden_state_carries_across_episodes_and_resets_per_trial():
    agent = _agent()
    tokens = np.random.default_rng(0).standard_normal((2, agent.env.token_dim)).astype(np.float32)
    det = np.ones(2, bool)
    agent.start_trial(2, TrialSpec(2, 0, False, 0))
    first, _ = agent.act(tokens, det)
    h_after_one = agent._h.clone()
    agent.start_episode(np.arange(2))  # a new episode of the same trial: nothing is reset
    assert torch.equal(agent._h, h_after_one)
    second, _ = agent.act(tokens, det)
    assert not np.allclose(first, second)  # same token, different memory
    agent.start_trial(2, TrialSpec(2, 0, False, 0))
    assert torch.count_nonzero(agent._h) == 0
    again, _ = agent.act(tokens, det)
    np.testing.assert_allclose(again, first, rtol=1e-6)


def test_rollout_and_update_sequences_agree():
    """Stepping the GRU token by token (rollout) equals running it over the whole trial (update)."""
    agent = _agent()
    rng = np.random.default_rng(1)
    seq = rng.standard_normal((3, 7, agent.env.token_dim)).astype(np.float32)
    agent.start_trial(3, TrialSpec(1, 0, False, 0))
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


SMOKE = ["train", "--algo", "rl2", "--env", "PointNav", "--seed", "1", "--preset", "smoke"]


def test_rl2_same_bytes_and_resume(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    run_cli(SMOKE, cwd=a)
    run = run_dir_for("PointNav", "rl2", "default", 1)
    reference = files_of(a / run)
    proc = popen_cli(SMOKE, cwd=b)
    ckpt = b / ckpt_dir_for(run) / "state.ckpt"
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_cli(SMOKE, cwd=b)
    assert files_of(b / run) == reference


def test_rl2_learns_point_nav(tmp_path):
    """A shortened `metarl train --algo rl2 --env PointNav --preset quick`: half the budget."""
    common = ["--env", "PointNav", "--seed", "1", "--preset", "quick", "--quiet",
              "--set", "total_env_steps=100000", "--set", "eval_every=0"]
    run_cli(["train", "--algo", "rl2", *common], cwd=tmp_path, timeout=900)
    run_cli(["train", "--algo", "random", *common], cwd=tmp_path)

    def final_adapted(algo):
        lines = (tmp_path / run_dir_for("PointNav", algo, "default", 1) / "eval.csv").read_text().splitlines()[1:]
        rows = [line.split(",") for line in lines]
        last = max(int(r[0]) for r in rows)
        return np.mean([float(r[5]) for r in rows if int(r[0]) == last and r[4] == "5"])

    rl2, floor = final_adapted("rl2"), final_adapted("random")
    assert rl2 > floor + 3.5, (rl2, floor)
