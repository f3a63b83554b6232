"""`metarl bench`: sampling throughput as a ratio to the raw simulator, measured in one run.

Measures, per benchmark, in env steps per second (all with `--slots` tasks at once):

- `raw`: the benchmark's own environments stepped directly in a plain loop with pre-drawn
  random actions (a terminated slot is reset): no tokens, no policy, no storage. The ceiling
  for the sampler.
- `sampler_random`: the trial sampler (`run_trials`) driving the random agent.
- `sampler_mlp`: the trial sampler driving a 2x64 tanh MLP Gaussian policy on the RL² tokens
  (one batched torch call per step, log-probabilities stored), i.e. what a PPO agent costs.
- with `--threads N` > 1, also `raw_threads`, `sampler_random_threads`, `sampler_mlp_threads`:
  the same with the benchmark's environments stepping their slots on N threads (what a run with
  `threads` N samples with), their ratio still to the serial `raw`. Benchmarks whose envs have
  no threaded form (PointNav, Meta-World) measure their serial envs again in these rows.

With `--algo A` (its `--preset` settings, CPU), one training batch of A, collected and learned
from:

- `A_sampling`, `A_update`: env steps per second of collecting the batch and of the update;
- `A_share_simulate`, `A_share_policy`, `A_share_sampler`, `A_share_update`: the share of that
  iteration spent in the simulator (env step/reset), in the agent's calls during sampling (act,
  and the trial/episode hooks where it adapts), in the rest of the sampler (tokens, storage),
  and in the update;
- `A_update_flops`: the update's achieved FLOP rate (matmul-class operations, forward and
  backward, counted by `torch.utils.flop_counter`) with its ratio to `matmul_peak`, the rate of
  a large float32 matmul on the same threads measured in the same run: how far the update is
  from what the CPU can do, i.e. how much of it is per-operation overhead.

Each measurement is repeated (`ROUNDS`, interleaved) and the best rate is kept, since this
kind of machine is noisy. Timings are printed, never written into a run.

Output rows: benchmark, measure, value, unit, ratio, and what the ratio is to (`raw`,
`matmul_peak`, or `iteration` for the shares).
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


def measure(bench_id: str, slots: int, steps: int, threads: int = 1) -> list[tuple[str, str, float, float]]:
    bench = get_benchmark(bench_id)
    if slots % bench.task_multiple:
        slots = bench.task_multiple * max(1, slots // bench.task_multiple)
    spec = EnvSpec.of(bench)
    torch.manual_seed(0)
    agents = {
        "sampler_random": RandomAgent(AgentConfig(slots), spec, torch.device("cpu"), 0),
        "sampler_mlp": MLPAgent(AgentConfig(slots), spec, torch.device("cpu"), 0),
    }
    variants = {"": bench, **({"_threads": bench.with_threads(threads)} if threads > 1 else {})}
    best = {f"{m}{suffix}": 0.0 for suffix in variants for m in ("raw", *agents)}
    for _ in range(ROUNDS):
        for suffix, envs in variants.items():
            best[f"raw{suffix}"] = max(best[f"raw{suffix}"], _raw_rate(envs, slots, steps))
            for name, agent in agents.items():
                best[f"{name}{suffix}"] = max(best[f"{name}{suffix}"], _sampler_rate(envs, agent, slots, steps))
    raw = best["raw"]
    return [(bench_id, name, rate, rate / raw) for name, rate in best.items()]


class _Timed:
    """A callable that adds the time spent in `fn` to `seconds` (bench only)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def matmul_peak(size: int = 1024, seconds: float = 0.3) -> float:
    """FLOP/s of a large float32 matmul on torch's current threads: the CPU's practical peak."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        n += 1
    return 2.0 * size**3 * n / (time.perf_counter() - start)


def _update_flops(agent: Agent, batch) -> float:
    """Matmul-class FLOPs of one update on `batch` (the agent's state moves on: bench only)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        agent.update(batch)
    return float(counter.get_total_flops())


def measure_algo(algo: str, bench_id: str, preset: str, raw: float, peak: float, count_flops: bool = True,
                 threads: int | None = None, settings: dict | None = None, device: str = "cpu",
                 timings: dict | None = None) -> list[tuple]:
    """Sampling and update rates, the iteration's shares and (with `count_flops`: a second,
    slower update under the FLOP counter) the update's FLOP rate of one training batch of `algo`
    with its `preset` settings on `device` (the CPU unless told; see the module docstring). On
    CUDA the first call in a process also pays for starting CUDA: warm up with a small one.
    `timings`, where given, receives the batch's env steps and the sampling and update seconds."""
    from metarl import config as cfg
    from metarl.seeding import env_rngs, task_rng
    from metarl.setup import build_agent, prepare

    overrides = {"device": device, **({"threads": threads} if threads else {}), **(settings or {})}
    setup = prepare(cfg.resolve(algo, bench_id, 0, preset, overrides=overrides))
    agent = build_agent(setup)
    torch.set_num_threads(setup.run.threads)
    bench, n = setup.benchmark, setup.agent_config.meta_batch_size
    env = bench.make_env(n)
    simulate = [_Timed(env.step), _Timed(env.reset)]
    env.step, env.reset = simulate
    policy = [_Timed(getattr(agent, name)) for name in ("act", "start_trial", "start_episode", "end_episode")]
    agent.act, agent.start_trial, agent.start_episode, agent.end_episode = policy
    start = time.perf_counter()
    batch = run_trials(env, agent, bench.sample_train_tasks(task_rng(0, 1), n), TrialSpec.for_training(bench),
                       env_rngs(0, 1, n))
    sampled = time.perf_counter()
    agent.update(batch)
    if setup.device.type == "cuda":
        torch.cuda.synchronize()  # the update's kernels, not only their launches
    updated = time.perf_counter()
    env.close()
    sample_s, update_s = sampled - start, updated - sampled
    if timings is not None:
        timings.update(env_steps=batch.env_steps, sample_s=sample_s, update_s=update_s)
    total = sample_s + update_s
    sim_s, policy_s = sum(t.seconds for t in simulate), sum(t.seconds for t in policy)
    shares = {"simulate": sim_s, "policy": policy_s, "sampler": sample_s - sim_s - policy_s, "update": update_s}
    rows = [(bench_id, f"{algo}_sampling", batch.env_steps / sample_s, "steps/s", batch.env_steps / sample_s / raw, "raw"),
            (bench_id, f"{algo}_update", batch.env_steps / update_s, "steps/s", batch.env_steps / update_s / raw, "raw")]
    rows += [(bench_id, f"{algo}_share_{k}", v / total, "fraction", v / total, "iteration") for k, v in shares.items()]
    if count_flops:
        achieved = _update_flops(agent, batch) / update_s
        rows.append((bench_id, f"{algo}_update_flops", achieved / 1e9, "GFLOP/s", achieved / peak, "matmul_peak"))
    return rows


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
        print("benchmark,measure,value,unit,ratio,relative_to", flush=True)
    else:
        print(f"{'benchmark':16s} {'measure':24s} {'value':>12s} {'unit':9s} {'ratio':>8s}  to", flush=True)
    peak = max(matmul_peak() for _ in range(ROUNDS)) if args.algo else None
    for name in names:
        rows = [(b, m, rate, "steps/s", ratio, "raw")
                for b, m, rate, ratio in measure(name, args.slots, args.steps, args.threads)]
        if peak is not None:
            rows.append((name, "matmul_peak", peak / 1e9, "GFLOP/s", 1.0, "matmul_peak"))
        for algo in args.algo or []:
            rows += measure_algo(algo, name, args.preset, rows[0][2], peak, threads=args.threads)
        for bench_id, measure_name, value, unit, ratio, relative_to in rows:
            if args.format == "csv":
                print(f"{bench_id},{measure_name},{value:.4g},{unit},{ratio:.4g},{relative_to}", flush=True)
            else:
                print(f"{bench_id:16s} {measure_name:24s} {value:12,.4g} {unit:9s} {ratio:8.3g}  {relative_to}", flush=True)
    return 0
