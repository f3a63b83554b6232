# The pipeline's entry point; everything lives in workflow/ (SPEC §2).
from snakemake.utils import min_version

min_version("9.20")


include: "workflow/Snakefile"


# Snakemake drops a `default_target` set inside an included file, so it is named here: a bare
# `snakemake` (and `snakemake --report FILE`) means `snakemake all`.
rule default:
    default_target: True
    localrule: True
    input:
        rules.all.input,
