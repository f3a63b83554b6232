"""The figures of SPEC §7 (vector PDF, sized for a two-column paper), one function each:

    learning_curves  test score against environment steps, per benchmark
    adaptation       score per episode of the trial (fast adaptation), per benchmark
    ood              HalfCheetahVel return against target velocity (training range shaded), and
                     test vs OOD score per benchmark
    ablations        TrMRL's adapted return per ablated setting
    aggregate        rliable IQM / mean / median / optimality gap with CIs, and P(improvement)
    latent           TrMRL's episodic memory (policy-head input), 2-D PCA, coloured by task
    adaptation_steps reward at every step of the trial (steps_test.npz), per benchmark
    profiles         rliable performance profiles (score distributions) of the normalised scores

Lines are means over seeds with shaded 95 % percentile-bootstrap CIs of the mean (seeded from
config `aggregate.random_state`); the floor algorithm is a dashed grey line without a band.
Every figure says so itself: the legend's title (or the caption under the aggregate figure)
names the line, the band and the number of seeds, counted from the data. Axis limits come from
the data, CI bounds included, and figures are saved cropped to everything drawn (style.save).
Each function returns its figure (closed, already written) for tests to inspect.
Definitions of the numbers are in metrics.py; names and colours in style.py.
"""


import json
import math
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import metrics
import runinfo
import style

plt = style.plt


# ----------------------------------------------------------------------------- helpers


@dataclass
class MeanCI:
    """Percentile bootstrap of the mean over seeds, for curves and points in the figures (the
    tables use rliable's IQM); seeded from the config's bootstrap settings, with at most 2000
    replications so figures stay quick."""

    rng: np.random.Generator
    reps: int
    level: float

    @classmethod
    def of(cls, info) -> "MeanCI":
        b = metrics.Bootstrap.from_config(info["aggregate"])
        return cls(np.random.default_rng(b.random_state), min(b.reps, 2000), b.confidence)


def main_test_episodes(paths) -> pd.DataFrame:
    """Test-split episodes of the main (`default`-variant) runs."""
    episodes = metrics.load_episodes(paths)
    return episodes[(episodes["variant"] == "default") & (episodes["split"] == "test")]


def mean_ci(values: np.ndarray, ci: MeanCI):
    """Mean and percentile-bootstrap CI of the mean of one sample."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    if len(values) == 1:
        return values[0], values[0], values[0]
    boot = ci.rng.choice(values, size=(ci.reps, len(values)), replace=True).mean(axis=1)
    alpha = (1 - ci.level) / 2
    return values.mean(), np.quantile(boot, alpha), np.quantile(boot, 1 - alpha)


def band(frame: pd.DataFrame, x: str, y: str, ci: MeanCI) -> pd.DataFrame:
    """Per x: mean of y over rows (seeds) and its CI."""
    rows = []
    for xv, g in frame.groupby(x, sort=True):
        m, lo, hi = mean_ci(g[y].to_numpy(), ci)
        rows.append({x: xv, "mean": m, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def column_bands(values: np.ndarray, ci: MeanCI, chunk: int = 256) -> pd.DataFrame:
    """`band` for a (seeds x points) matrix, one column per point (e.g. a step of the trial): per
    column the mean over its seeds and the percentile-bootstrap CI of the mean, as `mean_ci`. One
    draw of seeds serves every column without NaN (for a single column it is exactly
    `mean_ci`'s draw); a column with NaN (a seed without a value there) gets `mean_ci` of its
    other seeds."""
    values = np.asarray(values, dtype=float)
    n, points = values.shape
    mean, lo, hi = np.full(points, np.nan), np.full(points, np.nan), np.full(points, np.nan)
    full = ~np.isnan(values).any(axis=0)
    if n == 1:
        mean[full] = lo[full] = hi[full] = values[0, full]
    elif n > 1 and full.any():
        idx = ci.rng.integers(0, n, size=(ci.reps, n))  # what Generator.choice draws
        alpha = (1 - ci.level) / 2
        cols = np.flatnonzero(full)
        for start in range(0, len(cols), chunk):
            c = cols[start : start + chunk]
            boot = values[:, c][idx].mean(axis=1)  # (reps, columns)
            mean[c] = values[:, c].mean(axis=0)
            lo[c], hi[c] = np.quantile(boot, alpha, axis=0), np.quantile(boot, 1 - alpha, axis=0)
    for c in np.flatnonzero(~full):
        mean[c], lo[c], hi[c] = mean_ci(values[:, c], ci)
    return pd.DataFrame({"mean": mean, "lo": lo, "hi": hi})


def grid(n: int, max_cols: int = 5, panel_h: float = 1.6, sharey: bool = False):
    cols = min(max(n, 1), max_cols)
    rows = math.ceil(max(n, 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(style.FULL_WIDTH, panel_h * rows + 0.45), squeeze=False,
                             sharey=sharey)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def legend(fig, algos: list[str], colours: dict, floor: str, title: str = "", ncol: int | None = None) -> None:
    """The algorithms' legend above the panels; `title` says what lines and bands are."""
    handles = []
    for a in algos:
        if a == floor:
            handles.append(plt.Line2D([], [], color=colours[a], ls="--", lw=1.2, label=f"{style.name(a)} (floor)"))
        else:
            handles.append(plt.Line2D([], [], color=colours[a], lw=1.8, label=style.name(a)))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol or len(handles),
               frameon=False, handlelength=2.2, columnspacing=1.4, title=title or None,
               title_fontproperties={"size": 6.5})


