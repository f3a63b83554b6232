"""VariBAD: the ELBO terms against hand computations, the detached belief (no RL gradient into
the encoder), the belief carried across the episodes of a trial and reset at its start, the done
flag in every state the agent sees, the separate gradient clips of encoder and decoders, the
HumanoidDir preset, and an exact state_dict round trip including the VAE's trial buffer."""

from __future__ import annotations

import io

import numpy as np
import torch

from baselines.varibad import TrialBuffer
from metarl import config as cfg
from metarl.agent import TrialSpec
from metarl.sampling import run_trials
from metarl.seeding import env_rngs, task_rng
from metarl.setup import build_agent, prepare


def _agent(seed: int = 1, **overrides):
    setup = prepare(cfg.resolve("varibad", "PointNav", seed, "smoke", overrides={"device": "cpu", **overrides}))
    return setup, build_agent(setup)


def _trials(setup, agent, iteration: int = 1):
    bench, n = setup.benchmark, setup.agent_config.meta_batch_size
    env = bench.make_env(n)
    try:
        tasks = bench.sample_train_tasks(task_rng(1, iteration), n)
        return run_trials(env, agent, tasks, TrialSpec(bench.train_episodes, 0, True, 0, bench.episode_length),
                          env_rngs(1, iteration, n))
    finally:
        env.close()


def _tiny_batch(obs_dim=3, act_dim=2, lengths=(4, 3), steps=4, seed=0):  # PointNav: 2-d obs + done flag
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    prev_obs = torch.randn(b, steps, obs_dim, generator=g)
    actions = torch.randn(b, steps, act_dim, generator=g)
    rewards = torch.randn(b, steps, generator=g)
    next_obs = torch.randn(b, steps, obs_dim, generator=g)
    for i, n in enumerate(lengths):  # zero padding, as in the buffer
        for x in (prev_obs, actions, rewards, next_obs):
            x[i, n:] = 0.0
    return prev_obs, actions, rewards, next_obs, np.array(lengths)


def _constant_networks(agent):
    """Decoder prediction 0.3; every belief q_t = N(m, e^v) with m = (0.5, −1), v = (0.2, −0.4),
    so only q_0 has a KL (to N(0, I)): 0.5 Σ (−v − 1 + e^v + m²)."""
    with torch.no_grad():
        for p in agent.reward_decoder.parameters():
            p.zero_()
        agent.reward_decoder.net[-1].bias.fill_(0.3)
        for head, value in ((agent.encoder.mu, [0.5, -1.0]), (agent.encoder.logvar, [0.2, -0.4])):
            head.weight.zero_()
            head.bias.copy_(torch.tensor(value))
    m, v = np.array([0.5, -1.0]), np.array([0.2, -0.4])
    return 0.5 * (-v - 1 + np.exp(v) + m**2).sum()


def test_elbo_terms_closed_form_with_constant_networks():
    """Reconstruction = Σ_trials (len+1) Σ_j (c − r_j)² / B (every q_t decodes the whole trial);
    KL: per trial KL_0, averaged over the B trials, or (the reference's reduction) summed."""
    for reference in (False, True):
        _, agent = _agent(vae_subsample_elbos=0, vae_subsample_decodes=0, tbptt_steps=0, kl_reference_sum=reference)
        kl0 = _constant_networks(agent)
        prev_obs, actions, rewards, next_obs, lengths = _tiny_batch()
        rew, state, kl = agent.elbo_terms(prev_obs, actions, rewards, next_obs, lengths, torch.Generator().manual_seed(0))
        r = rewards.double().numpy()
        expected_rew = np.mean([(n + 1) * ((0.3 - r[i, :n]) ** 2).sum() for i, n in enumerate(lengths)])
        np.testing.assert_allclose(float(rew.detach()), expected_rew, rtol=1e-5)
        np.testing.assert_allclose(float(kl.detach()), kl0 * (len(lengths) if reference else 1), rtol=1e-5)
        assert float(state) == 0.0


