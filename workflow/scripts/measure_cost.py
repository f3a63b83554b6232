"""The paper grid's compute cost, from measured per-iteration times (docs/cost.md).

    python workflow/scripts/measure_cost.py                         # every benchmark x algorithm
    python workflow/scripts/measure_cost.py --env PointNav --algo trmrl
    python workflow/scripts/measure_cost.py --markdown docs/cost.md  # write the table

For each (benchmark, algorithm), one training iteration at the `paper` preset on the CPU with one
torch thread (`metarl.bench.measure_algo`: the batch of `meta_batch_size` trials collected, then
learned from) gives seconds per env step of sampling and of the update. A run's cost is then

    iterations   = total_env_steps / (meta_batch_size x train_episodes x episode_length)
    train        = iterations x (batch steps / sampling rate + batch steps / update rate)
    evaluation   = (iterations / eval_every + 2) x test tasks x eval_episodes x episode_length
                   / sampling rate, plus the config's extra splits once (OOD, sweep)

in CPU-seconds (one thread: the CPU time of a run on more threads is at least this). Evaluation
is priced at the training sampling rate (its actions are deterministic, so it is no cheaper to
simulate). The per-seed figure times the config's seeds (config/config.yaml) gives the grid.
These are estimates from one iteration each, on the machine the script runs on. VariBAD learns
nothing until `precollect_steps` have been collected, so it is measured with that warm-up set to
0 (`WARM`): its measured iteration is one of the learning ones, which are all but the first few.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ALGORITHMS = ("trmrl", "rl2", "maml_trpo", "pearl", "varibad")
# settings that make the one measured iteration a learning one (the first would skip the update)
WARM = {"varibad": {"precollect_steps": 0}}


def run_cost(algo: str, bench_id: str, seeds: int, extra_splits: list[str]) -> dict:
    import torch

    from metarl import config as cfg
    from metarl.bench import measure_algo
    from metarl.envs import get_benchmark

    torch.set_num_threads(1)
    resolved = cfg.resolve(algo, bench_id, 0, "paper", overrides={"device": "cpu", "threads": 1})
    bench = get_benchmark(bench_id)
    start = time.perf_counter()
    rows = {r[1]: r[2] for r in measure_algo(algo, bench_id, "paper", 1.0, 1.0, count_flops=False, threads=1,
                                                settings=WARM.get(algo))}
    wall = time.perf_counter() - start
    sampling, update = rows[f"{algo}_sampling"], rows[f"{algo}_update"]
    batch = resolved["meta_batch_size"] * bench.train_episodes * bench.episode_length
    iterations = -(-resolved["total_env_steps"] // batch)
    train_s = iterations * (batch / sampling + batch / update)
    n_test = len(bench.split("test"))
    if resolved.get("eval_tasks"):
        n_test = min(n_test, resolved["eval_tasks"])
    evaluations = iterations // resolved["eval_every"] + 2
    eval_steps = evaluations * n_test * bench.eval_episodes * bench.episode_length
    eval_steps += sum(len(bench.split(s)) * bench.eval_episodes * bench.episode_length for s in extra_splits)
    eval_s = eval_steps / sampling
    return {"benchmark": bench_id, "algorithm": algo, "batch_steps": batch, "iterations": iterations,
            "sampling_steps_per_s": sampling, "update_steps_per_s": update,
            "iteration_s": batch / sampling + batch / update, "train_h": train_s / 3600,
            "eval_h": eval_s / 3600, "run_h": (train_s + eval_s) / 3600, "seeds": seeds,
            "grid_h": seeds * (train_s + eval_s) / 3600, "measured_in_s": wall}


def markdown(rows: list[dict]) -> str:
    out = ["| Benchmark | Algorithm | batch steps | iterations | s / iteration | CPU-h train | CPU-h eval | "
           "CPU-h per seed | seeds | CPU-h all seeds |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['benchmark']} | {r['algorithm']} | {r['batch_steps']:,} | {r['iterations']:,} | "
                   f"{r['iteration_s']:.2f} | {r['train_h']:,.1f} | {r['eval_h']:,.1f} | {r['run_h']:,.1f} | "
                   f"{r['seeds']} | {r['grid_h']:,.0f} |")
    total = sum(r["grid_h"] for r in rows)
    out.append(f"| **total** | | | | | | | | | **{total:,.0f}** |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", action="append", help="benchmark (repeatable; default: every one in config.yaml)")
    parser.add_argument("--algo", action="append", help="algorithm (repeatable; default: the five learners)")
    parser.add_argument("--markdown", type=Path, help="write the table to this file's marked section")
    args = parser.parse_args(argv)
    grid = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    benches = args.env or grid["benchmarks"]
    rows = []
    for bench_id in benches:
        seeds = len(grid["seeds"].get(bench_id, grid["seeds"]["default"]))
        extra = list(grid.get("eval_splits", {}).get(bench_id, []))
        for algo in args.algo or ALGORITHMS:
            r = run_cost(algo, bench_id, seeds, extra)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
