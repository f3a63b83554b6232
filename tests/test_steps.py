"""Per-step rewards and the figures made from them (issue 16): `metarl evaluate --steps` writes
a deterministic .npz whose per-episode sums are the final test evaluation's returns in
eval.csv; adaptation_steps.pdf and profiles.pdf say what their lines and bands are and draw
nothing outside their axes."""

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import run_cli
from metarl.evaluation import npz_bytes
from metarl.runs import run_dir_for
from test_figures import legend_text, points_outside, drawn_something  # noqa: E402 - the figure checks

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

import metrics  # noqa: E402
import plots  # noqa: E402
import style  # noqa: E402

DECLARED = yaml.safe_load((REPO / "config" / "normalisation.yaml").read_text())
KEYS = {"reward", "benchmark", "split", "iteration", "env_steps", "episode_length", "task_labels"}


# ----------------------------------------------------------------------------- the .npz


@pytest.fixture(scope="module", params=["random", "trmrl"])
def run(request, tmp_path_factory):
    """A finished PointNav smoke run of `random` and of `trmrl`."""
    root = tmp_path_factory.mktemp(f"steps-{request.param}")
    run_cli(["train", "--algo", request.param, "--env", "PointNav", "--seed", "1", "--preset", "smoke",
             "--quiet"], root)
    return root, root / run_dir_for("PointNav", request.param, "default", 1)


def steps_of(root, run_dir, name, split="test"):
    out, rows = run_dir / name, run_dir / f"{name}_eval.csv"
    run_cli(["evaluate", "--run", str(run_dir), "--split", split, "--out", str(rows), "--steps", str(out)], root)
    return out, rows


def test_steps_npz_is_deterministic_and_equals_the_final_test_evaluation(run):
    root, run_dir = run
    before = (run_dir / "eval.csv").read_bytes()
    first, rows = steps_of(root, run_dir, "steps_a.npz")
    second, _ = steps_of(root, run_dir, "steps_b.npz")
    assert first.read_bytes() == second.read_bytes()  # written twice, at different times
    with zipfile.ZipFile(first) as archive:  # no time stamps that would change the bytes
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert (run_dir / "eval.csv").read_bytes() == before  # --out elsewhere: the run's own file untouched
    assert not (rows.parent / (rows.name + ".sha256")).exists()  # a by-product, not an eval*.csv

    data = np.load(first, allow_pickle=False)
    assert set(data.files) == KEYS
    reward = data["reward"]
    assert reward.dtype == np.float32 and reward.shape == (20, 6, 20)  # tasks x episodes x episode_length
    assert str(data["benchmark"]) == "PointNav" and str(data["split"]) == "test"
    assert int(data["episode_length"]) == 20 and len(data["task_labels"]) == 20
    assert not np.isnan(reward).any()  # PointNav episodes never end early

    evals = pd.read_csv(run_dir / "eval.csv")
    final = evals[(evals["split"] == "test") & (evals["iteration"] == evals["iteration"].max())]
    assert int(data["iteration"]) == int(final["iteration"].iloc[0])
    assert int(data["env_steps"]) == int(final["env_steps"].iloc[0])
    sums = np.nansum(reward.astype(np.float64), axis=2)[final["task"].to_numpy(), final["episode"].to_numpy()]
    tolerance = 1e-6 * np.abs(reward).astype(np.float64).sum(axis=2).max() + 1e-6  # float32 rounding of each step
    assert np.abs(sums - final["return"].to_numpy()).max() <= tolerance
    assert len(final) == 20 * 6
    # the pass's rows are the final evaluation's rows
    pd.testing.assert_frame_equal(pd.read_csv(rows).reset_index(drop=True), final.reset_index(drop=True))


def test_steps_default_path_and_ood_split(run):
    root, run_dir = run
    run_cli(["evaluate", "--run", str(run_dir), "--split", "ood", "--out", str(run_dir / "x_eval.csv"),
             "--steps"], root)
    data = np.load(run_dir / "steps_ood.npz", allow_pickle=False)
    assert str(data["split"]) == "ood" and data["reward"].shape == (20, 6, 20)


def test_steps_of_episodes_that_end_early_are_nan_padded(tmp_path):
    """AntDir: the ant falls, episodes end before the time limit; the rest of the episode is NaN
    and the sums still are eval.csv's returns."""
    run_cli(["train", "--algo", "random", "--env", "AntDir", "--seed", "1", "--preset", "smoke", "--quiet"], tmp_path)
    run_dir = tmp_path / run_dir_for("AntDir", "random", "default", 1)
    out, _ = steps_of(tmp_path, run_dir, "steps_test.npz")
    reward = np.load(out, allow_pickle=False)["reward"]
    ended = np.isnan(reward)
    assert ended.any(axis=2).any() and not ended[:, :, 0].any()  # some episodes end early, none before a step
    assert (np.diff(ended.astype(int), axis=2) >= 0).all()  # NaN only after the end: a suffix
    evals = pd.read_csv(run_dir / "eval.csv")
    final = evals[(evals["split"] == "test") & (evals["iteration"] == evals["iteration"].max())]
    sums = np.nansum(reward.astype(np.float64), axis=2)[final["task"].to_numpy(), final["episode"].to_numpy()]
    np.testing.assert_allclose(sums, final["return"].to_numpy(), rtol=1e-5, atol=1e-4)


