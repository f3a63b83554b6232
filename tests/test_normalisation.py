"""Fixed normalisation points (issue 21): config/normalisation.yaml, metrics.normalise and the
tables and summaries built on it, workflow/scripts/measure_random.py, and the workflow's check
of the file."""

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

import aggregate  # noqa: E402
import measure_random  # noqa: E402
import metrics  # noqa: E402
import render  # noqa: E402
import tables  # noqa: E402
from conftest import copy_repo, summaries  # noqa: E402
from metarl.envs import BENCHMARK_IDS, get_benchmark  # noqa: E402

FILE = REPO / "config" / "normalisation.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "normalisation.schema.yaml"
DECLARED = yaml.safe_load(FILE.read_text())
B = metrics.Bootstrap(reps=200, confidence=0.95, random_state=7)


def episodes(runs: dict, split: str = "test", episodes_per_trial: int = 3) -> pd.DataFrame:
    """Per-episode rows of final evaluations: runs[(benchmark, algo, seed)] = the last episode's
    return (every task; earlier episodes 1 lower each)."""
    rows = []
    for (bench, algo, seed), last in runs.items():
        for task in (0, 1):
            for ep in range(episodes_per_trial):
                rows.append({"benchmark": bench, "algorithm": algo, "variant": "default", "seed": seed,
                             "split": split, "iteration": 10, "env_steps": 1000, "task": task, "episode": ep,
                             "return": last - (episodes_per_trial - 1 - ep), "success": np.nan, "scored": True,
                             "last_episode": ep == episodes_per_trial - 1, "final": True, "has_success": False,
                             "task_value": np.nan, "task_label": "", "train_low": np.nan, "train_high": np.nan, "split_note": ""})
    return pd.DataFrame(rows)[metrics.EPISODE_COLUMNS]


def info(algorithms, benchmarks) -> dict:
    return {"algorithms": algorithms, "benchmarks": benchmarks, "floor": "random", "reference": "trmrl",
            "normalisation": {b: DECLARED[b] for b in benchmarks if b in DECLARED},
            "aggregate": {"reps": 200, "confidence": 0.95, "random_state": 7}}


# ----------------------------------------------------------------------------- normalise


def test_a_runs_normalised_score_does_not_change_when_runs_are_added():
    base = {("PointNav", "random", s): -20.0 - s for s in (1, 2, 3)}
    base.update({("PointNav", "trmrl", s): -10.0 + s for s in (1, 2, 3)})
    more = {**base, **{("PointNav", "rl2", s): -4.0 + 0.1 * s for s in (1, 2, 3)}}  # a much better algorithm
    before = aggregate.main_scores(episodes(base), info(["random", "trmrl"], ["PointNav"]))
    after = aggregate.main_scores(episodes(more), info(["random", "trmrl", "rl2"], ["PointNav"]))
    keys = metrics.RUN_KEYS + ["split"]
    merged = before.merge(after, on=keys, suffixes=("_before", "_after"))
    assert len(merged) == 6
    assert (merged["normalised_before"] == merged["normalised_after"]).all()
    p = DECLARED["PointNav"]["test"]
    trmrl1 = merged[(merged["algorithm"] == "trmrl") & (merged["seed"] == 1)].iloc[0]
    assert trmrl1["normalised_after"] == pytest.approx((-9.0 - p["random"]) / (p["reference"] - p["random"]))


def test_a_benchmark_without_reference_is_nan_and_left_out_of_the_aggregate(tmp_path):
    assert DECLARED["AntDir"]["test"]["reference"] is None
    runs = {(b, a, s): v + s for b in ("PointNav", "AntDir") for a, v in (("random", -20.0), ("trmrl", -8.0))
            for s in (1, 2, 3)}
    data = episodes(runs)
    cfg = info(["random", "trmrl"], ["PointNav", "AntDir"])
    scores = aggregate.main_scores(data, cfg)
    assert scores.loc[scores["benchmark"] == "AntDir", "normalised"].isna().all()
    assert scores.loc[scores["benchmark"] == "PointNav", "normalised"].notna().all()
    assert metrics.unnormalised(scores, cfg["normalisation"]) == ["AntDir"]
    fams = metrics.family_matrices(scores, cfg["algorithms"])
    matrices, benches, seeds = fams["returns"]
    assert benches == ["PointNav"] and matrices["trmrl"].shape == (3, 1) and not np.isnan(matrices["trmrl"]).any()
    summary = aggregate.family_table(scores, cfg, B)
    assert set(summary["benchmark_ids"]) == {"PointNav"} and set(summary["not_normalised"]) == {"AntDir"}
    # the main table says which points it uses, and what it leaves out
    path = tmp_path / "grid.parquet"
    data.to_parquet(path)
    csv, sections, _ = tables.table_main(cfg, B, summaries(data, cfg, B))
    md, tex = render.markdown(sections, "t"), render.latex(sections, "t")
    assert f"AntDir: {metrics.NOT_NORMALISED}" in md
    assert "PointNav: 0 = -20.23 (uniform-random agent), 1 = -3.8001 (goal-knowing oracle)" in md
    assert "config/normalisation.yaml" in tex
    agg = csv[csv["benchmark"] == metrics.FAMILIES["returns"]]
    assert not agg.empty and agg["iqm"].notna().all()


