# Evaluation of final models beyond the test split (which training evaluates itself): the
# benchmark's `ood` split and HalfCheetahVel's velocity `sweep`, and TrMRL's episodic-memory
# export for latent.pdf. `--out` keeps the run's own eval.csv (a train output) untouched.


rule evaluate:
    input:
        model="results/runs/{env}/{algo}/{variant}/seed{seed}/model.pt",
        config="results/runs/{env}/{algo}/{variant}/seed{seed}/config.yaml",
    output:
        ensure("results/runs/{env}/{algo}/{variant}/seed{seed}/eval_{split}.csv", non_empty=True),
    log:
        "logs/evaluate/{env}/{algo}/{variant}/seed{seed}/{split}.log",
    params:
        tasks=eval_tasks_arg,
    threads: eval_resource("threads", 1)
    resources:
        mem_mb=eval_resource("mem_mb", 4000),
        runtime=eval_resource("runtime", 60),
        gpu=eval_resource("gpu", 0),
    retries: RETRIES["evaluate"]
    shell:
        "metarl evaluate --run $(dirname {input.model}) --split {wildcards.split} {params.tasks} "
        "--out {output} > {log} 2>&1"


rule export_memory:
    input:
        model="results/runs/{env}/{algo}/{variant}/seed{seed}/model.pt",
        config="results/runs/{env}/{algo}/{variant}/seed{seed}/config.yaml",
    output:
        memory="results/runs/{env}/{algo}/{variant}/seed{seed}/memory_{split}.npz",
        # the evaluation rows of this pass; the numbers are those of rule evaluate
        eval=temp("results/runs/{env}/{algo}/{variant}/seed{seed}/memory_{split}_eval.csv"),
    log:
        "logs/export_memory/{env}/{algo}/{variant}/seed{seed}/{split}.log",
    params:
        tasks=eval_tasks_arg,
    threads: eval_resource("threads", 1)
    resources:
        mem_mb=eval_resource("mem_mb", 4000),
        runtime=eval_resource("runtime", 60),
        gpu=eval_resource("gpu", 0),
    retries: RETRIES["evaluate"]
    shell:
        "metarl evaluate --run $(dirname {input.model}) --split {wildcards.split} {params.tasks} "
        "--out {output.eval} --export-memory {output.memory} > {log} 2>&1"
