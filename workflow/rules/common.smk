# Helpers only (no rules): the config, the run grid, per-run settings, resources, input lists.
#
# Every path is relative to the working directory (the repository root), so a copy of the
# repository is a separate workspace (SPEC §6).

import os
import re
import shlex
import sys
from functools import lru_cache
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

import metarl.config
import metarl.registry
from metarl.errors import UsageError


validate(config, schema="../schemas/config.schema.yaml")

# The repository this workflow belongs to. Snakemake imports `metarl` from here when it reads
# this file (it puts the Snakefile's directory first on sys.path); the jobs must use the same
# code and presets, even when the package is installed (editable) from another checkout, so
# that a copy of the repository is a workspace of its own (SPEC §6). Jobs inherit this
# environment: PYTHONPATH makes their `metarl` import this copy's packages; PATH puts the
# `metarl` beside the Python running Snakemake first, so `.venv/bin/snakemake` works without
# activating the environment.
REPO = Path(workflow.main_snakefile).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

PRESET = config["preset"]
ALGORITHMS = config["algorithms"]
BENCHMARKS = config["benchmarks"]
FLOOR = config["floor"]
REFERENCE = config["reference"]
ABLATIONS = config["ablations"]
LATENT = config["latent"]
TRAIN_RESOURCES = config["resources"]["train"]
EVAL_RESOURCES = config["resources"]["evaluate"]
RETRIES = config["resources"]["retries"]

# Meta-World's paper (research/baselines.md §4.1) reports ML10 and ML45 only.

if "threads" in config["settings"]:
    raise WorkflowError(
        "config: set a run's thread count with resources.train (threads), not settings.threads"
    )


# ----------------------------------------------------------------------------- presets


def check_presets_dir():
    """metarl reads its presets (config/budgets.yaml, config/algos/) beside its own code, which
    is REPO/config here (see above), not from the working directory. When the two differ (the
    workflow run with --directory or --snakefile elsewhere), a preset edited in the working
    directory would be silently ignored: stop if their contents differ."""
    used = metarl.config.config_dir().resolve()
    here = Path("config").resolve()
    if used == here:
        return
    names = sorted(
        {p.relative_to(d).as_posix() for d in (used, here) for p in d.glob("algos/*.yaml")}
        | {"budgets.yaml"}
    )
    differ = [
        n for n in names if not ((used / n).is_file() and (here / n).is_file())
        or (used / n).read_bytes() != (here / n).read_bytes()
    ]
    if differ:
        raise WorkflowError(
            f"metarl reads its presets from {used}, not from {here}, and they differ "
            f"({', '.join(differ)}). Install this copy (`pip install -e .`) or run the "
            f"workflow in {used.parent}."
        )


check_presets_dir()

REGISTERED = set(metarl.registry.algorithms())


def check_ids():
    """A typo'd algorithm or benchmark stops the workflow here, at parse time, with one line
    (not a warning in a dry run and a failed job in a real one)."""
    import metarl.envs

    known_benchmarks = set(metarl.envs.BENCHMARK_IDS)
    named = [("algorithm", a, REGISTERED) for a in ALGORITHMS]
    named += [("benchmark", b, known_benchmarks) for b in BENCHMARKS]
    if ABLATIONS.get("factors"):
        named += [("ablations.algorithm", ABLATIONS["algorithm"], REGISTERED),
                  ("ablations.benchmark", ABLATIONS["benchmark"], known_benchmarks)]
    if LATENT.get("benchmark"):
        named += [("latent.algorithm", LATENT["algorithm"], REGISTERED),
                  ("latent.benchmark", LATENT["benchmark"], known_benchmarks)]
    for kind, name, known in named:
        if name not in known:
            raise WorkflowError(
                f"config: unknown {kind} {name!r} (known: {', '.join(sorted(known))}); a new "
                "algorithm is registered in metarl/registry.py or by an entry point of the group "
                "metarl.algorithms (README: Adding an algorithm)"
            )


check_ids()


# ----------------------------------------------------------------------------- resources


def train_resources(benchmark, algo):
    """default < algorithms.ALGO < benchmarks.BENCHMARK < runs.PRESET["BENCHMARK/ALGO"], key
    by key (`runs` is keyed by preset: a paper run's time limit never reaches a quick run)."""
    return {
        **TRAIN_RESOURCES["default"],
        **TRAIN_RESOURCES["algorithms"].get(algo, {}),
        **TRAIN_RESOURCES["benchmarks"].get(benchmark, {}),
        **TRAIN_RESOURCES["runs"].get(PRESET, {}).get(f"{benchmark}/{algo}", {}),
    }


