"""`metarl compare`: your runs beside a results release's numbers (docs/workflow.md, Releases).

A release (`snakemake release`, workflow/scripts/release.py) is a directory holding
`MANIFEST.sha256` (`sha256sum` format: every other file, relative paths, sorted) and, under
runs/{env}/{algo}/{variant}/seed{seed}/, every run's files. `compare` checks the manifest first,
then computes both sides' numbers with the same code from the runs' own evaluation files
(`final_scores`: `metarl.evaluation.summarize` on each split's final evaluation), so the
comparison is like for like whatever made either side's summaries. Per (benchmark, algorithm,
variant) and metric: each side's seeds, mean ± std and IQM over seeds, the difference of the
means, and, for the seeds both sides have, whether the per-seed numbers are identical. Then the
verdicts of the claims report (docs/claims.md) where the release has one.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

import numpy as np

from metarl.errors import UsageError
from metarl.evaluation import read_eval_rows, summarize
from metarl.runs import file_sha256, format_value
from metarl.saved_runs import read_run_config

MANIFEST = "MANIFEST.sha256"
CLAIMS_TABLE = Path("tables") / "claims.csv"

# (key of `summarize`, what the tables call it); the first-episode return only on the test split
METRICS = (("adapted_return", "adapted return"), ("first_return", "first-episode return"),
           ("success_rate", "success rate"))


# ----------------------------------------------------------------------------- the manifest


def release_files(root: Path) -> list[str]:
    """Every file under `root` but its manifest, as sorted relative POSIX paths."""
    root = Path(root)
    names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(n for n in names if n != MANIFEST)


def manifest_text(root: Path) -> str:
    """The MANIFEST.sha256 of `root`: one `sha256sum` line per file (`sha256sum -c` checks it)."""
    return "".join(f"{file_sha256(Path(root) / name)}  {name}\n" for name in release_files(root))


def check_manifest(root: Path) -> int:
    """Every file of a release against its MANIFEST.sha256: a listed file missing or changed, or
    a file not listed, is a UsageError naming it. Returns the number of files checked."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise UsageError(f"{root} has no {MANIFEST}: not a results release (`snakemake release` makes one)")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not text: not a {MANIFEST}") from None
    listed = {}
    for number, line in enumerate(lines, start=1):
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not match:
            raise UsageError(f"{path} line {number} is not a `sha256sum` line (HASH  PATH)")
        listed[match.group(2)] = match.group(1)
    problems = []
    for name, digest in listed.items():
        file = root / name
        if not file.is_file():
            problems.append(f"{file}: listed in {MANIFEST} but missing")
        elif file_sha256(file) != digest:
            problems.append(f"{file}: differs from its SHA-256 in {MANIFEST}")
    problems += [f"{root / name}: not listed in {MANIFEST}" for name in release_files(root) if name not in listed]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"{problems[0]}{more}")
    return len(listed)


# ----------------------------------------------------------------------------- one run


def read_metadata(run_dir: Path) -> dict[str, Any]:
    """A run's metadata.json with its benchmark block, or a UsageError naming it."""
    path = Path(run_dir) / "metadata.json"
    try:
        metadata = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        metadata = None
    if not isinstance(metadata, dict) or "eval_episodes" not in metadata.get("benchmark", {}):
        raise UsageError(f"{path}: not a finished run's metadata (no benchmark block); `metarl verify` says "
                         "how to regenerate the run")
    return metadata


