"""The SLURM profile on a real one-node SLURM cluster (issue 7).

`tests/slurm/local-cluster start` brings up a private cluster with accounting (munge, MariaDB,
slurmdbd, slurmctld, slurmd on loopback; config in its own state directory, found by the client
tools through SLURM_CONF). The smoke pipeline then runs through `--workflow-profile
profiles/slurm` in a temporary copy of the repository, with only the profile's placeholders
overridden on the command line, while the same config runs locally (`--cores 2`) in another
copy. Checked:

- every train (and evaluate) job ran as a SLURM job: `sacct` lists them under the run's job
  name with the rule and wildcards in the job comment, as the executor plugin sets them;
- progress.csv, eval.csv (and the evaluate rule's eval_*.csv) of every run and every table are
  byte-identical to the local run's;
- preemption: one train job gets `scancel --signal=TERM` once its first checkpoint exists (the
  signal SLURM sends at a time limit, here to the job's steps only); metarl checkpoints and
  exits 75, the rule's `retries` runs it again, the new attempt resumes from the checkpoint (its
  log and metadata.json say from which iteration), and its files equal the uninterrupted local
  run's. Where the retry runs: the Snakemake inside the SLURM job (the jobstep executor) applies
  the rule's `retries` too, so with the batch step untouched it reruns the rule in the same
  allocation as a second job step (seen here); had the job itself ended (a time limit kills
  the batch step too), the workflow would resubmit it as a new SLURM job. Both are accepted.
  Not a plain `scancel`: sacct then reports the state as "CANCELLED by <uid>", which
  snakemake-executor-plugin-slurm 2.8.0 does not recognise as finished (it compares the state
  with "CANCELLED" exactly), so the workflow waits for that job forever.

Marked `slurm`: deselected by default and by `-m slow`; `make test-slurm` runs it (root, and apt
for the first start). .ci/run runs it after the main suite when the machine allows it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

from test_workflow import SNAKEMAKE, copy_repo  # noqa: E402

pytestmark = pytest.mark.slurm

SCRIPT = Path(__file__).resolve().parent / "local-cluster"
ACCOUNT, PARTITION = "metarl", "debug"  # what local-cluster creates
SMOKE = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())

# The run that is cancelled mid-training. Smoke runs are over in seconds, so the overlay below
# adds one longer variant of the ablation algorithm's run (30 iterations instead of 10,
# checkpoint every 2): a scancel after its first checkpoint lands mid-run. It is an ablation
# variant like any other (`--set total_env_steps=24000`), in the local run too.
LONG_STEPS = 24000
PREEMPT = (SMOKE["ablations"].get("benchmark", "HalfCheetahVel"), SMOKE["ablations"].get("algorithm", "trmrl"),
           f"total_env_steps-{LONG_STEPS}", str(SMOKE["ablations"]["seeds"][0]))


# Three of smoke's algorithms: every algorithm's jobs go through the same rules, so more of them
# prove nothing more about the profile, and each SLURM job costs the plugin's polling time (with
# all six the test took about twice as long, past its 20-minute budget on 2 cores).
ALGORITHMS = ["random", "trmrl", "rl2"]


def overlay_config(path: Path) -> Path:
    factors = list(SMOKE["ablations"]["factors"]) + [{"setting": "total_env_steps", "values": [8000, LONG_STEPS]}]
    path.write_text(yaml.safe_dump({"algorithms": ALGORITHMS, "ablations": {"factors": factors}}, sort_keys=False))
    return path


def slurm_overrides() -> list[str]:
    """Command-line options over profiles/slurm for this cluster. The shipped profile is used as
    it is; only its placeholders are replaced. A command-line option replaces the profile's
    whole key, so default-resources and set-resources are rebuilt from the profile's own."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.v8+.yaml").read_text())
    local = {"slurm_account": ACCOUNT, "slurm_partition": PARTITION}

    def value(key, v):
        return local.get(key, v)

    default = [f"{k}={value(k, v)}" for k, v in profile["default-resources"].items()]
    per_rule = {rule: {k: value(k, v) for k, v in res.items()} for rule, res in profile.get("set-resources", {}).items()}
    # The node has no GPU: the train jobs must not ask for one. The plugin adds --gpus=N only
    # when the `gpu` resource is > 0 (and --gres only when `gres` is set); smoke's config has
    # gpu: 0 already, this keeps it so whatever the config says.
    per_rule.setdefault("train", {})["gpu"] = 0
    per_rule["train"].pop("gres", None)
    sets = [f"{rule}:{k}={v}" for rule, res in per_rule.items() for k, v in res.items()]
    return [
        "--default-resources", *default,
        "--set-resources", *sets,
        # test speed only: poll job states every few seconds, not from 40 s up to 3 min
        "--slurm-init-seconds-before-status-checks", "5",
        "--slurm-keep-successful-logs",
    ]


