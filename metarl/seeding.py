"""Explicit random streams.

Every stream the harness uses is a pure function of (run seed, stream, counters), built with
numpy's SeedSequence, so nothing depends on how many draws happened before, and a resumed run
needs no harness generator state at all:

- training tasks of iteration i:          tasks(seed, i)
- reset noise of slot k in iteration i:   env(seed, i, k)
- evaluation reset noise of task j:       a function of the benchmark's split seed and j only,
  so every algorithm and every seed starts its evaluation episodes from the same states.

Torch's, numpy's and Python's global generators are seeded from the run seed once (weight
initialisation); the agent's own generators are saved in its `state_dict`.
"""

from __future__ import annotations

import random

import numpy as np
import torch

_TASKS, _ENV, _EVAL_ENV, _EVAL_AGENT, _GLOBAL = 1, 2, 3, 4, 5


def seed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(np.random.SeedSequence([seed, _GLOBAL]).generate_state(1)[0])
    torch.manual_seed(seed)


def task_rng(seed: int, iteration: int) -> np.random.Generator:
    return np.random.default_rng([seed, _TASKS, iteration])


def env_rngs(seed: int, iteration: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng([seed, _ENV, iteration, k]) for k in range(n)]


def eval_env_rngs(split_seed: int, split_key: int, task_indices) -> list[np.random.Generator]:
    return [np.random.default_rng([split_seed, _EVAL_ENV, split_key, int(j)]) for j in task_indices]


def eval_agent_seed(seed: int, iteration: int, split_key: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, _EVAL_AGENT, iteration, split_key, chunk]).generate_state(1)[0])


def global_rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
