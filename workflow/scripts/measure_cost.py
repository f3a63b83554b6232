"""The paper grid's compute cost, from measured per-iteration times (docs/cost.md).

    python workflow/scripts/measure_cost.py                         # every benchmark x algorithm
    python workflow/scripts/measure_cost.py --env PointNav --algo trmrl
    python workflow/scripts/measure_cost.py --like ML45=ML10        # price ML45 at ML10's rates
    python workflow/scripts/measure_cost.py --markdown docs/cost.md  # write the table

For each (benchmark, algorithm), one training iteration at the `paper` preset on the CPU with one
torch thread (`metarl.bench.measure_algo`: a batch of trials collected, then learned from) gives
the seconds per env step of sampling and the seconds of the update. A run's cost is then

    iterations   = total_env_steps / batch steps (meta_batch_size x train_episodes x episode_length)
    train        = iterations x (batch steps x sampling s per step + update s per iteration)
    evaluation   = (iterations / eval_every + 2) x test tasks x eval_episodes x episode_length
                   x sampling s per step, plus the config's extra splits once (OOD, sweep)

in CPU-seconds (one thread: the CPU time of a run on more threads is at least this). Evaluation
is priced at the training sampling rate (its actions are deterministic, so it is no cheaper to
simulate). The per-seed figure times the config's seeds (config/config.yaml) gives the grid.
These are estimates from one iteration each, on the machine the script runs on.

Where a paper iteration takes minutes, a shorter one is measured and scaled (`_shorter`), both
linear by construction: PEARL's update is `grad_steps` identical gradient steps, so it is timed
on 40 and scaled by grad_steps / 40; Meta-World's batch is collected from fewer tasks
(`meta_batch_size` 5, or the benchmark's task multiple). So the rates kept are seconds per
sampled env step and update seconds per env step of the batch actually collected (per gradient
step for PEARL), and a paper iteration is priced with every episode at full length. VariBAD learns
nothing until `precollect_steps` have been collected, so it is measured with that warm-up set to
0 (`WARM`): its measured iteration is one of the learning ones. `--like ML45=ML10` prices a
benchmark with another's measured per-step rates (ML45's iteration, 45 tasks x 10 episodes x
500 steps, takes minutes to sample per algorithm); its rows say so.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ALGORITHMS = ("trmrl", "rl2", "maml_trpo", "pearl", "varibad")
# settings that make the one measured iteration a learning one (the first would skip the update)
WARM = {"varibad": {"precollect_steps": 0}}
PEARL_GRAD_STEPS = 40  # PEARL's update timed on this many gradient steps, then scaled
METAWORLD_TASKS = 5  # Meta-World batches collected from this many tasks (or the task multiple)


def _paper(algo: str, bench_id: str) -> dict:
    from metarl import config as cfg

    return cfg.resolve(algo, bench_id, 0, "paper", overrides={"device": "cpu", "threads": 1})


def _shorter(algo: str, bench, resolved: dict) -> tuple[dict, int]:
    """Settings of the measured iteration, and its gradient steps (PEARL)."""
    settings = dict(WARM.get(algo, {}))
    if bench.has_success:  # Meta-World: fewer tasks per batch
        settings["meta_batch_size"] = min(resolved["meta_batch_size"], max(METAWORLD_TASKS, bench.task_multiple))
    grad_steps = resolved.get("grad_steps", 0)
    if algo == "pearl" and grad_steps > PEARL_GRAD_STEPS:
        settings["grad_steps"] = grad_steps = PEARL_GRAD_STEPS
    return settings, grad_steps


def measure(algo: str, bench_id: str, device: str = "cpu", threads: int = 1) -> dict:
    """Seconds per sampled env step, and of the update per env step (per gradient step for
    PEARL, whose update does not depend on the batch), measured here on `device`."""
    import torch

    from metarl.bench import measure_algo
    from metarl.envs import get_benchmark

    torch.set_num_threads(threads)
    bench = get_benchmark(bench_id)
    settings, grad_steps = _shorter(algo, bench, _paper(algo, bench_id))
    start, timed = time.perf_counter(), {}
    measure_algo(algo, bench_id, "paper", 1.0, 1.0, count_flops=False, threads=threads, settings=settings,
                 device=device, timings=timed)
    rates = {"sample_s_per_step": timed["sample_s"] / timed["env_steps"],
             "measured_in_s": time.perf_counter() - start}
    if algo == "pearl":
        rates["update_s_per_grad_step"] = timed["update_s"] / grad_steps
    else:  # over the batch actually collected (episodes that end early make it shorter)
        rates["update_s_per_step"] = timed["update_s"] / timed["env_steps"]
    return rates


def run_cost(algo: str, bench_id: str, seeds: int, extra_splits: list[str], rates: dict,
             like: str | None = None) -> dict:
    """A run's cost on `bench_id` from `rates` (measure()'s, of `like` where given), with every
    episode at full length (falls make more, shorter batches: PEARL's cost then grows)."""
    from metarl.envs import get_benchmark

    bench = get_benchmark(bench_id)
    resolved = _paper(algo, bench_id)
    batch = resolved["meta_batch_size"] * bench.train_episodes * bench.episode_length
    if algo == "pearl":
        update_s = resolved["grad_steps"] * rates["update_s_per_grad_step"]
    else:
        update_s = batch * rates["update_s_per_step"]
    iteration_s = batch * rates["sample_s_per_step"] + update_s
    iterations = -(-resolved["total_env_steps"] // batch)
    train_s = iterations * iteration_s
    n_test = len(bench.split("test"))
    if resolved.get("eval_tasks"):
        n_test = min(n_test, resolved["eval_tasks"])
    evaluations = iterations // resolved["eval_every"] + 2
    eval_steps = evaluations * n_test * bench.eval_episodes * bench.episode_length
    eval_steps += sum(len(bench.split(s)) * bench.eval_episodes * bench.episode_length for s in extra_splits)
    eval_s = eval_steps * rates["sample_s_per_step"]
    return {"benchmark": bench_id, "algorithm": algo, "batch_steps": batch, "iterations": iterations,
            "iteration_s": iteration_s, "train_h": train_s / 3600, "eval_h": eval_s / 3600,
            "run_h": (train_s + eval_s) / 3600, "seeds": seeds, "grid_h": seeds * (train_s + eval_s) / 3600,
            "like": like, "measured_in_s": rates["measured_in_s"]}


def markdown(rows: list[dict]) -> str:
    out = ["| Benchmark | Algorithm | batch steps | iterations | s / iteration | CPU-h train | CPU-h eval | "
           "CPU-h per seed | seeds | CPU-h all seeds |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = f"{r['benchmark']} (at {r['like']}'s rates)" if r["like"] else r["benchmark"]
        out.append(f"| {name} | {r['algorithm']} | {r['batch_steps']:,} | {r['iterations']:,} | "
                   f"{r['iteration_s']:.2f} | {r['train_h']:,.1f} | {r['eval_h']:,.1f} | {r['run_h']:,.1f} | "
                   f"{r['seeds']} | {r['grid_h']:,.0f} |")
    total = sum(r["grid_h"] for r in rows)
    out.append(f"| **total** | | | | | | | | | **{total:,.0f}** |")
    return "\n".join(out) + "\n"


RUNTIME_MARGIN = 1.2  # a train job's time limit: the estimate x this, in whole hours ...
RUNTIME_CAP_MIN = 2880  # ... at most 48 h (a common partition limit); longer runs resume over retries


def runtimes(rows: list[dict]) -> str:
    """`resources.train.runs.paper` entries for config/config.yaml: each run's time limit (minutes)
    from its one-thread CPU estimate, and the attempts the longest one needs at the cap."""
    out = []
    for r in rows:
        minutes = min(RUNTIME_CAP_MIN, 60 * max(1, math.ceil(r["run_h"] * RUNTIME_MARGIN)))
        out.append(f'        {r["benchmark"]}/{r["algorithm"]}: {{runtime: {minutes}}}'
                   f'  # {r["run_h"]:,.1f} CPU-h')
    attempts = max(math.ceil(r["run_h"] * RUNTIME_MARGIN * 60 / RUNTIME_CAP_MIN) for r in rows)
    out.append(f"# the longest run needs {attempts} attempts of {RUNTIME_CAP_MIN} min on one thread of this CPU")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", action="append", help="benchmark (repeatable; default: every one in config.yaml)")
    parser.add_argument("--algo", action="append", help="algorithm (repeatable; default: the five learners)")
    parser.add_argument("--like", action="append", default=[], metavar="B=A",
                        help="price benchmark B with benchmark A's measured rates instead of measuring B")
    parser.add_argument("--save-rates", type=Path, help="write the measured rates to this JSON file")
    parser.add_argument("--rates", type=Path, action="append", default=[],
                        help="use rates saved by --save-rates (repeatable) instead of measuring them again")
    parser.add_argument("--markdown", type=Path, help="write the table to this file's marked section")
    parser.add_argument("--runtimes", action="store_true",
                        help="also print resources.train.runs entries (time limits) for config/config.yaml")
    args = parser.parse_args(argv)
    grid = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    like = dict(pair.split("=", 1) for pair in args.like)
    benches = args.env or grid["benchmarks"]
    known = {k: v for f in args.rates for k, v in json.loads(f.read_text()).items()}
    measured, rows = {}, []
    for bench_id in benches:
        seeds = len(grid["seeds"].get(bench_id, grid["seeds"]["default"]))
        extra = list(grid.get("eval_splits", {}).get(bench_id, []))
        for algo in args.algo or ALGORITHMS:
            key = f"{like.get(bench_id, bench_id)}/{algo}"
            if key not in known:
                known[key] = measured[key] = measure(algo, like.get(bench_id, bench_id))
                if args.save_rates:  # after each one: an interrupted measurement keeps what it has
                    args.save_rates.write_text(json.dumps(measured, indent=1) + "\n")
            r = run_cost(algo, bench_id, seeds, extra, known[key], like.get(bench_id))
            rows.append(r)
            print(f"{bench_id:15s} {algo:10s} {r['iteration_s']:8.2f} s/iteration  {r['run_h']:8.1f} CPU-h per seed "
                  f"(measured in {r['measured_in_s']:.0f} s)", file=sys.stderr, flush=True)
    table = markdown(rows)
    if args.markdown:
        text = args.markdown.read_text()
        begin, end = "<!-- cost table: measure_cost.py -->", "<!-- end cost table -->"
        head, rest = text.split(begin, 1)
        args.markdown.write_text(head + begin + "\n" + table + end + rest.split(end, 1)[1])
    print(table)
    if args.runtimes:
        print(runtimes(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
