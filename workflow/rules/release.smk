rule sync_metadata:
    input:
        demo_release_inputs(),
    output:
        record=RELEASE_RECORD,
    log:
        f"{LOGS}/sync_metadata.log",
    benchmark:
        f"{BENCHMARKS}/sync_metadata.tsv"
    localrule: True
    conda:
        "../../envs/release.yaml"
    params:
        source=RELEASE_SOURCE,
    script:
        "../../scripts/sync_metadata.py"


rule release_overview:
    input:
        record=RELEASE_RECORD,
    output:
        tables=report(
            [str(results.OVERVIEW_DIR / f"{name}.csv") for name in OVERVIEW_TABLES],
            caption="../report/overview.rst",
            category="Release overview",
        ),
    log:
        f"{LOGS}/release_overview.log",
    benchmark:
        f"{BENCHMARKS}/release_overview.tsv"
    conda:
        "../../envs/release.yaml"
    script:
        "../../scripts/release_overview.py"


checkpoint select_experiments:
    input:
        record=RELEASE_RECORD,
    output:
        experiments=SELECTION,
    log:
        f"{LOGS}/select_experiments.log",
    benchmark:
        f"{BENCHMARKS}/select_experiments.tsv"
    conda:
        "../../envs/release.yaml"
    params:
        selection=config["selection"],
    script:
        "../../scripts/select_experiments.py"
