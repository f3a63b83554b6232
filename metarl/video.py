"""Evaluation videos (`metarl evaluate --run DIR --video [N]`): the first N trials of a split's
evaluation, rendered off-screen, one MP4 per trial.

The trials are the evaluation protocol's: the same `Evaluator`, chunks and seeds as `metarl
evaluate`, so the returns printed beside a video are the rows eval.csv holds for its trial. Only
the chunks that hold the filmed trials run (a chunk's trials depend on nothing outside it).
`FilmedEnv` wraps the batch env and renders a filmed slot's MjData after its every reset and
every step; rendering only reads the simulator, so the rollout is the unfilmed one.

A video of a trial holds, per episode, the reset state and one frame after every step: the sum
over its episodes of (1 + steps) frames, played at the environment's real time (1/dt frames per
second: 20 for HalfCheetah and Ant, 66.7 for Humanoid, 80 for Meta-World). Each frame carries a caption: benchmark,
split, task index and label, episode k/E, step, return so far. H.264 in MP4 (PyAV), Pillow for
the caption, MuJoCo's renderer for the images.

OpenGL: MUJOCO_GL names the backend (egl, osmesa; glfw where there is a display); unset, it is
egl where libEGL is found, else osmesa where libOSMesa is. It must be set before mujoco is first
imported, so `record_videos` sets it before it loads the run. Rendering that cannot start is one
line (a `UsageError`) before anything is evaluated or written.
"""

from __future__ import annotations

import ctypes.util
import functools
import io
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from metarl.envs.base import LoopBatchEnv, SlotEnv, Task, TaskBatchEnv
from metarl.errors import UsageError

INSTALL_HINT = ("install EGL (apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri) or OSMesa "
                "(apt-get install libosmesa6) and set MUJOCO_GL=egl or MUJOCO_GL=osmesa")


@dataclass(frozen=True)
class View:
    """A benchmark's camera: MuJoCo's tracking camera on `body` (a side view that follows the
    robot, like gymnasium's default camera for these robots), or a camera that stays aimed at
    `lookat`. (Meta-World's own fixed cameras give upside-down or tilted images.)"""

    body: str | None = None
    lookat: tuple[float, float, float] | None = None
    distance: float = 4.0
    elevation: float = -15.0
    azimuth: float = 90.0  # looking along +y: forward (+x) is to the right


_CHEETAH = View(body="torso")
_METAWORLD = View(lookat=(0.0, 0.6, 0.15), distance=1.5, elevation=-25.0, azimuth=145.0)  # the table
VIEWS: dict[str, View] = {
    "HalfCheetahVel": _CHEETAH,
    "HalfCheetahDir": _CHEETAH,
    "AntDir": View(body="torso", distance=5.0, elevation=-30.0),
    "HumanoidDir": View(body="torso", distance=4.5, elevation=-10.0),
    "ML1-reach": _METAWORLD,
    "ML1-push": _METAWORLD,
    "ML1-pick-place": _METAWORLD,
    "ML10": _METAWORLD,
    "ML45": _METAWORLD,
}


# ----------------------------------------------------------------------------- OpenGL


# MUJOCO_GL's off-screen backends and the library each loads
OFFSCREEN_LIBRARIES = {"egl": "EGL", "osmesa": "OSMesa"}


def choose_gl_backend() -> str:
    """MUJOCO_GL as set, or (unset) egl where libEGL is found, else osmesa where libOSMesa is;
    PYOPENGL_PLATFORM follows unless set. Takes effect only before mujoco is first imported."""
    backend = os.environ.get("MUJOCO_GL", "").strip().lower()
    if not backend:
        found = [name for name, library in OFFSCREEN_LIBRARIES.items() if ctypes.util.find_library(library)]
        if not found:
            raise UsageError(f"cannot render videos: MUJOCO_GL is unset and neither libEGL nor libOSMesa "
                             f"is installed; {INSTALL_HINT}")
        backend = found[0]
        os.environ["MUJOCO_GL"] = backend
    if backend not in OFFSCREEN_LIBRARIES:  # glfw, glx: a window on a display, not off-screen
        raise UsageError(f"cannot render videos with MUJOCO_GL={backend}: videos are rendered off-screen, "
                         f"with egl or osmesa; {INSTALL_HINT}")
    if not ctypes.util.find_library(OFFSCREEN_LIBRARIES[backend]):
        raise UsageError(f"cannot render videos with MUJOCO_GL={backend}: lib{OFFSCREEN_LIBRARIES[backend]} "
                         f"is not installed; {INSTALL_HINT}")
    os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def check_gl(backend: str) -> None:
    """Import mujoco and open a GL context (then free it): one line naming MUJOCO_GL and the error
    where this machine cannot render (mujoco itself raises at import when its backend fails)."""
    failure = None
    # a context that failed half-way fails again in its __del__ ("Exception ignored in ...");
    # the one line below says it all
    unraisablehook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:
        try:
            import mujoco

            context = mujoco.GLContext(16, 16)
            context.make_current()
            context.free()
        except Exception as exc:  # whatever the GL stack raises, the user needs the same line
            try:
                failure = str(exc) or type(exc).__name__
            except Exception:  # PyOpenGL's EGLError can fail to print itself
                failure = type(exc).__name__
    finally:
        sys.unraisablehook = unraisablehook
    if failure is not None:
        raise UsageError(f"cannot render videos with MUJOCO_GL={backend}: {failure}; {INSTALL_HINT}")


