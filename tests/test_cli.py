"""The CLI surface: listings, help, bench output format."""

from __future__ import annotations

import re

import pytest

from conftest import run_cli


def test_envs_lists_every_benchmark(tmp_path):
    out = run_cli(["envs"], cwd=tmp_path).stdout
    ids = [line.split()[0] for line in out.splitlines()]
    assert ids == ["PointNav", "HalfCheetahVel", "HalfCheetahDir", "AntDir", "HumanoidDir",
                   "ML1-reach", "ML1-push", "ML1-pick-place", "ML10", "ML45"]
    assert "unavailable" not in out


def test_envs_splits_prints_fixed_tasks(tmp_path):
    out = run_cli(["envs", "--splits", "HalfCheetahVel"], cwd=tmp_path).stdout.splitlines()
    assert out[0].split("\t")[:2] == ["test", "0"]
    assert sum(line.startswith("ood\t") for line in out) == 20
    assert sum(line.startswith("sweep\t") for line in out) == 41


def test_help_and_settings(tmp_path):
    for command in ("train", "evaluate", "bench", "config", "envs", "settings"):
        assert "usage: metarl " + command in run_cli([command, "--help"], cwd=tmp_path).stdout
    out = run_cli(["settings", "--algo", "random"], cwd=tmp_path).stdout
    for key in ("total_env_steps", "eval_every", "eval_tasks", "checkpoint_every", "device", "threads",
                "meta_batch_size"):
        assert f"  {key} " in out
    assert "random" in run_cli(["algos"], cwd=tmp_path).stdout
    # list-valued settings (dataclass default_factory) show their real default
    out = run_cli(["settings", "--algo", "maml_trpo"], cwd=tmp_path).stdout
    assert re.search(r"^  hidden_sizes .* default \[64, 64\] ", out, re.M), out


def test_no_command_is_usage_error(tmp_path):
    assert run_cli([], cwd=tmp_path, check=False).returncode == 2


def test_bench_csv_format(tmp_path):
    out = run_cli(["bench", "--env", "PointNav", "--steps", "400", "--slots", "4", "--format", "csv"],
                  cwd=tmp_path).stdout.splitlines()
    assert out[0] == "benchmark,measure,value,unit,ratio,relative_to"
    rows = [line.split(",") for line in out[1:]]
    assert [r[1] for r in rows] == ["raw", "sampler_random", "sampler_mlp"]
    assert all(r[0] == "PointNav" and float(r[2]) > 0 and r[3] == "steps/s" and r[5] == "raw" for r in rows)
    assert rows[0][4] == "1"


def test_bench_algo_rows_shares_and_flop_rate(tmp_path):
    out = run_cli(["bench", "--env", "PointNav", "--steps", "400", "--slots", "4", "--algo", "rl2",
                   "--preset", "smoke", "--format", "csv"], cwd=tmp_path).stdout.splitlines()
    rows = {r[1]: r for r in (line.split(",") for line in out[1:])}
    assert rows["matmul_peak"][3] == "GFLOP/s" and float(rows["matmul_peak"][2]) > 0
    shares = [float(rows[f"rl2_share_{k}"][2]) for k in ("simulate", "policy", "sampler", "update")]
    assert all(0 < x < 1 for x in shares) and sum(shares) == pytest.approx(1.0, abs=2e-3)
    flops = rows["rl2_update_flops"]
    assert flops[3] == "GFLOP/s" and flops[5] == "matmul_peak" and 0 < float(flops[4]) < 1
    assert float(flops[4]) == pytest.approx(float(flops[2]) / float(rows["matmul_peak"][2]), rel=0.01)
    bad = run_cli(["bench", "--env", "Nope"], cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "unknown benchmark 'Nope'" in bad.stderr
