"""A results release (rule release, docs/workflow.md): everything the grid made, in one
directory and one reproducible .tar.gz, with a SHA-256 manifest.

    release/
      README.md  release.json  MANIFEST.sha256
      summary/  tables/  figures/                      as in results/
      runs/{env}/{algo}/{variant}/seed{seed}/          config.yaml metadata.json progress.csv
                                                       eval.csv eval_{split}.csv(.sha256)
                                                       timings.csv model.pt MODEL_CARD.md

Every input file under results/ goes to the same place under release/ (with the `.sha256`
beside each eval_{split}.csv), so `metarl verify` checks the release's runs as it checks
results/. Each run is checked first with `metarl.verify.check_run` (schema, row counts, the
SHA-256s recorded when its files were written, that model.pt loads): a release never holds a
corrupt or edited file. Everything written here comes from the inputs (the dates too: when the
runs trained, from their metadata.json), so the same inputs give the same bytes, tarball included.
The release is built beside its place and moved there whole.
"""


import gzip
import json
import shlex
import shutil
import sys
import tarfile
from pathlib import Path

import yaml

import metarl.config
from metarl.compare import MANIFEST, final_scores, manifest_text, read_metadata
from metarl.saved_runs import read_run_config
from metarl.errors import UsageError
from metarl.runs import CHECKSUM_SUFFIX, atomic_file, atomic_write_text, write_json
from metarl.verify import COMPLETE, BenchmarkCache, check_run

CARD = "MODEL_CARD.md"
INFO = "release.json"


# ----------------------------------------------------------------------------- what goes in


def release_names(files: list, results: Path) -> dict[Path, str]:
    """Input file -> its path in the release (its path under `results`), with the `.sha256` of
    each eval_{split}.csv where `metarl evaluate` wrote one."""
    names = {}
    for file in map(Path, files):
        try:
            name = file.relative_to(results).as_posix()
        except ValueError:
            raise SystemExit(f"{file} is not under {results}: a release holds only files of {results}") from None
        names[file] = name
        checksum = file.with_name(file.name + CHECKSUM_SUFFIX)
        if file.name.startswith("eval_") and checksum.is_file():
            names[checksum] = name + CHECKSUM_SUFFIX
    return names


def check_runs(run_dirs: list[Path]) -> None:
    """Refuse (one line) a run that `metarl verify` would not call complete."""
    benchmarks = BenchmarkCache()
    for run_dir in run_dirs:
        report = check_run(run_dir, benchmarks)
        if report.status != COMPLETE:
            raise SystemExit(f"{run_dir} is {report.status}, not released: {report.problems[0][2]}; {report.fix}")


# ----------------------------------------------------------------------------- model cards


def _share(steps: int, budget: int | None) -> str:
    return f"{100 * steps / budget:.2g} % of the paper preset's {budget:,} (config/budgets.yaml)" if budget else ""


def _budget_text(config: dict, metadata: dict, paper_budgets: dict) -> str:
    text = f"{metadata['env_steps']:,} env steps in {metadata['iterations']} iterations"
    if config["preset"] != "paper":
        share = _share(int(config["total_env_steps"]), paper_budgets.get(config["env"]))
        text += f"; preset `{config['preset']}`" + (f": {share}" if share else "")
    return text


def _set_value(value) -> str:
    """A setting as `--set KEY=VALUE` takes it back (a YAML scalar)."""
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value) if isinstance(value, float) \
        else str(value)
    return text if yaml.safe_load(text) == value else json.dumps(value)


def train_command(config: dict) -> tuple[str, bool]:
    """`metarl train` with the run's identity and the `--set` of every setting that differs
    from its preset, and whether it resolves to exactly `config` with this code's presets."""
    ident = [config[k] for k in metarl.config.IDENTITY_KEYS]
    overrides = {}
    try:
        preset = metarl.config.resolve(*ident)
        overrides = {k: v for k, v in config.items() if k not in metarl.config.IDENTITY_KEYS and preset.get(k) != v}
        exact = metarl.config.resolve(*ident, overrides=overrides) == config
    except UsageError:  # an algorithm or preset this code no longer has
        exact = False
    words = ["metarl", "train"] + [w for k, v in zip(metarl.config.IDENTITY_KEYS, ident) for w in (f"--{k}", str(v))]
    words += [w for k, v in overrides.items() for w in ("--set", f"{k}={_set_value(v)}")]
    return shlex.join(words), exact


