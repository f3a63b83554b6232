"""The training loop, written once for every algorithm, with exact resume.

Each iteration: sample `meta_batch_size` training tasks, run one training trial in each (one
batched policy call per step); for an agent whose config sets `fill_batch` (TrMRL, as garage's
sampler does) run more trials until the batch is full (see `TrainSampler`); count their
environment steps against the budget, let the agent update, log a `progress.csv` row, evaluate
the test split every `eval_every` iterations (and before the first and after the last), and
every `checkpoint_every` iterations write the full training state atomically. The same scalars
also go to TensorBoard and W&B as the settings ask (`metarl.tracking`). A run killed at
any moment restarts from its last checkpoint and ends with the same bytes as one that never
stopped; SIGTERM (or Ctrl-C) finishes the current iteration, writes a checkpoint and exits with
`EXIT_PREEMPTED`.

A run's set-up (config to agent) is `metarl.setup`; using a finished run again, `metarl.saved_runs`.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from metarl import config as cfg
from metarl.agent import Agent, TrialSpec
from metarl.envs.base import Benchmark
from metarl.errors import EXIT_OK, EXIT_PREEMPTED, UsageError
from metarl.evaluation import Evaluator, summarize
from metarl.progress import Progress
from metarl.runs import (
    CorruptCheckpoint,
    RunFiles,
    RunLock,
    atomic_torch_save,
    atomic_write_text,
    file_record,
    load_checkpoint,
    metadata,
    remove_stale_temporaries,
    save_checkpoint,
    write_json,
)
from metarl.sampling import TrialBatch, concat_trials, run_trials
from metarl.seeding import env_rng, env_rngs, global_rng_state, set_global_rng_state, task_rng
from metarl.setup import Setup, build_agent, prepare
from metarl.tracking import Tracker, check_available, open_tracker

CHECKPOINT_NAME = "state.ckpt"


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
        batch = run_trials(self.env, agent, tasks, self.spec, env_rngs(seed, iteration, meta_batch))
        if batch.env_steps >= self.min_steps:
            return batch
        if self._single is None:
            self._single = bench.make_env(1)
        trials, steps, k = [batch], batch.env_steps, 0
        while steps < self.min_steps:
            slot = meta_batch + k
            extra = run_trials(self._single, agent, [tasks[k % meta_batch]], self.spec,
                               [env_rng(seed, iteration, slot)])
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
    check_available(setup.run)
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
        if _saved_config(run_dir) != cfg.without_tracking(setup.config):
            raise UsageError(f"{run_dir} holds a finished run with another config (pass --restart to replace it)")
        if not quiet:
            print(f"run already complete: {run_dir}")
        return EXIT_OK
    elif ckpt_path.exists():
        try:
            state = load_checkpoint(ckpt_path)
        except CorruptCheckpoint as exc:
            raise UsageError(str(exc)) from None
        if cfg.without_tracking(state.get("config") or {}) != cfg.without_tracking(setup.config):
            raise UsageError(f"checkpoint {ckpt_path} was made with another config (pass --restart to discard it)")

    label = f"{setup.config['algo']}/{setup.benchmark.id}/seed{setup.config['seed']}"
    progress = Progress(setup.run.total_env_steps, label, quiet=quiet)
    with _StopFlag(progress) as stop:
        return _train(setup, agent, run_dir, ckpt_path, model_path, config_text, state, progress, stop)


def _saved_config(run_dir: Path) -> dict | None:
    """A finished run's config.yaml without its tracking settings (where its scalars were also
    sent does not make it another run), or None."""
    import yaml

    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return cfg.without_tracking(saved) if isinstance(saved, dict) else None


@dataclass
class _Position:
    """How far a run has got: what the checkpoint and metadata.json record besides the agent."""

    iteration: int = 0
    env_steps: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)  # one per process that trained it
    final_test: dict[str, float] = field(default_factory=dict)  # summary of the latest evaluation


def _train(setup: Setup, agent: Agent, run_dir: Path, ckpt_path: Path, model_path: Path, config_text: str,
           state: dict | None, progress: Progress, stop: _StopFlag) -> int:
    """Restore or start, iterate until the budget is spent (checkpointing on schedule or when
    asked to stop), then write the finished run's files."""
    run, label = setup.run, progress.label
    files = RunFiles(run_dir)
    evaluator = Evaluator(setup.benchmark, setup.config["seed"], run.eval_tasks)
    if state is not None:
        pos = _resume(state, agent, files, run_dir, config_text, progress)
    else:
        pos = _start(agent, files, evaluator, run_dir, config_text)
    pos.attempts.append({"started_at_iteration": pos.iteration, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})

    tracker = open_tracker(setup.config, setup.benchmark, run_dir, pos.attempts[0]["time"])
    sampler = TrainSampler.for_agent(setup.benchmark, setup.config["seed"], setup.agent_config)
    progress.begin(pos.env_steps)
    exit_code = 1  # what W&B records when an error ends the run
    try:
        tracker.replay(files.snapshot())  # a resumed run's logs so far; a new run's first evaluation
        while pos.env_steps < run.total_env_steps:
            if _iteration(setup, agent, sampler, evaluator, files, tracker, pos, progress):
                break  # the last iteration: no checkpoint, the finished files follow
            if pos.iteration % run.checkpoint_every == 0 or stop.requested:
                _checkpoint(ckpt_path, setup, agent, files, pos)
            if stop.requested:
                progress.message(f"{label}: checkpoint written at iteration {pos.iteration}; rerun to resume")
                exit_code = EXIT_PREEMPTED
                return exit_code
        _finish(setup, agent, run_dir, model_path, pos)
        ckpt_path.unlink(missing_ok=True)
        exit_code = EXIT_OK
    finally:
        progress.close()
        sampler.close()
        evaluator.close()
        tracker.close(exit_code)

    progress.message(f"{label}: done: {pos.env_steps:,} env steps, {pos.iteration} iterations -> {run_dir}")
    return EXIT_OK