def level_text(level: float) -> str:
    return f"{100 * level:g}%"


def seed_counts(frame: pd.DataFrame, floor: str, by: str = "benchmark") -> dict:
    """Per benchmark (`by`): the number of seeds behind each mean, as text ("5", or "3–5" when
    algorithms differ), counted over the algorithms drawn with a band (the floor's only if alone)."""
    out = {}
    for key, g in frame.groupby(by, sort=False):
        if (g["algorithm"] != floor).any():
            g = g[g["algorithm"] != floor]
        out[key] = range_text(g.groupby("algorithm")["seed"].nunique())
    return out


def range_text(counts) -> str:
    counts = sorted(set(int(c) for c in counts))
    if not counts:
        return "0"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def seeds_phrase(counts: dict) -> str:
    """ "5 seeds" when every panel has the same number, else a pointer to the panel titles."""
    values = set(counts.values())
    if len(values) == 1:
        n = values.pop()
        return f"{n} seed" + ("" if n == "1" else "s")
    return "n seeds (n in each panel's title)"


def panel_title(bench: str, counts: dict) -> str:
    return bench if len(set(counts.values())) == 1 else f"{bench} (n={counts[bench]})"


def band_title(counts: dict, ci: "MeanCI", floor: str | None, line: str = "line", band: str = "shaded") -> str:
    """What the lines and bands of a figure are, with the number of seeds from the data."""
    dashed = f"; dashed: {style.name(floor)}, mean (no band)" if floor else ""
    return (f"{line}: mean over {seeds_phrase(counts)}; {band}: {level_text(ci.level)} percentile-bootstrap "
            f"CI of the mean{dashed}")


def caption(fig, text: str, width: int = 165, size: float = 6) -> None:
    """A caption under the figure, wrapped by hand (saving crops to it: style.save)."""
    fig.text(0.01, 0.0, "\n".join(textwrap.wrap(text, width)), fontsize=size, ha="left", va="top")


def empty(path: str, message: str):
    fig, ax = plt.subplots(figsize=(style.COLUMN_WIDTH, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(message, 60)), ha="center", va="center")
    style.save(fig, path)
    return fig


def score_label(has_success: bool) -> str:
    return "Success rate (%)" if has_success else "Adapted return"


def steps_axis(ax) -> None:
    def fmt(v, _):
        if v == 0:
            return "0"
        return f"{v / 1e6:g}M" if abs(v) >= 1e6 else f"{v / 1e3:g}k"

    ax.xaxis.set_major_formatter(plt.FuncFormatter(fmt))


# ----------------------------------------------------------------------------- figures


def learning_curves(info, inputs, out):
    episodes = main_test_episodes(inputs)
    if episodes.empty:
        return empty(out, "No runs in this config.")
    algos = style.order(info["algorithms"], info["floor"])
    colours = style.palette(info["algorithms"])
    curve = metrics.curves(episodes)
    benches = [b for b in info["benchmarks"] if b in set(curve["benchmark"])]
    fig, axes = grid(len(benches))
    ci = MeanCI.of(info)
    counts = seed_counts(curve[curve["benchmark"].isin(benches)], info["floor"])
    for ax, bench in zip(axes, benches):
        part = curve[curve["benchmark"] == bench]
        pct = bool(part["has_success"].any())
        scale = 100.0 if pct else 1.0
        for algo in algos:
            a = part[part["algorithm"] == algo]
            if a.empty:
                continue
            if algo == info["floor"]:
                ax.axhline(a["score"].mean() * scale, color=colours[algo], ls="--", lw=1.2, zorder=1)
                continue
            # x: mean env steps of each evaluation over seeds (terminations make seeds differ a little)
            xs = a.groupby("iteration")["env_steps"].mean()
            b = band(a, "iteration", "score", ci)
            b["x"] = b["iteration"].map(xs)
            ax.plot(b["x"], b["mean"] * scale, color=colours[algo], zorder=3)
            ax.fill_between(b["x"], b["lo"] * scale, b["hi"] * scale, color=colours[algo], alpha=0.2, lw=0, zorder=2)
        ax.set_title(panel_title(bench, counts))
        ax.set_xlabel("Environment steps")
        steps_axis(ax)
        ax.set_ylabel(score_label(pct))
    floor = info["floor"] if info["floor"] in set(curve["algorithm"]) else None
    legend(fig, algos, colours, info["floor"], "Test split. " + band_title(counts, ci, floor, "Line"))
    fig.tight_layout(w_pad=0.6, h_pad=0.8)
    style.save(fig, out)
    return fig


