"""Results releases (issue 19): workflow/scripts/release.py on two tiny PointNav runs (the release's
manifest, its reproducible tarball, the model cards, refusing an edited run) and `metarl compare
--release` (numbers beside the runs they came from, manifest problems and bad input in one line).
The real smoke pipeline's release is checked in tests/test_workflow.py (slow)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from metarl.cli import main
from metarl.runs import run_dir_for

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

import claims  # noqa: E402
import release  # noqa: E402

# seed 2 with a setting off its preset, so its card needs a --set
RUNS = {1: [], 2: ["--set", "eval_every=4"]}


def build(results: Path, out: Path) -> dict:
    files = sorted(p for p in (results / "runs").rglob("*") if p.is_file() and not p.name.endswith(".sha256"))
    files += sorted((results / "tables").glob("*"))
    return release.build_release(files, results, out / "release", out / "release.tar.gz", claims.paper_budgets())


def claims_table(verdicts: dict[str, str]) -> str:
    """A claims table as workflow/scripts/claims.py writes it (its columns; a claim row and a part row each)."""
    rows = []
    for claim, verdict in verdicts.items():
        rows.append({"claim": claim, "part": "claim", "label": f"statement of {claim}", "verdict": verdict})
        rows.append({"claim": claim, "part": "1", "label": "a part", "verdict": verdict})
    return pd.DataFrame(rows, columns=claims.COLUMNS).to_csv(index=False)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """results/ with two smoke runs of the random agent on PointNav, each evaluated on ood
    (eval_ood.csv, as rule evaluate writes it), and a claims table."""
    root = tmp_path_factory.mktemp("work") / "results"
    for seed, extra in RUNS.items():
        run = root / run_dir_for("PointNav", "random", "default", seed).relative_to("results")
        assert main(["train", "--algo", "random", "--env", "PointNav", "--seed", str(seed), "--preset", "smoke",
                     *extra, "--run-dir", str(run), "--ckpt-dir", str(root / "ckpt" / f"seed{seed}"), "--quiet"]) == 0
        assert main(["evaluate", "--run", str(run), "--split", "ood", "--out", str(run / "eval_ood.csv")]) == 0
    (root / "tables").mkdir()
    (root / "tables" / "claims.csv").write_text(claims_table({"C1": "supported", "C2": "inconclusive"}))
    return root


@pytest.fixture(scope="module")
def built(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release")
    build(results, out)
    return out / "release"


def compare(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["compare", *args])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- the release


def test_release_layout_and_manifest_verify(built):
    names = sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file())
    run = "runs/PointNav/random/default/seed1/"
    assert {"README.md", "release.json", "MANIFEST.sha256", "tables/claims.csv"} <= set(names)
    for name in ("config.yaml", "metadata.json", "progress.csv", "eval.csv", "eval_ood.csv", "eval_ood.csv.sha256",
                 "timings.csv", "model.pt", "MODEL_CARD.md"):
        assert run + name in names, name
    manifest = (built / "MANIFEST.sha256").read_text().splitlines()
    assert [line.split("  ", 1)[1] for line in manifest] == [n for n in names if n != "MANIFEST.sha256"]
    info = json.loads((built / "release.json").read_text())
    assert info["files"] == len(manifest) and info["preset"] == "smoke" and info["seeds"] == {"PointNav": [1, 2]}
    assert info["algorithms"] == ["random"] and info["runs"] == 2
    check = subprocess.run(["sha256sum", "-c", "--strict", "MANIFEST.sha256"], cwd=built, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == len(manifest), check.stdout + check.stderr
    readme = (built / "README.md").read_text()
    assert "0.1 % of the paper preset's 2,000,000" in readme and "sha256sum -c MANIFEST.sha256" in readme
    assert main(["verify", str(built)]) == 0  # the runs in the release are complete and intact


def test_tarball_is_byte_identical_when_built_twice(results, built, tmp_path):
    build(results, tmp_path)
    first = (built.parent / "release.tar.gz").read_bytes()
    assert (tmp_path / "release.tar.gz").read_bytes() == first
    with tarfile.open(built.parent / "release.tar.gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}
        for m in members:
            if m.isfile():
                assert tar.extractfile(m).read() == (built.parent / m.name).read_bytes(), m.name
        assert sum(m.isfile() for m in members) == sum(1 for p in built.rglob("*") if p.is_file())


def test_model_card_names_the_command_and_the_scores(results, built, tmp_path):
    for seed, extra in RUNS.items():
        name = f"runs/PointNav/random/default/seed{seed}"
        card = (built / name / "MODEL_CARD.md").read_text()
        command = f"metarl train --algo random --env PointNav --seed {seed} --preset smoke --variant default"
        command += "".join(f" {w}" for w in extra)
        assert f"    {command}\n" in card and "resolves to exactly `config.yaml`" in card
        assert f"metarl train --config {name}/config.yaml" in card and f"metarl evaluate --run {name} --split ood" in card
        # the command gives the run's config.yaml, byte for byte
        out = tmp_path / f"seed{seed}.yaml"
        assert main(["config", *command.split()[2:], "--out", str(out)]) == 0
        assert out.read_bytes() == (built / name / "config.yaml").read_bytes()
        # its scores are those of eval.csv's final evaluation and of eval_ood.csv
        for file, split in (("eval.csv", "test"), ("eval_ood.csv", "ood")):
            rows = pd.read_csv(results / name / file)
            final = rows[(rows["split"] == split) & (rows["iteration"] == rows["iteration"].max())]
            first, adapted = (final.loc[final["episode"] == e, "return"].mean() for e in (0, 5))
            assert f"| {split} | {file} | 25 (2,000) | 20 | {first:.4f} | {adapted:.4f} |" in card
        assert "2,000 env steps in 25 iterations; preset `smoke`: 0.1 %" in card


def test_an_edited_run_is_refused_and_nothing_is_written(results, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    run = copy / "runs/PointNav/random/default/seed2"
    text = (run / "progress.csv").read_text()
    last = int(text[-2])  # the last digit of the last row, changed: still a valid file
    (run / "progress.csv").write_text(text[:-2] + f"{(last + 1) % 10}\n")
    with pytest.raises(SystemExit) as exc:
        build(copy, tmp_path / "out")
    message = str(exc.value)
    assert "\n" not in message and f"{run} is edited, not released" in message and "progress.csv" in message
    assert not (tmp_path / "out" / "release").exists() and not (tmp_path / "out" / "release.tar.gz").exists()


# ----------------------------------------------------------------------------- metarl compare


def test_compare_release_against_its_own_runs(results, built, capsys):
    code, out, err = compare(["--release", str(built), str(results), "--format", "csv"], capsys)
    assert code == 0 and not err
    numbers, claim_block = out.split("\n\n")
    table = pd.read_csv(io.StringIO(numbers))
    assert list(table["metric"]) == ["adapted return", "first-episode return", "adapted return"]
    assert list(table["split"]) == ["test", "test", "ood"]
    assert (table["release_mean"] == table["results_mean"]).all() and (table["difference"] == 0).all()
    assert (table["common_seeds"] == 2).all() and (table["identical_seeds"] == 2).all()
    # the numbers are the runs' own: the mean over seeds of what training recorded in metadata.json
    recorded = [json.loads((results / f"runs/PointNav/random/default/seed{s}/metadata.json").read_text())["final_test"]
                for s in RUNS]
    assert table.loc[0, "release_mean"] == pytest.approx(sum(r["adapted_return"] for r in recorded) / 2, abs=1e-12)
    assert table.loc[1, "release_mean"] == pytest.approx(sum(r["first_return"] for r in recorded) / 2, abs=1e-12)
    verdicts = pd.read_csv(io.StringIO(claim_block))
    assert verdicts.to_dict("list") == {"claim": ["C1", "C2"], "release_verdict": ["supported", "inconclusive"],
                                        "results_verdict": ["supported", "inconclusive"],
                                        "statement": ["statement of C1", "statement of C2"]}
    code, text, _ = compare(["--release", str(built), str(built)], capsys)  # a release against itself
    files = json.loads((built / "release.json").read_text())["files"]
    assert code == 0 and f"MANIFEST.sha256: {files} files verified" in text
    lines = [line for line in text.splitlines() if line.startswith("PointNav")]
    assert len(lines) == 3 and all(re.search(r"  0 +identical \(2\)$", line) for line in lines)
    assert "C1     supported        supported" in text


def test_compare_shows_differing_seeds(results, built, tmp_path, capsys):
    """Another side's run with other numbers: the difference and which seeds differ."""
    other = tmp_path / "results"
    shutil.copytree(results / "runs", other / "runs")
    eval_csv = other / "runs/PointNav/random/default/seed1/eval.csv"
    lines = eval_csv.read_text().splitlines(keepends=True)
    fields = lines[-1].split(",")
    fields[5] = str(float(fields[5]) + 6.0)  # the last task's adapted return, 6 higher: the mean over 20 tasks +0.3
    eval_csv.write_text("".join(lines[:-1]) + ",".join(fields))
    code, out, _ = compare(["--release", str(built), str(other), "--format", "csv"], capsys)
    table = pd.read_csv(io.StringIO(out)).set_index(["split", "metric"])
    assert code == 0
    assert table.loc[("test", "adapted return"), "difference"] == pytest.approx(0.3 / 2)
    assert table.loc[("test", "adapted return"), "identical_seeds"] == 1
    assert table.loc[("test", "first-episode return"), "identical_seeds"] == 2
    code, out, _ = compare(["--release", str(built), str(other)], capsys)
    assert "+0.15" in out and "1 of 2 differ" in out and "none (" in out  # no claims table of its own


