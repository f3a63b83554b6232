"""The claims report (issue 16): config/claims.yaml loads and names only known IDs, bad claims
stop with one line, and workflow/scripts/claims.py gives the known answers on hand-made score
tables (a clear effect supported, the reversed one contradicted, noise inconclusive, a missing
benchmark "not run" with the config change to make), seeds needed agree with a direct
simulation, C5's step definition on a synthetic steps_test.npz, and the outputs are written."""

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import trim_mean

from conftest import copy_repo  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

import claims as C  # noqa: E402
import metrics  # noqa: E402
import tables  # noqa: E402

B = metrics.Bootstrap(reps=1000, confidence=0.95, random_state=12345)
FAST = C.Power(target=0.8, max_seeds=40, experiments=200, reps=300)


@pytest.fixture(scope="module")
def known():
    return C.known_from_metarl()


@pytest.fixture(scope="module")
def shipped(known):
    return C.load({"file": str(REPO / "config" / "claims.yaml")}, known, "HalfCheetahVel")


def claim(known, **spec):
    base = {"id": "T", "source": "test", "statement": "test claim", "split": "test", "metric": "adapted_return",
            "relation": "greater"}
    return C.parse([{**base, **spec}], known)


def scores(values: dict, bench="HalfCheetahVel", split="test", variant="default", steps=250_000) -> pd.DataFrame:
    """A scores.parquet of hand-made runs: {algorithm: [score per seed]} (seeds 1..n)."""
    rows = []
    for algo, vals in values.items():
        for seed, v in enumerate(vals, start=1):
            succ = bench.startswith("ML")
            rows.append({"benchmark": bench, "algorithm": algo, "variant": variant, "seed": seed, "split": split,
                         "iteration": 10, "env_steps": steps, "has_success": succ, "first_return": v - 1.0,
                         "adapted_return": v, "success_rate": v if succ else np.nan,
                         "max_success_rate": v if succ else np.nan, "score": v, "normalised": np.nan})
    return pd.DataFrame(rows)


def grid(**over):
    g = {"algorithms": ["random", "trmrl", "rl2", "maml_trpo", "pearl", "varibad"],
         "benchmarks": ["PointNav", "HalfCheetahVel"], "eval_splits": {"HalfCheetahVel": ["ood", "sweep"]},
         "ablation": {"algorithm": "trmrl", "benchmark": "HalfCheetahVel",
                      "variants": {"tfixup-on": "default", "tfixup-off": "tfixup-off"}},
         "preset": "quick", "paper_budgets": {"HalfCheetahVel": 20_000_000, "AntDir": 40_000_000},
         "normalisation": {"HalfCheetahVel": {"test": {"random": -368.0, "reference": 0.0}}}, "steps_rule": False}
    return {**g, **over}


def run(claims, data, g=None, power=FAST):
    out = C.evaluate(claims, data if isinstance(data, C.Data) else C.Data(data), g or grid(), B, power)
    return out[out["part"] != "claim"].reset_index(drop=True), out[out["part"] == "claim"].reset_index(drop=True)


# ----------------------------------------------------------------------------- the claims file


def test_claims_file_loads_and_names_only_known_ids(shipped):
    import metarl.envs
    import metarl.registry

    ids = [c["id"] for c in shipped]
    assert {"C1", "C2", "C3", "C4a", "C4b", "C5", "C6a", "C6b", "C6c", "C7a", "C7b", "C8a", "C8b", "C9"} == set(ids)
    algos, benches = set(metarl.registry.algorithms()), set(metarl.envs.BENCHMARK_IDS)
    for c in shipped:
        assert c["source"] and c["statement"] and c["parts"]
        for p in c["parts"]:
            assert p["benchmark"] in benches and p["metric"] in C.METRICS and p["relation"] in C.RELATIONS
            assert p["a"]["algorithm"] in algos
            assert p["b"]["kind"] == "value" or p["b"]["algorithm"] in algos
    c3 = next(c for c in shipped if c["id"] == "C3")
    assert [(p["metric"], p["a"]["algorithm"], p["b"]["algorithm"]) for p in c3["parts"]] == [
        ("first_return", "trmrl", "pearl"), ("adapted_return", "pearl", "trmrl")]
    c7 = [p for c in shipped if c["id"] in ("C7a", "C7b") for p in c["parts"]]
    assert [(p["a"]["variant"], p["b"]["variant"]) for p in c7] == [("tfixup-on", "tfixup-off"), ("window-5", "window-1")]
    assert {p["benchmark"] for p in c7} == {"HalfCheetahVel"}  # `benchmark: ablations` (the fixture's)


