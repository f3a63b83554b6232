"""Where a run's scalars go besides its CSV logs: TensorBoard event files in the run's tb/ (on by
default, `--set tensorboard=false` turns them off) and Weights & Biases (`--set wandb=offline` or
`online`; the `[wandb]` extra).

Every scalar's step is the run's env_steps:

- `progress/<column>`: every progress.csv column but env_steps (iteration included);
- `eval/<split>/first_return`, `adapted_return`, `success_rate`: each evaluation's summary
  (`evaluation.summarize`);
- `time/sample_s`, `update_s`, `eval_s`, `sample_steps_per_s` (timings.csv), and
  `time/steps_per_s`: the iteration's env steps over its sampling, update and evaluation time.

Both are views of the logs, never part of the deterministic files. Each process that trains a
run starts tb/ anew and first writes what the logs already hold (`Tracker.replay`: the restored
logs of a resumed run), so after any kill and resume the event files hold each step once. W&B
keeps one run per metarl run (the same id across resumes) and skips the steps an earlier process
already sent it (`WandbWriter`). The packages are imported only when used.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import os
import shutil
import socket
import struct
import time
from pathlib import Path
from typing import Any, Mapping

from metarl import config as cfg
from metarl.envs.base import Benchmark
from metarl.errors import UsageError
from metarl.evaluation import read_eval_rows, summarize
from metarl.runs import write_json

TB_DIR = "tb"
TIMING_COLUMNS = ("sample_s", "update_s", "eval_s", "sample_steps_per_s")


def check_available(run: cfg.RunSettings) -> None:
    """One line naming a package the settings need and that is not installed (called before
    anything is written)."""
    if run.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UsageError("tensorboard is not installed: pip install -r requirements.txt, or --set tensorboard=false")
    if run.wandb != "off" and importlib.util.find_spec("wandb") is None:
        raise UsageError(f"setting wandb={run.wandb} needs the wandb package, which is not installed: "
                         "pip install -e .[wandb]")


class Tracker:
    """Collects one step's scalars (`progress`, `evaluation`, `timings`) and hands them to every
    writer at `flush` (the end of each iteration)."""

    def __init__(self, writers: list, benchmark: Benchmark):
        self.writers = writers
        self.benchmark = benchmark
        self._step: int | None = None
        self._scalars: dict[str, float] = {}
        self._timed_steps = 0  # env_steps of the previous timings row

    def _add(self, step: int, scalars: Mapping[str, Any]) -> None:
        if self._scalars and step != self._step:
            self.flush()
        self._step = step
        self._scalars.update({tag: float(v) for tag, v in scalars.items() if v is not None})

    def progress(self, row: Mapping[str, Any]) -> None:
        self._add(int(row["env_steps"]), {f"progress/{k}": v for k, v in row.items() if k != "env_steps"})

    def evaluation(self, split: str, env_steps: int, summary: Mapping[str, float]) -> None:
        self._add(env_steps, {f"eval/{split}/{k}": v for k, v in summary.items()})

    def timings(self, row: Mapping[str, Any]) -> None:
        steps = int(row["env_steps"])
        scalars = {f"time/{k}": row[k] for k in TIMING_COLUMNS}
        seconds = sum(float(row[k]) for k in ("sample_s", "update_s", "eval_s"))
        if seconds > 0:
            scalars["time/steps_per_s"] = (steps - self._timed_steps) / seconds
        self._timed_steps = steps
        self._add(steps, scalars)

    def flush(self) -> None:
        for writer in self.writers:
            if self._scalars:
                writer.write(self._step, self._scalars)
            writer.flush()
        self._scalars = {}

    def replay(self, files: Mapping[str, str]) -> None:
        """Send what the logs hold (`RunFiles.snapshot()`), iteration by iteration, in the order
        training sends it."""
        if not self.writers:
            return
        progress = {int(r["iteration"]): r for r in _csv_rows(files["progress.csv"])}
        timings = {int(r["iteration"]): r for r in _csv_rows(files["timings.csv"])}
        evals: dict[int, dict[str, list[dict[str, Any]]]] = {}
        for row in read_eval_rows(files["eval.csv"]):
            evals.setdefault(row["iteration"], {}).setdefault(row["split"], []).append(row)
        for iteration in sorted(set(progress) | set(evals) | set(timings)):
            if iteration in progress:
                self.progress(progress[iteration])
            for split, rows in evals.get(iteration, {}).items():
                self.evaluation(split, rows[0]["env_steps"], summarize(rows, self.benchmark))
            if iteration in timings:
                self.timings(timings[iteration])
            self.flush()

    def close(self, exit_code: int) -> None:
        self.flush()
        for writer in self.writers:
            writer.close(exit_code)


def _csv_rows(text: str) -> list[dict[str, str]]:
    """The rows of a CSV log's text, empty cells left out."""
    return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(io.StringIO(text))]


