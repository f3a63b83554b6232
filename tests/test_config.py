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
    ({"total_env_steps": "lots"}, "setting 'total_env_steps': expected int >= 1, got 'lots'"),
    ({"total_env_steps": 2.5}, "expected int"),
    ({"threads": True}, "expected int"),
    ({"device": "tpu"}, "expected one of 'auto', 'cpu', 'cuda'"),
    ({"threads": 0}, "setting 'threads': expected int >= 1, got 0"),
    ({"eval_every": -1}, "setting 'eval_every': expected int >= 0, got -1"),
    ({"meta_batch_size": 0}, "setting 'meta_batch_size': expected int >= 1, got 0"),
    ({"total_env_steps": "1e30"}, "setting 'total_env_steps': '1e30' is out of range"),
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
    from metarl.setup import prepare

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


# ----------------------------------------------------------------------------- issue 21: values
# Every bad value is one line on stderr naming the key, exit code 2, before anything is written.

TRMRL = ["--algo", "trmrl", "--env", "PointNav", "--seed", "1", "--preset", "smoke"]


@pytest.mark.parametrize("args,message", [
    (TRMRL + ["--set", "discount=nan"], "setting 'discount': expected a finite number, got 'nan'"),
    (TRMRL + ["--set", "clip=nan"], "setting 'clip': expected a finite number"),
    (TRMRL + ["--set", "clip=.nan"], "setting 'clip': expected a finite number"),
    (TRMRL + ["--set", "policy_lr=nan"], "setting 'policy_lr': expected a finite number"),
    (TRMRL + ["--set", "policy_lr=-1"], "setting 'policy_lr': expected float > 0, got -1"),
    (TRMRL + ["--set", "policy_lr=0"], "setting 'policy_lr': expected float > 0, got 0"),
    (TRMRL + ["--set", "policy_lr=inf"], "setting 'policy_lr': expected a finite number"),
    (TRMRL + ["--set", "vf_lr=-.inf"], "setting 'vf_lr': expected a finite number"),
    (TRMRL + ["--set", "discount=1e400"], "setting 'discount': expected a finite number"),
    (TRMRL + ["--set", "discount=0"], "setting 'discount': expected float in (0, 1], got 0"),
    (TRMRL + ["--set", "discount=1.5"], "setting 'discount': expected float in (0, 1], got 1.5"),
    (TRMRL + ["--set", "gae_lambda=-0.1"], "setting 'gae_lambda': expected float in [0, 1]"),
    (TRMRL + ["--set", "window=0"], "setting 'window': expected int >= 1, got 0"),
    (TRMRL + ["--set", "window=nan"], "setting 'window': expected a finite number"),
    (TRMRL + ["--set", "window=inf"], "setting 'window': expected a finite number"),
    (TRMRL + ["--set", "heads=3"], "settings 'd_model' and 'heads': d_model (16) must be a multiple of heads (3)"),
    (TRMRL + ["--set", "d_model=30", "--set", "heads=4"], "d_model (30) must be a multiple of heads (4)"),
    (TRMRL + ["--set", "threads=1" + "0" * 24], "setting 'threads':"),
    (TRMRL + ["--set", "total_env_steps=inf"], "setting 'total_env_steps': expected a finite number"),
    (TRMRL + ["--threads", "0"], "setting 'threads': expected int >= 1, got 0"),
    (["--algo", "trmrl", "--env", "PointNav", "--seed", str(10**25)], "argument --seed: must be an integer from 0 to 2**32-1"),
    (["--algo", "trmrl", "--env", "PointNav", "--seed", "-1"], "argument --seed: must be an integer from 0 to 2**32-1"),
    (["--algo", "trmrl", "--env", "PointNav", "--seed", str(2**32)], "argument --seed: must be an integer from 0 to 2**32-1"),
    (["--algo", "varibad", "--env", "PointNav", "--seed", "1", "--set", "policy_layers=[64,nan]"],
     "setting 'policy_layers': expected a list of int >= 1, got [64, 'nan']"),
    (["--algo", "varibad", "--env", "PointNav", "--seed", "1", "--set", "reward_decoder_layers=[64,.inf]"],
     "setting 'reward_decoder_layers': expected a list of int >= 1"),
    (["--algo", "varibad", "--env", "PointNav", "--seed", "1", "--set", "policy_layers=[]"],
     "setting 'policy_layers': needs at least one layer"),
    (["--algo", "varibad", "--env", "PointNav", "--seed", "1", "--set", "max_grad_norm=0"],
     "setting 'max_grad_norm': expected float > 0, got 0"),
    (["--algo", "maml_trpo", "--env", "PointNav", "--seed", "1", "--set", "hidden_sizes=64,0"],
     "setting 'hidden_sizes': expected a list of int >= 1, got '64,0'"),
    (["--algo", "maml_trpo", "--env", "PointNav", "--seed", "1", "--set", "hidden_sizes=[]"],
     "setting 'hidden_sizes': the policy needs at least one hidden layer"),
    (["--algo", "maml_trpo", "--env", "PointNav", "--seed", "1", "--set", "backtrack_ratio=1"],
     "setting 'backtrack_ratio': expected float in (0, 1), got 1"),
    (["--algo", "rl2", "--env", "PointNav", "--seed", "1", "--set", "min_std=2", "--set", "max_std=1.5"],
     "settings 'min_std' and 'max_std': min_std (2) must not exceed max_std (1.5)"),
    (["--algo", "rl2", "--env", "PointNav", "--seed", "1", "--set", "minibatch_trials=0"],
     "setting 'minibatch_trials': expected int >= 1, got 0"),
    (["--algo", "pearl", "--env", "PointNav", "--seed", "1", "--set", "prior_episodes=0"],
     "settings 'prior_episodes' and 'posterior_episodes'"),
    (["--algo", "pearl", "--env", "PointNav", "--seed", "1", "--set", "soft_target_tau=nan"],
     "setting 'soft_target_tau': expected a finite number"),
])
def test_config_command_rejects_bad_values(tmp_path, monkeypatch, capsys, args, message):
    from metarl.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "resolved.yaml"
    assert main(["config", *args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("metarl: error:") and message in lines[0], lines[0]
    assert captured.out == "" and list(tmp_path.iterdir()) == []


def test_train_with_nan_setting_writes_nothing(tmp_path, monkeypatch, capsys):
    """The issue's case: `train --set discount=nan` used to train to the end on NaNs, exit 0."""
    from metarl.cli import main

    monkeypatch.chdir(tmp_path)
    run_dir, ckpt_dir = tmp_path / "run", tmp_path / "ckpt"
    code = main(["train", *TRMRL, "--set", "discount=nan", "--run-dir", str(run_dir), "--ckpt-dir", str(ckpt_dir),
                 "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "setting 'discount'" in err[0], err
    assert not run_dir.exists() and not ckpt_dir.exists() and list(tmp_path.iterdir()) == []


def test_resolve_rejects_out_of_range_seed():
    for seed in (-1, 2**32, 10**25, True, 1.5):
        with pytest.raises(UsageError, match=r"seed must be an integer from 0 to 2\*\*32-1"):
            cfg.resolve("random", "PointNav", seed, "smoke")
    assert cfg.resolve("random", "PointNav", 2**32 - 1, "smoke")["seed"] == 2**32 - 1


def test_seed_from_config_file_is_checked(tmp_path, capsys):
    from metarl.cli import main

    f = tmp_path / "run.yaml"
    f.write_text(f"algo: random\nenv: PointNav\nseed: {10**25}\n")
    assert main(["config", "--config", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed must be an integer from 0 to 2**32-1" in err[0]


@pytest.mark.parametrize("kind", ["directory", "binary", "latin-1", "control-characters", "unreadable"])
def test_unusable_config_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys, kind):
    import builtins
    import os

    from metarl.cli import main

    path = tmp_path / "settings.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "latin-1":
        path.write_bytes("discount: 0.9  # \u00b5\n".encode("latin-1"))
    elif kind == "control-characters":  # valid UTF-8, but not YAML
        path.write_bytes(b"\x00\x01\x02\x03discount: 0.9\n")
    else:
        path.write_text("discount: 0.9\n")
        path.chmod(0)
        if os.access(path, os.R_OK):  # root reads anything: refuse it as the OS would

            def refuse(file, *args, **kwargs):
                if str(file) == str(path):
                    raise PermissionError(13, "Permission denied", str(file))
                return builtins.open(file, *args, **kwargs)

            monkeypatch.setattr(cfg, "open", refuse, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["config", "--algo", "trmrl", "--env", "PointNav", "--seed", "1", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("metarl: error: config file ") and str(path) in lines[0], lines[0]
    assert captured.out == "" and list(work.iterdir()) == []


def test_range_and_aliases():
    r = cfg.Range(gt=0, le=1)
    assert r.contains(1) and r.contains(1e-9) and not r.contains(0) and not r.contains(1.5)
    assert str(r) == "in (0, 1]" and str(cfg.Range(ge=1)) == ">= 1" and str(cfg.Range(gt=0)) == "> 0"
    assert str(cfg.Range(ge=0, lt=1)) == "in [0, 1)" and str(cfg.Range(le=2.5)) == "<= 2.5"
    with pytest.raises(TypeError):
        cfg.Range(gt=0, ge=0)
    assert cfg.coerce("k", "2e6", cfg.PositiveInt) == 2_000_000
    assert cfg.coerce("k", "9007199254740993", cfg.PositiveInt) == 9007199254740993  # exact beyond 2**53
    assert cfg.coerce("k", 1, cfg.Discount) == 1.0 and isinstance(cfg.coerce("k", 1, cfg.Discount), float)
    assert cfg.coerce("k", "[1, 2]", list[cfg.PositiveInt]) == [1, 2]
    assert cfg.coerce("k", 0, cfg.Fraction) == 0.0
    for bad, tp in ((0, cfg.PositiveInt), (-1, cfg.NonNegativeInt), (0.0, cfg.PositiveFloat), (-1e-9, cfg.NonNegativeFloat),
                    (1.01, cfg.Fraction), (0, cfg.Discount), ("nan", float), (float("inf"), float), (float("nan"), int),
                    (10**19, int), ("[1, nan]", list[int]), ("[1, 0]", list[cfg.PositiveInt]), ("[1,", list[int])):
        with pytest.raises(UsageError, match="setting 'k'"):
            cfg.coerce("k", bad, tp)


def _config_classes():
    from metarl.registry import algorithms, get_agent_class

    classes = {"RunSettings": cfg.RunSettings}
    for name in sorted(algorithms()):
        classes[name] = get_agent_class(name).Config
    return classes


def test_every_numeric_setting_declares_a_range():
    """Each int/float field (list elements included) of RunSettings and every registered
    algorithm's Config is `Annotated` with a `Range`; a new field without one fails here."""
    import typing

    missing = []
    for owner, cls in _config_classes().items():
        for key, tp in cfg.field_types(cls).items():
            base = cfg.base_type(tp)
            if typing.get_origin(base) in (list, tuple):
                tp = typing.get_args(base)[0]
                base = cfg.base_type(tp)
            if base in (int, float) and cfg.range_of(tp) is None:
                missing.append(f"{owner}.{key}")
    assert missing == []


def test_every_default_is_within_its_range():
    for owner, cls in _config_classes().items():
        types = cfg.field_types(cls)
        defaults = cls()
        for key, tp in types.items():
            cfg.check_ranges(key, getattr(defaults, key), tp)
        defaults.check()


def test_every_shipped_preset_still_resolves():
    """The ranges and cross-setting checks reject none of config/algos/*.yaml and
    config/budgets.yaml: every (algorithm, benchmark, preset) resolves (Meta-World included; no
    environment is built)."""
    from metarl.envs import BENCHMARK_IDS
    from metarl.registry import algorithms

    failed = []
    for algo in sorted(algorithms()):
        for env in BENCHMARK_IDS:
            for preset in cfg.PRESETS:
                try:
                    cfg.resolve(algo, env, 1, preset)
                except UsageError as exc:
                    failed.append(f"{algo} {env} {preset}: {exc}")
    assert failed == []
    assert len(algorithms()) >= 6


def test_settings_listing_shows_ranges_and_help():
    """`describe` reads each field's trailing comment through the `Annotated` annotations."""
    from trmrl.agent import TrMRLConfig

    rows = {key: (type_name, default, text) for key, type_name, default, text in cfg.describe(TrMRLConfig)}
    assert rows["discount"] == ("float in (0, 1]", 0.9, "γ over the concatenated trial")
    assert rows["gae_lambda"] == ("float in [0, 1]", 0.8, "GAE λ")
    assert rows["window"] == ("int >= 1", 5, "working-memory length: last N tokens of the current episode")
    assert rows["meta_batch_size"][0] == "int >= 1" and rows["meta_batch_size"][2].startswith("tasks")
    assert rows["layernorm"][0] == "one of 'none', 'post', 'pre'"
    for owner, cls in _config_classes().items():
        for key, _, _, text in cfg.describe(cls):
            assert text, f"{owner}.{key} has no help comment"
    from baselines.maml_trpo import MAMLTRPOConfig

    rows = {key: (type_name, default, text) for key, type_name, default, text in cfg.describe(MAMLTRPOConfig)}
    assert rows["hidden_sizes"][:2] == ("a list of int >= 1", [64, 64])
    assert rows["backtrack_ratio"] == ("float in (0, 1)", 0.8, "line-search shrink factor")
