"""RL² (Duan et al. 2016) with PPO, as garage's RL2PPO runs it (research/baselines.md §1.5).

Policy: a GRU over the RL² tokens [obs, a_{t-1}, r_{t-1}, done_{t-1}] whose hidden state is
reset only at the start of a trial and carried across all its episodes (garage's
`NoResetPolicy` inside a trial), a linear Gaussian mean on the hidden state, and a
state-independent learned std (optionally clipped to [min_std, max_std], as garage's
Meta-World launchers do).

Learning, per iteration on the batch of trials (each trial is one sequence, as RL2Env /
RL2Worker concatenate the episodes):

- optional maximum-entropy bonus: reward += entropy_coeff · H(π) with the gradient stopped
  (garage's `entropy_method="max"`);
- baseline: garage's `LinearFeatureBaseline` (ridge regression on [x, x², t, t², t³, 1] over
  each trial, x the RL² observation [obs, a_{t-1}, r_{t-1}, done_{t-1}] and t = step index in
  the trial / 100), fitted on this batch's returns and then predicted on the same batch, as
  garage's RL2 (`tf/algos/rl2.py`, `_rl2npo.py` fit before `_process_samples` predicts); or
  (`baseline: shared`) a linear value head on the GRU state trained with the policy
  (coefficient `vf_coeff`, squared error);
- GAE(γ, λ) over the whole trial, no advantage centring;
- PPO clipped surrogate, `ppo_epochs` passes of Adam over minibatches of whole trials
  (`minibatch_trials`), back-propagating through each full trial (garage's recurrent
  optimiser feeds whole paths).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from metarl.agent import Agent, AgentConfig, EnvSpec, TrialSpec
from metarl.config import Discount, Fraction, NonNegativeFloat, PositiveFloat, PositiveInt
from metarl.errors import UsageError
from metarl.learning import LinearFeatureBaseline, explained_variance, gaussian_entropy, gaussian_log_prob
from metarl.ppo import discounted_returns, gae_advantages, minibatches
from metarl.seeding import agent_generator


@dataclass
class RL2Config(AgentConfig):
    hidden_size: PositiveInt = 64  # GRU units (garage rl2_ppo_halfcheetah: 64; Meta-World launchers: 256)
    init_std: PositiveFloat = 1.0  # initial action std (garage's default)
    min_std: NonNegativeFloat = 1e-6  # std is clipped to [min_std, max_std] (Meta-World launchers: 0.5..1.5)
    max_std: PositiveFloat = 1e6  # upper clip of the std
    baseline: Literal["linear", "shared"] = "linear"  # linear-feature baseline, or a value head on the GRU
    vf_coeff: NonNegativeFloat = 0.5  # weight of the value loss with baseline: shared
    discount: Discount = 0.99  # γ over the concatenated trial
    gae_lambda: Fraction = 0.95  # GAE λ
    clip: PositiveFloat = 0.2  # PPO clip ε
    lr: PositiveFloat = 1e-3  # Adam learning rate
    ppo_epochs: PositiveInt = 10  # passes over the batch
    minibatch_trials: PositiveInt = 32  # whole trials per minibatch
    entropy_coeff: NonNegativeFloat = 0.02  # maximum-entropy reward bonus (gradient stopped); 0 = off
    max_grad_norm: NonNegativeFloat = 0.0  # gradient-norm clip (0: off, as garage)

    def check(self) -> None:
        super().check()
        if self.min_std > self.max_std:
            raise UsageError(f"settings 'min_std' and 'max_std': min_std ({self.min_std:g}) must not exceed "
                             f"max_std ({self.max_std:g})")


class RL2Network(nn.Module):
    def __init__(self, token_dim: int, act_dim: int, hidden: int, init_std: float):
        super().__init__()
        self.gru = nn.GRU(token_dim, hidden, batch_first=True)
        self.mean = nn.Linear(hidden, act_dim)
        self.value = nn.Linear(hidden, 1)
        nn.init.xavier_uniform_(self.mean.weight)
        nn.init.zeros_(self.mean.bias)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(np.log(init_std))))

    def forward(self, tokens: torch.Tensor, h0: torch.Tensor | None = None):
        """tokens (B, T, token_dim) -> (means (B, T, act_dim), values (B, T), final hidden)."""
        out, h = self.gru(tokens, h0)
        return self.mean(out), self.value(out).squeeze(-1), h


def linear_baseline(tokens: np.ndarray, valid: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """garage's RL² baseline: a LinearFeatureBaseline fitted on this batch's valid steps
    (features of the RL² observations and the step index within the trial), then predicted on
    the same steps; (n, T) values, zero on padding."""
    steps = np.broadcast_to(np.arange(valid.shape[1]), valid.shape)
    feats = LinearFeatureBaseline.features(np.ascontiguousarray(tokens, dtype=np.float64), steps)
    base = LinearFeatureBaseline()
    base.fit(feats[valid], returns[valid])
    return base.predict(feats) * valid


class RL2Agent(Agent):
    Config = RL2Config

    def __init__(self, config: RL2Config, env: EnvSpec, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self.net = RL2Network(env.token_dim, env.act_dim, config.hidden_size, config.init_std).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.train_gen = agent_generator(seed, "act")
        self.update_gen = agent_generator(seed, "update")
        self.gen = self.train_gen
        self._h: torch.Tensor | None = None

    def _log_std(self) -> torch.Tensor:
        c = self.config
        return self.net.log_std.clamp(float(np.log(max(c.min_std, 1e-6))), float(np.log(c.max_std)))

    # -- acting ------------------------------------------------------------------------------
    def start_trial(self, n: int, spec: TrialSpec) -> None:
        self._h = torch.zeros(1, n, self.config.hidden_size, device=self.device)  # reset per trial only
        self.gen = self.trial_generator(spec)

    @torch.inference_mode()
    def act(self, tokens: np.ndarray, deterministic: np.ndarray):
        x = torch.from_numpy(tokens).to(self.device)[:, None]
        mean, _, self._h = self.net(x, self._h)
        mean = mean[:, 0]
        log_std = self._log_std()
        noise = torch.randn(mean.shape, generator=self.gen).to(self.device)
        noise[torch.from_numpy(deterministic).to(self.device)] = 0.0
        actions = mean + log_std.exp() * noise
        return actions.cpu().numpy(), {"logp": gaussian_log_prob(mean, log_std, actions).cpu().numpy()}

    # -- learning ----------------------------------------------------------------------------
    def update(self, batch) -> dict[str, float]:
        c, dev = self.config, self.device
        tokens = torch.from_numpy(np.ascontiguousarray(batch.tokens)).to(dev)
        actions = torch.from_numpy(np.ascontiguousarray(batch.actions)).to(dev)
        valid = torch.from_numpy(batch.valid).to(dev).float()
        rewards = torch.from_numpy(np.ascontiguousarray(batch.rewards)).to(dev).double()
        with torch.no_grad():
            entropy = gaussian_entropy(self._log_std())
            means, values, _ = self.net(tokens)
            logp_old = gaussian_log_prob(means, self._log_std(), actions)
        rewards = (rewards + c.entropy_coeff * float(entropy)) * valid.double()
        returns = discounted_returns(rewards, valid.double(), c.discount)
        if c.baseline == "linear":
            baseline = torch.from_numpy(linear_baseline(batch.tokens, batch.valid, returns.cpu().numpy())).to(dev)
        else:
            baseline = values.double()
        advantages = gae_advantages(rewards, baseline * valid.double(), valid.double(), c.discount, c.gae_lambda).float()
        returns = returns.float()

        losses = []
        for idx in minibatches(batch.n, c.minibatch_trials, c.ppo_epochs, self.update_gen):
            idx = idx.to(dev)
            means, values, _ = self.net(tokens[idx])
            logp = gaussian_log_prob(means, self._log_std(), actions[idx])
            ratio = torch.exp(logp - logp_old[idx])
            adv, v = advantages[idx], valid[idx]
            surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - c.clip, 1 + c.clip) * adv)
            loss = -(surrogate * v).sum() / v.sum()
            if c.baseline == "shared":
                loss = loss + c.vf_coeff * (((values - returns[idx]) ** 2) * v).sum() / v.sum()
            self.opt.zero_grad()
            loss.backward()
            if c.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(self.net.parameters(), c.max_grad_norm)
            self.opt.step()
            losses.append(loss.detach())
        with torch.no_grad():
            means, _, _ = self.net(tokens)
            logp_new = gaussian_log_prob(means, self._log_std(), actions)
            kl = ((logp_old - logp_new) * valid).sum() / valid.sum()
        metrics = {"loss": float(torch.stack(losses).mean()), "kl": float(kl), "entropy": float(entropy)}
        if c.baseline == "linear":
            metrics["baseline_explained_variance"] = explained_variance(baseline, returns.double(), valid)
        return metrics

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "train_gen": self.train_gen.get_state(),
            "update_gen": self.update_gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.train_gen.set_state(state["train_gen"])
        self.update_gen.set_state(state["update_gen"])

    def model_state(self) -> dict[str, Any]:
        return {"net": self.net.state_dict()}

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
