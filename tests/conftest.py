"""Shared helpers: run the `metarl` CLI in a scratch working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def summaries(episodes, info: dict, bootstrap) -> dict:
    """What rule aggregate makes of a per-episode table, as the tables read it: `scores`
    (scores.parquet) and `family` (aggregate.csv), through workflow/scripts/aggregate.py."""
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
    import aggregate

    main = aggregate.main_scores(episodes, info)
    return {"scores": aggregate.scores_table(episodes, main), "family": aggregate.family_table(main, info, bootstrap)}


def run_cli(args: list[str], cwd: Path, check: bool = True, timeout: float = 600, env: dict | None = None):
    """`metarl ARGS` in `cwd`, one thread; returns the CompletedProcess."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "metarl.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"metarl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def copy_repo(dest: Path) -> Path:
    """Tracked files plus untracked ones git does not ignore (no results/, no .venv)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    for name in filter(None, out.split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def popen_cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "metarl.cli", *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def files_of(run_dir: Path, names=("progress.csv", "eval.csv")) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in names}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
