rule stimulus_responses:
    input:
        store=str(results.store("{ophys_experiment_id}")),
        # what the metadata param is read from (a job on a SLURM node re-reads it): ancient, as its time is no reason
        # to re-run; a change to the experiment's row is, through the param
        selection=ancient(SELECTION),
    output:
        responses=directory(str(results.responses_store("{ophys_experiment_id}"))),
    log:
        f"{LOGS}/stimulus_responses/{{ophys_experiment_id}}.log",
    benchmark:
        f"{BENCHMARKS}/stimulus_responses/{{ophys_experiment_id}}.tsv"
    conda:
        "../../envs/zarr.yaml"
    params:
        responses=config["responses"],
        # the experiment's row of the selection: another selection re-runs only experiments whose row changed
        metadata=response_metadata,
    script:
        "../../scripts/stimulus_responses.py"


rule response_table:
    input:
        stores=selected_response_stores,
    output:
        table=str(results.RESPONSE_TABLE),
    log:
        f"{LOGS}/response_table.log",
    benchmark:
        f"{BENCHMARKS}/response_table.tsv"
    conda:
        "../../envs/zarr.yaml"
    script:
        "../../scripts/response_table.py"


rule platform_figures:
    input:
        table=str(results.RESPONSE_TABLE),
    output:
        tables=[str(results.platform_table(name)) for name in results.PLATFORM_TABLES],
        figures=report(
            [str(results.platform_figure(name)) for name in results.PLATFORM_FIGURES],
            caption="../report/platform_figures.rst",
            category="Responses",
        ),
    log:
        f"{LOGS}/platform_figures.log",
    benchmark:
        f"{BENCHMARKS}/platform_figures.tsv"
    conda:
        "../../envs/figures.yaml"
    params:
        platform=config["platform"],
    script:
        "../../scripts/platform_figures.py"
