"""Training runs end to end: complete run directories, byte-identical reruns, exact resume after
SIGKILL or SIGTERM, corrupt checkpoints refused, evaluation of saved runs."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from metarl.runs import ckpt_dir_for, run_dir_for

from conftest import files_of, popen_cli, run_cli

SMOKE = ["train", "--algo", "random", "--env", "HalfCheetahVel", "--seed", "1", "--preset", "smoke"]
RUN = run_dir_for("HalfCheetahVel", "random", "default", 1)
CKPT = ckpt_dir_for(RUN) / "state.ckpt"
ALL_FILES = ("config.yaml", "metadata.json", "progress.csv", "eval.csv", "timings.csv", "model.pt")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    """An uninterrupted smoke run of the random agent on HalfCheetahVel."""
    work = tmp_path_factory.mktemp("reference")
    run_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=work)
    return files_of(work / RUN, ("progress.csv", "eval.csv", "model.pt", "config.yaml"))


def test_complete_run_directory(tmp_path):
    run_cli(SMOKE, cwd=tmp_path)
    run = tmp_path / RUN
    for name in ALL_FILES:
        assert (run / name).is_file(), name
    assert not (tmp_path / CKPT).exists()  # resume state removed once finished
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["algo"] == "random" and config["total_env_steps"] == 8000
    meta = json.loads((run / "metadata.json").read_text())
    for key in ("git_commit", "git_dirty", "packages", "python", "platform", "device", "threads"):
        assert key in meta
    assert meta["packages"]["torch"].startswith("2.13.0") and meta["device"] == "cpu" and meta["threads"] == 1
    progress = (run / "progress.csv").read_text().splitlines()
    assert progress[0] == "iteration,env_steps,train_return,train_return_first,train_return_last"
    assert progress[-1].startswith("10,8000,")
    evals = (run / "eval.csv").read_text().splitlines()
    assert evals[0] == "iteration,env_steps,split,task,episode,return,success,scored,task_label,task_value"
    # HalfCheetahVel: every episode scored, the task's label and its one parameter (the target velocity)
    first = evals[1].split(",")
    assert first[7] == "1" and first[8].startswith("v=") and float(first[9]) == pytest.approx(float(first[8][2:]), abs=1e-4)
    meta_bench = meta["benchmark"]
    assert meta_bench["exploration_episodes"] == 0 and meta_bench["eval_episodes"] == 6
    assert meta_bench["train_range"] == [0.0, 3.0] and "ood" in meta_bench["split_notes"]
    # 4 eval tasks x 6 episodes at iterations 0, 5 and 10
    assert len(evals) == 1 + 3 * 4 * 6
    assert {line.split(",")[0] for line in evals[1:]} == {"0", "5", "10"}
    # a second call finds the run finished and does nothing
    again = run_cli(SMOKE, cwd=tmp_path)
    assert "already complete" in again.stdout


def test_same_seed_same_bytes(tmp_path, reference):
    run_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=tmp_path)
    assert files_of(tmp_path / RUN, ("progress.csv", "eval.csv")) == {k: reference[k] for k in ("progress.csv", "eval.csv")}


def test_other_seed_other_bytes(tmp_path, reference):
    run_cli(SMOKE[:-4] + ["--seed", "2", "--preset", "smoke", "--set", "total_env_steps=16000"], cwd=tmp_path)
    run = tmp_path / run_dir_for("HalfCheetahVel", "random", "default", 2)
    assert (run / "progress.csv").read_bytes() != reference["progress.csv"]


def _wait_for(path: Path, proc, timeout=120.0):
    start = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - start < timeout
        time.sleep(0.02)


@pytest.mark.parametrize("delay", [0.0, 0.7])
def test_sigkill_then_resume_gives_same_bytes(tmp_path, reference, delay):
    proc = popen_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=tmp_path)
    _wait_for(tmp_path / CKPT, proc)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "finished before it could be killed; make the run longer"
    resumed = run_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=tmp_path)
    assert "resuming from iteration" in resumed.stderr
    assert files_of(tmp_path / RUN) == {k: reference[k] for k in ("progress.csv", "eval.csv")}


def test_sigterm_checkpoints_and_exits_75(tmp_path, reference):
    proc = popen_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=tmp_path)
    _wait_for(tmp_path / RUN / "progress.csv", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert (tmp_path / CKPT).exists() and not (tmp_path / RUN / "model.pt").exists()
    run_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=tmp_path)
    assert files_of(tmp_path / RUN, ("progress.csv", "eval.csv", "model.pt")) == {
        k: reference[k] for k in ("progress.csv", "eval.csv", "model.pt")}


def test_corrupt_checkpoint_is_reported_not_used(tmp_path):
    proc = popen_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=tmp_path)
    _wait_for(tmp_path / CKPT, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = tmp_path / CKPT
    data = bytearray(ckpt.read_bytes())
    data[-100] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    before = files_of(tmp_path / RUN)
    bad = run_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=tmp_path, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"metarl: error: corrupt checkpoint {CKPT}: checksum mismatch "
                                               "(delete it, or pass --restart)"]
    assert files_of(tmp_path / RUN) == before  # nothing touched
    ckpt.write_bytes(b"garbage")
    assert "not a metarl checkpoint" in run_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=tmp_path,
                                                check=False).stderr
    run_cli(SMOKE + ["--set", "total_env_steps=16000", "--restart"], cwd=tmp_path)
    assert (tmp_path / RUN / "model.pt").exists()


def test_changed_config_does_not_resume(tmp_path):
    proc = popen_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=tmp_path)
    _wait_for(tmp_path / CKPT, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    bad = run_cli(SMOKE + ["--set", "total_env_steps=24000"], cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "was made with another config" in bad.stderr


def test_evaluate_saved_run_on_ood(tmp_path):
    run_cli(["train", "--algo", "random", "--env", "PointNav", "--seed", "1", "--preset", "smoke"], cwd=tmp_path)
    run = tmp_path / run_dir_for("PointNav", "random", "default", 1)
    before = (run / "eval.csv").read_text()
    out = run_cli(["evaluate", "--run", str(run), "--split", "ood"], cwd=tmp_path)
    assert "[ood]" in out.stdout
    after = (run / "eval.csv").read_text()
    assert after.startswith(before)
    new = after[len(before):].splitlines()
    assert len(new) == 20 * 6 and all(line.split(",")[2] == "ood" for line in new)
    # idempotent: evaluating again replaces, never duplicates
    run_cli(["evaluate", "--run", str(run), "--split", "ood"], cwd=tmp_path)
    assert (run / "eval.csv").read_text() == after
    # to a separate file
    run_cli(["evaluate", "--run", str(run), "--split", "ood", "--out", "ood.csv"], cwd=tmp_path)
    assert (tmp_path / "ood.csv").read_text().splitlines()[1:] == new


@pytest.mark.parametrize("args,message", [
    (["--run", "nowhere"], "run directory not found: nowhere"),
    (["--run", "."], "has no config.yaml"),
])
def test_evaluate_bad_input(tmp_path, args, message):
    proc = run_cli(["evaluate", *args], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_evaluate_unknown_split_and_corrupt_model(tmp_path):
    run_cli(["train", "--algo", "random", "--env", "PointNav", "--seed", "1", "--preset", "smoke"], cwd=tmp_path)
    run = tmp_path / run_dir_for("PointNav", "random", "default", 1)
    proc = run_cli(["evaluate", "--run", str(run), "--split", "mars"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "has no split 'mars'" in proc.stderr
    (run / "model.pt").write_bytes(b"\x00" * 10)
    proc = run_cli(["evaluate", "--run", str(run), "--split", "ood"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "corrupt model file" in proc.stderr


def test_resume_after_outputs_deleted(tmp_path, reference):
    """A workflow manager deletes a failed job's outputs; the checkpoint (kept apart) restores them."""
    import shutil

    proc = popen_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=tmp_path)
    _wait_for(tmp_path / CKPT, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shutil.rmtree(tmp_path / RUN)
    run_cli(SMOKE + ["--set", "total_env_steps=16000"], cwd=tmp_path)
    assert files_of(tmp_path / RUN, ("progress.csv", "eval.csv", "config.yaml")) == {
        k: reference[k] for k in ("progress.csv", "eval.csv", "config.yaml")}


# ----------------------------------------------------------------------------- fill_batch (TrMRL)
# garage's LocalSampler, which TrMRL trains with, keeps starting trials (cycling over the
# iteration's tasks) until the iteration has meta_batch x episodes x episode_length steps.

ANT = ["train", "--algo", "trmrl", "--env", "AntDir", "--seed", "1", "--preset", "smoke"]
ANT_RUN = run_dir_for("AntDir", "trmrl", "default", 1)
ANT_FULL = 2 * 2 * 200  # smoke meta_batch 2 x 2 episodes x 200 steps


def _iteration_steps(progress: bytes) -> list[int]:
    steps = [int(line.split(b",")[1]) for line in progress.splitlines()[1:]]
    return [b - a for a, b in zip([0] + steps, steps)]


@pytest.fixture(scope="module")
def ant_reference(tmp_path_factory) -> dict[str, bytes]:
    work = tmp_path_factory.mktemp("ant")
    run_cli(ANT, cwd=work)
    return files_of(work / ANT_RUN, ("progress.csv", "eval.csv", "config.yaml"))


def _trmrl_setup(env: str, **overrides):
    from metarl import config as cfg
    from metarl.setup import prepare

    return prepare(cfg.resolve("trmrl", env, 1, "smoke", overrides={"device": "cpu", **overrides}))


def test_fill_batch_adds_trials_in_task_order_until_the_batch_is_full():
    import math

    import numpy as np

    from metarl.setup import build_agent
    from metarl.training import TrainSampler

    setup = _trmrl_setup("AntDir")
    bench = setup.benchmark
    assert setup.agent_config.fill_batch  # TrMRL's presets turn the rule on
    on = TrainSampler.for_agent(bench, 1, setup.agent_config)
    off = TrainSampler(bench, 1, 2)
    assert (on.min_steps, off.min_steps) == (ANT_FULL, 0)
    extra_seen = False
    try:
        for iteration in (1, 2, 3):
            agent_on, agent_off = build_agent(setup), build_agent(setup)  # identical agents
            plain = off.sample(agent_off, iteration)
            full = on.sample(agent_on, iteration)
            assert plain.n == 2  # off: exactly meta_batch trials, as every other algorithm
            assert full.env_steps >= ANT_FULL
            extra = full.n - 2
            if plain.env_steps >= ANT_FULL:
                assert extra == 0
                continue
            extra_seen = True
            # the first meta_batch trials are those of the plain sampler
            for name in ("tokens", "actions", "rewards", "lengths", "episode_returns"):
                np.testing.assert_array_equal(getattr(full, name)[:2], getattr(plain, name), err_msg=name)
            assert full.tasks[:2] == plain.tasks
            # extra trial k runs in task k mod meta_batch, with its own reset noise
            for k in range(extra):
                assert full.tasks[2 + k] == plain.tasks[k % 2]
                assert not np.array_equal(full.obs[2 + k, 0], full.obs[k % 2, 0])
            # it stops as soon as the count is reached
            assert full.env_steps - int(full.lengths[-1]) < ANT_FULL
            # the update takes the larger batch; its gradient steps (and so the lr schedule) follow it
            c = agent_on.config
            metrics = agent_on.update(full)
            assert all(math.isfinite(v) for v in metrics.values())
            assert agent_on.policy_sched.last_epoch == c.ppo_epochs * math.ceil(full.env_steps / c.minibatch_size)
    finally:
        on.close()
        off.close()
    assert extra_seen, "no episode terminated early in 3 iterations: pick other iterations"


def test_fill_batch_on_antdir_every_iteration_is_full(tmp_path, ant_reference):
    assert b"fill_batch: true" in ant_reference["config.yaml"]
    assert all(s >= ANT_FULL for s in _iteration_steps(ant_reference["progress.csv"]))
    run_cli(ANT + ["--set", "fill_batch=false"], cwd=tmp_path)
    off = _iteration_steps((tmp_path / ANT_RUN / "progress.csv").read_bytes())
    assert min(off) < ANT_FULL  # falls shrink the batch without the rule


def test_fill_batch_sigkill_then_resume_gives_same_bytes(tmp_path, ant_reference):
    ckpt = tmp_path / ckpt_dir_for(ANT_RUN) / "state.ckpt"
    proc = popen_cli(ANT, cwd=tmp_path)
    _wait_for(ckpt, proc)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "finished before it could be killed; make the run longer"
    resumed = run_cli(ANT, cwd=tmp_path)
    assert "resuming from iteration" in resumed.stderr
    assert files_of(tmp_path / ANT_RUN) == {k: ant_reference[k] for k in ("progress.csv", "eval.csv")}


@pytest.mark.parametrize("env,steps", [("PointNav", 2000), ("HalfCheetahVel", 2400)])
def test_fill_batch_changes_nothing_where_no_episode_ends_early(tmp_path, env, steps):
    import torch

    run = run_dir_for(env, "trmrl", "default", 1)
    runs = {}
    for flag in ("true", "false"):
        work = tmp_path / flag
        work.mkdir()
        run_cli(["train", "--algo", "trmrl", "--env", env, "--seed", "1", "--preset", "smoke",
                 "--set", f"fill_batch={flag}", "--set", f"total_env_steps={steps}"], cwd=work)
        runs[flag] = work / run
    assert files_of(runs["true"]) == files_of(runs["false"])
    on, off = (torch.load(runs[f] / "model.pt", weights_only=False)["state"] for f in ("true", "false"))
    for part in on:
        for name, tensor in on[part].items():
            assert torch.equal(tensor, off[part][name]), (part, name)
