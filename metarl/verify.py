"""`metarl verify`: is every run under a results directory complete and intact?

Each run directory (results/runs/{env}/{algo}/{variant}/seed{seed}/) gets one status:

- ``complete``: finished (model.pt), every file there, every check passed;
- ``incomplete``: not finished (no model.pt): training is running, was stopped, or failed;
- ``missing files``: finished, but a file the run or its evaluations wrote is gone;
- ``corrupt``: a file does not parse, breaks the schema, repeats a key, or holds another number
  of rows than the protocol implies;
- ``edited``: every file parses, but one differs from the SHA-256 recorded when it was written.

Checks on the files (the workflow's collect step runs the same, `check_run`):

- config.yaml: a mapping with the run's identity;
- metadata.json: JSON; its `files` record (SHA-256 and rows of progress.csv, eval.csv,
  timings.csv, written when the run completed) matches the files;
- progress.csv: one header, every row as long, iterations 1..N without gaps, increasing
  env_steps, N = the iterations metadata.json records;
- eval.csv: the header of `EVAL_COLUMNS`; integer iteration/env_steps/task/episode, finite
  returns, success 0..1 (Meta-World) or blank; unique (iteration, split, task, episode); the
  test split evaluated exactly at the iterations the schedule implies (0, every `eval_every`-th,
  the last), each time on every task and episode, with the env_steps progress.csv has there;
  other splits once, at the final iteration;
- eval_{split}.csv (from `metarl evaluate --out`): the same schema, one evaluation of that split
  at the final iteration, every task 0..n-1 with every episode; and its `.sha256` file;
- model.pt: loads.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from metarl.errors import UsageError
from metarl.runs import (
    CHECKSUM_SUFFIX,
    EVAL_COLUMNS,
    EVAL_COLUMNS_V1,
    ckpt_dir_for,
    file_sha256,
    load_model,
    read_checksum,
)

if TYPE_CHECKING:
    from metarl.envs.base import Benchmark

COMPLETE, INCOMPLETE, MISSING, CORRUPT, EDITED = "complete", "incomplete", "missing files", "corrupt", "edited"
# worst first: a run's status is the worst of its problems
SEVERITY = (MISSING, CORRUPT, EDITED, INCOMPLETE, COMPLETE)
TRAIN_FILES = ("config.yaml", "metadata.json", "progress.csv", "eval.csv", "timings.csv", "model.pt")


@dataclass
class RunReport:
    run_dir: Path
    status: str = COMPLETE
    problems: list[tuple[str, Path, str]] = field(default_factory=list)  # (status, file, "file: what is wrong")
    notes: list[str] = field(default_factory=list)
    fix: str = ""

    def add(self, status: str, path: Path, message: str) -> None:
        self.problems.append((status, Path(path), message))
        if SEVERITY.index(status) < SEVERITY.index(self.status):
            self.status = status


class FileError(Exception):
    """One problem with one file: the message names the file."""


# ----------------------------------------------------------------------------- single files


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file, refusing anything that is not a clean table."""
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise FileError(f"{path}: not text") from None
    if not text:
        raise FileError(f"{path}: empty")
    if not text.endswith("\n"):
        raise FileError(f"{path}: the last line is cut off (no newline at the end)")
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise FileError(f"{path} line {number}: {len(row)} fields, the header has {len(header)}")
        if row == header:
            raise FileError(f"{path} line {number}: a second header (two processes wrote this run?)")
    return header, body


def _int(value: str, path: Path, number: int, column: str, low: int = 0) -> int:
    if not value.isdigit() or int(value) < low:
        raise FileError(f"{path} line {number}: {column} {value!r} is not an integer >= {low}")
    return int(value)


