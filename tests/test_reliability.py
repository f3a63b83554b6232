"""Nothing silent (issue 21): one writer per run, `metarl verify` on injected corruptions, the
workflow's collect step refusing them, faults of the machine (read-only and full results
directories), and temporary files never left behind."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, files_of, popen_cli, run_cli
from metarl import runs
from metarl.errors import EXIT_IO, EXIT_LOCKED, EXIT_PROBLEMS, EXIT_USAGE
from metarl.verify import COMPLETE, CORRUPT, EDITED, INCOMPLETE, MISSING, check_run, eval_schedule

RUN = Path("results/runs/PointNav/random/default/seed1")
TRAIN = ["train", "--algo", "random", "--env", "PointNav", "--seed", "1", "--preset", "smoke", "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished smoke run of the random agent on PointNav, with an OOD evaluation file."""
    root = tmp_path_factory.mktemp("finished")
    run_cli(TRAIN, root)
    run_cli(["evaluate", "--run", str(RUN), "--split", "ood", "--out", str(RUN / "eval_ood.csv")], root)
    return root


@pytest.fixture
def results(finished, tmp_path) -> Path:
    """A private copy of the finished run's results directory, to corrupt."""
    shutil.copytree(finished / "results", tmp_path / "results")
    return tmp_path


# ----------------------------------------------------------------------------- one writer per run


def _wait_for(predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_second_writer_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path):
    long_run = ["train", "--algo", "trmrl", "--env", "PointNav", "--seed", "1", "--preset", "quick", "--quiet"]
    run_dir = tmp_path / "results/runs/PointNav/trmrl/default/seed1"
    lock = tmp_path / "results/ckpt/PointNav/trmrl/default/seed1" / runs.LOCK_NAME
    first = popen_cli(long_run, tmp_path)
    try:
        assert _wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid)
                         and (run_dir / "progress.csv").is_file()), "the first process never took the lock"
        second = run_cli(long_run, tmp_path, check=False)
        assert second.returncode == EXIT_LOCKED
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {first.pid}" in lines[0]
        assert str(run_dir.relative_to(tmp_path)) in lines[0]
        assert first.poll() is None  # the holder is untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel dropped the dead holder's lock: the next process takes it and trains to the end
    third = run_cli(["train", "--algo", "trmrl", "--env", "PointNav", "--seed", "1", "--preset", "smoke",
                     "--quiet", "--restart"], tmp_path, check=False)
    assert third.returncode == 0, third.stderr
    assert lock.read_text().strip() != str(first.pid)
    progress = (run_dir / "progress.csv").read_text().splitlines()
    assert sum(line.startswith("iteration,") for line in progress) == 1
    assert check_run(run_dir).status == COMPLETE


