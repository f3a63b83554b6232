"""Config resolution and validation: presets layer as documented; bad input is one line,
exit code 2, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarl import config as cfg
from metarl.errors import UsageError

from conftest import run_cli


def test_layering_budget_then_algo_then_overrides(tmp_path):
    r = cfg.resolve("random", "PointNav", 1, "smoke")
    assert r["total_env_steps"] == 2000 and r["meta_batch_size"] == 2
    assert list(r)[:5] == ["algo", "env", "seed", "preset", "variant"]
    r = cfg.resolve("random", "ML10", 1, "smoke")
    assert r["meta_batch_size"] == 10  # overrides[ML10][smoke]
    r = cfg.resolve("random", "ML45", 1, "paper")
    assert r["meta_batch_size"] == 45 and r["total_env_steps"] == 50_000_000
    f = tmp_path / "run.yaml"
    f.write_text("eval_every: 3\nmeta_batch_size: 4\n")
    r = cfg.resolve("random", "PointNav", 1, "smoke", config_file=f, overrides={"meta_batch_size": 6, "device": "cpu"})
    assert (r["eval_every"], r["meta_batch_size"], r["device"]) == (3, 6, "cpu")


@pytest.mark.parametrize("key,value,expected", [
    ("total_env_steps", "2e6", 2_000_000),
    ("total_env_steps", 3.0, 3),
    ("threads", "2", 2),
    ("device", "cpu", "cpu"),
])
def test_values_coerced(key, value, expected):
    assert cfg.resolve("random", "PointNav", 1, "smoke", overrides={key: value})[key] == expected


@pytest.mark.parametrize("overrides,message", [
    ({"learning_rate": 1}, "unknown setting 'learning_rate'"),
    ({"total_env_steps": "lots"}, "setting 'total_env_steps': expected int, got 'lots'"),
    ({"total_env_steps": 2.5}, "expected int"),
    ({"threads": True}, "expected int"),
    ({"device": "tpu"}, "expected one of 'auto', 'cpu', 'cuda'"),
    ({"threads": 0}, "must be at least 1"),
    ({"eval_every": -1}, "must be 0 or more"),
    ({"seed": 3}, "part of the run's identity"),
])
def test_bad_settings(overrides, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cfg.resolve("random", "PointNav", 1, "smoke", overrides=overrides)


def test_unknown_ids():
    with pytest.raises(UsageError, match="unknown algorithm 'nope'"):
        cfg.resolve("nope", "PointNav", 1)
    with pytest.raises(UsageError, match="unknown benchmark 'Nope'"):
        cfg.resolve("random", "Nope", 1)
    with pytest.raises(UsageError, match="unknown preset"):
        cfg.resolve("random", "PointNav", 1, "huge")


def test_parse_set():
    assert cfg.parse_set(["a=1", "b=x", "c=1.5", "d=true"]) == {"a": 1, "b": "x", "c": 1.5, "d": True}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        cfg.parse_set(["novalue"])


@pytest.mark.parametrize("args,message", [
    (["--algo", "nope", "--env", "PointNav", "--seed", "1"], "unknown algorithm 'nope'"),
    (["--algo", "random", "--env", "Moon", "--seed", "1"], "unknown benchmark 'Moon'"),
    (["--algo", "random", "--env", "PointNav", "--seed", "1", "--set", "bogus=1"], "unknown setting 'bogus'"),
    (["--algo", "random", "--env", "PointNav", "--seed", "1", "--set", "eval_every=x"], "expected int"),
    (["--algo", "random", "--env", "PointNav", "--seed", "x"], "invalid int value"),
    (["--algo", "random", "--env", "PointNav"], "missing --seed"),
    (["--algo", "random", "--env", "PointNav", "--seed", "1", "--config", "missing.yaml"], "config file not found"),
    (["--algo", "random", "--env", "ML10", "--seed", "1", "--set", "meta_batch_size=7"], "must be a multiple of 10"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args, message):
    proc = run_cli(["train", *args], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("metarl: error:") and message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_config_command_prints_resolved_yaml(tmp_path):
    proc = run_cli(["config", "--algo", "random", "--env", "PointNav", "--seed", "2", "--preset", "quick",
                    "--set", "threads=2"], cwd=tmp_path)
    assert "seed: 2\n" in proc.stdout and "threads: 2\n" in proc.stdout and "total_env_steps: 200000\n" in proc.stdout


def test_random_agent_has_every_benchmark_and_preset():
    from metarl.envs import BENCHMARK_IDS
    from metarl.training import prepare

    for env in BENCHMARK_IDS:
        for preset in cfg.PRESETS:
            setup = prepare(cfg.resolve("random", env, 1, preset))
            assert setup.agent_config.meta_batch_size % setup.benchmark.task_multiple == 0
            assert setup.run.total_env_steps >= 1


def test_presets_files_only_hold_known_keys():
    """Budgets hold harness settings only; algorithm files hold that algorithm's settings only."""
    import yaml

    budgets = yaml.safe_load((cfg.config_dir() / "budgets.yaml").read_text())
    harness = set(cfg.field_types(cfg.RunSettings))
    for env, presets in budgets.items():
        assert set(presets) == set(cfg.PRESETS), env
        for values in presets.values():
            assert set(values) <= harness
