"""What a benchmark is: task distributions, fixed splits, and a batch of task environments.

A benchmark (one row of SPEC §3) owns

- a sampler of training tasks (driven by a generator the harness passes in, so the run seed
  decides which training tasks are met),
- fixed evaluation splits (`test`, `ood`, ...) drawn from the benchmark's own split seed, so
  every algorithm and every seed meets exactly the same evaluation tasks,
- the episode length and the number of episodes per trial (training and evaluation),
- a factory for a `TaskBatchEnv`: `n` environment slots stepped together, each slot running
  its own task. The harness never loops over slots around the policy; only the simulator
  is stepped slot by slot where it has no batched form. With `threads` > 1 (the run setting),
  benchmarks whose slot step is mostly simulator (MuJoCo) step their slots on that many
  threads; the results are the same bytes as the serial loop's (see `LoopBatchEnv`).

Time limits belong to the harness: environments here never truncate, they only terminate
(e.g. the Ant falling). The harness cuts every episode at `episode_length` and records
termination and truncation separately.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Task:
    """One task of a benchmark.

    `params` is what the task *is* (a target velocity, a goal angle, a Meta-World task index);
    it is plain data (floats, ints, strings) so it can be logged and compared across processes.
    `label` is a short human-readable name used in logs and tables.
    """

    params: dict[str, Any]
    label: str


class TaskBatchEnv(abc.ABC):
    """`n` environment slots stepped together; slot `i` runs `tasks[i]` of the current trials.

    Observations are float32 arrays of shape (n, obs_dim), actions (n, act_dim).
    """

    n: int
    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray

    @abc.abstractmethod
    def set_tasks(self, tasks: Sequence[Task], rngs: Sequence[np.random.Generator]) -> None:
        """Give every slot its task for the coming trial and the generator for its reset noise."""

    @abc.abstractmethod
    def reset(self, slots: np.ndarray) -> np.ndarray:
        """Start a new episode in the given slots; returns their observations (len(slots), obs_dim)."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every active slot.

        Returns (obs, reward, terminated, success), each with a leading dimension n; rows of
        inactive slots are left untouched (zeros the first time).
        `success` is 0/1 (always 0 where the benchmark has no notion of success).
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release simulator resources."""


@dataclass(frozen=True)
class Benchmark:
    """A benchmark of SPEC §3. IDs are a contract: change a definition, bump the ID's version."""

    id: str
    summary: str
    family: str  # "toy", "mujoco" or "metaworld"
    episode_length: int
    train_episodes: int  # episodes per trial during training
    eval_episodes: int  # episodes per trial during evaluation
    # Meta-World's protocol adapts on the first `exploration_episodes` episodes of an evaluation
    # trial (stochastic actions) and scores the rest (deterministic); MuJoCo scores every episode.
    exploration_episodes: int
    split_seed: int
    obs_dim: int
    act_dim: int
    # make_env(n, threads=1): a batch of n slots; `threads` > 1 lets it step its slots in
    # parallel where that helps (each benchmark decides, and says why where it does not)
    make_env: Callable[..., TaskBatchEnv] = field(repr=False)
    sample_train_tasks: Callable[[np.random.Generator, int], list[Task]] = field(repr=False)
    make_splits: Callable[[], dict[str, list[Task]]] = field(repr=False)
    # meta_batch_size must be a multiple of this (Meta-World balances tasks over its classes)
    task_multiple: int = 1
    has_success: bool = False
    # actions lie in [-action_bound, action_bound] in every dimension: the environment's own
    # bounds (MuJoCo's ctrlrange, Meta-World's action space), declared so that nothing needs a
    # probe environment to know them (tests/test_envs.py checks them against the environments)
    action_bound: float = 1.0
    # the interval the training tasks' parameter (eval.csv's task_value) is drawn from, where
    # the task has one numeric parameter drawn from an interval (figures shade it)
    train_range: tuple[float, float] | None = None
    # one phrase per split saying what its tasks are (table notes read them from the data)
    split_notes: dict[str, str] = field(default_factory=dict)
    # extra facts recorded in metadata.json (e.g. Meta-World's reward-function version)
    facts: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The benchmark block of metadata.json: what a reader of the run's files needs to know
        about its benchmark without importing the suite."""
        return {
            "id": self.id, "split_seed": self.split_seed, "family": self.family,
            "episode_length": self.episode_length, "eval_episodes": self.eval_episodes,
            "exploration_episodes": self.exploration_episodes, "has_success": self.has_success,
            "train_range": list(self.train_range) if self.train_range is not None else None,
            "split_notes": dict(self.split_notes), **self.facts,
        }

    def with_threads(self, threads: int) -> "Benchmark":
        """This benchmark with `make_env(n)` building batches that step on `threads` threads
        (where the benchmark's environments do); `threads` 1 is this benchmark itself."""
        if threads == 1:
            return self
        return dataclasses.replace(self, make_env=functools.partial(self.make_env, threads=threads))

    @property
    def action_low(self) -> np.ndarray:
        return np.full(self.act_dim, -self.action_bound, dtype=np.float32)

    @property
    def action_high(self) -> np.ndarray:
        return np.full(self.act_dim, self.action_bound, dtype=np.float32)

    def splits(self) -> dict[str, list[Task]]:
        """The fixed evaluation splits, computed once per process."""
        cached = _SPLIT_CACHE.get(self.id)
        if cached is None:
            cached = self.make_splits()
            _SPLIT_CACHE[self.id] = cached
        return cached

    def split(self, name: str) -> list[Task]:
        splits = self.splits()
        if name not in splits:
            raise KeyError(f"benchmark {self.id} has no split {name!r} (it has: {', '.join(splits)})")
        return splits[name]


_SPLIT_CACHE: dict[str, dict[str, list[Task]]] = {}


def split_rng(split_seed: int, split_name: str) -> np.random.Generator:
    """The generator a fixed split is drawn from: a function of the benchmark's split seed only."""
    return np.random.default_rng([split_seed, _name_key(split_name)])


def _name_key(name: str) -> int:
    # A stable integer from a name (Python's hash() is salted per process).
    return int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "little")