def test_a_missing_or_null_reference_never_gives_a_number():
    scores = metrics.run_scores(episodes({("Toy", "a", 1): 1.0, ("HalfCheetahDir", "a", 1): 1.0}))
    out = metrics.normalise(scores, DECLARED)
    assert out.isna().all()
    text = metrics.describe_normalisation(DECLARED, ["Toy", "HalfCheetahVel"])
    assert text == (f"HalfCheetahVel: 0 = -372.62 (uniform-random agent), 1 = 0 (analytic upper bound); "
                    f"Toy: {metrics.NOT_NORMALISED}")


# ----------------------------------------------------------------------------- the declared values


def evaluate_random(split: str, seed: int) -> float:
    """The random agent's adapted return on PointNav's split, by the suite's own evaluator."""
    from metarl.config import resolve
    from metarl.evaluation import Evaluator
    from metarl.setup import build_agent, prepare

    setup = prepare(resolve("random", "PointNav", seed, "paper", overrides={"threads": 1, "device": "cpu"}))
    agent = build_agent(setup)
    evaluator = Evaluator(setup.benchmark, seed, 0)
    try:
        rows = pd.DataFrame(evaluator.evaluate(agent, split, 0, 0))
    finally:
        evaluator.close()
    return rows.loc[rows["episode"] == rows["episode"].max(), "return"].mean()


def declared_seeds(source: str) -> list[int]:
    lo, hi = re.search(r"mean over seeds (\d+)-(\d+)", source).groups()
    return list(range(int(lo), int(hi) + 1))


@pytest.mark.parametrize("split", ["test", "ood"])
def test_declared_point_nav_random_matches_a_fresh_measurement(split):
    entry = DECLARED["PointNav"][split]
    seeds = declared_seeds(entry["random_source"])
    assert seeds == list(range(1, 11))
    fresh = np.mean([evaluate_random(split, s) for s in seeds])
    assert abs(fresh - entry["random"]) <= 0.5 * 10 ** -measure_random.DECIMALS + 1e-9  # written to 0.01
    recorded = float(re.search(r"mean over seeds \S+ = (-?[0-9.]+) ", entry["random_source"]).group(1))
    assert abs(fresh - recorded) <= 0.0005 + 1e-9  # the source text's mean, to 3 decimals
    assert measure_random.random_score("PointNav", split, seeds[0]) == pytest.approx(evaluate_random(split, seeds[0]))


def greedy_point_nav(angles: np.ndarray, steps: int):
    """Simulate PointNav itself with the goal-knowing greedy move: per axis, as far towards the
    goal as the clip allows. Returns each goal's episode return and the distances per step."""
    from metarl.envs.point_nav import MAX_STEP, PointNavBatch, goal_task

    env = PointNavBatch(len(angles))
    env.set_tasks([goal_task(a) for a in angles], [np.random.default_rng(0)] * len(angles))
    goal = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    pos = env.reset(np.arange(len(angles))).astype(np.float64)
    total, dists = np.zeros(len(angles)), []
    active = np.ones(len(angles), dtype=bool)
    for _ in range(steps):
        action = np.clip(goal - pos, -MAX_STEP, MAX_STEP)
        _, reward, _, _ = env.step(action, active)
        pos = pos + action
        total += reward
        dists.append(-reward.copy())
    return total, np.array(dists)