def test_ablation_claims_follow_the_configs_ablation_benchmark(known):
    claims = C.load({"file": str(REPO / "config" / "claims.yaml")}, known, "PointNav")
    c7 = [p for c in claims if c["id"] in ("C7a", "C7b") for p in c["parts"]]
    assert {p["benchmark"] for p in c7} == {"PointNav"}
    assert all(p["benchmark"] != "PointNav" for c in claims if c["id"] != "C7a" and c["id"] != "C7b"
               for p in c["parts"])
    with pytest.raises(C.ClaimError, match="needs an `ablations.benchmark`"):
        C.load({"file": str(REPO / "config" / "claims.yaml")}, known, None)


def test_meta_world_numbers_are_the_suites_table_1(shipped):
    c9 = next(c for c in shipped if c["id"] == "C9")
    got = {(p["a"]["algorithm"], p["benchmark"]): p["b"]["value"] for p in c9["parts"]}
    assert got == {(a, b): v / 100 for a, per in tables.PAPER_METATEST.items() for b, v in per.items()}
    assert all(p["relation"] == "within" and p["threshold"] == 0.1 for p in c9["parts"])


def test_pipeline_config_and_schema_accept_the_claims_block():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert cfg["claims"]["file"] == "config/claims.yaml" and cfg["claims"]["extra"] == []
    validate(cfg, schema=schema)
    with pytest.raises(WorkflowError):
        validate({**cfg, "claims": {"fiel": "x.yaml"}}, schema=schema)


@pytest.mark.parametrize("spec, words", [
    ({"benchmark": "HalfCheetahVell", "algorithms": ["trmrl", "rl2"]}, "unknown benchmark 'HalfCheetahVell'"),
    ({"benchmark": "HalfCheetahVel", "algorithms": ["trmrl", "rl3"]}, "unknown algorithm 'rl3'"),
    ({"benchmark": "HalfCheetahVel", "algorithms": ["trmrl", "rl2"], "metric": "return"}, "unknown metric 'return'"),
    ({"benchmark": "HalfCheetahVel", "algorithms": ["trmrl", "rl2"], "relation": "better"}, "unknown relation"),
    ({"benchmark": "HalfCheetahVel", "algorithms": ["trmrl", "rl2"], "treshold": 1}, "unknown key(s) treshold"),
    ({"benchmark": "HalfCheetahVel", "algorithms": ["trmrl", "rl2"], "metric": "success_rate"}, "no success signal"),
    ({"benchmark": "HalfCheetahDir", "algorithms": ["trmrl", "rl2"], "split": "ood"}, "HalfCheetahDir has no split 'ood'"),
    ({"benchmark": "HalfCheetahVel", "algorithms": ["trmrl", "rl2"], "relation": "within"}, "needs a `threshold`"),
    ({"benchmark": "HalfCheetahVel", "algorithm": "trmrl", "variants": ["tfixpu-on", "tfixup-off"]},
     "trmrl has no setting 'tfixpu'"),
    ({"benchmark": "ML10", "metric": "max_success_rate", "algorithms": ["varibad"], "relation": "within",
      "threshold": 0.1, "against": {"paper": "metaworld_table1"}}, "has no number for varibad on ML10"),
])
def test_a_bad_claim_is_one_clear_error(known, spec, words):
    with pytest.raises(C.ClaimError) as err:
        claim(known, **spec)
    assert words in str(err.value) and "\n" not in str(err.value) and "claim T" in str(err.value)


