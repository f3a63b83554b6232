"""The suite's statistics: headline numbers per run, normalised scores, rliable intervals.

Used by the aggregate, table and figure scripts (and by tests/test_workflow.py); it needs only
numpy, pandas and rliable, and works on the tidy per-episode table written by collect.py
(columns in `EPISODE_COLUMNS`).

Headline numbers of one run on one split, from its evaluation at the final iteration (SPEC §5):

- ``first_return``: return of the first episode of each trial, averaged over the split's tasks;
- ``adapted_return``: return of the last episode of each trial, averaged over the tasks;
- ``success_rate`` (Meta-World): success at any step of an episode, averaged over the scored
  episodes (those after the exploration episodes) and the tasks;
- ``max_success_rate`` (test split, Meta-World): the highest ``success_rate`` of any evaluation
  during training, the "average maximum success rate" of the Meta-World paper's Table 1;
- ``score``: ``success_rate`` on Meta-World, ``adapted_return`` elsewhere.

Normalised scores, for aggregating across benchmarks (``normalise``): on a benchmark whose
episodes have a success signal (Meta-World) the score is the success rate, already in [0, 1].
Elsewhere returns have arbitrary scales, so each benchmark and split declares two fixed points
in config/normalisation.yaml (loaded and checked by workflow/rules/common.smk):

    normalised = (R - R_random) / (R_reference - R_random),

R_random the uniform-random agent's expected score on the split (measured once with the suite's
evaluator over several seeds, workflow/scripts/measure_random.py) and R_reference an analytic
optimum or upper bound of the score. Neither depends on the runs being compared, so a run's
normalised score never changes when runs are added. A benchmark with no reference
(``reference: null``) has a NaN normalised score and is left out of the cross-benchmark
aggregates (``family_matrices``), and every table or figure of them says so (``NOT_NORMALISED``).

Intervals: interquartile mean (IQM, the 25 % trimmed mean) with percentile stratified-bootstrap
confidence intervals from rliable (`rly.get_interval_estimates`), seeds as runs and benchmarks
as tasks; mean and standard deviation (ddof=1) beside them. rliable's bootstrap draws its
indices from numpy's *global* generator (`np.random.choice` in `StratifiedBootstrap`), so every
estimate below seeds it with `random_state` first: the same inputs give the same bounds in any
order of calls, and the published intervals are reproducible.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics as rmetrics

RUN_KEYS = ["benchmark", "algorithm", "variant", "seed"]
EPISODE_COLUMNS = RUN_KEYS + [
    "split", "iteration", "env_steps", "task", "episode", "return", "success",
    "scored", "last_episode", "final", "has_success", "task_value", "task_label",
    "train_low", "train_high", "split_note",
]


def load_episodes(paths) -> pd.DataFrame:
    """The per-episode summaries (collect.py's parquet files) among `paths`, as one table."""
    frames = [pd.read_parquet(p) for p in paths if str(p).endswith(".parquet")]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EPISODE_COLUMNS)


def read_family(path) -> pd.DataFrame:
    """aggregate.csv, read back to exactly the floats it was written from (pandas' default
    parser can be one unit in the last place off, which would change a table's bytes)."""
    return pd.read_csv(path, float_precision="round_trip")


@dataclass(frozen=True)
class Bootstrap:
    """rliable settings: replications, confidence level, seed of the bootstrap."""

    reps: int = 10000
    confidence: float = 0.95
    random_state: int = 12345

    @classmethod
    def from_config(cls, cfg: dict) -> "Bootstrap":
        return cls(int(cfg.get("reps", 10000)), float(cfg.get("confidence", 0.95)), int(cfg.get("random_state", 12345)))


# ----------------------------------------------------------------------------- per run


def _trial_numbers(final: pd.DataFrame) -> dict[str, float]:
    first = final.loc[final["episode"] == 0, "return"].mean()
    adapted = final.loc[final["last_episode"], "return"].mean()
    out = {"first_return": first, "adapted_return": adapted, "success_rate": np.nan}
    if final["has_success"].any():
        out["success_rate"] = final.loc[final["scored"], "success"].mean()
    return out


