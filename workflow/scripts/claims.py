"""Published claims against the runs of the grid (issue 16): results/tables/claims.{csv,md,tex}
and results/figures/claims.pdf. The claims are data (config/claims.yaml plus the pipeline
config's `claims.extra`); docs/claims.md explains every definition.

A claim is one or more *parts*, each a comparison on one benchmark: the claimed-better side A
(an algorithm, or an ablation variant of one) against B (another algorithm or variant, the same
runs' other metric, or a fixed number). Per part:

- the values: one number per seed (run), from results/summary/scores.parquet (the headline
  numbers of metrics.run_scores), runs.parquet (`episode_return`) or the runs' steps_test.npz
  (`steps_to_best`);
- the estimate: d = IQM(A) - IQM(B) over seeds with its 95 % stratified-bootstrap CI (rliable;
  `metrics.difference_interval`, each side resampled on its own), or, where B is the same runs
  (another metric) or a fixed number, the IQM of the per-seed differences with its CI
  (`metrics.interval`); for two algorithms also P(A > B) with its CI (rliable's
  `probability_of_improvement`, `metrics.improvement_probabilities`). Replications, confidence
  level and the bootstrap's seed are the config's `aggregate` block (`metrics.Bootstrap`);
- the verdict, from the CI of d and the part's relation (`decide`): *supported* when the CI
  lies on the claimed side, *contradicted* when it lies on the other, *inconclusive* when it
  straddles (or a side has a single seed: no interval), *not run* when the grid lacks the runs
  (with the config change that would add them);
- seeds needed (`seeds_needed`): the smallest number of seeds per algorithm for which at least
  `power` (80 %) of simulated experiments give a CI on the side of the measured effect. Each
  simulated experiment draws n seeds per side from a normal with the side's measured IQM and
  standard deviation (ddof=1) and computes the percentile bootstrap CI of the IQM difference
  with a vectorised resampler (`bootstrap_ci`, the same statistic as rliable's); n is found by
  doubling from 2 and then bisection up to max_seeds, assuming the power grows with n; ">max_seeds" when even that is
  not enough, "unknown (1 seed)" when a side has no spread to measure.

A claim's verdict combines its parts: contradicted if any part is, supported if every part is,
not run if no part could be run, inconclusive otherwise.
"""

import math
import re
import sys
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import yaml

import metrics
import render

# ----------------------------------------------------------------------------- vocabulary

METRICS = {
    "adapted_return": "adapted return (last episode of the trial)",
    "first_return": "first-episode return",
    "episode_return": "return of one episode of the trial (`episode`, 0 = the first)",
    "success_rate": "success rate",
    "max_success_rate": "highest success rate of any evaluation during training",
    "ood_drop": "test score minus OOD score of the same run",
    "steps_to_best": "steps of the first episode until the best per-step reward",
}
SCORE_METRICS = ("adapted_return", "first_return", "success_rate", "max_success_rate")  # columns of scores.parquet
SUCCESS_METRICS = ("success_rate", "max_success_rate")
RETURN_METRICS = ("adapted_return", "first_return", "episode_return")
RELATIONS = ("greater", "greater_equal", "less", "less_equal", "within")
SYMBOLS = {"greater": ">", "greater_equal": "≥", "less": "<", "less_equal": "≤", "within": "≈"}
SPLITS = ("test", "ood")
VERDICTS = ("supported", "contradicted", "inconclusive", "not run")
PAPERS = {
    "metaworld_table1": "Meta-World paper (arXiv 1910.10897 v2) Table 1, meta-test, mean over 10 seeds "
                        "of each seed's maximum success rate (v2 environments)",
}
CLAIM_KEYS = {"id", "source", "statement", "note", "parts"}
PART_KEYS = {"label", "benchmark", "split", "metric", "episode", "fraction", "algorithms", "algorithm",
             "variants", "against", "relation", "margin", "threshold", "relative"}
VARIANT = re.compile(r"^([a-z_]+)-([A-Za-z0-9_]+)$")
DEFAULT_FILE = "config/claims.yaml"
AGAINST_KINDS = ("value", "metric", "paper")  # what `against` may name


class ClaimError(ValueError):
    """A claim that cannot be checked: one line naming the claim and the problem."""


@dataclass(frozen=True)
class Known:
    """What a claim may name: registered algorithms, benchmark ID -> (split names, has a
    success signal), and (optionally) algorithm -> its setting names, for variant names."""

    algorithms: frozenset
    benchmarks: Mapping[str, tuple[tuple[str, ...], bool]]
    settings: Callable[[str], set] | None = None


def known_from_metarl() -> Known:
    """The algorithms and benchmarks metarl knows (registry, envs) and each algorithm's settings."""
    import metarl.config
    import metarl.envs
    import metarl.registry

    benchmarks = {}
    for name in metarl.envs.BENCHMARK_IDS:
        bench = metarl.envs.get_benchmark(name)
        # Meta-World's splits take long to build (ML45: tens of seconds); their names are fixed
        # by SPEC §3: the held-out test set, and `ood` = the same set.
        splits = ("test", "ood") if bench.family == "metaworld" else tuple(bench.splits())
        benchmarks[name] = (splits, bool(bench.has_success))

    def settings(algo: str) -> set:
        cls = metarl.registry.get_agent_class(algo)
        return set(metarl.config.field_types(cls.Config)) | set(metarl.config.field_types(metarl.config.RunSettings))

    return Known(frozenset(metarl.registry.algorithms()), benchmarks, settings)


def paper_budgets() -> dict[str, int]:
    """Training env steps of the `paper` preset per benchmark (config/budgets.yaml: the
    references' budgets), against which a smaller preset's budget is stated."""
    import metarl.config

    data = yaml.safe_load((metarl.config.config_dir() / "budgets.yaml").read_text()) or {}
    return {b: int(v["paper"]["total_env_steps"]) for b, v in data.items() if isinstance(v, dict) and "paper" in v}


def paper_value(paper: str, algorithm: str, benchmark: str) -> float | None:
    """A published number (as a fraction) the suite already holds, or None."""
    if paper == "metaworld_table1":
        import tables  # its PAPER_METATEST: research/baselines.md §4.1, in %

        value = tables.PAPER_METATEST.get(algorithm, {}).get(benchmark)
        return None if value is None else value / 100
    return None


# ----------------------------------------------------------------------------- loading


def read_file(path) -> list:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ClaimError(f"{path} not found (config claims.file)") from None
    except yaml.YAMLError as exc:
        raise ClaimError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("claims", []), list):
        raise ClaimError(f"{path}: expected a mapping with a list under `claims`")
    return data.get("claims") or []


def merge(file_claims: list, extra: list, file: str = "claims file", extra_name: str = "claims.extra") -> list:
    """(claim, where it comes from): the file's claims, then the extra ones; an extra claim whose
    id is already there replaces that claim in place."""
    out = [(c, file) for c in file_claims]
    index = {c.get("id"): i for i, (c, _) in enumerate(out) if isinstance(c, dict)}
    for claim in extra or []:
        cid = claim.get("id") if isinstance(claim, dict) else None
        if cid is not None and cid in index:
            out[index[cid]] = (claim, extra_name)
        else:
            index[cid] = len(out)
            out.append((claim, extra_name))
    return out


