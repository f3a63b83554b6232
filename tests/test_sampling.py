"""The trial sampler: RL² token layout, resets at every episode start, trial boundaries,
termination vs truncation, step counting, one batched act call per step; joining batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.agent import Agent, AgentConfig, EnvSpec, TrialSpec
from metarl.envs import get_benchmark
from metarl.envs.base import Task, TaskBatchEnv
from metarl.sampling import concat_trials, make_tokens, run_trials


class ScriptedAgent(Agent):
    """Acts with a fixed per-step action and records every call the harness makes."""

    def __init__(self, env: EnvSpec, n: int):
        super().__init__(AgentConfig(n), env, torch.device("cpu"), 0)
        self.calls: list[tuple] = []
        self.tokens: list[np.ndarray] = []
        self.counter = 0

    def start_trial(self, n, spec):
        self.calls.append(("start_trial", n))

    def start_episode(self, slots):
        self.calls.append(("start_episode", tuple(slots)))

    def act(self, tokens, deterministic):
        self.calls.append(("act", len(tokens)))
        self.tokens.append(tokens.copy())
        self.counter += 1
        actions = np.full((len(tokens), self.env.act_dim), 0.01 * self.counter, np.float32)
        return actions, {"counter": np.full(len(tokens), self.counter, np.int64)}

    def end_episode(self, slots, trials):
        self.calls.append(("end_episode", tuple(slots)))

    def update(self, batch):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _spec(bench):
    return EnvSpec.of(bench)


def test_token_layout_and_episode_resets():
    bench = get_benchmark("PointNav")
    n, episodes = 3, 2
    env = bench.make_env(n)
    agent = ScriptedAgent(_spec(bench), n)
    tasks = bench.sample_train_tasks(np.random.default_rng(0), n)
    batch = run_trials(env, agent, tasks, TrialSpec(episodes, 0, True, 0, bench.episode_length),
                       [np.random.default_rng(k) for k in range(n)])
    T = bench.episode_length
    assert batch.tokens.shape == (n, episodes * T, 2 + 2 + 2)
    assert batch.env_steps == n * episodes * T
    # exactly one batched act call per step, always with every slot
    acts = [c for c in agent.calls if c[0] == "act"]
    assert len(acts) == episodes * T and all(c[1] == n for c in acts)
    for e in range(episodes):
        first = batch.tokens[:, e * T]
        # episode start: obs then zeros for previous action, reward and done
        np.testing.assert_array_equal(first[:, 2:], 0.0)
        np.testing.assert_allclose(first[:, :2], 0.0)  # PointNav starts at the origin
        for t in range(1, T):
            tok = batch.tokens[:, e * T + t]
            np.testing.assert_array_equal(tok[:, :2], batch.obs[:, e * T + t])
            np.testing.assert_array_equal(tok[:, 2:4], batch.actions[:, e * T + t - 1])
            np.testing.assert_array_equal(tok[:, 4], batch.rewards[:, e * T + t - 1])
            np.testing.assert_array_equal(tok[:, 5], 0.0)  # no termination in PointNav
            np.testing.assert_array_equal(batch.obs[:, e * T + t], batch.next_obs[:, e * T + t - 1])
    # time-limit cuts are truncations, never terminations
    assert not batch.terminated.any()
    assert batch.truncated.sum() == n * episodes
    assert batch.truncated[:, T - 1].all() and batch.truncated[:, -1].all()
    np.testing.assert_array_equal(batch.episode[:, :T], 0)
    np.testing.assert_array_equal(batch.episode[:, T:], 1)
    np.testing.assert_array_equal(batch.step[0], np.tile(np.arange(T), episodes))
    # the agent heard about every episode boundary and the trial start
    kinds = [c[0] for c in agent.calls if c[0] != "act"]
    assert kinds == ["start_trial", "start_episode", "end_episode", "start_episode", "end_episode"]
    # extras stored per step, in step order
    np.testing.assert_array_equal(batch.extras["counter"][0], np.arange(1, episodes * T + 1))
    np.testing.assert_allclose(batch.episode_returns, batch.rewards.reshape(n, episodes, T).sum(-1), rtol=1e-6)


def test_make_tokens_concatenates_in_order():
    obs = np.array([[1.0, 2.0]], np.float32)
    tok = make_tokens(obs, np.array([[3.0, 4.0]], np.float32), np.array([5.0], np.float32), np.array([1.0], np.float32))
    np.testing.assert_array_equal(tok, [[1, 2, 3, 4, 5, 1]])
    assert tok.dtype == np.float32


class FallingEnv(TaskBatchEnv):
    """1-d toy: slot k terminates after `fall_at[k]` steps of each episode (never, if 0)."""

    obs_dim = 1
    act_dim = 1

    def __init__(self, n, fall_at):
        self.n = n
        self.fall_at = np.asarray(fall_at)
        self.action_low = np.array([-1.0], np.float32)
        self.action_high = np.array([1.0], np.float32)
        self.t = np.zeros(n, int)
        self.resets = np.zeros(n, int)

    def set_tasks(self, tasks, rngs):
        pass

    def reset(self, slots):
        self.t[slots] = 0
        self.resets[slots] += 1
        return (10.0 * self.resets[slots])[:, None].astype(np.float32)

    def step(self, actions, active):
        self.t[active] += 1
        obs = (10.0 * self.resets + self.t)[:, None].astype(np.float32)
        terminated = (self.fall_at > 0) & (self.t == self.fall_at) & active
        return obs, np.ones(self.n), terminated, np.zeros(self.n)


def test_termination_restarts_episode_and_trial_ends_per_slot():
    n, episodes, T = 3, 3, 6
    env = FallingEnv(n, fall_at=[0, 2, 4])
    spec = EnvSpec("toy", 1, 1, 4, env.action_low, env.action_high, T, episodes, episodes)
    agent = ScriptedAgent(spec, n)
    tasks = [Task({}, "t")] * n
    batch = run_trials(env, agent, tasks, TrialSpec(episodes, 0, True, 0, T),
                       [np.random.default_rng(k) for k in range(n)])
    np.testing.assert_array_equal(batch.lengths, [episodes * T, episodes * 2, episodes * 4])
    np.testing.assert_array_equal(batch.episode_lengths, [[T] * 3, [2] * 3, [4] * 3])
    assert batch.env_steps == 18 + 6 + 12
    # slot 1: terminates (not truncates) at every 2nd step; the next token starts fresh
    assert batch.terminated[1, :6].tolist() == [False, True] * 3
    assert not batch.truncated[1].any()
    assert batch.truncated[0, [5, 11, 17]].all() and batch.truncated[0].sum() == 3
    for start in (0, 2, 4):
        np.testing.assert_array_equal(batch.tokens[1, start, 1:], 0.0)
    # the done flag of a terminal step goes nowhere: the next token is an episode start
    assert batch.tokens[1, 1, 3] == 0.0
    # padding after a slot's trial ended
    assert not batch.valid[1, 6:].any() and (batch.episode[1, 6:] == -1).all()
    # the act calls keep every slot; finished slots get zero tokens
    last = agent.tokens[-1]
    np.testing.assert_array_equal(last[1], 0.0)
    np.testing.assert_array_equal(last[2], 0.0)
    # per-slot episode bookkeeping
    ends = [c[1] for c in agent.calls if c[0] == "end_episode"]
    assert sum(1 in s for s in ends) == episodes and sum(0 in s for s in ends) == episodes


def test_eval_trials_deterministic_after_exploration():
    bench = get_benchmark("PointNav")
    env = bench.make_env(2)
    seen = []

    class Watch(ScriptedAgent):
        def act(self, tokens, deterministic):
            seen.append(deterministic.copy())
            return super().act(tokens, deterministic)

    agent = Watch(_spec(bench), 2)
    tasks = bench.sample_train_tasks(np.random.default_rng(0), 2)
    run_trials(env, agent, tasks, TrialSpec(3, 1, False, 5, bench.episode_length),
               [np.random.default_rng(k) for k in range(2)])
    T = bench.episode_length
    assert not np.any(seen[:T]) and np.all(seen[T:])
    seen.clear()
    run_trials(env, agent, tasks, TrialSpec(2, 0, True, 0, T), [np.random.default_rng(k) for k in range(2)])
    assert not np.any(seen)


def _falling_batch(fall_at, episodes=2, T=6, label="t"):
    env = FallingEnv(len(fall_at), fall_at=fall_at)
    spec = EnvSpec("toy", 1, 1, 4, env.action_low, env.action_high, T, episodes, episodes)
    tasks = [Task({"k": k}, f"{label}{k}") for k in range(len(fall_at))]
    return run_trials(env, ScriptedAgent(spec, len(fall_at)), tasks, TrialSpec(episodes, 0, True, 0, T),
                      [np.random.default_rng(k) for k in range(len(fall_at))])


def test_concat_trials_joins_every_array_in_order():
    a, b, c = _falling_batch([0, 2], label="a"), _falling_batch([3]), _falling_batch([0, 5, 1], label="c")
    merged = concat_trials([a, b, c])
    parts = (a, b, c)
    assert merged.n == 6 and [t.label for t in merged.tasks] == ["a0", "a1", "t0", "c0", "c1", "c2"]
    assert (merged.episodes, merged.episode_length) == (2, 6)
    assert merged.env_steps == a.env_steps + b.env_steps + c.env_steps == 12 + 4 + 6 + 12 + 10 + 2
    np.testing.assert_array_equal(merged.lengths, [12, 4, 6, 12, 10, 2])
    for name in ("obs", "tokens", "actions", "rewards", "next_obs", "success", "terminated", "truncated",
                 "episode", "step", "valid", "lengths", "episode_returns", "episode_success", "episode_lengths"):
        value = getattr(merged, name)
        assert value.shape == (6, *getattr(a, name).shape[1:]) and value.dtype == getattr(a, name).dtype, name
        np.testing.assert_array_equal(value, np.concatenate([getattr(p, name) for p in parts]), err_msg=name)
    assert merged.tokens.shape == (6, 12, 4) and merged.episode_returns.shape == (6, 2)
    # extras: the agent's per-step outputs, joined the same way
    assert set(merged.extras) == {"counter"}
    np.testing.assert_array_equal(merged.extras["counter"], np.concatenate([p.extras["counter"] for p in parts]))
    assert merged.extras["counter"].shape == (6, 12)
    # the float per-step arrays are again views of one record
    assert merged.record.shape[0] == 6
    for name in ("obs", "tokens", "actions", "rewards", "next_obs", "success"):
        assert np.shares_memory(getattr(merged, name), merged.record), name
    # the inputs are left as they were
    assert a.n == 2 and a.record.shape[0] == 2


def test_concat_trials_of_one_batch_is_that_batch_and_mismatches_are_refused():
    a = _falling_batch([0, 2])
    assert concat_trials([a]) is a
    with pytest.raises(ValueError, match="no trial batches"):
        concat_trials([])
    with pytest.raises(ValueError, match="cannot concatenate"):
        concat_trials([a, _falling_batch([0], episodes=3)])
    with pytest.raises(ValueError, match="cannot concatenate"):
        concat_trials([a, _falling_batch([0], T=5)])
    other = _falling_batch([1])
    other.extras["more"] = np.zeros((1, 12))
    with pytest.raises(ValueError, match="extras differ"):
        concat_trials([a, other])
    # without record arrays the float arrays are plain concatenations
    b = _falling_batch([4])
    a.record = b.record = None
    merged = concat_trials([a, b])
    assert merged.record is None
    np.testing.assert_array_equal(merged.tokens, np.concatenate([a.tokens, b.tokens]))