def test_extra_claims_replace_by_id_or_are_added(known, tmp_path):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [
        {"id": "A", "source": "s", "statement": "a", "benchmark": "PointNav", "metric": "adapted_return",
         "algorithms": ["trmrl", "rl2"], "relation": "greater"}]}))
    extra = [{"id": "A", "source": "s", "statement": "a, changed", "benchmark": "PointNav", "metric": "first_return",
              "algorithms": ["trmrl", "rl2"], "relation": "greater_equal"},
             {"id": "B", "source": "mine", "statement": "b", "benchmark": "PointNav", "metric": "adapted_return",
              "algorithms": ["rl2"], "against": {"value": -15}, "relation": "greater"}]
    out = C.load({"file": str(path), "extra": extra}, known)
    assert [c["id"] for c in out] == ["A", "B"]
    assert out[0]["statement"] == "a, changed" and out[0]["parts"][0]["metric"] == "first_return"
    assert out[1]["parts"][0]["b"] == {"kind": "value", "value": -15.0, "source": "fixed"}


def test_a_typo_in_a_claim_stops_the_workflow_at_parse_time(tmp_path):
    root = copy_repo(tmp_path / "repo")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"claims": {"extra": [
        {"id": "X1", "source": "me", "statement": "typo", "benchmark": "PointNav", "metric": "adapted_return",
         "algorithms": ["trmrl", "rl22"], "relation": "greater"}]}}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all", "--configfile", "config/smoke.yaml",
                           str(bad)], cwd=root, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Job stats" not in out
    assert "config: claims: claims.extra: claim X1: unknown algorithm 'rl22'" in out


# ----------------------------------------------------------------------------- verdicts


def test_decision_rules_of_each_relation():
    assert C.decide("greater", 0.1, 2) == 1 and C.decide("greater", -1, 0) == -1 and C.decide("greater", -1, 1) == 0
    assert C.decide("greater_equal", 0, 0) == 1 and C.decide("greater_equal", -0.5, -0.1) == -1
    assert C.decide("greater_equal", -0.5, 1, margin=1) == 1 and C.decide("greater_equal", -2, -1.5, margin=1) == -1
    assert C.decide("less", -2, -1) == 1 and C.decide("less", 0, 1) == -1
    assert C.decide("less_equal", -1, 0) == 1 and C.decide("less_equal", 0.1, 1) == -1
    assert C.decide("within", -0.1, 0.1, threshold=0.2) == 1 and C.decide("within", 0.3, 0.5, threshold=0.2) == -1
    assert C.decide("within", 0.1, 0.5, threshold=0.2) == 0 and C.decide("greater", np.nan, np.nan) == 0
    assert list(C.decide("greater", np.array([1, -2, -1]), np.array([2, -1, 1]))) == [1, -1, 0]


def test_a_claims_verdict_combines_its_parts():
    assert C.combine(["supported", "supported"]) == "supported"
    assert C.combine(["supported", "contradicted", "not run"]) == "contradicted"
    assert C.combine(["supported", "inconclusive"]) == "inconclusive"
    assert C.combine(["supported", "not run"]) == "inconclusive"
    assert C.combine(["not run", "not run"]) == "not run"