def test_npz_bytes_are_fixed_and_load_without_pickles(tmp_path):
    arrays = {"reward": np.array([[[1.0, np.nan]]], np.float32), "split": np.array("test"),
              "iteration": np.array(3, np.int64), "task_labels": np.array(["a", "bb"])}
    path = tmp_path / "x.npz"
    path.write_bytes(npz_bytes(arrays))
    assert npz_bytes(dict(reversed(list(arrays.items())))) == path.read_bytes()  # entry order is fixed
    data = np.load(path, allow_pickle=False)
    np.testing.assert_array_equal(data["reward"], arrays["reward"])
    assert str(data["split"]) == "test" and int(data["iteration"]) == 3 and list(data["task_labels"]) == ["a", "bb"]
    with pytest.raises(TypeError):
        npz_bytes({"x": np.array([{}], dtype=object)})


# ----------------------------------------------------------------------------- figures


ALGOS = ["random", "trmrl", "rl2"]


def info(benchmarks=("PointNav", "HalfCheetahVel", "AntDir", "ML1-reach")) -> dict:
    return {"algorithms": ALGOS, "benchmarks": list(benchmarks), "floor": "random", "reference": "trmrl",
            "normalisation": {b: DECLARED[b] for b in benchmarks if b in DECLARED},
            "ablations": [], "ablation_benchmark": None, "ablation_algorithm": None,
            "latent": {"algorithm": "trmrl", "benchmark": "HalfCheetahVel", "split": "sweep", "seed": 1},
            "aggregate": {"reps": 300, "confidence": 0.95, "random_state": 1}}


