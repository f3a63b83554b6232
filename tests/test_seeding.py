"""Random streams: every generator an agent or the harness draws from is its own stream of the
run seed (metarl.seeding), so no two seeds or generators share draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl import config as cfg
from metarl.registry import BUILTIN_ALGORITHMS
from metarl.seeding import agent_generator, agent_rng, eval_agent_seed, eval_generator, seed_globals
from metarl.setup import build_agent, prepare

SEEDS = range(1, 11)


def _first_draws(gen) -> tuple:
    """The first draws of a generator, from a copy (the agent's own stays untouched)."""
    if isinstance(gen, torch.Generator):
        copy = torch.Generator().set_state(gen.get_state())
        return tuple(torch.randint(0, 2**62, (4,), generator=copy).tolist())
    copy = np.random.Generator(type(gen.bit_generator)())
    copy.bit_generator.state = gen.bit_generator.state
    return tuple(copy.integers(0, 2**62, 4).tolist())


def _agent_generators(algo: str, seed: int) -> dict[str, object]:
    resolved = cfg.resolve(algo, "PointNav", seed, "smoke")
    agent = build_agent(prepare(resolved))
    gens: dict[str, object] = {}
    for name, g in vars(agent).items():  # each generator once (`gen` is the current stream's alias)
        if isinstance(g, (torch.Generator, np.random.Generator)) and all(g is not h for h in gens.values()):
            gens[name] = g
    assert gens, f"{algo} has no generator of its own"
    return gens


@pytest.mark.parametrize("algo", BUILTIN_ALGORITHMS)
def test_no_two_streams_coincide(algo):
    """Over seeds 1..10, the agent's generators, the global (weight-initialisation) generators
    and the evaluation trials' generators never repeat one another's draws. (Different
    algorithms do share streams for the same seed: common random numbers, not a dependence.)"""
    draws: dict[tuple, str] = {}

    def add(label: str, gen) -> None:
        first = _first_draws(gen)
        assert first not in draws, f"{label} repeats {draws[first]}"
        draws[first] = label

    for seed in SEEDS:
        seed_globals(seed)  # the weight-initialisation streams
        add(f"seed {seed} torch global", torch.default_generator)
        add(f"seed {seed} numpy global", np.random.default_rng(np.random.randint(0, 2**31, 4)))
        gens = _agent_generators(algo, seed)
        for name, gen in gens.items():
            add(f"seed {seed} {name}", gen)
        for iteration in (0, 5):
            add(f"seed {seed} evaluation trial {iteration}", eval_generator(eval_agent_seed(seed, iteration, 0, 0)))
    assert len(draws) == len(SEEDS) * (2 + len(gens) + 2)


def test_named_streams_differ():
    draws = set()
    for seed in SEEDS:
        for stream in ("act", "update", "vae", "buffer"):
            draws.add(_first_draws(agent_rng(seed, stream)))
            draws.add(_first_draws(agent_generator(seed, stream)))
    assert len(draws) == len(SEEDS) * 4 * 2


def test_streams_are_stable():
    # pinned values: a change of the derivation changes every run's bytes and must be deliberate
    a = agent_generator(1, "act")
    assert torch.equal(torch.randint(0, 2**31, (2,), generator=a), torch.randint(0, 2**31, (2,), generator=agent_generator(1, "act")))
    assert _first_draws(agent_generator(1, "act")) != _first_draws(agent_generator(2, "act"))
    assert _first_draws(agent_generator(1, "update")) != _first_draws(agent_generator(2, "act"))
