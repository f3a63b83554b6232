"""VariBAD (Zintgraf et al., ICLR 2020) as lmzintgraf/varibad runs it (research/baselines.md §2).

A VAE infers a Gaussian belief over a latent task from the trial so far; a PPO policy acts on
[state, belief]. One trial of the harness is one BAMDP rollout of the reference (its episodes
back to back, the belief carried across them).

States carry the reference's done flag (`VariBadWrapper`, on when a trial has more than one
episode, as every trial here): a state is [obs, flag], the flag 1.0 on the state that ended an
episode (its final next state, by termination or time limit) and 0.0 otherwise. The reference
resets the MDP inside the wrapper and hands the reset state only to `info['start_state']`, which
training never reads: the first step of every later episode acts on the previous episode's final
state (flag 1.0) and its action moves the freshly reset MDP. With `hide_reset_state` (default)
ours does the same: that step's state, for the policy and as s_t in the VAE buffer, is the last
episode's final state with flag 1.0, not the harness's reset observation. Everything the agent
sees (encoder, decoders, buffer, policy and its running state statistics) uses these states.

VAE (trained on its own buffer of recent trials, with its own Adam):
- encoder: state/action/reward embedded by Linear+ReLU (32/16/16), a one-layer GRU (orthogonal
  weights, zero biases), linear heads for the mean and log-variance of the latent. The hidden
  state starts at zero (the prior q_0 = heads(0)) at the start of a trial only, and takes one
  transition (a_t, r_t, s_{t+1}) per step, including the last step of each episode (to its final
  state, flag 1.0; the reset state of the next episode is never encoded, as the reference);
- decoders: rewards r(s_{t+1} [, s_t, a_t]; z) by an MLP (64-32, ReLU) with MSE; optionally
  the next state s_{t+1}(s_t, a_t; z);
- ELBO over past and future: for every belief prefix q_t (t = 0..H, the prior included), one
  reparameterised sample decodes transitions of the *whole* trial; reconstruction errors are
  summed over decoded steps and ELBO terms, averaged over trials; the KL of each q_t is taken to
  q_{t-1} (to N(0, I) for q_0), summed over the same ELBO terms and, as the reference's code does,
  over the batch (`kl_reference_sum`). Optional subsampling of ELBO terms and decoded steps, and
  truncated BPTT through the encoder, as the reference;
- one Adam step after clipping the gradient norm of the encoder and of each decoder separately
  (`encoder_max_grad_norm`, `decoder_max_grad_norm`), as the reference's `compute_vae_loss`.

Policy: the state and the belief (mean and log-variance, as the reference's
`get_latent_for_policy`), each normalised by running statistics and embedded (Linear+tanh, 64),
into separate actor and critic MLPs (tanh); a Gaussian with a state-independent learned std.
The belief is detached: the RL loss does not reach the encoder (`rlloss_through_encoder=False`).
PPO as the reference's (ikostrikov-style): rewards normalised by the running std of the
discounted return, GAE over the whole trial with proper time limits, normalised advantages,
clipped surrogate, clipped Huber value loss, entropy bonus, gradient-norm clip, Adam; then the
VAE update(s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metarl.agent import Agent, AgentConfig, EnvSpec, TrialSpec
from metarl.config import Discount, Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from metarl.errors import UsageError
from metarl.learning import LOG_STD_MIN, RunningMeanStd, gaussian_entropy, gaussian_kl_logvar, gaussian_log_prob, mlp
from metarl.ppo import gae_advantages, minibatches, ppo_clip_loss
from metarl.seeding import agent_generator


@dataclass
class VariBADConfig(AgentConfig):
    meta_batch_size: PositiveInt = 16  # trials per iteration (cheetah_vel: 400 steps x 16 processes)
    # VAE: encoder
    latent_dim: PositiveInt = 5  # latent task dimension (HumanoidDir: 10)
    encoder_hidden: PositiveInt = 128  # GRU units
    state_embed_dim: PositiveInt = 32  # encoder/decoder state embedding
    action_embed_dim: PositiveInt = 16  # encoder/decoder action embedding
    reward_embed_dim: PositiveInt = 16  # encoder reward embedding
    # VAE: decoders and loss
    reward_decoder_layers: list[PositiveInt] = field(default_factory=lambda: [64, 32])  # reward decoder MLP
    decoder_prev_state: bool = True  # reward decoder also sees s_t (input_prev_state)
    decoder_action: bool = True  # reward decoder also sees a_t (input_action)
    decode_state: bool = False  # add the state-transition decoder (off for MuJoCo)
    state_decoder_layers: list[PositiveInt] = field(default_factory=lambda: [64, 32])  # state decoder MLP
    reward_loss_coeff: NonNegativeFloat = 1.0  # weight of the reward reconstruction
    state_loss_coeff: NonNegativeFloat = 1.0  # weight of the state reconstruction
    kl_weight: NonNegativeFloat = 0.1  # weight of the KL term
    kl_to_gauss_prior: bool = False  # KL of every q_t to N(0, I) instead of to q_{t-1}
    kl_reference_sum: bool = True  # KL summed over the batch as the reference's code does (see elbo_terms)
    # VAE: training
    vae_lr: PositiveFloat = 1e-3  # Adam learning rate of encoder + decoders
    vae_buffer_size: PositiveInt = 10000  # trials kept for VAE training (oldest replaced)
    vae_batch_trials: PositiveInt = 10  # trials per VAE update
    vae_updates: NonNegativeInt = 1  # VAE updates per iteration (after the policy's)
    vae_subsample_elbos: NonNegativeInt = 50  # ELBO terms sampled per trial (0: all)
    vae_subsample_decodes: NonNegativeInt = 50  # decoded steps sampled per ELBO term (0: the whole trial)
    tbptt_steps: NonNegativeInt = 50  # truncated BPTT through the encoder every N steps (0: none)
    encoder_max_grad_norm: NonNegativeFloat = 1.0  # gradient-norm clip of the encoder (0: off)
    decoder_max_grad_norm: NonNegativeFloat = 1.0  # gradient-norm clip of each decoder, separately (0: off)
    precollect_steps: NonNegativeInt = 5000  # no update until this many training steps were collected
    # policy
    policy_layers: list[PositiveInt] = field(default_factory=lambda: [128, 128])  # actor and critic MLPs (tanh)
    policy_state_embed_dim: NonNegativeInt = 64  # state embedding before the MLPs (0: raw state)
    policy_latent_embed_dim: NonNegativeInt = 64  # belief embedding before the MLPs (0: raw belief)
    policy_init: Literal["normc", "orthogonal"] = "normc"  # hidden-layer initialisation
    norm_state: bool = True  # normalise the policy's state input by running statistics
    norm_latent: bool = True  # normalise the policy's belief input by running statistics
    norm_rewards: bool = True  # PPO on rewards divided by the running std of the discounted return
    init_std: PositiveFloat = 1.0  # initial action std (learned, state-independent)
    # PPO
    lr: PositiveFloat = 7e-4  # Adam learning rate of the policy
    adam_eps: PositiveFloat = 1e-8  # Adam epsilon of the policy
    ppo_epochs: PositiveInt = 2  # passes over the batch
    ppo_minibatches: PositiveInt = 4  # minibatches (of steps) per pass
    clip: PositiveFloat = 0.1  # PPO clip ε (also clips the value loss)
    value_coeff: NonNegativeFloat = 0.5  # weight of the value loss
    entropy_coeff: NonNegativeFloat = 0.01  # weight of the entropy bonus
    discount: Discount = 0.97  # γ over the whole trial
    gae_lambda: Fraction = 0.9  # GAE τ
    max_grad_norm: PositiveFloat = 0.5  # policy gradient-norm clip
    proper_time_limits: bool = True  # no advantage on the time-limited last step of a trial
    # states
    hide_reset_state: bool = True  # a later episode's first step acts on the last final state (flag 1), as the reference

    def check(self) -> None:
        super().check()
        needed = [("reward_decoder_layers", True), ("policy_layers", True), ("state_decoder_layers", self.decode_state)]
        for key, used in needed:
            if used and not getattr(self, key):
                raise UsageError(f"setting {key!r}: needs at least one layer, got []")


class Encoder(nn.Module):
    """GRU over transitions (a_t, r_t, s_{t+1}) -> Gaussian belief (mean, log-variance)."""

    def __init__(self, obs_dim: int, act_dim: int, c: VariBADConfig):
        super().__init__()
        self.state_fc = nn.Linear(obs_dim, c.state_embed_dim)
        self.action_fc = nn.Linear(act_dim, c.action_embed_dim)
        self.reward_fc = nn.Linear(1, c.reward_embed_dim)
        self.gru = nn.GRU(c.state_embed_dim + c.action_embed_dim + c.reward_embed_dim, c.encoder_hidden,
                          batch_first=True)
        for name, param in self.gru.named_parameters():
            nn.init.zeros_(param) if "bias" in name else nn.init.orthogonal_(param)
        self.mu = nn.Linear(c.encoder_hidden, c.latent_dim)
        self.logvar = nn.Linear(c.encoder_hidden, c.latent_dim)

    def embed(self, actions: torch.Tensor, next_obs: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(self.action_fc(actions)), F.relu(self.state_fc(next_obs)),
                          F.relu(self.reward_fc(rewards[..., None]))], -1)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h), self.logvar(h)

    def step(self, actions, next_obs, rewards, h: torch.Tensor) -> torch.Tensor:
        """One transition per row: (n, ...) and hidden (1, n, H) -> new hidden (1, n, H)."""
        return self.gru(self.embed(actions, next_obs, rewards)[:, None], h)[1]

    def sequence(self, actions, next_obs, rewards, tbptt: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole trials (B, T, ...) -> beliefs q_0..q_T (B, T+1, latent), q_0 the prior."""
        x = self.embed(actions, next_obs, rewards)
        h = torch.zeros(1, x.shape[0], self.gru.hidden_size, device=x.device)
        outs = [h[0][:, None]]
        chunk = tbptt if tbptt > 0 else x.shape[1]
        for start in range(0, x.shape[1], chunk):
            out, h = self.gru(x[:, start : start + chunk], h)
            outs.append(out)
            h = h.detach()  # truncated BPTT
        return self.heads(torch.cat(outs, 1))


