"""The benchmark registry: SPEC §3's IDs, each mapped to its `Benchmark` definition."""

from __future__ import annotations

from metarl.envs.base import Benchmark, LoopBatchEnv, SlotEnv, Task, TaskBatchEnv
from metarl.errors import UsageError

# (ID, module, attribute): modules are imported on first use, so listing IDs or running
# PointNav never imports MuJoCo or Meta-World.
_REGISTRY: dict[str, tuple[str, str]] = {
    "PointNav": ("metarl.envs.point_nav", "POINT_NAV"),
    "HalfCheetahVel": ("metarl.envs.mujoco_tasks", "HALF_CHEETAH_VEL"),
    "HalfCheetahDir": ("metarl.envs.mujoco_tasks", "HALF_CHEETAH_DIR"),
    "AntDir": ("metarl.envs.mujoco_tasks", "ANT_DIR"),
    "HumanoidDir": ("metarl.envs.mujoco_tasks", "HUMANOID_DIR"),
    "ML1-reach": ("metarl.envs.metaworld_tasks", "ML1_REACH"),
    "ML1-push": ("metarl.envs.metaworld_tasks", "ML1_PUSH"),
    "ML1-pick-place": ("metarl.envs.metaworld_tasks", "ML1_PICK_PLACE"),
    "ML10": ("metarl.envs.metaworld_tasks", "ML10"),
    "ML45": ("metarl.envs.metaworld_tasks", "ML45"),
}

BENCHMARK_IDS: tuple[str, ...] = tuple(_REGISTRY)


class UnknownBenchmark(UsageError, KeyError):
    def __str__(self) -> str:
        return f"unknown benchmark {self.args[0]!r} (known: {', '.join(BENCHMARK_IDS)})"


def get_benchmark(name: str) -> Benchmark:
    if name not in _REGISTRY:
        raise UnknownBenchmark(name)
    module_name, attr = _REGISTRY[name]
    import importlib

    return getattr(importlib.import_module(module_name), attr)


__all__ = [
    "BENCHMARK_IDS",
    "Benchmark",
    "LoopBatchEnv",
    "SlotEnv",
    "Task",
    "TaskBatchEnv",
    "UnknownBenchmark",
    "get_benchmark",
]
