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
`UsageError` naming the key, raised before anything is written. Numbers must be finite (no NaN
or infinity, integers within 64 bits) and within the `Range` declared beside each field
(`discount: Discount = 0.99`, `lr: PositiveFloat = 3e-4`, `hidden_sizes: list[PositiveInt]`);
settings that constrain each other are checked by the dataclass's `check()` once every layer is
applied (e.g. TrMRL's `d_model` must be a multiple of `heads`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml

from metarl.errors import UsageError

PRESETS = ("smoke", "quick", "paper")
IDENTITY_KEYS = ("algo", "env", "seed", "preset", "variant")
# settings that say where a run's scalars are also sent, never what it computes: a run made
# with other values of them is the same run (it resumes, it is complete, the workflow keeps it)
TRACKING_KEYS = ("tensorboard", "wandb")
SEED_MAX = 2**32 - 1  # seeds are 0 .. 2**32-1 (what numpy's and torch's seeding take as one word)
INT_MAX = 2**63 - 1  # integer settings must fit in 64 bits (numpy / torch integers)


# ----------------------------------------------------------------------------- ranges


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric setting, declared beside the field: `Annotated[float, Range(gt=0)]`.
    gt/ge: lower bound (exclusive/inclusive), lt/le: upper bound; None: unbounded."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def __post_init__(self) -> None:
        if self.gt is not None and self.ge is not None or self.lt is not None and self.le is not None:
            raise TypeError("Range: give at most one lower bound (gt, ge) and one upper bound (lt, le)")

    def contains(self, x: float) -> bool:
        return ((self.gt is None or x > self.gt) and (self.ge is None or x >= self.ge)
                and (self.lt is None or x < self.lt) and (self.le is None or x <= self.le))

    def __str__(self) -> str:
        low = f"({_number(self.gt)}" if self.gt is not None else f"[{_number(self.ge)}" if self.ge is not None else None
        high = f"{_number(self.lt)})" if self.lt is not None else f"{_number(self.le)}]" if self.le is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return ("> " if low[0] == "(" else ">= ") + low[1:]
        if high:
            return ("< " if high[-1] == ")" else "<= ") + high[:-1]
        return "any"


# Readable names for the usual ranges (use them in the dataclasses: `lr: PositiveFloat = 1e-3`).
PositiveInt = Annotated[int, Range(ge=1)]  # counts, sizes, cadences
NonNegativeInt = Annotated[int, Range(ge=0)]  # where 0 means "off" / "none" / "all"
PositiveFloat = Annotated[float, Range(gt=0)]  # learning rates, clips, scales, stds
NonNegativeFloat = Annotated[float, Range(ge=0)]  # coefficients and norms where 0 means "off"
Fraction = Annotated[float, Range(ge=0, le=1)]  # [0, 1], e.g. GAE λ
PositiveFraction = Annotated[float, Range(gt=0, le=1)]  # (0, 1], e.g. a decay factor
Discount = PositiveFraction  # γ in (0, 1]


def range_of(tp: Any) -> Range | None:
    """The `Range` declared in an `Annotated[...]` type, if any."""
    if typing.get_origin(tp) is Annotated:
        for meta in typing.get_args(tp)[1:]:
            if isinstance(meta, Range):
                return meta
    return None


def base_type(tp: Any) -> Any:
    """`tp` without its `Annotated[...]` wrapper."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


@dataclass
class RunSettings:
    """Harness settings every algorithm understands (SPEC §6)."""

    total_env_steps: PositiveInt = 1_000_000  # training budget in environment steps (evaluation not counted)
    eval_every: NonNegativeInt = 10  # evaluate the test split every this many iterations (0: only first and last)
    eval_tasks: NonNegativeInt = 0  # evaluate on the first N tasks of a split (0: all of them)
    checkpoint_every: PositiveInt = 5  # write the full training state every this many iterations
    device: Literal["auto", "cpu", "cuda"] = "auto"  # torch device; auto = cuda when available
    threads: PositiveInt = 1  # torch threads and MuJoCo env-stepping threads (bit-identical only for equal counts)
    tensorboard: bool = True  # also write the run's scalars as TensorBoard event files (the run's tb/)
    wandb: Literal["off", "offline", "online"] = "off"  # also log them to Weights & Biases (offline: into the run's wandb/)

    def check(self) -> None:
        """Checks across settings (none here); each field's own range is checked by `coerce`."""


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def config_dir() -> Path:
    path = repo_root() / "config"
    if not (path / "budgets.yaml").is_file():
        raise UsageError(f"preset files not found under {path}; install the suite with `pip install -e .`")
    return path


# ----------------------------------------------------------------------------- typing


def field_types(cls: type) -> dict[str, Any]:
    """Each field's type, `Annotated[...]` (its `Range`) kept: `coerce` understands both."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING  # type: ignore[misc]


def _field_default(f: dataclasses.Field) -> Any:
    """A field's default; list-valued fields have a default_factory instead."""
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _type_name(tp: Any) -> str:
    bounds = range_of(tp)
    tp = base_type(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    name = getattr(tp, "__name__", str(tp))
    return f"{name} {bounds}" if bounds is not None else name


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against type `tp` (and its `Range`, if `Annotated`); return it in canonical
    form or raise UsageError."""
    bad = UsageError(f"setting {key!r}: expected {_type_name(tp)}, got {value!r}")
    bounds = range_of(tp)
    tp = base_type(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp)
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
            except yaml.YAMLError:
                raise bad from None
        if not isinstance(value, (list, tuple)):
            raise bad
        try:
            return [coerce(key, v, inner) for v in value]
        except UsageError:
            raise bad from None  # one line naming the whole list
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise bad
    if tp is int:
        out: int | float = _to_int(key, value, bad)
    elif tp is float:
        out = _to_float(key, value, bad)
    elif tp is str:
        if isinstance(value, str):
            return value
        raise bad
    else:
        raise TypeError(f"unsupported setting type {tp!r} for {key!r}")
    if bounds is not None and not bounds.contains(out):
        raise bad
    return out


def _not_finite(key: str, value: Any) -> UsageError:
    return UsageError(f"setting {key!r}: expected a finite number, got {value!r}")


def _to_int(key: str, value: Any, bad: UsageError) -> int:
    given, out = value, value
    if isinstance(out, bool):
        raise bad
    if isinstance(out, str):
        text = out.strip().replace("_", "")
        try:
            out = int(text) if text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise bad from None
    if isinstance(out, float):
        if not math.isfinite(out):
            raise _not_finite(key, given)
        if not out.is_integer():
            raise bad
        out = int(out)
    if not isinstance(out, int):
        raise bad
    if abs(out) > INT_MAX:
        raise UsageError(f"setting {key!r}: {given!r} is out of range (integers must fit in 64 bits)")
    return out


def _to_float(key: str, value: Any, bad: UsageError) -> float:
    given, out = value, value
    if isinstance(out, bool):
        raise bad
    if isinstance(out, str):
        try:
            out = float(out)
        except ValueError:
            raise bad from None
    if isinstance(out, int):
        try:
            out = float(out)
        except OverflowError:  # an int beyond float's range
            raise _not_finite(key, given) from None
    if not isinstance(out, float):
        raise bad
    if not math.isfinite(out):
        raise _not_finite(key, given)
    return out


def check_ranges(key: str, value: Any, tp: Any) -> None:
    """Check a value that did not come through `coerce` (a dataclass default) against its
    type's ranges and finiteness, without converting it."""
    bounds, base = range_of(tp), base_type(tp)
    if typing.get_origin(base) in (list, tuple) and isinstance(value, (list, tuple)):
        (inner, *_) = typing.get_args(base)
        for v in value:
            check_ranges(key, v, inner)
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or (bounds is not None and not bounds.contains(value)):
            raise UsageError(f"setting {key!r}: expected {_type_name(tp)}, got {value!r}")


# ----------------------------------------------------------------------------- layering


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a directory, not a file") from None
    except PermissionError:
        raise UsageError(f"config file {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise UsageError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"config file {path} is not UTF-8 text (a binary file?)") from None
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
    file_settings = dict(_load_yaml(config_file)) if config_file is not None else {}
    # identity may come from the config file; explicit arguments were merged by the caller
    agent_cls = _check_identity(algo, env, seed, preset, variant)

    run_types = field_types(RunSettings)
    agent_types = field_types(agent_cls.Config)
    clash = set(run_types) & set(agent_types)
    if clash:
        raise TypeError(f"{agent_cls.__name__}.Config redefines harness settings {sorted(clash)}")
    all_types = {**run_types, **agent_types}

    layers = _layers(algo, env, preset, run_types, agent_types)
    file_only = {k: v for k, v in file_settings.items() if k not in IDENTITY_KEYS}
    layers.append((f"{config_file}", file_only, all_types))
    layers.append(("--set", dict(overrides or {}), all_types))

    values: dict[str, Any] = {}
    for cls in (RunSettings, agent_cls.Config):
        for f in dataclasses.fields(cls):
            if _has_default(f):
                values[f.name] = _field_default(f)
                check_ranges(f.name, values[f.name], all_types[f.name])
    for where, settings, allowed in layers:
        _apply_layer(values, where, settings, allowed, algo, run_types, agent_types)

    missing = [k for k in all_types if k not in values]
    if missing:
        raise UsageError(f"setting {missing[0]!r} has no default and was not given")
    # each value is within its own range (coerce); now the checks across settings
    for cls, types in ((RunSettings, run_types), (agent_cls.Config, agent_types)):
        check = getattr(cls(**{k: values[k] for k in types}), "check", None)
        if check is not None:
            check()
    resolved = {"algo": algo, "env": env, "seed": seed, "preset": preset, "variant": variant}
    resolved.update({k: values[k] for k in run_types})
    resolved.update({k: values[k] for k in agent_types})
    return resolved


def _check_identity(algo: str, env: str, seed: int, preset: str, variant: str) -> type:
    """The agent class of `algo`, once every part of the run's identity is known to be valid."""
    from metarl.envs import BENCHMARK_IDS, UnknownBenchmark
    from metarl.registry import get_agent_class

    for key, value in (("algo", algo), ("env", env), ("preset", preset)):
        if not isinstance(value, str):
            raise UsageError(f"{key} must be a name, got {value!r}")
    if env not in BENCHMARK_IDS:
        raise UsageError(str(UnknownBenchmark(env)))
    agent_cls = get_agent_class(algo)
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
        raise UsageError(f"seed must be an integer from 0 to 2**32-1 = {SEED_MAX}, got {seed!r}")
    if not isinstance(variant, str) or not variant or "/" in variant:
        raise UsageError(f"variant must be a non-empty name without '/', got {variant!r}")
    return agent_cls


def _layers(algo: str, env: str, preset: str, run_types: Mapping[str, Any],
            agent_types: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], Mapping[str, Any]]]:
    """The layers of config/ in the order they apply: (where, settings, the keys it may set)."""
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
    return layers


def _apply_layer(values: dict[str, Any], where: str, settings: Mapping[str, Any], allowed: Mapping[str, Any],
                 algo: str, run_types: Mapping[str, Any], agent_types: Mapping[str, Any]) -> None:
    """Set `values` from one layer, each value coerced and range-checked; a key the layer may not
    set is refused, the message saying where it belongs."""
    all_types = {**run_types, **agent_types}
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


def without_tracking(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """A run config without its `TRACKING_KEYS`: what two configs must share to be the same run."""
    return {k: v for k, v in resolved.items() if k not in TRACKING_KEYS}


def split_config(resolved: Mapping[str, Any], agent_cls: type) -> tuple[RunSettings, Any]:
    # config.yaml files written before the tracking settings existed lack them: their defaults
    run = RunSettings(**{f.name: resolved[f.name] for f in dataclasses.fields(RunSettings)
                         if f.name in resolved or f.name not in TRACKING_KEYS})
    agent = agent_cls.Config(**{f.name: resolved[f.name] for f in dataclasses.fields(agent_cls.Config)})
    return run, agent


def dump(resolved: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(resolved), sort_keys=False, default_flow_style=False)


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) of every field, the help taken from the field's trailing
    `# comment` in the dataclass source (so settings are documented in exactly one place); the
    type shows the field's range (e.g. "float in (0, 1]")."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update(_field_comments(klass))
    types = field_types(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = _field_default(f) if _has_default(f) else None
        out.append((f.name, _type_name(types[f.name]), default, comments.get(f.name, "")))
    return out


def _field_comments(klass: type) -> dict[str, str]:
    """{field: trailing comment} of the `name: type = default  # comment` lines of a class
    (comment tokens, so a '#' or '=' inside the annotation or the default does not confuse it)."""
    import inspect
    import io
    import re
    import textwrap
    import tokenize

    source = textwrap.dedent(inspect.getsource(klass))
    lines = source.splitlines()
    out: dict[str, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        m = re.match(r"\s+(\w+)\s*:", lines[tok.start[0] - 1])
        if m and tok.start[1] > m.end():
            out[m.group(1)] = tok.string.lstrip("#").strip()
    return out
