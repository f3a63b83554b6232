"""One look for every table and figure: algorithm names, colours, order, number format, figure sizes.

Colours come from the Okabe-Ito palette (readable by colour-blind readers and in greyscale
print); each known algorithm keeps its colour in every figure, and an algorithm the suite does
not know yet (your own) gets the next free colour of the palette, by its place in the config.
The floor (random) is grey and drawn dashed.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

NAMES = {
    "random": "Random",
    "trmrl": "TrMRL",
    "rl2": "RL²",
    "maml_trpo": "MAML-TRPO",
    "pearl": "PEARL",
    "varibad": "VariBAD",
}
LATEX_NAMES = {"rl2": "RL$^2$"}

COLOURS = {
    "trmrl": "#D55E00",  # vermillion
    "rl2": "#0072B2",  # blue
    "maml_trpo": "#009E73",  # bluish green
    "pearl": "#CC79A7",  # reddish purple
    "varibad": "#E69F00",  # orange
    "random": "#7F7F7F",  # grey (the floor)
}
SPARE = ["#56B4E9", "#F0E442", "#000000", "#8C564B", "#17BECF", "#BCBD22"]


def number(x: float, percent: bool = False) -> str:
    """A score as every table prints it: three significant figures (whole numbers from 100 on),
    or a rate as a percentage with one decimal."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if percent:
        x, digits = 100 * x, 1
    else:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def spread(x: float, percent: bool = False) -> str:
    """A standard deviation as the tables print it after "±": as `number`, except that a spread
    that is not 0 never prints as 0: one below the printed precision is "<0.01" ("<0.1" for a
    rate in %), and exactly 0 (every seed the same) is "0"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x == 0:
        return "0"
    text = number(x, percent)
    if float(text) == 0:
        return "<" + ("0.1" if percent else "0.01")
    return text


# Two-column paper: a full-width figure is ~7 in wide, a column ~3.4 in.
FULL_WIDTH = 7.0
COLUMN_WIDTH = 3.4


def name(algo: str) -> str:
    return NAMES.get(algo, algo)


def latex_name(algo: str) -> str:
    return LATEX_NAMES.get(algo, name(algo))


def palette(algorithms: list[str]) -> dict[str, str]:
    spare = iter(SPARE)
    return {a: COLOURS[a] if a in COLOURS else next(spare, "#333333") for a in algorithms}


def order(algorithms: list[str], floor: str) -> list[str]:
    """The config's order, the floor last (it is drawn as a reference line)."""
    return [a for a in algorithms if a != floor] + ([floor] if floor in algorithms else [])


def setup() -> None:
    """Matplotlib settings: small fonts for a two-column paper, embedded TrueType fonts."""
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
    plt.rcParams.update({
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "font.size": 8,
        "axes.titlesize": 8,
        "axes.labelsize": 8,
        "legend.fontsize": 7,
        "xtick.labelsize": 7,
        "ytick.labelsize": 7,
        "axes.titleweight": "bold",
        "lines.linewidth": 1.4,
        "savefig.bbox": "tight",
        "savefig.pad_inches": 0.02,
        # reproducible PDFs: no creation date in the file
        "pdf.compression": 6,
    })


def save(fig, path: str) -> None:
    """Write `fig` as a PDF, cropped to everything drawn (legends above the axes, captions below:
    nothing is cut off), and close it."""
    fig.savefig(path, format="pdf", bbox_inches="tight", pad_inches=0.02,
                metadata={"CreationDate": None, "Creator": "metarl-bench"})
    plt.close(fig)