def test_clear_effect_supported_reverse_contradicted_noise_inconclusive(known):
    rng = np.random.default_rng(7)
    good, base = 10 + rng.normal(size=5), rng.normal(size=5)
    noise = np.array([0.3, -1.2, 0.8, -0.4, 1.1])
    data = scores({"trmrl": good, "rl2": base, "pearl": base[::-1] + 0.05 * noise, "varibad": noise})
    parts, claims = run(claim(known, benchmark="HalfCheetahVel", algorithms=["trmrl", "rl2"], relation="greater_equal")
                        + claim(known, id="R", benchmark="HalfCheetahVel", algorithms=["rl2", "trmrl"])
                        + claim(known, id="N", benchmark="HalfCheetahVel", algorithms=["pearl", "rl2"]), data)
    assert list(parts["verdict"]) == ["supported", "contradicted", "inconclusive"]
    sup, con, inc = parts.iloc[0], parts.iloc[1], parts.iloc[2]
    assert sup["ci_low"] > 0 and con["ci_high"] < 0 and inc["ci_low"] < 0 < inc["ci_high"]
    assert sup["estimate"] == pytest.approx(trim_mean(good, 0.25) - trim_mean(base, 0.25))
    assert sup["n_a"] == sup["n_b"] == 5 and sup["p_improvement"] == 1.0 and con["p_improvement"] == 0.0
    assert sup["seeds_needed"] == "2" and sup["seeds_aim"] == "to support" and con["seeds_aim"] == "to contradict"
    assert sup["env_steps_max"] == 250_000 and sup["budget_share"] == pytest.approx(250_000 / 20_000_000)
    assert sup["normalised_estimate"] == pytest.approx(sup["estimate"] / 368.0)  # fixed points, not the runs
    assert list(claims["verdict"]) == ["supported", "contradicted", "inconclusive"]


def test_a_tie_at_100_percent_supports_greater_equal_and_contradicts_greater(known):
    data = scores({"trmrl": [1.0] * 3, "rl2": [1.0] * 3}, bench="ML1-reach")
    g = grid(benchmarks=["ML1-reach"], eval_splits={})
    spec = dict(benchmark="ML1-reach", metric="success_rate", algorithms=["trmrl", "rl2"])
    parts, _ = run(claim(known, relation="greater_equal", **spec) + claim(known, id="S", relation="greater", **spec),
                   data, g)
    assert list(parts["verdict"]) == ["supported", "contradicted"]
    assert parts["ci_low"].tolist() == [0.0, 0.0] and parts["ci_high"].tolist() == [0.0, 0.0]


def test_every_part_of_a_multi_part_claim_and_the_claim_row(known):
    data = scores({"trmrl": [5, 6, 7, 8], "rl2": [0, 1, 2, 1], "pearl": [9, 10, 11, 12]})
    parts, claims = run(claim(known, benchmark="HalfCheetahVel", algorithms=["trmrl", "rl2", "pearl"]), data)
    assert list(parts["label"]) == ["TrMRL > RL²", "TrMRL > PEARL"]
    assert list(parts["verdict"]) == ["supported", "contradicted"]
    assert claims.iloc[0]["verdict"] == "contradicted" and claims.iloc[0]["label"] == "test claim"


def test_against_a_value_and_against_the_same_runs_other_metric(known):
    data = scores({"varibad": [100.0, 102.0, 98.0, 101.0], "trmrl": [1.0, 2.0, 3.0, 2.5]})
    # first_return = adapted - 1 in `scores`: within 10 % of |adapted| (~10): supported
    close = claim(known, benchmark="HalfCheetahVel", metric="first_return", algorithms=["varibad"],
                  against={"metric": "adapted_return"}, relation="within", threshold=0.1, relative=True)
    above = claim(known, id="V", benchmark="HalfCheetahVel", algorithms=["trmrl"], against={"value": 20},
                  relation="less_equal")
    parts, _ = run(close + above, data)
    assert parts.iloc[0]["estimate"] == pytest.approx(-1.0) and parts.iloc[0]["threshold"] == pytest.approx(10.05)
    assert parts.iloc[0]["verdict"] == "supported" and parts.iloc[0]["label"].startswith("VariBAD first return ≈")
    assert parts.iloc[1]["verdict"] == "supported" and parts.iloc[1]["ci_high"] < 0
    assert parts.iloc[1]["estimate"] == pytest.approx(trim_mean([1, 2, 3, 2.5], 0.25) - 20)