def adaptation(info, inputs, out):
    episodes = main_test_episodes(inputs)
    if episodes.empty:
        return empty(out, "No runs in this config.")
    algos = style.order(info["algorithms"], info["floor"])
    colours = style.palette(info["algorithms"])
    per_ep = metrics.per_episode(episodes)
    benches = [b for b in info["benchmarks"] if b in set(per_ep["benchmark"])]
    fig, axes = grid(len(benches))
    ci = MeanCI.of(info)
    counts = seed_counts(per_ep[per_ep["benchmark"].isin(benches)], info["floor"])
    for ax, bench in zip(axes, benches):
        part = per_ep[per_ep["benchmark"] == bench]
        pct = bool(part["has_success"].any())
        value, scale = ("success", 100.0) if pct else ("return", 1.0)
        n_ep = int(part["episode"].max()) + 1
        if pct:
            ax.axvspan(0.5, n_ep - 2.5, color="0.92", lw=0, zorder=0)
            ax.text(0.02, 0.97, "exploration", transform=ax.transAxes, va="top", fontsize=6, color="0.4")
        for algo in algos:
            a = part[part["algorithm"] == algo]
            if a.empty:
                continue
            b = band(a, "episode", value, ci)
            x = b["episode"] + 1
            if algo == info["floor"]:
                ax.plot(x, b["mean"] * scale, color=colours[algo], ls="--", lw=1.2, zorder=1)
                continue
            ax.plot(x, b["mean"] * scale, color=colours[algo], marker="o", ms=2.5, zorder=3)
            ax.fill_between(x, b["lo"] * scale, b["hi"] * scale, color=colours[algo], alpha=0.2, lw=0, zorder=2)
        ax.set_title(panel_title(bench, counts))
        ax.set_xlabel("Episode of the trial")
        ax.set_xticks(range(1, n_ep + 1) if n_ep <= 8 else range(1, n_ep + 1, 2))
        ax.set_ylabel("Success rate (%)" if pct else "Return")
    floor = info["floor"] if info["floor"] in set(per_ep["algorithm"]) else None
    legend(fig, algos, colours, info["floor"], "Final model, test split, mean over tasks per run. "
           + band_title(counts, ci, floor, "Line"))
    fig.tight_layout(w_pad=0.6, h_pad=0.8)
    style.save(fig, out)
    return fig


