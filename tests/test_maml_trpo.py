"""MAML-TRPO: the TRPO step keeps the KL bound (shrinking the step when the full one breaks it),
the inner step adapts and carries a second-order term, evaluation takes the mean when asked,
and the state round-trips."""

from __future__ import annotations

import numpy as np
import torch

from baselines.maml_trpo import conjugate_gradient
from metarl import config as cfg
from metarl.agent import TrialSpec
from metarl.learning import gaussian_kl
from metarl.sampling import run_trials
from metarl.seeding import env_rngs, task_rng
from metarl.setup import build_agent, prepare


def _agent(**overrides):
    setup = prepare(cfg.resolve("maml_trpo", "PointNav", 1, "smoke", overrides={"device": "cpu", **overrides}))
    return setup, build_agent(setup)


def _train_batch(setup, agent, n=4, iteration=1):
    bench = setup.benchmark
    env = bench.make_env(n)
    tasks = bench.sample_train_tasks(task_rng(1, iteration), n)
    return run_trials(env, agent, tasks, TrialSpec(bench.train_episodes, 0, True, 0, bench.episode_length),
                      env_rngs(1, iteration, n))


def _measured_kl(agent, rows, theta_old):
    """Mean KL(adapted old ‖ adapted new) over each task's post-update steps, computed here."""
    theta_new = [p.detach().clone() for p in agent._theta()]
    with torch.no_grad():
        for p, q in zip(agent._theta(), theta_old):
            p.copy_(q)
    old = agent._logp(agent._adapt(agent._theta(), rows, create_graph=False), rows)
    with torch.no_grad():
        for p, q in zip(agent._theta(), theta_new):
            p.copy_(q)
    new = agent._logp(agent._adapt(agent._theta(), rows, create_graph=False), rows)
    kl = gaussian_kl(old[1], old[2][:, None], new[1], new[2][:, None])
    per_task = (kl * rows.mask_out).sum(1).view(-1, rows.task_steps.shape[0]).sum(0) / rows.task_steps
    return float(per_task.mean().detach())


def test_conjugate_gradient_solves_spd_system():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6))
    m = torch.tensor(a @ a.T + 6 * np.eye(6))
    b = torch.tensor(rng.standard_normal(6))
    x = conjugate_gradient(lambda v: m @ v, b, iters=20)
    torch.testing.assert_close(m @ x, b)


def test_trpo_step_respects_the_kl_bound():
    setup, agent = _agent(max_kl=0.01)
    rows = agent._outer_rows(_train_batch(setup, agent))
    before = [p.detach().clone() for p in agent._theta()]
    metrics = agent.trpo_step(rows)
    moved = any(not torch.equal(p, q) for p, q in zip(agent._theta(), before))
    assert moved and metrics["loss_after"] < metrics["loss_before"]
    kl = _measured_kl(agent, rows, before)
    assert 0 < kl <= 0.01
    assert abs(kl - metrics["kl"]) < 1e-6


def test_line_search_shrinks_a_step_that_breaks_the_bound():
    # A trust region far beyond where the quadratic model of the KL holds: the full step's true
    # KL exceeds the bound, so the line search must shrink it until the bound holds. (Whether the
    # quadratic model under- or overestimates depends on the batch: iteration 2's underestimates.)
    setup, agent = _agent(max_kl=2.0, max_backtracks=30)
    rows = agent._outer_rows(_train_batch(setup, agent, iteration=2))
    before = [p.detach().clone() for p in agent._theta()]
    metrics = agent.trpo_step(rows)
    assert metrics["kl_full_step"] > 2.0
    assert metrics["backtracks"] >= 1
    assert _measured_kl(agent, rows, before) <= 2.0


def test_inner_step_adapts_with_a_second_order_term():
    setup, agent = _agent()
    rows = agent._outer_rows(_train_batch(setup, agent))
    theta = agent._theta()
    phi = agent._adapt(theta, rows, create_graph=True)
    assert all(not torch.allclose(f, t.expand_as(f)) for f, t in zip(phi, theta))  # every tensor moved

    def outer_grad(create_graph):
        loss, _, _ = agent._surrogate(agent._adapt(theta, rows, create_graph=create_graph), rows)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, theta)])

    second, first = outer_grad(True), outer_grad(False)
    # the outer gradient flows back through the inner step: the Hessian term is not zero
    assert torch.isfinite(second).all() and (second - first).abs().max() > 1e-4 * first.abs().max()
    # first order: dφ/dθ = I, so the gradient w.r.t. θ equals the gradient w.r.t. φ summed over tasks
    phi_fo = [p.detach().requires_grad_() for p in agent._adapt(theta, rows, create_graph=False)]
    loss, _, _ = agent._surrogate(phi_fo, rows)
    by_phi = torch.cat([g.sum(0).reshape(-1) for g in torch.autograd.grad(loss, phi_fo)])
    torch.testing.assert_close(first, by_phi)