def _finite(value: str, path: Path, number: int, column: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise FileError(f"{path} line {number}: {column} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise FileError(f"{path} line {number}: {column} is {value}")
    return x


def check_progress(path: Path, iterations: int | None) -> dict[int, int]:
    """Checks progress.csv; returns env_steps per iteration (0 -> 0)."""
    header, body = read_rows(path)
    if header[:2] != ["iteration", "env_steps"]:
        raise FileError(f"{path}: header does not start with iteration,env_steps")
    steps = {0: 0}
    for number, row in enumerate(body, start=2):
        it = _int(row[0], path, number, "iteration", 1)
        if it != number - 1:
            raise FileError(f"{path} line {number}: iteration {it}, expected {number - 1}")
        env_steps = _int(row[1], path, number, "env_steps", 1)
        if env_steps <= steps[it - 1]:
            raise FileError(f"{path} line {number}: env_steps {env_steps} does not increase")
        for column, value in zip(header[2:], row[2:]):
            if value:
                try:
                    float(value)
                except ValueError:
                    raise FileError(f"{path} line {number}: {column} {value!r} is not a number") from None
        steps[it] = env_steps
    if iterations is not None and len(body) != iterations:
        raise FileError(f"{path}: {len(body)} rows, but the run recorded {iterations} iterations")
    return steps


def eval_schedule(iterations: int, eval_every: int) -> list[int]:
    """The iterations at which training evaluates the test split (see metarl/training.py)."""
    points = [0] + [i for i in range(1, iterations + 1) if eval_every and i % eval_every == 0]
    return points if points[-1] == iterations else points + [iterations]


def check_eval(path: Path, *, episodes: int, exploration: int, has_success: bool, n_tasks: Callable[[str], int],
               expected: dict[str, list[int]] | None, final_iteration: int, env_steps: dict[int, int] | None,
               only_split: str | None = None) -> int:
    """Checks an evaluation file; returns its row count.

    `expected`: split -> the iterations it must be evaluated at (eval.csv's test split); any
    other split: once, at `final_iteration`, on every task 0..n-1 for some n <= n_tasks(split).
    `only_split`: the one split an eval_{split}.csv may hold.
    """
    header, body = read_rows(path)
    if header == list(EVAL_COLUMNS_V1):
        raise FileError(f"{path}: written by an older version of the suite (no scored, task_label and "
                        "task_value columns); regenerate it")
    if header != list(EVAL_COLUMNS):
        raise FileError(f"{path}: header is {','.join(header)!r}, expected {','.join(EVAL_COLUMNS)!r}")
    seen: dict[tuple[str, int], set[tuple[int, int]]] = {}
    for number, row in enumerate(body, start=2):
        it = _int(row[0], path, number, "iteration")
        steps = _int(row[1], path, number, "env_steps")
        split = row[2]
        if not split or (only_split is not None and split != only_split):
            raise FileError(f"{path} line {number}: split {split!r}" + (f", expected {only_split!r}" if only_split else ""))
        task = _int(row[3], path, number, "task")
        episode = _int(row[4], path, number, "episode")
        if episode >= episodes:
            raise FileError(f"{path} line {number}: episode {episode}, but trials have {episodes} episodes")
        _finite(row[5], path, number, "return")
        if has_success:
            s = _finite(row[6], path, number, "success")
            if not 0.0 <= s <= 1.0:
                raise FileError(f"{path} line {number}: success {row[6]} is not in [0, 1]")
        elif row[6] != "":
            raise FileError(f"{path} line {number}: success {row[6]!r} on a benchmark without a success signal")
        if row[7] != ("1" if episode >= exploration else "0"):
            raise FileError(f"{path} line {number}: scored {row[7]!r} for episode {episode}, but the benchmark "
                            f"scores the episodes from {exploration} on")
        if row[9] != "":
            _finite(row[9], path, number, "task_value")
        if env_steps is not None and env_steps.get(it) != steps:
            raise FileError(f"{path} line {number}: env_steps {steps} at iteration {it}, but progress.csv "
                            f"has {env_steps.get(it)}")
        cell = seen.setdefault((split, it), set())
        if (task, episode) in cell:
            raise FileError(f"{path} line {number}: (iteration {it}, split {split}, task {task}, episode "
                            f"{episode}) appears twice")
        cell.add((task, episode))
    splits = sorted({s for s, _ in seen} | set(expected or {}))
    for split in splits:
        iterations = sorted(it for s, it in seen if s == split)
        want = (expected or {}).get(split, [final_iteration])
        if iterations != want:
            raise FileError(f"{path}: split {split} evaluated at iterations {_span(iterations)}, "
                            f"expected {_span(want)}")
        limit = n_tasks(split)
        for it in iterations:
            cell = seen[(split, it)]
            tasks = 1 + max(t for t, _ in cell)
            if tasks > limit:
                raise FileError(f"{path}: split {split} has {limit} tasks, the file has task {tasks - 1}")
            if expected and split in expected and tasks != limit:
                raise FileError(f"{path}: split {split} at iteration {it}: {tasks} tasks, expected {limit}")
            if len(cell) != tasks * episodes:
                raise FileError(f"{path}: split {split} at iteration {it}: {len(cell)} rows, expected "
                                f"{tasks} tasks x {episodes} episodes = {tasks * episodes}")
    return len(body)


def _span(values: list[int]) -> str:
    return "[" + ", ".join(map(str, values)) + "]" if len(values) <= 6 else \
        f"[{', '.join(map(str, values[:3]))}, ..., {', '.join(map(str, values[-2:]))}] ({len(values)})"


# ----------------------------------------------------------------------------- runs


class BenchmarkCache:
    """Benchmark facts and split sizes, built once per benchmark (Meta-World's take seconds)."""

    def __init__(self):
        self._cache: dict[str, Any] = {}

    def get(self, benchmark_id: str):
        if benchmark_id not in self._cache:
            from metarl.envs import get_benchmark

            self._cache[benchmark_id] = get_benchmark(benchmark_id)
        return self._cache[benchmark_id]


def regenerate_command(run_dir: Path, report: RunReport) -> str:
    """What to run to make the run whole again."""
    if report.status == INCOMPLETE:
        return (f"resume it: `metarl train --config {run_dir}/config.yaml --run-dir {run_dir}` "
                "(or rerun the workflow)")
    names = {path.name for _, path, _ in report.problems}
    if names and all(n.startswith("eval_") and n.endswith(".csv") for n in names):
        splits = sorted(n[len("eval_"):-len(".csv")] for n in names)
        return "regenerate: " + "; ".join(
            f"`metarl evaluate --run {run_dir} --split {s} --out {run_dir}/eval_{s}.csv`" for s in splits)
    return (f"retrain it (the same seed gives the same bytes): `snakemake all --configfile <your config> "
            f"--forcerun {run_dir}/model.pt`, or `metarl train --config {run_dir}/config.yaml --run-dir "
            f"{run_dir} --restart`")


def check_run(run_dir: Path, benchmarks: BenchmarkCache | None = None, ckpt_dir: Path | None = None) -> RunReport:
    """Every check of the module docstring on one run directory."""
    run_dir = Path(run_dir)
    benchmarks = benchmarks or BenchmarkCache()
    report = RunReport(run_dir)
    present = {name: (run_dir / name).is_file() for name in TRAIN_FILES}
    if not present["model.pt"]:
        ckpt = (ckpt_dir or ckpt_dir_for(run_dir)) / "state.ckpt"
        report.add(INCOMPLETE, run_dir / "model.pt", "no model.pt: training has not finished" + (
            f" (checkpoint {ckpt} is there)" if ckpt.is_file() else " (no checkpoint)"))
        report.fix = regenerate_command(run_dir, report)
        return report
    for name, ok in present.items():
        if not ok:
            report.add(MISSING, run_dir / name, f"{run_dir / name}: missing")
    for side in sorted(run_dir.glob("eval_*.csv" + CHECKSUM_SUFFIX)):
        target = side.with_name(side.name[: -len(CHECKSUM_SUFFIX)])
        if not target.is_file():
            report.add(MISSING, target, f"{target}: missing (its {side.name} is there)")

    config = _read_config(run_dir, report) if present["config.yaml"] else None
    metadata = _read_metadata(run_dir, report) if present["metadata.json"] else None
    records = (metadata or {}).get("files")
    if metadata is not None and records is None:
        report.notes.append("no checksums recorded (finished before metarl recorded them): "
                            "structure checked, edits not detectable")
    iterations = metadata["iterations"] if metadata else None
    steps = None
    if present["progress.csv"]:
        try:
            steps = check_progress(run_dir / "progress.csv", iterations)
        except FileError as exc:
            report.add(CORRUPT, run_dir / "progress.csv", str(exc))
    if config is not None:
        try:
            bench = benchmarks.get(config["env"])
        except Exception as exc:  # noqa: BLE001 - an unknown benchmark ID in a run's config
            report.add(CORRUPT, run_dir / "config.yaml", f"{run_dir / 'config.yaml'}: benchmark {config.get('env')!r}: {exc}")
            bench = None
        if bench is not None and iterations is not None:
            _check_eval_files(run_dir, report, config, bench, iterations, steps, present["eval.csv"])
    for name, record in (records or {}).items():
        path = run_dir / name
        if path.is_file() and isinstance(record, dict) and file_sha256(path) != record.get("sha256"):
            report.add(EDITED, path, f"{path}: differs from the SHA-256 recorded when the run completed")
    if present["model.pt"]:
        try:
            load_model(run_dir / "model.pt")
        except UsageError:
            report.add(CORRUPT, run_dir / "model.pt", f"{run_dir / 'model.pt'}: does not load as a metarl model")
    if report.status != COMPLETE:
        report.fix = regenerate_command(run_dir, report)
    return report


def _read_config(run_dir: Path, report: RunReport) -> dict | None:
    """config.yaml, or None (and a problem) where it is not a run config."""
    import yaml

    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        config = None
    if not isinstance(config, dict) or not {"algo", "env", "seed", "eval_every"} <= set(config):
        report.add(CORRUPT, run_dir / "config.yaml", f"{run_dir / 'config.yaml'}: not a run config")
        return None
    return config


def _read_metadata(run_dir: Path, report: RunReport) -> dict | None:
    """metadata.json, or None (and a problem) where it is not a run's metadata."""
    try:
        metadata = json.loads((run_dir / "metadata.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        metadata = None
    if not isinstance(metadata, dict) or "iterations" not in metadata:
        report.add(CORRUPT, run_dir / "metadata.json", f"{run_dir / 'metadata.json'}: not a run's metadata")
        return None
    return metadata


def _check_eval_files(run_dir: Path, report: RunReport, config: dict, bench: Benchmark, iterations: int,
                      steps: dict[int, int] | None, has_eval: bool) -> None:
    """eval.csv against the training's evaluation schedule, and every eval_{split}.csv (one
    evaluation of its split at the final iteration) with its `.sha256`."""
    limit = config.get("eval_tasks") or 0

    def n_tasks(split: str) -> int:
        size = len(bench.split(split)) if split in bench.splits() else 0
        return min(size, limit) if limit and split == "test" else size

    facts = dict(episodes=bench.eval_episodes, exploration=bench.exploration_episodes,
                 has_success=bench.has_success, n_tasks=n_tasks,
                 final_iteration=iterations)
    if has_eval:
        try:
            check_eval(run_dir / "eval.csv", expected={"test": eval_schedule(iterations, config["eval_every"])},
                       env_steps=steps, **facts)
        except FileError as exc:
            report.add(CORRUPT, run_dir / "eval.csv", str(exc))
    for extra in sorted(run_dir.glob("eval_*.csv")):
        split = extra.name[len("eval_"):-len(".csv")]
        try:
            check_eval(extra, expected=None, env_steps=None, only_split=split, **facts)
        except FileError as exc:
            report.add(CORRUPT, extra, str(exc))
            continue
        digest = read_checksum(extra)
        if digest is None:
            report.notes.append(f"{extra.name}: no {extra.name}{CHECKSUM_SUFFIX} (written before "
                                "checksums were recorded): structure checked")
        elif digest != file_sha256(extra):
            report.add(EDITED, extra, f"{extra}: differs from the SHA-256 recorded when it was written")


def find_runs(results: Path) -> list[tuple[Path, Path | None]]:
    """(run directory, checkpoint directory) of every run under `results` (runs/ and ckpt/), or
    `results` itself when it is one run directory."""
    results = Path(results)
    if (results / "config.yaml").is_file() or (results / "model.pt").is_file():
        return [(results, None)]
    found: dict[Path, Path | None] = {}
    runs_root, ckpt_root = results / "runs", results / "ckpt"
    for marker in ("config.yaml", "model.pt", "progress.csv"):
        for p in runs_root.glob(f"*/*/*/seed*/{marker}"):
            found.setdefault(p.parent, None)
    for p in ckpt_root.glob("*/*/*/seed*/state.ckpt"):  # a started run whose run directory is gone
        found.setdefault(runs_root / p.parent.relative_to(ckpt_root), None)
    return sorted(found.items())


def verify(paths: Path | list[Path], stream=None) -> int:
    """Print one line per run under `paths` (results directories or run directories), with its
    problems and fix; return the exit code."""
    import sys

    from metarl.errors import EXIT_OK, EXIT_PROBLEMS

    stream = stream or sys.stdout
    runs = []
    for results in [Path(paths)] if isinstance(paths, (str, Path)) else map(Path, paths):
        if not results.is_dir():
            raise UsageError(f"results directory not found: {results}")
        found = find_runs(results)
        if not found:
            raise UsageError(f"no runs under {results} (expected {results}/runs/ENV/ALGO/VARIANT/seedN/)")
        runs += found
    benchmarks = BenchmarkCache()
    counts = {s: 0 for s in SEVERITY}
    for run_dir, ckpt_dir in runs:
        report = check_run(run_dir, benchmarks, ckpt_dir)
        counts[report.status] += 1
        print(f"{report.status:13s} {run_dir}", file=stream)
        for _, _, message in report.problems:
            print(f"    {message}", file=stream)
        for note in report.notes:
            print(f"    note: {note}", file=stream)
        if report.fix:
            print(f"    fix: {report.fix}", file=stream)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    print(f"{len(runs)} runs: {summary}", file=stream)
    return EXIT_OK if counts[COMPLETE] == len(runs) else EXIT_PROBLEMS


