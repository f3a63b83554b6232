"""Algorithm registry: name -> "module:Class" of an `Agent` subclass, imported on first use.

`metarl` imports no agent except through here. To add your own method, either add a line
below or, from your own package, declare an entry point in the group `metarl.algorithms`:

    [project.entry-points."metarl.algorithms"]
    mymethod = "mypackage.agent:MyAgent"

and put its presets in `config/algos/mymethod.yaml` (optional: without it, the dataclass
defaults of `MyAgent.Config` are used for every benchmark and preset).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from metarl.errors import UsageError

BUILTIN_ALGORITHMS: dict[str, str] = {
    "random": "metarl.agent:RandomAgent",
    "trmrl": "trmrl.agent:TrMRLAgent",
    "rl2": "baselines.rl2:RL2Agent",
    "varibad": "baselines.varibad:VariBADAgent",
    "maml_trpo": "baselines.maml_trpo:MAMLTRPOAgent",
    "pearl": "baselines.pearl:PEARLAgent",
}


def algorithms() -> dict[str, str]:
    found = dict(BUILTIN_ALGORITHMS)
    for ep in entry_points(group="metarl.algorithms"):
        found.setdefault(ep.name, ep.value)
    return found


def get_agent_class(name: str):
    known = algorithms()
    if name not in known:
        raise UsageError(f"unknown algorithm {name!r} (known: {', '.join(sorted(known))})")
    module_name, _, attr = known[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