def _resume(state: dict, agent: Agent, files: RunFiles, run_dir: Path, config_text: str,
            progress: Progress) -> _Position:
    """Continue from a checkpoint: the agent, the global generators and the logs as they were."""
    # config.yaml too: a workflow manager may have deleted a failed job's outputs
    atomic_write_text(run_dir / "config.yaml", config_text)
    agent.load_state_dict(state["agent"])
    set_global_rng_state(state["rng"])
    pos = _Position(state["iteration"], state["env_steps"], list(state.get("attempts", [])))
    files.restore(state["files"])
    progress.message(f"{progress.label}: resuming from iteration {pos.iteration} ({pos.env_steps:,} env steps)")
    return pos


def _start(agent: Agent, files: RunFiles, evaluator: Evaluator, run_dir: Path, config_text: str) -> _Position:
    """A new run: its config, empty logs, and the test evaluation of the untrained agent."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config_text)
    files.start()
    pos = _Position()
    files.log_eval(evaluator.evaluate(agent, "test", pos.iteration, pos.env_steps))
    return pos


def _iteration(setup: Setup, agent: Agent, sampler: TrainSampler, evaluator: Evaluator, files: RunFiles,
               tracker: Tracker, pos: _Position, progress: Progress) -> bool:
    """One iteration: sample the training batch, update, log its progress row, evaluate on the
    schedule (and after the last), log its timings; the tracker gets each of them. True when it
    spent the budget."""
    run = setup.run
    pos.iteration += 1
    t0 = time.perf_counter()
    batch = sampler.sample(agent, pos.iteration)
    pos.env_steps += batch.env_steps
    t1 = time.perf_counter()
    metrics = agent.update(batch)
    t2 = time.perf_counter()
    row = _progress_row(setup.benchmark, pos, batch, metrics)
    files.log_progress(row)
    tracker.progress(row)
    finished = pos.env_steps >= run.total_env_steps
    if finished or (run.eval_every and pos.iteration % run.eval_every == 0):
        _evaluate(setup.benchmark, agent, evaluator, files, tracker, pos, progress)
    t3 = time.perf_counter()
    timings = {
        "iteration": pos.iteration,
        "env_steps": pos.env_steps,
        "sample_s": round(t1 - t0, 4),
        "update_s": round(t2 - t1, 4),
        "eval_s": round(t3 - t2, 4),
        "sample_steps_per_s": round(batch.env_steps / max(t1 - t0, 1e-9), 1),
    }
    files.log_timings(timings)
    tracker.timings(timings)
    tracker.flush()
    progress.update(pos.iteration, pos.env_steps, row["train_return"])
    return finished


def _progress_row(bench: Benchmark, pos: _Position, batch: TrialBatch, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The iteration's progress.csv row: its training returns, then the agent's metrics by name."""
    row: dict[str, Any] = {
        "iteration": pos.iteration,
        "env_steps": pos.env_steps,
        "train_return": float(batch.episode_returns.mean()),
        "train_return_first": float(batch.episode_returns[:, 0].mean()),
        "train_return_last": float(batch.episode_returns[:, -1].mean()),
    }
    if bench.has_success:
        row["train_success"] = float(batch.episode_success.mean())
    row.update({k: metrics[k] for k in sorted(metrics)})
    return row


def _evaluate(bench: Benchmark, agent: Agent, evaluator: Evaluator, files: RunFiles, tracker: Tracker,
              pos: _Position, progress: Progress) -> None:
    """Evaluate on the test split, log the rows and their summary, and say how the agent does."""
    rows = evaluator.evaluate(agent, "test", pos.iteration, pos.env_steps)
    files.log_eval(rows)
    s = pos.final_test = summarize(rows, bench)
    tracker.evaluation("test", pos.env_steps, s)
    progress.message(
        f"{progress.label}: iter {pos.iteration}  steps {pos.env_steps:,}  test return first "
        f"{s['first_return']:.3f} adapted {s['adapted_return']:.3f}"
        + (f"  success {s['success_rate']:.2f}" if "success_rate" in s else "")
    )


def _checkpoint(ckpt_path: Path, setup: Setup, agent: Agent, files: RunFiles, pos: _Position) -> None:
    """The full training state, written atomically: what an exact resume needs."""
    save_checkpoint(ckpt_path, {
        "config": setup.config,
        "iteration": pos.iteration,
        "env_steps": pos.env_steps,
        "agent": agent.state_dict(),
        "rng": global_rng_state(),
        "files": files.snapshot(),
        "attempts": pos.attempts,
    })


def _finish(setup: Setup, agent: Agent, run_dir: Path, model_path: Path, pos: _Position) -> None:
    """metadata.json (with the SHA-256 of every log), then model.pt, whose presence marks a
    finished run."""
    write_json(run_dir / "metadata.json", metadata(setup.device, setup.run.threads, {
        "run": {k: setup.config[k] for k in cfg.IDENTITY_KEYS},
        "benchmark": setup.benchmark.record(),
        "iterations": pos.iteration,
        "env_steps": pos.env_steps,
        "attempts": pos.attempts,
        "final_test": pos.final_test,
        # what `metarl verify` (also the workflow's verify_runs step) checks the files against
        "files": {name: file_record(run_dir / name) for name in RunFiles.NAMES},
    }))
    atomic_torch_save(model_path, {
        "algo": setup.config["algo"],
        "config": setup.config,
        "iteration": pos.iteration,
        "env_steps": pos.env_steps,
        "state": agent.model_state(),
    })