def run_scores(episodes: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, split): the headline numbers of its final evaluation."""
    rows = []
    for key, group in episodes.groupby(RUN_KEYS + ["split"], sort=True):
        final = group[group["final"]]
        row = dict(zip(RUN_KEYS + ["split"], key))
        row["iteration"] = int(final["iteration"].max())
        row["env_steps"] = int(final["env_steps"].max())
        row["has_success"] = bool(group["has_success"].any())
        row.update(_trial_numbers(final))
        row["max_success_rate"] = np.nan
        if row["has_success"]:
            per_eval = group[group["scored"]].groupby("iteration")["success"].mean()
            row["max_success_rate"] = per_eval.max()
        row["score"] = row["success_rate"] if row["has_success"] else row["adapted_return"]
        # what the benchmark's runs say about the split, for the notes of tables and figures
        row["exploration_episodes"] = int(final.loc[~final["scored"].astype(bool), "episode"].nunique())
        row["split_note"] = str(group["split_note"].iloc[0]) if "split_note" in group else ""
        rows.append(row)
    columns = RUN_KEYS + ["split", "iteration", "env_steps", "has_success", "first_return",
                          "adapted_return", "success_rate", "max_success_rate", "score",
                          "exploration_episodes", "split_note"]
    return pd.DataFrame(rows, columns=columns)


def curves(episodes: pd.DataFrame) -> pd.DataFrame:
    """Score of every evaluation of every run (learning curves): one row per (run, split,
    iteration) with env_steps and the headline numbers at that iteration."""
    rows = []
    for key, group in episodes.groupby(RUN_KEYS + ["split", "iteration"], sort=True):
        row = dict(zip(RUN_KEYS + ["split", "iteration"], key))
        row["env_steps"] = int(group["env_steps"].max())
        row["has_success"] = bool(group["has_success"].any())
        row.update(_trial_numbers(group))
        row["score"] = row["success_rate"] if row["has_success"] else row["adapted_return"]
        rows.append(row)
    return pd.DataFrame(rows)


def per_episode(episodes: pd.DataFrame) -> pd.DataFrame:
    """Final evaluation, per run and episode index of the trial: mean return (and success)
    over the split's tasks: the fast-adaptation view."""
    final = episodes[episodes["final"]]
    out = final.groupby(RUN_KEYS + ["split", "episode"], sort=True).agg(
        **{"return": ("return", "mean"), "success": ("success", "mean"), "has_success": ("has_success", "any")}
    )
    return out.reset_index()


# ----------------------------------------------------------------------------- normalisation


NOT_NORMALISED = "not normalised: no fixed reference return (add one in config/normalisation.yaml)"
POINT_COLUMNS = ["benchmark", "split", "random", "reference", "random_source", "reference_source"]


def normalisation_points(declared) -> pd.DataFrame:
    """The declared points (config/normalisation.yaml's `benchmark -> split -> {random,
    reference, random_source, reference_source}`, or a table of them) as one row per
    (benchmark, split); `reference` is NaN where it is null."""
    if isinstance(declared, pd.DataFrame):
        return declared
    rows = [{"benchmark": bench, "split": split, "random": float(p["random"]),
             "reference": np.nan if p.get("reference") is None else float(p["reference"]),
             "random_source": p.get("random_source", ""), "reference_source": p.get("reference_source", "")}
            for bench, splits in (declared or {}).items() for split, p in splits.items()]
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def normalise(scores: pd.DataFrame, declared, value: str = "score") -> pd.Series:
    """Normalised scores (see the module docstring), aligned with `scores`' index: the success
    rate where the benchmark has a success signal, else (R - random) / (reference - random)
    with the declared points of the run's benchmark and split; NaN where the split declares no
    reference (or is not declared at all)."""
    out = pd.Series(np.nan, index=scores.index, dtype=float)
    points = normalisation_points(declared).set_index(["benchmark", "split"])
    for key, group in scores.groupby(["benchmark", "split"], sort=False):
        if group["has_success"].any():  # success rate: already in [0, 1]
            out.loc[group.index] = group[value].astype(float)
            continue
        if key not in points.index or np.isnan(points.loc[key, "reference"]):
            continue
        low, high = points.loc[key, "random"], points.loc[key, "reference"]
        if not high > low:
            raise ValueError(f"normalisation of {key[0]}/{key[1]}: reference {high} is not above random {low}")
        out.loc[group.index] = (group[value].astype(float) - low) / (high - low)
    return out


