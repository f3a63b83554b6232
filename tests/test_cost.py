"""workflow/scripts/measure_cost.py (docs/cost.md): the extrapolation from one measured iteration
to a paper run, and the time limits it writes, on made-up rates (no timing in tests)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow" / "scripts"))

import measure_cost  # noqa: E402

RATES = {"sample_s_per_step": 1e-3, "measured_in_s": 1.0}


def test_a_ppo_run_is_priced_per_env_step_at_the_paper_batch():
    r = measure_cost.run_cost("trmrl", "HalfCheetahVel", 5, [], {**RATES, "update_s_per_step": 2e-3})
    paper = measure_cost._paper("trmrl", "HalfCheetahVel")
    batch = paper["meta_batch_size"] * 2 * 200
    assert r["batch_steps"] == batch
    assert r["iteration_s"] == pytest.approx(batch * 3e-3)
    assert r["iterations"] == -(-paper["total_env_steps"] // batch)
    assert r["train_h"] == pytest.approx(r["iterations"] * r["iteration_s"] / 3600)
    assert r["grid_h"] == pytest.approx(5 * r["run_h"])


def test_pearl_is_priced_per_gradient_step_and_measured_on_fewer():
    paper = measure_cost._paper("pearl", "HalfCheetahVel")
    r = measure_cost.run_cost("pearl", "HalfCheetahVel", 1, [], {**RATES, "update_s_per_grad_step": 0.5})
    assert r["iteration_s"] == pytest.approx(r["batch_steps"] * 1e-3 + paper["grad_steps"] * 0.5)
    from metarl.envs import get_benchmark

    settings, grad_steps = measure_cost._shorter("pearl", get_benchmark("HalfCheetahVel"), paper)
    assert settings["grad_steps"] == grad_steps == measure_cost.PEARL_GRAD_STEPS < paper["grad_steps"]


def test_metaworld_is_measured_on_fewer_tasks_and_priced_at_the_paper_batch():
    from metarl.envs import get_benchmark

    paper = measure_cost._paper("rl2", "ML1-reach")
    settings, _ = measure_cost._shorter("rl2", get_benchmark("ML1-reach"), paper)
    assert settings["meta_batch_size"] == measure_cost.METAWORLD_TASKS < paper["meta_batch_size"]
    r = measure_cost.run_cost("rl2", "ML1-push", 10, [], {**RATES, "update_s_per_step": 0.0}, like="ML1-reach")
    assert r["batch_steps"] == measure_cost._paper("rl2", "ML1-push")["meta_batch_size"] * 10 * 500
    assert "ML1-reach's rates" in measure_cost.markdown([r])


def test_time_limits_follow_the_estimate_up_to_the_cap():
    rows = [{"benchmark": "PointNav", "algorithm": "rl2", "run_h": 0.3},
            {"benchmark": "AntDir", "algorithm": "trmrl", "run_h": 10.2},
            {"benchmark": "HumanoidDir", "algorithm": "pearl", "run_h": 1000.0}]
    text = measure_cost.runtimes(rows)
    assert "PointNav/rl2: {runtime: 60}" in text
    assert "AntDir/trmrl: {runtime: 780}" in text  # 10.2 h x 1.2 -> 13 h
    assert f"HumanoidDir/pearl: {{runtime: {measure_cost.RUNTIME_CAP_MIN}}}" in text
    assert "needs 25 attempts" in text  # 1200 h / 48 h
