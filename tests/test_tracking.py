"""TensorBoard and W&B tracking (metarl.tracking): the event files hold progress.csv's steps and
values, the evaluation summaries and the timings, read back with TensorBoard's own readers; each
step once after a SIGKILL and resume; the tracking settings change no byte of the logs and never
make a run "another config"; W&B offline keeps the config and the scalars in the run directory."""

from __future__ import annotations

import csv
import json
import io
import signal
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from metarl.envs import get_benchmark
from metarl.evaluation import summarize
from metarl.registry import get_agent_class
from metarl.runs import ckpt_dir_for, load_checkpoint, run_dir_for

from conftest import REPO, files_of, popen_cli, run_cli

RL2 = ["train", "--algo", "rl2", "--env", "PointNav", "--seed", "1", "--preset", "smoke",
       "--set", "total_env_steps=800"]
RL2_RUN = run_dir_for("PointNav", "rl2", "default", 1)
# long enough to be killed past a checkpoint: 75 iterations, a checkpoint every 10
RANDOM = ["train", "--algo", "random", "--env", "PointNav", "--seed", "1", "--preset", "smoke",
          "--set", "total_env_steps=6000", "--set", "checkpoint_every=10"]
RANDOM_RUN = run_dir_for("PointNav", "random", "default", 1)
CKPT = ckpt_dir_for(RANDOM_RUN) / "state.ckpt"
# nothing leaves the machine, whatever the environment says
OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_API_KEY": "", "WANDB_PROJECT": "metarl-test"}


def csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def tb_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every scalar in every event file of `tb_dir`, as written (the raw
    events, duplicates kept: EventAccumulator would hide them)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def expected_scalars(run_dir: Path, benchmark: str = "PointNav") -> dict[str, list[tuple[int, float]]]:
    """What the event files must hold, from the run's own CSV files (values as float32, which
    TensorBoard stores)."""
    f32 = lambda x: float(np.float32(float(x)))  # noqa: E731
    out: dict[str, list[tuple[int, float]]] = {}
    for row in csv_rows(run_dir / "progress.csv"):
        for key, value in row.items():
            if key != "env_steps":
                out.setdefault(f"progress/{key}", []).append((int(row["env_steps"]), f32(value)))
    bench = get_benchmark(benchmark)
    evals: dict[int, list[dict]] = {}
    for r in csv_rows(run_dir / "eval.csv"):
        evals.setdefault(int(r["env_steps"]), []).append(
            {"episode": int(r["episode"]), "return": float(r["return"]), "scored": r["scored"] == "1"})
    for steps, rows in sorted(evals.items()):
        for key, value in summarize(rows, bench).items():
            out.setdefault(f"eval/test/{key}", []).append((steps, f32(value)))
    for row in csv_rows(run_dir / "timings.csv"):
        for key in ("sample_s", "update_s", "eval_s", "sample_steps_per_s"):
            out.setdefault(f"time/{key}", []).append((int(row["env_steps"]), f32(row[key])))
    return out


def test_masked_crc32c_is_tensorboards():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as theirs

    from metarl.tracking import masked_crc32c

    for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
        assert masked_crc32c(data) == theirs(data)


@pytest.fixture(scope="module")
def rl2_run(tmp_path_factory) -> Path:
    """A short RL² run on PointNav (its progress.csv has the agent's metrics too)."""
    work = tmp_path_factory.mktemp("rl2")
    run_cli(RL2, cwd=work)
    return work / RL2_RUN