ABLATION_BENCHMARK = "ablations"  # `benchmark: ablations`: the benchmark the config ablates on


def load(settings: Mapping | None, known: Known, ablation_benchmark: str | None = None) -> list[dict]:
    """The claims of the pipeline config's `claims` block (file + extra), checked and expanded
    into parts (plain data, so Snakemake can pass them as a param). A claim (or part) with
    `benchmark: ablations` is judged on the config's `ablations.benchmark`."""
    settings = settings or {}
    path = settings.get("file", DEFAULT_FILE)
    file_claims = read_file(path) if path else []
    entries = [(_on_ablation_benchmark(claim, ablation_benchmark, origin), origin)
               for claim, origin in merge(file_claims, settings.get("extra") or [], str(path))]
    return parse(entries, known)


def _on_ablation_benchmark(claim, benchmark: str | None, origin: str):
    if not isinstance(claim, dict):
        return claim
    specs = [claim] + [p for p in claim.get("parts") or [] if isinstance(p, dict)]
    if not any(s.get("benchmark") == ABLATION_BENCHMARK for s in specs):
        return claim
    if benchmark is None:
        raise ClaimError(f"{origin}: claim {claim.get('id')}: `benchmark: {ABLATION_BENCHMARK}` needs an "
                         "`ablations.benchmark` in the config")
    claim = {**claim, "parts": claim.get("parts")}
    if claim.get("benchmark") == ABLATION_BENCHMARK:
        claim["benchmark"] = benchmark
    if claim["parts"] is None:
        del claim["parts"]
    else:
        claim["parts"] = [{**p, "benchmark": benchmark} if isinstance(p, dict) and p.get("benchmark") == ABLATION_BENCHMARK
                          else p for p in claim["parts"]]
    return claim


def parse(entries: list, known: Known, where: str = "claims") -> list[dict]:
    """Check and expand claims: `entries` are claims, or (claim, where it comes from) pairs."""
    out, seen = [], set()
    for i, entry in enumerate(entries):
        entry, origin = entry if isinstance(entry, tuple) else (entry, where)
        if not isinstance(entry, dict):
            raise ClaimError(f"{origin}: claim #{i + 1} is not a mapping")
        cid = entry.get("id")
        if not isinstance(cid, str) or not re.match(r"^[A-Za-z0-9_.-]+$", cid):
            raise ClaimError(f"{origin}: claim #{i + 1} needs an `id` of letters, digits, '_', '.', '-' "
                             f"(got {cid!r})")
        if cid in seen:
            raise ClaimError(f"{origin}: claim {cid}: the id is used twice")
        seen.add(cid)
        out.append(_claim(entry, known, f"{origin}: claim {cid}"))
    return out


