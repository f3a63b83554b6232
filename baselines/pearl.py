"""PEARL (Rakelly et al. 2019): SAC + a probabilistic context encoder, as katerakelly/oyster
runs it (research/baselines.md §1.4; oyster `rlkit/torch/sac/{sac,agent}.py`,
`rlkit/core/rl_algorithm.py`, `configs/default.py`).

Networks (ReLU MLPs): a permutation-invariant context encoder maps every context transition
(s, a, r[, s']) to a Gaussian factor N(μ_i, σ²_i) (σ² = softplus); the posterior q(z|c) is their
product (optionally times the prior N(0, I)); a tanh-Gaussian policy on [s, z]; twin Q on
[s, a, z]; a state-value V on [s, z] with a Polyak-averaged target V (oyster's SAC, not the
target-Q form). Entropy is fixed (α = 1) and weighted through `reward_scale`, as in oyster.

One gradient step (oyster `_take_step`), on `rl_meta_batch` tasks drawn from the stored ones:
a context batch per task from its encoder buffer and an RL batch from its RL buffer; z ~ q(z|c)
(reparameterised); Q loss on r·scale + γ(1−done)·V̄(s', z), whose gradient also trains the
encoder, plus kl_lambda·KL(q(z|c) ‖ N(0, I)); V toward min Q(s, ã, z) − log π(ã|s, z) with the
new Q; policy toward min Q − log π, with 1e-3 penalties on the mean and log-std; target V soft
update by τ. z is detached for the policy and V.

Data collection, mapped onto the harness's trials (one trial = one task): the first
`prior_episodes` episodes of a training trial draw z from the prior (a new draw per episode) and
go to both buffers; the next `posterior_episodes` draw z from the posterior and go to both; the
remaining ones draw z from the posterior and go to the RL buffer only (oyster's
num_steps_prior / num_steps_posterior / num_extra_rl_steps_posterior). The posterior during
collection is inferred, after every episode, from `embedding_batch_size` transitions sampled
from the task's encoder data of this trial (oyster clears a task's encoder buffer when it
collects for it, then samples context from it). Until `initial_env_steps` training steps have
been seen, every episode uses the prior and feeds both buffers (oyster's initial pool).

Evaluation (oyster `collect_paths` with accum_context): z is drawn from the prior for the first
`exp_episodes_eval` episodes; after each later episode the posterior is inferred from every
transition of the trial so far and a z drawn from it. Deterministic steps use the mean action
tanh(μ) and, once a posterior exists, its mean as z (oyster samples z even then; garage also
re-samples the action, research/baselines.md §1.7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metarl.agent import Agent, AgentConfig, EnvSpec, TrialSpec
from metarl.config import Discount, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveFraction, PositiveInt
from metarl.errors import UsageError
from metarl.learning import mlp
from metarl.seeding import agent_generator, agent_rng

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # rlkit's TanhGaussianPolicy clamp


@dataclass
class PEARLConfig(AgentConfig):
    latent_dim: PositiveInt = 5  # size of z (oyster default 5; garage Meta-World 7)
    net_size: PositiveInt = 300  # units per hidden layer of policy, Q and V (oyster/garage 300)
    net_layers: NonNegativeInt = 3  # hidden layers of policy, Q and V
    encoder_size: PositiveInt = 200  # units per hidden layer of the context encoder (oyster 200)
    encoder_layers: NonNegativeInt = 3  # hidden layers of the context encoder
    use_next_obs_in_context: bool = False  # context (s, a, r, s') instead of (s, a, r)
    prior_in_posterior: bool = False  # multiply the prior N(0, I) into q(z|c) (oyster/garage: no)
    reward_scale: PositiveFloat = 5.0  # rewards ×scale in the Bellman target (fixes the entropy weight)
    kl_lambda: NonNegativeFloat = 0.1  # weight of KL(q(z|c) ‖ N(0, I)) in the encoder loss
    discount: Discount = 0.99  # γ
    soft_target_tau: PositiveFraction = 0.005  # Polyak rate of the target V
    lr: PositiveFloat = 3e-4  # Adam learning rate of policy, Q, V and encoder
    policy_mean_reg: NonNegativeFloat = 1e-3  # penalty on the pre-tanh mean²
    policy_std_reg: NonNegativeFloat = 1e-3  # penalty on log-std²
    rl_meta_batch: PositiveInt = 16  # tasks per gradient step (oyster meta_batch)
    batch_size: PositiveInt = 256  # RL transitions per task per gradient step
    embedding_batch_size: PositiveInt = 100  # context transitions per task per gradient step
    grad_steps: NonNegativeInt = 800  # gradient steps per iteration (oyster: 2000 per 5000 env steps)
    prior_episodes: NonNegativeInt = 1  # episodes of a training trial with z ~ prior (both buffers)
    posterior_episodes: NonNegativeInt = 0  # next episodes with z ~ posterior that also feed the encoder buffer
    initial_env_steps: NonNegativeInt = 0  # training steps collected with z ~ prior only, into both buffers
    exp_episodes_eval: NonNegativeInt = 1  # evaluation episodes with z ~ prior before the posterior is used
    replay_size: PositiveInt = 1_000_000  # transitions kept per task (FIFO)
    max_tasks: PositiveInt = 1000  # task buffers kept, least recently met dropped (continuous task sets)

    def check(self) -> None:
        super().check()
        if self.prior_episodes + self.posterior_episodes < 1:
            raise UsageError("settings 'prior_episodes' and 'posterior_episodes': at least one episode of a "
                             "training trial must feed the encoder buffer (both are 0)")


# ----------------------------------------------------------------------------- networks


def _init(net: nn.Sequential, out_w: float = 3e-3) -> nn.Sequential:
    """rlkit's Mlp init: hidden weights U(±1/√fan_in), hidden biases 0.1, last layer U(±3e-3)."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for layer in linears[:-1]:
        bound = 1.0 / math.sqrt(layer.in_features)
        nn.init.uniform_(layer.weight, -bound, bound)
        nn.init.constant_(layer.bias, 0.1)
    nn.init.uniform_(linears[-1].weight, -out_w, out_w)
    nn.init.uniform_(linears[-1].bias, -out_w, out_w)
    return net


