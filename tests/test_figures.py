"""Figures and tables say what they show (issue 21): legends and captions name the band or bar
and the number of seeds (from the data), nothing drawn lies outside its axes, the ablation
panels share one y scale, and a spread never prints as "± 0.00"."""

import sys

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.collections import PathCollection

from conftest import REPO, summaries

sys.path.insert(0, str(REPO / "workflow" / "scripts"))

import metrics  # noqa: E402
import plots  # noqa: E402
import render  # noqa: E402
import style  # noqa: E402
import tables  # noqa: E402

DECLARED = yaml.safe_load((REPO / "config" / "normalisation.yaml").read_text())
ALGOS = ["random", "trmrl", "rl2"]
BASE = {"random": -20.0, "trmrl": -8.0, "rl2": -12.0}
ABLATIONS = [
    {"setting": "layers", "value": "1", "label": "1", "variant": "default"},
    {"setting": "layers", "value": "2", "label": "2", "variant": "layers-2"},
    {"setting": "tfixup", "value": "true", "label": "on", "variant": "default"},
    {"setting": "tfixup", "value": "false", "label": "off", "variant": "tfixup-off"},
]


def rows_of(bench, algo, seed, split, rng, variant="default", tasks=3, episodes=6, exploration=0,
            success=False, task_values=None, iterations=(0, 5, 10)):
    rows = []
    offset = BASE[algo] + (4.0 if variant == "layers-2" else -3.0 if variant == "tfixup-off" else 0.0)
    for iteration in iterations:
        for task in range(tasks):
            for ep in range(episodes):
                value = offset + 0.5 * ep + 0.3 * iteration + rng.normal(0, 2.0)
                rows.append({
                    "benchmark": bench, "algorithm": algo, "variant": variant, "seed": seed, "split": split,
                    "iteration": iteration, "env_steps": 1000 * iteration + seed, "task": task, "episode": ep,
                    "return": value,
                    "success": float(rng.random() < (0.2 if algo == "random" else 0.6)) if success else np.nan,
                    "scored": ep >= exploration, "last_episode": ep == episodes - 1,
                    "final": iteration == iterations[-1], "has_success": success,
                    "task_value": np.nan if task_values is None else task_values[task],
                    "task_label": "",
                    # what the runs' metadata.json say of HalfCheetahVel: trained on v* in [0, 3]
                    "train_low": 0.0 if bench == "HalfCheetahVel" else np.nan,
                    "train_high": 3.0 if bench == "HalfCheetahVel" else np.nan,
                    "split_note": f"the {split} tasks of {bench}",
                })
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small synthetic grid: PointNav, AntDir (no reference), HalfCheetahVel (test, ood,
    sweep), ML1-reach (success; 2 seeds, the others 3), and two TrMRL ablation variants."""
    root = tmp_path_factory.mktemp("figures")
    rng = np.random.default_rng(0)
    grid, ablations = [], []
    for algo in ALGOS:
        for seed in (1, 2, 3):
            grid += rows_of("PointNav", algo, seed, "test", rng)
            grid += rows_of("AntDir", algo, seed, "test", rng, tasks=2)
            for split in ("test", "ood"):
                grid += rows_of("HalfCheetahVel", algo, seed, split, rng)
            grid += rows_of("HalfCheetahVel", algo, seed, "sweep", rng, tasks=5, iterations=(10,),
                            task_values=[0.0, 1.0, 2.0, 3.0, 4.0])
            if seed < 3:
                grid += rows_of("ML1-reach", algo, seed, "test", rng, episodes=13, exploration=10, success=True)
    for variant in ("default", "layers-2", "tfixup-off"):
        for seed in (1, 2, 3):
            ablations += rows_of("HalfCheetahVel", "trmrl", seed, "test", rng, variant=variant)
    paths = []
    for name, rows in (("grid", grid), ("ablations", ablations)):
        path = root / f"{name}.parquet"
        pd.DataFrame(rows)[metrics.EPISODE_COLUMNS].to_parquet(path)
        paths.append(path)
    return root, paths[0], paths[1]


def info(benchmarks=("PointNav", "AntDir", "HalfCheetahVel", "ML1-reach")) -> dict:
    return {"algorithms": ALGOS, "benchmarks": list(benchmarks), "floor": "random", "reference": "trmrl",
            "normalisation": {b: DECLARED[b] for b in benchmarks if b in DECLARED},
            "ablations": ABLATIONS, "ablation_benchmark": "HalfCheetahVel", "ablation_algorithm": "trmrl",
            "latent": {"algorithm": "trmrl", "benchmark": "HalfCheetahVel", "split": "sweep", "seed": 1},
            "aggregate": {"reps": 300, "confidence": 0.95, "random_state": 1}}


def draw(name, data, cfg=None):
    root, grid, ablations = data
    style.setup()
    inputs = [ablations] if name == "ablations" else [grid]
    if name == "aggregate":  # it reads what rule aggregate writes
        made = summaries(pd.read_parquet(grid), cfg or info(), metrics.Bootstrap.from_config((cfg or info())["aggregate"]))
        inputs = [root / "scores.parquet", root / "aggregate.csv"]
        made["scores"].to_parquet(inputs[0])
        made["family"].to_csv(inputs[1], index=False)
    out = root / f"{name}.pdf"
    fig = plots.FIGURES[name](cfg or info(), inputs, str(out))
    assert out.read_bytes().startswith(b"%PDF-")
    return fig


def legend_text(fig) -> str:
    return " ".join(leg.get_title().get_text() for leg in fig.legends)


def all_text(fig) -> str:
    parts = [legend_text(fig)] + [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_ylabel(), ax.get_xlabel()] + [t.get_text() for t in ax.texts]
    return " ".join(parts)


def points_outside(fig, tol: float = 0.5) -> list:
    """Every drawn data point (lines, bands, error bars, bars, scatter) in display coordinates
    that lies outside its axes' box."""
    bad = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        box = ax.bbox
        arrays = []
        for line in ax.lines:
            arrays.append(("line", line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))))
        for coll in ax.collections:
            if isinstance(coll, PathCollection):  # scatter: markers at offsets
                arrays.append(("scatter", coll.get_offset_transform().transform(np.asarray(coll.get_offsets()))))
            else:  # fill_between bands, error bars
                for path in coll.get_paths():
                    arrays.append((type(coll).__name__, coll.get_transform().transform(path.vertices)))
        for patch in ax.patches:  # bars, spans
            arrays.append(("patch", patch.get_verts()))
        for kind, xy in arrays:
            xy = xy[np.isfinite(xy).all(axis=1)]
            out = ((xy[:, 0] < box.x0 - tol) | (xy[:, 0] > box.x1 + tol)
                   | (xy[:, 1] < box.y0 - tol) | (xy[:, 1] > box.y1 + tol))
            if out.any():
                bad.append((ax.get_title(), kind, xy[out][:3]))
    return bad


