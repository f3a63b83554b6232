"""The trial sampler: many tasks at once, one batched policy call per step.

A *trial* is `episodes` consecutive episodes in one task. `run_trials` runs one trial in each
slot of a `TaskBatchEnv`, all slots in lock-step: every step it builds the RL² tokens of all
slots, makes ONE `agent.act` call for all of them, then steps the simulators. When a slot's
episode ends (termination or the time limit) the agent is told (`end_episode`), the slot is
reset and the next episode of its trial starts; a slot whose trial is over idles until every
slot is done.

RL² token layout (what `act` receives, and `TrialBatch.tokens` stores), per slot:

    [ obs_t (obs_dim) | a_{t-1} (act_dim) | r_{t-1} (1) | done_{t-1} (1) ]

with a_{t-1}, r_{t-1}, done_{t-1} all zero at the first step of *every* episode, as garage's
RL2Env does. done is true termination only; a time-limit cut is not a done (it is recorded as
`truncated`). Since an episode ends at a done, done_{t-1} is 0 in every token an agent acts on;
the slot is kept because that is the reference layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from metarl.agent import Agent, TrialSpec
from metarl.envs.base import Task, TaskBatchEnv


def make_tokens(obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, prev_done: np.ndarray) -> np.ndarray:
    """RL² tokens [obs, previous action, previous reward, previous done] (float32)."""
    return np.concatenate(
        [obs, prev_action, prev_reward[:, None], prev_done[:, None]], axis=1, dtype=np.float32
    )


@dataclass
class TrialBatch:
    """One trial per slot, padded to `episodes * episode_length` steps (`valid` marks real steps).

    Per step (shape (n, L, ...)): `obs` the observation acted on, `tokens` the RL² token acted
    on, `actions`, `rewards`, `next_obs` (after the step), `terminated`, `truncated` (time
    limit), `success`, `episode` (index within the trial, −1 on padding), `step` (index within
    the episode). Per slot: `lengths` (steps used). Per episode (n, episodes): `episode_returns`,
    `episode_success` (1 if success at any step), `episode_lengths`.
    `extras` holds what the agent returned from `act`, stored per step the same way.
    """

    tasks: list[Task]
    episodes: int
    episode_length: int
    obs: np.ndarray
    tokens: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    valid: np.ndarray
    lengths: np.ndarray
    episode_returns: np.ndarray
    episode_success: np.ndarray
    episode_lengths: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.tasks)

    @property
    def env_steps(self) -> int:
        return int(self.lengths.sum())

    @classmethod
    def allocate(cls, tasks: Sequence[Task], episodes: int, episode_length: int, obs_dim: int, act_dim: int) -> "TrialBatch":
        n, steps = len(tasks), episodes * episode_length
        token_dim = obs_dim + act_dim + 2
        return cls(
            tasks=list(tasks),
            episodes=episodes,
            episode_length=episode_length,
            obs=np.zeros((n, steps, obs_dim), np.float32),
            tokens=np.zeros((n, steps, token_dim), np.float32),
            actions=np.zeros((n, steps, act_dim), np.float32),
            rewards=np.zeros((n, steps), np.float32),
            next_obs=np.zeros((n, steps, obs_dim), np.float32),
            terminated=np.zeros((n, steps), bool),
            truncated=np.zeros((n, steps), bool),
            success=np.zeros((n, steps), np.float32),
            episode=np.full((n, steps), -1, np.int32),
            step=np.zeros((n, steps), np.int32),
            valid=np.zeros((n, steps), bool),
            lengths=np.zeros(n, np.int64),
            episode_returns=np.zeros((n, episodes), np.float64),
            episode_success=np.zeros((n, episodes), np.float64),
            episode_lengths=np.zeros((n, episodes), np.int64),
        )


def run_trials(
    env: TaskBatchEnv,
    agent: Agent,
    tasks: Sequence[Task],
    spec: TrialSpec,
    episode_length: int,
    reset_rngs: Sequence[np.random.Generator],
    obs_dim: int,
    act_dim: int,
    record_extras: bool = True,
) -> TrialBatch:
    """Run one trial of `spec.episodes` episodes per task, all tasks at once (see module doc)."""
    n = len(tasks)
    if n != env.n:
        raise ValueError(f"{n} tasks for an environment batch of {env.n} slots")
    batch = TrialBatch.allocate(tasks, spec.episodes, episode_length, obs_dim, act_dim)
    env.set_tasks(tasks, reset_rngs)
    agent.start_trial(n, spec)

    every = np.arange(n)
    obs = np.zeros((n, obs_dim), np.float32)
    obs[:] = env.reset(every)
    prev_action = np.zeros((n, act_dim), np.float32)
    prev_reward = np.zeros(n, np.float32)
    prev_done = np.zeros(n, np.float32)
    episode = np.zeros(n, np.int64)  # current episode index per slot
    t = np.zeros(n, np.int64)  # step within the episode
    pos = np.zeros(n, np.int64)  # write position within the trial
    active = np.ones(n, bool)
    agent.start_episode(every)

    def deterministic_now() -> np.ndarray:
        if spec.training:
            return np.zeros(n, bool)
        return episode >= spec.exploration_episodes

    deterministic = deterministic_now()
    # While no slot has terminated early, every slot is at the same position of its trial, and
    # plain slices replace fancy indexing (the common case; it keeps the sampler near raw speed).
    aligned = True
    while active.any():
        tokens = make_tokens(obs, prev_action, prev_reward, prev_done)
        if not aligned:
            tokens[~active] = 0.0
        actions, extras = agent.act(tokens, deterministic)
        actions = np.asarray(actions, dtype=np.float32)
        next_obs, reward, terminated, success = env.step(actions, active)

        if aligned:
            rows: np.ndarray | slice = slice(None)
            at: tuple = (slice(None), int(pos[0]))
            ep_at: tuple = (slice(None), int(episode[0]))
        else:
            rows = np.flatnonzero(active)
            at = (rows, pos[rows])
            ep_at = (rows, episode[rows])
        batch.obs[at] = obs[rows]
        batch.tokens[at] = tokens[rows]
        batch.actions[at] = actions[rows]
        batch.rewards[at] = reward[rows]
        batch.next_obs[at] = next_obs[rows]
        batch.terminated[at] = terminated[rows]
        batch.success[at] = success[rows]
        batch.episode[at] = episode[rows]
        batch.step[at] = t[rows]
        batch.valid[at] = True
        if record_extras:
            for key, value in extras.items():
                value = np.asarray(value)
                store = batch.extras.get(key)
                if store is None:
                    store = np.zeros((n, batch.valid.shape[1], *value.shape[1:]), value.dtype)
                    batch.extras[key] = store
                store[at] = value[rows]
        batch.episode_returns[ep_at] += reward[rows]
        batch.episode_success[ep_at] = np.maximum(batch.episode_success[ep_at], success[rows])

        t[rows] += 1
        pos[rows] += 1
        batch.lengths[rows] += 1
        time_up = t >= episode_length
        ended = active & (terminated | time_up)
        batch.truncated[at] = (time_up & ~terminated)[rows]

        obs[rows] = next_obs[rows]
        prev_action[rows] = actions[rows]
        prev_reward[rows] = reward[rows]
        prev_done[rows] = terminated[rows]

        if ended.any():
            done_slots = np.flatnonzero(ended)
            if len(done_slots) < n:
                aligned = False
            batch.episode_lengths[done_slots, episode[done_slots]] = t[done_slots]
            agent.end_episode(done_slots, batch)
            episode[done_slots] += 1
            over = done_slots[episode[done_slots] >= spec.episodes]
            active[over] = False
            again = done_slots[episode[done_slots] < spec.episodes]
            if len(again):
                obs[again] = env.reset(again)
                prev_action[again] = 0.0
                prev_reward[again] = 0.0
                prev_done[again] = 0.0
                t[again] = 0
                agent.start_episode(again)
            deterministic = deterministic_now()
    return batch
