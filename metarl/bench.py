"""`metarl bench`: sampling throughput as a ratio to the raw simulator, measured in one run.

Measures, per benchmark, in env steps per second (all with `--slots` tasks at once):

- `raw`: the benchmark's own environments stepped directly in a plain loop with pre-drawn
  random actions (a terminated slot is reset): no tokens, no policy, no storage. The ceiling
  for the sampler.
- `sampler_random`: the trial sampler (`run_trials`) driving the random agent.
- `sampler_mlp`: the trial sampler driving a 2x64 tanh MLP Gaussian policy on the RL² tokens
  (one batched torch call per step, log-probabilities stored), i.e. what a PPO agent costs.

Each measurement is repeated (`ROUNDS`, interleaved) and the best rate is kept, since this
kind of machine is noisy. Timings are printed, never written into a run.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from metarl.agent import Agent, AgentConfig, EnvSpec, RandomAgent, TrialSpec
from metarl.envs import get_benchmark
from metarl.envs.base import Benchmark
from metarl.sampling import run_trials

DEFAULT_BENCHMARKS = ("PointNav", "HalfCheetahVel", "HalfCheetahDir", "AntDir", "HumanoidDir")
ROUNDS = 3


class MLPAgent(Agent):
    """A 2x64 tanh MLP Gaussian policy on RL² tokens; only used to price the sampler."""

    def __init__(self, config: AgentConfig, env: EnvSpec, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self.net = nn.Sequential(
            nn.Linear(env.token_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, env.act_dim)
        )
        self.log_std = nn.Parameter(torch.zeros(env.act_dim))
        self.generator = torch.Generator().manual_seed(seed)

    def start_trial(self, n, spec):
        pass

    @torch.inference_mode()
    def act(self, tokens, deterministic):
        # The layers called directly: nn.Module dispatch costs more than the maths at batch 20.
        l1, l2, l3 = self.net[0], self.net[2], self.net[4]
        h = torch.tanh(torch.addmm(l1.bias, torch.from_numpy(tokens), l1.weight.t()))
        h = torch.tanh(torch.addmm(l2.bias, h, l2.weight.t()))
        mean = torch.addmm(l3.bias, h, l3.weight.t())
        std = self.log_std.exp()
        noise = torch.randn(mean.shape, generator=self.generator)
        if deterministic.any():
            noise[torch.from_numpy(deterministic)] = 0.0
        action = torch.addcmul(mean, std, noise)
        log_norm = self.log_std.sum() + 0.5 * math.log(2 * math.pi) * self.env.act_dim
        logp = noise.square().sum(-1).mul_(-0.5).sub_(log_norm)
        return action.numpy(), {"logp": logp.numpy()}

    def update(self, batch):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _raw_rate(bench: Benchmark, slots: int, steps: int) -> float:
    env = bench.make_env(slots)
    rng = np.random.default_rng(0)
    env.set_tasks(bench.sample_train_tasks(rng, slots), [np.random.default_rng(k) for k in range(slots)])
    every = np.arange(slots)
    active = np.ones(slots, bool)
    low, high = env.action_low, env.action_high
    actions = rng.uniform(low, high, size=(bench.episode_length, slots, bench.act_dim)).astype(np.float32)
    n_iters = max(1, steps // slots)
    start = time.perf_counter()
    env.reset(every)
    t = 0
    for _ in range(n_iters):
        _, _, terminated, _ = env.step(actions[t], active)
        t += 1
        if t == bench.episode_length:
            env.reset(every)
            t = 0
        elif terminated.any():  # a fallen robot is reset, as in an episode (lying is costlier to simulate)
            env.reset(np.flatnonzero(terminated))
    elapsed = time.perf_counter() - start
    env.close()
    return n_iters * slots / elapsed


def _sampler_rate(bench: Benchmark, agent: Agent, slots: int, steps: int) -> float:
    env = bench.make_env(slots)
    spec = TrialSpec.for_training(bench)
    done, it = 0, 0
    start = time.perf_counter()
    while done < steps:
        rng = np.random.default_rng(it)
        tasks = bench.sample_train_tasks(rng, slots)
        batch = run_trials(env, agent, tasks, spec, [np.random.default_rng([it, k]) for k in range(slots)])
        done += batch.env_steps
        it += 1
    elapsed = time.perf_counter() - start
    env.close()
    return done / elapsed


def measure(bench_id: str, slots: int, steps: int) -> list[tuple[str, str, float, float]]:
    bench = get_benchmark(bench_id)
    if slots % bench.task_multiple:
        slots = bench.task_multiple * max(1, slots // bench.task_multiple)
    spec = EnvSpec.of(bench)
    torch.manual_seed(0)
    agents = {
        "sampler_random": RandomAgent(AgentConfig(slots), spec, torch.device("cpu"), 0),
        "sampler_mlp": MLPAgent(AgentConfig(slots), spec, torch.device("cpu"), 0),
    }
    best = {"raw": 0.0, **{k: 0.0 for k in agents}}
    for _ in range(ROUNDS):
        best["raw"] = max(best["raw"], _raw_rate(bench, slots, steps))
        for name, agent in agents.items():
            best[name] = max(best[name], _sampler_rate(bench, agent, slots, steps))
    raw = best["raw"]
    return [(bench_id, name, rate, rate / raw) for name, rate in best.items()]


def measure_algo(algo: str, bench_id: str, preset: str, raw: float) -> list[tuple[str, str, float, float]]:
    """`<algo>_sampling` and `<algo>_update`: env steps per second of one training batch of the
    algorithm (its `preset` settings, CPU), collected and then learned from."""
    from metarl import config as cfg
    from metarl.seeding import env_rngs, task_rng
    from metarl.setup import build_agent, prepare

    setup = prepare(cfg.resolve(algo, bench_id, 0, preset, overrides={"device": "cpu"}))
    agent = build_agent(setup)
    torch.set_num_threads(setup.run.threads)
    bench, n = setup.benchmark, setup.agent_config.meta_batch_size
    env = bench.make_env(n)
    start = time.perf_counter()
    batch = run_trials(env, agent, bench.sample_train_tasks(task_rng(0, 1), n), TrialSpec.for_training(bench),
                       env_rngs(0, 1, n))
    sampled = time.perf_counter()
    agent.update(batch)
    updated = time.perf_counter()
    env.close()
    sampling = batch.env_steps / (sampled - start)
    update = batch.env_steps / (updated - sampled)
    return [(bench_id, f"{algo}_sampling", sampling, sampling / raw), (bench_id, f"{algo}_update", update, update / raw)]


def run_bench(args) -> int:
    torch.set_num_threads(args.threads)
    names = args.env or list(DEFAULT_BENCHMARKS)
    for name in names:
        get_benchmark(name)  # unknown IDs fail before any measuring
    if args.algo:
        from metarl.registry import get_agent_class

        for algo in args.algo:
            get_agent_class(algo)
    if args.format == "csv":
        print("benchmark,measure,steps_per_s,ratio_to_raw", flush=True)
    else:
        print(f"{'benchmark':16s} {'measure':16s} {'steps/s':>12s} {'ratio to raw':>13s}", flush=True)
    for name in names:
        rows = measure(name, args.slots, args.steps)
        for algo in args.algo or []:
            rows += measure_algo(algo, name, args.preset, rows[0][2])
        for bench_id, measure_name, rate, ratio in rows:
            if args.format == "csv":
                print(f"{bench_id},{measure_name},{rate:.1f},{ratio:.3f}", flush=True)
            else:
                print(f"{bench_id:16s} {measure_name:16s} {rate:12,.0f} {ratio:13.2f}", flush=True)
    return 0
