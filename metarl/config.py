"""Run configuration: presets per benchmark and algorithm, overrides, validation.

A resolved run config is one flat mapping (it is what `config.yaml` in a run holds):

- identity: `algo`, `env`, `seed`, `preset`, `variant`;
- the harness settings of `RunSettings` (every algorithm understands them: budget,
  evaluation and checkpoint cadence, device, threads);
- the algorithm's own settings (fields of its `Agent.Config` dataclass).

Values are layered, later wins:

1. dataclass defaults;
2. `config/budgets.yaml`  [benchmark][preset]   (harness settings: the same for every algorithm,
   so budgets are fair by construction);
3. `config/algos/<algo>.yaml`: `all`, then `benchmarks[<benchmark>]`, then `presets[<preset>]`,
   then `overrides[<benchmark>][<preset>]`        (algorithm settings only);
4. a config file given with `--config` (e.g. the per-run file the workflow writes);
5. `--set KEY=VALUE` on the command line.

Every key and value is checked against the dataclass types; anything unknown or ill-typed is a
`UsageError` naming the key, raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from metarl.errors import UsageError

PRESETS = ("smoke", "quick", "paper")
IDENTITY_KEYS = ("algo", "env", "seed", "preset", "variant")


@dataclass
class RunSettings:
    """Harness settings every algorithm understands (SPEC §6)."""

    total_env_steps: int = 1_000_000  # training budget in environment steps (evaluation not counted)
    eval_every: int = 10  # evaluate the test split every this many iterations (0: only first and last)
    eval_tasks: int = 0  # evaluate on the first N tasks of a split (0: all of them)
    checkpoint_every: int = 5  # write the full training state every this many iterations
    device: Literal["auto", "cpu", "cuda"] = "auto"  # torch device; auto = cuda when available
    threads: int = 1  # torch intra-op threads (results are bit-identical only for equal counts)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def config_dir() -> Path:
    path = repo_root() / "config"
    if not (path / "budgets.yaml").is_file():
        raise UsageError(f"preset files not found under {path}; install the suite with `pip install -e .`")
    return path


# ----------------------------------------------------------------------------- typing


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING  # type: ignore[misc]


def _field_default(f: dataclasses.Field) -> Any:
    """A field's default; list-valued fields have a default_factory instead."""
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    return getattr(tp, "__name__", str(tp))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against type `tp`; return it in canonical form or raise UsageError."""
    origin = typing.get_origin(tp)
    bad = UsageError(f"setting {key!r}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, (list, tuple)):
            raise bad
        return [coerce(key, v, inner) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                raise bad from None
            if number.is_integer():
                return int(number)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"unsupported setting type {tp!r} for {key!r}")


# ----------------------------------------------------------------------------- layering


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of settings")
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items -> mapping; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out


def _section(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise UsageError(f"{where}: {key!r} must be a mapping")
    return value


def _check_keys(settings: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> None:
    for key in settings:
        if key not in allowed:
            raise UsageError(f"{where}: unknown setting {key!r}")


def resolve(
    algo: str,
    env: str,
    seed: int,
    preset: str = "paper",
    variant: str = "default",
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The full, validated, flat run config (see the module docstring for the layering)."""
    from metarl.envs import BENCHMARK_IDS, UnknownBenchmark
    from metarl.registry import get_agent_class

    file_settings = dict(_load_yaml(config_file)) if config_file is not None else {}
    # identity may come from the config file; explicit arguments were merged by the caller
    if env not in BENCHMARK_IDS:
        raise UsageError(str(UnknownBenchmark(env)))
    agent_cls = get_agent_class(algo)
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(variant, str) or not variant or "/" in variant:
        raise UsageError(f"variant must be a non-empty name without '/', got {variant!r}")

    run_types = field_types(RunSettings)
    agent_types = field_types(agent_cls.Config)
    clash = set(run_types) & set(agent_types)
    if clash:
        raise TypeError(f"{agent_cls.__name__}.Config redefines harness settings {sorted(clash)}")
    all_types = {**run_types, **agent_types}

    root = config_dir()
    budgets = _load_yaml(root / "budgets.yaml")
    if env not in budgets or preset not in (budgets[env] or {}):
        raise UsageError(f"config/budgets.yaml has no {preset!r} budget for {env}")
    layers: list[tuple[str, dict[str, Any], Mapping[str, Any]]] = [
        (f"config/budgets.yaml [{env}][{preset}]", budgets[env][preset] or {}, run_types)
    ]
    algo_file = root / "algos" / f"{algo}.yaml"
    if algo_file.is_file():
        data = _load_yaml(algo_file)
        where = f"config/algos/{algo}.yaml"
        _check_keys(data, {"all": 1, "benchmarks": 1, "presets": 1, "overrides": 1}, where)
        layers.append((f"{where} [all]", _section(data, "all", where), agent_types))
        layers.append((f"{where} [benchmarks][{env}]", _section(_section(data, "benchmarks", where), env, where), agent_types))
        layers.append((f"{where} [presets][{preset}]", _section(_section(data, "presets", where), preset, where), agent_types))
        by_env = _section(_section(data, "overrides", where), env, where)
        layers.append((f"{where} [overrides][{env}][{preset}]", _section(by_env, preset, where), agent_types))
    file_only = {k: v for k, v in file_settings.items() if k not in IDENTITY_KEYS}
    layers.append((f"{config_file}", file_only, all_types))
    layers.append(("--set", dict(overrides or {}), all_types))

    values: dict[str, Any] = {}
    for cls in (RunSettings, agent_cls.Config):
        for f in dataclasses.fields(cls):
            if _has_default(f):
                values[f.name] = _field_default(f)
    for where, settings, allowed in layers:
        for key, value in settings.items():
            if key in IDENTITY_KEYS and where == "--set":
                raise UsageError(f"--set: {key!r} is part of the run's identity; use --{key} instead")
            if key not in allowed:
                owner = "harness" if key in run_types else "algorithm" if key in agent_types else None
                if owner == "harness":
                    raise UsageError(f"{where}: {key!r} is a harness setting; set it in config/budgets.yaml, --config or --set")
                if owner == "algorithm":
                    raise UsageError(f"{where}: {key!r} is an algorithm setting and does not belong here")
                raise UsageError(f"{where}: unknown setting {key!r} for algorithm {algo!r}")
            values[key] = coerce(key, value, all_types[key])

    _check_values(values)
    resolved = {"algo": algo, "env": env, "seed": seed, "preset": preset, "variant": variant}
    resolved.update({k: values[k] for k in run_types})
    resolved.update({k: values[k] for k in agent_types})
    return resolved


