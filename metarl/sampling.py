"""The trial sampler: many tasks at once, one batched policy call per step.

A *trial* is `episodes` consecutive episodes in one task. `run_trials` runs one trial in each
slot of a `TaskBatchEnv`, all slots in lock-step: every step it builds the RL² tokens of all
slots, makes ONE `agent.act` call for all of them, then steps the simulators. When a slot's
episode ends (termination or the time limit) the agent is told (`end_episode`), the slot is
reset and the next episode of its trial starts; a slot whose trial is over idles until every
slot is done. `concat_trials` joins batches of trials into one (the training loop's extra
trials, `metarl.training.TrainSampler`).

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
    the episode). Per slot: `lengths` (steps used). Per episode (n, episodes): `episode_returns`
    (summed in float64), `episode_success` (1 if success at any step), `episode_lengths`.
    `extras` holds what the agent returned from `act`, stored per step the same way.

    During a trial (in `Agent.end_episode`) the per-step arrays are complete for every finished
    episode; `episode`, `step`, `valid`, `terminated`, `truncated` and the per-episode figures are
    filled when an episode ends. The float per-step arrays are views of one record array (one
    store per step keeps the sampler close to the simulator's speed).
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
    record: np.ndarray | None = field(default=None, repr=False)  # the array behind the float views

    @property
    def n(self) -> int:
        return len(self.tasks)

    @property
    def env_steps(self) -> int:
        return int(self.lengths.sum())

    @classmethod
    def allocate(cls, tasks: Sequence[Task], episodes: int, episode_length: int, obs_dim: int, act_dim: int) -> "TrialBatch":
        n, steps = len(tasks), episodes * episode_length
        layout = _RecordLayout(obs_dim, act_dim)
        record = np.zeros((n, steps, layout.width), np.float32)
        return cls(
            tasks=list(tasks),
            episodes=episodes,
            episode_length=episode_length,
            **layout.views(record),
            terminated=np.zeros((n, steps), bool),
            truncated=np.zeros((n, steps), bool),
            episode=np.full((n, steps), -1, np.int32),
            step=np.zeros((n, steps), np.int32),
            valid=np.zeros((n, steps), bool),
            lengths=np.zeros(n, np.int64),
            episode_returns=np.zeros((n, episodes), np.float64),
            episode_success=np.zeros((n, episodes), np.float64),
            episode_lengths=np.zeros((n, episodes), np.int64),
            record=record,
        )


_FLOAT_VIEWS = ("obs", "tokens", "actions", "rewards", "next_obs", "success")  # = _RecordLayout.views


def concat_trials(batches: Sequence[TrialBatch]) -> TrialBatch:
    """One `TrialBatch` holding the trials of `batches`, in order.

    The batches must have the same `episodes`, `episode_length`, per-step widths and `extras`
    keys. Every array (per step, per slot, per episode, extras) is concatenated along the trial
    axis; when every batch has its record array, the float per-step arrays of the result are
    again views of one concatenated record. A single batch is returned as it is.
    """
    if not batches:
        raise ValueError("no trial batches to concatenate")
    first = batches[0]
    if len(batches) == 1:
        return first
    for b in batches[1:]:
        if (b.episodes, b.episode_length) != (first.episodes, first.episode_length):
            raise ValueError(
                f"cannot concatenate trials of {b.episodes} x {b.episode_length} steps with trials of "
                f"{first.episodes} x {first.episode_length}"
            )
        if set(b.extras) != set(first.extras):
            raise ValueError(f"extras differ: {sorted(first.extras)} vs {sorted(b.extras)}")

    def cat(arrays) -> np.ndarray:
        return np.concatenate(list(arrays), axis=0)

    if all(b.record is not None for b in batches):
        record = cat(b.record for b in batches)
        floats = _RecordLayout(first.obs.shape[-1], first.actions.shape[-1]).views(record)
    else:
        record = None
        floats = {name: cat(getattr(b, name) for b in batches) for name in _FLOAT_VIEWS}
    others = ("terminated", "truncated", "episode", "step", "valid", "lengths", "episode_returns",
              "episode_success", "episode_lengths")
    return TrialBatch(
        tasks=[task for b in batches for task in b.tasks],
        episodes=first.episodes,
        episode_length=first.episode_length,
        **floats,
        **{name: cat(getattr(b, name) for b in batches) for name in others},
        extras={key: cat(b.extras[key] for b in batches) for key in first.extras},
        record=record,
    )


class _RecordLayout:
    """Columns of the per-step record: [token (= obs, a_prev, r_prev, d_prev) | action | reward |
    next_obs | terminated | success]."""

    def __init__(self, obs_dim: int, act_dim: int):
        token_dim = obs_dim + act_dim + 2
        self.obs = slice(0, obs_dim)
        self.tokens = slice(0, token_dim)
        self.actions = slice(token_dim, token_dim + act_dim)
        self.reward = token_dim + act_dim
        self.next_obs = slice(self.reward + 1, self.reward + 1 + obs_dim)
        self.terminated = self.reward + 1 + obs_dim
        self.success = self.terminated + 1
        self.width = self.success + 1

    def views(self, record: np.ndarray) -> dict[str, np.ndarray]:
        """The `TrialBatch` float arrays as views of `record` (n, L, width)."""
        return {
            "obs": record[..., self.obs],
            "tokens": record[..., self.tokens],
            "actions": record[..., self.actions],
            "rewards": record[..., self.reward],
            "next_obs": record[..., self.next_obs],
            "success": record[..., self.success],
        }


def run_trials(
    env: TaskBatchEnv,
    agent: Agent,
    tasks: Sequence[Task],
    spec: TrialSpec,
    reset_rngs: Sequence[np.random.Generator],
    record_extras: bool = True,
) -> TrialBatch:
    """Run one trial of `spec.episodes` episodes of `spec.episode_length` steps at most per task,
    all tasks at once (see module doc). The sizes are the env's, read once it has its tasks (a
    `LoopBatchEnv` learns them from its first slot's env)."""
    n = len(tasks)
    if n != env.n:
        raise ValueError(f"{n} tasks for an environment batch of {env.n} slots")
    env.set_tasks(tasks, reset_rngs)
    episode_length, obs_dim, act_dim = spec.episode_length, env.obs_dim, env.act_dim
    batch = TrialBatch.allocate(tasks, spec.episodes, episode_length, obs_dim, act_dim)
    layout = _RecordLayout(obs_dim, act_dim)
    record = batch.record
    reward64 = np.zeros(batch.valid.shape, np.float64)  # returns are summed from unrounded rewards
    agent.start_trial(n, spec)

    every = np.arange(n)
    obs = np.zeros((n, obs_dim), np.float32)
    obs[:] = env.reset(every)
    prev_action = np.zeros((n, act_dim), np.float32)
    prev_reward = np.zeros(n, np.float64)
    prev_done = np.zeros(n, bool)
    episode = np.zeros(n, np.int64)  # current episode index per slot
    t = np.zeros(n, np.int64)  # step within the episode
    pos = np.zeros(n, np.int64)  # write position within the trial
    active = np.ones(n, bool)
    agent.start_episode(every)

    def deterministic_now() -> np.ndarray:
        if spec.training:
            return np.zeros(n, bool)
        return episode >= spec.exploration_episodes

    def close_episodes(slots: np.ndarray, terminated: np.ndarray) -> None:
        """Per-episode bookkeeping for `slots`, whose current episode just ended."""
        for s in slots:
            e, end = int(episode[s]), int(pos[s])
            start = end - int(t[s])
            batch.episode[s, start:end] = e
            batch.step[s, start:end] = np.arange(end - start)
            batch.valid[s, start:end] = True
            batch.terminated[s, end - 1] = terminated[s]
            batch.truncated[s, end - 1] = not terminated[s]
            batch.episode_returns[s, e] = reward64[s, start:end].sum()
            batch.episode_success[s, e] = record[s, start:end, layout.success].max()
            batch.episode_lengths[s, e] = end - start
            batch.lengths[s] = end

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
        row = np.concatenate(
            [tokens, actions, reward[:, None], next_obs, terminated[:, None], success[:, None]],
            axis=1, dtype=np.float32,
        )

        if aligned:
            rows: np.ndarray | slice = slice(None)
            at: tuple = (slice(None), int(pos[0]))
            time_up = t[0] + 1 >= episode_length
        else:
            rows = np.flatnonzero(active)
            at = (rows, pos[rows])
            time_up = t + 1 >= episode_length
        record[at] = row[rows]
        reward64[at] = reward[rows]
        if record_extras:
            for key, value in extras.items():
                value = np.asarray(value)
                store = batch.extras.get(key)
                if store is None:
                    store = np.zeros((n, batch.valid.shape[1], *value.shape[1:]), value.dtype)
                    batch.extras[key] = store
                store[at] = value[rows]
        t[rows] += 1
        pos[rows] += 1
        ended = active & (terminated | time_up)

        obs[rows] = next_obs[rows]
        prev_action[rows] = actions[rows]
        prev_reward[rows] = reward[rows]
        prev_done[rows] = terminated[rows]

        if ended.any():
            done_slots = np.flatnonzero(ended)
            if len(done_slots) < n:
                aligned = False
            close_episodes(done_slots, terminated)
            agent.end_episode(done_slots, batch)
            episode[done_slots] += 1
            over = done_slots[episode[done_slots] >= spec.episodes]
            active[over] = False
            again = done_slots[episode[done_slots] < spec.episodes]
            if len(again):
                obs[again] = env.reset(again)
                prev_action[again] = 0.0
                prev_reward[again] = 0.0
                prev_done[again] = False
                t[again] = 0
                agent.start_episode(again)
            deterministic = deterministic_now()
    return batch