def write_steps(root: Path, bench, algo, seed, tasks, episodes, length, rng, early=False) -> str:
    base = {"random": -1.0, "trmrl": 0.0, "rl2": -0.5}[algo]
    step = np.arange(episodes * length).reshape(episodes, length)
    reward = (base + 0.1 * step / length + rng.normal(0, 0.3, size=(tasks, episodes, length))).astype(np.float32)
    if early:  # some episodes end early: NaN after their end (every task's, at the very end)
        reward[0, 1, length // 2:] = np.nan
        reward[:, -1, -3:] = np.nan
    path = root / "results" / "runs" / bench / algo / "default" / f"seed{seed}" / "steps_test.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    # the run's identity and its benchmark's facts, which the figure reads beside the file
    (path.parent / "config.yaml").write_text(f"algo: {algo}\nenv: {bench}\nseed: {seed}\nvariant: default\n")
    (path.parent / "metadata.json").write_text(json.dumps(
        {"benchmark": {"id": bench, "eval_episodes": episodes, "exploration_episodes": 10 if bench.startswith("ML") else 0}}))
    path.write_bytes(npz_bytes({"reward": reward, "benchmark": np.array(bench), "split": np.array("test"),
                                "iteration": np.array(10), "env_steps": np.array(1000),
                                "episode_length": np.array(length), "task_labels": np.array(["t"] * tasks)}))
    return str(path)


@pytest.fixture(scope="module")
def step_files(tmp_path_factory):
    """PointNav and HalfCheetahVel (3 seeds), AntDir (episodes ending early, 3 seeds) and
    ML1-reach (13 episodes of which 10 explore; 2 seeds)."""
    root = tmp_path_factory.mktemp("steps")
    rng = np.random.default_rng(0)
    paths = []
    for algo in ALGOS:
        for seed in (1, 2, 3):
            paths.append(write_steps(root, "PointNav", algo, seed, 4, 6, 20, rng))
            paths.append(write_steps(root, "HalfCheetahVel", algo, seed, 3, 6, 50, rng))
            paths.append(write_steps(root, "AntDir", algo, seed, 2, 6, 30, rng, early=True))
            if seed < 3:
                paths.append(write_steps(root, "ML1-reach", algo, seed, 2, 13, 25, rng))
    return root, paths


def draw(name, root, inputs, cfg):
    style.setup()
    out = root / f"{name}.pdf"
    fig = plots.FIGURES[name](cfg, inputs, str(out))
    assert out.read_bytes().startswith(b"%PDF-")
    return fig


def test_adaptation_steps_says_what_line_and_band_are(step_files):
    root, paths = step_files
    fig = draw("adaptation_steps", root, paths, info())
    legend = legend_text(fig)
    assert "95% percentile-bootstrap CI of the mean" in legend and "dashed: Random, mean (no band)" in legend
    assert "no smoothing" in legend and "dotted: episode boundaries" in legend
    assert "n in each panel's title" in legend  # ML1-reach has 2 seeds, the others 3
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["PointNav (n=3)", "HalfCheetahVel (n=3)", "AntDir (n=3)", "ML1-reach (n=2)"]
    for ax in fig.axes:  # the whole trial on x, a dotted line at every episode boundary
        episodes = 13 if ax.get_title().startswith("ML1") else 6
        length = {"PointNav": 20, "HalfCheetahVel": 50, "AntDir": 30, "ML1-reach": 25}[ax.get_title().split()[0]]
        assert ax.get_xlim() == (0, episodes * length)
        dotted = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert sorted(line.get_xdata()[0] for line in dotted) == [e * length for e in range(1, episodes)]
    assert drawn_something(fig) and not points_outside(fig)


def test_adaptation_steps_seed_count_from_the_data(step_files):
    root, paths = step_files
    fig = draw("adaptation_steps", root, paths, info(["PointNav", "HalfCheetahVel"]))
    assert "Line: mean over 3 seeds; shaded: 95% percentile-bootstrap CI of the mean" in legend_text(fig)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["PointNav", "HalfCheetahVel"]
    assert not points_outside(fig)


def test_adaptation_steps_without_files_draws_a_note(tmp_path):
    fig = draw("adaptation_steps", tmp_path, [], info())
    assert "No per-step rewards" in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_column_bands_is_mean_ci_per_column():
    values = np.random.default_rng(3).normal(size=(5, 4))
    values[2, 3] = np.nan
    bands = plots.column_bands(values, plots.MeanCI(np.random.default_rng(7), 500, 0.95))
    for c in range(3):  # one column alone gets exactly mean_ci's draw
        single = plots.column_bands(values[:, [c]], plots.MeanCI(np.random.default_rng(7), 500, 0.95))
        expected = plots.mean_ci(values[:, c], plots.MeanCI(np.random.default_rng(7), 500, 0.95))
        np.testing.assert_allclose(single.iloc[0].to_numpy(), expected)
        assert bands["mean"][c] == pytest.approx(values[:, c].mean())
        assert bands["lo"][c] <= bands["mean"][c] <= bands["hi"][c]
    assert bands["mean"][3] == pytest.approx(np.nanmean(values[:, 3]))  # the NaN seed left out


def scores_table(rng) -> pd.DataFrame:
    """scores.parquet of a small grid: PointNav and HalfCheetahVel (normalised), AntDir (not
    normalised: NaN), ML1-reach (success; 2 seeds), and an ablation variant that must not count."""
    rows = []
    for algo in ALGOS:
        for seed in (1, 2, 3):
            for bench, success in (("PointNav", False), ("HalfCheetahVel", False), ("AntDir", False),
                                   ("ML1-reach", True)):
                if bench == "ML1-reach" and seed == 3:
                    continue
                level = {"random": 0.0, "trmrl": 0.7, "rl2": 0.4}[algo]
                score = float(np.clip(level + rng.normal(0, 0.15), 0, 1)) if success else level + rng.normal(0, 0.3)
                rows.append({"benchmark": bench, "algorithm": algo, "variant": "default", "seed": seed,
                             "split": "test", "has_success": success, "score": score,
                             "normalised": np.nan if bench == "AntDir" else score})
    rows.append({**rows[0], "variant": "layers-2", "normalised": 50.0})  # would stretch the axis
    return pd.DataFrame(rows)


def test_profiles_say_what_bands_are_and_what_is_left_out(tmp_path):
    path = tmp_path / "scores.parquet"
    scores_table(np.random.default_rng(0)).to_parquet(path)
    fig = draw("profiles", tmp_path, [str(path)], info())
    legend = legend_text(fig)
    assert "95% stratified-bootstrap CI (rliable, 300 replications" in legend
    assert "fraction of runs (seeds × benchmarks) with normalised score > τ" in legend
    text = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert "3 runs × 2 benchmarks (HalfCheetahVel, PointNav)" in text
    assert "2 runs × 1 benchmark (ML1-reach)" in text
    assert "Left out of the profiles (not normalised): AntDir." in text
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 and "3 runs × 2 benchmarks" in titles[0] and "2 runs × 1 benchmark" in titles[1]
    assert max(ax.get_xlim()[1] for ax in fig.axes) < 5  # the ablation variant is not drawn
    for ax in fig.axes:  # a profile falls from 1 to 0 over the axis
        for line in ax.lines:
            y = line.get_ydata()
            assert y[0] == pytest.approx(1.0) and y[-1] == pytest.approx(0.0) and (np.diff(y) <= 1e-12).all()
    assert drawn_something(fig) and not points_outside(fig)


def test_profiles_use_the_configured_bootstrap(tmp_path):
    """The same inputs and settings give the same bands; another random_state other ones."""
    path = tmp_path / "scores.parquet"
    scores_table(np.random.default_rng(1)).to_parquet(path)

    def bands(random_state):
        cfg = info()
        cfg["aggregate"] = {**cfg["aggregate"], "random_state": random_state}
        fig = draw("profiles", tmp_path, [str(path)], cfg)
        return [np.asarray(c.get_paths()[0].vertices) for ax in fig.axes for c in ax.collections]

    a, b, c = bands(1), bands(1), bands(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
