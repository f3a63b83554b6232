"""TrMRL on the shared harness: a windowed transformer policy over RL² tokens, trained with
PPO exactly as the original code does (research/trmrl.md §1–2, §8).

Acting: every slot keeps a window of the last `window` RL² tokens of its *current episode*;
the window is zeroed at every episode start (the original's `reset_observations`), filled at
positions 0, 1, ... and then shifted FIFO. One batched forward pass per step over all slots.
The window and its fill count are stored with each step, so the PPO update re-runs the
transformer on exactly the inputs the rollout saw.

Learning (per iteration, on the batch of trials): values of every step from the value function
(before any update), GAE(γ, λ) over each concatenated trial with a zero bootstrap at its end,
Monte-Carlo returns as value targets; then `ppo_epochs` passes of minibatch PPO on the policy
(no advantage normalisation, no entropy term), *then* `ppo_epochs` passes on the value function
(Gaussian negative log-likelihood). Two AdamW optimisers (weight decay 0.01) with garage's
exponential learning-rate decay, stepped per gradient step. With `share_network` the value
function sits on the policy's transformer output and its optimiser updates the whole policy
too, with gradients zeroed rather than freed, as PyTorch 1.7 did (so weight decay reaches the
policy head from both optimisers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from metarl.agent import Agent, AgentConfig, EnvSpec, TrialSpec
from metarl.config import (
    Discount,
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveFraction,
    PositiveInt,
)
from metarl.errors import UsageError
from metarl.learning import GaussianValueMLP, gaussian_entropy, gaussian_log_prob
from metarl.ppo import discounted_returns, exponential_decay, gae_advantages, minibatches, ppo_clip_loss
from metarl.seeding import agent_generator
from trmrl.model import TransformerSettings, TrMRLPolicy


@dataclass
class TrMRLConfig(AgentConfig):
    # model (research/trmrl.md §1; defaults: the MuJoCo setting)
    d_model: PositiveInt = 128  # transformer width
    heads: PositiveInt = 16  # attention heads
    layers: PositiveInt = 4  # encoder blocks
    dim_ff: PositiveInt = 512  # feed-forward width
    window: PositiveInt = 5  # working-memory length: last N tokens of the current episode
    tfixup: bool = True  # T-Fixup initialisation as coded in the original
    layernorm: Literal["none", "post", "pre"] = "none"  # none = TrMRL (every LayerNorm removed)
    policy_head_input: Literal["latest", "mixed", "full"] = "latest"  # what the 64-64 head reads
    output_gain: NonNegativeFloat = 1.0  # Xavier gain of the policy's output layer (1.0 or 0.01)
    init_std: PositiveFloat = 0.2  # initial action std (learned, state-independent)
    share_network: bool = False  # value function on the transformer output (and trains it)
    # PPO (research/trmrl.md §2)
    discount: Discount = 0.9  # γ over the concatenated trial
    gae_lambda: Fraction = 0.8  # GAE λ
    clip: PositiveFloat = 0.1  # PPO clip ε
    policy_lr: PositiveFloat = 3e-5  # AdamW learning rate of the policy
    vf_lr: PositiveFloat = 2.5e-4  # AdamW learning rate of the value function
    weight_decay: NonNegativeFloat = 0.01  # AdamW weight decay (PyTorch's default, as the original)
    ppo_epochs: PositiveInt = 10  # passes over the batch, policy first, then the value function
    minibatch_size: PositiveInt = 256  # steps per minibatch
    policy_decay_start: NonNegativeInt = 100  # policy lr decays exponentially from this iteration ...
    policy_decay_end: NonNegativeInt = 750  # ... to this one ...
    policy_min_lr_factor: PositiveFraction = 0.1  # ... down to lr x this factor (1.0: no decay)
    vf_decay_start: NonNegativeInt = 0  # the same for the value function
    vf_decay_end: NonNegativeInt = 0  # (end <= start: constant)
    vf_min_lr_factor: PositiveFraction = 1.0  # value-function lr floor factor
    # sampling (research/trmrl.md §2): read by the harness (metarl.training.TrainSampler)
    fill_batch: bool = True  # more trials (tasks in order) until meta_batch_size x episodes x ep. length steps

    def check(self) -> None:
        super().check()
        if self.d_model % self.heads:
            raise UsageError(f"settings 'd_model' and 'heads': d_model ({self.d_model}) must be a multiple of "
                             f"heads ({self.heads})")


class TrMRLAgent(Agent):
    Config = TrMRLConfig
    supports_memory_export = True

    def __init__(self, config: TrMRLConfig, env: EnvSpec, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        c = config
        self.settings = TransformerSettings(
            token_dim=env.token_dim, act_dim=env.act_dim, d_model=c.d_model, heads=c.heads, layers=c.layers,
            dim_ff=c.dim_ff, window=c.window, tfixup=c.tfixup, layernorm=c.layernorm,
            policy_head_input=c.policy_head_input, output_gain=c.output_gain, init_std=c.init_std,
        )
        self.policy = TrMRLPolicy(self.settings).to(device)
        vf_input = self.policy.head_in_dim if c.share_network else env.token_dim
        self.value = GaussianValueMLP(vf_input).to(device)
        # fused: one kernel per step for all parameters (PyTorch's default loops over them)
        self.policy_opt = torch.optim.AdamW(self.policy.parameters(), lr=c.policy_lr, weight_decay=c.weight_decay,
                                            fused=True)
        vf_params = list(self.value.parameters()) + (list(self.policy.parameters()) if c.share_network else [])
        self.value_opt = torch.optim.AdamW(vf_params, lr=c.vf_lr, weight_decay=c.weight_decay, fused=True)
        # The original counts an "epoch" as ppo_epochs * batch // minibatch gradient steps
        # (nominal; the partial minibatch makes the real count a little higher). With
        # `fill_batch` a batch holds at least the nominal steps (more trials than meta_batch_size
        # when episodes end early); the update takes any number of trials, and the number of
        # gradient steps grows with the batch, as in the original.
        batch_steps = c.meta_batch_size * env.train_episodes * env.episode_length
        steps_per_epoch = max(1, c.ppo_epochs * batch_steps // c.minibatch_size)
        self.policy_sched = exponential_decay(self.policy_opt, steps_per_epoch, c.policy_decay_start,
                                              c.policy_decay_end, c.policy_min_lr_factor)
        self.value_sched = exponential_decay(self.value_opt, steps_per_epoch, c.vf_decay_start,
                                             c.vf_decay_end, c.vf_min_lr_factor)
        self.train_gen = agent_generator(seed, "act")
        self.update_gen = agent_generator(seed, "update")
        self.gen = self.train_gen
        self._windows = np.zeros((0, c.window, env.token_dim), np.float32)
        self._lengths = np.zeros(0, np.int64)

    # -- acting ------------------------------------------------------------------------------
    def start_trial(self, n: int, spec: TrialSpec) -> None:
        self._windows = np.zeros((n, self.config.window, self.env.token_dim), np.float32)
        self._lengths = np.zeros(n, np.int64)
        self.gen = self.trial_generator(spec)

    def start_episode(self, slots: np.ndarray) -> None:
        self._windows[slots] = 0.0  # the window never crosses an episode boundary
        self._lengths[slots] = 0

    def _write(self, tokens: np.ndarray) -> None:
        full = self._lengths == self.config.window
        if full.any():
            self._windows[full, :-1] = self._windows[full, 1:]  # FIFO: drop the oldest
            self._windows[full, -1] = tokens[full]
        filling = np.flatnonzero(~full)
        self._windows[filling, self._lengths[filling]] = tokens[filling]
        self._lengths[filling] += 1

    @torch.inference_mode()
    def act(self, tokens: np.ndarray, deterministic: np.ndarray):
        self._write(tokens)
        windows = torch.from_numpy(self._windows).to(self.device)
        lengths = torch.from_numpy(self._lengths).to(self.device)
        mean, log_std = self.policy(windows, lengths)
        noise = torch.randn(mean.shape, generator=self.gen).to(self.device)
        noise[torch.from_numpy(deterministic).to(self.device)] = 0.0
        actions = mean + log_std.exp() * noise
        logp = gaussian_log_prob(mean, log_std, actions)
        extras = {"window": self._windows.copy(), "window_len": self._lengths.copy(), "logp": logp.cpu().numpy()}
        if self.export_memory:  # the policy-head input e_t: the paper's "episodic memory"
            extras["memory"] = self.policy.head_input(windows, lengths).cpu().numpy()
        return actions.cpu().numpy(), extras

    # -- learning ----------------------------------------------------------------------------
    def _value_input(self, windows: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.config.share_network:
            return self.policy.head_input(windows, lengths)
        return tokens

    def update(self, batch) -> dict[str, float]:
        c, dev = self.config, self.device
        valid = torch.from_numpy(batch.valid).to(dev)
        flat = valid.reshape(-1)
        windows = torch.from_numpy(batch.extras["window"]).to(dev).reshape(-1, c.window, self.env.token_dim)[flat]
        lengths = torch.from_numpy(batch.extras["window_len"]).to(dev).reshape(-1)[flat]
        tokens = torch.from_numpy(np.ascontiguousarray(batch.tokens)).to(dev).reshape(-1, self.env.token_dim)[flat]
        actions = torch.from_numpy(np.ascontiguousarray(batch.actions)).to(dev).reshape(-1, self.env.act_dim)[flat]
        rewards = torch.from_numpy(np.ascontiguousarray(batch.rewards)).to(dev)
        validf = valid.float()
        m = len(actions)

        def over_batch(fn) -> torch.Tensor:
            """fn(indices) on the whole batch, in chunks that bound memory, without gradients."""
            with torch.no_grad():
                return torch.cat([fn(i) for i in torch.arange(m, device=dev).split(4096)])

        values_flat = over_batch(lambda i: self.value(self._value_input(windows[i], lengths[i], tokens[i])))
        logp_old = over_batch(lambda i: self.policy.log_prob(windows[i], lengths[i], actions[i]))
        values = torch.zeros_like(rewards).reshape(-1)
        values[flat] = values_flat
        values = values.reshape(rewards.shape)
        advantages = gae_advantages(rewards, values, validf, c.discount, c.gae_lambda).reshape(-1)[flat]
        returns = discounted_returns(rewards, validf, c.discount).reshape(-1)[flat]

        policy_losses = []
        for idx in minibatches(m, c.minibatch_size, c.ppo_epochs, self.update_gen):
            idx = idx.to(dev)
            logp = self.policy.log_prob(windows[idx], lengths[idx], actions[idx])
            loss = ppo_clip_loss(logp, logp_old[idx], advantages[idx], c.clip)
            self.policy_opt.zero_grad(set_to_none=False)
            loss.backward()
            self.policy_opt.step()
            self.policy_sched.step()
            policy_losses.append(loss.detach())
        value_losses = []
        for idx in minibatches(m, c.minibatch_size, c.ppo_epochs, self.update_gen):
            idx = idx.to(dev)
            loss = self.value.loss(self._value_input(windows[idx], lengths[idx], tokens[idx]), returns[idx])
            self.value_opt.zero_grad(set_to_none=False)
            loss.backward()
            self.value_opt.step()
            self.value_sched.step()
            value_losses.append(loss.detach())

        logp_new = over_batch(lambda i: self.policy.log_prob(windows[i], lengths[i], actions[i]))
        with torch.no_grad():
            kl = (logp_old - logp_new).mean()
            entropy = gaussian_entropy(self.policy.clamped_log_std())
        return {
            "policy_loss": float(torch.stack(policy_losses).mean()),
            "value_loss": float(torch.stack(value_losses).mean()),
            "kl": float(kl),
            "entropy": float(entropy),
            "policy_lr": float(self.policy_opt.param_groups[0]["lr"]),
            "vf_lr": float(self.value_opt.param_groups[0]["lr"]),
        }

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict(),
            "policy_opt": self.policy_opt.state_dict(),
            "value_opt": self.value_opt.state_dict(),
            "policy_sched": self.policy_sched.state_dict(),
            "value_sched": self.value_sched.state_dict(),
            "train_gen": self.train_gen.get_state(),
            "update_gen": self.update_gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
        self.policy_opt.load_state_dict(state["policy_opt"])
        self.value_opt.load_state_dict(state["value_opt"])
        self.policy_sched.load_state_dict(state["policy_sched"])
        self.value_sched.load_state_dict(state["value_sched"])
        self.train_gen.set_state(state["train_gen"])
        self.update_gen.set_state(state["update_gen"])

    def model_state(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "value": self.value.state_dict()}

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