def train_resource(name, fallback):
    def get(wildcards):
        return train_resources(wildcards.env, wildcards.algo).get(name, fallback)

    return get


# A train job's time limit (minutes), also its priority and its config's: the longest runs
# start first, so with fewer cores than jobs no single long run is the whole end of the workflow.
train_runtime = train_resource("runtime", 60)


def eval_resource(name, fallback):
    return EVAL_RESOURCES.get(name, fallback)


# ----------------------------------------------------------------------------- the grid


def seeds_of(benchmark):
    return config["seeds"].get(benchmark, config["seeds"]["default"])


def eval_splits_of(benchmark):
    return config["eval_splits"].get(benchmark, [])


def value_name(value):
    """Ablation value -> the part of a variant name: true/false -> on/off, 0.5 -> 0p5."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return re.sub(r"[^A-Za-z0-9_]", "p", str(value))


def yaml_scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def base_settings(benchmark, algo):
    """`--set` settings of every run of (benchmark, algo): the config's, plus its threads."""
    return {**config["settings"], "threads": train_resources(benchmark, algo)["threads"]}


def resolve(benchmark, algo, seed, variant, overrides):
    """The full run config metarl will resolve (algorithms and benchmarks: see check_ids)."""
    try:
        return metarl.config.resolve(
            algo, benchmark, int(seed), PRESET, variant, None, {**base_settings(benchmark, algo), **overrides}
        )
    except UsageError as exc:
        raise WorkflowError(f"config: run {benchmark}/{algo}/{variant}/seed{seed}: {exc}") from None


def ablation_variants():
    """Ablation variant name -> {setting: value}, and the table of (setting, value, variant).
    A value equal to the preset's own is the `default` run (trained once, not twice)."""
    variants, rows = {}, []
    if not ABLATIONS.get("factors"):
        return variants, rows
    bench, algo = ABLATIONS["benchmark"], ABLATIONS["algorithm"]
    seed = ablation_seeds()[0]
    default = resolve(bench, algo, seed, "default", {})
    for factor in ABLATIONS["factors"]:
        setting = factor["setting"]
        for value in factor["values"]:
            name = f"{setting}-{value_name(value)}"
            changed = resolve(bench, algo, seed, "default", {setting: value})
            if changed == default:
                name = "default"
            else:
                variants[name] = {setting: value}
            label = ("on" if value else "off") if isinstance(value, bool) else str(value)
            rows.append({"setting": setting, "value": yaml_scalar(value), "label": label, "variant": name})
    return variants, rows


def ablation_seeds():
    return ABLATIONS.get("seeds") or seeds_of(ABLATIONS["benchmark"])


VARIANTS, ABLATION_TABLE = ablation_variants()


def main_runs(benchmarks=None):
    """(benchmark, algo, variant, seed) of the main grid, optionally for some benchmarks."""
    return [
        (b, a, "default", s)
        for b in (BENCHMARKS if benchmarks is None else benchmarks)
        for a in ALGORITHMS
        for s in seeds_of(b)
    ]


def ablation_runs():
    if not VARIANTS and not ABLATION_TABLE:
        return []
    names = sorted({row["variant"] for row in ABLATION_TABLE})
    return [(ABLATIONS["benchmark"], ABLATIONS["algorithm"], v, s) for v in names for s in ablation_seeds()]


def latent_run():
    """The run whose memory feeds latent.pdf, or None when the config trains no such run."""
    algo, bench = LATENT["algorithm"], LATENT["benchmark"]
    if algo not in ALGORITHMS or bench not in BENCHMARKS:
        return None
    seeds = seeds_of(bench)
    seed = LATENT["seed"] if LATENT["seed"] in seeds else seeds[0]
    return (bench, algo, "default", seed)


def alternatives(values):
    """A wildcard regex matching exactly these values (never-matching when empty)."""
    values = sorted({str(v) for v in values})
    return "|".join(re.escape(v) for v in values) if values else "(?!x)x"


def all_eval_splits():
    splits = {s for b in BENCHMARKS for s in eval_splits_of(b)}
    if latent_run():
        splits.add(LATENT["split"])
    return splits


TABLES = ["main", "ood", "ablations", "adaptation", "metaworld_vs_paper", "claims"]
FIGURES = ["learning_curves", "adaptation", "ood", "ablations", "aggregate", "latent", "adaptation_steps",
           "profiles", "claims"]


WILDCARDS = {
    "env": alternatives(BENCHMARKS + ([ABLATIONS["benchmark"]] if ABLATION_TABLE else [])),
    "algo": alternatives(ALGORITHMS + ([ABLATIONS["algorithm"]] if ABLATION_TABLE else [])),
    "variant": alternatives(["default", *VARIANTS]),
    "seed": r"\d+",
    "split": alternatives(all_eval_splits()),
    "group": alternatives(BENCHMARKS + ["ablations"]),
    # the claims table and figure have their own rules (claims.smk)
    "table": alternatives([t for t in TABLES if t != "claims"]),
    "figure": alternatives([f for f in FIGURES if f != "claims"]),
}