# ----------------------------------------------------------------------------- frames


@functools.lru_cache(maxsize=None)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def caption(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """`rgb` (H, W, 3 uint8) with `lines` written in white on a dark band across its top."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(rgb)
    size = max(8, image.height // 20)
    font = _font(size)
    draw = ImageDraw.Draw(image)
    spacing = size // 4
    draw.rectangle((0, 0, image.width, len(lines) * (size + spacing) + 2 * spacing), fill=(20, 20, 20))
    for row, line in enumerate(lines):
        draw.text((spacing, spacing + row * (size + spacing)), line, fill=(255, 255, 255), font=font)
    return np.asarray(image)


class SceneCamera:
    """Off-screen images of one model's MjData from a benchmark's `View`."""

    def __init__(self, model, view: View, width: int, height: int):
        import mujoco

        # the off-screen buffer must hold the image (the model files ask for 640x480 at most)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.renderer = mujoco.Renderer(model, height, width)
        # in software GL (Mesa's llvmpipe) shadows make a frame ~4x slower, reflections ~2x
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self.camera = mujoco.MjvCamera()
        if view.body is not None:
            self.camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            self.camera.trackbodyid = model.body(view.body).id
        else:
            self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
            self.camera.lookat[:] = view.lookat
        self.camera.distance, self.camera.elevation, self.camera.azimuth = view.distance, view.elevation, view.azimuth

    def render(self, data) -> np.ndarray:
        self.renderer.update_scene(data, self.camera)
        return self.renderer.render()

    def close(self) -> None:
        self.renderer.close()


class Film:
    """An MP4 (H.264, yuv420p) encoded in memory as its frames come."""

    def __init__(self, width: int, height: int, fps: Fraction):
        import av

        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        import av

        self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        self.frames += 1

    def finish(self) -> bytes:
        self._container.mux(self._stream.encode())  # the frames the encoder still holds
        self._container.close()
        return self._buffer.getvalue()


def _simulator(slot_env: SlotEnv) -> tuple[Any, Any, float]:
    """MjModel, MjData and seconds per step of a slot's simulator (a Meta-World slot wraps a
    gymnasium MujocoEnv)."""
    from metarl.envs.metaworld_tasks import MetaWorldSlotEnv

    if isinstance(slot_env, MetaWorldSlotEnv):
        return slot_env.env.model, slot_env.env.data, slot_env.env.dt
    return slot_env.model, slot_env.data, slot_env.dt


class TrialVideo:
    """The video of one evaluation trial: one slot's simulator, captioned frame by frame."""

    def __init__(self, title: str, episodes: int, view: View, width: int, height: int):
        self.title, self.episodes, self.view, self.width, self.height = title, episodes, view, width, height
        self.episode = self.step = 0
        self.return_so_far = 0.0
        self._camera: SceneCamera | None = None
        self._film: Film | None = None
        self._data = None

    def on_reset(self, slot_env: SlotEnv) -> None:
        model, self._data, dt = _simulator(slot_env)
        if self._camera is None:
            self._camera = SceneCamera(model, self.view, self.width, self.height)
            self._film = Film(self.width, self.height, Fraction(1 / dt).limit_denominator(1000))
        self.episode += 1
        self.step, self.return_so_far = 0, 0.0
        self._frame()

    def on_step(self, reward: float) -> None:
        self.step += 1
        self.return_so_far += reward
        self._frame()

    def _frame(self) -> None:
        lines = [self.title, f"episode {self.episode}/{self.episodes}   step {self.step}   "
                 f"return {self.return_so_far:.2f}"]
        self._film.add(caption(self._camera.render(self._data), lines))

    @property
    def frames(self) -> int:
        return self._film.frames if self._film is not None else 0

    def finish(self) -> bytes:
        self._camera.close()
        return self._film.finish()


