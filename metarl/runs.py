"""Run directories, atomic files, CSV logs, metadata and checkpoints (SPEC §6).

    results/runs/{env}/{algo}/{variant}/seed{seed}/
        config.yaml  metadata.json  progress.csv  eval.csv  timings.csv  model.pt
        tb/  (TensorBoard event files: a view of the logs, `metarl.tracking`; wandb/ likewise)
    results/ckpt/{env}/{algo}/{variant}/seed{seed}/state.ckpt     (resume state; not an output)

`progress.csv` and `eval.csv` hold no wall-clock values, and every float is written with
Python's shortest round-trip repr, so the same seed on the same machine and thread count gives
the same bytes. They are appended row by row while a run goes (so it can be watched), and the
checkpoint carries their content: a resumed run rewrites them from it, then carries on
(`RunFiles`).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import platform
import re
import socket
import subprocess
import sys
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping

import torch

from metarl.errors import EXIT_LOCKED, UsageError

EVAL_COLUMNS = ("iteration", "env_steps", "split", "task", "episode", "return", "success",
                "scored", "task_label", "task_value")
# eval.csv's header before the scored/task columns (files of older versions of the suite)
EVAL_COLUMNS_V1 = EVAL_COLUMNS[:7]


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
    with atomic_file(path) as f:
        f.write(data)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through, for what is too large to hold in memory: it
    replaces `path` when the block ends, so readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        # a full disk, a signal, ...: the old file stays whole and nothing is left behind
        tmp.unlink(missing_ok=True)
        raise _naming(exc, path)
    _fsync_dir(path.parent)


TMP_MARK = ".tmp-"
_TMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$")


def remove_stale_temporaries(*dirs: Path) -> list[Path]:
    """Delete the temporary files of `atomic_write_bytes` that a killed process (SIGKILL, power
    loss) left in `dirs`, i.e. those whose writer is no longer running. Returns what was deleted."""
    removed = []
    for d in dirs:
        if not Path(d).is_dir():
            continue
        for p in Path(d).iterdir():
            m = _TMP_NAME.match(p.name)
            if m and p.is_file() and not _pid_alive(int(m.group(1))):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours from an earlier attempt in this process cannot be in use
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _naming(exc: BaseException, path: Path) -> BaseException:
    """`exc`, with `path` as its filename when it is an OSError that names none (a write or
    fsync on a full disk names no file), so the CLI's one line can say where it happened."""
    if isinstance(exc, OSError) and not exc.filename:
        named = OSError(exc.errno, exc.strerror, str(path))
        named.__cause__ = exc
        return named
    return exc


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
        try:
            with open(self.path, "a") as f:
                f.write(text)
        except OSError as exc:
            # the file may now end in part of a row; the checkpoint holds `content`, and a
            # resumed run rewrites the file from it
            raise _naming(exc, self.path)
        self.content += text


class RunFiles:
    """A run's three logs: progress.csv (one row per iteration), eval.csv (`EVAL_COLUMNS`, one
    row per evaluated episode) and timings.csv (wall-clock seconds per iteration). The checkpoint
    carries their content (`snapshot`), under these names, so a resumed run rewrites them from it
    (`restore`) and carries on."""

    NAMES = ("progress.csv", "eval.csv", "timings.csv")

    def __init__(self, run_dir: Path):
        run_dir = Path(run_dir)
        self.progress = CsvLog(run_dir / "progress.csv")
        self.evals = CsvLog(run_dir / "eval.csv", EVAL_COLUMNS)
        self.timings = CsvLog(run_dir / "timings.csv")

    def _logs(self) -> dict[str, CsvLog]:
        return dict(zip(self.NAMES, (self.progress, self.evals, self.timings)))

    def start(self) -> None:
        """Empty files, for a run that starts from scratch."""
        for log in self._logs().values():
            log.restore("")

    def restore(self, files: Mapping[str, str]) -> None:
        """The files as `snapshot` left them (a checkpoint's "files")."""
        for name, log in self._logs().items():
            log.restore(files[name])

    def snapshot(self) -> dict[str, str]:
        """{file name: content}, for the checkpoint."""
        return {name: log.content for name, log in self._logs().items()}

    def log_progress(self, row: Mapping[str, Any]) -> None:
        self.progress.append(row)

    def log_eval(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.evals.append_many(rows)

    def log_timings(self, row: Mapping[str, Any]) -> None:
        self.timings.append(row)


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


# ----------------------------------------------------------------------------- one writer per run

LOCK_NAME = "train.lock"


class RunLocked(UsageError):
    """Another live process holds the run's lock (exit code `EXIT_LOCKED`)."""

    exit_code = EXIT_LOCKED


class RunLock:
    """An exclusive `flock` on `ckpt_dir/train.lock`, held while a process writes a run.

    The kernel drops a flock when its holder exits, however it exits (SIGKILL included), so a
    lock left by a dead process is never in the way: the next process simply takes it. The file
    holds the holder's pid, for the message the second process prints. It is never deleted
    (deleting a lock file someone else has open would let two holders coexist).
    """

    def __init__(self, ckpt_dir: Path, run_dir: Path):
        self.path = Path(ckpt_dir) / LOCK_NAME
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(
                f"{self.run_dir} is being written by another process (pid {holder}, lock {self.path}); "
                "wait for it to finish or stop it, then rerun"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


# ----------------------------------------------------------------------------- file records


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """SHA-256 and data-row count (lines after the header) of a finished CSV log."""
    data = Path(path).read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "rows": max(data.count(b"\n") - 1, 0)}


CHECKSUM_SUFFIX = ".sha256"


def write_checksum(path: Path) -> None:
    """`path.sha256` beside an evaluation file written by `metarl evaluate --out`, in
    `sha256sum` format (so `sha256sum -c` checks it too)."""
    path = Path(path)
    atomic_write_text(path.with_name(path.name + CHECKSUM_SUFFIX), f"{file_sha256(path)}  {path.name}\n")


def read_checksum(path: Path) -> str | None:
    """The digest recorded beside `path` by `write_checksum`, or None."""
    side = Path(path).with_name(Path(path).name + CHECKSUM_SUFFIX)
    try:
        text = side.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    digest = text.split(" ", 1)[0].strip()
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None


def load_model(path: Path) -> dict[str, Any]:
    """A finished run's model.pt, or UsageError naming the file if it is not a metarl model."""
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
        raise UsageError(f"corrupt model file {path}: {type(exc).__name__} while loading") from None
    if not isinstance(model, dict) or "state" not in model:
        raise UsageError(f"corrupt model file {path}: not a metarl model")
    return model


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