def test_ood_drop_pairs_each_runs_test_and_ood_scores(known):
    data = pd.concat([scores({"pearl": [10, 11, 12], "trmrl": [5, 5.5, 6]}),
                      scores({"pearl": [0, 1, 2], "trmrl": [4, 4.5, 5]}, split="ood")])
    parts, _ = run(claim(known, benchmark="HalfCheetahVel", metric="ood_drop", algorithms=["pearl", "trmrl"]), data)
    assert parts.iloc[0]["estimate"] == pytest.approx(10 - 1) and parts.iloc[0]["verdict"] == "supported"


def test_one_seed_is_inconclusive_and_its_seeds_needed_unknown(known):
    data = scores({"trmrl": [10.0], "rl2": [0.0, 0.5, 1.0]})
    parts, claims = run(claim(known, benchmark="HalfCheetahVel", algorithms=["trmrl", "rl2"]), data)
    r = parts.iloc[0]
    assert r["verdict"] == "inconclusive" and r["estimate"] == pytest.approx(9.5) and math.isnan(r["ci_low"])
    assert r["seeds_needed"] == "unknown (1 seed)" and "1 seed" in r["notes"]
    assert claims.iloc[0]["seeds_needed"] == "unknown (1 seed)"


@pytest.mark.parametrize("spec, g, hint", [
    ({"benchmark": "AntDir", "algorithms": ["trmrl", "rl2"]}, {}, "add AntDir to benchmarks"),
    ({"benchmark": "HalfCheetahVel", "algorithms": ["trmrl", "varibad"]},
     {"algorithms": ["random", "trmrl", "rl2"]}, "add varibad to algorithms"),
    ({"benchmark": "HalfCheetahVel", "algorithms": ["trmrl", "rl2"], "split": "ood"},
     {"eval_splits": {}}, "add ood to eval_splits.HalfCheetahVel"),
    ({"benchmark": "HalfCheetahVel", "algorithm": "trmrl", "variants": ["window-5", "window-1"],
      "relation": "greater_equal"}, {}, "add window = 5 to ablations.factors (variant window-5)"),
    ({"benchmark": "PointNav", "algorithm": "trmrl", "variants": ["tfixup-on", "tfixup-off"]}, {},
     "set ablations.benchmark: PointNav (now HalfCheetahVel)"),
    ({"benchmark": "HalfCheetahVel", "metric": "steps_to_best", "algorithms": ["trmrl"], "against": {"value": 20},
      "relation": "less_equal"}, {}, "needs per-step rewards"),
])
def test_a_claim_whose_runs_are_not_in_the_grid_is_not_run_with_the_change_to_make(known, spec, g, hint):
    data = scores({"trmrl": [1.0, 2.0, 3.0], "rl2": [0.0, 1.0, 2.0]})
    parts, claims = run(claim(known, **spec), data, grid(**g))
    assert set(parts["verdict"]) == {"not run"} and claims.iloc[0]["verdict"] == "not run"
    assert hint in parts.iloc[0]["notes"] and hint in claims.iloc[0]["notes"]
    assert parts.iloc[0]["seeds_needed"] == "–"


def test_ablation_variants_at_the_presets_value_are_the_default_run(known):
    data = pd.concat([scores({"trmrl": [10, 11, 12]}), scores({"trmrl": [1, 2, 3]}, variant="tfixup-off")])
    parts, _ = run(claim(known, benchmark="HalfCheetahVel", algorithm="trmrl", variants=["tfixup-on", "tfixup-off"],
                         relation="greater_equal"), data)
    r = parts.iloc[0]
    assert r["label"] == "tfixup-on ≥ tfixup-off" and r["estimate"] == pytest.approx(9) and r["verdict"] == "supported"


# ----------------------------------------------------------------------------- seeds needed


def test_vectorised_iqm_is_rliables():
    x = np.random.default_rng(3).normal(size=(40, 9))
    assert np.allclose(C.iqm_last(x), [trim_mean(row, 0.25) for row in x])
    assert np.allclose(C.iqm_last(x[:, :3]), x[:, :3].mean(axis=1))
    assert metrics.iqm(x[0]) == pytest.approx(trim_mean(x[0], 0.25))


