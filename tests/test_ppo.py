"""Shared PPO pieces: GAE over concatenated trials, Monte-Carlo targets, clipping, minibatches,
the learning-rate decay schedule, the Gaussian value function's NLL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarl.learning import GaussianValueMLP
from metarl.ppo import (
    discounted_returns,
    exponential_decay,
    gae_advantages,
    minibatches,
    ppo_clip_loss,
)


def test_gae_matches_hand_computation_with_zero_bootstrap_and_padding():
    r = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    v = torch.tensor([[0.5, 0.25, 1.0, 9.0]])  # the padded value must be ignored
    valid = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    g, lam = 0.9, 0.8
    d2 = 3.0 + g * 0.0 - 1.0
    d1 = 2.0 + g * 1.0 - 0.25
    d0 = 1.0 + g * 0.25 - 0.5
    expected = [d0 + g * lam * (d1 + g * lam * d2), d1 + g * lam * d2, d2, 0.0]
    np.testing.assert_allclose(gae_advantages(r, v, valid, g, lam)[0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(discounted_returns(r, valid, g)[0].numpy(),
                               [1 + g * 2 + g * g * 3, 2 + g * 3, 3, 0], rtol=1e-6)


def test_gae_runs_across_episode_boundaries_unless_told():
    r = torch.ones(1, 4)
    v = torch.zeros(1, 4)
    valid = torch.ones(1, 4)
    across = gae_advantages(r, v, valid, 1.0, 1.0)
    assert across[0, 0] == 4.0  # one sequence: the trial
    cut = gae_advantages(r, v, valid, 1.0, 1.0, reset_at=torch.tensor([[False, True, False, False]]))
    assert cut[0].tolist() == [2.0, 1.0, 2.0, 1.0]


def test_ppo_clip_loss():
    logp_old = torch.zeros(2)
    adv = torch.tensor([1.0, -1.0])
    logp = torch.log(torch.tensor([1.5, 1.5]))
    # ratio 1.5: clipped to 1.2 for positive advantage, unclipped (min) for negative
    assert ppo_clip_loss(logp, logp_old, adv, 0.2).item() == pytest.approx(-(1.2 - 1.5) / 2)


def test_minibatches_keep_last_partial_and_reshuffle():
    g = torch.Generator().manual_seed(0)
    batches = list(minibatches(10, 4, 2, g))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(10))
    assert torch.cat(batches[:3]).tolist() != torch.cat(batches[3:]).tolist()


def test_exponential_decay_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = exponential_decay(opt, steps_per_epoch=10, start_epoch=2, end_epoch=4, min_factor=0.01)
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == lrs[29] == 1.0  # before epoch 3 no decay
    assert lrs[30] == pytest.approx(0.1)  # one factor γ = 0.01^(1/2)
    assert lrs[40] == pytest.approx(0.01) and lrs[59] == pytest.approx(0.01)  # floor


def test_value_nll():
    vf = GaussianValueMLP(3)
    x = torch.randn(5, 3)
    ret = torch.randn(5)
    mean = vf(x)
    std = vf.log_std.exp()
    expected = -torch.distributions.Normal(mean, std).log_prob(ret).mean()
    assert vf.loss(x, ret).item() == pytest.approx(expected.item(), rel=1e-5)
    assert math.isclose(vf.log_std.item(), 0.0)
