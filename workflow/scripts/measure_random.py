"""The fixed points of the normalised score (config/normalisation.yaml), measured and computed.

    python workflow/scripts/measure_random.py                    # every benchmark in the file: print
    python workflow/scripts/measure_random.py PointNav --seeds 1-10
    python workflow/scripts/measure_random.py --write config/normalisation.yaml
    python workflow/scripts/measure_random.py --oracle           # PointNav's oracle return per split

`random:` (the 0 of the normalised score) is the uniform-random agent's expected score: the
agent `random` of metarl.registry, run through the suite's own evaluator
(`metarl.evaluation.Evaluator`, as `metarl.saved_runs.evaluate_run` runs a finished model) on every
task of the split, one trial of the benchmark's `eval_episodes` episodes, at iteration 0; its
score is the adapted return (the last episode's return, averaged over the split's tasks; SPEC
§5). The declared value is the mean of that score over the seeds (default 1-10), rounded to
0.01; evaluation start states depend only on the split, so the seeds differ only in the
agent's actions. `--write FILE` replaces the `random:` and `random_source:` lines of the
measured entries in FILE and leaves everything else as it is.

`point_nav_oracle` gives PointNav's `reference:` (the 1): the return of a goal-knowing oracle,
which is the optimum (derivation in its docstring and in config/normalisation.yaml).

Benchmarks run one at a time on one thread (the evaluator steps each split's tasks as one
batch), so a measurement uses one core: MuJoCo splits take seconds to a minute per seed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FILE = REPO / "config" / "normalisation.yaml"
DEFAULT_SEEDS = list(range(1, 11))
DECIMALS = 2  # `random:` is written rounded to this many decimals


# ----------------------------------------------------------------------------- the random agent


def random_score(benchmark: str, split: str, seed: int, iteration: int = 0) -> float:
    """Adapted return of the random agent with `seed` on every task of `split`."""
    from metarl.config import resolve
    from metarl.evaluation import Evaluator
    from metarl.setup import build_agent, prepare

    setup = prepare(resolve("random", benchmark, seed, "paper", overrides={"threads": 1, "device": "cpu"}))
    agent = build_agent(setup)
    evaluator = Evaluator(setup.benchmark, seed, 0)  # 0: every task of the split
    try:
        rows = evaluator.evaluate(agent, split, iteration, 0)
    finally:
        evaluator.close()
    last = setup.benchmark.eval_episodes - 1
    return float(np.mean([r["return"] for r in rows if r["episode"] == last]))


def measure(benchmark: str, split: str, seeds=DEFAULT_SEEDS) -> dict:
    """The random agent's score per seed, their mean and standard deviation (ddof=1)."""
    start = time.perf_counter()
    values = [random_score(benchmark, split, s) for s in seeds]
    return {"benchmark": benchmark, "split": split, "seeds": list(seeds), "values": values,
            "mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "seconds": time.perf_counter() - start}


def seed_text(seeds) -> str:
    seeds = list(seeds)
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def random_source(result: dict, n_tasks: int, episodes: int) -> str:
    return (f"uniform-random agent: metarl `random` through metarl.evaluation.Evaluator (iteration 0, all "
            f"{n_tasks} tasks x {episodes} episodes), adapted return averaged over the tasks; mean over seeds "
            f"{seed_text(result['seeds'])} = {result['mean']:.3f} (std over seeds {result['std']:.3f}); "
            "python workflow/scripts/measure_random.py")


def declared_value(result: dict) -> float:
    return round(result["mean"], DECIMALS)


# ----------------------------------------------------------------------------- PointNav oracle


def point_nav_oracle_return(angle: float, steps: int = 20, max_step: float = 0.1) -> float:
    """Return of one PointNav episode of the best possible policy for the goal (cos a, sin a).

    The point starts at the origin and each step adds the action clipped to [-s, s]^2 (s = 0.1),
    so after t steps it can be anywhere in the box [-t s, t s]^2 and nowhere else. The reward
    after step t is -|p_t - g|, so no policy has a distance below d_t = dist(g, box_t) at step t,
    and -sum_t d_t bounds every return. Moving to p_t = clip(g, -t s, t s) (per axis) attains
    d_t at every step at once, and it is a legal move: per axis |p_t - p_{t-1}| <= s. So the
    bound is attained: this is the optimum (the greedy clipped straight-line move towards the
    goal), d_t = sqrt(sum_i max(|g_i| - t s, 0)^2), 0 from step 10 on (|g_i| <= 1)."""
    goal = np.abs(np.array([np.cos(angle), np.sin(angle)]))
    t = np.arange(1, steps + 1)[:, None] * max_step
    return float(-np.sqrt((np.maximum(goal[None, :] - t, 0.0) ** 2).sum(axis=1)).sum())


def point_nav_oracle(split: str) -> float:
    """PointNav's oracle score on a split: its return (the same in every episode of the trial,
    the adapted one included) averaged over the split's tasks."""
    from metarl.envs import get_benchmark

    bench = get_benchmark("PointNav")
    return float(np.mean([point_nav_oracle_return(t.params["angle"], bench.episode_length)
                          for t in bench.split(split)]))


# ----------------------------------------------------------------------------- the file


def declared(path: Path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text()) or {}


def update_file(path: Path, results: list[dict]) -> None:
    """Replace the `random:` and `random_source:` lines of the measured (benchmark, split)
    entries; the file's layout is benchmark (column 0) > split (2 spaces) > keys (4 spaces)."""
    from metarl.envs import get_benchmark

    by_key = {(r["benchmark"], r["split"]): r for r in results}
    lines = Path(path).read_text().splitlines(keepends=True)
    bench = split = None
    done = set()
    for i, line in enumerate(lines):
        if m := re.match(r"^([A-Za-z0-9-]+):\s*(#.*)?$", line):
            bench, split = m.group(1), None
        elif m := re.match(r"^  ([A-Za-z0-9_]+):\s*(#.*)?$", line):
            split = m.group(1)
        elif (bench, split) in by_key and (m := re.match(r"^    (random|random_source):", line)):
            r = by_key[(bench, split)]
            b = get_benchmark(bench)
            if m.group(1) == "random":
                lines[i] = f"    random: {declared_value(r):.{DECIMALS}f}\n"
            else:
                text = random_source(r, len(b.split(split)), b.eval_episodes).replace('"', "'")
                lines[i] = f'    random_source: "{text}"\n'
            done.add((bench, split))
    missing = sorted(set(by_key) - done)
    if missing:
        raise SystemExit(f"{path}: no entry for {', '.join(f'{b}/{s}' for b, s in missing)} (add it first)")
    Path(path).write_text("".join(lines))


def parse_seeds(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmarks", nargs="*", help="benchmark IDs (default: every one in the file)")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="normalisation file to read")
    parser.add_argument("--seeds", default="1-10", help="random agent seeds, e.g. 1-10 or 1,2,5")
    parser.add_argument("--splits", default="", help="comma-separated splits (default: all the benchmark has)")
    parser.add_argument("--write", type=Path, help="update the random: lines of this file")
    parser.add_argument("--oracle", action="store_true", help="print PointNav's oracle return per split and stop")
    args = parser.parse_args(argv)
    from metarl.envs import get_benchmark

    if args.oracle:
        for split in get_benchmark("PointNav").splits():
            print(f"PointNav {split}: oracle return {point_nav_oracle(split):.6f}")
        return 0
    seeds = parse_seeds(args.seeds)
    benchmarks = args.benchmarks or list(declared(args.file))
    results = []
    for bench in benchmarks:
        splits = args.splits.split(",") if args.splits else list(get_benchmark(bench).splits())
        for split in splits:
            r = measure(bench, split, seeds)
            results.append(r)
            print(f"{bench} {split}: random = {declared_value(r):.{DECIMALS}f} (mean {r['mean']:.4f}, std over "
                  f"seeds {r['std']:.4f}, seeds {seed_text(seeds)}, {r['seconds']:.0f} s; per seed "
                  + " ".join(f"{v:.3f}" for v in r["values"]) + ")", flush=True)
    if args.write:
        update_file(args.write, results)
        print(f"updated {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