def _check_values(values: Mapping[str, Any]) -> None:
    positive = ("total_env_steps", "checkpoint_every", "threads", "meta_batch_size")
    for key in positive:
        if key in values and values[key] < 1:
            raise UsageError(f"setting {key!r} must be at least 1, got {values[key]!r}")
    for key in ("eval_every", "eval_tasks"):
        if values[key] < 0:
            raise UsageError(f"setting {key!r} must be 0 or more, got {values[key]!r}")


def identity_from(
    file: Path | None, algo: str | None, env: str | None, seed: int | None, preset: str | None, variant: str | None
) -> dict[str, Any]:
    """Identity keys from the command line, falling back to the `--config` file's values."""
    from_file = _load_yaml(file) if file is not None else {}
    ident = {
        "algo": algo if algo is not None else from_file.get("algo"),
        "env": env if env is not None else from_file.get("env"),
        "seed": seed if seed is not None else from_file.get("seed"),
        "preset": preset if preset is not None else from_file.get("preset", "paper"),
        "variant": variant if variant is not None else from_file.get("variant", "default"),
    }
    for key in ("algo", "env", "seed"):
        if ident[key] is None:
            raise UsageError(f"missing --{key} (or a {key!r} key in the --config file)")
        if file is not None and key in from_file and from_file[key] != ident[key]:
            raise UsageError(f"--{key} {ident[key]!r} contradicts {key}: {from_file[key]!r} in {file}")
    return ident


def split_config(resolved: Mapping[str, Any], agent_cls: type) -> tuple[RunSettings, Any]:
    run = RunSettings(**{f.name: resolved[f.name] for f in dataclasses.fields(RunSettings)})
    agent = agent_cls.Config(**{f.name: resolved[f.name] for f in dataclasses.fields(agent_cls.Config)})
    return run, agent


def dump(resolved: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(resolved), sort_keys=False, default_flow_style=False)


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) of every field, the help taken from the field's trailing
    `# comment` in the dataclass source (so settings are documented in exactly one place)."""
    import inspect
    import re

    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        for line in inspect.getsource(klass).splitlines():
            m = re.match(r"\s+(\w+)\s*:[^=]+=.*?#\s*(.+)$", line)
            if m:
                comments[m.group(1)] = m.group(2).strip()
    types = field_types(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = _field_default(f) if _has_default(f) else None
        out.append((f.name, _type_name(types[f.name]), default, comments.get(f.name, "")))
    return out
