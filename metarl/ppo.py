"""Shared learning pieces for the PPO-trained agents (TrMRL, RL², VariBAD).

Everything works on padded trial tensors of shape (N trials, L steps) with a `valid` mask, as
`metarl.sampling.TrialBatch` provides them. Written from TrMRL's garage-based code
(research/trmrl.md §2):

- advantages: GAE(γ, λ) over the whole concatenated trial, no masking at internal episode
  boundaries, bootstrap value 0 at the trial's end (`gae_advantages`; `reset_at` lets an
  algorithm cut at episode boundaries instead);
- value targets: plain discounted Monte-Carlo returns over the trial (`discounted_returns`);
- the clipped surrogate without advantage normalisation or entropy (`ppo_clip_loss`);
- shuffled minibatches that keep the last partial one, or drop it (`minibatches`);
- garage's step-wise exponential learning-rate decay (`exponential_decay`).

Networks, Gaussian helpers, normalisers and baselines shared by every algorithm are in
`metarl.learning`.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

def discount_cumsum(x: Tensor, discount: float) -> Tensor:
    """y[t] = sum_k discount^k x[t+k] along the last axis (reverse discounted cumulative sum)."""
    out = torch.zeros_like(x)
    running = torch.zeros_like(x[..., 0])
    for t in range(x.shape[-1] - 1, -1, -1):
        running = x[..., t] + discount * running
        out[..., t] = running
    return out


def discounted_returns(rewards: Tensor, valid: Tensor, discount: float) -> Tensor:
    """Monte-Carlo returns over each whole trial (padding contributes 0)."""
    return discount_cumsum(rewards * valid, discount)


def gae_advantages(rewards: Tensor, values: Tensor, valid: Tensor, discount: float, gae_lambda: float,
                   reset_at: Tensor | None = None) -> Tensor:
    """GAE over each trial; the value after the last valid step is 0.

    `reset_at` (bool, same shape): where an episode ends and the next must not bootstrap from
    it (None: the trial is one sequence, as in TrMRL/garage's RL²).
    """
    rewards = rewards * valid
    values = values * valid
    next_values = torch.nn.functional.pad(values[..., 1:], (0, 1))
    if reset_at is not None:
        next_values = next_values * (~reset_at)
    deltas = rewards + discount * next_values - values
    if reset_at is None:
        return discount_cumsum(deltas, discount * gae_lambda) * valid
    out = torch.zeros_like(deltas)
    running = torch.zeros_like(deltas[..., 0])
    for t in range(deltas.shape[-1] - 1, -1, -1):
        running = deltas[..., t] + discount * gae_lambda * running * (~reset_at[..., t])
        out[..., t] = running
    return out * valid


def ppo_clip_loss(logp: Tensor, logp_old: Tensor, advantages: Tensor, clip: float) -> Tensor:
    """−E[min(ρA, clip(ρ, 1−ε, 1+ε)A)] with ρ = exp(logp − logp_old)."""
    ratio = torch.exp(logp - logp_old)
    surrogate = torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - clip, 1 + clip) * advantages)
    return -surrogate.mean()


def minibatches(n: int, size: int, epochs: int, generator: torch.Generator,
                drop_last: bool = False) -> Iterator[Tensor]:
    """`epochs` passes over range(n), reshuffled each pass, in minibatches of `size` (the last,
    partial one kept, as garage's optimizer wrapper does; `drop_last` drops it, as PyTorch's
    BatchSampler in ikostrikov-style PPO, e.g. VariBAD, does)."""
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - size + 1 if drop_last else n, size):
            yield order[start : start + size]


def exponential_decay(optimizer: torch.optim.Optimizer, steps_per_epoch: int, start_epoch: int, end_epoch: int,
                      min_factor: float) -> torch.optim.lr_scheduler.LambdaLR:
    """garage's LRDecayOptimizerWrapper: stepped once per gradient step; between `start_epoch` and
    `end_epoch` the learning rate is multiplied by γ = min_factor^(1/(end−start)) once per epoch
    of `steps_per_epoch` gradient steps, then stays at lr·min_factor. end ≤ start: constant."""
    if end_epoch <= start_epoch or min_factor == 1.0:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    gamma = min_factor ** (1.0 / (end_epoch - start_epoch))

    def factor(step: int) -> float:
        decays = min(max(step // steps_per_epoch - start_epoch, 0), end_epoch - start_epoch)
        return gamma**decays

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
