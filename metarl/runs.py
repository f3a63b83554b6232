"""Run directories, atomic files, CSV logs, metadata and checkpoints (SPEC §6).

    results/runs/{env}/{algo}/{variant}/seed{seed}/
        config.yaml  metadata.json  progress.csv  eval.csv  timings.csv  model.pt
    results/ckpt/{env}/{algo}/{variant}/seed{seed}/state.ckpt     (resume state; not an output)

`progress.csv` and `eval.csv` hold no wall-clock values, and every float is written with
Python's shortest round-trip repr, so the same seed on the same machine and thread count gives
the same bytes. They are appended row by row while a run goes (so it can be watched), and the
checkpoint carries their content: a resumed run rewrites them from it, then carries on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from metarl.errors import UsageError

EVAL_COLUMNS = ("iteration", "env_steps", "split", "task", "episode", "return", "success")


def run_dir_for(env: str, algo: str, variant: str, seed: int, root: Path = Path("results")) -> Path:
    return root / "runs" / env / algo / variant / f"seed{seed}"


def ckpt_dir_for(run_dir: Path) -> Path:
    """results/runs/... -> results/ckpt/...; any other run directory keeps it inside, under ckpt/."""
    parts = run_dir.parts
    for i in range(len(parts) - 1):
        if parts[i] == "results" and parts[i + 1] == "runs":
            return Path(*parts[: i + 1], "ckpt", *parts[i + 2 :])
    return run_dir / "ckpt"


# ----------------------------------------------------------------------------- atomic files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_torch_save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------- CSV


def format_value(value: Any) -> str:
    """Deterministic text for a CSV cell (shortest round-trip repr for floats)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if any(c in text for c in ',"\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text


class CsvLog:
    """An append-only CSV file whose full content is also kept in memory (for checkpoints)."""

    def __init__(self, path: Path, columns: Iterable[str] | None = None):
        self.path = Path(path)
        self.columns: list[str] | None = list(columns) if columns is not None else None
        self.content = ""

    def restore(self, content: str) -> None:
        """Start from `content` (from a checkpoint, or empty), rewriting the file to match."""
        self.content = content
        if content:
            header = content.split("\n", 1)[0]
            self.columns = header.split(",")
        atomic_write_text(self.path, content)

    def append(self, row: Mapping[str, Any]) -> None:
        self.append_many([row])

    def append_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        lines = []
        for row in rows:
            if self.columns is None:
                self.columns = list(row)
            if not self.content and not lines:
                lines.append(",".join(self.columns))
            if list(row) != self.columns:
                raise ValueError(f"{self.path.name}: row keys {list(row)} differ from columns {self.columns}")
            lines.append(",".join(format_value(row[c]) for c in self.columns))
        if not lines:
            return
        text = "\n".join(lines) + "\n"
        with open(self.path, "a") as f:
            f.write(text)
        self.content += text


# ----------------------------------------------------------------------------- metadata


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


PACKAGES = ("torch", "numpy", "gymnasium", "mujoco", "metaworld", "pyyaml", "snakemake", "pandas", "metarl-bench")


def metadata(device: torch.device, threads: int, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    commit = _git(["rev-parse", "HEAD"], root)
    status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "hostname": socket.gethostname(),
        "packages": versions,
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": threads,
        "torch_num_threads": torch.get_num_threads(),
        "command": sys.argv,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    if extra:
        info.update(extra)
    return info


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


# ----------------------------------------------------------------------------- checkpoints

_MAGIC = b"METARL-CKPT-1\n"


class CorruptCheckpoint(UsageError):
    pass


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Atomically write `state` with a SHA-256 of its bytes, so corruption is always detected."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    atomic_write_bytes(path, _MAGIC + digest + b"\n" + payload)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CorruptCheckpoint(f"cannot read checkpoint {path}: {exc.strerror}") from None
    head = len(_MAGIC) + 65
    if not raw.startswith(_MAGIC) or len(raw) < head:
        raise CorruptCheckpoint(f"corrupt checkpoint {path}: not a metarl checkpoint (delete it, or pass --restart)")
    digest, payload = raw[len(_MAGIC) : head - 1], raw[head:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise CorruptCheckpoint(f"corrupt checkpoint {path}: checksum mismatch (delete it, or pass --restart)")
    try:
        # Our own file, checksum verified; it holds numpy generator states, hence full unpickling.
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
        raise CorruptCheckpoint(f"corrupt checkpoint {path}: {type(exc).__name__} while loading") from None
