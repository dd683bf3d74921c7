rule behavior_session:
    input:
        stores=session_stores,
    output:
        table=str(results.behavior_session_table("{ophys_session_id}")),
        figure=report(
            str(results.behavior_figure("{ophys_session_id}")),
            caption="../report/behavior_session.rst",
            category="Behavior",
        ),
    log:
        f"{LOGS}/behavior_session/{{ophys_session_id}}.log",
    benchmark:
        f"{BENCHMARKS}/behavior_session/{{ophys_session_id}}.tsv"
    conda:
        "../../envs/figures.yaml"
    script:
        "../../scripts/behavior_session.py"


rule behavior_performance:
    input:
        tables=session_behavior_tables,
    output:
        table=report(
            str(results.BEHAVIOR_PERFORMANCE),
            caption="../report/behavior_performance.rst",
            category="Behavior",
        ),
    log:
        f"{LOGS}/behavior_performance.log",
    benchmark:
        f"{BENCHMARKS}/behavior_performance.tsv"
    conda:
        "../../envs/figures.yaml"
    script:
        "../../scripts/behavior_performance.py"
