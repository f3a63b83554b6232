# A results release (docs/workflow.md, Releases): `snakemake release` gathers what `all` makes
# and every run's files into results/release/ and results/release.tar.gz, with a model card per
# run and a SHA-256 manifest (workflow/scripts/release.py). Not part of `all`.


rule release:
    input:
        release_inputs(),
    output:
        # the release is whole when its manifest is there (the script writes the directory beside
        # and moves it into place); not a directory() output, into which Snakemake would put a
        # .snakemake_timestamp that the manifest does not list
        manifest="results/release/MANIFEST.sha256",
        tarball="results/release.tar.gz",
    log:
        "logs/release/release.log",
    localrule: True
    params:
        # the budgets a smaller preset's runs are stated against
        paper_budgets=claims_lib.paper_budgets(),
    script:
        "../scripts/release.py"
