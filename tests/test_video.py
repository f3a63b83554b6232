"""Evaluation videos (`metarl evaluate --video`): the MP4 of a trial, its caption, and one line
(exit 2, nothing written) where a video cannot be made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metarl import config as cfg
from metarl import video
from metarl.errors import UsageError
from metarl.runs import run_dir_for

from conftest import REPO, run_cli


@pytest.fixture(autouse=True)
def _gl_environment(monkeypatch):
    """choose_gl_backend sets MUJOCO_GL and PYOPENGL_PLATFORM in this process: put them back
    after each test (a leaked MUJOCO_GL=osmesa breaks every later mujoco import)."""
    for name in ("MUJOCO_GL", "PYOPENGL_PLATFORM"):
        monkeypatch.setenv(name, "unset-by-fixture")  # records the value to restore
        monkeypatch.delenv(name)


def _fake_run(tmp_path: Path, env: str) -> Path:
    """A run directory with a real config and an empty model.pt: enough for every check that
    comes before the model is loaded (a loaded model would fail as corrupt)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(cfg.dump(cfg.resolve("random", env, 1, "smoke")))
    (run / "model.pt").write_bytes(b"")
    return run


def _one_line_error(code: int, stderr: str, *words: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for word in words:
        assert word in lines[0], lines[0]


def _main_error(args: list[str], capsys, *words: str) -> None:
    """`metarl ARGS` in this process (for errors found before anything imports mujoco)."""
    from metarl.cli import main

    code = main(args)
    _one_line_error(code, capsys.readouterr().err, *words)


def test_caption_writes_text_on_a_dark_band():
    grey = np.full((320, 480, 3), 128, np.uint8)
    out = video.caption(grey, ["HalfCheetahVel   test task 0: v=2.4645", "episode 1/6   step 0   return 0.00"])
    assert out.shape == grey.shape and out.dtype == np.uint8
    band = out[:40]
    assert (band.max(axis=2) < 40).mean() > 0.5  # mostly the dark band
    assert (band.min(axis=2) > 200).sum() > 200  # and white letters on it
    assert np.array_equal(out[60:], grey[60:])  # the scene below is untouched


def test_no_gl_backend_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    run = _fake_run(tmp_path, "HalfCheetahVel")
    monkeypatch.setenv("MUJOCO_GL", "bogus")  # refused before mujoco is imported
    _main_error(["evaluate", "--run", str(run), "--video"], capsys, "MUJOCO_GL=bogus", "off-screen", "apt-get install")
    # a context that cannot be made: a device out of range where EGL is installed, libEGL missing
    # where it is not; mujoco is imported and fails inside, so in a process of its own
    proc = run_cli(["evaluate", "--run", str(run), "--video"], cwd=tmp_path, check=False,
                   env={"MUJOCO_GL": "egl", "MUJOCO_EGL_DEVICE_ID": "99"})
    _one_line_error(proc.returncode, proc.stderr, "MUJOCO_GL=egl", "apt-get install")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "model.pt"]


def test_backend_is_chosen_from_the_libraries_installed(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setattr(video.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(UsageError, match="neither libEGL nor libOSMesa"):
        video.choose_gl_backend()
    monkeypatch.setattr(video.ctypes.util, "find_library", lambda name: "libOSMesa.so.8" if name == "OSMesa" else None)
    assert video.choose_gl_backend() == "osmesa"
    assert video.os.environ["MUJOCO_GL"] == "osmesa" and video.os.environ["PYOPENGL_PLATFORM"] == "osmesa"


def test_pointnav_has_no_scene_to_film(tmp_path, capsys):
    run = _fake_run(tmp_path, "PointNav")
    _main_error(["evaluate", "--run", str(run), "--video"], capsys, "PointNav", "no MuJoCo scene")


@pytest.mark.parametrize("args,message", [
    (["--video-size", "64x48"], "--video-dir and --video-size need --video"),
    (["--video", "--video-size", "63x48"], "both even"),
    (["--video", "--out", "x.csv"], "cannot be combined with --out"),
])
def test_video_options_are_checked(tmp_path, capsys, args, message):
    run = _fake_run(tmp_path, "HalfCheetahVel")
    _main_error(["evaluate", "--run", str(run), *args], capsys, message)


def _gl_skip_reason() -> str | None:
    """Why this machine cannot render (the command's own line), or None."""
    proc = subprocess.run([sys.executable, "-c", "from metarl.video import check_gl, choose_gl_backend; "
                           "check_gl(choose_gl_backend())"], cwd=REPO, capture_output=True, text=True)
    return proc.stderr.strip().splitlines()[-1] if proc.returncode else None


@pytest.mark.slow
def test_video_of_a_trial_has_a_frame_per_step_and_the_trials_returns(tmp_path):
    reason = _gl_skip_reason()
    if reason:
        pytest.skip(f"no OpenGL backend for off-screen rendering: {reason}")
    import av

    run_cli(["train", "--algo", "random", "--env", "HalfCheetahVel", "--seed", "1", "--preset", "smoke",
             "--set", "total_env_steps=800"], cwd=tmp_path)
    run = tmp_path / run_dir_for("HalfCheetahVel", "random", "default", 1)
    eval_csv = (run / "eval.csv").read_bytes()
    proc = run_cli(["evaluate", "--run", str(run), "--video", "--video-size", "96x64"], cwd=tmp_path)
    path = run / "videos" / "test_task0.mp4"
    assert [p.name for p in (run / "videos").iterdir()] == ["test_task0.mp4"]
    # 6 episodes of 200 steps (HalfCheetah never terminates), each with its reset frame
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (96, 64, 20)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(frames) == 6 * (1 + 200)
    assert f"{path}: test task 0 (v=2.4645), {len(frames)} frames" in proc.stdout
    # the caption band: dark, with light letters, above the scene
    band = frames[0][:12]
    assert (band.max(axis=2) < 60).mean() > 0.5 and (band.min(axis=2) > 150).any()
    # the filmed trial is the evaluation's: its returns are eval.csv's rows for it, which it left alone
    rows = [line.split(",") for line in eval_csv.decode().splitlines()[1:]]
    last = max(int(r[0]) for r in rows)
    expected = [r[5] for r in rows if int(r[0]) == last and r[2] == "test" and r[3] == "0"]
    assert len(expected) == 6
    assert proc.stdout.strip().endswith("episode returns " + " ".join(expected))
    assert (run / "eval.csv").read_bytes() == eval_csv