def run(cmd, env=None, check=True, timeout=120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


# ----------------------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def cluster():
    """The local cluster's environment (SLURM_CONF); stopped afterwards, also on failure,
    unless it was already running before the test (then it is someone else's to stop)."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root")
    was_up = run([SCRIPT, "status"], check=False).returncode == 0
    try:
        started = run([SCRIPT, "start"], timeout=900)
        # SLURM_CONF, and PATH with its srun wrapper first (see local-cluster)
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", started.stdout, re.M))
        yield {**os.environ, "SLURM_CONF": exports["SLURM_CONF"],
               "PATH": exports["PATH"].replace("$PATH", os.environ["PATH"])}
    finally:
        if not was_up:
            run([SCRIPT, "stop"], check=False, timeout=300)


def sacct_steps(env: dict, job_id: str) -> list[tuple[str, str]]:
    """(step id, state) of a job's numbered steps (the srun steps the jobstep plugin starts)."""
    out = run(["sacct", "-n", "-P", "-j", job_id, "-o", "JobID,State"], env=env).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if re.match(rf"{job_id}\.\d+\|", line)]


def sacct_jobs(env: dict, name: str) -> list[dict[str, str]]:
    fields = ["JobID", "JobName", "Comment", "State", "ExitCode", "Partition", "Account"]
    out = run(["sacct", "-X", "-n", "-P", "-S", "now-1days", "--name", name, "-o", ",".join(fields)], env=env).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


class Canceller(threading.Thread):
    """Waits for the first checkpoint of one run, then sends SIGTERM to the SLURM job training it
    (`scancel --signal=TERM`: its steps, as at a time limit; see the module docstring)."""

    def __init__(self, workspace: Path, env: dict, run: tuple[str, str, str, str]):
        super().__init__(daemon=True)
        self.ckpt = workspace / "results" / "ckpt" / "/".join(run[:3]) / f"seed{run[3]}" / "state.ckpt"
        self.comment = "rule_train_wildcards_" + "_".join(run)
        self.env = env
        self.done = threading.Event()
        self.job_id = None
        self.note = ""

    def run(self):
        while not self.done.is_set():
            if self.ckpt.exists():
                jobs = run(["squeue", "-h", "-o", "%i|%k|%T"], env=self.env, check=False).stdout
                for line in jobs.splitlines():
                    job_id, comment, state = line.split("|")
                    if comment == self.comment and state == "RUNNING":
                        run(["scancel", "--signal=TERM", job_id], env=self.env)
                        self.job_id = job_id
                        self.note = f"scancel --signal=TERM {job_id} at {time.strftime('%H:%M:%S')}, once {self.ckpt.name} existed"
                        return
            time.sleep(0.2)


# ----------------------------------------------------------------------------- the test


def deterministic_files(root: Path) -> dict[str, bytes]:
    """Every run's progress.csv and eval*.csv, and every table, by path."""
    files = [p for p in (root / "results" / "runs").rglob("*.csv") if p.name == "progress.csv" or p.name.startswith("eval")]
    files += sorted((root / "results" / "tables").iterdir())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