def _settings_line(config: dict, keys) -> str:
    return ", ".join(f"`{k}={_set_value(config[k])}`" for k in keys)


def _number(x: float) -> str:
    return f"{x:.4f}"


def model_card(run_dir: Path, name: str, paper_budgets: dict) -> str:
    """MODEL_CARD.md of one run (`name`: its directory in the release), from its own files."""
    config, metadata = read_run_config(run_dir), read_metadata(run_dir)
    scores = final_scores(run_dir)
    harness = [f for f in metarl.config.field_types(metarl.config.RunSettings) if f in config]
    own = [k for k in config if k not in metarl.config.IDENTITY_KEYS and k not in harness]
    command, exact = train_command(config)
    splits = sorted(scores, key=lambda s: (s != "test", s))
    has_success = any("success_rate" in scores[s] for s in splits)
    table = ["| split | file | iteration (env steps) | tasks | first-episode return | adapted return |"
             + (" success rate |" if has_success else ""),
             "|---|---|---|---|---|---|" + ("---|" if has_success else "")]
    for split in splits:
        s = scores[split]
        table.append(f"| {split} | {s['file']} | {s['iteration']} ({s['env_steps']:,}) | {s['tasks']} | "
                     f"{_number(s['first_return'])} | {_number(s['adapted_return'])} |"
                     + (f" {_number(s['success_rate'])} |" if has_success else ""))
    packages = ", ".join(f"{k} {v}" for k, v in metadata.get("packages", {}).items() if v)
    commit = metadata.get("git_commit") or "unknown (not trained in a git checkout)"
    dirty = {True: " (with uncommitted changes)", False: " (clean)"}.get(metadata.get("git_dirty"), "")
    device = metadata.get("device", "?") + (f" ({metadata['cuda_device']})" if metadata.get("cuda_device") else "")
    attempts = [a.get("time", "?") for a in metadata.get("attempts", [])]
    other_splits = [s for s in metadata["benchmark"].get("split_notes", {}) if s != "test"] or ["test"]
    lines = [
        f"# {config['algo']} on {config['env']}, variant {config['variant']}, seed {config['seed']}",
        "",
        f"The final model (`model.pt`) of one metarl-bench training run: algorithm `{config['algo']}`, "
        f"benchmark `{config['env']}`, variant `{config['variant']}`, seed {config['seed']}, preset "
        f"`{config['preset']}`. Budget: {_budget_text(config, metadata, paper_budgets)}.",
        "",
        "## Settings",
        "",
        "Every resolved setting is in `config.yaml` beside this card.",
        "",
        f"- harness: {_settings_line(config, harness)}",
        f"- {config['algo']}: {_settings_line(config, own)}",
        "",
        "## Scores",
        "",
        "The final evaluation of each split (docs/protocol.md): the mean over the split's tasks of the "
        "first episode's return and of the last (adapted) episode's" + (", and the success rate of the "
                                                                          "scored episodes" if has_success else "")
        + ".",
        "",
        *table,
        "",
        "## Provenance",
        "",
        f"- code: git commit {commit}{dirty}",
        f"- python {metadata.get('python', '?')}; {packages}",
        f"- device {device}, threads {metadata.get('threads', '?')}, platform {metadata.get('platform', '?')}",
        f"- trained: {', '.join(attempts)} (start of each attempt)",
        "",
        "## Reproduce",
        "",
        "With the suite installed at the commit above, the same device and thread count give the same "
        "progress.csv and eval.csv bytes (paths are relative to the release's directory; the run goes to "
        "results/runs/... under the working directory):",
        "",
        f"    {command}",
        "",
        ("This command resolves to exactly `config.yaml` with the presets of the code that built this release. "
         if exact else "With the presets of the code that built this release this command does not resolve "
         "to exactly `config.yaml`: use the next one. ")
        + "The config file itself always does:",
        "",
        f"    metarl train --config {name}/config.yaml",
        "",
        "Evaluate the model on another split (`--out` keeps this release's files as they are):",
        "",
        f"    metarl evaluate --run {name} --split {other_splits[0]} --out my_eval_{other_splits[0]}.csv",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- README, release.json


def describe_runs(run_dirs: list[Path], paper_budgets: dict) -> dict:
    """release.json's content (without the file count): preset, commits, the grid."""
    configs = [read_run_config(r) for r in run_dirs]
    metas = [read_metadata(r) for r in run_dirs]
    presets = sorted({str(c["preset"]) for c in configs})
    if len(presets) != 1:
        raise SystemExit(f"the runs were trained with different presets ({', '.join(presets)}): not one release")
    commits: dict[tuple, int] = {}
    for m in metas:
        key = (m.get("git_commit"), m.get("git_dirty"))
        commits[key] = commits.get(key, 0) + 1
    budgets: dict[str, set] = {}
    for c in configs:
        budgets.setdefault(c["env"], set()).add(int(c["total_env_steps"]))
    times = sorted(a["time"] for m in metas for a in m.get("attempts", []) if "time" in a)
    return {
        "preset": presets[0],
        "commits": [{"commit": c, "dirty": d, "runs": n} for (c, d), n in sorted(commits.items(), key=str)],
        "trained": {"first": times[0] if times else None, "last": times[-1] if times else None},
        "benchmarks": sorted({c["env"] for c in configs}),
        "algorithms": sorted({c["algo"] for c in configs}),
        "variants": sorted({c["variant"] for c in configs}),
        "seeds": {b: sorted({int(c["seed"]) for c in configs if c["env"] == b}) for b in sorted(budgets)},
        "budgets": {b: {"env_steps": sorted(v), "paper_env_steps": paper_budgets.get(b)} for b, v in sorted(budgets.items())},
        "runs": len(run_dirs),
    }


def readme(info: dict, name: str) -> str:
    preset = info["preset"]
    budget_lines = []
    for bench, b in info["budgets"].items():
        low, high = b["env_steps"][0], b["env_steps"][-1]
        steps = f"{low:,}" if low == high else f"{low:,} to {high:,}"
        share = _share(b["env_steps"][-1], b["paper_env_steps"]) if preset != "paper" else ""
        budget_lines.append(f"- {bench}: {steps} env steps per run" + (f" ({share})" if share else ""))
    if preset == "paper":
        caveat = "Preset `paper`: the references' budgets."
    else:
        caveat = (f"Preset `{preset}`: budgets are a small fraction of the references' (below). The papers' "
                  "claims are about agents trained to the end; these numbers say what these runs show, not "
                  "what the methods reach.")
    commits = [f"- {c['commit'] or 'unknown (not trained in a git checkout)'}"
               + {True: " with uncommitted changes", False: ""}.get(c["dirty"], "") + f": {c['runs']} runs"
               for c in info["commits"]]
    trained = info["trained"]
    lines = [
        f"# metarl-bench results release: preset {preset}",
        "",
        "The results of one grid of the metarl-bench suite as `snakemake release` gathered them: every "
        "run's files with a model card, the summaries, tables and figures, and a SHA-256 manifest.",
        "",
        caveat,
        "",
        *budget_lines,
        "",
        "## Grid",
        "",
        f"- benchmarks: {', '.join(info['benchmarks'])}",
        f"- algorithms: {', '.join(info['algorithms'])}",
        f"- variants: {', '.join(info['variants'])}",
        "- seeds: " + "; ".join(f"{b} {', '.join(map(str, s))}" for b, s in info["seeds"].items()),
        f"- {info['runs']} runs, trained from {trained['first']} to {trained['last']} (start of their "
        "training attempts, from metadata.json)",
        "",
        "Code (git commit of the runs, from metadata.json):",
        "",
        *commits,
        "",
        "## Layout",
        "",
        "- `release.json`: the above, for machines",
        "- `summary/`: `runs.parquet` (every evaluated episode), `scores.parquet` (headline numbers per run "
        "and split), `aggregate.csv` (IQM, CIs, probabilities of improvement)",
        "- `tables/*.{csv,md,tex}`, `figures/*.pdf`: as the workflow makes them (docs/workflow.md)",
        "- `runs/{env}/{algo}/{variant}/seed{seed}/`: `config.yaml`, `metadata.json`, `progress.csv`, "
        "`eval.csv`, `eval_{split}.csv` (with its `.sha256`), `timings.csv`, `model.pt`, and `MODEL_CARD.md` "
        "(what the model is, its settings and scores, and the command that reproduces it)",
        f"- `{MANIFEST}`: the SHA-256 of every other file",
        "",
        "## Verify",
        "",
        f"    cd {name} && sha256sum -c {MANIFEST}",
        f"    metarl verify {name}      # each run's files against the SHA-256s recorded when they were written",
        "",
        "## Compare your runs with these",
        "",
        f"    metarl compare --release {name} results",
        "",
        "checks the manifest, then sets your runs' numbers (results/runs/) beside this release's, benchmark by "
        "benchmark and algorithm by algorithm, with the claims of `tables/claims.csv`.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the tarball


def write_tarball(directory: Path, tarball: Path) -> None:
    """`directory` as a .tar.gz whose bytes depend only on the files' paths and contents:
    entries sorted, each with mtime 0, owner 0:0 and mode 644 (directories 755), gzip mtime 0."""
    directory = Path(directory)
    root = tarball.name.removesuffix(".tar.gz")
    paths = sorted(directory.rglob("*"), key=lambda p: p.relative_to(directory).as_posix())
    with atomic_file(tarball) as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in [directory, *paths]:
            info = tarfile.TarInfo(root if path == directory else f"{root}/{path.relative_to(directory).as_posix()}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = path.stat().st_size, 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)


# ----------------------------------------------------------------------------- the release


def build_release(files: list, results: Path, release: Path, tarball: Path, paper_budgets: dict) -> dict:
    """Check the runs among `files` (every file under `results` that goes in), write the release
    directory `release` and `tarball`; returns release.json's content."""
    results, release = Path(results), Path(release)
    names = release_names(files, results)
    run_dirs = sorted(f.parent for f in names if f.name == "model.pt")
    if not run_dirs:
        raise SystemExit(f"no finished runs among the release's inputs (expected {results}/runs/.../model.pt)")
    check_runs(run_dirs)
    # the manifest lists the inputs, a model card per run, README.md and release.json
    info = {**describe_runs(run_dirs, paper_budgets), "files": len(names) + len(run_dirs) + 2}
    # an earlier release is replaced (Snakemake has deleted its manifest, an output), anything else kept
    if release.exists() and any(release.iterdir()) and not any((release / n).is_file() for n in (MANIFEST, INFO)):
        raise SystemExit(f"{release} exists and is not a release (no {MANIFEST} or {INFO}): move it away")
    staging = release.with_name(f".{release.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # what a killed build left
    for file, name in names.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, staging / name)
    for run_dir in run_dirs:
        name = run_dir.relative_to(results).as_posix()
        atomic_write_text(staging / name / CARD, model_card(run_dir, name, paper_budgets))
    atomic_write_text(staging / "README.md", readme(info, release.name))
    write_json(staging / INFO, info)
    atomic_write_text(staging / MANIFEST, manifest_text(staging))
    write_tarball(staging, tarball)
    shutil.rmtree(release, ignore_errors=True)
    staging.rename(release)
    return info


def main(snakemake) -> None:
    sys.stderr = open(snakemake.log[0], "w")
    release = Path(snakemake.output.manifest).parent
    info = build_release(list(snakemake.input), Path("results"), release, Path(snakemake.output.tarball),
                         snakemake.params.paper_budgets)
    print(f"{info['runs']} runs, {info['files']} files -> {release}, {snakemake.output.tarball}", file=sys.stderr)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - provided by Snakemake's script directive
