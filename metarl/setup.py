"""From a resolved config to a ready agent: the benchmark, the algorithm's class, the split
settings and the device (`prepare`, which validates and has no side effects), then the agent
itself with torch's threads, determinism and global seed set (`build_agent`). The `threads`
setting is torch's thread count and also the number of threads a batch of environments steps
its slots on (`Benchmark.with_threads`; same env bytes as one thread).

Training (`metarl.training`), the evaluation of saved runs (`metarl.saved_runs`) and the
throughput benchmark (`metarl.bench`) all start here, so they build an agent the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from metarl import config as cfg
from metarl.agent import Agent, EnvSpec
from metarl.envs import get_benchmark
from metarl.envs.base import Benchmark
from metarl.errors import UsageError
from metarl.registry import get_agent_class
from metarl.seeding import seed_globals


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but torch sees no CUDA device (use --device cpu or auto)")
    return torch.device(name)


@dataclass
class Setup:
    """Everything a run needs, built from a resolved config (validation first, no side effects)."""

    config: dict[str, Any]
    benchmark: Benchmark
    agent_cls: type
    run: cfg.RunSettings
    agent_config: Any
    device: torch.device


def prepare(resolved: Mapping[str, Any]) -> Setup:
    bench = get_benchmark(resolved["env"])
    agent_cls = get_agent_class(resolved["algo"])
    run, agent_config = cfg.split_config(resolved, agent_cls)
    if agent_config.meta_batch_size % bench.task_multiple:
        raise UsageError(
            f"meta_batch_size {agent_config.meta_batch_size} must be a multiple of {bench.task_multiple} "
            f"for {bench.id} (tasks are balanced over its {bench.task_multiple} training classes)"
        )
    # `threads` also steps the environments' slots in parallel (where the benchmark's envs do)
    return Setup(dict(resolved), bench.with_threads(run.threads), agent_cls, run, agent_config,
                 resolve_device(run.device))


def cuda_numerics() -> None:
    """CUDA settings for the CPU's float32 results (to rounding) and same bytes on a same-seed
    rerun on the same GPU: cuBLAS is deterministic only with a fixed workspace (its setting is
    read when the process's first cuBLAS handle is made, hence before any CUDA matmul, unless
    the user set it); cuDNN picks deterministic kernels, no autotuning; and no TF32, which cuDNN
    (the GRUs of RL² and VariBAD) uses on Ampere and later GPUs by default and which rounds
    matmul inputs to 10 mantissa bits. The legacy flags, not `fp32_precision`: PyTorch refuses
    a mix of the two APIs, and these keep its old and new TF32 state consistent."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def build_agent(setup: Setup) -> Agent:
    torch.set_num_threads(setup.run.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if setup.device.type == "cuda":
        cuda_numerics()
    seed_globals(setup.config["seed"])
    env_spec = EnvSpec.of(setup.benchmark)
    return setup.agent_cls(setup.agent_config, env_spec, setup.device, setup.config["seed"])
