"""PEARL: the product-of-Gaussians posterior, deterministic evaluation (mean action and
posterior-mean z), prior in the first episode and posterior after, exact state round trip with
the replay buffers."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

from baselines.pearl import TaskBuffer, product_of_gaussians
from metarl import config as cfg
from metarl.agent import TrialSpec
from metarl.envs import get_benchmark
from metarl.sampling import run_trials
from metarl.seeding import env_rngs
from metarl.setup import build_agent, prepare


def _agent(**overrides):
    setup = prepare(cfg.resolve("pearl", "PointNav", 1, "smoke", overrides={"device": "cpu", **overrides}))
    return build_agent(setup)


def _trials(agent, spec, n=3, iteration=1):
    bench = get_benchmark("PointNav")
    env = bench.make_env(n)
    tasks = bench.sample_train_tasks(np.random.default_rng(iteration), n)
    try:
        return run_trials(env, agent, tasks, spec, env_rngs(1, iteration, n))
    finally:
        env.close()


def test_product_of_gaussians_closed_form():
    mu = torch.tensor([[1.0, -2.0], [3.0, 0.5], [-1.0, 0.0]], dtype=torch.float64)
    var = torch.tensor([[0.5, 2.0], [1.0, 0.25], [4.0, 1.0]], dtype=torch.float64)
    mean, post_var = product_of_gaussians(mu, var)
    for d in range(2):
        precision = sum(1 / var[i, d].item() for i in range(3))
        expected_var = 1 / precision
        expected_mean = expected_var * sum(mu[i, d].item() / var[i, d].item() for i in range(3))
        assert abs(post_var[d].item() - expected_var) < 1e-12
        assert abs(mean[d].item() - expected_mean) < 1e-12
    # with the prior N(0, I) as one more factor: precision + 1, the mean shrinks toward 0
    mean_p, var_p = product_of_gaussians(mu, var, with_prior=True)
    torch.testing.assert_close(var_p, 1 / (1 / post_var + 1))
    torch.testing.assert_close(mean_p, var_p * (mean / post_var))


def test_encoder_posterior_is_the_product_of_its_factors():
    agent = _agent()
    context = torch.randn(7, agent.env.obs_dim + agent.env.act_dim + 1)
    with torch.no_grad():
        mu, var = agent.nets.encoder.factors(context)
        mean, post_var = agent.nets.encoder(context)
    torch.testing.assert_close(post_var, 1 / (1 / var).sum(0))
    torch.testing.assert_close(mean, post_var * (mu / var).sum(0))


def test_deterministic_actions_are_tanh_of_the_mean_and_repeatable():
    agent = _agent()
    n = 4
    tokens = np.random.default_rng(0).standard_normal((n, agent.env.token_dim)).astype(np.float32)
    det = np.ones(n, bool)
    agent.start_trial(n, TrialSpec(2, 0, False, 5, agent.env.episode_length))
    agent._has_post[:] = True  # as after an episode: z = the posterior mean
    agent._z_mean[:] = torch.randn(n, agent.config.latent_dim)
    a1, _ = agent.act(tokens, det)
    a2, _ = agent.act(tokens, det)
    np.testing.assert_array_equal(a1, a2)
    obs = torch.from_numpy(tokens[:, : agent.env.obs_dim])
    with torch.no_grad():
        mean, _ = agent.nets.policy(torch.cat([obs, agent._z_mean], 1))
    expected = agent.center + agent.half * torch.tanh(mean)
    np.testing.assert_allclose(a1, expected.numpy(), rtol=1e-6)
    stochastic, _ = agent.act(tokens, np.zeros(n, bool))
    assert not np.allclose(stochastic, a1)


def test_whole_deterministic_evaluation_repeats_exactly():
    agent = _agent()
    spec = TrialSpec(3, 0, False, 11, agent.env.episode_length)
    first = _trials(agent, spec)
    again = _trials(agent, spec)
    np.testing.assert_array_equal(first.actions, again.actions)


class _Spy:
    """Records the z the agent acts with at the start of every episode."""

    def __init__(self, agent):
        self.agent, self.seen = agent, []

    def wrap(self):
        original = self.agent.start_episode

        def start_episode(slots):
            original(slots)
            self.seen.append((self.agent._z.clone(), self.agent._z_mean.clone(), self.agent._z_var.clone(),
                              self.agent._has_post.copy()))

        self.agent.start_episode = start_episode


def test_prior_in_first_episode_then_posterior_from_the_trial_so_far():
    agent = _agent()
    spy = _Spy(agent)
    spy.wrap()
    batch = _trials(agent, TrialSpec(3, 0, False, 3, agent.env.episode_length))
    z0, mean0, var0, post0 = spy.seen[0]
    assert not post0.any()
    assert torch.count_nonzero(mean0) == 0 and torch.equal(var0, torch.ones_like(var0))
    assert torch.count_nonzero(z0) == z0.numel()  # a draw from the prior, not its mean
    _, mean2, var2, post2 = spy.seen[2]  # third episode: posterior from episodes 0 and 1
    assert post2.all()
    for s in range(batch.n):
        mask = batch.valid[s] & (batch.episode[s] <= 1)
        rows = agent._rows(batch, s, mask)
        with torch.no_grad():
            expected_mean, expected_var = agent.nets.encoder(torch.from_numpy(agent._context(rows)))
        torch.testing.assert_close(mean2[s], expected_mean)
        torch.testing.assert_close(var2[s], expected_var)


def test_training_trials_fill_both_buffers_as_the_reference():
    agent = _agent()
    batch = _trials(agent, TrialSpec(2, 0, True, 0, agent.env.episode_length))
    agent.update(batch)
    assert len(agent.rl_buffers) == batch.n
    for s, task in enumerate(batch.tasks):
        key = repr(sorted(task.params.items()))
        assert agent.rl_buffers[key].size == batch.lengths[s]  # every episode for RL
        assert len(agent.enc_buffers[key]) == batch.episode_lengths[s, 0]  # prior episode only


def test_task_buffer_is_a_fifo():
    buf = TaskBuffer(1, 5)
    buf.add(np.arange(3, dtype=np.float32)[:, None])
    buf.add(np.arange(3, 7, dtype=np.float32)[:, None])
    assert buf.size == 5 and sorted(buf.data[:, 0].tolist()) == [2, 3, 4, 5, 6]


def test_state_dict_round_trip_continues_identically():
    a = _agent()
    for it in (1, 2):
        a.update(_trials(a, TrialSpec(2, 0, True, 0, a.env.episode_length), iteration=it))
    saved = io.BytesIO()
    torch.save(a.state_dict(), saved)  # through bytes, as a checkpoint (no shared tensors)
    saved.seek(0)
    b = _agent()
    b.load_state_dict(torch.load(saved, weights_only=False))
    assert list(b.rl_buffers) == list(a.rl_buffers)
    for key in a.rl_buffers:
        np.testing.assert_array_equal(b.rl_buffers[key].data[: b.rl_buffers[key].size],
                                      a.rl_buffers[key].data[: a.rl_buffers[key].size])
        np.testing.assert_array_equal(b.enc_buffers[key], a.enc_buffers[key])
    out_a = a.update(_trials(a, TrialSpec(2, 0, True, 0, a.env.episode_length), iteration=3))
    out_b = b.update(_trials(b, TrialSpec(2, 0, True, 0, b.env.episode_length), iteration=3))
    assert out_a == out_b
    for (ka, va), (kb, vb) in zip(a.nets.state_dict().items(), b.nets.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_tanh_gaussian_log_prob_matches_the_change_of_variables():
    from torch.distributions import Normal, TanhTransform, TransformedDistribution

    from baselines.pearl import tanh_gaussian_sample

    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    log_std = torch.randn(64, 3, generator=gen, dtype=torch.float64) * 0.5 - 0.5
    noise = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    action, logp = tanh_gaussian_sample(mean, log_std, noise)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    pre = mean + log_std.exp() * noise
    expected = (Normal(mean, log_std.exp()).log_prob(pre) - 2 * (math.log(2) - pre - F.softplus(-2 * pre))).sum(-1)
    torch.testing.assert_close(action, torch.tanh(pre))
    # away from saturation, where rlkit's ε = 1e-6 inside log(1 − tanh²) and atanh both matter
    keep = pre.abs().max(-1).values < 2.5
    assert keep.sum() > 30
    torch.testing.assert_close(logp[keep], expected[keep], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logp[keep], reference.log_prob(action).sum(-1)[keep], atol=1e-4, rtol=1e-4)


def test_time_limit_is_not_terminal_in_the_buffers():
    """PointNav episodes end only by the time limit: every stored done flag must be 0 (a
    truncation treated as terminal would cut the bootstrap at every episode end)."""
    agent = _agent()
    batch = _trials(agent, TrialSpec(2, 0, True, 0, agent.env.episode_length))
    assert batch.truncated.any() and not batch.terminated.any()
    agent.update(batch)
    for buf in agent.rl_buffers.values():
        assert not buf.data[: buf.size, -1].any()
    batch.terminated[0, batch.lengths[0] - 1] = True  # a real termination is stored as done
    rows = agent._rows(batch, 0, batch.valid[0])
    assert rows[-1, -1] == 1.0 and not rows[:-1, -1].any()


def test_bellman_target_scales_rewards_and_masks_only_terminal_steps():
    """With Q ≡ 0 and the target V ≡ c, the Q loss is 2·mean((scale·r + γ(1 − done)·c)²)."""
    agent = _agent(reward_scale=7.0, discount=0.9)
    n, c = agent.nets, 3.0
    with torch.no_grad():
        for q in (n.qf1, n.qf2):
            q[-1].weight.zero_(), q[-1].bias.zero_()
        n.target_vf[-1].weight.zero_(), n.target_vf[-1].bias.fill_(c)
    t, b = 2, 5
    gen = torch.Generator().manual_seed(3)
    rl = torch.randn(t, b, agent.width, generator=gen)
    done = (torch.arange(t * b) % 3 == 0).float().reshape(t, b)
    rl[..., -1] = done
    rewards = rl[..., 2 + 2]  # PointNav: obs 2 + action 2, then the reward
    context = torch.randn(t, 4, 5, generator=gen)
    out = agent._gradient_step(rl, context)
    expected = 2 * ((7.0 * rewards + 0.9 * (1 - done) * c) ** 2).mean()
    torch.testing.assert_close(out["qf_loss"], expected)


def test_sac_learns_a_fixed_goal_off_policy():
    """The SAC part on its own: from uniformly random transitions of a point that should reach a
    fixed goal (r = −‖s + 0.1a − g‖, no termination), 400 gradient steps must turn the mean
    action toward the goal from everywhere."""
    agent = _agent(net_size=32, encoder_size=16, rl_meta_batch=2, batch_size=64, embedding_batch_size=8,
                   reward_scale=10.0, discount=0.5, lr=3e-3, threads=1)
    rng = np.random.default_rng(0)
    goal = np.array([0.6, -0.3], np.float32)
    for k in range(2):
        obs = rng.uniform(-1, 1, (2000, 2)).astype(np.float32)
        act = rng.uniform(-1, 1, (2000, 2)).astype(np.float32)
        nxt = obs + 0.1 * act
        rew = -np.linalg.norm(nxt - goal, axis=1, keepdims=True)
        rows = np.concatenate([obs, act, rew, nxt, np.zeros((2000, 1))], 1, dtype=np.float32)
        buf = TaskBuffer(agent.width, 2000)
        buf.add(rows)
        agent.rl_buffers[str(k)], agent.enc_buffers[str(k)] = buf, rows[:100]
    for _ in range(400):
        agent._gradient_step(*agent._sample())
    points = rng.uniform(-0.8, 0.8, (200, 2)).astype(np.float32)
    with torch.no_grad():
        mean, _ = agent.nets.policy(torch.cat([torch.from_numpy(points), torch.zeros(200, agent.config.latent_dim)], 1))
    direction, want = torch.tanh(mean).numpy(), goal - points
    cos = (direction * want).sum(1) / np.linalg.norm(direction, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.mean() > 0.9, cos.mean()


def test_presets_take_oysters_evaluation_exploration():
    """num_exp_traj_eval: cheetah-vel 2, the Dir benchmarks 2, point-robot the default 1."""
    assert cfg.resolve("pearl", "HalfCheetahVel", 1, "paper")["exp_episodes_eval"] == 2
    assert cfg.resolve("pearl", "HalfCheetahVel", 1, "quick")["exp_episodes_eval"] == 2
    assert cfg.resolve("pearl", "HalfCheetahDir", 1, "paper")["exp_episodes_eval"] == 2
    assert cfg.resolve("pearl", "PointNav", 1, "paper")["exp_episodes_eval"] == 1
