"""Select experiments by criteria written in the config, checked against the experiment table before any download.

filters: {column: value | [values] | {min: .., max: ..}} (all must hold); query: a pandas query on the same table;
expand: none | session | container (add every experiment of each matched session or container);
max_containers: keep the first N containers (by id) of the result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vb2p.errors import SelectionError

EXPANSIONS = {"none": None, "session": "ophys_session_id", "container": "ophys_container_id"}


def _shown(values, limit: int = 30) -> str:
    values = sorted({str(v) for v in values})
    more = f" ... ({len(values) - limit} more)" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def _as_column_type(value, column: pd.Series):
    """Compare config values in the column's own type: YAML gives 457841 for a text mouse_id, '150' for a number."""
    if pd.api.types.is_bool_dtype(column):
        if isinstance(value, str) and value in ("True", "False"):
            return value == "True"
        return bool(value)
    if pd.api.types.is_numeric_dtype(column):
        try:
            return float(value)
        except (TypeError, ValueError) as error:
            raise SelectionError(f"selection.filters.{column.name}: {value!r} is not a number") from error
    return str(value)


def _filter_mask(frame: pd.DataFrame, column: str, criterion) -> pd.Series:
    series = frame[column]
    if isinstance(criterion, dict):
        unknown = set(criterion) - {"min", "max"}
        if unknown or not criterion:
            raise SelectionError(f"selection.filters.{column}: a range takes keys min and/or max, got {sorted(criterion)}")
        if not pd.api.types.is_numeric_dtype(series):
            raise SelectionError(f"selection.filters.{column}: a min/max range needs a numeric column")
        mask = pd.Series(True, index=frame.index)
        if "min" in criterion:
            mask &= series >= _as_column_type(criterion["min"], series)
        if "max" in criterion:
            mask &= series <= _as_column_type(criterion["max"], series)
        mask = mask.fillna(False).astype(bool)
        if not mask.any():
            raise SelectionError(
                f"selection.filters.{column}: no experiment in [{criterion.get('min', '-inf')}, "
                f"{criterion.get('max', 'inf')}]; values present range from {series.min()} to {series.max()}"
            )
        return mask
    wanted = criterion if isinstance(criterion, list) else [criterion]
    if series.map(lambda v: isinstance(v, list)).any():  # list-valued cells (driver_line): match a member
        mask = series.map(lambda cell: isinstance(cell, list) and any(str(w) in map(str, cell) for w in wanted))
        present = {item for cell in series if isinstance(cell, list) for item in cell}
    else:
        typed = [_as_column_type(w, series) for w in wanted]
        mask = series.isin(typed).fillna(False).astype(bool)
        present = set(series.dropna())
        absent = [w for w, t in zip(wanted, typed) if not (series == t).any()]
        if absent:
            raise SelectionError(
                f"selection.filters.{column}: {absent} match no experiment; values present: {_shown(present)}"
            )
    if not mask.any():
        raise SelectionError(f"selection.filters.{column}: {wanted} match no experiment; values present: {_shown(present)}")
    return mask


def select_experiments(
    experiments: pd.DataFrame,
    filters: dict | None = None,
    query: str | None = None,
    expand: str = "none",
    max_containers: int | None = None,
) -> pd.DataFrame:
    """The selected rows of the experiment table (indexed by ophys_experiment_id, every column kept)."""
    frame = experiments.reset_index()
    if expand not in EXPANSIONS:
        raise SelectionError(f"selection.expand: {expand!r}; use one of {list(EXPANSIONS)}")
    unknown = [c for c in (filters or {}) if c not in frame.columns]
    if unknown:
        raise SelectionError(f"selection.filters: unknown columns {unknown}; the experiment table has: {_shown(frame.columns, 100)}")
    mask = pd.Series(True, index=frame.index)
    for column, criterion in (filters or {}).items():
        mask &= _filter_mask(frame, column, criterion)
        if not mask.any():
            raise SelectionError(
                f"selection.filters: no experiment matches all filters up to {column!r} ({dict(filters)}); "
                "each matches some experiments, but not together"
            )
    selected = frame[mask]
    if query:
        try:
            selected = selected.query(query, engine="python")
        except Exception as error:  # pandas raises many types for a bad expression; all mean the same to a user
            raise SelectionError(
                f"selection.query {query!r} failed: {error}. Columns: {_shown(frame.columns, 100)}"
            ) from error
    if selected.empty:
        raise SelectionError(f"the selection (filters {filters or {}}, query {query!r}) matches no experiment")
    group_column = EXPANSIONS[expand]
    if group_column:
        selected = frame[frame[group_column].isin(selected[group_column])]
    if max_containers is not None:
        keep = np.sort(selected.ophys_container_id.unique())[:max_containers]
        selected = selected[selected.ophys_container_id.isin(keep)]
    return selected.set_index("ophys_experiment_id")


def write_selection(selected: pd.DataFrame, path) -> None:
    selected.to_csv(path, lineterminator="\n")


def read_selection(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"mouse_id": str}, index_col="ophys_experiment_id")