def ood(info, inputs, out):
    episodes = metrics.load_episodes(inputs)
    episodes = episodes[episodes["variant"] == "default"]
    if episodes.empty:
        return empty(out, "No benchmark with an OOD split in this config.")
    algos = style.order(info["algorithms"], info["floor"])
    colours = style.palette(info["algorithms"])
    ci = MeanCI.of(info)
    sweep = episodes[(episodes["split"] == "sweep") & episodes["last_episode"] & episodes["final"]]
    scores = metrics.run_scores(episodes)
    benches = [b for b in info["benchmarks"] if "ood" in set(scores.loc[scores["benchmark"] == b, "split"])]
    n_small = len(benches)
    cols = min(max(n_small, 1), 4)
    small_rows = math.ceil(n_small / cols) if n_small else 0
    has_sweep = not sweep.empty
    counts = seed_counts(pd.concat([sweep[["benchmark", "algorithm", "seed"]],
                                    scores.loc[scores["benchmark"].isin(benches), ["benchmark", "algorithm", "seed"]]]),
                         info["floor"])
    heights = ([2.0] if has_sweep else []) + [1.6] * small_rows
    fig = plt.figure(figsize=(style.FULL_WIDTH, sum(heights) + 0.5 + 0.3 * len(heights)))
    gs = fig.add_gridspec(len(heights), cols, height_ratios=heights)
    row = 0
    if has_sweep:
        ax = fig.add_subplot(gs[0, :])
        bench = sweep["benchmark"].iloc[0]
        low, high = float(sweep["train_low"].iloc[0]), float(sweep["train_high"].iloc[0])  # the runs' metadata
        x_min, x_max = float(sweep["task_value"].min()), float(sweep["task_value"].max())
        if np.isfinite(low) and np.isfinite(high):
            ax.axvspan(low, high, color="0.92", lw=0, zorder=0)
            ax.text((low + high) / 2, 0.97, f"training range  v* ∈ [{low:g}, {high:g}]", transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=7, color="0.35")
            if x_max > high:
                ax.text((high + x_max) / 2, 0.97, "out of distribution", transform=ax.get_xaxis_transform(),
                        ha="center", va="top", fontsize=7, color="0.35")
        per_run = sweep.groupby(["algorithm", "seed", "task_value"], as_index=False)["return"].mean()
        for algo in algos:
            a = per_run[per_run["algorithm"] == algo]
            if a.empty:
                continue
            b = band(a, "task_value", "return", ci)
            if algo == info["floor"]:
                ax.plot(b["task_value"], b["mean"], color=colours[algo], ls="--", lw=1.2, zorder=1)
                continue
            ax.plot(b["task_value"], b["mean"], color=colours[algo], zorder=3)
            ax.fill_between(b["task_value"], b["lo"], b["hi"], color=colours[algo], alpha=0.2, lw=0, zorder=2)
        ax.set_xlim(x_min, x_max)
        ax.set_xlabel("Target velocity v*")
        ax.set_ylabel("Adapted return")
        title = f"{bench}: adapted return (last episode) against the target velocity"
        ax.set_title(title if len(set(counts.values())) == 1 else f"{title} (n={counts[bench]})")
        row = 1
    for i, bench in enumerate(benches):
        ax = fig.add_subplot(gs[row + i // cols, i % cols])
        part = scores[scores["benchmark"] == bench]
        pct = bool(part["has_success"].any())
        scale = 100.0 if pct else 1.0
        drawn = [a for a in algos if a in set(part["algorithm"])]
        points = [a for a in drawn if a != info["floor"]]
        width = 0.7 / max(len(points), 1)
        for k, algo in enumerate(drawn):
            a = part[part["algorithm"] == algo]
            for j, split in enumerate(("test", "ood")):
                m, lo, hi = mean_ci(a.loc[a["split"] == split, "score"].to_numpy(), ci)
                x = j - 0.35 + width * (points.index(algo) + 0.5) if algo in points else j
                if algo == info["floor"]:
                    ax.hlines(m * scale, j - 0.45, j + 0.45, color=colours[algo], ls="--", lw=1.2, zorder=1)
                else:
                    ax.errorbar(x, m * scale, yerr=[[max(m - lo, 0) * scale], [max(hi - m, 0) * scale]],
                                fmt="o", ms=3.5, color=colours[algo], capsize=2, lw=1.1, zorder=3)
        ax.set_xticks([0, 1], ["Test", "OOD"])
        ax.set_xlim(-0.5, 1.5)
        ax.set_title(panel_title(bench, counts))
        ax.set_ylabel(score_label(pct))
    floor = info["floor"] if info["floor"] in set(episodes["algorithm"]) else None
    legend(fig, algos, colours, info["floor"], band_title(counts, ci, floor, "Line and point", "shaded and error bar"))
    fig.tight_layout(h_pad=1.0)
    style.save(fig, out)
    return fig


def ablations(info, inputs, out):
    episodes = metrics.load_episodes(inputs)
    table = info["ablations"]
    if episodes.empty or not table:
        return empty(out, "No ablations in this config.")
    algo = info["ablation_algorithm"]
    colour = style.palette([algo] + info["algorithms"])[algo]
    scores = metrics.run_scores(episodes)
    scores = scores[scores["split"] == "test"]
    settings = list(dict.fromkeys(e["setting"] for e in table))
    fig, axes = grid(len(settings), max_cols=5, panel_h=1.7, sharey=True)  # one metric: one scale
    ci = MeanCI.of(info)
    variants = [e["variant"] for e in table]
    n_seeds = range_text(scores[scores["variant"].isin(variants)].groupby("variant")["seed"].nunique())
    for ax, setting in zip(axes, settings):
        entries = [e for e in table if e["setting"] == setting]
        for x, e in enumerate(entries):
            values = scores.loc[scores["variant"] == e["variant"], "adapted_return"].to_numpy()
            m, lo, hi = mean_ci(values, ci)
            default = e["variant"] == "default"
            ax.errorbar(x, m, yerr=[[max(m - lo, 0)], [max(hi - m, 0)]], fmt="o" if default else "s",
                        ms=4.5, capsize=2.5, color=colour, mfc=colour if default else "white", mew=1.2, lw=1.1)
            if len(values) > 1:  # individual seeds, faint
                ax.scatter(np.full(len(values), x) + 0.18, values, s=5, color=colour, alpha=0.35, lw=0)
        ax.set_xticks(range(len(entries)), [e["label"] for e in entries])
        ax.set_xlim(-0.6, len(entries) - 0.4)
        ax.set_title(setting)
    axes[0].set_ylabel(f"Adapted return\n({style.name(algo)}, {info['ablation_benchmark']})")
    handles = [plt.Line2D([], [], color=colour, marker="o", ls="", label="preset value (main run)"),
               plt.Line2D([], [], color=colour, marker="s", mfc="white", ls="", label="ablated value"),
               plt.Line2D([], [], color=colour, marker="o", ms=3, alpha=0.35, ls="", label="single seeds")]
    fig.tight_layout(w_pad=0.6)
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False,
               title=f"Test split, final model. Marker: mean over {seeds_phrase({'all': n_seeds})}; "
                     f"error bar: {level_text(ci.level)} percentile-bootstrap CI of the mean. "
                     "All panels share one y scale.", title_fontproperties={"size": 6.5})
    style.save(fig, out)
    return fig


def aggregate(info, inputs, out):
    """The cross-benchmark aggregates of aggregate.csv (the numbers of the main table), with the
    normalisation points of the benchmarks in scores.parquet."""
    family = metrics.read_family(next(p for p in inputs if str(p).endswith(".csv")))
    scores = pd.read_parquet(next(p for p in inputs if str(p).endswith(".parquet")))
    scores = scores[(scores["variant"] == "default") & (scores["split"] == "test")
                    & scores["algorithm"].isin(info["algorithms"])] if not scores.empty else scores
    if scores.empty:
        return empty(out, "No runs in this config.")
    bootstrap = metrics.Bootstrap.from_config(info["aggregate"])
    declared = info["normalisation"]
    keys = {name: key for key, name in metrics.FAMILIES.items()}
    families = {}  # family key -> (its rows, benchmarks, seeds)
    for name, part in family.groupby("family", sort=False):
        first = part.iloc[0]
        families[keys[name]] = (part, str(first["benchmark_ids"]).split(), str(first["seeds"]).split())
    excluded = metrics.unnormalised(scores, declared)
    if not families:
        return empty(out, "Not enough runs for aggregate statistics."
                     + (f" {', '.join(excluded)}: {metrics.NOT_NORMALISED}." if excluded else ""))
    colours = style.palette(info["algorithms"])
    n_metrics = len(metrics.AGGREGATES)
    fig, axes = plt.subplots(len(families), n_metrics + 1, squeeze=False,
                             gridspec_kw={"width_ratios": [1] * n_metrics + [1.25]},
                             figsize=(style.FULL_WIDTH, (0.9 + 0.3 * len(info["algorithms"])) * len(families)))
    for row, (family, (agg, benches, seeds)) in enumerate(families.items()):
        algos = [a for a in style.order(info["algorithms"], info["floor"]) if a in set(agg["algorithm"])][::-1]
        for col, metric in enumerate(metrics.AGGREGATES):
            ax = axes[row, col]
            sub = agg[agg["metric"] == metric].set_index("algorithm")
            for y, algo in enumerate(algos):
                r = sub.loc[algo]
                interval_bar(ax, y, r["value"], r["ci_low"], r["ci_high"], colours[algo])
            ax.set_yticks(range(len(algos)), [style.name(a) for a in algos] if col == 0 else [""] * len(algos))
            ax.set_title(metric + ("\n(lower is better)" if metric == "Optimality gap" else ""), fontsize=7)
            ax.grid(axis="y", visible=False)
            ax.tick_params(axis="x", labelsize=6)
        axes[row, 0].set_ylabel(("Normalised return\n(0 = random, 1 = reference)" if family == "returns"
                                 else "Success rate") + f"\n{len(benches)} bench. × {len(seeds)} seeds", fontsize=7)
        ax = axes[row, n_metrics]
        poi = agg[agg["metric"] == f"P({info['reference']} > " + agg["algorithm"] + ")"]
        others = [a for a in algos if a != info["reference"] and a in set(poi["algorithm"])]
        poi = poi.set_index("algorithm")
        for y, algo in enumerate(others):
            r = poi.loc[algo]
            interval_bar(ax, y, r["value"], r["ci_low"], r["ci_high"], colours[algo])
        ax.axvline(0.5, color="0.4", ls=":", lw=1)
        ax.set_xlim(0, 1)
        ax.set_yticks(range(len(others)), [f"vs {style.name(a)}" for a in others])
        ax.yaxis.tick_right()
        ax.set_title(f"P({style.name(info['reference'])} > X)", fontsize=7)
        ax.set_xlabel("probability of improvement", fontsize=6)
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="x", labelsize=6)
    fig.tight_layout(w_pad=0.8, h_pad=1.2)
    level = level_text(bootstrap.confidence)
    text = ["Test split, final models. Dots: point estimates; bars: " + level + " stratified-bootstrap CIs "
            f"(rliable, {bootstrap.reps} replications) over runs (seeds) × benchmarks, per algorithm. "
            + "; ".join(f"{metrics.FAMILIES[f]} (IQM, mean, median and optimality gap over {len(seeds)} runs × "
                        f"{len(benches)} benchmark{'s' if len(benches) > 1 else ''}: {', '.join(benches)})"
                        for f, (_, benches, seeds) in families.items()) + "."]
    returns = [b for b in info["benchmarks"]
               if b in set(scores.loc[~scores["has_success"].astype(bool), "benchmark"])]
    if returns:  # say what 0 and 1 of the normalised return are, and what is left out
        text.append("Normalised return = (R − R_random) / (R_reference − R_random), fixed per benchmark "
                    "(config/normalisation.yaml): " + metrics.describe_normalisation(declared, returns) + ".")
    caption(fig, " ".join(text))
    style.save(fig, out)
    return fig