def test_subsampled_kl_reductions():
    """Sampled ELBO terms: per trial, KL_0 for every sampled q_0, averaged over trials; the
    reference's indexing charges every sampled term (of any trial) to each of the B trials."""
    lengths, samples = np.array([4, 3]), 6
    for reference in (False, True):
        _, agent = _agent(vae_subsample_elbos=samples, vae_subsample_decodes=2, kl_reference_sum=reference)
        kl0 = _constant_networks(agent)
        prev_obs, actions, rewards, next_obs, _ = _tiny_batch()
        _, _, kl = agent.elbo_terms(prev_obs, actions, rewards, next_obs, lengths, torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)  # replay the draws: the reparameterisation noise, then the terms
        torch.randn(2, 5, agent.config.latent_dim, generator=g)
        terms = (torch.rand(2, samples, generator=g) * torch.as_tensor(lengths + 1)[:, None]).long()
        zeros = int((terms == 0).sum())
        expected = kl0 * (2 * zeros if reference else zeros / 2)
        np.testing.assert_allclose(float(kl.detach()), expected, rtol=1e-5)
        assert zeros > 0


def test_elbo_terms_match_a_step_by_step_computation():
    """Random networks: every q_t from stepping the GRU by hand, the same reparameterisation
    noise, every q_t decoding the whole trial, KL to the previous posterior in closed form."""
    _, agent = _agent(vae_subsample_elbos=0, vae_subsample_decodes=0, tbptt_steps=2, decode_state=True,
                      kl_reference_sum=False)
    prev_obs, actions, rewards, next_obs, lengths = _tiny_batch()
    rew, state, kl = agent.elbo_terms(prev_obs, actions, rewards, next_obs, lengths, torch.Generator().manual_seed(5))
    enc, dec, sdec = agent.encoder, agent.reward_decoder, agent.state_decoder
    b, steps = rewards.shape
    noise = torch.randn(b, steps + 1, agent.config.latent_dim, generator=torch.Generator().manual_seed(5))
    exp_rew = exp_state = exp_kl = 0.0
    with torch.no_grad():
        for i, n in enumerate(lengths):
            h = torch.zeros(1, 1, agent.config.encoder_hidden)
            beliefs = [enc.heads(h[0, 0])]
            for t in range(steps):
                h = enc.step(actions[i, t : t + 1], next_obs[i, t : t + 1], rewards[i, t : t + 1], h)
                beliefs.append(enc.heads(h[0, 0]))
            prior = (torch.zeros(agent.config.latent_dim), torch.zeros(agent.config.latent_dim))
            for t in range(n + 1):
                mean, logvar = beliefs[t]
                z = mean + (0.5 * logvar).exp() * noise[i, t]
                for j in range(n):
                    pred = dec(z, prev_obs[i, j], actions[i, j], next_obs[i, j])
                    exp_rew += float((pred - rewards[i, j]) ** 2) / b
                    exp_state += float((sdec(z, prev_obs[i, j], actions[i, j]) - next_obs[i, j]).pow(2).mean()) / b
                q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
                p = torch.distributions.Normal(prior[0], (0.5 * prior[1]).exp())
                exp_kl += float(torch.distributions.kl_divergence(q, p).sum()) / b
                prior = (mean, logvar)
    np.testing.assert_allclose(float(rew.detach()), exp_rew, rtol=1e-4)
    np.testing.assert_allclose(float(state.detach()), exp_state, rtol=1e-4)
    np.testing.assert_allclose(float(kl.detach()), exp_kl, rtol=1e-4)


