# Ablations (SPEC §4): variants of the same train rule. A variant `<setting>-<value>` is the
# run trained with `--set <setting>=<value>` (see ablation_variants in common.smk); this file
# only gathers their evaluations.


rule collect_ablations:
    input:
        ablation_eval_files,
    output:
        "results/summary/ablations.parquet",
    log:
        "logs/collect/ablations.log",
    localrule: True
    params:
        expected=ablation_expected,
    script:
        "../scripts/collect.py"