@pytest.mark.parametrize("change, words", [
    ("byte", "runs/PointNav/random/default/seed1/model.pt: differs from its SHA-256 in MANIFEST.sha256"),
    ("delete", "runs/PointNav/random/default/seed2/eval.csv: listed in MANIFEST.sha256 but missing"),
    ("add", "figures/extra.pdf: not listed in MANIFEST.sha256"),
])
def test_compare_refuses_a_release_that_does_not_match_its_manifest(results, built, tmp_path, capsys, change, words):
    copy = tmp_path / "release"
    shutil.copytree(built, copy)
    if change == "byte":
        model = copy / "runs/PointNav/random/default/seed1/model.pt"
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 1
        model.write_bytes(bytes(data))
    elif change == "delete":
        (copy / "runs/PointNav/random/default/seed2/eval.csv").unlink()
    else:
        (copy / "figures").mkdir()
        (copy / "figures/extra.pdf").write_bytes(b"%PDF-")
    code, out, err = compare(["--release", str(copy), str(results)], capsys)
    assert code == 2 and not out
    assert err.splitlines() == [f"metarl: error: {copy}/{words}"]


def test_compare_bad_input_is_one_line(results, built, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_manifest = tmp_path / "bad"
    shutil.copytree(built, bad_manifest)
    (bad_manifest / "MANIFEST.sha256").write_text("not a sha256sum line\n")
    cases = [
        (["--release", str(tmp_path / "nowhere"), str(results)], "release directory not found"),
        (["--release", str(results), str(results)], "has no MANIFEST.sha256: not a results release"),
        (["--release", str(bad_manifest), str(results)], "MANIFEST.sha256 line 1 is not a `sha256sum` line"),
        (["--release", str(built), str(tmp_path / "nowhere")], "results directory not found"),
        (["--release", str(built), str(empty)], f"no finished runs under {empty}"),
        (["--release", str(built), "--format", "xml"], "invalid choice: 'xml'"),
        ([str(results)], "the following arguments are required: --release"),
    ]
    for args, words in cases:
        code, out, err = compare(args, capsys)
        assert code == 2 and words in err and len(err.splitlines()) == 1, (args, err)


def test_seed_statistics_iqm_is_rliables():
    from scipy.stats import trim_mean  # what rliable's aggregate_iqm computes

    from metarl.compare import seed_statistics

    values = [3.0, -1.0, 7.5, 2.0, 0.25, 9.0, -4.0, 1.0, 5.0]
    for n in range(1, len(values) + 1):
        stats = seed_statistics(values[:n])
        assert stats["iqm"] == pytest.approx(trim_mean(values[:n], 0.25)) and stats["seeds"] == n
        assert stats["mean"] == pytest.approx(sum(values[:n]) / n)
    assert seed_statistics([2.0])["std"] != seed_statistics([2.0])["std"]  # NaN: one seed has no spread
