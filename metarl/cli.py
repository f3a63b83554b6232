"""`metarl`: the one command-line entry point (train, evaluate, verify, compare, envs, algos, config, bench).

Exit codes: 0 done; 1 unexpected failure (with a traceback); 2 bad input (one line on stderr,
nothing written); 3 the run is locked by another live process; 4 `verify` found problems;
74 the results directory cannot be written (read-only, full, permissions: one line naming the
path); 75 stopped by SIGTERM/SIGINT after writing a checkpoint (rerun to resume).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

# Before torch initialises CUDA: required for deterministic cuBLAS.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from metarl import config as cfg  # noqa: E402
from metarl.errors import EXIT_IO, EXIT_USAGE, UsageError  # noqa: E402

# Faults of the machine, not of the code: one line naming the path, exit EXIT_IO.
IO_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


class _Parser(argparse.ArgumentParser):
    """argparse, but bad usage is one line and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _seed(text: str) -> int:
    """--seed: an integer from 0 to 2**32-1 (one line naming the bound otherwise)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= seed <= cfg.SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**32-1 = {cfg.SEED_MAX}, got {seed}")
    return seed


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _video_size(text: str) -> tuple[int, int]:
    """--video-size WxH: positive even numbers (H.264's 4:2:0 colour needs them)."""
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0
            and int(width) % 2 == 0 and int(height) % 2 == 0):
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT in pixels, both even and positive (e.g. 480x320), "
                                         f"got {text!r}")
    return int(width), int(height)


def _add_identity(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", help="algorithm ID (see `metarl algos`)")
    p.add_argument("--env", help="benchmark ID (see `metarl envs`)")
    p.add_argument("--seed", type=_seed, help=f"run seed (an integer from 0 to 2**32-1 = {cfg.SEED_MAX})")
    p.add_argument("--preset", choices=cfg.PRESETS, default=None,
                   help="settings ladder: smoke (seconds), quick (minutes, real learning), paper (default)")
    p.add_argument("--variant", default=None,
                   help="name of this configuration (e.g. an ablation); part of the run directory (default: 'default')")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="YAML file of settings (and optionally algo/env/seed/preset/variant), applied after the presets")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (repeatable), e.g. --set total_env_steps=2e6 --set threads=2")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="torch device (same as --set device=...); auto = cuda when available")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads, and the threads MuJoCo environments step on (same as --set threads=N)")


