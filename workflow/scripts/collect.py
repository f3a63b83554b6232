"""Gather the evaluation files of many runs into one tidy table, one row per evaluated episode.

Input: `results/runs/{benchmark}/{algorithm}/{variant}/seed{seed}/eval[_{split}].csv` files
(identity read from the path). Output: a parquet file with `metrics.EPISODE_COLUMNS`:
identity, the CSV's own columns, and

- `scored`: the episode counts for the success rate (after Meta-World's exploration episodes;
  every episode elsewhere), `last_episode`: the trial's last episode (adapted return);
- `final`: the row belongs to the run's final evaluation;
- `has_success`: the benchmark has a success signal (Meta-World);
- `task_value`, `task_label`: the task's single numeric parameter (e.g. HalfCheetahVel's
  target velocity) and label, for benchmarks without a success signal (Meta-World's splits take
  tens of seconds to build and have no scalar parameter).

Every run's config.yaml is checked against the settings this workflow resolves for it, so a run
made by hand or by another config is never silently mixed in; and every run passes
`metarl.verify.check_run` (schema, types, unique keys, the row counts the protocol implies, the
recorded SHA-256s: the checks of `metarl verify`) before any of its rows is read, so a
duplicated, cut or edited file stops the workflow with one line naming it.
"""


import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from metrics import EPISODE_COLUMNS

PATH = re.compile(r"results/runs/(?P<benchmark>[^/]+)/(?P<algorithm>[^/]+)/(?P<variant>[^/]+)/seed(?P<seed>\d+)/eval(?:_(?P<split>[^/.]+))?\.csv$")


def benchmark_facts(benchmark_id: str) -> dict:
    from metarl.envs import get_benchmark

    bench = get_benchmark(benchmark_id)
    return {"episodes": bench.eval_episodes, "exploration": bench.exploration_episodes,
            "has_success": bool(bench.has_success), "bench": bench}


def task_info(facts: dict, split: str) -> pd.DataFrame:
    if facts["has_success"]:
        return pd.DataFrame(columns=["task", "task_value", "task_label"])
    tasks = facts["bench"].split(split)
    rows = []
    for i, task in enumerate(tasks):
        numbers = [v for v in task.params.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        rows.append({"task": i, "task_value": float(numbers[0]) if len(numbers) == 1 else float("nan"),
                     "task_label": task.label})
    return pd.DataFrame(rows)


def check_config(run_dir: Path, expected: dict | None) -> None:
    if expected is None:
        return
    actual = yaml.safe_load((run_dir / "config.yaml").read_text())
    if actual != expected:
        diff = ", ".join(f"{k}: {actual.get(k)!r} (expected {expected.get(k)!r})"
                         for k in sorted(set(actual) | set(expected)) if actual.get(k) != expected.get(k))
        raise SystemExit(
            f"{run_dir} was trained with other settings than this workflow's config ({diff}): it was "
            f"made by hand or by another config. Delete {run_dir} and rerun the workflow to retrain it."
        )


def check_files(run_dir: Path, benchmarks) -> None:
    from metarl.verify import COMPLETE, check_run

    report = check_run(run_dir, benchmarks)
    for note in report.notes:
        print(f"{run_dir}: note: {note}", file=sys.stderr)
    if report.status != COMPLETE:
        raise SystemExit(f"{report.problems[0][2]} ({report.status}; `metarl verify` lists every problem). "
                         f"To fix it, {report.fix}")


def collect(files: list[str], expected: dict[str, dict]) -> pd.DataFrame:
    from metarl.verify import BenchmarkCache

    benchmarks = BenchmarkCache()
    facts_cache: dict[str, dict] = {}
    tasks_cache: dict[tuple[str, str], pd.DataFrame] = {}
    frames = []
    checked = set()
    for file in files:
        m = PATH.search(Path(file).as_posix())
        if not m:
            raise SystemExit(f"not a run evaluation file: {file}")
        ident = m.groupdict()
        run_dir = Path(file).parent
        if run_dir not in checked:
            check_config(run_dir, expected.get(run_dir.as_posix()))
            check_files(run_dir, benchmarks)
            checked.add(run_dir)
        df = pd.read_csv(file, dtype={"split": str})
        if df.empty:
            raise SystemExit(f"{file} holds no evaluation rows")
        facts = facts_cache.setdefault(ident["benchmark"], benchmark_facts(ident["benchmark"]))
        for key in ("benchmark", "algorithm", "variant"):
            df[key] = ident[key]
        df["seed"] = int(ident["seed"])
        df["success"] = pd.to_numeric(df["success"], errors="coerce")
        df["scored"] = df["episode"] >= facts["exploration"]
        df["last_episode"] = df["episode"] == facts["episodes"] - 1
        df["final"] = df["iteration"] == df["iteration"].max()
        df["has_success"] = facts["has_success"]
        parts = []
        for split, part in df.groupby("split", sort=False):
            info = tasks_cache.setdefault((ident["benchmark"], split), task_info(facts, split))
            parts.append(part.merge(info, on="task", how="left") if not info.empty else part.assign(
                task_value=float("nan"), task_label=""))
        frames.append(pd.concat(parts, ignore_index=True))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EPISODE_COLUMNS})
    out = pd.concat(frames, ignore_index=True)[EPISODE_COLUMNS]
    out["task_label"] = out["task_label"].fillna("").astype(str)
    return out.sort_values(["benchmark", "algorithm", "variant", "seed", "split", "iteration", "task", "episode"],
                           kind="stable").reset_index(drop=True)


def main(snakemake) -> None:
    sys.stderr = open(snakemake.log[0], "w")
    table = collect(list(snakemake.input), snakemake.params.expected)
    Path(snakemake.output[0]).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(snakemake.output[0], index=False)
    print(f"{len(table)} episodes from {len(snakemake.input)} files -> {snakemake.output[0]}", file=sys.stderr)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - provided by Snakemake's script directive