def relu_mlp(inp: int, hidden: int, layers: int, out: int) -> nn.Sequential:
    return _init(mlp([inp, *([hidden] * layers), out], nn.ReLU))


class TanhGaussianPolicy(nn.Module):
    def __init__(self, inp: int, act_dim: int, hidden: int, layers: int):
        super().__init__()
        self.net = relu_mlp(inp, hidden, layers, 2 * act_dim)
        self.act_dim = act_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(x).split(self.act_dim, -1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


def tanh_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor):
    """Reparameterised tanh-Gaussian sample and its log-density (rlkit's TanhNormal, ε = 1e-6)."""
    pre = mean + log_std.exp() * noise
    action = torch.tanh(pre)
    logp = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    logp = logp - torch.log(1 - action.pow(2) + 1e-6).sum(-1)
    return action, logp


def product_of_gaussians(mu: torch.Tensor, var: torch.Tensor, with_prior: bool = False):
    """Factors (..., C, L) -> posterior mean and variance (..., L): precisions add, means are
    precision-weighted (oyster `_product_of_gaussians`, variances clamped at 1e-7). With
    `with_prior`, the prior N(0, I) is one more factor."""
    precision = 1.0 / var.clamp_min(1e-7)
    total = precision.sum(-2)
    weighted = (mu * precision).sum(-2)
    if with_prior:
        total = total + 1.0
    post_var = 1.0 / total
    return post_var * weighted, post_var


