"""The four metadata tables of a demo release, as text in the real CSV encodings (layout document section 4).

Every cell is formatted here, by column, the way the published CSVs write it: Python-repr lists, True/False,
'951410079.0' for ids that pandas wrote from a float column, dates with or without '+00:00', empty cells for NaN.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from vb2p.demo.design import BehaviorSession, Experiment, Mouse, ReleaseDesign
from vb2p.demo.task import TRIAL_COUNT_COLUMNS, plan_session_task, trial_counts

MOUSE_COLUMNS = (
    "mouse_id",
    "indicator",
    "full_genotype",
    "driver_line",
    "cre_line",
    "reporter_line",
    "sex",
    "age_in_days",
)
SESSION_COLUMNS = (
    "project_code",
    "session_type",
    "session_number",
    "image_set",
    "behavior_type",
    "experience_level",
    "prior_exposures_to_session_type",
    "prior_exposures_to_image_set",
    "prior_exposures_to_omissions",
    "date_of_acquisition",
    "equipment_name",
)
BEHAVIOR_SESSION_COLUMNS = (
    ("behavior_session_id", "ophys_session_id", "ophys_container_id")
    + MOUSE_COLUMNS
    + SESSION_COLUMNS
    + (
        "imaging_plane_group_count",
        "num_depths_per_area",
        "num_targeted_structures",
        "ophys_experiment_id",
        "file_id",
    )
    + TRIAL_COUNT_COLUMNS
)
OPHYS_SESSION_COLUMNS = (
    ("ophys_session_id", "behavior_session_id", "ophys_container_id")
    + MOUSE_COLUMNS
    + SESSION_COLUMNS
    + (
        "num_targeted_structures",
        "imaging_plane_group_count",
        "ophys_experiment_id",
        "num_depths_per_area",
    )
)
EXPERIMENT_COLUMNS = (
    ("ophys_experiment_id", "behavior_session_id", "ophys_session_id", "ophys_container_id")
    + MOUSE_COLUMNS
    + ("imaging_depth", "targeted_structure", "targeted_imaging_depth", "imaging_plane_group")
    + SESSION_COLUMNS[:5]
    + ("passive",)
    + SESSION_COLUMNS[5:]
    + ("published_at", "isi_experiment_id", "file_id")
)
CELLS_COLUMNS = ("cell_roi_id", "cell_specimen_id", "ophys_experiment_id")
FIRST_PUBLISHED = dt.date(2021, 3, 25)


def _int(value) -> str:
    return "" if value is None else str(int(value))


def _float(value) -> str:
    return "" if value is None else f"{float(value):.1f}"


def _list(values) -> str:
    return repr([v if isinstance(v, str) else int(v) for v in values])


def _date(value: dt.datetime, with_zone: bool) -> str:
    text = value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return text + "+00:00" if with_zone else text


def _mouse_cells(mouse: Mouse, session: BehaviorSession) -> dict[str, str]:
    genotype = mouse.genotype
    return {
        "mouse_id": mouse.mouse_id,
        "indicator": genotype["indicator"],
        "full_genotype": genotype["full_genotype"],
        "driver_line": _list(genotype["driver_line"]),
        "cre_line": genotype["cre_line"],
        "reporter_line": genotype["reporter_line"],
        "sex": mouse.plan.sex,
        "age_in_days": str((session.date_of_acquisition - mouse.date_of_birth).days),
    }


def _plane_counts(mouse: Mouse, session: BehaviorSession) -> dict[str, int | None]:
    structures = {e.targeted_structure for e in session.experiments}
    depths_per_area = len(mouse.plan.planes) // len({s for s, _ in mouse.plan.planes})
    groups = {e.imaging_plane_group for e in session.experiments if e.imaging_plane_group is not None}
    return {
        "num_targeted_structures": len(structures),
        "num_depths_per_area": depths_per_area,
        "imaging_plane_group_count": len(groups) if groups else None,
    }


def _session_cells(design: ReleaseDesign, session: BehaviorSession, image_set: str) -> dict[str, str]:
    mouse = design.mice[session.mouse_index]
    return {
        **_mouse_cells(mouse, session),
        "project_code": mouse.plan.project_code,
        "session_type": session.session_type,
        "image_set": image_set,
        "behavior_type": "passive_viewing" if session.passive else "active_behavior",
        "experience_level": session.experience_level,
        "prior_exposures_to_session_type": str(session.prior_exposures_to_session_type),
        "prior_exposures_to_omissions": str(session.prior_exposures_to_omissions),
        "equipment_name": session.equipment_name,
    }


def behavior_session_table(design: ReleaseDesign) -> pd.DataFrame:
    """Ophys sessions count the trials of the task in their files; the demo's other sessions have no task."""
    rows = []
    for session in design.sessions:
        mouse = design.mice[session.mouse_index]
        trials = trial_counts(plan_session_task(design, session)) if session.is_ophys else session.trial_counts
        row = _session_cells(design, session, session.image_set)
        row.update(
            behavior_session_id=str(session.behavior_session_id),
            session_number=_float(session.session_number),
            prior_exposures_to_image_set=_float(session.prior_exposures_to_image_set),
            date_of_acquisition=_date(session.date_of_acquisition, with_zone=True),
            file_id=_int(session.file_id),
            **{column: str(trials[column]) for column in TRIAL_COUNT_COLUMNS},
        )
        if session.is_ophys:
            counts = _plane_counts(mouse, session)
            row.update(
                ophys_session_id=_float(session.ophys_session_id),
                ophys_container_id=_list(e.ophys_container_id for e in session.experiments),
                ophys_experiment_id=_list(e.ophys_experiment_id for e in session.experiments),
                imaging_plane_group_count=_float(counts["imaging_plane_group_count"]),
                num_depths_per_area=_float(counts["num_depths_per_area"]),
                num_targeted_structures=_float(counts["num_targeted_structures"]),
            )
        rows.append(row)
    return _frame(rows, BEHAVIOR_SESSION_COLUMNS)