def standardised(z, centre, spread):
    """A sample whose IQM and std (ddof=1) are exactly `centre` and `spread`."""
    return centre + spread * (z - metrics.iqm(z)) / np.std(z, ddof=1)


@pytest.mark.slow  # ~2 minutes of a core: 2 x 240 experiments with 300 bootstrap draws each
def test_seeds_needed_agrees_with_a_direct_simulation():
    """Measured seeds whose IQM and spread are the generating normals' (A ~ N(1.2, 1), B ~ N(0, 1));
    fresh experiments from those normals with rliable's own CI (metrics.difference_interval)
    put the smallest n deciding 80 % of them within 20 % of the estimate."""
    rng = np.random.default_rng(11)
    x, y = standardised(rng.normal(size=6), 1.2, 1.0), standardised(rng.normal(size=6), 0.0, 1.0)
    power = C.Power(target=0.8, max_seeds=60, experiments=400, reps=300)
    got = C.seeds_needed([x, y], "greater", 0.0, None, power, 0.95, seed=1)
    n = got["n"]
    assert got["aim"] == "to support" and 6 <= n <= 20, got
    direct = metrics.Bootstrap(reps=300, confidence=0.95, random_state=5)

    def direct_power(k, experiments=240):
        fresh = np.random.default_rng([99, k])
        hits = 0
        for _ in range(experiments):
            r = metrics.difference_interval(fresh.normal(1.2, 1.0, k), fresh.normal(0.0, 1.0, k), direct)
            hits += r["ci_low"] > 0
        return hits / experiments

    below, above = math.ceil(0.8 * n) - 1, math.floor(1.2 * n)
    p_below, p_above = direct_power(below), direct_power(above)
    assert p_below < 0.8 <= p_above, (n, below, p_below, above, p_above)


def test_seeds_needed_edges():
    p = C.Power(target=0.8, max_seeds=30, experiments=100, reps=200)
    same = np.array([0.0, 1.0, 2.0, 3.0])
    assert C.seeds_needed([same, same], "greater", 0, None, p, 0.95, 1)["text"] == ">30"  # no effect
    far = C.seeds_needed([same + 100, same], "greater", 0, None, p, 0.95, 1)
    assert far["text"] == "2" and far["aim"] == "to support"
    assert C.seeds_needed([same[:1], same], "greater", 0, None, p, 0.95, 1)["text"] == "unknown (1 seed)"
    worse = C.seeds_needed([same - 100, same], "greater_equal", 0, None, p, 0.95, 1)
    assert worse["aim"] == "to contradict" and worse["text"] == "2"


# ----------------------------------------------------------------------------- C5: steps to best


def reward_array(rise: int, tasks=4, episodes=2, length=50, noise=0.0, seed=0):
    """Per-step reward rising linearly from -1 at step 0 to 0 at step `rise`, flat after."""
    t = np.arange(length)
    curve = -1 + np.minimum(t / rise, 1.0)
    r = np.tile(curve, (tasks, episodes, 1)).astype(np.float32)
    r += np.random.default_rng(seed).normal(0, noise, r.shape).astype(np.float32)
    return r


def test_steps_to_best_definition():
    r = reward_array(rise=10)
    assert C.steps_to_best(r, 0, 0.9) == 9.0  # -1 + t/10 >= -0.1 first at t = 9
    assert C.steps_to_best(r, 0, 1.0) == 10.0
    r[1, 0, 30:] = np.nan  # an episode that ended early: the mean over the tasks still running
    assert C.steps_to_best(r, 0, 0.9) == 9.0
    flat = np.zeros((3, 1, 20), dtype=np.float32)
    assert C.steps_to_best(flat, 0) == 0.0  # best at step 0
    falling = -np.tile(np.arange(20.0), (3, 1, 1))
    assert C.steps_to_best(falling, 0) == 0.0
    assert math.isnan(C.steps_to_best(r, 5))  # no such episode