def _final_rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    """split -> the rows of its last evaluation in one eval*.csv, typed as `summarize` reads them."""
    by_split: dict[str, list[dict[str, Any]]] = {}
    try:
        for row in read_eval_rows(path.read_text()):
            by_split.setdefault(row["split"], []).append(row)
    except (UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise UsageError(f"{path}: not an evaluation file; `metarl verify` says how to regenerate it") from None
    last = {split: max(r["iteration"] for r in rows) for split, rows in by_split.items()}
    return {split: [r for r in rows if r["iteration"] == last[split]] for split, rows in by_split.items()}


def final_scores(run_dir: Path) -> dict[str, dict[str, Any]]:
    """split -> the headline numbers of a finished run's final evaluation of that split
    (`summarize`: first-episode return, adapted return, success rate where the benchmark has
    one), with its `file`, `iteration`, `env_steps` and number of `tasks`. From eval.csv, and
    from each eval_{split}.csv (the workflow's evaluations of other splits), which wins where
    eval.csv holds the same split too."""
    run_dir = Path(run_dir)
    block = read_metadata(run_dir)["benchmark"]
    # what `summarize` reads of a benchmark, as the run recorded it (no simulator needed)
    recorded = SimpleNamespace(eval_episodes=block["eval_episodes"], has_success=block["has_success"])
    scores = {}
    for path in [run_dir / "eval.csv", *sorted(run_dir.glob("eval_*.csv"))]:
        for split, rows in _final_rows(path).items():
            try:
                numbers = summarize(rows, recorded)
            except (ValueError, IndexError):
                raise UsageError(f"{path}: the final {split} evaluation is incomplete; `metarl verify` says "
                                 "how to regenerate it") from None
            scores[split] = {"file": path.name, "iteration": rows[0]["iteration"], "env_steps": rows[0]["env_steps"],
                             "tasks": len({r["task"] for r in rows}), **numbers}
    if "test" not in scores:
        raise UsageError(f"{run_dir / 'eval.csv'}: no test evaluation; `metarl verify` says how to regenerate it")
    return scores


# ----------------------------------------------------------------------------- one side


Group = tuple[str, str, str]  # (benchmark, algorithm, variant)


@dataclass
class Side:
    """The finished runs under a results directory or a release, and their numbers."""

    name: str  # "release" or "results"
    path: Path
    scores: dict[Group, dict[int, dict[str, dict[str, Any]]]] = field(default_factory=dict)  # -> seed -> split
    presets: set[str] = field(default_factory=set)
    runs: int = 0
    unfinished: list[Path] = field(default_factory=list)
    files_checked: int | None = None  # files checked against MANIFEST.sha256, where there is one

    @property
    def claims(self) -> Path:
        return self.path / CLAIMS_TABLE


def load_side(path: Path, name: str, must_be_release: bool) -> Side:
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{name} directory not found: {path}")
    side = Side(name, path)
    if must_be_release or (path / MANIFEST).is_file():
        side.files_checked = check_manifest(path)
    for config_path in sorted((path / "runs").glob("*/*/*/seed*/config.yaml")):
        run_dir = config_path.parent
        if not (run_dir / "model.pt").is_file():
            side.unfinished.append(run_dir)
            continue
        config = read_run_config(run_dir)
        group = (str(config["env"]), str(config["algo"]), str(config["variant"]))
        side.scores.setdefault(group, {})[int(config["seed"])] = final_scores(run_dir)
        side.presets.add(str(config.get("preset")))
        side.runs += 1
    if not side.runs:
        raise UsageError(f"no finished runs under {path} (expected {path}/runs/ENV/ALGO/VARIANT/seedN/ with "
                         "config.yaml, eval.csv and model.pt)")
    return side


# ----------------------------------------------------------------------------- the comparison


def seed_statistics(values: list[float]) -> dict[str, float]:
    """Number of seeds, mean, standard deviation (ddof 1) and IQM (the mean of the middle half:
    rliable's aggregate_iqm, scipy's trim_mean(x, 0.25)) of per-seed numbers."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0:
        return {"seeds": 0, "mean": np.nan, "std": np.nan, "iqm": np.nan}
    cut = int(0.25 * n)
    return {"seeds": n, "mean": float(x.mean()), "std": float(x.std(ddof=1)) if n > 1 else np.nan,
            "iqm": float(x[cut:n - cut].mean())}


def _per_seed(runs: dict[int, dict[str, dict]], split: str, key: str) -> dict[int, float]:
    return {seed: splits[split][key] for seed, splits in runs.items() if key in splits.get(split, {})}


def comparison_rows(release: Side, results: Side) -> list[dict[str, Any]]:
    """One row per (benchmark, algorithm, variant, split, metric): the test split's numbers, and
    those of every other split both sides evaluated."""
    rows = []
    for group in sorted(set(release.scores) | set(results.scores)):
        ours, theirs = release.scores.get(group, {}), results.scores.get(group, {})
        both = ({s for splits in ours.values() for s in splits} & {s for splits in theirs.values() for s in splits})
        for split in ["test", *sorted(both - {"test"})]:
            for key, metric in METRICS:
                if key == "first_return" and split != "test":
                    continue
                a, b = _per_seed(ours, split, key), _per_seed(theirs, split, key)
                if not a and not b:
                    continue
                row = dict(zip(("benchmark", "algorithm", "variant"), group), split=split, metric=metric)
                for name, values in ((release.name, a), (results.name, b)):
                    row.update({f"{name}_{k}": v for k, v in seed_statistics(list(values.values())).items()})
                row["difference"] = row[f"{results.name}_mean"] - row[f"{release.name}_mean"]
                common = sorted(set(a) & set(b))
                row["common_seeds"] = len(common)
                row["identical_seeds"] = sum(a[s] == b[s] for s in common)
                rows.append(row)
    return rows


def read_claims(path: Path) -> dict[str, dict[str, str]] | None:
    """claim id -> its row (statement and verdict) in a claims table (workflow/scripts/claims.py
    writes it: one row per claim, part `claim`, and one per part), or None where there is none."""
    if not path.is_file():
        return None
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        return {r["claim"]: r for r in rows if r["part"] == "claim"}
    except (UnicodeDecodeError, KeyError, csv.Error):
        raise UsageError(f"{path}: not a claims table (workflow/scripts/claims.py writes one)") from None


def claim_rows(release: Side, results: Side) -> list[dict[str, str]] | None:
    """Each claim of the release's claims table with the release's verdict and, where the
    results have a claims table of their own, theirs; None where the release has none."""
    ours, theirs = read_claims(release.claims), read_claims(results.claims)
    if ours is None:
        return None
    return [{"claim": claim, f"{release.name}_verdict": row["verdict"],
             f"{results.name}_verdict": (theirs or {}).get(claim, {}).get("verdict", ""), "statement": row["label"]}
            for claim, row in ours.items()]


# ----------------------------------------------------------------------------- output


def _number(x: float) -> str:
    return "–" if x != x else f"{x:.4g}"


def _difference(x: float) -> str:
    return "–" if x != x else "0" if x == 0 else f"{x:+.3g}"


def _spread(row: dict, name: str) -> str:
    if not row[f"{name}_seeds"]:
        return "–"
    std = row[f"{name}_std"]
    return _number(row[f"{name}_mean"]) + ("" if std != std else f" ± {_number(std)}")


def _same_seeds(row: dict) -> str:
    n, same = row["common_seeds"], row["identical_seeds"]
    if not n:
        return "–"
    return f"identical ({n})" if same == n else f"{n - same} of {n} differ"


def _aligned(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in [header, *rows])


def _describe(side: Side) -> str:
    parts = [f"preset {', '.join(sorted(side.presets))}", f"{side.runs} finished runs"]
    if side.unfinished:
        parts.append(f"{len(side.unfinished)} unfinished left out")
    if side.files_checked is not None:
        parts.append(f"{MANIFEST}: {side.files_checked} files verified")
    return f"{side.name}: {side.path} ({'; '.join(parts)})"


def write_table(release: Side, results: Side, rows: list[dict], claims: list[dict] | None, out: TextIO) -> None:
    r, y = release.name, results.name
    out.write(_describe(release) + "\n" + _describe(results) + "\n")
    if release.presets != results.presets:
        out.write("note: the two sides were trained with other presets (other budgets): their numbers differ for that\n")
    out.write("\n")
    header = ["benchmark", "algorithm", "variant", "split", "metric", f"{r} seeds", f"{r} mean ± std", f"{r} IQM",
              f"{y} seeds", f"{y} mean ± std", f"{y} IQM", f"{y} − {r}", "common seeds"]
    out.write(_aligned(header, [
        [row["benchmark"], row["algorithm"], row["variant"], row["split"], row["metric"],
         str(row[f"{r}_seeds"]), _spread(row, r), _number(row[f"{r}_iqm"]),
         str(row[f"{y}_seeds"]), _spread(row, y), _number(row[f"{y}_iqm"]),
         _difference(row["difference"]), _same_seeds(row)]
        for row in rows]))
    out.write("\n")
    if claims is None:
        out.write(f"claims: the release has no {CLAIMS_TABLE}\n")
        return
    theirs = f"{results.claims}" if results.claims.is_file() else f"none ({results.path} has no {CLAIMS_TABLE})"
    out.write(f"claims ({r}: {release.claims}; {y}: {theirs})\n")
    out.write(_aligned(["claim", f"{r} verdict", f"{y} verdict", "statement"],
                       [[c["claim"], c[f"{r}_verdict"], c[f"{y}_verdict"] or "–", c["statement"]] for c in claims]))


def write_csv(rows: list[dict], claims: list[dict] | None, out: TextIO) -> None:
    """The numbers, one row per metric; then, after an empty line, the claims (where the
    release has them)."""
    for i, table in enumerate(t for t in (rows, claims) if t):
        if i:
            out.write("\n")
        columns = list(table[0])
        out.write(",".join(columns) + "\n")
        out.writelines(",".join(format_value(None if v != v else v) for v in (r[c] for c in columns)) + "\n"
                       for r in table)


def compare(release: Path, results: Path, fmt: str = "table", out: TextIO | None = None) -> int:
    """`metarl compare --release RELEASE RESULTS`: check, compute and print; returns the exit code."""
    out = out or sys.stdout
    ours = load_side(release, "release", must_be_release=True)
    theirs = load_side(results, "results", must_be_release=False)
    rows = comparison_rows(ours, theirs)
    claims = claim_rows(ours, theirs)
    if fmt == "csv":
        write_csv(rows, claims, out)
    else:
        write_table(ours, theirs, rows, claims, out)
    return 0