def test_subsampled_elbo_counts_terms():
    """Subsampling: S ELBO terms x D decodes per trial; with a constant decoder and constant
    targets the reconstruction is exactly S·D·(c − r)²."""
    _, agent = _agent(vae_subsample_elbos=7, vae_subsample_decodes=3)
    with torch.no_grad():
        for p in agent.reward_decoder.parameters():
            p.zero_()
    prev_obs, actions, _, next_obs, lengths = _tiny_batch()
    rewards = torch.full((2, 4), 2.0)
    rew, _, _ = agent.elbo_terms(prev_obs, actions, rewards, next_obs, lengths, torch.Generator().manual_seed(0))
    assert float(rew.detach()) == 7 * 3 * 4.0


def test_policy_gradient_does_not_reach_the_encoder():
    setup, agent = _agent()
    obs = torch.randn(3, agent.state_dim)
    agent._h = torch.randn(1, 3, agent.config.encoder_hidden)
    mean, value = agent._policy(obs, agent.belief())  # the belief as a differentiable function of the encoder
    (mean.sum() + value.sum()).backward()
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert all(p.grad is not None for p in agent.policy.actor.parameters())
    # a whole update without VAE steps leaves the encoder as it was and changes the policy
    setup, agent = _agent(vae_updates=0)
    batch = _trials(setup, agent)
    encoder = {k: v.clone() for k, v in agent.encoder.state_dict().items()}
    policy = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    agent.update(batch)
    assert all(torch.equal(encoder[k], v) for k, v in agent.encoder.state_dict().items())
    assert not all(torch.equal(policy[k], v) for k, v in agent.policy.state_dict().items())
    agent.config.vae_updates = 1  # the VAE step is what trains the encoder
    agent.update(batch)
    assert not all(torch.equal(encoder[k], v) for k, v in agent.encoder.state_dict().items())


