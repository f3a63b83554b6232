"""The one interface every meta-RL algorithm implements, and the `random` agent.

In the spirit of garage's exploration-policy / adapt-policy pair, but online: the harness runs
*trials* (E episodes in one task) for many tasks at once and tells the agent what happens:

    agent.start_trial(n, spec)            # n slots begin a trial; reset all per-trial context
    agent.start_episode(slots)            # these slots begin an episode of their trial
    actions, extras = agent.act(tokens, deterministic)   # one batched call per step, all n slots
    agent.end_episode(slots, trials)      # these slots finished an episode: adapt if you like
    metrics = agent.update(batch)         # learn from a finished batch of training trials

So RL²/TrMRL/VariBAD keep their hidden state or window, PEARL infers a posterior from the
episodes seen so far, MAML takes a gradient step on them, and training, evaluation and OOD
tests are written once, in the harness.

`act` receives the RL² tokens [obs, previous action, previous reward, previous done] of every
slot (see `metarl.sampling`); rows of slots whose trial is over are zeros and their actions are
ignored. `extras` (log-probabilities, values, windows...) are stored beside the step in the
`TrialBatch` the agent later gets in `update`.

Randomness: an agent draws from its own generators and returns them in `state_dict`, so a
resumed run continues the same streams. Evaluation trials carry their own seed
(`TrialSpec.seed`) so that evaluating never moves the training streams.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from metarl.config import PositiveInt
from metarl.seeding import agent_rng, eval_generator

if TYPE_CHECKING:
    from metarl.envs.base import Benchmark
    from metarl.sampling import TrialBatch


@dataclass
class AgentConfig:
    """Settings every algorithm has. Subclass it (a dataclass) for an algorithm's own settings;
    the trailing field comments are what `metarl settings --algo NAME` prints. Declare each
    numeric field's range with the aliases of `metarl.config` (`PositiveInt`, `Discount`, ...,
    or `Annotated[float, Range(...)]`), and checks across fields in `check`."""

    meta_batch_size: PositiveInt = 20  # tasks (one trial each) sampled per training iteration

    def check(self) -> None:
        """Raise `UsageError` (one line naming the settings) if settings contradict each other;
        run by `metarl.config.resolve` after every layer is applied. Extend it with super()."""


@dataclass(frozen=True)
class TrialSpec:
    episodes: int  # episodes in this trial
    exploration_episodes: int  # the first ones adapt (Meta-World protocol); the rest are scored
    training: bool  # a training trial (False: an evaluation trial)
    seed: int  # evaluation trials: seed for any randomness the agent uses in them
    episode_length: int  # steps after which an episode is cut (the benchmark's time limit)

    @classmethod
    def for_training(cls, bench: "Benchmark") -> "TrialSpec":
        """A training trial: `bench.train_episodes` episodes, all learned from; the agent draws
        from its own training streams."""
        return cls(bench.train_episodes, 0, True, 0, bench.episode_length)

    @classmethod
    def for_evaluation(cls, bench: "Benchmark", seed: int) -> "TrialSpec":
        """An evaluation trial of the protocol (SPEC §5): `bench.eval_episodes` episodes, the
        first `bench.exploration_episodes` exploring; the agent's randomness comes from `seed`."""
        return cls(bench.eval_episodes, bench.exploration_episodes, False, seed, bench.episode_length)


@dataclass(frozen=True)
class EnvSpec:
    """What an agent may know about the benchmark: sizes, bounds, lengths (never the tasks)."""

    benchmark: str
    obs_dim: int
    act_dim: int
    token_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    episode_length: int
    train_episodes: int
    eval_episodes: int

    @classmethod
    def of(cls, bench: "Benchmark") -> "EnvSpec":
        return cls(
            benchmark=bench.id,
            obs_dim=bench.obs_dim,
            act_dim=bench.act_dim,
            token_dim=bench.obs_dim + bench.act_dim + 2,
            action_low=bench.action_low,
            action_high=bench.action_high,
            episode_length=bench.episode_length,
            train_episodes=bench.train_episodes,
            eval_episodes=bench.eval_episodes,
        )


class Agent(abc.ABC):
    """Base class of every algorithm. See the module docstring for the call order."""

    Config: ClassVar[type[AgentConfig]] = AgentConfig
    # Agents with an episodic memory (TrMRL) return it as extras["memory"] from `act` while
    # `export_memory` is set (used by `metarl evaluate --export-memory`).
    supports_memory_export: ClassVar[bool] = False
    export_memory: bool = False

    def __init__(self, config: AgentConfig, env: EnvSpec, device: torch.device, seed: int):
        # The harness has seeded torch's global generator from its own stream of `seed` before
        # this runs, so weight initialisation is reproducible; the agent's own generators come
        # from `metarl.seeding.agent_generator(seed, name)` (one named stream each).
        self.config = config
        self.env = env
        self.device = device
        self.seed = seed

    # -- acting ------------------------------------------------------------------------------
    @abc.abstractmethod
    def start_trial(self, n: int, spec: TrialSpec) -> None: ...

    def trial_generator(self, spec: TrialSpec) -> torch.Generator:
        """The torch generator a trial's actions are drawn from: in training, the agent's own
        `train_gen` (made with `agent_generator(seed, "act")`, carried across iterations and
        checkpointed); in evaluation, a fresh stream of the trial's seed, so an evaluation
        never depends on, nor moves, the training stream."""
        return self.train_gen if spec.training else eval_generator(spec.seed)

    def start_episode(self, slots: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Slots `slots` start a new episode within their trial."""

    @abc.abstractmethod
    def act(self, tokens: np.ndarray, deterministic: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """tokens (n, token_dim) float32, deterministic (n,) bool -> actions (n, act_dim), extras."""

    def end_episode(self, slots: np.ndarray, trials: "TrialBatch") -> None:  # noqa: B027
        """Slots `slots` finished an episode; `trials` holds everything of the trials so far."""

    # -- learning ----------------------------------------------------------------------------
    @abc.abstractmethod
    def update(self, batch: "TrialBatch") -> dict[str, float]:
        """Learn from a batch of finished training trials; return metrics (same keys each time)."""

    # -- persistence -------------------------------------------------------------------------
    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: weights, optimisers, buffers, generator states."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def model_state(self) -> dict[str, Any]:
        """What goes into `model.pt` (final weights). Defaults to the full state."""
        return self.state_dict()

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state)


class RandomAgent(Agent):
    """Uniform random actions within the action bounds: the floor in every table."""

    Config = AgentConfig

    def __init__(self, config: AgentConfig, env: EnvSpec, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self._train_rng = agent_rng(seed, "act")
        self._rng = self._train_rng

    def start_trial(self, n: int, spec: TrialSpec) -> None:
        self._rng = self._train_rng if spec.training else np.random.default_rng([spec.seed, 1])

    def act(self, tokens, deterministic):
        low, high = self.env.action_low, self.env.action_high
        actions = self._rng.uniform(low, high, size=(len(tokens), self.env.act_dim)).astype(np.float32)
        return actions, {}

    def update(self, batch):
        return {}

    def state_dict(self):
        return {"rng": self._train_rng.bit_generator.state}

    def load_state_dict(self, state):
        self._train_rng.bit_generator.state = state["rng"]