def unnormalised(scores: pd.DataFrame, declared) -> list[str]:
    """Benchmarks of `scores` without a success signal whose normalised score is NaN on some
    split of `scores` (no reference declared): left out of the aggregates."""
    points = normalisation_points(declared).set_index(["benchmark", "split"])
    out = []
    for (bench, split), group in scores.groupby(["benchmark", "split"], sort=False):
        if group["has_success"].any():
            continue
        if (bench, split) not in points.index or np.isnan(points.loc[(bench, split), "reference"]):
            out.append(bench)
    return list(dict.fromkeys(out))


def source_name(text: str) -> str:
    """The short name of a source text ("name: details" -> "name")."""
    return str(text).split(":", 1)[0].strip()


def describe_normalisation(declared, benchmarks, number="{:g}".format, split: str = "test") -> str:
    """One sentence naming the fixed 0 and 1 of each benchmark's normalised score on `split`, e.g.
    "PointNav: 0 = -20.23 (uniform-random agent), 1 = -3.8001 (goal-knowing oracle)", and the
    benchmarks that are not normalised; `number` formats a value (default: as declared)."""
    points = normalisation_points(declared)
    points = points[points["split"] == split].set_index("benchmark")
    parts, missing = [], []
    for bench in benchmarks:
        if bench not in points.index or np.isnan(points.loc[bench, "reference"]):
            missing.append(bench)
            continue
        r = points.loc[bench]
        parts.append(f"{bench}: 0 = {number(r['random'])} ({source_name(r['random_source'])}), "
                     f"1 = {number(r['reference'])} ({source_name(r['reference_source'])})")
    text = "; ".join(parts)
    if missing:
        text += ("; " if text else "") + f"{', '.join(missing)}: {NOT_NORMALISED}"
    return text


# ----------------------------------------------------------------------------- intervals


def _random_state(bootstrap: Bootstrap) -> np.random.RandomState:
    np.random.seed(bootstrap.random_state)  # rliable samples from the global generator
    return np.random.RandomState(bootstrap.random_state)


def interval(values, bootstrap: Bootstrap) -> dict[str, float]:
    """IQM with its stratified-bootstrap CI, mean and std of one sample (e.g. a score per seed)."""
    x = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "iqm": np.nan, "ci_low": np.nan, "ci_high": np.nan, "mean": np.nan, "std": np.nan}
    std = float(np.std(x, ddof=1)) if n > 1 else np.nan
    if n == 1:
        v = float(x[0])
        return {"n": 1, "iqm": v, "ci_low": v, "ci_high": v, "mean": v, "std": std}
    point, ci = _estimates({"x": x[:, None]}, lambda s: np.array([rmetrics.aggregate_iqm(s)]), bootstrap)
    return {"n": n, "iqm": float(point["x"][0]), "ci_low": float(ci["x"][0, 0]),
            "ci_high": float(ci["x"][1, 0]), "mean": float(x.mean()), "std": std}


AGGREGATES = {
    "IQM": rmetrics.aggregate_iqm,
    "Mean": rmetrics.aggregate_mean,
    "Median": rmetrics.aggregate_median,
    "Optimality gap": rmetrics.aggregate_optimality_gap,
}


def _estimates(score_dict, func, bootstrap: Bootstrap):
    with warnings.catch_warnings():
        # arch warns about degenerate resamples of tiny samples; the interval is still defined
        warnings.simplefilter("ignore")
        return rly.get_interval_estimates(
            score_dict, func, reps=bootstrap.reps, confidence_interval_size=bootstrap.confidence,
            random_state=_random_state(bootstrap),
        )


def aggregate_intervals(matrices: dict[str, np.ndarray], bootstrap: Bootstrap) -> pd.DataFrame:
    """rliable's aggregate metrics with CIs, from `algorithm -> (runs x benchmarks)` scores."""
    rows = []
    names = list(AGGREGATES)

    def func(scores):
        return np.array([AGGREGATES[m](scores) for m in names])

    point, ci = _estimates(matrices, func, bootstrap)
    for algo in matrices:
        for i, metric in enumerate(names):
            rows.append({"algorithm": algo, "metric": metric, "value": float(point[algo][i]),
                         "ci_low": float(ci[algo][0, i]), "ci_high": float(ci[algo][1, i]),
                         "runs": matrices[algo].shape[0], "benchmarks": matrices[algo].shape[1]})
    return pd.DataFrame(rows)