def test_evaluate_into_a_locked_runs_eval_csv_is_refused(results):
    holder = runs.RunLock(results / "results/ckpt/PointNav/random/default/seed1", results / RUN)
    script = ("import sys, time; from pathlib import Path; from metarl.runs import RunLock; "
              "RunLock(Path(sys.argv[1]), Path(sys.argv[2])).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(holder.path.parent), str(results / RUN)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "held"
        before = (results / RUN / "eval.csv").read_bytes()
        out = run_cli(["evaluate", "--run", str(RUN), "--split", "ood"], results, check=False)
        assert out.returncode == EXIT_LOCKED and f"pid {proc.pid}" in out.stderr
        assert (results / RUN / "eval.csv").read_bytes() == before
    finally:
        proc.kill()
        proc.wait()


def test_evaluate_into_the_runs_eval_csv_keeps_its_record(results):
    run_cli(["evaluate", "--run", str(RUN), "--split", "ood"], results)
    assert check_run(results / RUN).status == COMPLETE  # the appended split's record followed


# ----------------------------------------------------------------------------- verify


def _duplicate_last_rows(run_dir):
    text = (run_dir / "eval.csv").read_text()
    (run_dir / "eval.csv").write_text(text + "".join(text.splitlines(keepends=True)[-2:]))


def _plausible_extra_rows(run_dir):
    # two rows of a task that does not exist, with ordinary returns: the probe that moved an IQM
    with open(run_dir / "eval.csv", "a") as f:
        f.write("25,2000,test,20,0,-1.5,,1,angle=0.5000,0.5\n25,2000,test,20,5,-1.0,,1,angle=0.5000,0.5\n")


def _garbage_line(name):
    def corrupt(run_dir):
        with open(run_dir / name, "a") as f:
            f.write("garbage\n")
    return corrupt


def _second_writer(run_dir):
    # what two processes on one run left before the lock: the whole file twice
    text = (run_dir / "progress.csv").read_text()
    (run_dir / "progress.csv").write_text(text + text)


def _edit_a_value(run_dir):
    lines = (run_dir / "eval.csv").read_text().splitlines(keepends=True)
    fields = lines[5].split(",")
    fields[5] = str(float(fields[5]) + 1.0)
    lines[5] = ",".join(fields)
    (run_dir / "eval.csv").write_text("".join(lines))


def _cut_last_line(run_dir):
    text = (run_dir / "eval.csv").read_text()
    (run_dir / "eval.csv").write_text(text[:-7])


def _unlink(name):
    def corrupt(run_dir):
        (run_dir / name).unlink()
    return corrupt


def _edit_ood(run_dir):
    text = (run_dir / "eval_ood.csv").read_text()
    (run_dir / "eval_ood.csv").write_text(text.replace("-", "-1", 1))


def _corrupt_model(run_dir):
    (run_dir / "model.pt").write_bytes(b"not a model")


def _missing_iteration(run_dir):
    lines = (run_dir / "progress.csv").read_text().splitlines(keepends=True)
    (run_dir / "progress.csv").write_text("".join(lines[:3] + lines[4:]))


def _no_model(run_dir):
    (run_dir / "model.pt").unlink()


CORRUPTIONS = {
    "duplicated rows": (_duplicate_last_rows, CORRUPT, "appears twice"),
    "plausible extra rows": (_plausible_extra_rows, CORRUPT, "task 20"),
    "garbage in eval.csv": (_garbage_line("eval.csv"), CORRUPT, "eval.csv line"),
    "garbage in progress.csv": (_garbage_line("progress.csv"), CORRUPT, "progress.csv line"),
    "a second writer": (_second_writer, CORRUPT, "second header"),
    "an edited return": (_edit_a_value, EDITED, "SHA-256"),
    "a cut last line": (_cut_last_line, CORRUPT, "cut off"),
    "a missing iteration": (_missing_iteration, CORRUPT, "iteration 4, expected 3"),
    "deleted eval.csv": (_unlink("eval.csv"), MISSING, "eval.csv: missing"),
    "deleted eval_ood.csv": (_unlink("eval_ood.csv"), MISSING, "eval_ood.csv: missing"),
    "edited eval_ood.csv": (_edit_ood, EDITED, "eval_ood.csv"),
    "deleted metadata.json": (_unlink("metadata.json"), MISSING, "metadata.json: missing"),
    "corrupt model.pt": (_corrupt_model, CORRUPT, "model.pt"),
    "no model.pt": (_no_model, INCOMPLETE, "no model.pt"),
}


def test_verify_passes_an_intact_run(results):
    out = run_cli(["verify", "results"], results)
    assert out.stdout.splitlines() == [f"complete      {RUN}", "1 runs: 1 complete"]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_verify_finds_each_injected_corruption(results, name):
    corrupt, status, words = CORRUPTIONS[name]
    corrupt(results / RUN)
    out = run_cli(["verify", "results"], results, check=False)
    assert out.returncode == EXIT_PROBLEMS
    first = out.stdout.splitlines()[0]
    assert first == f"{status:13s} {RUN}"
    assert words in out.stdout
    fix = [line for line in out.stdout.splitlines() if line.strip().startswith("fix:")]
    assert len(fix) == 1
    if name.endswith("eval_ood.csv"):  # the command regenerates exactly that file
        assert f"metarl evaluate --run {RUN} --split ood --out {RUN}/eval_ood.csv" in fix[0]
        run_cli(["evaluate", "--run", str(RUN), "--split", "ood", "--out", str(RUN / "eval_ood.csv")], results)
        assert check_run(results / RUN).status == COMPLETE
    elif status == INCOMPLETE:
        assert "metarl train --config" in fix[0]
    else:
        assert "--forcerun" in fix[0] and "--restart" in fix[0]


def test_verify_regenerate_command_restores_the_same_bytes(results, finished):
    _edit_a_value(results / RUN)
    run_cli(["train", "--config", str(RUN / "config.yaml"), "--run-dir", str(RUN), "--restart", "--quiet"], results)
    assert files_of(results / RUN) == files_of(finished / RUN)
    assert check_run(results / RUN).status == COMPLETE


def test_eval_schedule_matches_training():
    assert eval_schedule(25, 10) == [0, 10, 20, 25]
    assert eval_schedule(20, 10) == [0, 10, 20]
    assert eval_schedule(7, 0) == [0, 7]


def test_verify_of_a_missing_directory_is_one_line(tmp_path):
    out = run_cli(["verify", str(tmp_path / "nope")], tmp_path, check=False)
    assert out.returncode == EXIT_USAGE and len(out.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- collect


@pytest.mark.parametrize("name", ["plausible extra rows", "garbage in eval.csv", "garbage in progress.csv",
                                  "an edited return"])
def test_workflow_verify_step_stops_naming_the_file(results, name):
    """The shell line of rule verify_runs: a corrupt run fails the step, and what it prints
    (Snakemake shows it) names the file and the command that regenerates the run."""
    CORRUPTIONS[name][0](results / RUN)
    rule = (REPO / "workflow" / "rules" / "summaries.smk").read_text()
    assert "metarl verify {params.runs} > {log} 2>&1" in rule
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    shell = (f"metarl verify {RUN} > verify.log 2>&1 && cp verify.log verified.txt"
             " || { grep -v '^complete ' verify.log >&2; exit 4; }")
    proc = subprocess.run(["bash", "-c", shell], cwd=results, capture_output=True, text=True, env=env)
    assert proc.returncode == EXIT_PROBLEMS and not (results / "verified.txt").exists()
    assert str(RUN) in proc.stderr and "fix:" in proc.stderr


def test_collect_reads_an_intact_run_without_the_suite(results):
    """collect.py needs only the run's files: it runs with `metarl` unimportable."""
    script = f"""
import sys
sys.modules["metarl"] = None  # any `import metarl...` now fails
sys.path.insert(0, {str(REPO / "workflow" / "scripts")!r})
import collect
table = collect.collect([{str(RUN / "eval.csv")!r}, {str(RUN / "eval_ood.csv")!r}], {{}})
table.to_parquet("table.parquet")
"""
    subprocess.run([sys.executable, "-c", script], cwd=results, check=True)
    import pandas as pd
    import yaml

    table = pd.read_parquet(results / "table.parquet")
    config = yaml.safe_load((results / RUN / "config.yaml").read_text())
    iterations = len((results / RUN / "progress.csv").read_text().splitlines()) - 1
    evaluations = len(eval_schedule(iterations, config["eval_every"]))
    assert len(table) == (evaluations + 1) * 20 * 6  # the schedule's test evaluations, and OOD once
    assert set(table["benchmark"]) == {"PointNav"} and set(table["algorithm"]) == {"random"}
    assert table["scored"].all() and table["task_label"].str.startswith("angle=").all()
    assert set(table.loc[table["split"] == "ood", "split_note"]) == {"goals on the lower half-circle"}
    assert table["last_episode"].sum() == (evaluations + 1) * 20 and (table["train_high"] > 3.14).all()


# ----------------------------------------------------------------------------- the machine's faults


def test_atomic_write_removes_its_temporary_on_a_full_disk(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs.os, "fsync", full)
    with pytest.raises(OSError):
        runs.atomic_write_text(tmp_path / "a.txt", "data")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_dead_processes_are_removed_on_the_next_start(results):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    ckpt = results / "results/ckpt/PointNav/random/default/seed1"
    stale = [results / RUN / f".eval.csv.tmp-{dead}", ckpt / f".state.ckpt.tmp-{dead}"]
    alive = results / RUN / f".eval.csv.tmp-{os.getpid()}x"  # not our pattern: left alone
    for p in stale + [alive]:
        p.write_text("partial")
    run_cli(TRAIN, results)  # "run already complete" still takes the lock and cleans up
    assert not any(p.exists() for p in stale) and alive.exists()


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                                 reason="needs root to mount a tmpfs")


@needs_mount
def test_read_only_results_directory_is_one_line(tmp_path):
    mnt = tmp_path / "results"
    if not _mount_tmpfs(mnt, "ro,size=1m"):
        pytest.skip("mount -t tmpfs not permitted here")
    try:
        out = run_cli(TRAIN, tmp_path, check=False)
        assert out.returncode == EXIT_IO
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "results" in lines[0] and "Read-only file system" in lines[0]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@needs_mount
def test_full_results_directory_is_one_line_loses_nothing_and_resumes(tmp_path, finished):
    mnt = tmp_path / "results"
    if not _mount_tmpfs(mnt, "size=48k"):
        pytest.skip("mount -t tmpfs not permitted here")
    try:
        out = run_cli(TRAIN + ["--set", "checkpoint_every=2"], tmp_path, check=False)
        assert out.returncode == EXIT_IO, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0] and "results/" in lines[0]
        leftovers = [p for p in mnt.rglob("*") if runs.TMP_MARK in p.name]
        assert leftovers == []
        assert check_run(tmp_path / RUN).status == INCOMPLETE
        # room again: the rerun resumes from the last whole checkpoint and ends as a clean run
        subprocess.run(["mount", "-o", "remount,size=50m", str(mnt)], check=True)
        run_cli(TRAIN + ["--set", "checkpoint_every=2"], tmp_path)
        assert files_of(tmp_path / RUN) == files_of(finished / RUN)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_garbage_eval_csv_given_to_evaluate_is_one_line(results):
    bad = results / "bad.csv"
    bad.write_bytes(b"\x00\x01binary\xff")
    out = run_cli(["evaluate", "--run", str(RUN), "--split", "ood", "--out", str(bad)], results, check=False)
    assert out.returncode == EXIT_USAGE and len(out.stderr.strip().splitlines()) == 1 and "bad.csv" in out.stderr
    assert bad.read_bytes() == b"\x00\x01binary\xff"