class FilmedEnv(TaskBatchEnv):
    """`env` with some of its slots filmed (`videos`: slot -> TrialVideo): each filmed slot is
    rendered after its every reset and every step. Everything else is `env`'s."""

    def __init__(self, env: LoopBatchEnv, videos: dict[int, TrialVideo]):
        self.env, self.videos, self.n = env, videos, env.n

    # sizes and bounds are the env's (a LoopBatchEnv knows them once it has its tasks)
    obs_dim = property(lambda self: self.env.obs_dim)
    act_dim = property(lambda self: self.env.act_dim)
    action_low = property(lambda self: self.env.action_low)
    action_high = property(lambda self: self.env.action_high)

    def set_tasks(self, tasks: list[Task], rngs: list[np.random.Generator]) -> None:
        self.env.set_tasks(tasks, rngs)

    def reset(self, slots: np.ndarray) -> np.ndarray:
        obs = self.env.reset(slots)
        for slot in slots:
            if slot in self.videos:
                self.videos[slot].on_reset(self.env.slot_env(slot))
        return obs

    def step(self, actions: np.ndarray, active: np.ndarray):
        out = self.env.step(actions, active)
        reward = out[1]
        for slot, video in self.videos.items():
            if active[slot]:
                video.on_step(float(reward[slot]))
        return out


# ----------------------------------------------------------------------------- the command


@dataclass
class Recorded:
    path: Path
    task: int
    label: str
    frames: int
    returns: list[float]  # per episode, as in the trial's eval.csv rows


def record_videos(run_dir: Path, split: str, count: int, out_dir: Path | None, size: tuple[int, int],
                  eval_tasks: int | None = None, device: str | None = None, threads: int | None = None,
                  ) -> list[Recorded]:
    """Film the first `count` trials of the evaluation of the run's final model on `split` into
    `out_dir/{split}_task{index}.mp4` (default `run_dir/videos`), each `size` (width, height).
    Writes no evaluation rows; the videos are written (atomically) once every trial is done."""
    from metarl.evaluation import EVAL_CHUNK, Evaluator
    from metarl.runs import atomic_write_bytes
    from metarl.saved_runs import check_split, load_run, read_run_config

    run_dir = Path(run_dir)
    env_id = read_run_config(run_dir).get("env")
    if env_id not in VIEWS:
        raise UsageError(f"benchmark {env_id} has no MuJoCo scene to film; videos are made for {', '.join(VIEWS)}")
    check_gl(choose_gl_backend())
    setup, agent, model = load_run(run_dir, device, threads)
    bench = setup.benchmark
    check_split(bench, split)
    seed = setup.config["seed"]
    tasks = Evaluator(bench, seed, setup.run.eval_tasks if eval_tasks is None else eval_tasks).tasks(split)
    if not 1 <= count <= len(tasks):
        raise UsageError(f"--video {count}: the evaluation of split {split!r} has trials 1 to {len(tasks)}")
    width, height = size
    videos = {
        index: TrialVideo(f"{bench.id}   {split} task {index}: {tasks[index].label}", bench.eval_episodes,
                          VIEWS[bench.id], width, height)
        for index in range(count)
    }

    def film(env: LoopBatchEnv, indices: np.ndarray) -> FilmedEnv:
        return FilmedEnv(env, {slot: videos[int(i)] for slot, i in enumerate(indices) if i < count})

    # the chunks that hold the filmed trials, exactly as the full evaluation makes them
    evaluator = Evaluator(bench, seed, min(len(tasks), -(-count // EVAL_CHUNK) * EVAL_CHUNK))
    try:
        rows = evaluator.evaluate(agent, split, model["iteration"], model["env_steps"], wrap_env=film)
    finally:
        evaluator.close()
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "videos"
    recorded = [Recorded(out_dir / f"{split}_task{index}.mp4", index, tasks[index].label, video.frames,
                         [r["return"] for r in rows if r["task"] == index]) for index, video in videos.items()]
    encoded = [video.finish() for video in videos.values()]
    for record, data in zip(recorded, encoded):
        atomic_write_bytes(record.path, data)
    return recorded
