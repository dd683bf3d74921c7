if DEMO:

    rule demo_release:
        output:
            manifest=demo_manifest(),
        log:
            f"{LOGS}/demo_release.log",
        benchmark:
            f"{BENCHMARKS}/demo_release.tsv"
        conda:
            "../../envs/nwb.yaml"
        threads: DEMO["workers"]
        params:
            demo=DEMO,
        script:
            "../../scripts/demo_release.py"