def drawn_something(fig) -> bool:
    return any(ax.lines or ax.collections or ax.patches for ax in fig.axes)


# ----------------------------------------------------------------------------- figures


@pytest.mark.parametrize("name", ["learning_curves", "adaptation", "ood"])
def test_curve_figures_say_what_line_and_band_are(data, name):
    fig = draw(name, data)
    legend = legend_text(fig)
    assert "mean over" in legend and "95% percentile-bootstrap CI of the mean" in legend
    assert "dashed: Random, mean (no band)" in legend
    if name == "ood":  # HalfCheetahVel only: 3 seeds everywhere
        assert "mean over 3 seeds" in legend
    else:  # ML1-reach has 2 seeds, the others 3: each panel says its own
        assert "n in each panel's title" in legend
        titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
        assert "PointNav (n=3)" in titles and "ML1-reach (n=2)" in titles
    assert drawn_something(fig) and not points_outside(fig)


def test_seed_count_comes_from_the_data(data):
    fig = draw("learning_curves", data, info(["PointNav", "HalfCheetahVel"]))
    assert "mean over 3 seeds" in legend_text(fig)
    assert [ax.get_title() for ax in fig.axes] == ["PointNav", "HalfCheetahVel"]


def test_ablation_panels_share_one_y_scale(data):
    fig = draw("ablations", data)
    legend = legend_text(fig)
    assert "mean over 3 seeds" in legend and "95% percentile-bootstrap CI of the mean" in legend
    assert "All panels share one y scale" in legend
    limits = {ax.get_ylim() for ax in fig.axes if ax.get_visible()}
    assert len(limits) == 1
    assert drawn_something(fig) and not points_outside(fig)


