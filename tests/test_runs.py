"""Run records: atomic writes, deterministic CSV text, checkpoints that detect corruption."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metarl import runs
from metarl.runs import CorruptCheckpoint, CsvLog, atomic_write_text, ckpt_dir_for, format_value


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "b.txt"
    atomic_write_text(path, "x" * 1000)
    atomic_write_text(path, "short")
    assert path.read_text() == "short"
    assert [p.name for p in path.parent.iterdir()] == ["b.txt"]  # no temporary left behind


def test_format_value_is_shortest_roundtrip():
    assert format_value(0.1) == "0.1"
    assert format_value(np.float32(0.1)) == repr(float(np.float32(0.1)))
    assert format_value(np.int64(3)) == "3"
    assert format_value(None) == ""
    assert format_value(True) == "1"
    assert format_value("a,b") == '"a,b"'
    x = 1 / 3
    assert float(format_value(x)) == x


def test_csv_log_content_matches_file_and_restores(tmp_path):
    log = CsvLog(tmp_path / "p.csv")
    log.restore("")
    log.append({"iteration": 1, "value": 0.5})
    log.append({"iteration": 2, "value": 1.5})
    assert (tmp_path / "p.csv").read_text() == log.content == "iteration,value\n1,0.5\n2,1.5\n"
    with pytest.raises(ValueError, match="differ from columns"):
        log.append({"iteration": 3})
    saved = log.content
    log.append({"iteration": 3, "value": 2.5})
    again = CsvLog(tmp_path / "p.csv")
    again.restore(saved)  # what a resume does: the file goes back to the checkpoint's content
    assert (tmp_path / "p.csv").read_text() == saved
    again.append({"iteration": 3, "value": 2.5})
    assert (tmp_path / "p.csv").read_text() == log.content


def test_checkpoint_roundtrip_and_corruption(tmp_path):
    path = tmp_path / "state.ckpt"
    state = {"iteration": 4, "rng": np.random.default_rng(0).bit_generator.state, "w": np.arange(5)}
    runs.save_checkpoint(path, state)
    loaded = runs.load_checkpoint(path)
    assert loaded["iteration"] == 4 and loaded["rng"] == state["rng"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpoint, match="checksum mismatch"):
        runs.load_checkpoint(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptCheckpoint, match="not a metarl checkpoint"):
        runs.load_checkpoint(path)


def test_ckpt_dir_mirrors_run_dir():
    assert ckpt_dir_for(Path("results/runs/E/a/default/seed1")) == Path("results/ckpt/E/a/default/seed1")
    assert ckpt_dir_for(Path("/x/results/runs/E/a/v/seed2")) == Path("/x/results/ckpt/E/a/v/seed2")
    assert ckpt_dir_for(Path("elsewhere/run")) == Path("elsewhere/run/ckpt")


def test_no_stray_temporaries_after_many_writes(tmp_path):
    for i in range(20):
        atomic_write_text(tmp_path / "f", str(i))
    assert os.listdir(tmp_path) == ["f"]