def test_belief_carries_across_episodes_and_resets_per_trial():
    """The beliefs the rollout acted on are the encoder's q_t over the whole trial's transitions:
    the prior at the trial's first step, the final transition of episode 1 included, the next
    episode's reset state never encoded, nothing reset between episodes."""
    setup, agent = _agent()
    batch = _trials(setup, agent)
    ep_len = setup.benchmark.episode_length
    beliefs = batch.extras["belief"]
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x))  # noqa: E731
    _, next_states = agent.states(batch)
    with torch.no_grad():
        mean, logvar = agent.encoder.sequence(t(batch.actions), t(next_states), t(batch.rewards))
    q = torch.cat([mean, logvar], -1).numpy()  # q_0..q_L
    np.testing.assert_allclose(beliefs, q[:, :-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(beliefs[:, ep_len], q[:, 0])  # not back to the prior at episode 2
    # a new trial starts from the prior again
    agent.start_trial(2, TrialSpec(2, 0, False, 0, ep_len))
    assert torch.count_nonzero(agent._h) == 0
    np.testing.assert_allclose(agent.belief().detach().numpy(), q[:, 0], rtol=1e-6)
    # start_episode keeps the hidden state; the first step of an episode encodes nothing
    tokens = np.random.default_rng(0).standard_normal((2, agent.env.token_dim)).astype(np.float32)
    agent.act(tokens, np.ones(2, bool))
    assert torch.count_nonzero(agent._h) == 0
    agent.act(tokens, np.ones(2, bool))
    h = agent._h.clone()
    assert torch.count_nonzero(h) > 0
    agent.start_episode(np.arange(2))
    agent.act(tokens, np.ones(2, bool))
    assert torch.equal(agent._h, h)


def test_trial_buffer_is_a_ring():
    buf = TrialBuffer(3, 1, 1)
    for k in range(2):
        x = np.full((2, 5, 1), float(k), np.float32)
        buf.add(x, x, x[..., 0], x, np.array([5, 4]))
    assert buf.size == 3 and buf.pos == 1
    assert buf.data[0, 0, 0] == 1.0 and buf.lengths[0] == 4  # the oldest trial was replaced
    assert buf.data[1, 0, 0] == 0.0 and buf.data[2, 0, 0] == 1.0 and buf.lengths[2] == 5


def test_state_dict_round_trip_continues_identically():
    setup, a = _agent()
    a.update(_trials(setup, a, 1))
    state = a.state_dict()
    blob = io.BytesIO()
    torch.save(state, blob)
    blob.seek(0)
    _, b = _agent(seed=7)  # other weights and generators until loaded
    b.load_state_dict(torch.load(blob, weights_only=False))
    assert b.buffer.size == a.buffer.size > 0
    np.testing.assert_array_equal(b.buffer.data[: b.buffer.size], a.buffer.data[: a.buffer.size])
    batch_a, batch_b = _trials(setup, a, 2), _trials(setup, b, 2)
    np.testing.assert_array_equal(batch_a.actions, batch_b.actions)
    assert a.update(batch_a) == b.update(batch_b)
    for name, net in a._nets().items():
        for (k, v), w in zip(net.state_dict().items(), b._nets()[name].state_dict().values()):
            assert torch.equal(v, w), (name, k)


def _spy(obj, name, record, pick):
    """Wrap obj.name (a method) so that every call appends pick(*args) to record."""
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        record.append(pick(*args))
        return original(*args, **kwargs)

    setattr(obj, name, wrapper)


def test_done_flag_in_every_state_the_agent_sees():
    """The reference's VariBadWrapper appends done_mdp to the state: 1.0 on the state returned by
    the step that ended an episode (termination or time limit), 0.0 otherwise; the reset state is
    never seen in training (the wrapper resets the MDP itself), so the first step of a later
    episode acts on the previous episode's final state, flag 1.0. Encoder inputs, decoder inputs,
    the VAE buffer, the policy input and its running state statistics all use these states."""
    setup, agent = _agent(vae_updates=0, vae_subsample_elbos=0, vae_subsample_decodes=0, decode_state=True)
    ep_len, obs_dim = setup.benchmark.episode_length, setup.benchmark.obs_dim
    assert agent.state_dim == obs_dim + 1
    policy_in, encoder_in = [], []
    _spy(agent, "_policy", policy_in, lambda obs, belief: obs.clone().numpy())
    _spy(agent.encoder, "step", encoder_in, lambda actions, next_obs, rewards, h: next_obs.clone().numpy())
    batch = _trials(setup, agent)
    n, steps = batch.n, 2 * ep_len
    assert (batch.lengths == steps).all()  # PointNav never terminates: every trial is 2 x 20 steps
    prev_states, next_states = agent.states(batch)
    flags_next = np.zeros((n, steps))
    flags_next[:, [ep_len - 1, steps - 1]] = 1.0  # the final state of each episode
    flags_prev = np.zeros((n, steps))
    flags_prev[:, ep_len] = 1.0  # the first step of episode 2 acts on episode 1's final state
    np.testing.assert_array_equal(next_states[..., -1], flags_next)
    np.testing.assert_array_equal(prev_states[..., -1], flags_prev)
    np.testing.assert_array_equal(next_states[..., :-1], batch.next_obs)
    np.testing.assert_array_equal(prev_states[:, ep_len, :-1], batch.next_obs[:, ep_len - 1])  # not the reset state
    assert not np.array_equal(batch.obs[:, ep_len], batch.next_obs[:, ep_len - 1])
    np.testing.assert_array_equal(prev_states[:, 1:], next_states[:, :-1])  # s_t is what the last step returned
    # the encoder took exactly the flagged next states, in order (one transition per step)
    np.testing.assert_array_equal(np.stack(encoder_in, 1), next_states)
    # the policy acted on the flagged states, and the update rebuilds the same ones
    np.testing.assert_array_equal(np.stack(policy_in, 1), prev_states)
    # the VAE buffer holds them, and the decoders decode them
    agent.update(batch)
    stored_prev, _, _, stored_next, _ = agent.buffer.get(np.arange(n))
    np.testing.assert_array_equal(stored_prev, prev_states)
    np.testing.assert_array_equal(stored_next, next_states)
    reward_in, state_in = [], []
    _spy(agent.reward_decoder, "forward", reward_in, lambda z, s_prev, act, s_next: (s_prev, s_next))
    _spy(agent.state_decoder, "forward", state_in, lambda z, s_prev, act: s_prev)
    agent._vae_update()  # vae_batch_trials = 2 = the whole buffer, every ELBO term decodes every step
    s_prev, s_next = reward_in[0]
    for term in range(steps + 1):
        np.testing.assert_array_equal(s_prev[:, term].numpy(), prev_states)
        np.testing.assert_array_equal(s_next[:, term].numpy(), next_states)
        np.testing.assert_array_equal(state_in[0][:, term].numpy(), prev_states)
    # the policy's running state statistics include the flag: 1 flagged state per 40 per trial
    assert agent.state_rms.mean.shape == (obs_dim + 1,)
    np.testing.assert_allclose(agent.state_rms.mean[-1], 1 / steps, rtol=1e-4)
    assert agent.policy.state_embed[0].in_features == obs_dim + 1  # the policy input grew by one
    # hide_reset_state off: the first step of episode 2 acts on the reset observation, flag 0.0
    setup, agent = _agent(hide_reset_state=False)
    policy_in = []
    _spy(agent, "_policy", policy_in, lambda obs, belief: obs.clone().numpy())
    batch = _trials(setup, agent)
    prev_states, next_states = agent.states(batch)
    np.testing.assert_array_equal(prev_states[..., -1], 0.0)
    np.testing.assert_array_equal(prev_states[..., :-1], batch.obs)
    np.testing.assert_array_equal(next_states[..., -1], flags_next)
    np.testing.assert_array_equal(np.stack(policy_in, 1), prev_states)


def _applied_vae_gradient_norms(agent) -> dict[str, float]:
    """Gradient norms of encoder and decoders as the VAE's Adam step receives them."""
    norms: dict[str, float] = {}

    def step():
        for name in ("encoder", "reward_decoder", "state_decoder"):
            grads = [p.grad for p in getattr(agent, name).parameters() if p.grad is not None]
            norms[name] = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

    agent.vae_opt.step = step
    agent._vae_update()
    return norms


def test_vae_gradients_are_clipped_per_network():
    """vae.py (compute_vae_loss): clip_grad_norm_ on the encoder, then on each decoder, each to
    its own norm, before the one Adam step; None (here 0) leaves that part unclipped."""
    huge = {"decode_state": True, "reward_loss_coeff": 1e6, "state_loss_coeff": 1e6, "vae_updates": 0}
    setup, agent = _agent(encoder_max_grad_norm=0.5, decoder_max_grad_norm=2.0, **huge)
    batch = _trials(setup, agent)
    agent.update(batch)  # fills the buffer, no VAE step
    state = {k: v.clone() for k, v in agent.encoder.state_dict().items()}
    norms = _applied_vae_gradient_norms(agent)
    np.testing.assert_allclose(norms["encoder"], 0.5, rtol=1e-4)
    np.testing.assert_allclose(norms["reward_decoder"], 2.0, rtol=1e-4)  # each decoder on its own: not a joint 2.0
    np.testing.assert_allclose(norms["state_decoder"], 2.0, rtol=1e-4)
    # encoder clipped, decoders not; then neither
    for enc, dec in ((0.5, 0.0), (0.0, 0.0)):
        agent.config.encoder_max_grad_norm, agent.config.decoder_max_grad_norm = enc, dec
        agent.encoder.load_state_dict(state)
        norms = _applied_vae_gradient_norms(agent)
        if enc:
            np.testing.assert_allclose(norms["encoder"], 0.5, rtol=1e-4)
        else:
            assert norms["encoder"] > 100
        assert norms["reward_decoder"] > 100 and norms["state_decoder"] > 100


def test_gradient_clip_presets_follow_the_reference_configs():
    """encoder/decoder_max_grad_norm: 1.0 in args_{cheetah_vel,cheetah_dir,ant_dir,humanoid_dir}_
    varibad.py (Meta-World takes cheetah_vel's), None in args_pointrobot_varibad.py."""
    for env in ("HalfCheetahVel", "HalfCheetahDir", "AntDir", "HumanoidDir", "ML1-reach", "ML10", "ML45"):
        c = cfg.resolve("varibad", env, 1, "paper")
        assert (c["encoder_max_grad_norm"], c["decoder_max_grad_norm"]) == (1.0, 1.0), env
    c = cfg.resolve("varibad", "PointNav", 1, "paper")
    assert (c["encoder_max_grad_norm"], c["decoder_max_grad_norm"]) == (0.0, 0.0)


def test_humanoid_dir_preset_matches_args_humanoid_dir_varibad():
    """Every setting args_humanoid_dir_varibad.py gives (lmzintgraf/varibad ff26cd48) that the
    agent has, on the suite's 2 x 200-step trial."""
    c = cfg.resolve("varibad", "HumanoidDir", 1, "paper")
    expected = {
        "meta_batch_size": 32,  # policy_num_steps 800 x 16 processes = 12,800 steps = 32 trials of 400
        "policy_state_embed_dim": 0, "policy_latent_embed_dim": 0,  # None: no embedding
        "norm_state": True, "norm_latent": False, "norm_rewards": True,
        "policy_layers": [512, 256], "policy_init": "orthogonal",
        "ppo_epochs": 4, "ppo_minibatches": 2, "clip": 0.1,
        "lr": 7e-4, "adam_eps": 1e-8, "init_std": 1.0, "value_coeff": 0.5, "entropy_coeff": 0.001,
        "discount": 0.99, "gae_lambda": 0.9, "proper_time_limits": True, "max_grad_norm": 0.5,
        "encoder_max_grad_norm": 1.0, "decoder_max_grad_norm": 1.0,
        "vae_lr": 1e-3, "vae_buffer_size": 10000, "precollect_steps": 5000, "vae_batch_trials": 10,
        "tbptt_steps": 0, "vae_subsample_elbos": 100, "vae_subsample_decodes": 100, "vae_updates": 10,
        "kl_weight": 0.1, "kl_to_gauss_prior": False,
        "action_embed_dim": 16, "state_embed_dim": 32, "reward_embed_dim": 16, "encoder_hidden": 128,
        "latent_dim": 10,
        "reward_loss_coeff": 1.0, "decoder_prev_state": True, "decoder_action": True,
        "reward_decoder_layers": [64, 32], "decode_state": False,
        "hide_reset_state": True,
    }
    assert {k: c[k] for k in expected} == expected
    assert 800 * 16 == c["meta_batch_size"] * 2 * 200


def test_done_flag_on_terminated_episodes():
    """An episode cut by termination ends with flag 1.0 like a time-limited one (the reference's
    done_mdp is TimeLimit's done: either), and the next episode's first step acts on it."""
    from metarl.sampling import TrialBatch

    _, agent = _agent()
    batch = TrialBatch.allocate([None], 2, 20, 2, 2)
    ep = [0, 0, 0, 1, 1]  # episode 1 terminated after 3 steps, episode 2 after 2
    for t, e in enumerate(ep):
        batch.obs[0, t] = (t, -t)
        batch.next_obs[0, t] = (t + 0.5, -t - 0.5)
        batch.episode[0, t], batch.step[0, t], batch.valid[0, t] = e, t - 3 * e, True
    batch.terminated[0, [2, 4]] = True
    batch.lengths[0] = 5
    prev_states, next_states = agent.states(batch)
    np.testing.assert_array_equal(next_states[0, :5, -1], [0, 0, 1, 0, 1])
    np.testing.assert_array_equal(prev_states[0, :5, -1], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(prev_states[0, 3], [2.5, -2.5, 1.0])  # episode 1's final state
    assert not next_states[0, 5:].any() and not prev_states[0, 5:, -1].any()  # padding: no flags
