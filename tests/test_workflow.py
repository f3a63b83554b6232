"""The Snakemake pipeline (issue 6): lint, dry runs (paper grid, one figure, SLURM profile), a
real smoke run in a temporary copy of the repository, rerun behaviour, and the aggregation
statistics on hand-made data against rliable's own functions."""

import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import copy_repo  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

import metrics  # noqa: E402
import render  # noqa: E402
import tables  # noqa: E402

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TABLES = ["main", "ood", "ablations", "adaptation", "metaworld_vs_paper", "claims"]
FIGURES = ["learning_curves", "adaptation", "ood", "ablations", "aggregate", "latent", "adaptation_steps",
           "profiles", "claims"]


# ----------------------------------------------------------------------------- helpers


def snakemake(args: list[str], cwd: Path, timeout: float = 900, check: bool = True) -> str:
    proc = subprocess.run(SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} exited {proc.returncode}:\n{output[-6000:]}")
    return output


def job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run prints."""
    jobs, rule = [], None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
            jobs.append((rule, {}))
        elif line.startswith("    wildcards:") and rule:
            jobs[-1] = (rule, dict(kv.split("=", 1) for kv in line.split(":", 1)[1].strip().split(", ")))
    return jobs


def config_value(*keys):
    data = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key in keys:
        data = data[key]
    return data


# ----------------------------------------------------------------------------- lint and dry runs


ALLOWED_LINTS = (  # justified in workflow/Snakefile
    "Specify a conda environment or container for each rule",
    "Environment variable PYTHONPATH used but not asserted with envvars directive",
    "Shell command directly uses variable TRACKING_ARGS from outside of the rule",
)


def test_lint_has_only_justified_findings():
    out = snakemake(["--lint"], cwd=REPO, check=False)
    findings = re.findall(r"^    \* (.+?)(?: in line \d+)?\.?:$", out, re.M)
    unexpected = [f for f in findings if not f.startswith(ALLOWED_LINTS)]
    assert not unexpected, f"unjustified lint findings: {unexpected}\n{out[-4000:]}"


# The smoke run is set up inside the first test that needs it, under that test's timeout:
# allow for a slow or busy 2-core machine (pytest's 900 s default is not enough there).
pytestmark = pytest.mark.timeout(3000)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"))


def check_paper_grid_plan(out: str) -> None:
    """A dry run of `all` on the paper config plans every run, evaluation and product once."""
    counts = job_counts(out)
    algos = config_value("algorithms")
    seeds = config_value("seeds")
    benches = config_value("benchmarks")
    n_seeds = {b: len(seeds.get(b, seeds["default"])) for b in benches}
    assert len(algos) == 6 and len(benches) == 10
    assert n_seeds["HalfCheetahVel"] == 5 and n_seeds["ML45"] == 10
    main = len(algos) * sum(n_seeds.values())
    # ablations: 2 + 2 + 4 + 4 + 3 values, of which one per setting is the main run itself
    ablations = (1 + 1 + 3 + 3 + 2) * 5
    assert counts["train"] == counts["resolve_config"] == main + ablations
    splits = config_value("eval_splits")
    assert counts["evaluate"] == sum(len(algos) * n_seeds[b] * len(splits.get(b, [])) for b in benches)
    for rule in ("export_memory", "aggregate", "collect_ablations", "table_claims", "figure_claims"):
        assert counts[rule] == 1, rule
    assert counts["table"] == len(TABLES) - 1 and counts["figure"] == len(FIGURES) - 1  # one job per product
    assert counts["collect_benchmark"] == 10 and counts["verify_runs"] == 10 + 1  # and the ablations


def test_dry_run_of_one_figure_plans_only_what_it_needs(workspace):
    # no --cores: profiles/default supplies it (SPEC §2)
    out = snakemake(["-n", "results/figures/ood.pdf"], cwd=workspace)
    counts = job_counts(out)
    assert set(counts) == {"resolve_config", "train", "evaluate", "verify_runs", "collect_benchmark", "figure"}
    assert counts["figure"] == 1
    jobs = planned_jobs(out)
    envs = {wc["env"] for _, wc in jobs if "env" in wc}
    assert envs == {"PointNav", "HalfCheetahVel", "AntDir", "ML1-reach", "ML1-push", "ML1-pick-place", "ML10", "ML45"}
    assert {wc["variant"] for _, wc in jobs if "variant" in wc} == {"default"}
    assert counts["train"] == 6 * (3 * 5 + 5 * 10)


# One dry run of the paper grid serves both checks (each costs ~2.5 minutes of a core here): the
# profile changes where jobs run and their resources, never which jobs there are.
def test_dry_run_plans_the_paper_grid_with_the_slurm_profile(workspace):
    out = snakemake(["-n", "--workflow-profile", "profiles/slurm", "all"], cwd=workspace)
    assert "Using workflow specific profile profiles/slurm" in out
    check_paper_grid_plan(out)
    train = re.search(r"^rule train:\n(?:    .*\n)*?    resources: (.*)$", out, re.M).group(1)
    assert "slurm_partition=GPU_PARTITION" in train and "slurm_account=ACCOUNT" in train
    # every train job's time limit and GPUs: default < algorithms < benchmarks < runs.paper["ENV/ALGO"]
    limits = config_value("resources", "train")
    jobs = re.findall(r"^rule train:\n(?:    .*\n)*?    wildcards: (.*)\n(?:    .*\n)*?    resources: (.*)$", out, re.M)
    assert len(jobs) == job_counts(out)["train"]
    for wildcards, resources in jobs:
        wc = dict(kv.split("=", 1) for kv in wildcards.split(", "))
        expected = {**limits["default"], **limits.get("algorithms", {}).get(wc["algo"], {}),
                    **limits.get("benchmarks", {}).get(wc["env"], {}),
                    **limits.get("runs", {}).get("paper", {}).get(f"{wc['env']}/{wc['algo']}", {})}
        assert f"runtime={expected['runtime']}," in resources and f"gpu={expected['gpu']}" in resources, wildcards


def test_bad_config_is_one_clear_error(workspace, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("settings: {no_such_setting: 1}\n")
    out = snakemake(["-n", "all", "--configfile", "config/smoke.yaml", str(bad)], cwd=workspace, check=False)
    assert "unknown setting 'no_such_setting'" in out


@pytest.mark.parametrize("line, words", [
    ("algorithms: [random, trmlr]", "unknown algorithm 'trmlr'"),
    ("benchmarks: [PointNav, HalfCheetahVell]", "unknown benchmark 'HalfCheetahVell'"),
])
def test_typo_in_a_pipeline_config_stops_at_parse_time(workspace, tmp_path, line, words):
    bad = tmp_path / "typo.yaml"
    bad.write_text(line + "\n")
    proc = subprocess.run(SNAKEMAKE + ["-n", "all", "--configfile", "config/smoke.yaml", str(bad)],
                          cwd=workspace, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert words in proc.stdout + proc.stderr and "Job stats" not in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- the smoke run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """`snakemake --cores 2 all --configfile config/smoke.yaml` in a copy of the repository."""
    root = copy_repo(tmp_path_factory.mktemp("smoke"))
    out = snakemake(["--cores", "2", "all", "--configfile", "config/smoke.yaml"], cwd=root, timeout=2700)
    assert "steps (100%) done" in out
    return root


SMOKE = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
NAMES = {"random": "Random", "trmrl": "TrMRL", "rl2": "RL²", "maml_trpo": "MAML-TRPO", "pearl": "PEARL",
         "varibad": "VariBAD"}


@pytest.mark.slow  # the real smoke pipeline (~9 min on 2 cores): CI runs it after `make test`
def test_smoke_run_writes_every_table(smoke):
    algos = SMOKE["algorithms"]
    for name in TABLES:
        csv = pd.read_csv(smoke / "results" / "tables" / f"{name}.csv")
        assert not csv.empty, name
        md = (smoke / "results" / "tables" / f"{name}.md").read_text()
        tex = (smoke / "results" / "tables" / f"{name}.tex").read_text()
        assert md.startswith("# ") and "\\begin{tabular}" in tex and "\\bottomrule" in tex
        if name == "ablations":
            assert set(csv["algorithm"]) == {"trmrl"}
            assert {"default", "tfixup-off", "layers-2"} <= set(csv["variant"])
            continue
        if name == "claims":  # one row per claim and per part, none of them about the floor
            assert set(csv["verdict"]) <= {"supported", "contradicted", "inconclusive", "not run"}
            assert {"C1", "C9"} <= set(csv.loc[csv["part"] == "claim", "claim"]) and "TrMRL" in md
            continue
        assert set(algos) <= set(csv["algorithm"]), name
        for algo in algos:
            assert NAMES[algo] in md, (name, algo)
    main = pd.read_csv(smoke / "results" / "tables" / "main.csv")
    assert {"PointNav", "HalfCheetahVel"} <= set(main["benchmark"])
    paper = pd.read_csv(smoke / "results" / "tables" / "metaworld_vs_paper.csv")
    assert (paper.loc[paper["algorithm"] == "trmrl", "note"] == "not run").any()
    assert 35.8 in set(paper["value"])  # RL² on ML10, the paper's Table 1


@pytest.mark.slow  # the real smoke pipeline (~9 min on 2 cores): CI runs it after `make test`
def test_smoke_run_draws_every_figure(smoke):
    for name in FIGURES:
        data = (smoke / "results" / "figures" / f"{name}.pdf").read_bytes()
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:], name
        assert len(data) > 5000, name


@pytest.mark.slow  # the real smoke pipeline (~9 min on 2 cores): CI runs it after `make test`
def test_smoke_run_summaries(smoke):
    runs = pd.read_parquet(smoke / "results" / "summary" / "runs.parquet")
    assert set(runs.columns) == set(metrics.EPISODE_COLUMNS)
    assert set(runs["algorithm"]) == set(SMOKE["algorithms"])
    assert {"test", "ood", "sweep"} <= set(runs["split"])
    scores = pd.read_parquet(smoke / "results" / "summary" / "scores.parquet")
    main = scores[(scores["variant"] == "default") & (scores["split"] == "test")]
    assert len(main) == 2 * len(SMOKE["algorithms"]) * 2  # benchmarks x algorithms x seeds
    points = yaml.safe_load((REPO / "config" / "normalisation.yaml").read_text())  # fixed 0 and 1
    for r in main.itertuples():
        p = points[r.benchmark]["test"]
        assert r.normalised == pytest.approx((r.score - p["random"]) / (p["reference"] - p["random"]))
    agg = pd.read_csv(smoke / "results" / "summary" / "aggregate.csv")
    assert "P(trmrl > random)" in set(agg["metric"])


@pytest.mark.slow  # the real smoke pipeline (~9 min on 2 cores): CI runs it after `make test`
def test_smoke_second_run_does_nothing(smoke):
    out = snakemake(["--cores", "2", "all", "--configfile", "config/smoke.yaml"], cwd=smoke)
    assert "Nothing to be done" in out


@pytest.mark.slow  # the real smoke pipeline (~9 min on 2 cores): CI runs it after `make test`
def test_smoke_report(smoke):
    snakemake(["--report", "results/report.html", "--configfile", "config/smoke.yaml"], cwd=smoke)
    html = (smoke / "results" / "report.html").read_text(errors="replace")
    assert "training range" in html and "Ablations of" in html


@pytest.mark.slow  # the real smoke pipeline (~9 min on 2 cores): CI runs it after `make test`
def test_smoke_touching_presets_reruns_nothing(smoke):
    for path in (smoke / "config").rglob("*.yaml"):
        os.utime(path)
    out = snakemake(["-n", "all", "--configfile", "config/smoke.yaml"], cwd=smoke)
    assert "Nothing to be done" in out


@pytest.mark.slow  # the real smoke pipeline (~9 min on 2 cores): CI runs it after `make test`
def test_smoke_runs_write_event_files_and_tracking_settings_rerun_nothing(smoke, tmp_path):
    runs = sorted((smoke / "results" / "runs").glob("*/*/*/seed*"))
    assert runs and all(list((run / "tb").glob("events.out.tfevents.*")) for run in runs)
    tracking = tmp_path / "tracking.yaml"
    tracking.write_text("settings: {tensorboard: false, wandb: offline}\n")
    out = snakemake(["-n", "all", "--configfile", "config/smoke.yaml", str(tracking)], cwd=smoke)
    assert "Nothing to be done" in out
    # the settings reach `metarl train` (and only its command line, not the per-run config file)
    model = "results/runs/PointNav/random/default/seed1/model.pt"
    out = snakemake(["-n", "-p", "--forcerun", model, "--until", model, "--configfile", "config/smoke.yaml",
                     str(tracking)], cwd=smoke)
    (train,) = [line for line in out.splitlines() if "metarl train" in line]
    assert "--set tensorboard=false" in train and "--set wandb=offline" in train


@pytest.mark.slow  # the real smoke pipeline (~9 min on 2 cores): CI runs it after `make test`
def test_smoke_editing_one_algorithms_presets_reruns_only_its_runs(smoke):
    path = smoke / "config" / "algos" / "trmrl.yaml"
    original = path.read_text()
    start = original.index("  PointNav:")
    clip = original.index("    clip: 0.2", start)
    path.write_text(original[:clip] + "    clip: 0.25" + original[clip + len("    clip: 0.2"):])
    try:
        out = snakemake(["-n", "all", "--configfile", "config/smoke.yaml"], cwd=smoke)
    finally:
        path.write_text(original)
    jobs = planned_jobs(out)
    retrained = {(wc["env"], wc["algo"], wc["variant"], wc["seed"]) for rule, wc in jobs if rule == "train"}
    assert retrained == {("PointNav", "trmrl", "default", "1"), ("PointNav", "trmrl", "default", "2")}


@pytest.mark.slow  # the real smoke pipeline (~9 min on 2 cores): CI runs it after `make test`
def test_smoke_adding_a_seed_reruns_only_that_seed_and_the_aggregates(smoke, tmp_path):
    extra = tmp_path / "seed3.yaml"
    extra.write_text("seeds: {default: [1, 2, 3]}\n")
    out = snakemake(["-n", "all", "--configfile", "config/smoke.yaml", str(extra)], cwd=smoke)
    jobs = planned_jobs(out)
    per_run = [(rule, wc) for rule, wc in jobs if "seed" in wc]
    assert per_run and {wc["seed"] for _, wc in per_run} == {"3"}
    assert sum(rule == "train" for rule, _ in per_run) == 2 * len(SMOKE["algorithms"])  # benchmarks x algorithms
    rules = {rule for rule, _ in jobs}
    assert rules == {"resolve_config", "train", "evaluate", "step_rewards", "verify_runs", "collect_benchmark",
                     "aggregate", "table", "figure", "table_claims", "figure_claims", "all"}
    products = {wc.get("table") or wc.get("figure") for rule, wc in jobs if rule in ("table", "figure")}
    assert products == {"main", "ood", "adaptation", "metaworld_vs_paper", "learning_curves", "ood", "aggregate",
                        "adaptation_steps", "profiles"}  # not the ablation table and figures, nor latent


@pytest.mark.slow  # the real smoke pipeline (~9 min on 2 cores): CI runs it after `make test`
def test_smoke_corrupt_run_stops_collect_and_verify_gives_the_fix(smoke, tmp_path):
    """Two plausible extra rows in one eval.csv: collect stops naming the file; `metarl verify`
    prints the command, which retrains the run to the same bytes; then the workflow completes."""
    root = tmp_path / "copy"
    shutil.copytree(smoke, root, symlinks=True)
    run = Path("results/runs/PointNav/trmrl/default/seed1")
    intact = (root / run / "eval.csv").read_bytes()
    last = intact.decode().splitlines()[-1].split(",")
    with open(root / run / "eval.csv", "a") as f:
        f.write(",".join(last[:3] + ["20", "0", "-1.5", ""]) + "\n")
        f.write(",".join(last[:3] + ["20", "5", "-1.0", ""]) + "\n")
    out = snakemake(["--cores", "2", "all", "--configfile", "config/smoke.yaml"], cwd=root, check=False)
    assert "Error in rule verify_runs" in out
    assert f"corrupt       {run}" in out and f"{run}/eval.csv" in out and "fix:" in out  # what the step prints
    log = (root / "logs" / "verify" / "PointNav.log").read_text()
    assert f"corrupt       {run}" in log
    proc = subprocess.run([sys.executable, "-m", "metarl.cli", "verify", "results"], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 4 and f"corrupt       {run}" in proc.stdout
    fix = next(line for line in proc.stdout.splitlines() if line.strip().startswith("fix:") and str(run) in line)
    command = fix.split("`")[1].replace("<your config>", "config/smoke.yaml")
    assert command.startswith("snakemake all")
    snakemake(["--cores", "2", *command.split()[1:]], cwd=root)
    assert (root / run / "eval.csv").read_bytes() == intact
    proc = subprocess.run([sys.executable, "-m", "metarl.cli", "verify", "results"], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow  # the real smoke pipeline (~9 min on 2 cores) and a second workspace (~4 min)
def test_smoke_release_verifies_and_a_second_release_of_the_runs_compares_identical(smoke, tmp_path):
    """`snakemake release` on the smoke grid; then in a second copy of the repository holding only
    a copy of the runs, which remakes the summaries, tables, figures and the release without
    training or evaluating anything: both manifests verify, `metarl compare` finds the same
    numbers seed by seed and the same verdicts, and the two tarballs are the same bytes."""
    snakemake(["--cores", "2", "release", "--configfile", "config/smoke.yaml"], cwd=smoke)
    second = copy_repo(tmp_path / "second")
    shutil.copytree(smoke / "results" / "runs", second / "results" / "runs")
    planned = {rule for rule, _ in planned_jobs(snakemake(["-n", "release", "--configfile", "config/smoke.yaml"],
                                                          cwd=second))}
    assert "release" in planned and "aggregate" in planned
    assert not planned & {"resolve_config", "train", "evaluate", "export_memory", "step_rewards"}, planned
    snakemake(["--cores", "2", "release", "--configfile", "config/smoke.yaml"], cwd=second)
    first, other = (root / "results" / "release" for root in (smoke, second))
    for release in (first, other):
        check = subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "MANIFEST.sha256"], cwd=release,
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    info = json.loads((first / "release.json").read_text())
    assert info["preset"] == "smoke" and info["runs"] == 2 * len(SMOKE["algorithms"]) * 2 + 2  # + the ablations
    proc = subprocess.run([sys.executable, "-m", "metarl.cli", "compare", "--release", str(first), str(other),
                           "--format", "csv"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    numbers, verdicts = (pd.read_csv(io.StringIO(block)) for block in proc.stdout.split("\n\n"))
    assert set(numbers["algorithm"]) == set(SMOKE["algorithms"]) and {"test", "ood", "sweep"} <= set(numbers["split"])
    assert (numbers["release_seeds"] == numbers["results_seeds"]).all()
    assert (numbers["common_seeds"] == numbers["release_seeds"]).all()
    assert (numbers["identical_seeds"] == numbers["common_seeds"]).all()
    assert (numbers["release_mean"] == numbers["results_mean"]).all() and (numbers["difference"] == 0).all()
    assert (numbers["release_iqm"] == numbers["results_iqm"]).all()
    assert {"C1", "C9"} <= set(verdicts["claim"])
    assert (verdicts["release_verdict"] == verdicts["results_verdict"]).all()
    assert (smoke / "results" / "release.tar.gz").read_bytes() == (second / "results" / "release.tar.gz").read_bytes()


# ----------------------------------------------------------------------------- statistics


B = metrics.Bootstrap(reps=500, confidence=0.95, random_state=7)


def episodes_table(values: dict, episodes: int = 3, exploration: int = 0, success=None) -> pd.DataFrame:
    """Hand-made per-episode rows: values[(algo, seed)] = return offset of that run; task t and
    episode e add 0.1 t + e. Two tasks, evaluations at iterations 0 and 10 (the final one)."""
    rows = []
    for (algo, seed), offset in values.items():
        for iteration in (0, 10):
            for task in (0, 1):
                for ep in range(episodes):
                    rows.append({
                        "benchmark": "Toy", "algorithm": algo, "variant": "default", "seed": seed,
                        "split": "test", "iteration": iteration, "env_steps": iteration * 100, "task": task,
                        "episode": ep, "return": offset + 0.1 * task + ep - (5 if iteration == 0 else 0),
                        "success": np.nan if success is None else success(algo, seed, iteration, task, ep),
                        "scored": ep >= exploration, "last_episode": ep == episodes - 1,
                        "final": iteration == 10, "has_success": success is not None,
                        "task_value": np.nan, "task_label": "", "train_low": np.nan, "train_high": np.nan, "split_note": "",
                    })
    return pd.DataFrame(rows)[metrics.EPISODE_COLUMNS]


def test_run_scores_headline_numbers():
    table = episodes_table({("a", 1): 10.0, ("a", 2): 20.0})
    scores = metrics.run_scores(table).set_index("seed")
    assert scores.loc[1, "first_return"] == pytest.approx(10.05)
    assert scores.loc[1, "adapted_return"] == pytest.approx(12.05)
    assert scores.loc[2, "score"] == pytest.approx(22.05)
    assert scores.loc[2, "iteration"] == 10 and math.isnan(scores.loc[2, "success_rate"])


def test_run_scores_metaworld_success():
    def success(algo, seed, iteration, task, ep):
        if iteration == 0:
            return 1.0 if ep >= 10 and task == 0 else 0.0  # 50 % at the first evaluation
        return 1.0 if ep == 12 and task == 1 else 0.0  # 1 of 6 scored episodes finally
    table = episodes_table({("a", 1): 0.0}, episodes=13, exploration=10, success=success)
    row = metrics.run_scores(table).iloc[0]
    assert row["success_rate"] == pytest.approx(1 / 6)
    assert row["max_success_rate"] == pytest.approx(0.5)
    assert row["score"] == pytest.approx(1 / 6)


def test_iqm_and_intervals_known_values():
    r = metrics.interval([1, 2, 3, 4, 100], B)
    assert r["iqm"] == pytest.approx(3.0) and r["mean"] == pytest.approx(22.0) and r["n"] == 5
    assert r["ci_low"] <= 3.0 <= r["ci_high"]
    r = metrics.interval([5, 5, 5, 5], B)
    assert (r["iqm"], r["ci_low"], r["ci_high"], r["std"]) == (5, 5, 5, 0)
    # two runs {0, 1}: bootstrap means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4
    r = metrics.interval([0.0, 1.0], metrics.Bootstrap(reps=2000, random_state=3))
    assert (r["iqm"], r["ci_low"], r["ci_high"]) == (0.5, 0.0, 1.0)
    assert math.isnan(metrics.interval([], B)["iqm"])


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_intervals_match_rliable_and_are_reproducible():
    from rliable import library as rly
    from rliable import metrics as rmetrics

    x = np.random.default_rng(0).normal(size=10)
    ours = metrics.interval(x, B)
    np.random.seed(B.random_state)
    point, ci = rly.get_interval_estimates({"x": x[:, None]}, lambda s: np.array([rmetrics.aggregate_iqm(s)]),
                                           reps=B.reps, random_state=np.random.RandomState(B.random_state))
    assert ours["iqm"] == pytest.approx(point["x"][0])
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx((ci["x"][0, 0], ci["x"][1, 0]))
    metrics.interval(np.arange(7.0), B)  # another bootstrap in between changes nothing
    assert metrics.interval(x, B) == ours


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_aggregates_and_improvement_match_rliable():
    from rliable import library as rly
    from rliable import metrics as rmetrics

    rng = np.random.default_rng(1)
    matrices = {"trmrl": rng.normal(1.0, 0.2, size=(5, 3)), "rl2": rng.normal(0.5, 0.2, size=(5, 3))}
    agg = metrics.aggregate_intervals(matrices, B).set_index(["algorithm", "metric"])
    for algo, m in matrices.items():
        assert agg.loc[(algo, "IQM"), "value"] == pytest.approx(rmetrics.aggregate_iqm(m))
        assert agg.loc[(algo, "Optimality gap"), "value"] == pytest.approx(rmetrics.aggregate_optimality_gap(m))
    np.random.seed(B.random_state)
    _, ci = rly.get_interval_estimates(
        matrices, lambda s: np.array([f(s) for f in metrics.AGGREGATES.values()]), reps=B.reps,
        random_state=np.random.RandomState(B.random_state))
    assert agg.loc[("trmrl", "Mean"), "ci_low"] == pytest.approx(ci["trmrl"][0, 1])
    poi = metrics.improvement_probabilities(matrices, "trmrl", B).set_index("algorithm")
    expected = rmetrics.probability_of_improvement(matrices["trmrl"], matrices["rl2"])
    assert poi.loc["rl2", "probability"] == pytest.approx(expected)
    sure = metrics.improvement_probabilities({"trmrl": np.ones((4, 2)), "x": np.zeros((4, 2))}, "trmrl", B)
    assert sure["probability"].iloc[0] == 1.0


TOY_POINTS = {"Toy": {"test": {"random": -8.95, "reference": 3.05, "random_source": "uniform-random agent: toy",
                                "reference_source": "oracle: toy"}}}


def test_normalise_maps_the_declared_points_to_zero_and_one():
    values = {("random", s): v for s, v in zip((1, 2), (-10.0, -12.0))}
    values.update({("trmrl", s): v for s, v in zip((1, 2), (0.0, 2.0))})
    scores = metrics.run_scores(episodes_table(values))
    scores["normalised"] = metrics.normalise(scores, TOY_POINTS)
    means = scores.groupby("algorithm")["normalised"].mean()  # seed means of the last episode: -8.95, 3.05
    assert means["random"] == pytest.approx(0.0) and means["trmrl"] == pytest.approx(1.0)
    text = metrics.describe_normalisation(TOY_POINTS, ["Toy"], "{:.3f}".format)
    assert text == "Toy: 0 = -8.950 (uniform-random agent), 1 = 3.050 (oracle)"
    mats = metrics.family_matrices(scores, ["trmrl", "random"])
    assert list(mats) == ["returns"] and mats["returns"][0]["trmrl"].shape == (2, 1)


def test_metaworld_vs_paper_without_metaworld_runs(tmp_path):
    info = {"algorithms": ["random", "trmrl"], "benchmarks": ["PointNav"]}
    csv, sections, _ = tables.table_metaworld_vs_paper(info, B, {"scores": pd.DataFrame(columns=metrics.RUN_KEYS + ["split"])})
    assert set(csv["algorithm"]) == {"random", "trmrl", "maml_trpo", "rl2", "pearl"}
    ours = csv[csv["source"].str.startswith("ours")]
    assert (ours["note"] == "not run").all()
    assert csv.loc[(csv["algorithm"] == "pearl") & (csv["benchmark"] == "ML45"), "value"].max() == 22.0
    md = render.markdown(sections, "t")
    assert "not run" in md and "31.6" in md
