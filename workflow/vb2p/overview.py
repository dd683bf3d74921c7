"""What a release holds: the tables Allen's own dataset tutorial builds to describe it, one CSV each."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

OVERVIEW_TABLES = (
    "equipment",
    "mice_per_genotype",
    "lines_and_indicators",
    "session_types_per_project",
    "depths_and_structures_per_project",
    "behavior_session_project_codes",
    "mice_with_omissions_during_habituation",
    "experiments_per_container",
    "experiments_per_session",
    "summary",
)


def equipment(experiments: pd.DataFrame) -> pd.DataFrame:
    return (
        experiments.reset_index()
        .groupby("equipment_name")
        .agg(n_ophys_sessions=("ophys_session_id", "nunique"), n_experiments=("ophys_experiment_id", "nunique"))
        .reset_index()
    )


def mice_per_genotype(experiments: pd.DataFrame) -> pd.DataFrame:
    return experiments.groupby("full_genotype").mouse_id.nunique().rename("n_mice").reset_index()


def lines_and_indicators(experiments: pd.DataFrame) -> pd.DataFrame:
    return (
        experiments.groupby(["cre_line", "reporter_line", "indicator"])
        .mouse_id.nunique()
        .rename("n_mice")
        .reset_index()
    )


def session_types_per_project(sessions: pd.DataFrame) -> pd.DataFrame:
    return sessions.groupby(["project_code", "session_type"]).size().rename("n_ophys_sessions").reset_index()


def depths_and_structures_per_project(experiments: pd.DataFrame) -> pd.DataFrame:
    return (
        experiments.groupby(["project_code", "targeted_structure", "imaging_depth"])
        .size()
        .rename("n_experiments")
        .reset_index()
    )


def behavior_session_project_codes(behavior: pd.DataFrame, sessions: pd.DataFrame) -> pd.DataFrame:
    """Every behavior session (training included) with the project_code of its mouse's ophys sessions."""
    project_of_mouse = sessions.groupby("mouse_id").project_code.first()
    result = behavior.reset_index()[["behavior_session_id", "mouse_id", "session_type", "project_code"]]
    result = result.rename(columns={"project_code": "project_code_in_table"})
    result["project_code"] = result.mouse_id.map(project_of_mouse)
    return result


def mice_with_omissions_during_habituation(behavior: pd.DataFrame) -> pd.DataFrame:
    """Mice whose first OPHYS_1 session already had prior exposures to omissions: they saw them in habituation."""
    first_ophys_1 = (
        behavior[behavior.session_type.str.startswith("OPHYS_1")]
        .reset_index()
        .sort_values("date_of_acquisition")
        .groupby("mouse_id")
        .first()
    )
    saw = first_ophys_1[first_ophys_1.prior_exposures_to_omissions > 0]
    return saw.reset_index()[["mouse_id", "full_genotype", "project_code", "prior_exposures_to_omissions"]]


def experiments_per_container(experiments: pd.DataFrame) -> pd.DataFrame:
    return (
        experiments.reset_index()
        .groupby(["ophys_container_id", "mouse_id", "cre_line", "targeted_structure", "imaging_depth"])
        .agg(n_experiments=("ophys_experiment_id", "nunique"), n_sessions=("ophys_session_id", "nunique"))
        .reset_index()
    )


def experiments_per_session(experiments: pd.DataFrame) -> pd.DataFrame:
    return (
        experiments.reset_index()
        .groupby(["ophys_session_id", "mouse_id", "equipment_name", "session_type"])
        .agg(n_experiments=("ophys_experiment_id", "nunique"))
        .reset_index()
    )


def summary(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    experiments = tables["ophys_experiment_table"]
    rows = {
        "mice": experiments.mouse_id.nunique(),
        "behavior_sessions": len(tables["behavior_session_table"]),
        "ophys_sessions": len(tables["ophys_session_table"]),
        "ophys_experiments": len(experiments),
        "ophys_containers": experiments.ophys_container_id.nunique(),
        "cells_in_cells_table": len(tables["ophys_cells_table"]) if "ophys_cells_table" in tables else None,
    }
    return pd.DataFrame({"quantity": list(rows), "value": list(rows.values())})


def release_overview(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    experiments = tables["ophys_experiment_table"]
    sessions = tables["ophys_session_table"]
    behavior = tables["behavior_session_table"]
    return {
        "equipment": equipment(experiments),
        "mice_per_genotype": mice_per_genotype(experiments),
        "lines_and_indicators": lines_and_indicators(experiments),
        "session_types_per_project": session_types_per_project(sessions),
        "depths_and_structures_per_project": depths_and_structures_per_project(experiments),
        "behavior_session_project_codes": behavior_session_project_codes(behavior, sessions),
        "mice_with_omissions_during_habituation": mice_with_omissions_during_habituation(behavior),
        "experiments_per_container": experiments_per_container(experiments),
        "experiments_per_session": experiments_per_session(experiments),
        "summary": summary(tables),
    }


def write_overview(overview: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in OVERVIEW_TABLES:
        path = out_dir / f"{name}.csv"
        overview[name].to_csv(path, index=False, lineterminator="\n")
        paths.append(path)
    return paths
