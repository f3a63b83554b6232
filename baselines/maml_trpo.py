"""MAML-TRPO (Finn et al. 2017), as garage's MAMLTRPO runs it (research/baselines.md §1.3).

Policy: a Gaussian MLP (tanh hidden layers, optionally a tanh on the mean as in the Meta-World
paper's runs) with a state-independent learned log-std (optionally clipped, as garage's
Meta-World launchers do). The environment gets clip(action_scale · a, low, high), as garage's
`normalize(env, expected_action_scale=1/action_scale)` wrapper gives it; log-probabilities,
adaptation and the outer step use the policy's own unclipped samples a.

Trials on the shared harness: the first `exploration_episodes` episodes of a trial are run by
the pre-update policy θ; after every episode (`end_episode`) the slot's policy is re-adapted
from θ on all the sampled episodes of its trial so far, and runs the next episode. The same
holds at evaluation. Pre-update episodes always sample actions (`stochastic_exploration`):
with the mean as the action the score-function gradient of the mean is zero, so there would be
nothing to adapt on (garage's exploration policy samples, too).

Inner step (garage's DifferentiableSGD on a VPG loss): per task, a linear-feature baseline is
fitted on the adaptation episodes themselves, advantages are GAE(γ, λ = 1) normalised per
task, and φ = θ − α ∇θ L_in(θ) with L_in = −mean(ρ·A), ρ = π_θ(a|s) / π_behaviour(a|s)
(ρ ≡ 1 in value on pre-update episodes, so the gradient is the plain policy gradient; it
corrects episodes run by an adapted policy). Second order by default: the step is part of
the graph, so the outer gradient flows through ∇θ L_in (`first_order: true` stops it).

Outer step (TRPO, garage's ConjugateGradientOptimizer): surrogate −mean(π_φ(θ)/π_φ(θold)·A)
on the post-update episodes (baseline refitted per task on them), averaged over tasks;
constraint the mean KL(π_φ(θold) ‖ π_φ(θ)) on the same states. Conjugate gradient on
Fisher-vector products (Hessian of that KL through the adaptation), step scaled to the KL
bound, then a backtracking line search that accepts the first step that improves the
surrogate and keeps the KL within `max_kl`, or keeps θ if none does.

Every task of the batch is adapted at once: θ is broadcast to one copy per (task, episode)
and every layer is a batched matmul, so the per-task gradients come from one backward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from metarl.agent import Agent, AgentConfig, EnvSpec, TrialSpec
from metarl.config import (
    Discount,
    Fraction,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Range,
)
from metarl.errors import UsageError
from metarl.learning import LinearFeatureBaseline, gaussian_entropy, gaussian_kl, gaussian_log_prob, mlp
from metarl.ppo import gae_advantages
from metarl.seeding import agent_generator


@dataclass
class MAMLTRPOConfig(AgentConfig):
    hidden_sizes: list[PositiveInt] = field(default_factory=lambda: [64, 64])  # policy MLP (garage: 64-64; Meta-World: 128-128)
    output_tanh: bool = False  # tanh on the action mean (Meta-World paper runs)
    init_std: PositiveFloat = 1.0  # initial action std (garage's default)
    output_gain: NonNegativeFloat = 1.0  # scale of the mean's last-layer initial weights (garage: Xavier, 1)
    action_scale: PositiveFloat = 1.0  # env action = clip(this x policy action) (garage's normalize(expected_action_scale=10): 0.1)
    min_std: NonNegativeFloat = 1e-6  # std is clipped to [min_std, max_std] (Meta-World launchers: 0.5..1.5)
    max_std: PositiveFloat = 1e6  # upper clip of the std
    exploration_episodes: PositiveInt = 1  # episodes of a trial run by the pre-update policy; later ones are adapted
    stochastic_exploration: bool = True  # pre-update episodes sample actions even when the mean is asked for
    inner_lr: PositiveFloat = 0.1  # inner SGD step size α (garage MAMLTRPO cheetah: 0.1; Meta-World paper: 1e-4)
    inner_steps: PositiveInt = 1  # inner gradient steps per adaptation (garage num_grad_updates)
    first_order: bool = False  # drop the second-order term (no gradient through the inner step)
    discount: Discount = 0.99  # γ
    gae_lambda: Fraction = 1.0  # GAE λ (garage MAML: 1)
    normalize_advantages: bool = True  # centre and scale advantages per task (garage center_adv)
    entropy_coeff: NonNegativeFloat = 0.0  # maximum-entropy reward bonus, gradient stopped (Meta-World: 5e-5)
    max_kl: PositiveFloat = 0.01  # TRPO trust region: max mean KL per outer step
    cg_iters: PositiveInt = 10  # conjugate-gradient iterations
    cg_damping: NonNegativeFloat = 1e-5  # added to the Fisher-vector product (garage reg_coeff)
    backtrack_ratio: Annotated[float, Range(gt=0, lt=1)] = 0.8  # line-search shrink factor
    max_backtracks: PositiveInt = 15  # line-search steps

    def check(self) -> None:
        super().check()
        if self.min_std > self.max_std:
            raise UsageError(f"settings 'min_std' and 'max_std': min_std ({self.min_std:g}) must not exceed "
                             f"max_std ({self.max_std:g})")
        if not self.hidden_sizes:
            raise UsageError("setting 'hidden_sizes': the policy needs at least one hidden layer, got []")


# ----------------------------------------------------------------------------- the policy


class GaussianMLPPolicy(nn.Module):
    """θ: an MLP mean (Xavier-uniform weights, zero biases, as garage) and a log-std vector."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], init_std: float, output_gain: float = 1.0):
        super().__init__()
        self.mean = mlp([obs_dim, *hidden, act_dim])
        for layer in self.mean:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight, gain=output_gain if layer is self.mean[-1] else 1.0)
                nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))