def test_c5_on_synthetic_step_files(known, shipped, tmp_path):
    paths = []
    for seed, rise in zip((1, 2, 3, 4), (8, 10, 12, 11)):
        d = tmp_path / f"results/runs/HalfCheetahVel/trmrl/default/seed{seed}"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(f"algo: trmrl\nenv: HalfCheetahVel\nseed: {seed}\nvariant: default\n")
        np.savez(d / "steps_test.npz", reward=reward_array(rise), benchmark="HalfCheetahVel", split="test",
                 iteration=np.int64(40), env_steps=np.int64(250_000), episode_length=np.int64(50))
        paths.append(str(d / "steps_test.npz"))
    steps = C.load_steps(paths)
    assert sorted(steps) == [("HalfCheetahVel", "trmrl", "default", s) for s in (1, 2, 3, 4)]
    c5 = [c for c in shipped if c["id"] == "C5"]
    assert C.step_runs(c5, [("HalfCheetahVel", "trmrl", "default", 1), ("HalfCheetahVel", "rl2", "default", 1)],
                       {}) == [("HalfCheetahVel", "trmrl", "default", 1)]
    parts, claims = run(c5, C.Data(scores({"trmrl": [0, 0, 0, 0]}), steps=steps), grid(steps_rule=True))
    r = parts.iloc[0]
    per_seed = [rise - 1 for rise in (8, 10, 12, 11)]  # 90 % of the way: step rise - 1
    assert r["iqm_a"] == pytest.approx(trim_mean(per_seed, 0.25)) and r["estimate"] == pytest.approx(r["iqm_a"] - 20)
    assert r["verdict"] == "supported" and r["env_steps_max"] == 250_000 and r["n_a"] == 4
    slow = {k: {**v, "reward": reward_array(40 + k[3])} for k, v in steps.items()}
    parts, _ = run(c5, C.Data(scores({"trmrl": [0, 0, 0, 0]}), steps=slow), grid(steps_rule=True))
    assert parts.iloc[0]["verdict"] == "contradicted"


# ----------------------------------------------------------------------------- outputs


def test_table_and_figure_are_written(known, shipped, tmp_path):
    data = pd.concat([scores({"trmrl": [10, 11, 12], "rl2": [0, 1, 2], "maml_trpo": [9, 12, 10], "pearl": [11, 13, 12],
                              "varibad": [1, 2, 0]}),
                      scores({"trmrl": [9, 10, 11], "rl2": [0, 1, 2], "maml_trpo": [5, 6, 4], "pearl": [1, 2, 3],
                              "varibad": [0, 1, 2]}, split="ood")])
    g = grid()
    rows = C.evaluate(shipped, C.Data(data), g, B, FAST)
    assert len(rows) == len(shipped) + sum(len(c["parts"]) for c in shipped)
    assert set(rows["preset"]) == {"quick"}
    section, title = C.table(rows, g, B, FAST)
    out = SimpleNamespace(csv=tmp_path / "claims.csv", md=tmp_path / "claims.md", tex=tmp_path / "claims.tex")
    C.write(rows, section, title, out)
    md = out.md.read_text()
    assert md.startswith("# Published claims") and ("**supported**" in md or "**inconclusive**" in md)
    assert "add AntDir to benchmarks" in md and "quick" in md and "of the paper preset's budgets" in md
    tex = out.tex.read_text()
    cells = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert "\\begin{tabular}" in cells and not set("≤≥≈−·") & set(cells)
    csv = pd.read_csv(out.csv)
    assert set(csv["verdict"]) <= set(C.VERDICTS) and (csv["part"] == "claim").sum() == len(shipped)
    import style

    style.setup()
    fig = C.figure(csv, {"preset": "quick", "aggregate": {"reps": 1000, "confidence": 0.95}}, str(tmp_path / "c.pdf"))
    data = (tmp_path / "c.pdf").read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 5000
    text = " ".join(t.get_text() for t in fig.texts)
    assert "stratified-bootstrap CI" in text and "IQM difference" in text and "3 seeds" in text