def test_trial_adapts_after_the_exploration_episodes():
    """Within a trial: episode 0 runs θ; the next runs the policy adapted on it."""
    setup, agent = _agent()
    bench = setup.benchmark
    env = bench.make_env(3)
    tasks = bench.split("test")[:3]
    seen = []

    class Spy:
        def __getattr__(self, name):
            return getattr(agent, name)

        def start_episode(self, slots):
            seen.append([p.clone() for p in agent._slot_params])
            agent.start_episode(slots)

    run_trials(env, Spy(), tasks, TrialSpec(3, 0, False, 5, bench.episode_length), env_rngs(1, 0, 3))
    theta = agent._theta()
    assert all(torch.equal(s[0], t.detach().expand_as(s[0])) for s, t in zip(seen[0], theta))
    assert not torch.equal(seen[1][-2], seen[0][-2])  # adapted before episode 1


def test_evaluation_takes_the_mean_when_asked():
    setup, agent = _agent(stochastic_exploration=False)
    bench = setup.benchmark
    env = bench.make_env(4)
    tasks = bench.split("test")[:4]
    runs = [run_trials(env, agent, tasks, TrialSpec(3, 0, False, seed, bench.episode_length),
                       env_rngs(1, 0, 4)) for seed in (11, 12)]
    np.testing.assert_array_equal(runs[0].actions, runs[1].actions)  # no noise anywhere
    # the first action of each trial is θ's mean at the start state
    start = torch.from_numpy(runs[0].obs[:, 0][:, None])
    with torch.no_grad():
        mean, _ = agent._forward([p.detach().unsqueeze(0).expand(4, *p.shape) for p in agent._theta()], start)
    np.testing.assert_allclose(runs[0].actions[:, 0], mean[:, 0].numpy(), rtol=1e-6, atol=1e-7)

    # by default the pre-update episode still samples (MAML adapts on it); the adapted ones take
    # the mean of the policy adapted on it (the mean-only episodes add nothing to adapt on)
    _, agent = _agent()
    runs = [run_trials(env, agent, tasks, TrialSpec(3, 0, False, seed, bench.episode_length),
                       env_rngs(1, 0, 4)) for seed in (11, 12)]
    first = runs[0].episode == 0
    assert not np.array_equal(runs[0].actions[first], runs[1].actions[first])
    later = runs[1].episode >= 1
    obs = torch.from_numpy(np.ascontiguousarray(runs[1].obs))
    with torch.no_grad():
        mean, _ = agent._forward(agent._slot_params, obs)
    np.testing.assert_allclose(runs[1].actions[later], mean.numpy()[later], rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip():
    setup, a = _agent()
    a.update(_train_batch(setup, a))
    state = a.state_dict()
    _, b = _agent()
    b.load_state_dict(state)
    for p, q in zip(a._theta(), b._theta()):
        assert torch.equal(p, q)
    batch_a, batch_b = _train_batch(setup, a, iteration=2), _train_batch(setup, b, iteration=2)
    np.testing.assert_array_equal(batch_a.actions, batch_b.actions)  # same noise stream
    assert a.update(batch_a) == b.update(batch_b)
    for p, q in zip(a._theta(), b._theta()):
        assert torch.equal(p, q)


def test_env_gets_scaled_clipped_actions_and_gradients_the_policys_own():
    """garage's normalize(expected_action_scale=10): the env gets clip(0.1 a) on MuJoCo; the
    log-probabilities, the adaptation and the outer step use the unclipped sample a."""
    setup = prepare(cfg.resolve("maml_trpo", "HalfCheetahVel", 1, "smoke",
                                overrides={"device": "cpu", "init_std": 20.0}))
    assert setup.agent_config.action_scale == 0.1
    agent = build_agent(setup)
    batch = _train_batch(setup, agent, n=2)
    raw = batch.extras["policy_action"][batch.valid]
    assert np.abs(0.1 * raw).max() > 1.0  # std 20 (policy units): some actions are clipped
    np.testing.assert_array_equal(batch.actions[batch.valid], np.clip(np.float32(0.1) * raw, -1.0, 1.0))
    rows = agent._outer_rows(batch)
    np.testing.assert_array_equal(rows.actions.numpy()[: batch.n], batch.extras["policy_action"])
    # the stored behaviour log-probabilities are those of the raw samples under θ
    theta = [p.detach().unsqueeze(0).expand(batch.n, *p.shape) for p in agent._theta()]
    first = torch.from_numpy(batch.episode == 0)
    with torch.no_grad():
        logp, _, _ = agent._logp(theta, rows.__class__(rows.obs[: batch.n], rows.actions[: batch.n],
                                                       rows.logp_b[: batch.n], rows.adv_in[: batch.n],
                                                       rows.mask_in[: batch.n]))
    np.testing.assert_allclose(logp[first].numpy(), batch.extras["logp"][batch.episode == 0], rtol=1e-5, atol=1e-4)


def test_mujoco_presets_scale_actions_as_garage():
    for env in ("HalfCheetahVel", "HalfCheetahDir", "AntDir", "HumanoidDir"):
        assert cfg.resolve("maml_trpo", env, 1, "paper")["action_scale"] == 0.1
    for env in ("PointNav", "ML1-reach", "ML10", "ML45"):
        assert cfg.resolve("maml_trpo", env, 1, "paper")["action_scale"] == 1.0
