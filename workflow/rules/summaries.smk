# Summaries: every run verified, then gathered into one tidy table per benchmark (and one of the
# ablations), and the whole-suite summaries the tables and figures read (runs.parquet,
# scores.parquet, aggregate.csv). Scripts in workflow/scripts/; the statistics (rliable IQM with
# stratified bootstrap CIs, probability of improvement) live in workflow/scripts/metrics.py.


rule verify_runs:
    """`metarl verify` over the run directories of one summary (a benchmark's main grid, or
    `ablations`): schema, row counts, recorded SHA-256s, that model.pt loads. On a problem the
    job fails and prints each problem with the command that regenerates the run."""
    input:
        verified_files,
    output:
        "results/summary/verified/{group}.txt",
    log:
        "logs/verify/{group}.log",
    localrule: True
    params:
        runs=verified_run_dirs,
    shell:
        "if [ -z '{params.runs}' ]; then echo 'no runs' > {log}; cp {log} {output}; exit 0; fi; "
        "metarl verify {params.runs} > {log} 2>&1 && cp {log} {output}"
        " || {{ grep -v '^complete ' {log} >&2; exit 4; }}"


rule collect_benchmark:
    input:
        evals=benchmark_eval_files,
        verified="results/summary/verified/{env}.txt",
    output:
        "results/summary/benchmarks/{env}.parquet",
    log:
        "logs/collect/{env}.log",
    localrule: True
    params:
        expected=benchmark_expected,
    script:
        "../scripts/collect.py"


# Ablations (SPEC §4) are variants of the same train rule: a variant `<setting>-<value>` is the
# run trained with `--set <setting>=<value>` (see ablation_variants in common.smk).
rule collect_ablations:
    input:
        evals=ablation_eval_files,
        verified="results/summary/verified/ablations.txt",
    output:
        "results/summary/ablations.parquet",
    log:
        "logs/collect/ablations.log",
    localrule: True
    params:
        expected=ablation_expected,
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
