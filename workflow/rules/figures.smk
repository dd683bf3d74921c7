rule container_alignment:
    input:
        stores=container_stores,
    output:
        figure=report(
            str(results.alignment_figure("{ophys_container_id}")),
            caption="../report/container_alignment.rst",
            category="Container alignment",
        ),
        table=str(results.alignment_table("{ophys_container_id}")),
    log:
        f"{LOGS}/container_alignment/{{ophys_container_id}}.log",
    benchmark:
        f"{BENCHMARKS}/container_alignment/{{ophys_container_id}}.tsv"
    conda:
        "../../envs/figures.yaml"
    params:
        upsample=config["figures"]["alignment_upsample"],
    script:
        "../../scripts/container_alignment.py"


rule session_population:
    input:
        stores=session_stores,
    output:
        figure=report(
            str(results.session_figure("{ophys_session_id}")),
            caption="../report/session_population.rst",
            category="Session population dF/F",
        ),
        table=str(results.session_table("{ophys_session_id}")),
    log:
        f"{LOGS}/session_population/{{ophys_session_id}}.log",
    benchmark:
        f"{BENCHMARKS}/session_population/{{ophys_session_id}}.tsv"
    conda:
        "../../envs/figures.yaml"
    params:
        window=config["figures"]["session_window_s"],
    script:
        "../../scripts/session_population.py"


rule cell_counts:
    input:
        record=RELEASE_RECORD,
        index=ZARR_INDEX,
    output:
        tables=report(
            [
                str(results.cell_count_table(name))
                for name in results.CELL_COUNT_TABLES
            ],
            caption="../report/cell_counts.rst",
            category="Cell counts",
        ),
        figures=report(
            [
                str(results.cell_count_figure(name))
                for name in results.CELL_COUNT_FIGURES
            ],
            caption="../report/cell_counts.rst",
            category="Cell counts",
        ),
    log:
        f"{LOGS}/cell_counts.log",
    benchmark:
        f"{BENCHMARKS}/cell_counts.tsv"
    conda:
        "../../envs/figures.yaml"
    params:
        depth_bin_um=config["figures"]["depth_bin_um"],
    script:
        "../../scripts/cell_counts.py"
