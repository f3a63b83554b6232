# Training: one job per (benchmark, algorithm, variant, seed).
#
# The run's settings go through a small per-run file (results/configs/...), written by a
# local rule with `metarl config`. The train rule's shell line never changes, so editing one
# algorithm's presets reruns only the runs whose resolved settings changed (see
# resolved_settings in common.smk), not every training job.

rule resolve_config:
    output:
        "results/configs/{env}/{algo}/{variant}/seed{seed}.yaml",
    log:
        "logs/resolve_config/{env}/{algo}/{variant}/seed{seed}.log",
    localrule: True
    priority: train_runtime
    params:
        preset=PRESET,
        overrides=set_args,
        # not used by the command: the rerun trigger (a changed value reruns this run)
        settings=resolved_settings,
    shell:
        "metarl config --algo {wildcards.algo} --env {wildcards.env} --seed {wildcards.seed} "
        "--preset {params.preset} --variant {wildcards.variant} {params.overrides} "
        "--out {output} > {log} 2>&1"


# A job stopped by its time limit (SIGTERM: metarl checkpoints and exits 75) or killed fails;
# Snakemake deletes its outputs, and the next attempt (retries) resumes from the checkpoint in
# results/ckpt/..., which is deliberately not an output. The run's tb/ (TensorBoard event files)
# and wandb/ (`settings: {wandb: offline}`) are not outputs either: views of its logs.
rule train:
    input:
        config="results/configs/{env}/{algo}/{variant}/seed{seed}.yaml",
    output:
        config="results/runs/{env}/{algo}/{variant}/seed{seed}/config.yaml",
        metadata="results/runs/{env}/{algo}/{variant}/seed{seed}/metadata.json",
        progress=ensure("results/runs/{env}/{algo}/{variant}/seed{seed}/progress.csv", non_empty=True),
        eval=ensure("results/runs/{env}/{algo}/{variant}/seed{seed}/eval.csv", non_empty=True),
        timings="results/runs/{env}/{algo}/{variant}/seed{seed}/timings.csv",
        model="results/runs/{env}/{algo}/{variant}/seed{seed}/model.pt",
    log:
        "logs/train/{env}/{algo}/{variant}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{env}/{algo}/{variant}/seed{seed}.tsv"
    threads: train_resource("threads", 1)
    priority: train_runtime
    resources:
        mem_mb=train_resource("mem_mb", 4000),
        runtime=train_runtime,
        gpu=train_resource("gpu", 0),
    retries: RETRIES["train"]
    shell:
        "metarl train --config {input.config} {TRACKING_ARGS} --run-dir $(dirname {output.model}) > {log} 2>&1"
