# Published claims against the runs of the grid (issue 16; docs/claims.md): the claims are
# data (config `claims`: config/claims.yaml plus `extra`), checked here when the workflow is
# parsed (an unknown algorithm, benchmark, metric or key stops it with one line), and judged by
# workflow/scripts/claims.py from the summaries of rule aggregate (scores.parquet, runs.parquet:
# main grid and ablations) and the per-step rewards of the runs a steps_to_best claim needs.

import sys

sys.path.insert(0, str(REPO / "workflow" / "scripts"))
import claims as claims_lib  # noqa: E402

CLAIM_SETTINGS = config.get("claims") or {}
try:
    CLAIMS = claims_lib.load(CLAIM_SETTINGS, claims_lib.known_from_metarl(), ABLATIONS.get("benchmark"))
except claims_lib.ClaimError as exc:
    raise WorkflowError(f"config: claims: {exc}") from None

# a claim's variant name (`<setting>-<value>`) -> the run variant: the ablation's own, or
# `default` where the value is the preset's (see ablation_variants in common.smk)
CLAIM_VARIANTS = {
    name: name if name in VARIANTS else "default"
    for name in (f"{f['setting']}-{value_name(v)}" for f in ABLATIONS.get("factors") or [] for v in f["values"])
}
CLAIM_STEP_RUNS = claims_lib.step_runs(CLAIMS, main_runs() + ablation_runs(), CLAIM_VARIANTS)
CLAIM_INFO = {
    **plot_params(),
    "preset": PRESET,
    "eval_splits": {b: eval_splits_of(b) for b in BENCHMARKS},
    "claims": CLAIMS,
    "claim_settings": {k: v for k, v in CLAIM_SETTINGS.items() if k not in ("file", "extra")},
    "ablation": {"algorithm": ABLATIONS.get("algorithm"), "benchmark": ABLATIONS.get("benchmark"),
                 "variants": CLAIM_VARIANTS},
    "paper_budgets": claims_lib.paper_budgets(),
}


rule table_claims:
    input:
        scores="results/summary/scores.parquet",
        runs="results/summary/runs.parquet",
        # per-step rewards, where a claim needs them and the workflow can make them
        steps=lambda wildcards: (
            [run_file(r, "steps_test.npz") for r in CLAIM_STEP_RUNS] if rules.has("step_rewards") else []
        ),
    output:
        csv=report("results/tables/claims.csv", caption="../report/claims_table.rst", category="Tables"),
        md="results/tables/claims.md",
        tex="results/tables/claims.tex",
    log:
        "logs/tables/claims.log",
    localrule: True
    params:
        what="table",
        info=CLAIM_INFO,
        steps_rule=lambda wildcards: rules.has("step_rewards"),
    script:
        "../scripts/claims.py"


rule figure_claims:
    input:
        "results/tables/claims.csv",
    output:
        report("results/figures/claims.pdf", caption="../report/claims.rst", category="Figures"),
    log:
        "logs/figures/claims.log",
    localrule: True
    params:
        what="figure",
        info={"preset": PRESET, "aggregate": dict(config["aggregate"])},
    script:
        "../scripts/claims.py"
