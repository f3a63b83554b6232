"""Gather the evaluation files of many runs into one tidy table, one row per evaluated episode.

Input: the `eval.csv` and `eval_{split}.csv` files of run directories (`metarl train`,
`metarl evaluate --out`). Everything about a row comes from the run's own files, so this script
needs nothing of the suite installed (it imports nothing from `metarl`):

- identity (benchmark, algorithm, variant, seed) from the run's config.yaml;
- the CSV's columns, including `scored` (the episode counts for the success rate: after
  Meta-World's exploration episodes, every episode elsewhere), `task_label` and `task_value`
  (the task's one numeric parameter, e.g. HalfCheetahVel's target velocity), which the
  evaluator wrote;
- from the benchmark block of the run's metadata.json: `has_success`, `last_episode` (the
  trial's last episode: the adapted return), `train_low`/`train_high` (the training tasks'
  range of task_value, NaN where none) and `split_note` (what the split's tasks are);
- `final`: the row belongs to the file's last evaluation.

Output: a parquet file with `metrics.EPISODE_COLUMNS`. Every run's config.yaml is checked
against the settings this workflow resolves for it, so a run made by hand or by another config
is never silently mixed in. The files' integrity (schema, row counts, the recorded SHA-256s)
is checked before this step by `metarl verify` (rule verify_runs).
"""


import sys
from pathlib import Path

import numpy as np
import pandas as pd

import runinfo
from metrics import EPISODE_COLUMNS

SORT_KEYS = ["benchmark", "algorithm", "variant", "seed", "split", "iteration", "task", "episode"]


# metarl.config.TRACKING_KEYS: where a run's scalars also went (TensorBoard, W&B), not what it computed
TRACKING_KEYS = ("tensorboard", "wandb")


def check_config(run_dir: Path, actual: dict, expected: dict | None) -> None:
    """`actual` (config.yaml) against `expected` (without tracking settings, common.smk)."""
    if expected is None:
        return
    actual = {k: v for k, v in actual.items() if k not in TRACKING_KEYS}
    if actual != expected:
        diff = ", ".join(f"{k}: {actual.get(k)!r} (expected {expected.get(k)!r})"
                         for k in sorted(set(actual) | set(expected)) if actual.get(k) != expected.get(k))
        raise SystemExit(
            f"{run_dir} was trained with other settings than this workflow's config ({diff}): it was "
            f"made by hand or by another config. Delete {run_dir} and rerun the workflow to retrain it."
        )


def run_identity(run_dir: Path, expected: dict | None) -> tuple[dict, dict]:
    """(identity columns, the benchmark block of metadata.json) of one run directory."""
    config = runinfo.read_config(run_dir)
    check_config(run_dir, config, expected)
    return runinfo.identity(config), runinfo.benchmark_block(run_dir)


def episodes_of(file: Path, identity: dict, benchmark: dict) -> pd.DataFrame:
    df = pd.read_csv(file, dtype={"split": str, "task_label": str}, keep_default_na=False,
                     na_values={"success": [""], "task_value": [""]})
    if df.empty:
        raise SystemExit(f"{file} holds no evaluation rows")
    for key, value in identity.items():
        df[key] = value
    df["success"] = pd.to_numeric(df["success"], errors="coerce")
    df["task_value"] = pd.to_numeric(df["task_value"], errors="coerce")
    df["scored"] = df["scored"].astype(bool)
    df["last_episode"] = df["episode"] == benchmark["eval_episodes"] - 1
    df["final"] = df["iteration"] == df["iteration"].max()
    df["has_success"] = bool(benchmark["has_success"])
    low, high = benchmark.get("train_range") or (np.nan, np.nan)
    df["train_low"], df["train_high"] = float(low), float(high)
    notes = benchmark.get("split_notes") or {}
    df["split_note"] = df["split"].map(lambda s: notes.get(s, ""))
    return df


def collect(files: list[str], expected: dict[str, dict]) -> pd.DataFrame:
    runs: dict[Path, tuple[dict, dict]] = {}
    frames = []
    for file in map(Path, files):
        run_dir = file.parent
        if run_dir not in runs:
            runs[run_dir] = run_identity(run_dir, expected.get(run_dir.as_posix()))
        frames.append(episodes_of(file, *runs[run_dir]))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EPISODE_COLUMNS})
    out = pd.concat(frames, ignore_index=True)[EPISODE_COLUMNS]
    return out.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)


def main(snakemake) -> None:
    sys.stderr = open(snakemake.log[0], "w")
    table = collect(list(snakemake.input.evals), snakemake.params.expected)
    Path(snakemake.output[0]).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(snakemake.output[0], index=False)
    print(f"{len(table)} episodes from {len(snakemake.input.evals)} files -> {snakemake.output[0]}", file=sys.stderr)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - provided by Snakemake's script directive
