"""Select experiments by criteria written in the config, checked against the experiment table before any download.

filters: {column: value | [values] | {min: .., max: ..}} (all must hold); query: a pandas query on the same table;
expand: none | session | container (add every experiment of each matched session or container);
max_containers: keep the first N containers (by id) of the result.

Every filter value is read as the column's kind (bool, id, number, text, list member, date) and compared in that
kind; a value that cannot be read as it is refused, naming the column, the value and the kind. YAML gives `457841`
for a text mouse_id and `"false"` for a boolean written in quotes: both are read as meant, never compared as text
(where `"false"` would be a non-empty string, i.e. true).
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import re
from pathlib import Path

import numpy as np
import pandas as pd

from vb2p import layout
from vb2p.errors import SelectionError

EXPANSIONS = {"none": None, "session": "ophys_session_id", "container": "ophys_container_id"}
RANGE_KINDS = ("id", "number", "date")
KIND_NAMES = {
    "bool": "a boolean (true or false)",
    "id": "an integer id",
    "number": "a number",
    "text": "text",
    "list": "text (a member of the list)",
    "date": "a date (YYYY-MM-DD or an ISO timestamp)",
}


def _shown(values, limit: int = 30) -> str:
    values = sorted({str(v) for v in values})
    more = f" ... ({len(values) - limit} more)" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def column_kind(series: pd.Series) -> str:
    """The kind of value a loaded table column holds, from its dtype (and list cells)."""
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "date"
    if pd.api.types.is_integer_dtype(series):
        return "id" if series.name.endswith("_id") else "number"
    if pd.api.types.is_numeric_dtype(series):
        return "number"
    if series.map(lambda v: isinstance(v, list)).any():
        return "list"
    return "text"


def typed_value(value, kind: str, column: str):
    """A config value read as the column's kind, or a SelectionError naming the column, the value and the kind."""
    refused = SelectionError(
        f"selection.filters.{column}: {value!r} is not {KIND_NAMES[kind]}, which column {column} holds"
    )
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise refused
    if isinstance(value, bool):  # YAML's yes/no/on/off are booleans, and bool is an int to Python
        raise refused
    if kind == "id":
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise refused
    if kind == "number":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise refused from None
        if not math.isfinite(number):
            raise refused
        return number
    if kind == "date":
        if not isinstance(value, (str, dt.date)):  # a bare number would be read as nanoseconds since 1970
            raise refused
        try:
            stamp = pd.Timestamp(value)
        except (TypeError, ValueError):
            raise refused from None
        return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if isinstance(value, (str, numbers.Number)):  # text and list members: an id written as a number is its text
        return str(value)
    raise refused


def is_calendar_day(value) -> bool:
    """A date without a time of day (YAML's 2019-04-30, or that text): as a range's max it means the whole day."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return True
    return isinstance(value, str) and re.fullmatch(r"\s*\d{4}-\d{2}-\d{2}\s*", value) is not None


def _criterion_values(criterion) -> list:
    if isinstance(criterion, dict):
        return [criterion[bound] for bound in ("min", "max") if bound in criterion]
    return criterion if isinstance(criterion, list) else [criterion]


def check_filter(column: str, criterion, kind: str) -> None:
    """Refuse a filter whose values cannot be read as the column's kind, or a range with min > max."""
    if isinstance(criterion, dict):
        if kind not in RANGE_KINDS:
            raise SelectionError(
                f"selection.filters.{column}: a min/max range needs a column of numbers, ids or dates; "
                f"{column} holds {KIND_NAMES[kind]}"
            )
        bounds = {bound: typed_value(criterion[bound], kind, column) for bound in ("min", "max") if bound in criterion}
        if len(bounds) == 2 and bounds["min"] > bounds["max"]:
            raise SelectionError(
                f"selection.filters.{column}: min {criterion['min']!r} is above max {criterion['max']!r}"
            )
        return
    for value in _criterion_values(criterion):
        typed_value(value, kind, column)


def check_filters(filters: dict) -> None:
    """Before any work: every filter on a column the release is known to have holds values of that column's kind."""
    for column, criterion in (filters or {}).items():
        if column in layout.EXPERIMENT_COLUMN_KINDS:
            check_filter(column, criterion, layout.EXPERIMENT_COLUMN_KINDS[column])


def _range_mask(series: pd.Series, column: str, criterion: dict, kind: str) -> pd.Series:
    mask = pd.Series(True, index=series.index)
    if "min" in criterion:
        mask &= series >= typed_value(criterion["min"], kind, column)
    if "max" in criterion:
        highest = typed_value(criterion["max"], kind, column)
        if kind == "date" and is_calendar_day(criterion["max"]):  # max: 2019-04-30 includes that day's sessions
            mask &= series < highest + pd.Timedelta(days=1)
        else:
            mask &= series <= highest
    mask = mask.fillna(False).astype(bool)
    if not mask.any():
        raise SelectionError(
            f"selection.filters.{column}: no experiment in [{criterion.get('min', '-inf')}, "
            f"{criterion.get('max', 'inf')}]; values present range from {series.min()} to {series.max()}"
        )
    return mask


def _filter_mask(frame: pd.DataFrame, column: str, criterion) -> pd.Series:
    series = frame[column]
    kind = column_kind(series)
    check_filter(column, criterion, kind)
    if isinstance(criterion, dict):
        return _range_mask(series, column, criterion, kind)
    wanted = _criterion_values(criterion)
    typed = [typed_value(w, kind, column) for w in wanted]
    if kind == "list":  # list-valued cells (driver_line): match a member
        mask = series.map(lambda cell: isinstance(cell, list) and any(w in map(str, cell) for w in typed))
        present = {str(item) for cell in series if isinstance(cell, list) for item in cell}
        absent = [w for w, t in zip(wanted, typed) if t not in present]
    else:
        mask = series.isin(typed).fillna(False).astype(bool)
        present = set(series.dropna())
        absent = [w for w, t in zip(wanted, typed) if not (series == t).any()]
    if absent:  # a typo beside a good value would otherwise narrow the selection silently
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


def estimated_download_bytes(selected: pd.DataFrame) -> float:
    """What downloading the selected experiment files whole moves, from the typical file size of each rig."""
    mesoscope = selected.equipment_name.isin(layout.MESOSCOPE_RIGS)
    sizes = layout.TYPICAL_EXPERIMENT_FILE_BYTES
    return float(mesoscope.sum() * sizes["mesoscope"] + (~mesoscope).sum() * sizes["scientifica"])


def experiment_groups(selected: pd.DataFrame) -> dict:
    """The selected experiment ids, and per container (in acquisition order: the first is the reference session of
    the container's alignment) and per session; for each session of several selected planes, the experiment whose
    file gives the task they share (the first selected one: rule session_task reads it once for all of them; a
    session of one selected plane has none, its extraction reads the task from its own file); the session of each
    experiment."""
    ordered = selected.sort_values("date_of_acquisition", kind="stable")
    sessions = {int(s): [int(i) for i in rows.index] for s, rows in selected.groupby("ophys_session_id")}
    return {
        "experiments": [int(i) for i in selected.index],
        "containers": {int(c): [int(i) for i in rows.index] for c, rows in ordered.groupby("ophys_container_id")},
        "sessions": sessions,
        "task_sources": {s: min(ids) for s, ids in sessions.items() if len(ids) > 1},
        "session_of": {i: s for s, ids in sessions.items() for i in ids},
    }


def write_selection(selected: pd.DataFrame, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    selected.to_csv(path, lineterminator="\n")


def read_selection(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"mouse_id": str}, index_col="ophys_experiment_id")