class RewardDecoder(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, c: VariBADConfig):
        super().__init__()
        self.prev_state, self.action = c.decoder_prev_state, c.decoder_action
        self.state_fc = nn.Linear(obs_dim, c.state_embed_dim)  # shared by s_{t+1} and s_t
        self.action_fc = nn.Linear(act_dim, c.action_embed_dim) if c.decoder_action else None
        width = c.latent_dim + c.state_embed_dim * (1 + int(c.decoder_prev_state)) + c.action_embed_dim * int(c.decoder_action)
        self.net = nn.Sequential(mlp([width, *c.reward_decoder_layers], nn.ReLU), nn.ReLU(),
                                 nn.Linear(c.reward_decoder_layers[-1], 1))

    def forward(self, z, prev_obs, actions, next_obs) -> torch.Tensor:
        parts = [z, F.relu(self.state_fc(next_obs))]
        if self.action:
            parts.append(F.relu(self.action_fc(actions)))
        if self.prev_state:
            parts.append(F.relu(self.state_fc(prev_obs)))
        return self.net(torch.cat(parts, -1)).squeeze(-1)


class StateDecoder(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, c: VariBADConfig):
        super().__init__()
        self.state_fc = nn.Linear(obs_dim, c.state_embed_dim)
        self.action_fc = nn.Linear(act_dim, c.action_embed_dim)
        width = c.latent_dim + c.state_embed_dim + c.action_embed_dim
        self.net = nn.Sequential(mlp([width, *c.state_decoder_layers], nn.ReLU), nn.ReLU(),
                                 nn.Linear(c.state_decoder_layers[-1], obs_dim))

    def forward(self, z, prev_obs, actions) -> torch.Tensor:
        return self.net(torch.cat([z, F.relu(self.state_fc(prev_obs)), F.relu(self.action_fc(actions))], -1))


