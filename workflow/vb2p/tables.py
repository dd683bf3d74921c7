"""Load the four metadata tables as AllenSDK 2.16 does (layout document section 4).

`read_csv(dtype={"mouse_id": str})`; Python-repr list cells parsed; `date_of_acquisition` as UTC; nullable Int64
for count and id columns that hold NaN; the table's id column as index. Columns are addressed by name only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from vb2p import layout
from vb2p.errors import TableError

LIST_COLUMNS = ("ophys_experiment_id", "ophys_container_id", "driver_line")
INT64_COLUMNS = (
    "session_number",
    "age_in_days",
    "prior_exposures_to_image_set",
    "prior_exposures_to_session_type",
    "prior_exposures_to_omissions",
    "ophys_session_id",
    "imaging_plane_group_count",
    "imaging_plane_group",
    "num_depths_per_area",
    "num_targeted_structures",
    "cell_specimen_id",
)
REQUIRED_COLUMNS = {
    "behavior_session_table": ("behavior_session_id", "mouse_id", "session_type", "date_of_acquisition"),
    "ophys_session_table": ("ophys_session_id", "behavior_session_id", "ophys_experiment_id", "mouse_id"),
    "ophys_experiment_table": (
        "ophys_experiment_id",
        "ophys_session_id",
        "ophys_container_id",
        "mouse_id",
        "imaging_depth",
        "targeted_structure",
        "cre_line",
        "date_of_acquisition",
    ),
    "ophys_cells_table": ("cell_roi_id", "cell_specimen_id", "ophys_experiment_id"),
}


def _parse_list_cell(value, table: str, column: str, row_id):
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError) as error:
        raise TableError(f"{table}: column {column}, row {row_id}: {value!r} is not a Python list literal") from error


def load_table(path: str | Path, table: str) -> pd.DataFrame:
    """One metadata table, typed and indexed as AllenSDK returns it."""
    if table not in layout.TABLE_INDEX:
        raise TableError(f"unknown metadata table {table!r}; expected one of {list(layout.TABLE_INDEX)}")
    try:
        frame = pd.read_csv(path, dtype={"mouse_id": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise TableError(f"{table} ({path}) is not a readable CSV: {error}") from error
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in frame.columns]
    if missing:
        raise TableError(f"{table} ({path}) lacks columns {missing}; it has {sorted(frame.columns)}")
    index = layout.TABLE_INDEX[table]
    for column in LIST_COLUMNS:
        if column in frame.columns and column != index:
            frame[column] = [_parse_list_cell(v, table, column, i) for i, v in zip(frame[index], frame[column])]
    if "date_of_acquisition" in frame.columns:
        try:
            frame["date_of_acquisition"] = pd.to_datetime(frame["date_of_acquisition"], utc=True, format="mixed")
        except (ValueError, TypeError) as error:
            raise TableError(f"{table} ({path}): date_of_acquisition has unparseable dates: {error}") from error
    for column in INT64_COLUMNS:
        if column in frame.columns and column != index:
            try:
                frame[column] = frame[column].astype("Int64")
            except (TypeError, ValueError) as error:
                raise TableError(f"{table} ({path}): column {column} is not integral: {error}") from error
    if frame[index].isna().any() or frame[index].duplicated().any():
        raise TableError(f"{table} ({path}): index column {index} has missing or duplicated ids")
    return frame.set_index(index)


def load_tables(paths: dict[str, str | Path]) -> dict[str, pd.DataFrame]:
    return {table: load_table(paths[table], table) for table in layout.METADATA_TABLES if table in paths}