def improvement_probabilities(matrices: dict[str, np.ndarray], reference: str, bootstrap: Bootstrap) -> pd.DataFrame:
    """P(reference > X) for every other algorithm X, with stratified-bootstrap CIs (rliable's
    `probability_of_improvement`, averaged over benchmarks)."""
    if reference not in matrices:
        return pd.DataFrame(columns=["reference", "algorithm", "probability", "ci_low", "ci_high"])
    pairs = {algo: [matrices[reference], m] for algo, m in matrices.items() if algo != reference}
    rows = []
    if pairs:
        point, ci = _estimates(pairs, rmetrics.probability_of_improvement, bootstrap)
        for algo in pairs:
            rows.append({"reference": reference, "algorithm": algo, "probability": float(point[algo]),
                         "ci_low": float(np.ravel(ci[algo])[0]), "ci_high": float(np.ravel(ci[algo])[1])})
    return pd.DataFrame(rows, columns=["reference", "algorithm", "probability", "ci_low", "ci_high"])


# ----------------------------------------------------------------------------- families


FAMILIES = {
    "returns": "MuJoCo and PointNav: normalised adapted return",
    "success": "Meta-World: success rate",
}


def family_matrices(scores: pd.DataFrame, algorithms: list[str], value: str = "normalised",
                    ) -> dict[str, tuple[dict[str, np.ndarray], list[str], list[int]]]:
    """Per family (benchmarks with / without a success signal): `algorithm -> (seeds x
    benchmarks)` matrices for rliable, over the benchmarks every algorithm ran and the seeds
    every (algorithm, benchmark) pair has (stratified bootstrap needs a full matrix). Scores
    whose `value` is NaN (a benchmark without a reference: not normalised) are left out."""
    out = {}
    for family, has_success in (("returns", False), ("success", True)):
        part = scores[scores["has_success"] == has_success]
        part = part[part[value].notna()]  # not normalised (no reference): left out
        present = [a for a in algorithms if a in set(part["algorithm"])]
        if part.empty or not present:
            continue
        benches = sorted(b for b, g in part.groupby("benchmark") if set(present) <= set(g["algorithm"]))
        if not benches:
            continue
        part = part[part["benchmark"].isin(benches) & part["algorithm"].isin(present)]
        seed_sets = [set(g["seed"]) for _, g in part.groupby(["algorithm", "benchmark"])]
        seeds = sorted(set.intersection(*seed_sets))
        if not seeds:
            continue
        table = part.pivot_table(index=["algorithm", "seed"], columns="benchmark", values=value)
        matrices = {a: table.loc[a].loc[seeds, benches].to_numpy(dtype=float) for a in present}
        out[family] = (matrices, benches, seeds)
    return out


# ----------------------------------------------------------------------------- differences


def iqm(values) -> float:
    """The IQM (25 % trimmed mean, rliable's `aggregate_iqm`) of one sample; NaN when empty."""
    x = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    return float(rmetrics.aggregate_iqm(x[:, None])) if len(x) else np.nan


def difference_interval(a, b, bootstrap: Bootstrap) -> dict[str, float]:
    """IQM(a) - IQM(b) of two independent samples (e.g. one score per seed of two algorithms)
    with its stratified-bootstrap CI: each sample is resampled on its own (rliable's
    `StratifiedIndependentBootstrap`, through `get_interval_estimates` with a pair), so the two
    may have different numbers of seeds. With fewer than two values on either side there is no
    spread to resample: the CI is NaN."""
    x = np.asarray(pd.Series(a, dtype=float).dropna(), dtype=float)
    y = np.asarray(pd.Series(b, dtype=float).dropna(), dtype=float)
    out = {"n_a": len(x), "n_b": len(y), "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    if len(x) == 0 or len(y) == 0:
        return out
    out["estimate"] = iqm(x) - iqm(y)
    if len(x) < 2 or len(y) < 2:
        return out

    def func(p, q):
        return np.array([rmetrics.aggregate_iqm(p) - rmetrics.aggregate_iqm(q)])

    _, ci = _estimates({"d": [x[:, None], y[:, None]]}, func, bootstrap)
    out["ci_low"], out["ci_high"] = float(ci["d"][0, 0]), float(ci["d"][1, 0])
    return out
