"""The whole suite in three files (see metrics.py for every definition):

- `runs.parquet`: every evaluated episode of every run (main grid and ablations), tidy;
- `scores.parquet`: one row per (run, split): the headline numbers of its final evaluation and,
  for the main grid, the normalised score (fixed points of config/normalisation.yaml; NaN where
  the benchmark declares no reference);
- `aggregate.csv`: per family of benchmarks (returns / Meta-World success), rliable's IQM, mean,
  median and optimality gap with stratified-bootstrap CIs, and the probability that the
  reference algorithm improves on each other one, with the benchmarks and seeds it is over;
  `not_normalised` names the benchmarks left
  out of the returns family because they have no fixed reference return.
"""


import sys
from pathlib import Path

import pandas as pd

import metrics


def main_scores(episodes: pd.DataFrame, info: dict) -> pd.DataFrame:
    """Headline numbers of the main grid (variant `default` of the configured algorithms)."""
    scores = metrics.run_scores(episodes)
    main = scores[(scores["variant"] == "default") & scores["algorithm"].isin(info["algorithms"])].copy()
    main["normalised"] = metrics.normalise(main, info["normalisation"])
    return main


def scores_table(episodes: pd.DataFrame, main: pd.DataFrame) -> pd.DataFrame:
    """scores.parquet: every run's headline numbers per split, with the main grid's normalised
    score (`main`, from main_scores) beside them."""
    return metrics.run_scores(episodes).merge(main[metrics.RUN_KEYS + ["split", "normalised"]],
                                              on=metrics.RUN_KEYS + ["split"], how="left")


def family_table(scores: pd.DataFrame, info: dict, bootstrap: metrics.Bootstrap) -> pd.DataFrame:
    """Family-level aggregates and probabilities of improvement, on the test split."""
    test = scores[scores["split"] == "test"]
    excluded = " ".join(metrics.unnormalised(test, info["normalisation"]))
    rows = []
    for family, (matrices, benches, seeds) in metrics.family_matrices(test, info["algorithms"]).items():
        agg = metrics.aggregate_intervals(matrices, bootstrap)
        agg.insert(0, "family", metrics.FAMILIES[family])
        agg["benchmark_ids"] = " ".join(benches)
        agg["seeds"] = " ".join(map(str, seeds))
        rows.append(agg)
        poi = metrics.improvement_probabilities(matrices, info["reference"], bootstrap)
        for _, r in poi.iterrows():
            rows.append(pd.DataFrame([{
                "family": metrics.FAMILIES[family], "algorithm": r["algorithm"],
                "metric": f"P({r['reference']} > {r['algorithm']})", "value": r["probability"],
                "ci_low": r["ci_low"], "ci_high": r["ci_high"], "runs": len(seeds),
                "benchmarks": len(benches), "benchmark_ids": " ".join(benches),
                "seeds": " ".join(map(str, seeds)),
            }]))
    columns = ["family", "algorithm", "metric", "value", "ci_low", "ci_high", "runs", "benchmarks", "benchmark_ids",
               "seeds", "not_normalised"]
    if not rows:
        return pd.DataFrame(columns=columns)
    out = pd.concat(rows, ignore_index=True)
    out["not_normalised"] = [excluded if f == metrics.FAMILIES["returns"] else "" for f in out["family"]]
    return out[columns]


def main(snakemake) -> None:
    sys.stderr = open(snakemake.log[0], "w")
    info = snakemake.params.info
    bootstrap = metrics.Bootstrap.from_config(info["aggregate"])
    grid = metrics.load_episodes(list(snakemake.input.benchmarks))
    ablations = metrics.load_episodes([snakemake.input.ablations])
    if not ablations.empty and not grid.empty:  # the ablation's `default` runs may be main-grid runs
        known = set(map(tuple, grid[metrics.RUN_KEYS].drop_duplicates().to_numpy().tolist()))
        keys = list(map(tuple, ablations[metrics.RUN_KEYS].to_numpy().tolist()))
        ablations = ablations[[k not in known for k in keys]]
    episodes = pd.concat([grid, ablations], ignore_index=True) if not ablations.empty else grid
    for out in snakemake.output:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    episodes.to_parquet(snakemake.output.runs, index=False)
    main_part = main_scores(grid, info)
    scores = scores_table(episodes, main_part)
    scores.to_parquet(snakemake.output.scores, index=False)
    family_table(main_part, info, bootstrap).to_csv(snakemake.output.aggregate, index=False)
    print(f"{len(episodes)} episodes, {len(scores)} run scores", file=sys.stderr)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - provided by Snakemake's script directive