# ----------------------------------------------------------------------------- paths


def run_file(run, name):
    benchmark, algo, variant, seed = run
    return f"results/runs/{benchmark}/{algo}/{variant}/seed{seed}/{name}"


def benchmark_summary(benchmark):
    return f"results/summary/benchmarks/{benchmark}.parquet"


# ----------------------------------------------------------------------------- per-run settings


def set_options(settings):
    return " ".join(f"--set {shlex.quote(f'{k}={yaml_scalar(v)}')}" for k, v in settings.items())


def set_args(wildcards):
    """`--set KEY=VALUE ...` of one run's config file: the config's settings (but the tracking
    ones: TRACKING_ARGS), threads, the variant's change."""
    settings = {
        **base_settings(wildcards.env, wildcards.algo),
        **VARIANTS.get(wildcards.variant, {}),
    }
    return set_options({k: v for k, v in settings.items() if k not in metarl.config.TRACKING_KEYS})


# The config's tracking settings (tensorboard, wandb: where the runs' scalars also go) reach
# `metarl train` on its command line through this global, never through a param or the per-run
# config file: Snakemake reruns a job whose params or input change, and these change no result.
TRACKING_ARGS = set_options({k: v for k, v in config["settings"].items() if k in metarl.config.TRACKING_KEYS})


@lru_cache(maxsize=None)
def _resolved(benchmark, algo, variant, seed):
    return resolve(benchmark, algo, seed, variant, VARIANTS.get(variant, {}))


def resolved_settings(wildcards):
    """The whole resolved run config, as a param of resolve_config: Snakemake reruns a job
    whose params changed, so editing a preset reruns exactly the runs whose settings it
    changes (and touching a file without changing it reruns nothing). The tracking settings
    (tensorboard, wandb) are left out: where a run's scalars also go does not change it."""
    return metarl.config.without_tracking(_resolved(wildcards.env, wildcards.algo, wildcards.variant, wildcards.seed))


def eval_tasks_arg(wildcards):
    tasks = config["eval_tasks"].get(wildcards.split)
    return "" if tasks is None else f"--tasks {tasks}"


# ----------------------------------------------------------------------------- inputs


def benchmark_eval_files(wildcards):
    """Every evaluation file of the main-grid runs on one benchmark."""
    names = ["eval.csv"] + [f"eval_{s}.csv" for s in eval_splits_of(wildcards.env)]
    return [run_file(run, name) for run in main_runs([wildcards.env]) for name in names]


def ablation_eval_files(wildcards):
    return [run_file(run, "eval.csv") for run in ablation_runs()]


def _verified_runs(group):
    return ablation_runs() if group == "ablations" else main_runs([group])


def verified_files(wildcards):
    """What `metarl verify` reads of the runs of one summary: their logs, models and evaluations."""
    runs = _verified_runs(wildcards.group)
    splits = [] if wildcards.group == "ablations" else eval_splits_of(wildcards.group)
    names = ["model.pt", "eval.csv"] + [f"eval_{s}.csv" for s in splits]
    return [run_file(run, name) for run in runs for name in names]


def verified_run_dirs(wildcards):
    return " ".join(run_file(run, "")[:-1] for run in _verified_runs(wildcards.group))


def expected_settings(runs):
    """run directory -> the settings its config.yaml must hold (tracking settings aside)."""
    return {run_file(run, "")[:-1]: metarl.config.without_tracking(_resolved(*run)) for run in runs}


def benchmark_expected(wildcards):
    return expected_settings(main_runs([wildcards.env]))


def ablation_expected(wildcards):
    return expected_settings(ablation_runs())


def benchmark_summaries(benchmarks=None):
    return [benchmark_summary(b) for b in (BENCHMARKS if benchmarks is None else benchmarks)]


def ood_benchmarks():
    return [b for b in BENCHMARKS if set(eval_splits_of(b)) & {"ood", "sweep"}]


def latent_files(wildcards):
    run = latent_run()
    return [run_file(run, f"memory_{LATENT['split']}.npz")] if run else []


def step_files(benchmarks=None, split="test"):
    """Every main-grid run's per-step rewards on `split` (steps_{split}.npz, rule step_rewards),
    optionally for some benchmarks."""
    return [run_file(run, f"steps_{split}.npz") for run in main_runs(benchmarks)]


NORMALISATION_FILE = "config/normalisation.yaml"


