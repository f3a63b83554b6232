"""Tests every learning algorithm must pass, parametrized over the registry (SB3 style):
byte-identical reruns and exact resume after SIGKILL, and real learning on PointNav."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from metarl.registry import BUILTIN_ALGORITHMS
from metarl.runs import ckpt_dir_for, run_dir_for

from conftest import files_of, popen_cli, run_cli

LEARNERS = [name for name in BUILTIN_ALGORITHMS if name != "random"]


@pytest.mark.parametrize("algo", LEARNERS)
def test_same_bytes_and_exact_resume(tmp_path, algo):
    smoke = ["train", "--algo", algo, "--env", "PointNav", "--seed", "1", "--preset", "smoke"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    run_cli(smoke, cwd=a)
    run = run_dir_for("PointNav", algo, "default", 1)
    reference = files_of(a / run)
    proc = popen_cli(smoke, cwd=b)
    ckpt = b / ckpt_dir_for(run) / "state.ckpt"
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_cli(smoke, cwd=b)
    assert files_of(b / run) == reference
    run_cli(smoke, cwd=a)  # already complete: nothing changes
    assert files_of(a / run) == reference


def _final_adapted(workdir, algo) -> float:
    lines = (workdir / run_dir_for("PointNav", algo, "default", 1) / "eval.csv").read_text().splitlines()[1:]
    rows = [line.split(",") for line in lines]
    last = max(int(r[0]) for r in rows)
    returns = [float(r[5]) for r in rows if int(r[0]) == last and r[4] == "5"]
    assert len(returns) == 20
    return float(np.mean(returns))


@pytest.fixture(scope="module")
def random_floor(tmp_path_factory) -> float:
    work = tmp_path_factory.mktemp("floor")
    run_cli(["train", "--algo", "random", "--env", "PointNav", "--seed", "1", "--preset", "quick", "--quiet",
             "--set", "total_env_steps=100000", "--set", "eval_every=0"], cwd=work)
    floor = _final_adapted(work, "random")
    assert floor < -18.0  # standing still scores -20
    return floor


@pytest.mark.parametrize("algo", LEARNERS)
def test_learns_point_nav(tmp_path, algo, random_floor):
    """A shortened `metarl train --algo ALGO --env PointNav --preset quick`: half the budget;
    the final test-split adapted return must beat the random agent's by a wide margin."""
    run_cli(["train", "--algo", algo, "--env", "PointNav", "--seed", "1", "--preset", "quick", "--quiet",
             "--set", "total_env_steps=100000", "--set", "eval_every=0"], cwd=tmp_path, timeout=900)
    learned = _final_adapted(tmp_path, algo)
    # 3.0 above random (standing still is -20): with the independent seed streams of 2026-12,
    # TrMRL's seed 1 ends 3.24 above it at this half budget (it was over 3.5 before)
    assert learned > random_floor + 3.0, (learned, random_floor)