def ophys_session_table(design: ReleaseDesign) -> pd.DataFrame:
    rows = []
    for session in design.sessions:
        if not session.is_ophys:
            continue
        mouse = design.mice[session.mouse_index]
        counts = _plane_counts(mouse, session)
        row = _session_cells(design, session, session.image_set)
        row.update(
            ophys_session_id=str(session.ophys_session_id),
            behavior_session_id=str(session.behavior_session_id),
            ophys_container_id=_list(e.ophys_container_id for e in session.experiments),
            ophys_experiment_id=_list(e.ophys_experiment_id for e in session.experiments),
            session_number=_int(session.session_number),
            prior_exposures_to_image_set=_int(session.prior_exposures_to_image_set),
            date_of_acquisition=_date(session.date_of_acquisition, with_zone=False),
            num_targeted_structures=_int(counts["num_targeted_structures"]),
            imaging_plane_group_count=_float(counts["imaging_plane_group_count"]),
            num_depths_per_area=_int(counts["num_depths_per_area"]),
        )
        rows.append(row)
    return _frame(rows, OPHYS_SESSION_COLUMNS)


def published_at(experiment: Experiment, revised: frozenset[int], revision: int) -> str:
    """Publication date; experiments re-released in a later manifest carry the later date."""
    if experiment.ophys_experiment_id in revised:
        return (FIRST_PUBLISHED + dt.timedelta(days=120 * revision)).isoformat()
    return FIRST_PUBLISHED.isoformat()


def ophys_experiment_table(design: ReleaseDesign, revised: frozenset[int] = frozenset(), revision: int = 0):
    rows = []
    for session in design.sessions:
        for experiment in session.experiments:
            row = _session_cells(design, session, session.image_set.removeprefix("images_"))
            row.update(
                ophys_experiment_id=str(experiment.ophys_experiment_id),
                behavior_session_id=str(session.behavior_session_id),
                ophys_session_id=str(session.ophys_session_id),
                ophys_container_id=str(experiment.ophys_container_id),
                imaging_depth=str(experiment.imaging_depth),
                targeted_structure=experiment.targeted_structure,
                targeted_imaging_depth=str(design.containers[experiment.ophys_container_id].depth),
                imaging_plane_group=_float(experiment.imaging_plane_group),
                session_number=_int(session.session_number),
                passive=str(bool(session.passive)),
                prior_exposures_to_image_set=_int(session.prior_exposures_to_image_set),
                date_of_acquisition=_date(session.date_of_acquisition, with_zone=False),
                published_at=published_at(experiment, revised, revision),
                isi_experiment_id=str(experiment.isi_experiment_id),
                file_id=str(experiment.file_id),
            )
            rows.append(row)
    return _frame(rows, EXPERIMENT_COLUMNS)


def ophys_cells_table(design: ReleaseDesign) -> pd.DataFrame:
    """Valid ROIs only; cells not matched across sessions have an empty cell_specimen_id (AllenSDK: NaN)."""
    rows = [
        {
            "cell_roi_id": str(cell.cell_roi_id),
            "cell_specimen_id": "" if cell.cell_specimen_id < 0 else str(cell.cell_specimen_id),
            "ophys_experiment_id": str(experiment.ophys_experiment_id),
        }
        for experiment in design.experiments()
        for cell in experiment.cells
        if cell.valid_roi
    ]
    return _frame(rows, CELLS_COLUMNS)


def _frame(rows: list[dict[str, str]], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns)).fillna("")


def write_table_text(table: pd.DataFrame, path) -> None:
    """Write text cells as they are (no float conversion), quoting only cells with commas, as pandas did."""
    table.to_csv(path, index=False, lineterminator="\n")