def batched_forward(params: list[Tensor], obs: Tensor, output_tanh: bool) -> tuple[Tensor, Tensor]:
    """Per-copy policies: params [W1, b1, ..., Wk, bk, log_std], each with a leading copy
    dimension B; obs (B, T, obs_dim) -> means (B, T, act_dim), log-std (B, act_dim)."""
    h = obs
    layers = (len(params) - 1) // 2
    for i in range(layers):
        w, b = params[2 * i], params[2 * i + 1]
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if i < layers - 1 or output_tanh:
            h = torch.tanh(h)
    return h, params[-1]


def conjugate_gradient(fvp: Callable[[Tensor], Tensor], b: Tensor, iters: int, tol: float = 1e-10) -> Tensor:
    """Solve F x = b for a symmetric positive-definite F given only products F·v."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        fp = fvp(p)
        alpha = rr / (p @ fp)
        x = x + alpha * p
        r = r - alpha * fp
        rr_new = r @ r
        if rr_new < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


@dataclass
class _Rows:
    """Adaptation problems, one row each (a task, or a (task, episode) pair), padded in time.

    Inner data: `obs`, `actions`, `logp_b` (behaviour log-probs), `adv_in` (fixed advantages),
    `mask_in`. Outer data (update only): `adv_out`, `mask_out` and `task_steps` (post-update
    steps per task); rows are ordered (episode, task), so row r belongs to task r % n_tasks."""

    obs: Tensor
    actions: Tensor
    logp_b: Tensor
    adv_in: Tensor
    mask_in: Tensor
    adv_out: Tensor | None = None
    mask_out: Tensor | None = None
    task_steps: Tensor | None = None


# ----------------------------------------------------------------------------- the agent


class MAMLTRPOAgent(Agent):
    Config = MAMLTRPOConfig

    def __init__(self, config: MAMLTRPOConfig, env: EnvSpec, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        if not 1 <= config.exploration_episodes < env.train_episodes:
            raise UsageError(
                f"exploration_episodes must be between 1 and {env.train_episodes - 1} for {env.benchmark} "
                f"(a training trial has {env.train_episodes} episodes; the later ones train the outer step)"
            )
        if config.inner_steps < 1 or not config.hidden_sizes:
            raise UsageError("inner_steps must be at least 1 and hidden_sizes non-empty")
        self.policy = GaussianMLPPolicy(env.obs_dim, env.act_dim, config.hidden_sizes, config.init_std,
                                        config.output_gain).to(device)
        self.train_gen = agent_generator(seed, "act")
        self.gen = self.train_gen
        # per-trial state (set in start_trial)
        self._spec: TrialSpec | None = None
        self._slot_params: list[Tensor] = []
        self._episode = np.zeros(0, np.int64)
        self._pos = np.zeros(0, np.int64)
        self._sampled = np.zeros((0, 0), bool)
        self._behaviour_logp = np.zeros((0, 0), np.float32)
        self._policy_actions = np.zeros((0, 0, env.act_dim), np.float32)

    # -- the policy as a function of its parameters -------------------------------------------
    def _theta(self) -> list[Tensor]:
        # [W1, b1, ..., Wk, bk, log_std], the order batched_forward expects
        return [*self.policy.mean.parameters(), self.policy.log_std]

    def _forward(self, params: list[Tensor], obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = batched_forward(params, obs, self.config.output_tanh)
        c = self.config
        return mean, log_std.clamp(math.log(max(c.min_std, 1e-6)), math.log(c.max_std))

    def _logp(self, params: list[Tensor], rows: _Rows) -> tuple[Tensor, Tensor, Tensor]:
        mean, log_std = self._forward(params, rows.obs)
        return gaussian_log_prob(mean, log_std[:, None, :], rows.actions), mean, log_std

    def _adapt(self, theta: list[Tensor], rows: _Rows, create_graph: bool) -> list[Tensor]:
        """φ = θ − α ∇θ L_in, one copy of θ per row. With `create_graph` the step stays in the
        graph (second order); otherwise the gradient is a constant and dφ/dθ = I."""
        c = self.config
        b = rows.obs.shape[0]
        with torch.enable_grad():
            if not any(p.requires_grad for p in theta):  # plain tensors: make them differentiable
                theta = [p.detach().requires_grad_() for p in theta]
            params = [p.unsqueeze(0).expand(b, *p.shape) for p in theta]
            count = rows.mask_in.sum(1).clamp_min(1.0)
            for _ in range(c.inner_steps):
                logp, _, _ = self._logp(params, rows)
                ratio = torch.exp(logp - rows.logp_b)
                loss = -((ratio * rows.adv_in * rows.mask_in).sum(1) / count).sum()
                grads = torch.autograd.grad(loss, params, create_graph=create_graph)
                if not create_graph:
                    grads = [g.detach() for g in grads]
                params = [p - c.inner_lr * g for p, g in zip(params, grads)]
        return params

    # -- advantages -----------------------------------------------------------------------------
    def _entropy(self) -> float:
        c = self.config
        log_std = self.policy.log_std.detach().clamp(math.log(max(c.min_std, 1e-6)), math.log(c.max_std))
        return float(gaussian_entropy(log_std))

    def _advantages(self, obs: np.ndarray, steps: np.ndarray, rewards: np.ndarray, ends: np.ndarray,
                    mask: np.ndarray, group: np.ndarray) -> np.ndarray:
        """GAE(γ, λ) within each episode, with garage's linear-feature baseline fitted from
        scratch on each group's own masked steps (garage refits it on every task's batch), then
        normalised per group. Arrays (rows, T); `group` (rows,) names each row's group."""
        c = self.config
        r = torch.from_numpy(rewards).double() + c.entropy_coeff * self._entropy()  # max-entropy bonus
        reset = torch.from_numpy(ends)
        valid = torch.from_numpy(mask).double()
        feats = LinearFeatureBaseline.features(obs.astype(np.float64), steps)
        returns = gae_advantages(r, torch.zeros_like(r), valid, c.discount, 1.0, reset).numpy()
        values = np.zeros(rewards.shape)
        groups = [mask & (group == g)[:, None] for g in np.unique(group)]
        for g in groups:
            base = LinearFeatureBaseline()
            base.fit(feats[g], returns[g])
            values[g] = base.predict(feats[g])
        adv = gae_advantages(r, torch.from_numpy(values), valid, c.discount, c.gae_lambda, reset).numpy()
        if c.normalize_advantages:
            for g in groups:
                a = adv[g]
                if a.size:  # garage divides by the variance (a defect); ProMP and the usual rule: the std
                    adv[g] = (a - a.mean()) / (a.std() + 1e-8)
        return adv * mask

    def _rows(self, obs, actions, logp_b, rewards, steps, ends, mask, group) -> _Rows:
        """`actions` are the policy's own (unscaled, unclipped) samples, which `logp_b` scores."""
        adv = self._advantages(obs, steps, rewards, ends, mask, group)
        dev = self.device
        return _Rows(
            obs=torch.from_numpy(np.ascontiguousarray(obs)).to(dev),
            actions=torch.from_numpy(np.ascontiguousarray(actions)).to(dev),
            logp_b=torch.from_numpy(np.ascontiguousarray(logp_b)).to(dev),
            adv_in=torch.from_numpy(adv).float().to(dev),
            mask_in=torch.from_numpy(mask).float().to(dev),
        )

    # -- acting ---------------------------------------------------------------------------------
    def start_trial(self, n: int, spec: TrialSpec) -> None:
        self._spec = spec
        self.gen = self.trial_generator(spec)
        with torch.no_grad():
            self._slot_params = [p.detach().unsqueeze(0).repeat(n, *([1] * p.dim())) for p in self._theta()]
        steps = spec.episodes * self.env.episode_length
        self._episode = np.zeros(n, np.int64)
        self._pos = np.zeros(n, np.int64)
        self._sampled = np.zeros((n, spec.episodes), bool)
        self._behaviour_logp = np.zeros((n, steps), np.float32)
        self._policy_actions = np.zeros((n, steps, self.env.act_dim), np.float32)

    @torch.no_grad()
    def act(self, tokens: np.ndarray, deterministic: np.ndarray):
        n, c = len(tokens), self.config
        obs = torch.from_numpy(np.ascontiguousarray(tokens[:, : self.env.obs_dim])).to(self.device)
        mean, log_std = self._forward(self._slot_params, obs[:, None, :])
        mean = mean[:, 0]
        noise = torch.randn((n, self.env.act_dim), generator=self.gen).to(self.device)
        pre_update = self._episode < c.exploration_episodes
        mean_only = np.asarray(deterministic, bool) & ~(pre_update & c.stochastic_exploration)
        noise[torch.from_numpy(mean_only).to(self.device)] = 0.0
        actions = mean + log_std.exp() * noise
        logp = gaussian_log_prob(mean, log_std, actions).cpu().numpy()
        policy_actions = actions.cpu().numpy()
        # garage's normalize wrapper: scale, then clip to the benchmark's bounds (the env charges
        # its control cost on the action it is given)
        env_actions = np.clip(policy_actions * np.float32(c.action_scale), self.env.action_low, self.env.action_high)
        # remember what this trial sampled, for the adaptation in end_episode
        active = np.flatnonzero(self._episode < self._spec.episodes)
        self._behaviour_logp[active, self._pos[active]] = logp[active]
        self._policy_actions[active, self._pos[active]] = policy_actions[active]
        self._sampled[active, self._episode[active]] = ~mean_only[active]
        self._pos[active] += 1
        return env_actions, {"logp": logp, "policy_action": policy_actions}

    def end_episode(self, slots: np.ndarray, trials) -> None:
        """Re-adapt, from θ, the slots whose next episode is post-update, on every sampled
        episode of their trial so far (nothing to redo when the last episode took the mean)."""
        c = self.config
        finished = self._episode[slots].copy()
        self._episode[slots] += 1
        nxt = self._episode[slots]
        redo = (nxt >= c.exploration_episodes) & (nxt < self._spec.episodes)
        redo &= self._sampled[slots, finished] | (nxt == c.exploration_episodes)
        slots = slots[redo]
        if not len(slots):
            return
        seen = trials.episode[slots]
        mask = (seen >= 0) & (seen < self._episode[slots, None])
        mask &= np.take_along_axis(self._sampled[slots], np.maximum(seen, 0), axis=1)
        rows = self._rows(
            trials.obs[slots], self._policy_actions[slots], self._behaviour_logp[slots], trials.rewards[slots],
            trials.step[slots], trials.terminated[slots] | trials.truncated[slots], mask, np.arange(len(slots)),
        )
        adapted = self._adapt(self._theta(), rows, create_graph=False)
        with torch.no_grad():
            index = torch.from_numpy(slots).to(self.device)
            for stacked, new in zip(self._slot_params, adapted):
                stacked[index] = new.detach()

    # -- learning -------------------------------------------------------------------------------
    def _outer_rows(self, batch) -> _Rows:
        """One row per (post-update episode e, task), e-major: inner data = the task's episodes
        before e (as the rollout adapted), outer data = episode e."""
        c = self.config
        n, k = batch.n, c.exploration_episodes
        posts = list(range(k, batch.episodes))
        ep, ends = batch.episode, batch.terminated | batch.truncated
        obs, actions, rewards = (np.ascontiguousarray(a) for a in (batch.obs, batch.extras["policy_action"], batch.rewards))
        logp_b = np.ascontiguousarray(batch.extras["logp"])

        def rep(a):
            return np.concatenate([a] * len(posts))

        mask_in = np.concatenate([(ep >= 0) & (ep < e) for e in posts])
        rows = self._rows(rep(obs), rep(actions), rep(logp_b), rep(rewards), rep(batch.step), rep(ends),
                          mask_in, np.arange(len(posts) * n))
        # outer advantages: baseline refitted per task on all its post-update episodes
        post = ep >= k
        adv_post = self._advantages(obs, batch.step, rewards, ends, post, np.arange(n))
        rows.adv_out = torch.from_numpy(rep(adv_post)).float().to(self.device)
        rows.mask_out = torch.from_numpy(np.concatenate([ep == e for e in posts])).float().to(self.device)
        rows.task_steps = torch.from_numpy(post.sum(1)).float().to(self.device)  # post-update steps per task
        return rows

    def _per_task_mean(self, values: Tensor, rows: _Rows) -> Tensor:
        """Mean over each task's post-update steps, then over tasks (garage averages per task)."""
        n = rows.task_steps.shape[0]
        per_row = (values * rows.mask_out).sum(1)
        return (per_row.view(-1, n).sum(0) / rows.task_steps.clamp_min(1.0)).mean()

    def _surrogate(self, phi: list[Tensor], rows: _Rows) -> tuple[Tensor, Tensor, Tensor]:
        logp, mean, log_std = self._logp(phi, rows)
        ratio = torch.exp(logp - rows.logp_b)
        return -self._per_task_mean(ratio * rows.adv_out, rows), mean, log_std

    def _kl(self, old: tuple[Tensor, Tensor], mean: Tensor, log_std: Tensor, rows: _Rows) -> Tensor:
        kl = gaussian_kl(old[0], old[1][:, None, :], mean, log_std[:, None, :])
        return self._per_task_mean(kl, rows)

    def trpo_step(self, rows: _Rows) -> dict[str, float]:
        """One TRPO step of θ on the meta-objective (see the module docstring)."""
        c = self.config
        theta = self._theta()
        second = not c.first_order
        with torch.no_grad():
            phi_old = [p.detach() for p in self._adapt(theta, rows, create_graph=False)]
            _, old_mean, old_log_std = self._logp(phi_old, rows)
        old = (old_mean, old_log_std)

        loss, _, _ = self._surrogate(self._adapt(theta, rows, create_graph=second), rows)
        grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, theta)])
        _, mean, log_std = self._logp(self._adapt(theta, rows, create_graph=second), rows)
        kl = self._kl(old, mean, log_std, rows)
        grad_kl = torch.cat([g.reshape(-1) for g in torch.autograd.grad(kl, theta, create_graph=True)])

        def fvp(v: Tensor) -> Tensor:
            hv = torch.autograd.grad(grad_kl @ v, theta, retain_graph=True)
            return torch.cat([h.reshape(-1) for h in hv]) + c.cg_damping * v

        direction = conjugate_gradient(fvp, grad.detach(), c.cg_iters)
        step_size = math.sqrt(2.0 * c.max_kl / (float(direction @ fvp(direction)) + 1e-8))
        full_step = step_size * direction.detach()

        loss_before = float(loss.detach())
        start = nn.utils.parameters_to_vector(theta).detach().clone()
        loss_after, kl_after, kl_full, accepted = loss_before, 0.0, 0.0, False
        for shrinks in range(c.max_backtracks):
            with torch.no_grad():
                nn.utils.vector_to_parameters(start - c.backtrack_ratio**shrinks * full_step, theta)
            phi = self._adapt(theta, rows, create_graph=False)
            with torch.no_grad():
                new_loss, mean, log_std = self._surrogate(phi, rows)
                new_kl = self._kl(old, mean, log_std, rows)
            if shrinks == 0:
                kl_full = float(new_kl)  # the KL the unshrunk step would have taken
            if float(new_loss) < loss_before and float(new_kl) <= c.max_kl:
                loss_after, kl_after, accepted = float(new_loss), float(new_kl), True
                break
        if not accepted:  # no step improved within the trust region: keep θ
            shrinks = c.max_backtracks
            with torch.no_grad():
                nn.utils.vector_to_parameters(start, theta)
        return {"loss_before": loss_before, "loss_after": loss_after, "kl": kl_after, "kl_full_step": kl_full,
                "backtracks": float(shrinks), "step_size": step_size}

    def update(self, batch) -> dict[str, float]:
        rows = self._outer_rows(batch)
        metrics = self.trpo_step(rows)
        metrics["entropy"] = self._entropy()
        return metrics

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # The linear baseline is refitted from scratch on every batch: nothing to keep.
        return {"policy": self.policy.state_dict(), "train_gen": self.train_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.train_gen.set_state(state["train_gen"])

    def model_state(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict()}

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