def _init_hidden(layer: nn.Linear, scheme: str, gain: float) -> None:
    if scheme == "normc":  # OpenAI baselines' normc: unit-norm rows (per output unit) x gain
        with torch.no_grad():
            layer.weight.normal_(0, 1)
            layer.weight *= gain / layer.weight.pow(2).sum(1, keepdim=True).sqrt()
    else:
        nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)


class Policy(nn.Module):
    """Actor and critic on [embedded state, embedded belief]."""

    def __init__(self, obs_dim: int, act_dim: int, c: VariBADConfig):
        super().__init__()
        belief_dim = 2 * c.latent_dim
        self.state_embed = nn.Sequential(nn.Linear(obs_dim, c.policy_state_embed_dim), nn.Tanh()) \
            if c.policy_state_embed_dim else nn.Identity()
        self.latent_embed = nn.Sequential(nn.Linear(belief_dim, c.policy_latent_embed_dim), nn.Tanh()) \
            if c.policy_latent_embed_dim else nn.Identity()
        width = (c.policy_state_embed_dim or obs_dim) + (c.policy_latent_embed_dim or belief_dim)
        self.actor = nn.Sequential(mlp([width, *c.policy_layers]), nn.Tanh())
        self.critic = nn.Sequential(mlp([width, *c.policy_layers]), nn.Tanh())
        gain = nn.init.calculate_gain("tanh")
        for net in (self.actor, self.critic):
            for layer in net.modules():
                if isinstance(layer, nn.Linear):
                    _init_hidden(layer, c.policy_init, gain)
        self.value_out = nn.Linear(c.policy_layers[-1], 1)
        self.mean_out = nn.Linear(c.policy_layers[-1], act_dim)
        _init_hidden(self.mean_out, "normc", 1.0)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(c.init_std)))

    def clamped_log_std(self) -> torch.Tensor:
        return self.log_std.clamp_min(LOG_STD_MIN)  # the reference's min std 1e-6

    def forward(self, obs: torch.Tensor, belief: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised inputs -> (action mean, value)."""
        x = torch.cat([self.state_embed(obs), self.latent_embed(belief)], -1)
        return self.mean_out(self.actor(x)), self.value_out(self.critic(x)).squeeze(-1)


class TrialBuffer:
    """The VAE's buffer of recent training trials (a ring of `capacity` trials), grown on demand.
    Per step: [s_t | a_t | r_t | s_{t+1}] (the agent's states, done flag included); per trial:
    its length."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self.width = 2 * obs_dim + act_dim + 1
        self.data = np.zeros((0, 0, self.width), np.float32)
        self.lengths = np.zeros(0, np.int64)
        self.size = self.pos = 0

    def add(self, obs, actions, rewards, next_obs, lengths) -> None:
        n, steps = len(lengths), obs.shape[1]
        if self.data.shape[0] < min(self.capacity, self.size + n):  # grow (no wrap happens before full)
            alloc = min(self.capacity, max(2 * self.data.shape[0], self.size + n))
            grown = np.zeros((alloc, steps, self.width), np.float32)
            if self.size:
                grown[: self.size] = self.data[: self.size]
            self.data, self.lengths = grown, np.concatenate([self.lengths, np.zeros(alloc - len(self.lengths), np.int64)])
        rows = np.concatenate([obs, actions, rewards[..., None], next_obs], -1)
        for i in range(n):
            self.data[self.pos], self.lengths[self.pos] = rows[i], lengths[i]
            self.pos = (self.pos + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def get(self, idx: np.ndarray) -> tuple[np.ndarray, ...]:
        d, o, a = self.data[idx], self.obs_dim, self.act_dim
        return d[..., :o], d[..., o : o + a], d[..., o + a], d[..., o + a + 1 :], self.lengths[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data[: self.size].copy(), "lengths": self.lengths[: self.size].copy(),
                "size": self.size, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data, self.lengths = state["data"].copy(), state["lengths"].copy()
        self.size, self.pos = state["size"], state["pos"]


METRICS = ("policy_loss", "value_loss", "entropy", "kl", "vae_loss", "vae_reward_loss", "vae_state_loss", "vae_kl")


class VariBADAgent(Agent):
    Config = VariBADConfig

    def __init__(self, config: VariBADConfig, env: EnvSpec, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        c, a = config, env.act_dim
        self.done_flag = env.train_episodes > 1  # the reference's add_done_info (episodes_per_task > 1)
        o = self.state_dim = env.obs_dim + int(self.done_flag)
        self.encoder = Encoder(o, a, c).to(device)
        self.reward_decoder = RewardDecoder(o, a, c).to(device)
        self.state_decoder = StateDecoder(o, a, c).to(device) if c.decode_state else None
        self.policy = Policy(o, a, c).to(device)
        self.vae_params = [*self.encoder.parameters(), *self.reward_decoder.parameters(),
                           *(self.state_decoder.parameters() if self.state_decoder else [])]
        self.vae_opt = torch.optim.Adam(self.vae_params, lr=c.vae_lr)
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=c.lr, eps=c.adam_eps)
        self.buffer = TrialBuffer(c.vae_buffer_size, o, a)
        self.state_rms, self.latent_rms, self.return_rms = RunningMeanStd(o), RunningMeanStd(2 * c.latent_dim), RunningMeanStd(1)
        self.frames = 0  # training steps collected (for precollect_steps)
        self.train_gen = agent_generator(seed, "act")
        self.update_gen = agent_generator(seed, "update")
        self.vae_gen = agent_generator(seed, "vae")
        self.gen = self.train_gen
        self._h = torch.zeros(1, 0, c.encoder_hidden, device=device)
        self._fresh = np.zeros(0, bool)  # slots at the first step of an episode: nothing to encode
        self._final = np.zeros((0, o), np.float32)  # each slot's last final state (flag 1)
        self._ended = np.zeros(0, bool)  # slots that finished an episode of this trial

    # -- acting ------------------------------------------------------------------------------
    def start_trial(self, n: int, spec: TrialSpec) -> None:
        self._h = torch.zeros(1, n, self.config.encoder_hidden, device=self.device)  # prior; reset per trial only
        self._fresh = np.ones(n, bool)
        self._final = np.zeros((n, self.state_dim), np.float32)
        self._ended = np.zeros(n, bool)
        self.gen = self.trial_generator(spec)

    def start_episode(self, slots: np.ndarray) -> None:
        self._fresh[slots] = True  # the token's previous action/reward are zeros, not a transition

    def _encode(self, slots: np.ndarray, actions, next_obs, rewards) -> None:
        t = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=self.device)  # noqa: E731
        idx = torch.as_tensor(slots, device=self.device)
        self._h[:, idx] = self.encoder.step(t(actions), t(next_obs), t(rewards), self._h[:, idx])

    def _with_flag(self, obs: np.ndarray, flag: float) -> np.ndarray:
        """Observations (..., obs_dim) -> the agent's states (..., state_dim), float32."""
        obs = np.ascontiguousarray(obs, np.float32)
        if not self.done_flag:
            return obs
        return np.concatenate([obs, np.full((*obs.shape[:-1], 1), flag, np.float32)], -1)

    def states(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """The states of a trial record (n, L, state_dim): s_t acted on and s_{t+1} reached.
        s_{t+1} has flag 1.0 where an episode ended (terminated or time limit), else 0.0; s_t has
        0.0, and with `hide_reset_state` the first step of every later episode gets the previous
        episode's final state (flag 1.0) instead of the reset observation, as the reference."""
        ended = (batch.terminated | batch.truncated) & batch.valid
        next_states = self._with_flag(batch.next_obs, 0.0)
        prev_states = self._with_flag(batch.obs, 0.0)
        if self.done_flag:
            next_states[..., -1] = ended
            if self.config.hide_reset_state:
                rows, cols = np.nonzero(batch.valid & (batch.step == 0) & (batch.episode > 0))
                prev_states[rows, cols] = next_states[rows, cols - 1]
        return prev_states, next_states

    @torch.inference_mode()
    def end_episode(self, slots: np.ndarray, trials) -> None:
        last = trials.lengths[slots] - 1  # the episode's final transition, to s_T (not the next reset state)
        final = self._with_flag(trials.next_obs[slots, last], 1.0)
        self._encode(slots, trials.actions[slots, last], final, trials.rewards[slots, last])
        self._final[slots], self._ended[slots] = final, True

    def belief(self) -> torch.Tensor:
        """The current belief of every slot: [mean, log-variance] (n, 2 x latent_dim)."""
        return torch.cat(self.encoder.heads(self._h[0]), -1)

    def _policy(self, obs: torch.Tensor, belief: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        obs = self.state_rms.normalise(obs) if c.norm_state else obs
        belief = self.latent_rms.normalise(belief) if c.norm_latent else belief
        return self.policy(obs, belief.detach())  # the RL loss never reaches the encoder

    @torch.inference_mode()
    def act(self, tokens: np.ndarray, deterministic: np.ndarray):
        o, a = self.env.obs_dim, self.env.act_dim
        states = self._with_flag(tokens[:, :o], 0.0)  # mid-episode states never ended an episode
        step = np.flatnonzero(~self._fresh)
        if len(step):  # the transition that led here: (a_{t-1}, r_{t-1}, s_t)
            self._encode(step, tokens[step, o : o + a], states[step], tokens[step, o + a])
        if self.done_flag and self.config.hide_reset_state:  # a later episode's first step: s_T, flag 1
            later = self._fresh & self._ended
            states[later] = self._final[later]
        self._fresh[:] = False
        obs = torch.from_numpy(states).to(self.device)
        belief = self.belief()
        mean, _ = self._policy(obs, belief)
        log_std = self.policy.clamped_log_std()
        noise = torch.randn(mean.shape, generator=self.gen).to(self.device)
        noise[torch.from_numpy(deterministic).to(self.device)] = 0.0
        actions = mean + log_std.exp() * noise
        return actions.cpu().numpy(), {"belief": belief.cpu().numpy(),
                                       "logp": gaussian_log_prob(mean, log_std, actions).cpu().numpy()}

    # -- the VAE -----------------------------------------------------------------------------
    def elbo_terms(self, prev_obs, actions, rewards, next_obs, lengths, generator: torch.Generator):
        """Reward / state reconstruction and KL terms of the negative ELBO of trials (B, T, ...),
        each summed over ELBO terms (and decoded steps) and averaged over trials."""
        c, dev = self.config, self.device
        B, T = rewards.shape
        mean, logvar = self.encoder.sequence(actions, next_obs, rewards, c.tbptt_steps)  # (B, T+1, latent)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator).to(dev)  # one sample per q_t
        lengths = torch.as_tensor(lengths, device=dev)
        rows = torch.arange(B, device=dev)[:, None]
        if c.vae_subsample_elbos:  # which q_t, uniformly from 0..len (with replacement)
            elbo = (torch.rand(B, c.vae_subsample_elbos, generator=generator).to(dev) * (lengths[:, None] + 1)).long()
            elbo_mask = torch.ones_like(elbo, dtype=torch.bool)
        else:
            elbo = torch.arange(T + 1, device=dev).expand(B, T + 1)
            elbo_mask = elbo <= lengths[:, None]
        n_elbo = elbo.shape[1]
        if c.vae_subsample_decodes:  # which steps each q_t decodes, from 0..len-1 (with replacement)
            dec = (torch.rand(B, n_elbo, c.vae_subsample_decodes, generator=generator).to(dev)
                   * lengths[:, None, None]).long()
            dec_mask = torch.ones_like(dec, dtype=torch.bool)
        else:
            dec = torch.arange(T, device=dev).expand(B, n_elbo, T)
            dec_mask = dec < lengths[:, None, None]
        mask = (elbo_mask[..., None] & dec_mask).float()
        zs = z[rows, elbo][:, :, None].expand(-1, -1, dec.shape[2], -1)
        r3 = rows[:, :, None]
        s_prev, act, s_next = prev_obs[r3, dec], actions[r3, dec], next_obs[r3, dec]
        rew_err = (self.reward_decoder(zs, s_prev, act, s_next) - rewards[r3, dec]) ** 2
        rew_loss = (rew_err * mask).sum((1, 2)).mean()
        state_loss = torch.zeros((), device=dev)
        if self.state_decoder is not None:
            state_err = (self.state_decoder(zs, s_prev, act) - s_next).pow(2).mean(-1)
            state_loss = (state_err * mask).sum((1, 2)).mean()
        if c.kl_to_gauss_prior:
            kl_all = gaussian_kl_logvar(mean, logvar, torch.zeros_like(mean), torch.zeros_like(logvar))
        else:  # q_t against q_{t-1}; q_0 against N(0, I)
            prev_mean = torch.cat([torch.zeros_like(mean[:, :1]), mean[:, :-1]], 1)
            prev_logvar = torch.cat([torch.zeros_like(logvar[:, :1]), logvar[:, :-1]], 1)
            kl_all = gaussian_kl_logvar(mean, logvar, prev_mean, prev_logvar)
        if c.kl_reference_sum:
            # The reference sums its (terms x trials) KL matrix over trials instead of averaging,
            # and with subsampled terms indexes it by every trial's sampled terms for *each*
            # trial (`kl_divergences[elbo_indices]`), so its KL carries B (all terms) or B² (sampled)
            # times the weight of the per-trial form below. Kept: the presets' kl_weight was tuned so.
            kl_all = kl_all * (torch.arange(T + 1, device=dev) <= lengths[:, None]).float()
            kl = kl_all[:, elbo.reshape(-1)].sum() if c.vae_subsample_elbos else kl_all.sum()
        else:  # each trial's KL over its own ELBO terms, averaged over trials (the code's comments)
            kl = (kl_all[rows, elbo] * elbo_mask.float()).sum(1).mean()
        return rew_loss, state_loss, kl

    def _vae_update(self) -> dict[str, float]:
        c, dev = self.config, self.device
        idx = torch.randperm(self.buffer.size, generator=self.vae_gen)[: c.vae_batch_trials].numpy()
        prev_obs, actions, rewards, next_obs, lengths = self.buffer.get(np.sort(idx))
        t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(dev)  # noqa: E731
        rew, state, kl = self.elbo_terms(t(prev_obs), t(actions), t(rewards), t(next_obs), lengths, self.vae_gen)
        loss = c.reward_loss_coeff * rew + c.state_loss_coeff * state + c.kl_weight * kl
        self.vae_opt.zero_grad()
        loss.backward()
        if c.encoder_max_grad_norm > 0:  # the reference clips the encoder and each decoder on its own
            nn.utils.clip_grad_norm_(self.encoder.parameters(), c.encoder_max_grad_norm)
        if c.decoder_max_grad_norm > 0:
            for decoder in (self.reward_decoder, self.state_decoder):
                if decoder is not None:
                    nn.utils.clip_grad_norm_(decoder.parameters(), c.decoder_max_grad_norm)
        self.vae_opt.step()
        return {"vae_loss": float(loss.detach()), "vae_reward_loss": float(rew.detach()),
                "vae_state_loss": float(state.detach()), "vae_kl": float(kl.detach())}

    # -- learning ----------------------------------------------------------------------------
    def _normalised_rewards(self, rewards: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """VecNormalize: each step, update the running std of the discounted return of every
        trial, then divide that step's rewards by it (clipped to ±10)."""
        out = np.zeros_like(rewards, np.float64)
        ret = np.zeros(len(rewards), np.float64)
        for t in range(rewards.shape[1]):
            v = valid[:, t]
            if not v.any():
                break
            ret[v] = ret[v] * self.config.discount + rewards[v, t]
            self.return_rms.update(ret[v])
            out[v, t] = np.clip(rewards[v, t] / np.sqrt(self.return_rms.var[0] + 1e-8), -10, 10)
        return out

    def update(self, batch) -> dict[str, float]:
        c, dev = self.config, self.device
        valid_np = batch.valid
        prev_states, next_states = self.states(batch)
        self.buffer.add(prev_states, batch.actions, batch.rewards, next_states, batch.lengths)
        self.frames += batch.env_steps
        metrics = dict.fromkeys(METRICS, 0.0)
        if self.frames < c.precollect_steps:
            return metrics

        rewards = batch.rewards.astype(np.float64)
        if c.norm_rewards:
            rewards = self._normalised_rewards(rewards, valid_np)
        valid = torch.from_numpy(valid_np).to(dev)
        obs = torch.from_numpy(prev_states).to(dev)[valid]  # the states the rollout acted on
        beliefs = torch.from_numpy(batch.extras["belief"]).to(dev)[valid]  # as the rollout saw them
        actions = torch.from_numpy(np.ascontiguousarray(batch.actions)).to(dev)[valid]
        with torch.no_grad():
            values_flat = self._policy(obs, beliefs)[1].double()  # the rollout's values (statistics not yet updated)
        values = torch.zeros(valid.shape, dtype=torch.float64, device=dev)
        values[valid] = values_flat
        rewards_t = torch.from_numpy(rewards).to(dev)
        if c.proper_time_limits:  # a trial cut by the time limit: no advantage on its last step
            last = torch.from_numpy(batch.lengths - 1).to(dev)
            rows = torch.arange(batch.n, device=dev)
            cut = torch.from_numpy(batch.truncated[np.arange(batch.n), batch.lengths - 1]).to(dev)
            rewards_t[rows[cut], last[cut]] = values[rows[cut], last[cut]]
        advantages = gae_advantages(rewards_t, values, valid.double(), c.discount, c.gae_lambda)
        returns = (advantages + values)[valid].float()
        advantages = advantages[valid]
        advantages = ((advantages - advantages.mean()) / (advantages.std() + 1e-5)).float()
        values_old = values_flat.float()

        # the reference updates the input statistics, then recomputes the old log-probabilities
        if c.norm_state:
            self.state_rms.update(obs.cpu().numpy())
        if c.norm_latent:
            self.latent_rms.update(beliefs.cpu().numpy())
        log_std = self.policy.clamped_log_std()
        with torch.no_grad():
            logp_old = gaussian_log_prob(self._policy(obs, beliefs)[0], log_std, actions)

        m = len(actions)
        p_losses, v_losses, entropies = [], [], []
        for idx in minibatches(m, max(1, m // c.ppo_minibatches), c.ppo_epochs, self.update_gen, drop_last=True):
            idx = idx.to(dev)
            mean, value = self._policy(obs[idx], beliefs[idx])
            log_std = self.policy.clamped_log_std()
            policy_loss = ppo_clip_loss(gaussian_log_prob(mean, log_std, actions[idx]), logp_old[idx], advantages[idx], c.clip)
            v_old, ret = values_old[idx], returns[idx]
            v_clipped = v_old + (value - v_old).clamp(-c.clip, c.clip)
            value_loss = 0.5 * torch.max(F.smooth_l1_loss(value, ret, reduction="none"),
                                         F.smooth_l1_loss(v_clipped, ret, reduction="none")).mean()
            entropy = gaussian_entropy(log_std)
            loss = c.value_coeff * value_loss + policy_loss - c.entropy_coeff * entropy
            self.policy_opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
            self.policy_opt.step()
            p_losses.append(policy_loss.detach())
            v_losses.append(value_loss.detach())
            entropies.append(entropy.detach())
        with torch.no_grad():
            logp_new = gaussian_log_prob(self._policy(obs, beliefs)[0], self.policy.clamped_log_std(), actions)
        metrics.update(policy_loss=float(torch.stack(p_losses).mean()), value_loss=float(torch.stack(v_losses).mean()),
                       entropy=float(torch.stack(entropies).mean()), kl=float((logp_old - logp_new).mean()))
        vae = [self._vae_update() for _ in range(c.vae_updates)]  # after the policy, as the reference
        metrics.update({k: float(np.mean([v[k] for v in vae])) for k in vae[0]} if vae else {})
        return metrics

    # -- persistence -------------------------------------------------------------------------
    def _nets(self) -> dict[str, nn.Module]:
        nets = {"encoder": self.encoder, "reward_decoder": self.reward_decoder, "policy": self.policy}
        if self.state_decoder is not None:
            nets["state_decoder"] = self.state_decoder
        return nets

    def model_state(self) -> dict[str, Any]:
        return {**{k: v.state_dict() for k, v in self._nets().items()},
                "state_rms": self.state_rms.state_dict(), "latent_rms": self.latent_rms.state_dict(),
                "return_rms": self.return_rms.state_dict()}

    def load_model_state(self, state: dict[str, Any]) -> None:
        for k, v in self._nets().items():
            v.load_state_dict(state[k])
        for k in ("state_rms", "latent_rms", "return_rms"):
            getattr(self, k).load_state_dict(state[k])

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.model_state(),
            "policy_opt": self.policy_opt.state_dict(),
            "vae_opt": self.vae_opt.state_dict(),
            "buffer": self.buffer.state_dict(),
            "frames": self.frames,
            "train_gen": self.train_gen.get_state(),
            "update_gen": self.update_gen.get_state(),
            "vae_gen": self.vae_gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_model_state(state)
        self.policy_opt.load_state_dict(state["policy_opt"])
        self.vae_opt.load_state_dict(state["vae_opt"])
        self.buffer.load_state_dict(state["buffer"])
        self.frames = state["frames"]
        self.train_gen.set_state(state["train_gen"])
        self.update_gen.set_state(state["update_gen"])
        self.vae_gen.set_state(state["vae_gen"])
