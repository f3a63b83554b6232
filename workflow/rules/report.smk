# Figures (SPEC §7), each wrapped in report() with its caption for
# `snakemake --report results/report.html`. One script draws them all (workflow/scripts/plots.py,
# dispatching on params.figure) so that colours, names and sizes are the same everywhere.


rule figure_learning_curves:
    input:
        benchmark_summaries(),
    output:
        report(
            "results/figures/learning_curves.pdf",
            caption="../report/learning_curves.rst",
            category="Figures",
        ),
    log:
        "logs/figures/learning_curves.log",
    localrule: True
    params:
        figure="learning_curves",
        info=plot_params(),
    script:
        "../scripts/plots.py"


rule figure_adaptation:
    input:
        benchmark_summaries(),
    output:
        report(
            "results/figures/adaptation.pdf",
            caption="../report/adaptation.rst",
            category="Figures",
        ),
    log:
        "logs/figures/adaptation.log",
    localrule: True
    params:
        figure="adaptation",
        info=plot_params(),
    script:
        "../scripts/plots.py"


rule figure_ood:
    input:
        benchmark_summaries(ood_benchmarks()),
    output:
        report("results/figures/ood.pdf", caption="../report/ood.rst", category="Figures"),
    log:
        "logs/figures/ood.log",
    localrule: True
    params:
        figure="ood",
        info=plot_params(),
    script:
        "../scripts/plots.py"


rule figure_ablations:
    input:
        "results/summary/ablations.parquet",
    output:
        report(
            "results/figures/ablations.pdf",
            caption="../report/ablations.rst",
            category="Figures",
        ),
    log:
        "logs/figures/ablations.log",
    localrule: True
    params:
        figure="ablations",
        info=plot_params(),
    script:
        "../scripts/plots.py"


rule figure_aggregate:
    input:
        benchmark_summaries(),
    output:
        report(
            "results/figures/aggregate.pdf",
            caption="../report/aggregate.rst",
            category="Figures",
        ),
    log:
        "logs/figures/aggregate.log",
    localrule: True
    params:
        figure="aggregate",
        info=plot_params(),
    script:
        "../scripts/plots.py"


rule figure_latent:
    input:
        latent_files,
    output:
        report("results/figures/latent.pdf", caption="../report/latent.rst", category="Figures"),
    log:
        "logs/figures/latent.log",
    localrule: True
    params:
        figure="latent",
        info=plot_params(),
    script:
        "../scripts/plots.py"


rule figure_adaptation_steps:
    input:
        step_files(),
    output:
        report(
            "results/figures/adaptation_steps.pdf",
            caption="../report/adaptation_steps.rst",
            category="Figures",
        ),
    log:
        "logs/figures/adaptation_steps.log",
    localrule: True
    params:
        figure="adaptation_steps",
        info=plot_params(),
    script:
        "../scripts/plots.py"


rule figure_profiles:
    input:
        "results/summary/scores.parquet",
    output:
        report(
            "results/figures/profiles.pdf",
            caption="../report/profiles.rst",
            category="Figures",
        ),
    log:
        "logs/figures/profiles.log",
    localrule: True
    params:
        figure="profiles",
        info=plot_params(),
    script:
        "../scripts/plots.py"
