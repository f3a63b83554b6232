"""What a run directory says about itself, read from its own files (no `metarl` needed): its
identity from config.yaml, its benchmark's facts from metadata.json's `benchmark` block
(docs/protocol.md). Used by collect.py, plots.py and claims.py, so a file's run is never
guessed from its path."""


import json
from pathlib import Path

import yaml


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"{path}: cannot be read ({exc}); `metarl verify` says how to regenerate it") from None
    if not isinstance(config, dict) or not {"env", "algo", "variant", "seed"} <= set(config):
        raise SystemExit(f"{path}: not a run config; `metarl verify` says how to regenerate it")
    return config


def identity(config: dict) -> dict:
    """benchmark, algorithm, variant and seed of a run (the workflow's names for them)."""
    return {"benchmark": config["env"], "algorithm": config["algo"], "variant": config["variant"],
            "seed": int(config["seed"])}


def run_of_file(path) -> dict:
    """The identity of the run a file (eval.csv, steps_test.npz, ...) belongs to."""
    return identity(read_config(Path(path).parent))


def benchmark_block(run_dir: Path) -> dict:
    """metadata.json's benchmark block: episodes, exploration episodes, success signal,
    training range, what each split is."""
    path = Path(run_dir) / "metadata.json"
    try:
        block = json.loads(path.read_text())["benchmark"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"{path}: no benchmark block ({exc}); `metarl verify` says how to regenerate it") from None
    if "eval_episodes" not in block:
        raise SystemExit(f"{path}: written by an older version of the suite (its benchmark block has no "
                         "eval_episodes); retrain the run")
    return block
