# Gathering and statistics: one tidy table per benchmark, the whole-suite summaries, and the
# tables of SPEC §7. Scripts in workflow/scripts/; the statistics (rliable IQM with stratified
# bootstrap CIs, probability of improvement) live in workflow/scripts/metrics.py.


rule collect_benchmark:
    input:
        benchmark_eval_files,
    output:
        "results/summary/benchmarks/{env}.parquet",
    log:
        "logs/collect/{env}.log",
    localrule: True
    params:
        expected=benchmark_expected,
    script:
        "../scripts/collect.py"


rule aggregate:
    input:
        benchmarks=benchmark_summaries(),
        ablations="results/summary/ablations.parquet",
    output:
        runs="results/summary/runs.parquet",
        scores="results/summary/scores.parquet",
        aggregate=report(
            "results/summary/aggregate.csv",
            caption="../report/aggregate_csv.rst",
            category="Data",
        ),
    log:
        "logs/aggregate/aggregate.log",
    localrule: True
    params:
        info=plot_params(),
    script:
        "../scripts/aggregate.py"


rule table_main:
    input:
        benchmark_summaries(),
    output:
        csv=report("results/tables/main.csv", caption="../report/table_main.rst", category="Tables"),
        md="results/tables/main.md",
        tex="results/tables/main.tex",
    log:
        "logs/tables/main.log",
    localrule: True
    params:
        table="main",
        info=plot_params(),
    script:
        "../scripts/tables.py"


rule table_ood:
    input:
        benchmark_summaries(ood_benchmarks()),
    output:
        csv=report("results/tables/ood.csv", caption="../report/table_ood.rst", category="Tables"),
        md="results/tables/ood.md",
        tex="results/tables/ood.tex",
    log:
        "logs/tables/ood.log",
    localrule: True
    params:
        table="ood",
        info=plot_params(),
    script:
        "../scripts/tables.py"


rule table_ablations:
    input:
        "results/summary/ablations.parquet",
    output:
        csv=report(
            "results/tables/ablations.csv",
            caption="../report/table_ablations.rst",
            category="Tables",
        ),
        md="results/tables/ablations.md",
        tex="results/tables/ablations.tex",
    log:
        "logs/tables/ablations.log",
    localrule: True
    params:
        table="ablations",
        info=plot_params(),
    script:
        "../scripts/tables.py"


rule table_adaptation:
    input:
        benchmark_summaries(),
    output:
        csv=report(
            "results/tables/adaptation.csv",
            caption="../report/table_adaptation.rst",
            category="Tables",
        ),
        md="results/tables/adaptation.md",
        tex="results/tables/adaptation.tex",
    log:
        "logs/tables/adaptation.log",
    localrule: True
    params:
        table="adaptation",
        info=plot_params(),
    script:
        "../scripts/tables.py"


rule table_metaworld_vs_paper:
    input:
        paper_summaries,
    output:
        csv=report(
            "results/tables/metaworld_vs_paper.csv",
            caption="../report/table_metaworld_vs_paper.rst",
            category="Tables",
        ),
        md="results/tables/metaworld_vs_paper.md",
        tex="results/tables/metaworld_vs_paper.tex",
    log:
        "logs/tables/metaworld_vs_paper.log",
    localrule: True
    params:
        table="metaworld_vs_paper",
        info=plot_params(),
    script:
        "../scripts/tables.py"
