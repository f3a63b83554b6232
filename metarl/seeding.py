"""Explicit random streams.

Every stream the harness uses is a pure function of (run seed, stream, counters), built with
numpy's SeedSequence, so nothing depends on how many draws happened before, and a resumed run
needs no harness generator state at all:

- training tasks of iteration i:          tasks(seed, i)
- reset noise of slot k in iteration i:   env(seed, i, k)
- evaluation reset noise of task j:       a function of the benchmark's split seed and j only,
  so every algorithm and every seed starts its evaluation episodes from the same states.

- an agent's own generator named `stream`:  agent_generator(seed, stream) / agent_rng(seed, stream)

Torch's, numpy's and Python's global generators are seeded once from their own streams of the
run seed (weight initialisation); the agent's own generators are saved in its `state_dict`.
No two streams share a seed: seed s's "update" stream is not seed s+1's "act" stream, and action
noise does not replay the weight-initialisation stream (tests/test_seeding.py).
"""

from __future__ import annotations

import random

import numpy as np
import torch

_TASKS, _ENV, _EVAL_ENV, _EVAL_AGENT, _GLOBAL, _AGENT = 1, 2, 3, 4, 5, 6
_PYTHON, _NUMPY, _TORCH = 1, 2, 3  # sub-streams of _GLOBAL


def _seed64(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, np.uint64)[0])


def seed_globals(seed: int) -> None:
    random.seed(_seed64(seed, _GLOBAL, _PYTHON))
    np.random.seed(np.random.SeedSequence([seed, _GLOBAL, _NUMPY]).generate_state(1)[0])
    torch.manual_seed(_seed64(seed, _GLOBAL, _TORCH))


def _stream_key(stream: str) -> int:
    # the name's bytes as one integer: stable across runs and Python versions (unlike hash())
    if not stream:
        raise ValueError("a generator stream needs a name")
    return int.from_bytes(stream.encode(), "little")


def agent_generator(seed: int, stream: str) -> torch.Generator:
    """The agent's torch generator `stream` ("act", "update", "vae", ...) of run `seed`."""
    return torch.Generator().manual_seed(_seed64(seed, _AGENT, _stream_key(stream)))


def agent_rng(seed: int, stream: str) -> np.random.Generator:
    """The agent's numpy generator `stream` of run `seed` (a different stream from the torch
    generator of the same name)."""
    return np.random.default_rng([seed, _AGENT, _stream_key(stream), _NUMPY])


def eval_generator(trial_seed: int) -> torch.Generator:
    """The torch generator an agent uses in an evaluation trial (`TrialSpec.seed`)."""
    return torch.Generator().manual_seed(_seed64(trial_seed, _EVAL_AGENT))


def task_rng(seed: int, iteration: int) -> np.random.Generator:
    return np.random.default_rng([seed, _TASKS, iteration])


def env_rng(seed: int, iteration: int, slot: int) -> np.random.Generator:
    return np.random.default_rng([seed, _ENV, iteration, slot])


def env_rngs(seed: int, iteration: int, n: int) -> list[np.random.Generator]:
    return [env_rng(seed, iteration, k) for k in range(n)]


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