def load_normalisation(path=NORMALISATION_FILE):
    """The fixed points of the normalised score (config/normalisation.yaml) of the configured
    benchmarks: checked against workflow/schemas/normalisation.schema.yaml (numbers, or null
    for a reference), every reference above its random, and every split of every configured
    benchmark without a success signal declared (Meta-World's success rate needs no entry)."""
    import yaml

    import metarl.envs

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise WorkflowError(f"{path} not found: the fixed points of the normalised scores") from None
    except yaml.YAMLError as exc:
        raise WorkflowError(f"{path} is not valid YAML: {exc}") from None
    try:
        validate(data, schema="../schemas/normalisation.schema.yaml", set_default=False)
    except WorkflowError as exc:
        raise WorkflowError(f"{path}: {exc}") from None
    problems = []
    for bench, splits in data.items():
        if bench not in metarl.envs.BENCHMARK_IDS:
            problems.append(f"unknown benchmark {bench!r}")
            continue
        known = metarl.envs.get_benchmark(bench)
        if known.has_success:
            problems.append(f"{bench} is scored by its success rate, already in [0, 1]: remove its entry")
        for split, points in splits.items():
            if split not in known.splits():
                problems.append(f"{bench} has no split {split!r} (it has: {', '.join(known.splits())})")
            elif points["reference"] is not None and not points["reference"] > points["random"]:
                problems.append(f"{bench}/{split}: reference {points['reference']} is not above random {points['random']}")
    for bench in BENCHMARKS:
        known = metarl.envs.get_benchmark(bench)
        missing = [s for s in known.splits() if s not in data.get(bench, {})]
        if not known.has_success and missing:
            problems.append(f"{bench}: no entry for split(s) {', '.join(missing)} (random, reference: null if "
                            "none is known, and their sources; workflow/scripts/measure_random.py measures random)")
    if problems:
        raise WorkflowError(f"{path}: " + "; ".join(problems))
    return {b: data[b] for b in BENCHMARKS if b in data}


NORMALISATION = load_normalisation()


def plot_params():
    """What every table and figure script needs to know about the config."""
    return {
        "algorithms": ALGORITHMS,
        "benchmarks": BENCHMARKS,
        "floor": FLOOR,
        "normalisation": NORMALISATION,
        "reference": REFERENCE,
        "ablations": ABLATION_TABLE,
        "ablation_benchmark": ABLATIONS.get("benchmark"),
        "ablation_algorithm": ABLATIONS.get("algorithm"),
        "latent": dict(LATENT),
        "aggregate": dict(config["aggregate"]),
    }




SCORES = "results/summary/scores.parquet"
FAMILY = "results/summary/aggregate.csv"
ABLATION_SUMMARY = "results/summary/ablations.parquet"


def table_inputs(wildcards):
    """The named inputs of each table: `scores` and `family` are the aggregate step's outputs;
    `episodes` per-episode summaries, for the tables that need every episode."""
    return {
        "main": {"scores": SCORES, "family": FAMILY},
        "ood": {"scores": SCORES},
        "ablations": {"episodes": [ABLATION_SUMMARY]},
        "adaptation": {"episodes": benchmark_summaries()},
        "metaworld_vs_paper": {"scores": SCORES},
    }[wildcards.table]


def figure_inputs(wildcards):
    """The inputs of each figure."""
    return {
        "learning_curves": benchmark_summaries(),
        "adaptation": benchmark_summaries(),
        "ood": benchmark_summaries(ood_benchmarks()),
        "ablations": [ABLATION_SUMMARY],
        "aggregate": [SCORES, FAMILY],
        "latent": latent_files(wildcards),
        "adaptation_steps": step_files(),
        "profiles": [SCORES],
    }[wildcards.figure]


def final_targets():
    return (
        [f"results/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")]
        + [f"results/figures/{f}.pdf" for f in FIGURES]
        + ["results/summary/runs.parquet", "results/summary/scores.parquet", "results/summary/aggregate.csv"]
    )


# what `metarl train` writes (metarl.verify.TRAIN_FILES; importing that here would load torch
# whenever the workflow is parsed)
RUN_FILES = ["config.yaml", "metadata.json", "progress.csv", "eval.csv", "timings.csv", "model.pt"]


def release_inputs():
    """The inputs of a release (release.smk), which it holds: everything `all` makes, and every
    run's files with its evaluations of other splits."""
    runs = sorted(set(main_runs() + ablation_runs()))
    evaluations = [run_file(run, f"eval_{s}.csv") for run in main_runs() for s in eval_splits_of(run[0])]
    return final_targets() + [run_file(run, name) for run in runs for name in RUN_FILES] + evaluations