def interval_bar(ax, y: float, value: float, low: float, high: float, colour: str) -> None:
    """A confidence interval as a bar and its point estimate as a dot, which stays visible when
    the interval has no width (every bootstrap sample agrees, e.g. P = 1.00 [1.00, 1.00])."""
    ax.barh(y, high - low, left=low, height=0.6, color=colour, alpha=0.75)
    ax.plot(value, y, "o", ms=3.5, mfc=colour, mec="black", mew=0.8, clip_on=False, zorder=3)


def latent(info, inputs, out):
    files = [p for p in inputs if str(p).endswith(".npz")]
    lat = info["latent"]
    if not files:
        return empty(out, f"No {style.name(lat['algorithm'])} run on {lat['benchmark']} in this config.")
    data = np.load(files[0], allow_pickle=False)
    memory, task, episode = data["memory"], data["task"], data["episode"]
    params = json.loads(str(data["task_params"]))
    values = np.array([next(iter(p.values())) if len(p) == 1 else i for i, p in enumerate(params)], dtype=float)
    key = next(iter(params[0])) if params and len(params[0]) == 1 else "task"
    centred = memory - memory.mean(axis=0)
    _, sing, vt = np.linalg.svd(centred[:: max(1, len(centred) // 20000)], full_matrices=False)
    proj = centred @ vt[:2].T
    explained = (sing[:2] ** 2) / (sing ** 2).sum()
    episodes = [0, int(episode.max())]
    fig, axes = plt.subplots(1, 2, figsize=(style.FULL_WIDTH, 2.6), sharex=True, sharey=True)
    rng = np.random.default_rng(0)
    vmin, vmax = float(values.min()), float(values.max())
    for ax, ep in zip(axes, episodes):
        idx = np.flatnonzero(episode == ep)
        idx = rng.permutation(idx)[:6000]  # keep the PDF small; order shuffled so no task hides another
        sc = ax.scatter(proj[idx, 0], proj[idx, 1], c=values[task[idx]], cmap="viridis", vmin=vmin, vmax=vmax,
                        s=2, lw=0, alpha=0.7, rasterized=True)
        ax.set_title(f"Episode {ep + 1} of the trial")
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of variance)")
    axes[0].set_ylabel(f"PC 2 ({100 * explained[1]:.0f}%)")
    bar = fig.colorbar(sc, ax=axes, fraction=0.04, pad=0.02)
    bar.set_label("target velocity v*" if key == "velocity" else key)
    train_range = runinfo.benchmark_block(Path(files[0]).parent).get("train_range")
    if train_range and vmax > train_range[1]:  # the upper end of the training range
        bar.ax.axhline(train_range[1], color="white", lw=1.5)
    seed = runinfo.run_of_file(files[0])["seed"]
    fig.suptitle(f"{style.name(lat['algorithm'])} episodic memory on {lat['benchmark']} ({data['split']} split, "
                 f"seed {seed}, every step): first two principal components", fontsize=8, fontweight="bold",
                 y=1.04)
    style.save(fig, out)
    return fig


def load_steps(paths) -> dict:
    """(benchmark, algorithm) -> {seed: per-step reward over the trial, averaged over the split's
    tasks ([episodes * episode_length], NaN where every task's episode had ended)}, with each
    benchmark's (episodes, episode_length), exploration episodes and split, from steps_{split}.npz
    files (and the config.yaml and metadata.json beside each)."""
    import warnings

    curves, shapes, splits, explore = {}, {}, set(), {}
    for path in paths:
        if not str(path).endswith(".npz"):
            continue
        run = runinfo.run_of_file(path)
        if run["variant"] != "default":  # the main grid only
            continue
        with np.load(path, allow_pickle=False) as data:
            reward = data["reward"].astype(float)
            bench, split = str(data["benchmark"]), str(data["split"])
        explore[bench] = int(runinfo.benchmark_block(Path(path).parent)["exploration_episodes"])
        splits.add(split)
        episodes, length = reward.shape[1], reward.shape[2]
        shapes[bench] = (episodes, length)
        with warnings.catch_warnings():  # every task's episode over at that step: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            per_step = np.nanmean(reward, axis=0).reshape(episodes * length)
        curves.setdefault((bench, run["algorithm"]), {})[run["seed"]] = per_step
    return {"curves": curves, "shapes": shapes, "splits": sorted(splits), "exploration": explore}


def adaptation_steps(info, inputs, out):
    import warnings

    steps = load_steps(inputs)
    curves, shapes = steps["curves"], steps["shapes"]
    algos = style.order(info["algorithms"], info["floor"])
    benches = [b for b in info["benchmarks"] if any(k[0] == b and k[1] in algos for k in curves)]
    if not benches:
        return empty(out, "No per-step rewards (steps_test.npz) in this config.")
    colours = style.palette(info["algorithms"])
    runs = pd.DataFrame([{"benchmark": b, "algorithm": a, "seed": seed}
                         for (b, a), by_seed in curves.items() if b in benches and a in algos for seed in by_seed])
    counts = seed_counts(runs, info["floor"])
    ci = MeanCI.of(info)
    fig, axes = grid(len(benches), max_cols=2, panel_h=1.55)
    for ax, bench in zip(axes, benches):
        episodes, length = shapes[bench]
        total = episodes * length
        explore = min(steps["exploration"].get(bench, 0), episodes)
        if explore:
            ax.axvspan(0, explore * length, color="0.92", lw=0, zorder=0)
            ax.text(0.01, 0.97, "exploration", transform=ax.transAxes, va="top", fontsize=6, color="0.4")
        for e in range(1, episodes):
            ax.axvline(e * length, color="0.45", ls=":", lw=0.7, zorder=1)
        x = np.arange(total)
        for algo in algos:
            by_seed = curves.get((bench, algo))
            if not by_seed:
                continue
            values = np.stack([by_seed[seed] for seed in sorted(by_seed)])
            if algo == info["floor"]:
                with warnings.catch_warnings():  # no seed with a value at that step: NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    ax.plot(x, np.nanmean(values, axis=0), color=colours[algo], ls="--", lw=0.8, zorder=2)
                continue
            b = column_bands(values, ci)
            ax.plot(x, b["mean"], color=colours[algo], lw=0.8, zorder=4)
            ax.fill_between(x, b["lo"], b["hi"], color=colours[algo], alpha=0.2, lw=0, zorder=3)
        ax.set_xlim(0, total)
        ax.set_title(panel_title(bench, counts))
        ax.set_xlabel(f"Step of the trial ({episodes} episodes × {length} steps)")
        if total >= 10000:
            steps_axis(ax)
        ax.set_ylabel("Reward per step")
    floor = info["floor"] if info["floor"] in set(runs["algorithm"]) else None
    split = steps["splits"][0] if len(steps["splits"]) == 1 else "/".join(steps["splits"])
    legend(fig, algos, colours, info["floor"], f"Final model, {split} split: reward at every step of the trial "
           "(no smoothing), mean over the split's tasks per run; dotted: episode boundaries.\n"
           + band_title(counts, ci, floor, "Line"), ncol=min(len(algos), 6))
    fig.tight_layout(w_pad=0.6, h_pad=0.8)
    style.save(fig, out)
    return fig


def score_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rliable's score distribution (`rly.score_distributions`: the fraction of all runs x
    benchmarks scores above each tau), vectorised over tau."""
    return (np.asarray(scores, dtype=float).reshape(-1, 1) > np.asarray(taus).reshape(1, -1)).mean(axis=0)


def profiles(info, inputs, out):
    import warnings

    from rliable import library as rly

    paths = [p for p in inputs if str(p).endswith(".parquet")]
    scores = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True) if paths else pd.DataFrame()
    if scores.empty or "normalised" not in scores:
        return empty(out, "No runs in this config.")
    test = scores[(scores["variant"] == "default") & (scores["split"] == "test")
                  & scores["algorithm"].isin(info["algorithms"])]
    test = test[test["benchmark"].isin(info["benchmarks"])]
    bootstrap = metrics.Bootstrap.from_config(info["aggregate"])
    families = metrics.family_matrices(test, info["algorithms"])
    excluded = metrics.unnormalised(test, info["normalisation"])
    if not families:
        return empty(out, "Not enough runs for performance profiles."
                     + (f" {', '.join(excluded)}: {metrics.NOT_NORMALISED}." if excluded else ""))
    colours = style.palette(info["algorithms"])
    fig, axes = plt.subplots(1, len(families), squeeze=False, figsize=(style.FULL_WIDTH if len(families) > 1
                                                                         else style.COLUMN_WIDTH * 1.3, 2.3))
    axes = axes.ravel()
    for ax, (family, (matrices, benches, seeds)) in zip(axes, families.items()):
        algos = [a for a in style.order(info["algorithms"], info["floor"]) if a in matrices]
        values = np.concatenate([m.ravel() for m in matrices.values()])
        pct = family == "success"
        low, high = (0.0, 1.0) if pct else (min(0.0, float(values.min())), max(1.0, float(values.max())))
        pad = 0.02 * (high - low)
        taus = np.linspace(low - pad, high + pad, 201)
        metrics._random_state(bootstrap)  # rliable's bootstrap draws from numpy's global generator
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            profile, profile_ci = rly.create_performance_profile(
                {a: matrices[a] for a in algos}, taus, custom_profile_func=score_profile,
                reps=bootstrap.reps, confidence_interval_size=bootstrap.confidence)
        for algo in algos:  # drawn as the other figures (rliable.plot_utils' look differs)
            dashed = algo == info["floor"]
            lo, hi = profile_ci[algo]
            ax.plot(taus, profile[algo], color=colours[algo], ls="--" if dashed else "-", lw=1.2 if dashed else 1.4,
                    zorder=2 if dashed else 3)
            ax.fill_between(taus, lo, hi, color=colours[algo], alpha=0.2, lw=0, zorder=1)
        ax.set_xlabel("Success rate τ" if pct else "Normalised adapted return τ (0 = random, 1 = reference)")
        ax.set_ylabel("Fraction of runs with score > τ")
        ax.set_xlim(taus[0], taus[-1])
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{metrics.FAMILIES[family]}\n{len(seeds)} runs × {len(benches)} benchmark"
                     + ("s" if len(benches) > 1 else ""), fontsize=7)
    algos = [a for a in style.order(info["algorithms"], info["floor"])
             if any(a in m for m, _, _ in families.values())]
    level = level_text(bootstrap.confidence)
    legend(fig, algos, colours, info["floor"], "Test split, final models. Line: fraction of runs (seeds × benchmarks) "
           f"with normalised score > τ; shaded: {level} stratified-bootstrap CI (rliable, {bootstrap.reps} "
           "replications, seeds resampled per benchmark)", ncol=min(len(algos), 6))
    fig.tight_layout(w_pad=1.0)
    text = ["Performance profiles (rliable score distributions) of the normalised test score of each run: "
            + "; ".join(f"{metrics.FAMILIES[f]}: {len(seeds)} runs × {len(benches)} benchmark"
                        f"{'s' if len(benches) > 1 else ''} ({', '.join(benches)})"
                        for f, (_, benches, seeds) in families.items()) + "."]
    returns = [b for b in info["benchmarks"] if b in set(test.loc[~test["has_success"].astype(bool), "benchmark"])]
    if returns:
        text.append("Normalised return = (R − R_random) / (R_reference − R_random), fixed per benchmark "
                    "(config/normalisation.yaml): " + metrics.describe_normalisation(info["normalisation"], returns)
                    + ".")
    if excluded:
        text.append(f"Left out of the profiles (not normalised): {', '.join(excluded)}.")
    caption(fig, " ".join(text))
    style.save(fig, out)
    return fig


FIGURES = {
    "learning_curves": learning_curves,
    "adaptation": adaptation,
    "ood": ood,
    "ablations": ablations,
    "aggregate": aggregate,
    "latent": latent,
    "adaptation_steps": adaptation_steps,
    "profiles": profiles,
}


def main(snakemake) -> None:
    sys.stderr = open(snakemake.log[0], "w")
    style.setup()
    FIGURES[snakemake.wildcards.figure](snakemake.params.info, list(snakemake.input), snakemake.output[0])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - provided by Snakemake's script directive