def test_aggregate_caption_names_intervals_runs_and_normalisation(data):
    fig = draw("aggregate", data)
    text = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert "95% stratified-bootstrap CIs (rliable, 300 replications)" in text
    assert "(IQM, mean, median and optimality gap over 3 runs × 2 benchmarks: HalfCheetahVel, PointNav)" in text
    assert "over 2 runs × 1 benchmark: ML1-reach)" in text
    assert "PointNav: 0 = -20.23 (uniform-random agent), 1 = -3.8001 (goal-knowing oracle)" in text
    assert f"AntDir: {metrics.NOT_NORMALISED}" in text
    assert "0 = random, 1 = reference" in all_text(fig)
    assert drawn_something(fig) and not points_outside(fig)


def test_points_outside_sees_a_clipped_band():
    fig, ax = plots.plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.fill_between([0, 1], [-1, 0], [1, 5])
    ax.set_ylim(0, 1)
    assert points_outside(fig)
    plots.plt.close(fig)


# ----------------------------------------------------------------------------- tables


def test_a_small_spread_never_prints_as_zero():
    assert tables.mean_cell({"n": 3, "mean": 1.0, "std": 0.001}) == "1.00 ± <0.01"
    assert tables.mean_cell({"n": 3, "mean": 0.5, "std": 0.0001}, percent=True) == "50.0 ± <0.1"
    assert tables.mean_cell({"n": 3, "mean": 1.0, "std": 0.0}) == "1.00 ± 0"
    assert tables.mean_cell({"n": 3, "mean": 150.0, "std": 0.02}) == "150 ± 0.02"
    assert render.tex_escape("1.00 ± <0.01") == r"1.00 $\pm$ $<$0.01"


def test_main_table_with_std_0001_does_not_print_zero_spread(tmp_path):
    rows = []
    for algo, base in (("random", -20.0), ("trmrl", -8.0)):
        for seed, delta in ((1, -0.001), (2, 0.0), (3, 0.001)):  # std over seeds: 0.001
            for task in (0, 1):
                for ep in range(3):
                    rows.append({"benchmark": "PointNav", "algorithm": algo, "variant": "default", "seed": seed,
                                 "split": "test", "iteration": 10, "env_steps": 100, "task": task, "episode": ep,
                                 "return": base + delta, "success": np.nan, "scored": True,
                                 "last_episode": ep == 2, "final": True, "has_success": False,
                                 "task_value": np.nan, "task_label": "", "train_low": np.nan, "train_high": np.nan, "split_note": ""})
    path = tmp_path / "grid.parquet"
    pd.DataFrame(rows)[metrics.EPISODE_COLUMNS].to_parquet(path)
    cfg = info(["PointNav"])
    bootstrap = metrics.Bootstrap(reps=200, random_state=1)
    csv, sections, title = tables.table_main(cfg, bootstrap, summaries(pd.read_parquet(path), cfg, bootstrap))
    md, tex = render.markdown(sections, title), render.latex(sections, title)
    assert "± 0.00" not in md and r"$\pm$ 0.00" not in tex
    assert "-8.00 ± <0.01" in md and r"$\pm$ $<$0.01" in tex
    std = csv[(csv["metric"] == "adapted_return") & (csv["algorithm"] == "trmrl")]["std"].iloc[0]
    assert std == pytest.approx(0.001)  # the CSV keeps the number itself
    assert "Normalised per benchmark with fixed points (config/normalisation.yaml" in md


def test_save_crops_to_everything_drawn(tmp_path):
    """A legend above the axes and a caption below them are inside the saved page."""
    fig, ax = plots.plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1], label="x")
    fig.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), title="a legend title above the figure")
    plots.caption(fig, "a caption under the figure " * 3)
    out = tmp_path / "f.pdf"
    style.save(fig, str(out))
    box = [float(v) for v in
           out.read_bytes().split(b"/MediaBox [")[1].split(b"]")[0].split()]
    assert box[3] - box[1] > 2 * 72  # taller than the 2 in figure: legend and caption included
    assert matplotlib.get_backend().lower() == "agg"