class ContextEncoder(nn.Module):
    def __init__(self, inp: int, latent: int, hidden: int, layers: int, with_prior: bool):
        super().__init__()
        self.net = relu_mlp(inp, hidden, layers, 2 * latent)
        self.latent = latent
        self.with_prior = with_prior

    def factors(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.net(context).split(self.latent, -1)
        return mu, F.softplus(raw)

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context (..., C, D) -> q(z|c) mean and variance (..., L)."""
        return product_of_gaussians(*self.factors(context), with_prior=self.with_prior)


class PEARLNetworks(nn.Module):
    def __init__(self, c: PEARLConfig, obs_dim: int, act_dim: int):
        super().__init__()
        ctx = obs_dim + act_dim + 1 + (obs_dim if c.use_next_obs_in_context else 0)
        self.encoder = ContextEncoder(ctx, c.latent_dim, c.encoder_size, c.encoder_layers, c.prior_in_posterior)
        self.policy = TanhGaussianPolicy(obs_dim + c.latent_dim, act_dim, c.net_size, c.net_layers)
        self.qf1 = relu_mlp(obs_dim + act_dim + c.latent_dim, c.net_size, c.net_layers, 1)
        self.qf2 = relu_mlp(obs_dim + act_dim + c.latent_dim, c.net_size, c.net_layers, 1)
        self.vf = relu_mlp(obs_dim + c.latent_dim, c.net_size, c.net_layers, 1)
        self.target_vf = relu_mlp(obs_dim + c.latent_dim, c.net_size, c.net_layers, 1)
        self.target_vf.load_state_dict(self.vf.state_dict())
        self.target_vf.requires_grad_(False)


# ----------------------------------------------------------------------------- replay


class TaskBuffer:
    """One task's transitions, rows [obs | action (normalised) | reward | next_obs | done]; a FIFO
    of `capacity` rows (rlkit's SimpleReplayBuffer), grown on demand."""

    def __init__(self, width: int, capacity: int):
        self.data = np.zeros((0, width), np.float32)
        self.size = 0
        self.top = 0  # next row to overwrite once full
        self.capacity = capacity

    def add(self, rows: np.ndarray) -> None:
        rows = rows[-self.capacity:]
        if self.size < self.capacity:
            fit = min(len(rows), self.capacity - self.size)
            need = self.size + fit
            if need > len(self.data):
                grown = np.zeros((min(self.capacity, max(need, 2 * len(self.data))), self.data.shape[1]), np.float32)
                grown[: self.size] = self.data[: self.size]
                self.data = grown
            self.data[self.size : need] = rows[:fit]
            self.size = need
            rows = rows[fit:]
            self.top = 0
        if len(rows):
            idx = (self.top + np.arange(len(rows))) % self.capacity
            self.data[idx] = rows
            self.top = int((self.top + len(rows)) % self.capacity)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.data[rng.integers(0, self.size, n)]  # with replacement, as rlkit

    def state(self) -> dict[str, Any]:
        return {"data": self.data[: self.size].copy(), "top": self.top}

    @classmethod
    def from_state(cls, state: dict[str, Any], capacity: int) -> "TaskBuffer":
        buf = cls(state["data"].shape[1], capacity)
        buf.data, buf.size, buf.top = state["data"].copy(), len(state["data"]), state["top"]
        return buf


def task_key(task) -> str:
    return repr(sorted(task.params.items()))


# ----------------------------------------------------------------------------- agent


class PEARLAgent(Agent):
    Config = PEARLConfig

    def __init__(self, config: PEARLConfig, env: EnvSpec, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        c = config
        self.nets = PEARLNetworks(c, env.obs_dim, env.act_dim).to(device)
        n = self.nets
        # Adam is per parameter, so one optimiser for Q1, Q2 and the encoder (stepped together,
        # as oyster's three) is the same update with fewer calls; fused: one kernel per step
        # (~4 ms of a ~28 ms quick-size gradient step on one core, against foreach).
        critic = [*n.qf1.parameters(), *n.qf2.parameters(), *n.encoder.parameters()]
        self.opts = {
            "critic": torch.optim.Adam(critic, lr=c.lr, fused=True),
            "vf": torch.optim.Adam(n.vf.parameters(), lr=c.lr, fused=True),
            "policy": torch.optim.Adam(n.policy.parameters(), lr=c.lr, fused=True),
        }
        self.center_np = (env.action_high + env.action_low) / 2  # for buffer rows (no device round trip)
        self.half_np = (env.action_high - env.action_low) / 2
        self.center = torch.as_tensor(self.center_np, device=device)
        self.half = torch.as_tensor(self.half_np, device=device)
        self.width = 2 * env.obs_dim + env.act_dim + 2
        self.rl_buffers: dict[str, TaskBuffer] = {}
        self.enc_buffers: dict[str, np.ndarray] = {}
        self.steps_seen = 0
        # streams: acting in training trials (torch), context sampling (numpy), updates (both)
        self.train_gen = agent_generator(seed, "act")
        self.update_gen = agent_generator(seed, "update")
        self.np_gen = agent_rng(seed, "buffer")
        self.gen = self.train_gen
        self._spec: TrialSpec | None = None

    # -- helpers -----------------------------------------------------------------------------
    def _rows(self, batch, s: int, mask: np.ndarray) -> np.ndarray:
        """Buffer rows of trial `s` at the steps in `mask`."""
        actions = (batch.actions[s][mask] - self.center_np) / self.half_np
        return np.concatenate([
            batch.obs[s][mask], actions, batch.rewards[s][mask, None],
            batch.next_obs[s][mask], batch.terminated[s][mask, None],
        ], axis=1, dtype=np.float32)

    def _context(self, rows: np.ndarray) -> np.ndarray:
        """Context features [obs, action, reward(, next_obs)] of buffer rows."""
        o, a = self.env.obs_dim, self.env.act_dim
        end = 2 * o + a + 1 if self.config.use_next_obs_in_context else o + a + 1
        return rows[..., :end]

    def _set_posterior(self, slots: np.ndarray, mean: torch.Tensor, var: torch.Tensor) -> None:
        noise = torch.randn(mean.shape, generator=self.gen).to(self.device)
        self._z_mean[slots] = mean
        self._z[slots] = mean + var.sqrt() * noise
        self._z_var[slots] = var

    def _prior(self, slots: np.ndarray) -> None:
        k, latent = len(slots), self.config.latent_dim
        self._set_posterior(slots, torch.zeros(k, latent, device=self.device), torch.ones(k, latent, device=self.device))
        self._has_post[slots] = False

    # -- acting ------------------------------------------------------------------------------
    def start_trial(self, n: int, spec: TrialSpec) -> None:
        self._spec = spec
        self.gen = self.trial_generator(spec)
        latent = self.config.latent_dim
        self._z = torch.zeros(n, latent, device=self.device)
        self._z_mean = torch.zeros(n, latent, device=self.device)
        self._z_var = torch.ones(n, latent, device=self.device)
        self._has_post = np.zeros(n, bool)
        self._episode = np.zeros(n, np.int64)
        self._initial = spec.training and self.steps_seen < self.config.initial_env_steps
        self._prior(np.arange(n))

    @torch.inference_mode()
    def end_episode(self, slots: np.ndarray, trials) -> None:
        c, spec = self.config, self._spec
        for s in slots:
            e = int(self._episode[s])
            self._episode[s] = e + 1
            if spec.training:
                enc_episodes = c.prior_episodes + c.posterior_episodes
                if self._initial or e + 1 < c.prior_episodes:
                    self._prior(np.array([s]))  # z ~ prior, a fresh draw per episode
                    continue
                rows = self._rows(trials, s, trials.valid[s] & (trials.episode[s] < min(e + 1, enc_episodes)))
                context = rows[self.np_gen.integers(0, len(rows), c.embedding_batch_size)]
            else:
                if e + 1 < c.exp_episodes_eval:
                    continue  # keep the prior z (oyster infers only after num_exp_traj_eval)
                context = self._rows(trials, s, trials.valid[s] & (trials.episode[s] <= e))
            ctx = torch.from_numpy(self._context(context)).to(self.device)
            mean, var = self.nets.encoder(ctx)
            self._set_posterior(np.array([s]), mean[None], var[None])
            self._has_post[s] = True

    @torch.inference_mode()
    def act(self, tokens: np.ndarray, deterministic: np.ndarray):
        obs = torch.from_numpy(tokens[:, : self.env.obs_dim]).to(self.device)
        det = torch.from_numpy(deterministic).to(self.device)
        use_mean = torch.from_numpy(deterministic & self._has_post).to(self.device)
        z = torch.where(use_mean[:, None], self._z_mean, self._z)
        mean, log_std = self.nets.policy(torch.cat([obs, z], 1))
        noise = torch.randn(mean.shape, generator=self.gen).to(self.device)
        pre = torch.where(det[:, None], mean, mean + log_std.exp() * noise)
        return (self.center + self.half * torch.tanh(pre)).cpu().numpy(), {}

    # -- learning ----------------------------------------------------------------------------
    def _store(self, batch) -> None:
        c = self.config
        initial = self.steps_seen < c.initial_env_steps  # as decided at this batch's start_trial
        for s, task in enumerate(batch.tasks):
            key = task_key(task)
            valid = batch.valid[s]
            buf = self.rl_buffers.pop(key, None) or TaskBuffer(self.width, c.replay_size)
            buf.add(self._rows(batch, s, valid))
            self.rl_buffers[key] = buf  # most recently met last
            enc = valid if initial else valid & (batch.episode[s] < c.prior_episodes + c.posterior_episodes)
            self.enc_buffers.pop(key, None)
            self.enc_buffers[key] = self._rows(batch, s, enc)[-c.replay_size:]  # cleared per collection
        while len(self.rl_buffers) > c.max_tasks:
            oldest = next(iter(self.rl_buffers))
            del self.rl_buffers[oldest], self.enc_buffers[oldest]
        self.steps_seen += batch.env_steps

    def _sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        keys = [k for k in self.rl_buffers if len(self.enc_buffers[k])]
        picks = self.np_gen.integers(0, len(keys), c.rl_meta_batch)
        rl = np.stack([self.rl_buffers[keys[i]].sample(self.np_gen, c.batch_size) for i in picks])
        enc = np.stack([
            self.enc_buffers[keys[i]][self.np_gen.integers(0, len(self.enc_buffers[keys[i]]), c.embedding_batch_size)]
            for i in picks
        ])
        return torch.from_numpy(rl).to(self.device), torch.from_numpy(self._context(enc)).to(self.device)

    def _gradient_step(self, rl: torch.Tensor, context: torch.Tensor) -> dict[str, torch.Tensor]:
        c, n = self.config, self.nets
        o, a = self.env.obs_dim, self.env.act_dim
        t, b, _ = rl.shape
        rl = rl.reshape(t * b, -1)
        obs, actions, rewards = rl[:, :o], rl[:, o : o + a], rl[:, o + a]
        next_obs, done = rl[:, o + a + 1 : 2 * o + a + 1], rl[:, -1]

        z_mean, z_var = n.encoder(context)  # (t, L)
        z_task = z_mean + z_var.sqrt() * torch.randn(z_mean.shape, generator=self.update_gen).to(self.device)
        z = z_task.repeat_interleave(b, 0)
        zd = z.detach()

        mean, log_std = n.policy(torch.cat([obs, zd], 1))
        noise = torch.randn(mean.shape, generator=self.update_gen).to(self.device)
        new_actions, log_pi = tanh_gaussian_sample(mean, log_std, noise)

        # Q and encoder: Bellman error (through z) + KL to the prior
        q1 = n.qf1(torch.cat([obs, actions, z], 1)).squeeze(-1)
        q2 = n.qf2(torch.cat([obs, actions, z], 1)).squeeze(-1)
        v_pred = n.vf(torch.cat([obs, zd], 1)).squeeze(-1)
        with torch.no_grad():
            target_v = n.target_vf(torch.cat([next_obs, z], 1)).squeeze(-1)
            q_target = rewards * c.reward_scale + (1.0 - done) * c.discount * target_v
        kl = 0.5 * (z_var + z_mean.pow(2) - 1.0 - z_var.log()).sum()
        qf_loss = ((q1 - q_target) ** 2).mean() + ((q2 - q_target) ** 2).mean()
        self.opts["critic"].zero_grad()
        (c.kl_lambda * kl + qf_loss).backward()
        self.opts["critic"].step()

        # V toward min Q (the updated Q, as oyster) of fresh actions minus log π
        n.qf1.requires_grad_(False), n.qf2.requires_grad_(False)
        sa = torch.cat([obs, new_actions, zd], 1)
        min_q = torch.minimum(n.qf1(sa), n.qf2(sa)).squeeze(-1)
        n.qf1.requires_grad_(True), n.qf2.requires_grad_(True)
        vf_loss = ((v_pred - (min_q - log_pi).detach()) ** 2).mean()
        policy_loss = (log_pi - min_q).mean()
        policy_loss = policy_loss + c.policy_mean_reg * mean.pow(2).mean() + c.policy_std_reg * log_std.pow(2).mean()
        # V and policy losses share no parameters (V's target is detached, Q is frozen, z is
        # detached), so one backward pass gives oyster's two separate updates exactly.
        self.opts["vf"].zero_grad()
        self.opts["policy"].zero_grad()
        (vf_loss + policy_loss).backward()
        self.opts["vf"].step()
        self.opts["policy"].step()
        with torch.no_grad():
            target = list(n.target_vf.parameters())
            torch._foreach_mul_(target, 1.0 - c.soft_target_tau)
            torch._foreach_add_(target, list(n.vf.parameters()), alpha=c.soft_target_tau)
        return {"qf_loss": qf_loss.detach(), "vf_loss": vf_loss.detach(), "policy_loss": policy_loss.detach(),
                "kl": kl.detach() / t, "z_var": z_var.detach().mean(), "log_pi": log_pi.detach().mean()}

    def update(self, batch) -> dict[str, float]:
        self._store(batch)
        sums: dict[str, torch.Tensor] = {}
        for _ in range(self.config.grad_steps):
            for key, value in self._gradient_step(*self._sample()).items():
                sums[key] = sums.get(key, 0.0) + value
        steps = max(self.config.grad_steps, 1)
        names = ("qf_loss", "vf_loss", "policy_loss", "kl", "z_var", "log_pi")
        return {k: float(sums[k]) / steps if k in sums else 0.0 for k in names}

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "nets": self.nets.state_dict(),
            "opts": {k: o.state_dict() for k, o in self.opts.items()},
            "rl_buffers": {k: b.state() for k, b in self.rl_buffers.items()},
            "enc_buffers": {k: v.copy() for k, v in self.enc_buffers.items()},
            "steps_seen": self.steps_seen,
            "train_gen": self.train_gen.get_state(),
            "update_gen": self.update_gen.get_state(),
            "np_gen": self.np_gen.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        for k, o in self.opts.items():
            o.load_state_dict(state["opts"][k])
        cap = self.config.replay_size
        self.rl_buffers = {k: TaskBuffer.from_state(v, cap) for k, v in state["rl_buffers"].items()}
        self.enc_buffers = {k: v.copy() for k, v in state["enc_buffers"].items()}
        self.steps_seen = state["steps_seen"]
        self.train_gen.set_state(state["train_gen"])
        self.update_gen.set_state(state["update_gen"])
        self.np_gen.bit_generator.state = state["np_gen"]

    def model_state(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict()}

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