def open_tracker(config: Mapping[str, Any], benchmark: Benchmark, run_dir: Path, first_started: str) -> Tracker:
    """The writers `config`'s tracking settings ask for. tb/ is always removed first (also when
    TensorBoard is now off, so no stale steps survive); `replay` fills the new one.
    `first_started`: when the run's first attempt started (its W&B run's identity)."""
    shutil.rmtree(run_dir / TB_DIR, ignore_errors=True)
    writers: list = []
    if config["tensorboard"]:
        writers.append(TensorBoardWriter(run_dir / TB_DIR))
    if config["wandb"] != "off":
        writers.append(WandbWriter(config, run_dir, first_started))
    return Tracker(writers, benchmark)


# ----------------------------------------------------------------------------- TensorBoard


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
        table.append(n)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C (Castagnoli), rotated and offset."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TensorBoardWriter:
    """One event file in `tb_dir`: TFRecords (length, its checksum, data, its checksum) of
    `Event` protobufs, one per step with every scalar of the step. Written with tensorboard's
    protobufs alone: its own writer (`EventFileWriter`) costs 0.19 s more to import, these 0.03 s."""

    def __init__(self, tb_dir: Path):
        from tensorboard.compat.proto import event_pb2, summary_pb2

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        tb_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._file = open(tb_dir / name, "ab")
        self._record(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    def _record(self, event) -> None:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", masked_crc32c(header)) + data
                         + struct.pack("<I", masked_crc32c(data)))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        values = [self._summary.Value(tag=tag, simple_value=v) for tag, v in scalars.items()]
        self._record(self._event(wall_time=time.time(), step=step, summary=self._summary(value=values)))

    def flush(self) -> None:
        self._file.flush()  # a live TensorBoard sees every finished iteration

    def close(self, exit_code: int) -> None:
        self._file.close()


# ----------------------------------------------------------------------------- Weights & Biases

WANDB_DIR = "wandb"
LOGGED_NAME = "metarl-logged.json"  # {"id": W&B run id, "step": the last step sent to it}


def wandb_id(config: Mapping[str, Any], first_started: str) -> str:
    """The run's W&B id: its config (tracking settings aside) and when its first attempt started,
    so resumes continue one W&B run and a --restart (a new first attempt) starts another."""
    text = cfg.dump(cfg.without_tracking(config)) + first_started
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class WandbWriter:
    """The W&B run of a metarl run, under the run directory (`run_dir/wandb/`): name
    env/algo/variant/seed<seed>, group env/algo/variant, project $WANDB_PROJECT (default
    metarl-bench), config the resolved config. Steps up to the last one an earlier process of
    the same W&B run sent (recorded in wandb/metarl-logged.json) are not sent again."""

    def __init__(self, config: Mapping[str, Any], run_dir: Path, first_started: str):
        import wandb

        self._wandb = wandb
        self._id = wandb_id(config, first_started)
        self._logged_path = run_dir / WANDB_DIR / LOGGED_NAME
        self._logged = self._last_logged()
        group = f"{config['env']}/{config['algo']}/{config['variant']}"
        try:
            self._run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "metarl-bench"), name=f"{group}/seed{config['seed']}",
                group=group, id=self._id, resume="allow", dir=str(run_dir), config=dict(config), mode=config["wandb"],
                # metarl's own output stays as it is (the workflow's logs hold it)
                settings=wandb.Settings(console="off"),
            )
        except wandb.Error as exc:  # e.g. online without an API key
            raise UsageError(f"wandb: {' '.join(str(exc).split())}") from None

    def _last_logged(self) -> int:
        try:
            logged = json.loads(self._logged_path.read_text())
        except (OSError, ValueError):
            return -1
        return logged["step"] if isinstance(logged, dict) and logged.get("id") == self._id else -1

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if step <= self._logged:
            return
        self._run.log(dict(scalars), step=step)
        self._logged = step
        write_json(self._logged_path, {"id": self._id, "step": step})

    def flush(self) -> None:
        """Nothing to do: wandb sends each step as it comes."""

    def close(self, exit_code: int) -> None:
        self._run.finish(exit_code=exit_code)
        self._wandb.teardown()  # stops wandb's service process