def _claim(entry: dict, known: Known, where: str) -> dict:
    unknown = sorted(set(entry) - CLAIM_KEYS - PART_KEYS)
    if unknown:
        known_keys = ", ".join(sorted(CLAIM_KEYS | PART_KEYS))
        raise ClaimError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {known_keys})")
    for key in ("source", "statement"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ClaimError(f"{where}: `{key}` must be a non-empty text")
    parts = entry.get("parts")
    if parts is None:
        parts = [{}]
    if not isinstance(parts, list) or not parts:
        raise ClaimError(f"{where}: `parts` must be a non-empty list")
    shared = {k: v for k, v in entry.items() if k in PART_KEYS}
    comparisons = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            raise ClaimError(f"{where}: part {j + 1} is not a mapping")
        bad = sorted(set(part) - PART_KEYS)
        if bad:
            raise ClaimError(f"{where}: part {j + 1}: unknown key(s) {', '.join(bad)} "
                             f"(known: {', '.join(sorted(PART_KEYS))})")
        spec = {**shared, **part}
        if "variants" in part and "algorithms" not in part:
            spec.pop("algorithms", None)
        if "algorithms" in part and "variants" not in part:
            spec.pop("variants", None)
        comparisons += _comparisons(spec, known, where + (f", part {j + 1}" if len(parts) > 1 else ""))
    for k, c in enumerate(comparisons):
        c["claim"], c["part"] = entry["id"], k + 1
    return {"id": entry["id"], "source": entry["source"].strip(), "statement": entry["statement"].strip(),
            "note": " ".join(str(entry.get("note", "")).split()), "parts": comparisons}


def _number(spec, key, where, default=None, low=None, high=None, positive=False):
    value = spec.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ClaimError(f"{where}: `{key}` must be a finite number (got {value!r})")
    if (low is not None and value < low) or (high is not None and value > high) or (positive and value <= 0):
        bounds = "> 0" if positive else f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ClaimError(f"{where}: `{key}` must be {bounds} (got {value})")
    return float(value)


def _comparisons(spec: dict, known: Known, where: str) -> list[dict]:
    """One part, checked and expanded: each of its benchmarks against each (A, B) pair of its
    sides. The checks run in the order of these calls (benchmarks, what is measured, the sides,
    then per comparison), so a spec with several problems reports the first of them."""
    benches = _benchmarks(spec, known, where)
    measure = _measure(spec, benches, known, where)
    if "variants" in spec:
        sides = _variant_sides(spec, known, where)
    else:
        sides = _algorithm_sides(spec, known, measure["metric"], where)
    return [_comparison(spec, measure, b, a, other, where) for b in benches for a, other in sides]


def _benchmarks(spec: dict, known: Known, where: str) -> list:
    """The part's `benchmark`: one ID or a list of them, each one the suite knows."""
    benches = spec.get("benchmark")
    benches = [benches] if isinstance(benches, str) else benches
    if not benches or not isinstance(benches, list):
        raise ClaimError(f"{where}: `benchmark` must be a benchmark ID or a list of them")
    for b in benches:
        if b not in known.benchmarks:
            raise ClaimError(f"{where}: unknown benchmark {b!r} (known: {', '.join(known.benchmarks)})")
    return benches


def _measure(spec: dict, benches: list, known: Known, where: str) -> dict:
    """What a part measures and how it is decided (metric, split, relation, margin, threshold,
    relative, episode, fraction), defaults filled in, and checked against each of its benchmarks:
    the split exists there, and a success metric needs a benchmark with a success signal."""
    metric = spec.get("metric")
    if metric not in METRICS:
        raise ClaimError(f"{where}: unknown metric {metric!r} (known: {', '.join(METRICS)})")
    split = spec.get("split", "test")
    if split not in SPLITS:
        raise ClaimError(f"{where}: unknown split {split!r} (known: {', '.join(SPLITS)})")
    if metric == "ood_drop":
        split = "ood"
    relation = spec.get("relation")
    if relation not in RELATIONS:
        raise ClaimError(f"{where}: unknown relation {relation!r} (known: {', '.join(RELATIONS)})")
    margin = _number(spec, "margin", where, 0.0, low=0)
    threshold = _number(spec, "threshold", where, positive=True)
    if relation == "within" and threshold is None:
        raise ClaimError(f"{where}: relation `within` needs a `threshold` (> 0)")
    relative = spec.get("relative", False)
    if not isinstance(relative, bool):
        raise ClaimError(f"{where}: `relative` must be true or false")
    episode = spec.get("episode", 0 if metric == "steps_to_best" else None)
    if metric in ("episode_return", "steps_to_best"):
        if isinstance(episode, bool) or not isinstance(episode, int) or episode < 0:
            raise ClaimError(f"{where}: metric {metric} needs an `episode` (an integer >= 0; 0 = the first)")
    else:
        episode = None
    fraction = _number(spec, "fraction", where, 0.9, low=0, high=1) if metric == "steps_to_best" else None
    if fraction is not None and fraction <= 0:
        raise ClaimError(f"{where}: `fraction` must be in (0, 1]")
    for b in benches:
        splits, has_success = known.benchmarks[b]
        if split not in splits:
            raise ClaimError(f"{where}: {b} has no split {split!r} (it has: {', '.join(splits)})")
        if metric in SUCCESS_METRICS and not has_success:
            raise ClaimError(f"{where}: metric {metric} on {b}, which has no success signal")
    return {"metric": metric, "split": split, "relation": relation, "margin": margin, "threshold": threshold,
            "relative": relative, "episode": episode, "fraction": fraction}


def _variant_sides(spec: dict, known: Known, where: str) -> list[tuple[dict, dict]]:
    """(A, B) pairs of an ablation: the first variant of `algorithm` against each other one.
    Variant names are checked against the algorithm's settings where those are known."""
    algo = spec.get("algorithm")
    if algo not in known.algorithms:
        raise ClaimError(f"{where}: unknown algorithm {algo!r} (known: {', '.join(sorted(known.algorithms))})")
    variants = spec["variants"]
    if not isinstance(variants, list) or len(variants) < 2 or len(set(variants)) != len(variants):
        raise ClaimError(f"{where}: `variants` must list at least two different variant names")
    names = known.settings(algo) if known.settings else None
    for v in variants:
        m = VARIANT.match(str(v))
        if v != "default" and not m:
            raise ClaimError(f"{where}: variant {v!r} is not `default` or `<setting>-<value>` (e.g. tfixup-off)")
        if m and names is not None and m.group(1) not in names:
            raise ClaimError(f"{where}: variant {v!r}: {algo} has no setting {m.group(1)!r} "
                             f"(`metarl settings --algo {algo}`)")
    if "against" in spec:
        raise ClaimError(f"{where}: `against` compares algorithms, not variants")
    return [({"algorithm": algo, "variant": variants[0]}, {"kind": "run", "algorithm": algo, "variant": v})
            for v in variants[1:]]


def _algorithm_sides(spec: dict, known: Known, metric: str, where: str) -> list[tuple[dict, dict]]:
    """(A, B) pairs of a comparison of algorithms (default variants): the first against each
    other one, or, with `against`, each algorithm against what that names (`_against_sides`)."""
    algos = spec.get("algorithms")
    if not isinstance(algos, list) or not algos or len(set(algos)) != len(algos):
        raise ClaimError(f"{where}: `algorithms` must list different algorithm IDs "
                         "(or give `algorithm` and `variants`)")
    for a in algos:
        if a not in known.algorithms:
            raise ClaimError(f"{where}: unknown algorithm {a!r} (known: {', '.join(sorted(known.algorithms))})")
    against = spec.get("against")
    if against is None:
        if len(algos) < 2:
            raise ClaimError(f"{where}: compare at least two algorithms, or give `against`")
        claimed = {"algorithm": algos[0], "variant": "default"}
        return [(claimed, {"kind": "run", "algorithm": a, "variant": "default"}) for a in algos[1:]]
    return _against_sides(against, algos, metric, where)


def _against_sides(against, algos: list, metric: str, where: str) -> list[tuple[dict, dict]]:
    """(A, B) pairs of each algorithm against `against`: {value: X} a fixed number, {metric: M}
    the same runs' other score metric, {paper: NAME} a published number (B stays a reference to
    the paper here; `_comparison` looks its number up per benchmark)."""
    if not isinstance(against, dict) or len(against) != 1 or next(iter(against)) not in AGAINST_KINDS:
        raise ClaimError(f"{where}: `against` must be one of {{value: X}}, {{metric: M}}, {{paper: NAME}}")
    kind, target = next(iter(against.items()))
    sides = []
    for a in algos:
        one = {"algorithm": a, "variant": "default"}
        if kind == "value":
            value = _number(against, "value", where)
            sides.append((one, {"kind": "value", "value": value, "source": "fixed"}))
        elif kind == "metric":
            if target not in SCORE_METRICS or target == metric or metric not in SCORE_METRICS:
                raise ClaimError(f"{where}: against.metric pairs two of {', '.join(SCORE_METRICS)} "
                                 f"of the same runs (got {metric} against {target!r})")
            sides.append((one, {"kind": "metric", "algorithm": a, "variant": "default", "metric": target}))
        else:
            if target not in PAPERS:
                raise ClaimError(f"{where}: unknown paper {target!r} (known: {', '.join(PAPERS)})")
            sides.append((one, {"kind": "paper", "paper": target, "algorithm": a}))
    return sides


def _comparison(spec: dict, measure: dict, bench: str, a: dict, other: dict, where: str) -> dict:
    """One comparison (A against B on one benchmark), as plain data. A paper's number depends on
    the benchmark, so B = {paper: NAME} becomes the fixed value it holds here."""
    other = dict(other)
    if other["kind"] == "paper":
        value = paper_value(other["paper"], other["algorithm"], bench)
        if value is None:
            raise ClaimError(f"{where}: {PAPERS[other['paper']].split(',')[0]} has no number for "
                             f"{other['algorithm']} on {bench}")
        other = {"kind": "value", "value": value, "source": other["paper"]}
    label = spec.get("label")
    if label is not None and not isinstance(label, str):
        raise ClaimError(f"{where}: `label` must be a text")
    return {"label": label or "", "benchmark": bench, "split": measure["split"], "metric": measure["metric"],
            "episode": measure["episode"], "fraction": measure["fraction"], "a": a, "b": other,
            "relation": measure["relation"], "margin": measure["margin"], "threshold": measure["threshold"],
            "relative": measure["relative"]}


# ----------------------------------------------------------------------------- decisions


def decide(relation: str, low, high, margin: float = 0.0, threshold: float | None = None):
    """+1 supported, -1 contradicted, 0 inconclusive, from the CI [low, high] of d (arrays or
    scalars; NaN bounds are inconclusive). See config/claims.yaml for the rule of each relation."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    m, t = float(margin or 0.0), float(threshold) if threshold is not None else np.nan
    with np.errstate(invalid="ignore"):
        if relation == "greater":
            yes, no = low > 0, high <= 0
        elif relation == "greater_equal":
            yes, no = low >= -m, high < -m
        elif relation == "less":
            yes, no = high < 0, low >= 0
        elif relation == "less_equal":
            yes, no = high <= m, low > m
        elif relation == "within":
            yes, no = (low >= -t) & (high <= t), (low > t) | (high < -t)
        else:
            raise ValueError(f"unknown relation {relation!r}")
    out = np.where(yes, 1, np.where(no, -1, 0))
    out = np.where(np.isnan(low) | np.isnan(high), 0, out)
    return int(out) if out.ndim == 0 else out


VERDICT_OF = {1: "supported", -1: "contradicted", 0: "inconclusive"}


def combine(verdicts: list[str]) -> str:
    """A claim's verdict from its parts' (see the module docstring)."""
    if not verdicts or all(v == "not run" for v in verdicts):
        return "not run"
    if "contradicted" in verdicts:
        return "contradicted"
    if all(v == "supported" for v in verdicts):
        return "supported"
    return "inconclusive"


# ----------------------------------------------------------------------------- seeds needed


@dataclass(frozen=True)
class Power:
    """Settings of the seeds-needed simulation (config `claims`): the share of simulated
    experiments that must decide the part, the most seeds tried, how many experiments are
    simulated per number of seeds, and the bootstrap replications of each experiment's CI."""

    target: float = 0.8
    max_seeds: int = 100
    experiments: int = 400
    reps: int = 1000

    @classmethod
    def from_config(cls, cfg: Mapping | None, bootstrap: metrics.Bootstrap) -> "Power":
        cfg = cfg or {}
        return cls(float(cfg.get("power", 0.8)), int(cfg.get("max_seeds", 100)), int(cfg.get("experiments", 400)),
                   min(int(cfg.get("reps", 1000)), bootstrap.reps))


def iqm_last(x: np.ndarray) -> np.ndarray:
    """IQM along the last axis, exactly as scipy's trim_mean(0.25) (rliable's aggregate_iqm)."""
    n = x.shape[-1]
    k = int(0.25 * n)
    if k == 0:
        return x.mean(axis=-1)
    return np.partition(x, (k, n - k - 1), axis=-1)[..., k:n - k].mean(axis=-1)


def _bootstrap_iqms(samples: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """(experiments, n) -> (experiments, reps): IQM of each bootstrap resample of each row. The
    experiments are independent, so one set of resampling indices serves them all."""
    experiments, n = samples.shape
    idx = rng.integers(0, n, size=(reps, n))
    samples = samples.astype(np.float32)
    out = np.empty((experiments, reps))
    chunk = max(1, int(4_000_000 // (reps * n)))
    for s in range(0, experiments, chunk):
        out[s:s + chunk] = iqm_last(samples[s:s + chunk][:, idx])
    return out


def bootstrap_ci(samples: list[np.ndarray], reps: int, level: float, rng: np.random.Generator):
    """Percentile bootstrap CI of IQM(a) - IQM(b) (or of IQM(a) with one sample) for many
    experiments at once: `samples` are (experiments, n) arrays, each resampled on its own."""
    stats = _bootstrap_iqms(samples[0], reps, rng)
    if len(samples) > 1:
        stats = stats - _bootstrap_iqms(samples[1], reps, rng)
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha], axis=1)
    return low, high


def simulated_power(centres, spreads, n: int, relation: str, margin: float, threshold: float | None,
                    aim: int, power: Power, level: float, seed: int) -> float:
    """Share of simulated experiments with n seeds per side whose CI decides `aim` (+1 / -1)."""
    rng = np.random.default_rng([seed, n])
    samples = [rng.normal(c, s, size=(power.experiments, n)) for c, s in zip(centres, spreads)]
    low, high = bootstrap_ci(samples, power.reps, level, rng)
    return float(np.mean(decide(relation, low, high, margin, threshold) == aim))


def seeds_needed(samples: list, relation: str, margin: float, threshold: float | None, power: Power,
                 level: float, seed: int) -> dict:
    """Smallest n (seeds per side) at which `power.target` of simulated experiments decide the
    part on the side of the measured effect; `samples` are the measured per-seed values of A
    and B, or one sample (per-seed differences). See the module docstring."""
    samples = [np.asarray(pd.Series(s, dtype=float).dropna(), dtype=float) for s in samples]
    if any(len(s) < 2 for s in samples):
        return {"text": "unknown (1 seed)", "n": np.nan, "aim": ""}
    centres = [metrics.iqm(s) for s in samples]
    spreads = [float(np.std(s, ddof=1)) for s in samples]
    point = centres[0] - (centres[1] if len(centres) > 1 else 0.0)
    aim = decide(relation, point, point, margin, threshold)
    cap = power.max_seeds
    if aim == 0:  # the measured effect sits on the decision boundary: no n decides it
        return {"text": f">{cap}", "n": np.nan, "aim": "effect on the boundary"}
    side = "to support" if aim == 1 else "to contradict"

    def enough(n):
        share = simulated_power(centres, spreads, n, relation, margin, threshold, aim, power, level, seed)
        return share >= power.target

    # doubling from 2, then bisection between the last n that was not enough and the first that was
    low, high = 1, 2  # n = 1 has no interval
    while not enough(high):
        if high >= cap:
            return {"text": f">{cap}", "n": np.nan, "aim": side}
        low, high = high, min(2 * high, cap)
    while high - low > 1:
        mid = (low + high) // 2
        if enough(mid):
            high = mid
        else:
            low = mid
    return {"text": str(high), "n": high, "aim": side}


# ----------------------------------------------------------------------------- per-step rewards


def steps_to_best(reward: np.ndarray, episode: int = 0, fraction: float = 0.9) -> float:
    """t*: the first step of episode `episode` at which the per-step reward, averaged over the
    tasks still running (NaN after an episode ended early), reaches `fraction` of the way from
    its step-0 value to the episode's maximum; 0 when the maximum is at step 0. `reward` is
    steps_test.npz's [tasks, episodes, episode_length] array."""
    r = np.asarray(reward, dtype=float)
    if r.ndim != 3 or episode >= r.shape[1]:
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # steps at which every task has ended
        curve = np.nanmean(r[:, episode, :], axis=0)
    if not len(curve) or np.isnan(curve[0]):
        return np.nan
    best = np.nanmax(curve)
    if best <= curve[0]:
        return 0.0
    # the rewards are float32: a step that reaches the target up to their rounding counts
    target = curve[0] + fraction * (best - curve[0]) - 1e-6 * (best - curve[0])
    with np.errstate(invalid="ignore"):
        return float(np.flatnonzero(curve >= target)[0])


def load_steps(paths) -> dict:
    """(benchmark, algorithm, variant, seed) -> {"reward": ..., "env_steps": ...} of each
    steps_test.npz (the run is read from the config.yaml beside it)."""
    import runinfo

    out = {}
    for p in paths:
        if Path(p).name != "steps_test.npz":
            continue
        run = runinfo.run_of_file(p)
        with np.load(p, allow_pickle=False) as data:
            out[(run["benchmark"], run["algorithm"], run["variant"], run["seed"])] = {
                "reward": np.asarray(data["reward"]),
                "env_steps": int(data["env_steps"]) if "env_steps" in data else np.nan}
    return out


def step_runs(claims: list[dict], runs, variants: Mapping[str, str]) -> list[tuple]:
    """The runs (of `runs`, the grid's (benchmark, algorithm, variant, seed)) whose per-step
    rewards a steps_to_best part needs."""
    wanted = {(p["benchmark"], p["a"]["algorithm"], actual_variant(p["a"]["variant"], variants))
              for c in claims for p in c["parts"] if p["metric"] == "steps_to_best"}
    return sorted({r for r in runs if tuple(r[:3]) in wanted})


def actual_variant(name: str, variants: Mapping[str, str]) -> str | None:
    """The run variant behind a claim's variant name: `default`, the ablation's own name, or
    `default` again where the ablated value is the preset's (None: not in the grid)."""
    if name == "default":
        return "default"
    return variants.get(name)


# ----------------------------------------------------------------------------- evaluation


@dataclass
class Data:
    scores: pd.DataFrame
    runs: Callable[[], pd.DataFrame] | pd.DataFrame | None = None  # episodes, read only when needed
    steps: dict = field(default_factory=dict)

    def episodes(self) -> pd.DataFrame:
        if callable(self.runs):
            self.runs = self.runs()
        return self.runs if self.runs is not None else pd.DataFrame(columns=metrics.EPISODE_COLUMNS)


def _missing(part: dict, side: dict, grid: Mapping) -> list[str]:
    """What the config lacks for one side of a part, as the changes that would add it."""
    bench, algo, name = part["benchmark"], side["algorithm"], side["variant"]
    abl = grid.get("ablation") or {}
    hints = []
    variant = actual_variant(name, abl.get("variants") or {})
    in_main = bench in grid["benchmarks"] and algo in grid["algorithms"]
    in_ablation = bench == abl.get("benchmark") and algo == abl.get("algorithm") and bool(abl.get("variants"))
    if name != "default":
        if abl.get("algorithm") != algo:
            hints.append(f"set ablations.algorithm: {algo} (now {abl.get('algorithm')})")
        if abl.get("benchmark") != bench:
            hints.append(f"set ablations.benchmark: {bench} (now {abl.get('benchmark')})")
        if variant is None:
            setting, value = name.split("-", 1)
            hints.append(f"add {setting} = {value} to ablations.factors (variant {name})")
        if not hints and part["split"] != "test":
            hints.append("ablation variants are evaluated on the test split only")
        if not hints and variant == "default" and not (in_main or in_ablation):
            hints.append(f"add {bench} to benchmarks")
        return hints
    if not (in_main or in_ablation):
        if bench not in grid["benchmarks"]:
            hints.append(f"add {bench} to benchmarks")
        if algo not in grid["algorithms"]:
            hints.append(f"add {algo} to algorithms")
        return hints
    if part["split"] == "ood" and "ood" not in (grid.get("eval_splits") or {}).get(bench, []):
        hints.append(f"add ood to eval_splits.{bench}")
    if part["metric"] == "steps_to_best" and not grid.get("steps_rule"):
        hints.append("needs per-step rewards: results/runs/.../steps_test.npz from the rule step_rewards, "
                     "which this workflow does not have")
    return hints


def _values(data: Data, part: dict, algo: str, variant: str, metric: str) -> tuple[pd.Series, list]:
    """Per-seed values of one side and the env steps of its runs."""
    bench, split = part["benchmark"], part["split"]
    s = data.scores
    own = s[(s["benchmark"] == bench) & (s["algorithm"] == algo) & (s["variant"] == variant)] if not s.empty else s
    if metric == "steps_to_best":
        found = {k[3]: v for k, v in data.steps.items() if k[:3] == (bench, algo, variant)}
        values = pd.Series({seed: steps_to_best(v["reward"], part["episode"], part["fraction"])
                            for seed, v in sorted(found.items())}, dtype=float)
        return values, [v["env_steps"] for v in found.values()]
    if metric == "ood_drop":
        test = own[own["split"] == "test"].set_index("seed")["score"]
        ood = own[own["split"] == "ood"].set_index("seed")["score"]
        values = (test - ood).dropna()
        return values.sort_index(), list(own.loc[own["split"] == "test", "env_steps"])
    own = own[own["split"] == split]
    if metric == "episode_return":
        ep = data.episodes()
        ep = ep[(ep["benchmark"] == bench) & (ep["algorithm"] == algo) & (ep["variant"] == variant)
                & (ep["split"] == split)]
        per = metrics.per_episode(ep) if not ep.empty else pd.DataFrame(columns=["seed", "episode", "return"])
        per = per[per["episode"] == part["episode"]]
        return per.set_index("seed")["return"].astype(float).sort_index(), list(own["env_steps"])
    return own.set_index("seed")[metric].astype(float).dropna().sort_index(), list(own["env_steps"])


def _normalisation_scale(part: dict, declared) -> float:
    """Return units per unit of the normalised score (reference - random) on the part's split,
    1 for success rates, NaN where the difference has no normalised form."""
    if part["metric"] in SUCCESS_METRICS:
        return 1.0
    if part["metric"] not in RETURN_METRICS:
        return np.nan
    points = metrics.normalisation_points(declared)
    row = points[(points["benchmark"] == part["benchmark"]) & (points["split"] == part["split"])]
    if row.empty or np.isnan(row["reference"].iloc[0]):
        return np.nan
    return float(row["reference"].iloc[0] - row["random"].iloc[0])


def side_name(side: dict) -> str:
    import style

    if side.get("kind") == "value":
        return "paper" if side.get("source") != "fixed" else f"{side['value']:g}"
    if side.get("kind") == "metric":
        return f"{style.name(side['algorithm'])} {side['metric'].replace('_', ' ')}"
    if side["variant"] != "default":
        return side["variant"]
    return style.name(side["algorithm"])


def part_label(part: dict) -> str:
    a, b = part["a"], part["b"]
    if b["kind"] == "metric":
        lhs = f"{side_name(a)} {part['metric'].replace('_', ' ')}"
    elif a["variant"] != "default" or b.get("variant", "default") != "default":
        lhs = a["variant"]
    else:
        lhs = side_name(a)
    if b["kind"] == "value":
        rhs = f"{100 * b['value']:g}%" if part["metric"] in SUCCESS_METRICS else f"{b['value']:g}"
        rhs = rhs if b.get("source") == "fixed" else f"paper {rhs}"
    else:
        rhs = side_name(b)
    return f"{lhs} {SYMBOLS[part['relation']]} {rhs}"


def evaluate_part(part: dict, data: Data, grid: Mapping, bootstrap: metrics.Bootstrap, power: Power,
                  seed: int) -> dict:
    a, b = part["a"], part["b"]
    row = {"claim": part["claim"], "part": str(part["part"]), "label": part["label"] or part_label(part),
           "benchmark": part["benchmark"], "split": "test, ood" if part["metric"] == "ood_drop" else part["split"],
           "metric": part["metric"], "episode": part["episode"], "relation": part["relation"],
           "margin": part["margin"], "threshold": np.nan, "a": side_name(a), "b": side_name(b),
           "n_a": 0, "n_b": 0, "iqm_a": np.nan, "iqm_b": np.nan, "estimate": np.nan, "ci_low": np.nan,
           "ci_high": np.nan, "normalised_estimate": np.nan, "normalised_ci_low": np.nan,
           "normalised_ci_high": np.nan, "p_improvement": np.nan, "p_ci_low": np.nan, "p_ci_high": np.nan,
           "verdict": "not run", "seeds_needed": "–", "seeds_needed_n": np.nan, "seeds_aim": "",
           "env_steps_min": np.nan, "env_steps_max": np.nan, "notes": ""}
    hints = _missing(part, a, grid) + (_missing(part, b, grid) if b["kind"] == "run" else [])
    if hints:
        row["notes"] = "; ".join(dict.fromkeys(hints))
        return row
    variants = (grid.get("ablation") or {}).get("variants") or {}
    va = actual_variant(a["variant"], variants)
    x, steps = _values(data, part, a["algorithm"], va, part["metric"])
    if b["kind"] == "run":
        y, more = _values(data, part, b["algorithm"], actual_variant(b["variant"], variants), part["metric"])
        steps = steps + more
    elif b["kind"] == "metric":
        y, _ = _values(data, part, b["algorithm"], va, b["metric"])
    else:
        y = pd.Series(dtype=float)
    steps = [s for s in steps if s == s]
    if steps:
        row["env_steps_min"], row["env_steps_max"] = int(min(steps)), int(max(steps))
    row["n_a"], row["iqm_a"] = len(x), metrics.iqm(x)
    if b["kind"] == "value":
        row["n_b"], row["iqm_b"] = 0, b["value"]
    else:
        row["n_b"], row["iqm_b"] = len(y), metrics.iqm(y)
    if len(x) == 0 or (b["kind"] != "value" and len(y) == 0):
        row["notes"] = "no finished runs in results/summary/scores.parquet"
        return row

    threshold = part["threshold"]
    if threshold is not None and part["relative"]:
        threshold = threshold * abs(row["iqm_b"])
    row["threshold"] = threshold if threshold is not None else np.nan
    if b["kind"] == "run":
        est = metrics.difference_interval(x, y, bootstrap)
        samples = [x, y]
        if len(x) >= 2 and len(y) >= 2:
            pair = {"a": x.to_numpy()[:, None], "b": y.to_numpy()[:, None]}
            poi = metrics.improvement_probabilities(pair, "a", bootstrap)
            row["p_improvement"], row["p_ci_low"], row["p_ci_high"] = poi.iloc[0][["probability", "ci_low", "ci_high"]]
    else:
        d = (x - y).dropna() if b["kind"] == "metric" else x - b["value"]
        r = metrics.interval(d, bootstrap)
        est = {"estimate": r["iqm"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
        if r["n"] < 2:
            est["ci_low"] = est["ci_high"] = np.nan
        samples = [d]
        if b["kind"] == "metric":
            row["n_b"] = len(d)
    row["estimate"], row["ci_low"], row["ci_high"] = est["estimate"], est["ci_low"], est["ci_high"]
    scale = _normalisation_scale(part, grid.get("normalisation"))
    if part["metric"] != "ood_drop" and scale == scale:
        for key in ("estimate", "ci_low", "ci_high"):
            row[f"normalised_{key}"] = row[key] / scale
    single = min(len(s) for s in samples) < 2
    row["verdict"] = VERDICT_OF[decide(part["relation"], row["ci_low"], row["ci_high"], part["margin"], threshold)]
    notes = []
    if single:
        notes.append("1 seed: no interval")
    elif min(len(s) for s in samples) <= 3:
        notes.append("few seeds: a bootstrap CI of 2-3 values is too narrow")
    needed = seeds_needed(samples, part["relation"], part["margin"], threshold, power, bootstrap.confidence, seed)
    row["seeds_needed"], row["seeds_needed_n"], row["seeds_aim"] = needed["text"], needed["n"], needed["aim"]
    row["notes"] = "; ".join(notes)
    return row


def evaluate(claims: list[dict], data: Data, grid: Mapping, bootstrap: metrics.Bootstrap,
             power: Power | None = None) -> pd.DataFrame:
    """One row per part and one per claim (part = "claim"), in the claims' order."""
    power = power or Power.from_config(grid.get("claim_settings"), bootstrap)
    rows = []
    for claim in claims:
        parts = [evaluate_part(p, data, grid, bootstrap, power, bootstrap.random_state) for p in claim["parts"]]
        verdict = combine([p["verdict"] for p in parts])
        ran = [p for p in parts if p["verdict"] != "not run"]
        texts = [p["seeds_needed"] for p in ran]
        if not ran:
            seeds = "–"
        elif any(t.startswith("unknown") for t in texts):
            seeds = "unknown (1 seed)"
        elif any(t.startswith(">") for t in texts):
            seeds = f">{power.max_seeds}"
        else:
            seeds = str(max(int(t) for t in texts))
        steps = [v for p in ran for v in (p["env_steps_min"], p["env_steps_max"]) if v == v]
        skipped = len(parts) - len(ran)
        notes = [claim["note"]] if claim["note"] else []
        if ran and skipped:
            notes.append(f"{skipped} of {len(parts)} parts not run")
        if not ran:
            notes.append("; ".join(dict.fromkeys(h for p in parts for h in p["notes"].split("; ") if h)))
        rows.append({"claim": claim["id"], "part": "claim", "label": claim["statement"], "source": claim["source"],
                     "verdict": verdict, "seeds_needed": seeds,
                     "env_steps_min": min(steps) if steps else np.nan, "env_steps_max": max(steps) if steps else np.nan,
                     "notes": " ".join(n for n in notes if n)})
        for p in parts:
            rows.append({**p, "source": claim["source"]})
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.insert(len(COLUMNS) - 1, "preset", grid.get("preset", ""))
    shares = []
    for r in out.itertuples():
        ref = (grid.get("paper_budgets") or {}).get(r.benchmark) if isinstance(r.benchmark, str) else None
        shares.append(r.env_steps_max / ref if ref and r.env_steps_max == r.env_steps_max else np.nan)
    out.insert(len(out.columns) - 1, "budget_share", shares)
    return out


COLUMNS = ["claim", "part", "label", "source", "benchmark", "split", "metric", "episode", "relation", "margin",
           "threshold", "a", "b", "n_a", "n_b", "iqm_a", "iqm_b", "estimate", "ci_low", "ci_high",
           "normalised_estimate", "normalised_ci_low", "normalised_ci_high", "p_improvement", "p_ci_low",
           "p_ci_high", "verdict", "seeds_needed", "seeds_needed_n", "seeds_aim", "env_steps_min",
           "env_steps_max", "notes"]


# ----------------------------------------------------------------------------- table


def steps_text(low, high) -> str:
    def fmt(v):
        v = float(v)
        return f"{v / 1e6:.3g}M" if v >= 1e6 else f"{v / 1e3:.3g}k" if v >= 1e3 else f"{v:.0f}"

    if low != low:
        return "–"
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def budget_text(r, preset: str) -> str:
    text = f"{preset}, {steps_text(r['env_steps_min'], r['env_steps_max'])} steps"
    share = r.get("budget_share", np.nan)
    if preset != "paper" and share == share:
        text += f" ({100 * share:.2g}% of paper)"
    return text


def _value(x: float, percent: bool) -> str:
    import style

    return style.number(x, percent)


def interval_text(r) -> str:
    pct = r["metric"] in SUCCESS_METRICS
    if r["estimate"] != r["estimate"]:
        return "–"
    text = _value(r["estimate"], pct)
    if r["ci_low"] == r["ci_low"]:
        text += f" [{_value(r['ci_low'], pct)}, {_value(r['ci_high'], pct)}]"
    return text + (" pts" if pct else "")


def comparison_text(r) -> str:
    what = METRICS_SHORT.get(r["metric"], r["metric"])
    if r["metric"] in ("episode_return", "steps_to_best") and r["episode"] == r["episode"]:
        what += f", episode {int(r['episode'])}"
    return f"{r['label']} ({r['benchmark']}, {r['split']}, {what})"


METRICS_SHORT = {"adapted_return": "adapted return", "first_return": "first-episode return",
                 "episode_return": "episode return", "success_rate": "success rate",
                 "max_success_rate": "max. success rate", "ood_drop": "test − OOD score",
                 "steps_to_best": "steps to best"}


def table(rows: pd.DataFrame, grid: Mapping, bootstrap: metrics.Bootstrap, power: Power):
    preset = grid.get("preset", "")
    header = ["Claim", "Comparison (A vs B)", "Seeds A / B", "A − B: IQM [95% CI]", "P(A > B) [95% CI]", "Verdict",
              f"Seeds for {100 * power.target:.0f}%", "Budget", "Notes"]
    body, best = [], set()
    for _, r in rows.iterrows():
        if r["part"] == "claim":
            best.add((len(body), 5))
            budget = budget_text(r, preset) if r["env_steps_min"] == r["env_steps_min"] else "–"
            body.append([r["claim"], f"{r['label']} ({r['source']})", "", "", "", r["verdict"], r["seeds_needed"],
                         budget, r["notes"] if isinstance(r["notes"], str) else ""])
            continue
        ran = r["verdict"] != "not run"
        n = f"{int(r['n_a'])} / {int(r['n_b'])}" if ran and r["n_b"] else f"{int(r['n_a'])}" if ran else "–"
        p = "–"
        if r["p_improvement"] == r["p_improvement"]:
            p = f"{r['p_improvement']:.2f} [{r['p_ci_low']:.2f}, {r['p_ci_high']:.2f}]"
        seeds = r["seeds_needed"] + (f" ({r['seeds_aim']})" if isinstance(r["seeds_aim"], str) and r["seeds_aim"] else "")
        notes = r["notes"] if isinstance(r["notes"], str) else ""
        if r["threshold"] == r["threshold"]:
            pct = r["metric"] in SUCCESS_METRICS
            notes = "; ".join(x for x in [f"threshold ±{_value(r['threshold'], pct)}{' pts' if pct else ''}", notes] if x)
        body.append(["", comparison_text(r), n, interval_text(r) if ran else "–", p, r["verdict"], seeds if ran else "–",
                     budget_text(r, preset) if r["env_steps_min"] == r["env_steps_min"] else "–", notes])
    level = f"{100 * bootstrap.confidence:.0f}%"
    note = (f"Preset {preset}; budget: training env steps of the runs compared. Per part: A − B is the difference of "
            f"the IQMs over seeds (claimed-better side A minus B) with its {level} stratified-bootstrap CI (rliable, "
            f"{bootstrap.reps} replications, each side resampled on its own); where B is the same runs' other metric "
            "or a fixed number, the IQM of the per-seed differences and its CI. Success rates in percentage points. "
            "P(A > B): rliable's probability of improvement with its CI. Verdict: supported when the CI lies on the "
            "claimed side, contradicted when it lies on the other, inconclusive when it straddles (or a side has one "
            "seed); ≥ with margin 0 needs CI low ≥ 0, > needs CI low > 0; within needs the CI inside ±threshold. A "
            "claim is contradicted if any part is, supported if every part is, not run if no part ran, else "
            f"inconclusive. Seeds for {100 * power.target:.0f}%: the smallest number of seeds per side at which "
            f"{100 * power.target:.0f}% of {power.experiments} simulated experiments (n seeds per side drawn from "
            "normals with the measured IQM and standard deviation; percentile bootstrap CI, "
            f"{power.reps} replications) decide the part on the side of the measured effect; >{power.max_seeds}: "
            "more than that; a claim needs the largest of its parts'.")
    if preset != "paper":
        shares = rows["budget_share"].dropna()
        low, high = f"{100 * shares.min():.2g}" if len(shares) else "", f"{100 * shares.max():.2g}" if len(shares) else ""
        span = (f" ({low if low == high else f'{low}–{high}'}% of the paper preset's budgets, the references')"
                if len(shares) else "")
        note += (f" These runs use the {preset} preset{span}: the claims were made at the references' budgets, so "
                 "a verdict here says what these short runs show, not whether the paper is right.")
    section = render.Section("Claims", header, body, note, best)
    return section, "Published claims against the runs in the grid"


EXTRA_TEX = {"≤": r"$\leq$", "≈": r"$\approx$", "·": r"$\cdot$", "×": r"$\times$", "*": r"$*$", "|": r"$|$",
             "→": r"$\rightarrow$", "~": r"$\sim$"}


def write(rows: pd.DataFrame, section, title: str, output) -> None:
    for path in (output.csv, output.md, output.tex):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(output.csv, index=False)
    Path(output.md).write_text(render.markdown([section], title))
    lines = render.latex([section], title).split("\n")
    for i, line in enumerate(lines):
        if not line.startswith("%"):  # cells: the characters render.tex_escape leaves as they are
            for ch, rep in EXTRA_TEX.items():
                line = line.replace(ch, rep)
            lines[i] = line
    Path(output.tex).write_text("\n".join(lines))


# ----------------------------------------------------------------------------- figure

VERDICT_COLOURS = {"supported": "#009E73", "contradicted": "#D55E00", "inconclusive": "#56B4E9", "not run": "#BBBBBB"}


def figure(rows: pd.DataFrame, info: Mapping, out: str):
    """One row per claim part: the CI of the difference A − B as a bar, the point estimate as a
    dot, coloured by verdict, with the zero line and the part's decision bounds (dashed); each
    part on its own x scale (the parts' units differ). A header row per claim carries its
    verdict; parts that did not run are one line of text saying what to add."""
    import plots
    import style

    plt = style.plt
    if rows.empty:
        return plots.empty(out, "No claims in this config.")
    bootstrap = metrics.Bootstrap.from_config(info.get("aggregate", {}))
    kinds = ["claim" if r["part"] == "claim" else "ran" if r["verdict"] != "not run" and r["estimate"] == r["estimate"]
             else "text" for _, r in rows.iterrows()]
    heights = {"claim": 0.2, "ran": 0.36, "text": 0.16}  # inches: a bar row leaves room for its ticks
    width, total = 2.4, sum(heights[k] for k in kinds)
    fig = plt.figure(figsize=(width, total))
    top = total
    draw = {"claim": _draw_claim_row, "text": _draw_text_row, "ran": _draw_bar_row}
    for kind, (_, r) in zip(kinds, rows.iterrows()):
        h = heights[kind]
        top -= h
        bar = 0.13 if kind == "ran" else h
        ax = fig.add_axes([0, (top + h - bar) / total, 1, bar / total])
        draw[kind](ax, r, VERDICT_COLOURS.get(r["verdict"], "#333333"))
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.85) for c in VERDICT_COLOURS.values()]
    fig.legend(handles, list(VERDICT_COLOURS), loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=6,
               frameon=False, handlelength=1.2)
    caption = _figure_caption(rows, info, bootstrap)
    fig.text(-1.15, -0.25 / total, "\n".join(textwrap.wrap(caption, 175)), fontsize=5.5, ha="left", va="top")
    style.save(fig, out)
    return fig


def _draw_claim_row(ax, r, colour: str) -> None:
    """A claim's header row: its id and statement (left), its verdict and the seeds it needs (right)."""
    ax.axis("off")
    text = f"{r['claim']}: " + textwrap.shorten(str(r["label"]), 100, placeholder="…")
    ax.text(-0.03, 0.35, text, transform=ax.transAxes, ha="right", va="center", fontsize=6, fontweight="bold")
    ax.text(1.03, 0.35, f"{r['verdict']}; seeds for 80%: {r['seeds_needed']}", transform=ax.transAxes,
            ha="left", va="center", fontsize=6, fontweight="bold", color=colour)


def _draw_part_label(ax, r) -> None:
    """The comparison a part row shows (A rel B), left of the row, for bar and text rows alike."""
    label = textwrap.shorten(comparison_text(r), 80, placeholder="…")
    ax.text(-0.03, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=5.5)


def _draw_text_row(ax, r, colour: str) -> None:
    """A part without an estimate: one line of text instead of a bar, saying why (for a part that
    did not run, the config change that would add its runs)."""
    _draw_part_label(ax, r)
    ax.axis("off")
    why = str(r["notes"]) if isinstance(r["notes"], str) else ""
    why = f"not run: {why}" if r["verdict"] == "not run" else why or "no estimate"
    ax.text(0.0, 0.5, textwrap.shorten(why, 75, placeholder="…"), transform=ax.transAxes, ha="left",
            va="center", fontsize=5, color="0.4")


def _decision_bounds(r) -> list:
    """The part's decision bounds other than 0, in the metric's units: ±threshold for `within`,
    the margin for ≥ / ≤ with a margin; none otherwise."""
    if r["relation"] == "within" and r["threshold"] == r["threshold"]:
        return [-r["threshold"], r["threshold"]]
    if r["relation"] in ("greater_equal", "less_equal") and r["margin"]:
        return [-r["margin"] if r["relation"] == "greater_equal" else r["margin"]]
    return []


def _draw_bar_row(ax, r, colour: str) -> None:
    """A part with an estimate: the CI of A − B as a bar and the estimate as a dot on the part's
    own x scale (success rates in points), the zero line and the decision bounds (dashed), and
    its verdict, seeds and seeds needed on the right."""
    from style import plt

    _draw_part_label(ax, r)
    ax.grid(False)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_linewidth(0.5)
    ax.tick_params(axis="x", labelsize=5, pad=1, length=2, width=0.5)
    ax.xaxis.set_major_locator(plt.MaxNLocator(4))
    scale = 100.0 if r["metric"] in SUCCESS_METRICS else 1.0
    bounds = _decision_bounds(r)
    est, low, high = r["estimate"] * scale, r["ci_low"] * scale, r["ci_high"] * scale
    ends = [low, high] if low == low else [est]
    span = [0.0, est, *ends, *(b * scale for b in bounds)]
    left, right = min(span), max(span)
    pad = 0.06 * (right - left) if right > left else 1.0
    ax.set_xlim(left - pad, right + pad)
    ax.set_ylim(-0.6, 0.6)
    if low == low:
        ax.barh(0, high - low, left=low, height=0.8, color=colour, alpha=0.85)
    ax.plot(est, 0, "o", ms=3, mfc=colour, mec="black", mew=0.6, zorder=3, clip_on=False)
    ax.axvline(0, color="black", lw=0.8)
    for bnd in bounds:
        ax.axvline(bnd * scale, color="0.3", lw=0.6, ls="--")
    n_text = f"n = {int(r['n_a'])} / {int(r['n_b'])}" if r["n_b"] else f"n = {int(r['n_a'])}"
    ax.text(1.03, 0.5, f"{r['verdict']}; {n_text}; 80%: {r['seeds_needed']}", transform=ax.transAxes, ha="left",
            va="center", fontsize=5, color=colour)


def _figure_caption(rows: pd.DataFrame, info: Mapping, bootstrap) -> str:
    """The figure's caption, unwrapped: how to read a row, and the seeds, preset and budgets of
    the runs shown (taken from the rows, so it says what was actually compared)."""
    import plots

    preset = info.get("preset", "")
    steps = rows["env_steps_max"].dropna()
    budget = f"{steps_text(rows['env_steps_min'].min(), steps.max())} training env steps" if len(steps) else "no runs"
    ns = sorted({int(v) for v in pd.concat([rows["n_a"], rows["n_b"]]).dropna() if v > 0})
    seeds = f"{'/'.join(map(str, ns))} seeds" if ns else "no seeds"
    return (
        f"Each row: the {plots.level_text(bootstrap.confidence)} stratified-bootstrap CI (rliable, {bootstrap.reps} "
        "replications) of the IQM difference A − B over seeds (claimed-better side minus the other; per-seed "
        f"differences where B is the same runs' other metric or a fixed number), N = {seeds} per side (n per row), "
        "as a bar; dot: the point estimate; solid line: 0; dashed: the part's decision bounds (±threshold, or the "
        "margin). Colour: the verdict (supported: the CI lies on the claimed side; contradicted: on the other; "
        "inconclusive: it straddles). Each row has its own x scale, in the metric's units (success rates in "
        "percentage points). Right: verdict, seeds per side, seeds per side for 80% of simulated experiments to "
        f"decide. Preset {preset}, {budget}"
        + (" (a small fraction of the references' budgets)" if preset and preset != "paper" else "") + ".")


# ----------------------------------------------------------------------------- main


def main(snakemake) -> None:
    sys.stderr = open(snakemake.log[0], "w")
    info = snakemake.params.info
    if snakemake.params.what == "figure":
        import style

        style.setup()
        figure(pd.read_csv(snakemake.input[0]), info, snakemake.output[0])
        return
    bootstrap = metrics.Bootstrap.from_config(info["aggregate"])
    power = Power.from_config(info.get("claim_settings"), bootstrap)
    grid = {**info, "steps_rule": bool(snakemake.params.steps_rule)}
    data = Data(pd.read_parquet(snakemake.input.scores), lambda: pd.read_parquet(snakemake.input.runs),
                load_steps(list(snakemake.input.steps)))
    rows = evaluate(info["claims"], data, grid, bootstrap, power)
    section, title = table(rows, grid, bootstrap, power)
    write(rows, section, title, snakemake.output)
    print(f"{len(info['claims'])} claims, {int((rows['part'] != 'claim').sum())} parts", file=sys.stderr)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - provided by Snakemake's script directive