class SlotEnv(abc.ABC):
    """One simulator instance that can be switched between the tasks of its benchmark.

    Benchmarks whose simulator has no batched form (MuJoCo, Meta-World) implement this and get
    a `TaskBatchEnv` from `LoopBatchEnv`.
    """

    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray

    @abc.abstractmethod
    def set_task(self, task: Task) -> None: ...

    @abc.abstractmethod
    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """Start an episode; initial-state noise comes from `rng` only."""

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, float]:
        """Returns (obs, reward, terminated, success)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class LoopBatchEnv(TaskBatchEnv):
    """`n` slots, each backed by a `SlotEnv` made by `factory(task)`, stepped in a plain loop.

    `factory` may return a fresh env or reuse one: Meta-World needs one env per task class, so
    its factory keeps a pool per class (see `pool_key`).

    With `threads` > 1, `step` splits the active slots into up to `threads` contiguous chunks
    and steps them at once: one chunk on the calling thread, the others on a persistent pool of
    `threads - 1` worker threads (made on the first parallel step, joined by `close`). This pays
    where a slot's step is mostly simulator code that releases the GIL (MuJoCo's `mj_step`).
    Same bytes as the serial loop, provided slots share nothing a step mutates (true of the
    MuJoCo slots: their shared `MjModel` is read-only in a step): within one step each slot's
    `SlotEnv` is used by exactly one thread, every slot writes only its own rows of the outputs,
    and a step returns only when every chunk is done; so each slot computes exactly what it
    computes in the loop. `reset` and `set_tasks` stay serial (resets are rare, and two slots
    may be handed the same generator). `threads` 1 is the plain loop, with no pool.
    """

    def __init__(
        self,
        n: int,
        factory: Callable[[Task], SlotEnv],
        pool_key: Callable[[Task], Any] = lambda task: None,
        threads: int = 1,
    ):
        self.n = n
        self.threads = threads
        self._factory = factory
        self._pool_key = pool_key
        self._pools: dict[Any, list[SlotEnv]] = {}
        self._envs: list[SlotEnv | None] = [None] * n
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._obs: np.ndarray | None = None
        self._workers: ThreadPoolExecutor | None = None

    def _take(self, task: Task, used: dict[Any, int]) -> SlotEnv:
        key = self._pool_key(task)
        pool = self._pools.setdefault(key, [])
        index = used.get(key, 0)
        used[key] = index + 1
        if index == len(pool):
            pool.append(self._factory(task))
        return pool[index]

    def set_tasks(self, tasks: Sequence[Task], rngs: Sequence[np.random.Generator]) -> None:
        if len(tasks) != self.n or len(rngs) != self.n:
            raise ValueError(f"expected {self.n} tasks and generators, got {len(tasks)} and {len(rngs)}")
        used: dict[Any, int] = {}
        for slot, (task, rng) in enumerate(zip(tasks, rngs)):
            env = self._take(task, used)
            env.set_task(task)
            self._envs[slot] = env
            self._rngs[slot] = rng
        first = self._envs[0]
        assert first is not None
        self.obs_dim, self.act_dim = first.obs_dim, first.act_dim
        self.action_low, self.action_high = first.action_low, first.action_high
        if self._obs is None:
            self._obs = np.zeros((self.n, self.obs_dim), dtype=np.float32)
            self._reward = np.zeros(self.n, dtype=np.float64)
            self._terminated = np.zeros(self.n, dtype=bool)
            self._success = np.zeros(self.n, dtype=np.float64)

    def slot_env(self, slot: int) -> SlotEnv:
        """The `SlotEnv` slot `slot` runs its task on (since the last `set_tasks`)."""
        env = self._envs[slot]
        if env is None:
            raise RuntimeError("set_tasks before slot_env")
        return env

    def reset(self, slots: np.ndarray) -> np.ndarray:
        out = np.empty((len(slots), self.obs_dim), dtype=np.float32)
        for row, slot in enumerate(slots):
            out[row] = self._envs[slot].reset(self._rngs[slot])
        return out

    def step(self, actions: np.ndarray, active: np.ndarray):
        slots = np.flatnonzero(active)
        if self.threads == 1 or len(slots) < 2:
            self._step_slots(slots, actions)
        else:
            self._step_parallel(slots, actions)
        return self._obs, self._reward, self._terminated, self._success

    def _step_slots(self, slots: np.ndarray, actions: np.ndarray) -> None:
        obs, reward, terminated, success = self._obs, self._reward, self._terminated, self._success
        envs = self._envs
        for slot in slots:
            obs[slot], reward[slot], terminated[slot], success[slot] = envs[slot].step(actions[slot])

    def _step_parallel(self, slots: np.ndarray, actions: np.ndarray) -> None:
        if self._workers is None:
            self._workers = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="metarl-env")
        chunks = np.array_split(slots, min(self.threads, len(slots)))
        futures = [self._workers.submit(self._step_slots, chunk, actions) for chunk in chunks[1:]]
        try:
            self._step_slots(chunks[0], actions)  # the calling thread takes a share too
        finally:
            wait(futures)  # every chunk is done before the step returns or raises
        for future in futures:
            future.result()  # re-raises a worker's error

    def close(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=True)
            self._workers = None
        for pool in self._pools.values():
            for env in pool:
                env.close()
        self._pools.clear()