def test_event_files_hold_the_logs(rl2_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(rl2_run / "tb"))
    accumulator.Reload()
    expected = expected_scalars(rl2_run)
    assert {"progress/iteration", "progress/entropy", "eval/test/adapted_return"} <= set(expected)
    tags = set(accumulator.Tags()["scalars"])
    assert tags == set(expected) | {"time/steps_per_s"}
    for tag, points in expected.items():
        assert [(e.step, e.value) for e in accumulator.Scalars(tag)] == points, tag
    # the iteration's env steps per second of its sampling, update and evaluation time
    timings = csv_rows(rl2_run / "timings.csv")
    seconds = [sum(float(r[k]) for k in ("sample_s", "update_s", "eval_s")) for r in timings]
    steps = [int(r["env_steps"]) for r in timings]
    per_s = [(b - a) / s for a, b, s in zip([0] + steps, steps, seconds)]
    assert [e.value for e in accumulator.Scalars("time/steps_per_s")] == pytest.approx(per_s, rel=1e-6)
    # every record's checksums are TFRecord's
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    (events,) = (rl2_run / "tb").glob("events.out.tfevents.*")
    data, pos = events.read_bytes(), 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        body = data[pos + 12:pos + 12 + length]
        assert struct.unpack("<II", data[pos + 8:pos + 12] + data[pos + 12 + length:pos + 16 + length]) == (
            masked_crc32c(header), masked_crc32c(body))
        pos += 16 + length
    assert pos == len(data)
    # tb/ is no part of the run's recorded files, and `metarl verify` takes no notice of it
    from metarl.verify import COMPLETE, check_run

    assert set(json.loads((rl2_run / "metadata.json").read_text())["files"]) == {
        "progress.csv", "eval.csv", "timings.csv"}
    assert check_run(rl2_run).status == COMPLETE


def kill_after_checkpoint(args: list[str], cwd: Path, sig: int = signal.SIGKILL, env: dict | None = None):
    """Start `metarl ARGS`, send `sig` once its first checkpoint is written and a few iterations
    later; returns the finished process."""
    proc = popen_cli(args, cwd, env)
    start = time.monotonic()
    while not (cwd / CKPT).exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - start < 120
        time.sleep(0.02)
    time.sleep(0.3)
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.communicate(timeout=120)
    return proc


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> Path:
    """A run killed (SIGKILL) past a checkpoint and resumed, TensorBoard on throughout; returns
    its working directory. The killed process's event files already held the steps past the
    checkpoint, which the resumed process trains again."""
    work = tmp_path_factory.mktemp("killed")
    proc = kill_after_checkpoint(RANDOM, work)
    assert proc.returncode == -signal.SIGKILL, "finished before it could be killed; make the run longer"
    run = work / RANDOM_RUN
    checkpointed = load_checkpoint(work / CKPT)["iteration"]
    assert len(csv_rows(run / "progress.csv")) > checkpointed, "killed at its checkpoint: kill later"
    assert max(s for s, _ in tb_scalars(run / "tb")["progress/iteration"]) > checkpointed * 80
    resumed = run_cli(RANDOM, cwd=work)
    assert f"resuming from iteration {checkpointed}" in resumed.stderr
    return work


def test_sigkill_then_resume_holds_each_step_once(killed_and_resumed):
    run = killed_and_resumed / RANDOM_RUN
    scalars = tb_scalars(run / "tb")
    for tag, points in expected_scalars(run).items():
        assert scalars[tag] == points, tag  # each step once, in order, the logs' values


def test_tracking_settings_change_no_bytes_and_no_run(tmp_path, killed_and_resumed):
    run = tmp_path / RANDOM_RUN
    (run / "tb").mkdir(parents=True)
    (run / "tb" / "events.out.tfevents.0.stale").write_bytes(b"stale")
    # a run started (or --restart-ed) removes tb/; with TensorBoard off it writes none
    proc = kill_after_checkpoint(RANDOM + ["--set", "tensorboard=false"], tmp_path)
    assert proc.returncode == -signal.SIGKILL, "finished before it could be killed; make the run longer"
    assert not (run / "tb").exists()
    # resumed with TensorBoard on: tb/ holds the steps before the kill too (from the restored logs)
    resumed = run_cli(RANDOM, cwd=tmp_path)
    assert "resuming from iteration" in resumed.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["tensorboard"] is True
    scalars = tb_scalars(run / "tb")
    for tag, points in expected_scalars(run).items():
        assert scalars[tag] == points, tag
    # the same bytes as the run with TensorBoard on throughout
    assert files_of(run) == files_of(killed_and_resumed / RANDOM_RUN)
    # a finished run asked again with other tracking values is the same run
    again = run_cli(RANDOM + ["--set", "tensorboard=false"], cwd=tmp_path)
    assert "already complete" in again.stdout