@pytest.mark.timeout(3600)
def test_smoke_pipeline_through_the_slurm_profile(cluster, tmp_path_factory):
    env = cluster
    t0 = time.monotonic()
    config = ["--configfile", "config/smoke.yaml", str(overlay_config(tmp_path_factory.mktemp("cfg") / "preempt.yaml"))]

    # two identical workspaces (one copy of the working tree, then a copy of that copy)
    local_ws = copy_repo(tmp_path_factory.mktemp("local"))
    slurm_ws = tmp_path_factory.mktemp("slurm") / "repo"
    shutil.copytree(local_ws, slurm_ws)

    # the local reference run, alongside (the SLURM run spends much of its time waiting)
    local_log = (local_ws / "snakemake-local.log").open("w")
    local = subprocess.Popen(SNAKEMAKE + ["--cores", "2", "all", *config], cwd=local_ws, stdout=local_log,
                             stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})

    canceller = Canceller(slurm_ws, env, PREEMPT)
    canceller.start()
    proc = None
    try:
        proc = subprocess.run(
            SNAKEMAKE + ["--workflow-profile", "profiles/slurm", "all", *config, *slurm_overrides()],
            cwd=slurm_ws, env=env, capture_output=True, text=True, timeout=3000)
    finally:
        canceller.done.set()
        if proc is None or proc.returncode != 0:
            local.terminate()
        local_rc = local.wait(timeout=3000)
        local_log.close()
    out = proc.stdout + proc.stderr
    (slurm_ws / "snakemake-slurm.log").write_text(out)
    slurm_s = time.monotonic() - t0
    assert proc.returncode == 0, f"the SLURM run failed:\n{out[-8000:]}"
    assert local_rc == 0, f"the local run failed:\n{(local_ws / 'snakemake-local.log').read_text()[-6000:]}"
    assert "Using workflow specific profile profiles/slurm" in out

    # every train and evaluate job was a SLURM job of this run, in the account and partition
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    jobs = sacct_jobs(env, run_id)
    assert jobs, f"sacct lists no job named {run_id}"
    assert {(j["Account"], j["Partition"]) for j in jobs} == {(ACCOUNT, PARTITION)}
    completed = {j["Comment"] for j in jobs if j["State"] == "COMPLETED"}
    runs = sorted(p.parent.relative_to(local_ws / "results" / "runs").parts
                  for p in (local_ws / "results" / "runs").rglob("model.pt"))
    # the main grid, plus tfixup-off, layers-2 and the long run
    assert len(runs) == len(SMOKE["benchmarks"]) * len(ALGORITHMS) * len(SMOKE["seeds"]["default"]) + 3
    for env_, algo, variant, seed in runs:
        assert f"rule_train_wildcards_{env_}_{algo}_{variant}_{seed.removeprefix('seed')}" in completed, (env_, algo, variant, seed)
    evaluates = sorted((local_ws / "results" / "runs").rglob("eval_*.csv"))
    assert sum(c.startswith("rule_evaluate_") for c in completed) == len(evaluates)
    assert not any(c.startswith(("rule_resolve_config", "rule_verify_runs", "rule_collect", "rule_table", "rule_figure"))
                   for c in completed)

    # what they computed equals the local run, byte for byte
    ours, theirs = deterministic_files(slurm_ws), deterministic_files(local_ws)
    assert sorted(ours) == sorted(theirs)
    differ = [name for name in ours if ours[name] != theirs[name]]
    assert not differ, f"differ from the local run: {differ}"

    # the signalled job: stopped (metarl exits 75), run again by `retries`, resumed
    assert canceller.job_id, f"no job was signalled: no checkpoint of {PREEMPT} seen while it ran"
    attempts = [j for j in jobs if j["Comment"] == canceller.comment]
    assert attempts[0]["JobID"] == canceller.job_id, attempts
    steps = sacct_steps(env, canceller.job_id)
    if attempts[0]["State"] == "COMPLETED":  # retried inside the allocation, as a new job step
        assert len(attempts) == 1 and len(steps) >= 2, (attempts, steps)
        assert steps[0][1] != "COMPLETED" and steps[-1][1] == "COMPLETED", steps
        retry = f"retried inside SLURM job {canceller.job_id} (steps {steps})"
        slurm_log = slurm_ws / "logs" / "slurm" / "rule_train" / "_".join(PREEMPT) / f"{canceller.job_id}.log"
        assert "Trying to restart job" in slurm_log.read_text()
    else:  # the job failed; the workflow submitted a new one
        assert [j["State"] for j in attempts] == ["FAILED", "COMPLETED"], attempts
        retry = f"resubmitted as SLURM job {attempts[1]['JobID']} (first {attempts[0]['JobID']} {attempts[0]['State']})"
    run_dir = Path("results/runs/{}/{}/{}/seed{}".format(*PREEMPT))
    meta = json.loads((slurm_ws / run_dir / "metadata.json").read_text())
    resumed_at = [a["started_at_iteration"] for a in meta["attempts"]]
    assert len(resumed_at) == 2 and resumed_at[0] == 0 and resumed_at[1] > 0, meta["attempts"]
    train_log = (slurm_ws / "logs" / "train" / run_dir.relative_to("results/runs").parent / f"seed{PREEMPT[3]}.log").read_text()
    assert f"resuming from iteration {resumed_at[1]}" in train_log, train_log[-2000:]
    for name in ("progress.csv", "eval.csv"):
        assert (slurm_ws / run_dir / name).read_bytes() == (local_ws / run_dir / name).read_bytes(), name
    assert not (slurm_ws / "results" / "ckpt" / run_dir.relative_to("results/runs")).joinpath("state.ckpt").exists()

    by_rule: dict[str, int] = {}
    for j in jobs:
        rule = re.match(r"rule_(\w+?)_wildcards_|rule_(\w+)$", j["Comment"])
        key = (rule.group(1) or rule.group(2)) if rule else j["Comment"]
        by_rule[key] = by_rule.get(key, 0) + 1
    print(f"\nSLURM run {run_id}: {len(jobs)} SLURM jobs in sacct ({by_rule}), states "
          f"{sorted({j['State'] for j in jobs})}; wall {slurm_s / 60:.1f} min (SLURM and local runs side by side)")
    print(f"preemption: {canceller.note}; {retry}; the retry resumed at iteration {resumed_at[1]}; "
          f"{len(ours)} deterministic files equal the local run's")
