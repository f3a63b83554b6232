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
Elsewhere returns have arbitrary scales, so each benchmark and split is min-max normalised,

    normalised = (R - R_floor) / (R_best - R_floor),

with R_floor the mean score of the floor algorithm (the uniform-random agent) over its seeds and
R_best the highest mean score over seeds of any algorithm in the comparison. 0 is random, 1 the
best algorithm on that benchmark. R_best depends on which algorithms are compared, so normalised
numbers compare algorithms within one table, not across papers. Without a floor in the data,
R_floor is the lowest mean of any algorithm; when R_best = R_floor every score is 0.

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
]


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
        rows.append(row)
    columns = RUN_KEYS + ["split", "iteration", "env_steps", "has_success", "first_return",
                          "adapted_return", "success_rate", "max_success_rate", "score"]
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


def normalisation_points(scores: pd.DataFrame, floor: str, value: str = "score") -> pd.DataFrame:
    """Per (benchmark, split) without a success signal: the floor and best mean scores that
    `normalise` maps to 0 and 1, and which algorithm set each (a table must say what its
    normalised numbers are relative to)."""
    rows = []
    for (bench, split), group in scores.groupby(["benchmark", "split"], sort=False):
        if group["has_success"].any():
            continue
        means = group.groupby("algorithm")[value].mean()
        low_algo = floor if floor in means.index else means.idxmin()
        rows.append({"benchmark": bench, "split": split, "floor_algorithm": low_algo,
                     "floor": float(means[low_algo]), "best_algorithm": means.idxmax(),
                     "best": float(means.max())})
    return pd.DataFrame(rows, columns=["benchmark", "split", "floor_algorithm", "floor", "best_algorithm", "best"])


def normalise(scores: pd.DataFrame, floor: str, value: str = "score") -> pd.Series:
    """Normalised scores (see the module docstring), aligned with `scores`' index."""
    out = pd.Series(np.nan, index=scores.index, dtype=float)
    points = normalisation_points(scores, floor, value).set_index(["benchmark", "split"])
    for key, group in scores.groupby(["benchmark", "split"], sort=False):
        if key not in points.index:  # success rate: already in [0, 1]
            out.loc[group.index] = group[value].astype(float)
            continue
        low, high = points.loc[key, "floor"], points.loc[key, "best"]
        span = high - low
        out.loc[group.index] = (group[value] - low) / span if span > 0 else 0.0
    return out


def describe_normalisation(points: pd.DataFrame, name, number) -> str:
    """One sentence naming each benchmark's 0 and 1 of the normalised score, e.g.
    "PointNav: 0 = -20.3 (Random), 1 = -9.71 (MAML-TRPO)"; `name` and `number` format an
    algorithm ID and a value."""
    return "; ".join(f"{r.benchmark}: 0 = {number(r.floor)} ({name(r.floor_algorithm)}), "
                     f"1 = {number(r.best)} ({name(r.best_algorithm)})" for r in points.itertuples())


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
    every (algorithm, benchmark) pair has (stratified bootstrap needs a full matrix)."""
    out = {}
    for family, has_success in (("returns", False), ("success", True)):
        part = scores[scores["has_success"] == has_success]
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
