"""The training loop, written once for every algorithm, with exact resume.

Each iteration: sample `meta_batch_size` training tasks, run one training trial in each (one
batched policy call per step); for an agent whose config sets `fill_batch` (TrMRL, as garage's
sampler does) run more trials until the batch is full (see `TrainSampler`); count their
environment steps against the budget, let the agent update, log a `progress.csv` row, evaluate
the test split every `eval_every` iterations (and before the first and after the last), and
every `checkpoint_every` iterations write the full training state atomically. A run killed at
any moment restarts from its last checkpoint and ends with the same bytes as one that never
stopped; SIGTERM (or Ctrl-C) finishes the current iteration, writes a checkpoint and exits with
`EXIT_PREEMPTED`.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from metarl import config as cfg
from metarl.agent import Agent, EnvSpec, TrialSpec
from metarl.envs import get_benchmark
from metarl.envs.base import Benchmark
from metarl.errors import EXIT_OK, EXIT_PREEMPTED, UsageError
from metarl.evaluation import Evaluator, npz_bytes, summarize
from metarl.progress import Progress
from metarl.registry import get_agent_class
from metarl.runs import (
    EVAL_COLUMNS,
    CorruptCheckpoint,
    CsvLog,
    RunLock,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    ckpt_dir_for,
    file_record,
    format_value,
    load_checkpoint,
    load_model,
    metadata,
    remove_stale_temporaries,
    save_checkpoint,
    write_checksum,
    write_json,
)
from metarl.sampling import TrialBatch, concat_trials, run_trials
from metarl.seeding import env_rng, env_rngs, global_rng_state, seed_globals, set_global_rng_state, task_rng

CHECKPOINT_NAME = "state.ckpt"
# The logs whose SHA-256 and row count metadata.json records when a run completes.
RECORDED_FILES = ("progress.csv", "eval.csv", "timings.csv")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but torch sees no CUDA device (use --device cpu or auto)")
    return torch.device(name)


@dataclass
class Setup:
    """Everything a run needs, built from a resolved config (validation first, no side effects)."""

    config: dict[str, Any]
    benchmark: Benchmark
    agent_cls: type
    run: cfg.RunSettings
    agent_config: Any
    device: torch.device


def prepare(resolved: Mapping[str, Any]) -> Setup:
    bench = get_benchmark(resolved["env"])
    agent_cls = get_agent_class(resolved["algo"])
    run, agent_config = cfg.split_config(resolved, agent_cls)
    if agent_config.meta_batch_size % bench.task_multiple:
        raise UsageError(
            f"meta_batch_size {agent_config.meta_batch_size} must be a multiple of {bench.task_multiple} "
            f"for {bench.id} (tasks are balanced over its {bench.task_multiple} training classes)"
        )
    return Setup(dict(resolved), bench, agent_cls, run, agent_config, resolve_device(run.device))


def build_agent(setup: Setup) -> Agent:
    torch.set_num_threads(setup.run.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    seed_globals(setup.config["seed"])
    env_spec = EnvSpec.of(setup.benchmark)
    return setup.agent_cls(setup.agent_config, env_spec, setup.device, setup.config["seed"])


class TrainSampler:
    """The training batch of each iteration.

    First one trial in each of the iteration's `meta_batch_size` tasks, all at once. Then, while
    the batch holds fewer than `min_steps` environment steps (episodes that terminated early,
    e.g. a falling Ant), one more trial at a time in the next task of the iteration's list,
    cycling from the first: tasks[0], tasks[1], ... (garage's `LocalSampler.obtain_samples`,
    which TrMRL trains with, cycles over its per-task workers and stops as soon as the count is
    reached). Extra trial k uses the reset generator of slot `meta_batch_size + k`, so the first
    `meta_batch_size` trials are the same with or without the rule. `min_steps` 0: exactly
    `meta_batch_size` trials. Every stream used here is a function of (seed, iteration), so
    nothing needs saving for an exact resume.
    """

    def __init__(self, bench: Benchmark, seed: int, meta_batch: int, min_steps: int = 0):
        self.bench, self.seed, self.meta_batch, self.min_steps = bench, seed, meta_batch, min_steps
        self.spec = TrialSpec.for_training(bench)
        self.env = bench.make_env(meta_batch)
        self._single = None  # one-slot env for the extra trials, made when first needed

    @classmethod
    def for_agent(cls, bench: Benchmark, seed: int, agent_config: Any) -> "TrainSampler":
        meta_batch = agent_config.meta_batch_size
        full = meta_batch * bench.train_episodes * bench.episode_length
        return cls(bench, seed, meta_batch, full if getattr(agent_config, "fill_batch", False) else 0)

    def sample(self, agent: Agent, iteration: int) -> TrialBatch:
        bench, seed, meta_batch = self.bench, self.seed, self.meta_batch
        tasks = bench.sample_train_tasks(task_rng(seed, iteration), meta_batch)
        batch = run_trials(self.env, agent, tasks, self.spec, bench.episode_length,
                           env_rngs(seed, iteration, meta_batch), bench.obs_dim, bench.act_dim)
        if batch.env_steps >= self.min_steps:
            return batch
        if self._single is None:
            self._single = bench.make_env(1)
        trials, steps, k = [batch], batch.env_steps, 0
        while steps < self.min_steps:
            slot = meta_batch + k
            extra = run_trials(self._single, agent, [tasks[k % meta_batch]], self.spec, bench.episode_length,
                               [env_rng(seed, iteration, slot)], bench.obs_dim, bench.act_dim)
            trials.append(extra)
            steps += extra.env_steps
            k += 1
        return concat_trials(trials)

    def close(self) -> None:
        self.env.close()
        if self._single is not None:
            self._single.close()


class _StopFlag:
    """First SIGTERM/SIGINT: stop after this iteration with a checkpoint. Second SIGINT: now."""

    def __init__(self, progress: Progress):
        self.requested = False
        self.progress = progress
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.progress.message(f"{signal.Signals(signum).name} received: finishing this iteration, then checkpointing")

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


def train(
    resolved: Mapping[str, Any],
    run_dir: Path,
    ckpt_dir: Path,
    restart: bool = False,
    quiet: bool = False,
) -> int:
    """Train (or resume) one run; returns the process exit code. The run's lock is held from
    before the first write to the end, so a second process on the same run stops at once."""
    setup = prepare(resolved)
    # building the agent is the last check of the settings (those that depend on the benchmark),
    # so it comes before the lock, which is the first thing written
    agent = build_agent(setup)
    run_dir, ckpt_dir = Path(run_dir), Path(ckpt_dir)
    with RunLock(ckpt_dir, run_dir):
        remove_stale_temporaries(run_dir, ckpt_dir)
        return _train_locked(setup, agent, run_dir, ckpt_dir, restart, quiet)


def _train_locked(setup: Setup, agent: Agent, run_dir: Path, ckpt_dir: Path, restart: bool, quiet: bool) -> int:
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    model_path = run_dir / "model.pt"
    config_text = cfg.dump(setup.config)

    state = None
    if restart:
        ckpt_path.unlink(missing_ok=True)
        model_path.unlink(missing_ok=True)
    elif model_path.exists():
        existing = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else None
        if existing != config_text:
            raise UsageError(f"{run_dir} holds a finished run with another config (pass --restart to replace it)")
        if not quiet:
            print(f"run already complete: {run_dir}")
        return EXIT_OK
    elif ckpt_path.exists():
        try:
            state = load_checkpoint(ckpt_path)
        except CorruptCheckpoint as exc:
            raise UsageError(str(exc)) from None
        if state.get("config") != setup.config:
            raise UsageError(f"checkpoint {ckpt_path} was made with another config (pass --restart to discard it)")

    label = f"{setup.config['algo']}/{setup.benchmark.id}/seed{setup.config['seed']}"
    progress = Progress(setup.run.total_env_steps, label, quiet=quiet)
    with _StopFlag(progress) as stop:
        return _train(setup, agent, run_dir, ckpt_path, model_path, config_text, state, progress, stop)


def _train(setup: Setup, agent: Agent, run_dir: Path, ckpt_path: Path, model_path: Path, config_text: str,
           state: dict | None, progress: Progress, stop: _StopFlag) -> int:
    bench, run, seed = setup.benchmark, setup.run, setup.config["seed"]
    label = progress.label
    progress_log = CsvLog(run_dir / "progress.csv")
    eval_log = CsvLog(run_dir / "eval.csv", EVAL_COLUMNS)
    timings_log = CsvLog(run_dir / "timings.csv")
    evaluator = Evaluator(bench, seed, run.eval_tasks)
    attempts: list[dict[str, Any]] = []

    if state is not None:
        # config.yaml too: a workflow manager may have deleted a failed job's outputs
        atomic_write_text(run_dir / "config.yaml", config_text)
        agent.load_state_dict(state["agent"])
        set_global_rng_state(state["rng"])
        iteration, env_steps = state["iteration"], state["env_steps"]
        progress_log.restore(state["files"]["progress.csv"])
        eval_log.restore(state["files"]["eval.csv"])
        timings_log.restore(state["files"]["timings.csv"])
        attempts = list(state.get("attempts", []))
        progress.message(f"{label}: resuming from iteration {iteration} ({env_steps:,} env steps)")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", config_text)
        for log in (progress_log, eval_log, timings_log):
            log.restore("")
        iteration, env_steps = 0, 0
        eval_log.append_many(evaluator.evaluate(agent, "test", iteration, env_steps))
    attempts.append({"started_at_iteration": iteration, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})

    sampler = TrainSampler.for_agent(bench, seed, setup.agent_config)
    last_return = None
    final_test: dict[str, float] = {}  # summary of the latest evaluation: at the end, the final model's
    progress.begin(env_steps)
    try:
        while env_steps < run.total_env_steps:
            iteration += 1
            t0 = time.perf_counter()
            batch = sampler.sample(agent, iteration)
            env_steps += batch.env_steps
            t1 = time.perf_counter()
            metrics = agent.update(batch)
            t2 = time.perf_counter()

            last_return = float(batch.episode_returns.mean())
            row: dict[str, Any] = {
                "iteration": iteration,
                "env_steps": env_steps,
                "train_return": last_return,
                "train_return_first": float(batch.episode_returns[:, 0].mean()),
                "train_return_last": float(batch.episode_returns[:, -1].mean()),
            }
            if bench.has_success:
                row["train_success"] = float(batch.episode_success.mean())
            row.update({k: metrics[k] for k in sorted(metrics)})
            progress_log.append(row)

            finished = env_steps >= run.total_env_steps
            if finished or (run.eval_every and iteration % run.eval_every == 0):
                rows = evaluator.evaluate(agent, "test", iteration, env_steps)
                eval_log.append_many(rows)
                s = final_test = summarize(rows, bench)
                progress.message(
                    f"{label}: iter {iteration}  steps {env_steps:,}  test return first "
                    f"{s['first_return']:.3f} adapted {s['adapted_return']:.3f}"
                    + (f"  success {s['success_rate']:.2f}" if "success_rate" in s else "")
                )
            t3 = time.perf_counter()
            timings_log.append({
                "iteration": iteration,
                "env_steps": env_steps,
                "sample_s": round(t1 - t0, 4),
                "update_s": round(t2 - t1, 4),
                "eval_s": round(t3 - t2, 4),
                "sample_steps_per_s": round(batch.env_steps / max(t1 - t0, 1e-9), 1),
            })
            progress.update(iteration, env_steps, last_return)
            if finished:
                break
            if iteration % run.checkpoint_every == 0 or stop.requested:
                save_checkpoint(ckpt_path, {
                    "config": setup.config,
                    "iteration": iteration,
                    "env_steps": env_steps,
                    "agent": agent.state_dict(),
                    "rng": global_rng_state(),
                    "files": {
                        "progress.csv": progress_log.content,
                        "eval.csv": eval_log.content,
                        "timings.csv": timings_log.content,
                    },
                    "attempts": attempts,
                })
            if stop.requested:
                progress.message(f"{label}: checkpoint written at iteration {iteration}; rerun to resume")
                return EXIT_PREEMPTED
    finally:
        progress.close()
        sampler.close()
        evaluator.close()

    write_json(run_dir / "metadata.json", metadata(setup.device, run.threads, {
        "run": {k: setup.config[k] for k in cfg.IDENTITY_KEYS},
        "benchmark": {"id": bench.id, "split_seed": bench.split_seed, **bench.facts},
        "iterations": iteration,
        "env_steps": env_steps,
        "attempts": attempts,
        "final_test": final_test,
        # what `metarl verify` and the workflow's collect step check the files against
        "files": {name: file_record(run_dir / name) for name in RECORDED_FILES},
    }))
    # model.pt last: its presence marks a finished run
    atomic_torch_save(model_path, {
        "algo": setup.config["algo"],
        "config": setup.config,
        "iteration": iteration,
        "env_steps": env_steps,
        "state": agent.model_state(),
    })
    ckpt_path.unlink(missing_ok=True)
    progress.message(f"{label}: done: {env_steps:,} env steps, {iteration} iterations -> {run_dir}")
    return EXIT_OK


# ----------------------------------------------------------------------------- saved runs


def load_run(run_dir: Path, device: str | None = None, threads: int | None = None) -> tuple[Setup, Agent, dict]:
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
    except yaml.YAMLError:
        raise UsageError(f"{config_path} is not valid YAML") from None
    if not isinstance(resolved, dict) or "algo" not in resolved:
        raise UsageError(f"{config_path} is not a run config")
    if device is not None:
        resolved["device"] = device
    if threads is not None:
        resolved["threads"] = threads
    model = load_model(model_path)
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
    if split not in setup.benchmark.splits():
        raise UsageError(f"benchmark {setup.benchmark.id} has no split {split!r} "
                         f"(it has: {', '.join(setup.benchmark.splits())})")
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
        fields = line.rstrip("\n").split(",")
        if len(fields) != len(EVAL_COLUMNS) or not fields[0].isdigit():
            raise UsageError(f"{path} line {number} is not an evaluation row; `metarl verify` "
                             "says how to regenerate the file")
        if not (fields[2] == split and int(fields[0]) == iteration):
            body.append(line if line.endswith("\n") else line + "\n")
    return lines[0] + "".join(body)