@pytest.mark.parametrize("split", ["test", "ood"])
def test_declared_point_nav_reference_is_the_oracle_return(split):
    bench = get_benchmark("PointNav")
    angles = np.array([t.params["angle"] for t in bench.split(split)])
    returns, dists = greedy_point_nav(angles, bench.episode_length)
    declared = DECLARED["PointNav"][split]["reference"]
    assert returns.mean() == pytest.approx(declared, abs=0.5e-4)  # written to 4 decimals
    assert measure_random.point_nav_oracle(split) == pytest.approx(returns.mean(), abs=1e-9)
    # optimal: at step t no policy is closer than the distance to the box [-0.1 t, 0.1 t]^2 of the
    # points reachable from the origin, and the greedy move is exactly that close at every step
    goal = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    for t in range(1, bench.episode_length + 1):
        nearest = np.clip(goal, -0.1 * t, 0.1 * t)
        assert dists[t - 1] == pytest.approx(np.linalg.norm(goal - nearest, axis=1), abs=1e-12)
    # and no perturbed policy beats it
    from metarl.envs.point_nav import PointNavBatch, goal_task

    rng = np.random.default_rng(0)
    for _ in range(20):
        env = PointNavBatch(len(angles))
        env.set_tasks([goal_task(a) for a in angles], [rng] * len(angles))
        pos = env.reset(np.arange(len(angles))).astype(np.float64)
        total = np.zeros(len(angles))
        for _ in range(bench.episode_length):
            action = np.clip(goal - pos, -0.1, 0.1) + rng.normal(0, 0.03, size=goal.shape)
            _, reward, _, _ = env.step(action, np.ones(len(angles), dtype=bool))
            pos = pos + np.clip(action, -0.1, 0.1)
            total += reward
        assert (total <= returns + 1e-9).all()


def test_declared_half_cheetah_vel_reference_is_the_upper_bound():
    for split in get_benchmark("HalfCheetahVel").splits():
        entry = DECLARED["HalfCheetahVel"][split]
        assert entry["reference"] == 0.0
        assert entry["reference_source"].startswith("analytic upper bound:") and "Not reachable" in entry["reference_source"]


# ----------------------------------------------------------------------------- the file


def test_the_file_validates_and_covers_every_benchmark_without_success():
    from snakemake.utils import validate

    validate(DECLARED, str(SCHEMA), set_default=False)
    for bench_id in BENCHMARK_IDS:
        bench = get_benchmark(bench_id)
        if bench.has_success:
            assert bench_id not in DECLARED, f"{bench_id} is scored by its success rate: no entry"
            continue
        assert set(DECLARED[bench_id]) == set(bench.splits()), bench_id
        for split, entry in DECLARED[bench_id].items():
            assert isinstance(entry["random"], float) and math.isfinite(entry["random"])
            assert entry["random_source"].startswith("uniform-random agent: ")
            assert "mean over seeds 1-10" in entry["random_source"]
            assert f"all {len(bench.split(split))} tasks" in entry["random_source"]
            ref = entry["reference"]
            assert ref is None or (isinstance(ref, float) and ref > entry["random"]), (bench_id, split)
            assert ":" in entry["reference_source"]
            if ref is None:
                assert entry["reference_source"].startswith("none: ")
    assert set(DECLARED) == {b for b in BENCHMARK_IDS if not get_benchmark(b).has_success}
    with pytest.raises(Exception, match="not of type"):
        validate({"PointNav": {"test": {**DECLARED["PointNav"]["test"], "reference": "high"}}}, str(SCHEMA))


def test_measure_random_rewrites_only_the_random_lines(tmp_path):
    path = tmp_path / "normalisation.yaml"
    shutil.copy(FILE, path)
    result = {"benchmark": "AntDir", "split": "ood", "seeds": [1, 2, 3], "mean": -1.23456, "std": 0.5}
    measure_random.update_file(path, [result])
    new = yaml.safe_load(path.read_text())
    assert new["AntDir"]["ood"]["random"] == -1.23
    assert "mean over seeds 1-3 = -1.235 (std over seeds 0.500)" in new["AntDir"]["ood"]["random_source"]
    new["AntDir"]["ood"]["random"], new["AntDir"]["ood"]["random_source"] = (
        DECLARED["AntDir"]["ood"]["random"], DECLARED["AntDir"]["ood"]["random_source"])
    assert new == DECLARED
    assert len(path.read_text().splitlines()) == len(FILE.read_text().splitlines())


def test_the_workflow_rejects_a_bad_file_in_one_message(tmp_path):
    root = copy_repo(tmp_path / "repo")
    bad = yaml.safe_load(FILE.read_text())
    bad["PointNav"]["test"]["reference"] = -30.0  # below random
    del bad["HalfCheetahVel"]["sweep"]
    (root / "config" / "normalisation.yaml").write_text(yaml.safe_dump(bad))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all", "--configfile", "config/smoke.yaml"],
                          cwd=root, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "PointNav/test: reference -30.0 is not above random -20.23" in out
    assert "HalfCheetahVel: no entry for split(s) sweep" in out
