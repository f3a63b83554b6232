# The tables of SPEC §7, one rule for all of them: `results/tables/{table}.{csv,md,tex}`, drawn
# by workflow/scripts/tables.py from what TABLE_INPUTS (common.smk) gives each (the aggregate
# step's scores.parquet and aggregate.csv, or per-episode summaries); the claims table has its
# own rule (claims.smk).


rule table:
    input:
        unpack(table_inputs),
    output:
        csv=report("results/tables/{table}.csv", caption="../report/table.rst", category="Tables"),
        md="results/tables/{table}.md",
        tex="results/tables/{table}.tex",
    log:
        "logs/tables/{table}.log",
    localrule: True
    params:
        info=plot_params(),
    script:
        "../scripts/tables.py"
