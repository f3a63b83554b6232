# Evaluation of final models beyond the test split (which training evaluates itself): the
# benchmark's `ood` split and HalfCheetahVel's velocity `sweep`, and TrMRL's episodic-memory
# export for latent.pdf, and every step's reward (steps_{split}.npz) for adaptation_steps.pdf.
# `--out` keeps the run's own eval.csv (a train output) untouched.


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


# Every step's reward of a final model's evaluation (adaptation_steps.pdf). On split test it
# is the training's own final test evaluation again (same iteration and seeds): the npz's
# per-episode sums are eval.csv's returns. The split wildcard also takes `test` here.
rule step_rewards:
    input:
        model="results/runs/{env}/{algo}/{variant}/seed{seed}/model.pt",
        config="results/runs/{env}/{algo}/{variant}/seed{seed}/config.yaml",
    output:
        steps="results/runs/{env}/{algo}/{variant}/seed{seed}/steps_{split}.npz",
        # the evaluation rows of this pass; the numbers are those of eval.csv / rule evaluate
        eval=temp("results/runs/{env}/{algo}/{variant}/seed{seed}/steps_{split}_eval.csv"),
    log:
        "logs/step_rewards/{env}/{algo}/{variant}/seed{seed}/{split}.log",
    wildcard_constraints:
        split=alternatives(["test", *all_eval_splits()]),
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
        "--out {output.eval} --steps {output.steps} > {log} 2>&1"
