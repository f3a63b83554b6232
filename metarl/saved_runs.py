"""A finished run, used again: `load_run` loads its final model; `evaluate_run` (behind `metarl
evaluate`) evaluates it on any split and writes the rows into the run's eval.csv (under the run's
lock, its record in metadata.json updated) or into a file of their own with a `.sha256` beside
it, and optionally the agent's episodic memory or every step's reward (.npz). Rerunning an
evaluation replaces its rows (`_replace_eval_rows`) instead of adding to them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from metarl.agent import Agent
from metarl.envs.base import Benchmark
from metarl.errors import UsageError
from metarl.evaluation import Evaluator, npz_bytes, summarize
from metarl.runs import (
    EVAL_COLUMNS,
    RunLock,
    atomic_write_bytes,
    atomic_write_text,
    ckpt_dir_for,
    file_record,
    format_value,
    load_model,
    write_checksum,
    write_json,
)
from metarl.setup import Setup, build_agent, prepare


def read_run_config(run_dir: Path) -> dict:
    """The resolved config of the finished run in `run_dir` (one line naming the problem when
    `run_dir` is not one). Imports no benchmark."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory not found: {run_dir}")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UsageError(f"{run_dir} has no config.yaml: not a run directory")
    model_path = run_dir / "model.pt"
    if not model_path.is_file():
        raise UsageError(f"{run_dir} has no model.pt: the run has not finished")
    import yaml

    try:
        resolved = yaml.safe_load(config_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UsageError(f"{config_path} is not valid YAML") from None
    if not isinstance(resolved, dict) or not {"algo", "env", "seed", "variant"} <= set(resolved):
        raise UsageError(f"{config_path} is not a run config")
    return resolved


def load_run(run_dir: Path, device: str | None = None, threads: int | None = None) -> tuple[Setup, Agent, dict]:
    run_dir = Path(run_dir)
    resolved = read_run_config(run_dir)
    if device is not None:
        resolved["device"] = device
    if threads is not None:
        resolved["threads"] = threads
    model = load_model(run_dir / "model.pt")
    setup = prepare(resolved)
    agent = build_agent(setup)
    agent.load_model_state(model["state"])
    return setup, agent, model


def evaluate_run(run_dir: Path, split: str, out: Path | None = None, eval_tasks: int | None = None,
                 device: str | None = None, threads: int | None = None,
                 memory_out: Path | None = None, steps_out: Path | None = None,
                 ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Evaluate a finished run's final model on `split`; rows replace that split's rows at that
    iteration in `out` (default: the run's eval.csv), written atomically. With `memory_out`, the
    agent's episodic memory at every step goes there (.npz) with the tasks' parameters. With
    `steps_out`, every step's reward goes there (a deterministic .npz, `evaluation.steps_arrays`);
    on split test it is the training's final test evaluation (same iteration, same seeds)."""
    run_dir = Path(run_dir)
    setup, agent, model = load_run(run_dir, device, threads)
    if memory_out is not None and not agent.supports_memory_export:
        raise UsageError(f"algorithm {setup.config['algo']!r} has no episodic memory to export")
    agent.export_memory = memory_out is not None
    check_split(setup.benchmark, split)
    n_tasks = setup.run.eval_tasks if eval_tasks is None else eval_tasks
    evaluator = Evaluator(setup.benchmark, setup.config["seed"], n_tasks)
    memory: list[dict[str, np.ndarray]] | None = [] if memory_out is not None else None
    rewards: list[np.ndarray] | None = [] if steps_out is not None else None
    try:
        rows = evaluator.evaluate(agent, split, model["iteration"], model["env_steps"], memory, rewards)
    finally:
        evaluator.close()
    if memory is not None:
        import json

        tasks = evaluator.tasks(split)
        arrays = {key: np.concatenate([m[key] for m in memory]) for key in memory[0]}
        arrays.update(split=split, benchmark=setup.benchmark.id, task_labels=np.array([t.label for t in tasks]),
                      task_params=json.dumps([t.params for t in tasks]))
        atomic_write_bytes(Path(memory_out), npz_bytes(arrays))  # the same bytes for the same run
    out = Path(out) if out is not None else run_dir / "eval.csv"
    text_rows = "".join(",".join(format_value(r[c]) for c in EVAL_COLUMNS) + "\n" for r in rows)
    if out.resolve() == (run_dir / "eval.csv").resolve():
        # the run's own eval.csv: one writer at a time, and its record in metadata.json follows
        with RunLock(ckpt_dir_for(run_dir), run_dir):
            atomic_write_text(out, _replace_eval_rows(out, split, model["iteration"]) + text_rows)
            meta_path = run_dir / "metadata.json"
            if meta_path.is_file():
                import json

                meta = json.loads(meta_path.read_text())
                if "files" in meta:
                    meta["files"]["eval.csv"] = file_record(out)
                    write_json(meta_path, meta)
    else:
        atomic_write_text(out, _replace_eval_rows(out, split, model["iteration"]) + text_rows)
        # the rows of a memory or steps pass are a by-product (the workflow's temporary file,
        # not an eval*.csv, which is what `metarl verify` checks): no .sha256 beside it
        if (memory_out is None and steps_out is None) or out.name.startswith("eval"):
            write_checksum(out)
    if rewards is not None:  # after the rows: a refused --out leaves no steps file either
        from metarl.evaluation import steps_arrays

        arrays = steps_arrays(rewards, setup.benchmark, split, model["iteration"], model["env_steps"],
                              [t.label for t in evaluator.tasks(split)])
        atomic_write_bytes(Path(steps_out), npz_bytes(arrays))
    return rows, summarize(rows, setup.benchmark)


def check_split(benchmark: Benchmark, split: str) -> None:
    if split not in benchmark.splits():
        raise UsageError(f"benchmark {benchmark.id} has no split {split!r} (it has: {', '.join(benchmark.splits())})")


def _replace_eval_rows(path: Path, split: str, iteration: int) -> str:
    """`path`'s header and rows, without those of (split, iteration): rerunning an evaluation
    replaces its rows. A file that is not an eval.csv is refused, not overwritten."""
    if not path.is_file():
        return ",".join(EVAL_COLUMNS) + "\n"
    try:
        lines = path.read_text().splitlines(keepends=True)
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not an eval.csv (not text); move it away or choose another --out") from None
    header = ",".join(EVAL_COLUMNS)
    if not lines or lines[0].strip() != header:
        raise UsageError(f"{path} is not an eval.csv (its header is not {header}); move it away or choose another --out")
    body = []
    for number, line in enumerate(lines[1:], start=2):
        fields = next(csv.reader([line]), [])
        if len(fields) != len(EVAL_COLUMNS) or not fields[0].isdigit():
            raise UsageError(f"{path} line {number} is not an evaluation row; `metarl verify` "
                             "says how to regenerate the file")
        if not (fields[2] == split and int(fields[0]) == iteration):
            body.append(line if line.endswith("\n") else line + "\n")
    return lines[0] + "".join(body)