def test_config_without_tracking_settings_is_the_same_run(tmp_path):
    """config.yaml of a run finished before the tracking settings existed, and the workflow's
    rerun trigger (resolved_settings) and collect check, all leave them out."""
    from metarl import config as cfg
    from metarl.training import _saved_config

    resolved = cfg.resolve("random", "PointNav", 1, "smoke", overrides={"tensorboard": False, "wandb": "online"})
    old = {k: v for k, v in resolved.items() if k not in ("tensorboard", "wandb")}
    (tmp_path / "config.yaml").write_text(cfg.dump(old))
    assert _saved_config(tmp_path) == cfg.without_tracking(resolved) == old
    run_settings, _ = cfg.split_config(old, get_agent_class("random"))
    assert (run_settings.tensorboard, run_settings.wandb) == (True, "off")  # the defaults
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
    import collect

    assert collect.TRACKING_KEYS == cfg.TRACKING_KEYS
    collect.check_config(tmp_path, resolved, old)  # passes: only tracking settings differ
    with pytest.raises(SystemExit, match="trained with other settings"):
        collect.check_config(tmp_path, {**resolved, "eval_every": 3}, old)


def test_missing_wandb_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from metarl.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)  # unimportable, as if not installed
    monkeypatch.chdir(tmp_path)
    assert main(RL2 + ["--set", "wandb=offline"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "metarl: error: setting wandb=offline needs the wandb package, which is not installed: "
        "pip install -e .[wandb]"]
    assert list(tmp_path.iterdir()) == []


def test_settings_lists_the_tracking_settings():
    out = run_cli(["settings"], cwd=REPO).stdout
    assert "tensorboard" in out and "TensorBoard event files" in out
    assert "wandb" in out and "'offline'" in out and "Weights & Biases" in out


# ----------------------------------------------------------------------------- W&B offline


def wandb_records(path: Path) -> list:
    """The records of a W&B offline run's .wandb file: wandb's append-only log (the file header
    ':W&B', 0xBEE1, version; then 32 KiB blocks of chunks, each with a 7-byte header: checksum,
    length, type (1 full, 2 first, 3 middle, 4 last)), each record a `Record` protobuf."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, pending, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(run_dir: Path) -> dict:
    """What the offline runs under run_dir/wandb/ hold: their run records, config and history."""
    runs, config, history, exits = [], {}, [], 0
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                runs.append(record.run)
                config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            elif kind == "exit":
                exits += 1
    return {"runs": runs, "config": config, "history": history, "exits": exits}


@pytest.fixture
def wandb_offline():
    pytest.importorskip("wandb", reason="wandb is the optional [wandb] extra: pip install -e .[wandb]")
    return OFFLINE


def test_wandb_offline_holds_config_and_scalars(tmp_path, wandb_offline, rl2_run):
    run_cli(RL2 + ["--set", "wandb=offline"], cwd=tmp_path, env=wandb_offline)
    run = tmp_path / RL2_RUN
    assert files_of(run) == files_of(rl2_run)
    logged = wandb_run(run)
    (record,) = logged["runs"]
    assert (record.display_name, record.run_group, record.project) == (
        "PointNav/rl2/default/seed1", "PointNav/rl2/default", "metarl-test")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert {k: v for k, v in logged["config"].items() if k != "_wandb"} == config
    assert logged["exits"] == 1  # run.finish() ran
    by_step = {row["_step"]: row for row in logged["history"]}
    assert len(by_step) == len(logged["history"])  # each step once
    for tag, points in expected_scalars(run).items():
        assert [(s, float(np.float32(by_step[s][tag]))) for s, _ in points] == points, tag
    assert (run / "tb").is_dir()  # TensorBoard stays on beside W&B


@pytest.mark.slow  # two W&B processes (~20 s on 2 busy cores)
def test_wandb_resume_continues_the_run_without_repeating_steps(tmp_path, wandb_offline):
    args = RANDOM + ["--set", "wandb=offline", "--set", "tensorboard=false"]
    proc = kill_after_checkpoint(args, tmp_path, signal.SIGTERM, wandb_offline)
    assert proc.returncode == 75  # stopped after its iteration, checkpoint written
    run = tmp_path / RANDOM_RUN
    assert wandb_run(run)["exits"] == 1  # the W&B run was finished on the way out
    run_cli(args, cwd=tmp_path, env=wandb_offline)
    logged = wandb_run(run)
    assert len(logged["runs"]) == 2 and len({r.run_id for r in logged["runs"]}) == 1  # one W&B run, resumed
    steps = [row["_step"] for row in logged["history"]]
    assert steps == sorted(set(steps))  # each step once, increasing
    assert steps == sorted({s for points in expected_scalars(run).values() for s, _ in points})
