# The figures of SPEC §7, one rule for all of them: `results/figures/{figure}.pdf`, drawn by
# workflow/scripts/plots.py (so colours, names and sizes are the same everywhere) from what
# FIGURE_INPUTS (common.smk) gives each, with its caption for
# `snakemake --report results/report.html`; the claims figure has its own rule (claims.smk).


rule figure:
    input:
        figure_inputs,
    output:
        report("results/figures/{figure}.pdf", caption="../report/figure.rst", category="Figures"),
    log:
        "logs/figures/{figure}.log",
    localrule: True
    params:
        info=plot_params(),
    script:
        "../scripts/plots.py"
