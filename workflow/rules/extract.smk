rule download_experiment:
    input:
        record=RELEASE_RECORD,
    output:
        download=str(results.download_receipt("{ophys_experiment_id}")),
    log:
        f"{LOGS}/download_experiment/{{ophys_experiment_id}}.log",
    benchmark:
        f"{BENCHMARKS}/download_experiment/{{ophys_experiment_id}}.tsv"
    localrule: True
    conda:
        "../../envs/release.yaml"
    params:
        source=RELEASE_SOURCE,
        mode=config["download"]["mode"],
    script:
        "../../scripts/download_experiment.py"


rule session_task:
    input:
        download=task_source_download,
    output:
        task=directory(str(results.session_task("{ophys_session_id}"))),
    log:
        f"{LOGS}/session_task/{{ophys_session_id}}.log",
    benchmark:
        f"{BENCHMARKS}/session_task/{{ophys_session_id}}.tsv"
    conda:
        "../../envs/zarr.yaml"
    params:
        source=RELEASE_SOURCE,
        ophys_experiment_id=task_source,
    script:
        "../../scripts/session_task.py"


rule extract_experiment:
    input:
        download=str(results.download_receipt("{ophys_experiment_id}")),
        session_task=session_task_dir,
    output:
        store=directory(str(results.store("{ophys_experiment_id}"))),
    log:
        f"{LOGS}/extract_experiment/{{ophys_experiment_id}}.log",
    benchmark:
        f"{BENCHMARKS}/extract_experiment/{{ophys_experiment_id}}.tsv"
    conda:
        "../../envs/zarr.yaml"
    params:
        source=RELEASE_SOURCE,
        extraction=config["extraction"],
    script:
        "../../scripts/extract_experiment.py"


rule zarr_index:
    input:
        stores=selected_stores,
        record=RELEASE_RECORD,
    output:
        index=report(
            ZARR_INDEX, caption="../report/zarr_index.rst", category="Derived dataset"
        ),
        mismatches=report(
            CELL_COUNT_MISMATCHES,
            caption="../report/zarr_index.rst",
            category="Derived dataset",
        ),
        transfers=str(results.TRANSFERS),
    log:
        f"{LOGS}/zarr_index.log",
    benchmark:
        f"{BENCHMARKS}/zarr_index.tsv"
    conda:
        "../../envs/zarr.yaml"
    script:
        "../../scripts/zarr_index.py"