def _resolve(args) -> dict:
    ident = cfg.identity_from(args.config, args.algo, args.env, args.seed, args.preset, args.variant)
    overrides = cfg.parse_set(args.set)
    if args.device is not None:
        overrides["device"] = args.device
    if args.threads is not None:
        overrides["threads"] = args.threads
    return cfg.resolve(ident["algo"], ident["env"], ident["seed"], ident["preset"], ident["variant"],
                       args.config, overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="metarl", description=__doc__.split("\n")[0],
                     epilog="Run `metarl COMMAND --help` for the options of a command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train one run (resumes automatically from its checkpoint)",
                       description="Train one (algorithm, benchmark, seed, variant) run. Results go to "
                       "results/runs/{env}/{algo}/{variant}/seed{seed}/; the resume state to results/ckpt/... "
                       "If a checkpoint exists with the same config, training resumes from it.")
    _add_identity(p)
    p.add_argument("--run-dir", type=Path, default=None, help="where the run's files go (default: results/runs/...)")
    p.add_argument("--ckpt-dir", type=Path, default=None, help="where the resume state goes (default: results/ckpt/...)")
    p.add_argument("--restart", action="store_true", help="discard any checkpoint or finished model and train from scratch")
    p.add_argument("--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("evaluate", help="evaluate a finished run on a split (appends to its eval.csv), or film it",
                       description="Run the evaluation protocol on a finished run's final model. Rows for the "
                       "same split and iteration are replaced, so rerunning is idempotent. With --video, film "
                       "the first trials instead (no rows written).")
    p.add_argument("--run", type=Path, required=True, metavar="DIR", help="run directory (holds config.yaml and model.pt)")
    p.add_argument("--split", default="test", help="split name: test, ood, or a benchmark's extra split (e.g. sweep)")
    p.add_argument("--out", type=Path, default=None, help="CSV to write (default: DIR/eval.csv)")
    p.add_argument("--tasks", type=int, default=None, help="evaluate only the first N tasks of the split (0: all)")
    p.add_argument("--export-memory", nargs="?", type=Path, const=True, default=None, metavar="FILE",
                   help="also write the agent's episodic memory (TrMRL: the policy-head input) at every step, "
                   "with task indices, episodes, steps and the split's task parameters, to FILE "
                   "(default: DIR/memory_{split}.npz)")
    p.add_argument("--steps", nargs="?", type=Path, const=True, default=None, metavar="FILE",
                   help="also write every step's reward to FILE (default: DIR/steps_{split}.npz): `reward` "
                   "[tasks, episodes, episode_length] float32, NaN after an episode that ended early, with "
                   "benchmark, split, iteration, env_steps, episode_length and task_labels; deterministic bytes")
    p.add_argument("--video", nargs="?", type=_positive, const=1, default=None, metavar="N",
                   help="instead of writing rows, film the first N trials of the split (default 1) off-screen: "
                   "one MP4 per trial, DIR/videos/{split}_task{index}.mp4, captioned with the task, episode, "
                   "step and return so far; per episode the reset state and a frame after every step, at the "
                   "environment's real time (1/dt: 20 fps for HalfCheetah and Ant). The trials are the evaluation's (same "
                   "seeds); their per-episode returns are printed; eval.csv is left as it is. MuJoCo and "
                   "Meta-World benchmarks; OpenGL from MUJOCO_GL (egl or osmesa; unset: egl where libEGL is "
                   "installed, else osmesa)")
    p.add_argument("--video-dir", type=Path, default=None, metavar="DIR",
                   help="where --video writes its MP4s (default: the run's videos/)")
    p.add_argument("--video-size", type=_video_size, default=None, metavar="WxH",
                   help="--video's frame size in pixels, both even (default 480x320)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="torch device")
    p.add_argument("--threads", type=int, default=None, help="torch threads")

    p = sub.add_parser("verify", help="check that every run's files are complete and intact",
                       description="List every run under each RESULTS_DIR (or each run directory given) as complete, "
                       "incomplete, missing files, corrupt or edited, with the problems found and the command "
                       "that regenerates the run. Checks: schema and types of progress.csv and eval*.csv, unique "
                       "(iteration, split, task, episode) keys, the row counts the evaluation protocol implies, "
                       "the SHA-256s recorded when the files were written, and that model.pt loads. "
                       "Exit code 0 when every run is complete and intact, 4 otherwise.")
    p.add_argument("results", nargs="*", type=Path, default=[Path("results")], metavar="RESULTS_DIR",
                   help="results directories (holding runs/ and ckpt/) or run directories (default: results)")

    p = sub.add_parser("compare", help="set your runs beside a results release's numbers",
                       description="Check a results release (`snakemake release`) against its MANIFEST.sha256 (a "
                       "missing, changed or unlisted file stops it, naming the file), then set your runs' numbers "
                       "beside the release's, per benchmark, algorithm and variant: for each side the number of "
                       "seeds, mean ± std and IQM over seeds of each run's final test adapted return, "
                       "first-episode return and success rate (where the benchmark has one), and the adapted "
                       "return of every other split both sides evaluated (ood, sweep); the difference of the "
                       "means; and, for the seeds both sides have, whether the per-seed numbers are identical. "
                       "Both sides' numbers come from the runs' eval.csv and eval_{split}.csv, by the same code. "
                       "Then each claim of the release's tables/claims.csv with the release's verdict and, where "
                       "RESULTS has a claims table, yours. Unfinished runs (no model.pt) are left out and counted.")
    p.add_argument("--release", type=Path, required=True, metavar="DIR",
                   help="the release: results/release, or an unpacked results/release.tar.gz")
    p.add_argument("results", nargs="?", type=Path, default=Path("results"), metavar="RESULTS",
                   help="your results directory (holding runs/ and, if made, tables/claims.csv), or another "
                   "release, whose manifest is checked too (default: results)")
    p.add_argument("--format", choices=("table", "csv"), default="table",
                   help="table (default): aligned plain text; csv: one row per metric (columns benchmark, "
                   "algorithm, variant, split, metric, then seeds, mean, std and iqm of release_ and results_, "
                   "difference, common_seeds, identical_seeds), then, after an empty line, one row per claim "
                   "(claim, release_verdict, results_verdict, statement)")

    p = sub.add_parser("envs", help="list the benchmark IDs", description="List the benchmarks of SPEC §3.")
    p.add_argument("--splits", metavar="ID", default=None, help="print the fixed evaluation tasks of one benchmark")

    sub.add_parser("algos", help="list the algorithm IDs", description="List the registered algorithms.")

    p = sub.add_parser("config", help="print the resolved config of a run as YAML",
                       description="Print the fully resolved settings (presets + --config + --set) as YAML.")
    _add_identity(p)
    p.add_argument("--out", type=Path, default=None, help="write the YAML to this file (atomically) instead of stdout")

    p = sub.add_parser("settings", help="list every setting (key, type, default, meaning)",
                       description="List the settings every algorithm understands and, with --algo, the "
                       "algorithm's own settings, with their types, defaults and meaning.")
    p.add_argument("--algo", default=None, help="also list this algorithm's settings")

    p = sub.add_parser("bench", help="measure sampling throughput against the raw simulator",
                       description="Measure env steps/s of the raw simulator, the trial sampler with the random "
                       "agent and with a 2x64 MLP policy, all in this run, and print them with their ratio to raw. "
                       "'raw' steps the benchmark's own environments directly (pre-drawn random actions, no tokens, "
                       "no policy).")
    p.add_argument("--env", action="append", default=None, metavar="ID",
                   help="benchmark to measure (repeatable; default: PointNav and every MuJoCo benchmark)")
    p.add_argument("--steps", type=int, default=20_000, help="env steps per measurement (default 20000)")
    p.add_argument("--slots", type=int, default=20, help="tasks run at once (default 20)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1); N > 1 adds raw_threads, sampler_random_threads and "
                   "sampler_mlp_threads: the environments' slots stepped on N threads, as in a run with threads N")
    p.add_argument("--algo", action="append", default=None, metavar="ID",
                   help="also time one training batch of this algorithm (repeatable), with its --preset "
                   "settings on the CPU: <algo>_sampling and <algo>_update in env steps per second, the "
                   "iteration's shares (<algo>_share_simulate, _policy, _sampler, _update), and the update's "
                   "FLOP rate against a large matmul's measured in the same run (<algo>_update_flops, matmul_peak)")
    p.add_argument("--preset", choices=cfg.PRESETS, default="paper", help="preset for --algo (default: paper)")
    p.add_argument("--format", choices=("table", "csv"), default="table",
                   help="output format; csv columns: benchmark,measure,value,unit,ratio,relative_to")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return _dispatch(args)
    except UsageError as exc:
        print(f"metarl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in IO_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"metarl: error: {where}{exc.strerror} (files already written are whole, the last "
              "checkpoint included; fix this and rerun the same command)", file=sys.stderr)
        return EXIT_IO


def _dispatch(args) -> int:
    if args.command == "envs":
        return _cmd_envs(args)
    if args.command == "algos":
        from metarl.registry import algorithms

        for name, target in sorted(algorithms().items()):
            print(f"{name:12s} {target}")
        return 0
    if args.command == "settings":
        from metarl.registry import get_agent_class

        groups = [("harness settings (every algorithm)", cfg.RunSettings)]
        if args.algo:
            groups.append((f"{args.algo} settings", get_agent_class(args.algo).Config))
        for title, cls in groups:
            print(f"{title}:")
            for key, type_name, default, text in cfg.describe(cls):
                print(f"  {key:22s} {type_name:28s} default {default!r:12s} {text}")
        return 0
    if args.command == "config":
        resolved = _resolve(args)
        text = cfg.dump(resolved)
        if args.out:
            from metarl.runs import atomic_write_text

            atomic_write_text(args.out, text)
        else:
            sys.stdout.write(text)
        return 0
    if args.command == "train":
        from metarl.runs import ckpt_dir_for, run_dir_for
        from metarl.training import train

        resolved = _resolve(args)
        run_dir = args.run_dir or run_dir_for(resolved["env"], resolved["algo"], resolved["variant"], resolved["seed"])
        ckpt_dir = args.ckpt_dir or ckpt_dir_for(run_dir)
        return train(resolved, run_dir, ckpt_dir, restart=args.restart, quiet=args.quiet)
    if args.command == "evaluate" and args.video is not None:
        return _cmd_video(args)
    if args.command == "evaluate":
        from metarl.saved_runs import evaluate_run

        if args.video_dir is not None or args.video_size is not None:
            raise UsageError("--video-dir and --video-size need --video")

        memory_out = args.export_memory
        if memory_out is True:
            memory_out = args.run / f"memory_{args.split}.npz"
        steps_out = args.steps
        if steps_out is True:
            steps_out = args.run / f"steps_{args.split}.npz"
        _, s = evaluate_run(args.run, args.split, args.out, args.tasks, args.device, args.threads, memory_out,
                            steps_out)
        print(f"{args.run} [{args.split}]: first-episode return {s['first_return']:.3f}, adapted return "
              f"{s['adapted_return']:.3f}" + (f", success {s['success_rate']:.2f}" if "success_rate" in s else ""))
        return 0
    if args.command == "verify":
        from metarl.verify import verify

        return verify(args.results)
    if args.command == "compare":
        from metarl.compare import compare

        return compare(args.release, args.results, args.format)
    if args.command == "bench":
        from metarl.bench import run_bench

        return run_bench(args)
    raise UsageError(f"unknown command {args.command!r}")


def _cmd_video(args) -> int:
    from metarl.runs import format_value
    from metarl.video import record_videos

    if args.out is not None or args.export_memory is not None or args.steps is not None:
        raise UsageError("--video writes no rows or arrays: it cannot be combined with --out, --export-memory or --steps")
    for video in record_videos(args.run, args.split, args.video, args.video_dir, args.video_size or (480, 320),
                               args.tasks, args.device, args.threads):
        returns = " ".join(format_value(r) for r in video.returns)
        print(f"{video.path}: {args.split} task {video.task} ({video.label}), {video.frames} frames; "
              f"episode returns {returns}")
    return 0


def _cmd_envs(args) -> int:
    from metarl.envs import BENCHMARK_IDS, get_benchmark

    if args.splits:
        bench = get_benchmark(args.splits)
        for split, tasks in bench.splits().items():
            for i, task in enumerate(tasks):
                print(f"{split}\t{i}\t{task.label}")
        return 0
    for name in BENCHMARK_IDS:
        try:
            bench = get_benchmark(name)
            summary = bench.summary
        except ImportError as exc:  # e.g. Meta-World not installed
            summary = f"(unavailable: {exc})"
        print(f"{name:15s} {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
