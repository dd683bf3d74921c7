"""The population figures of Allen's Visual Behavior platform paper, from the release-wide response table
(vb2p.responses.build_response_table): change and omission responses averaged over cells, per cre line and
experience level, and the fraction of responsive cells per group, over the sessions Allen's figures use
(platform_experiments)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from vb2p.errors import TableError
from vb2p.responses import responsive_cells

CRE_LINES = ("Slc17a7-IRES2-Cre", "Sst-IRES-Cre", "Vip-IRES-Cre")
EXPERIENCE_LEVELS = ("Familiar", "Novel 1", "Novel >1")
GROUP = ["cre_line", "experience_level"]
EVENT_TYPES = ("changes", "omissions")  # of the figures (the table's image rows are not needed)
CELL = ["ophys_experiment_id", "cell_roi_id"]
EXPERIMENT_COLUMNS = ["ophys_experiment_id", "ophys_container_id", "experience_level", "passive", "date_of_acquisition"]
# The columns of results/platform/population_responses.csv and responsive_fractions.csv.
POPULATION_COLUMNS = [*GROUP, "event_type", "time", "mean", "sem", "n_cells", "n_experiments"]
FRACTION_COLUMNS = [*GROUP, "n_cells", "n_responsive", "fraction_responsive", "event_type"]


def last_familiar_second_novel_active(experiments: pd.DataFrame) -> np.ndarray:
    """Which experiments Allen's platform-paper figures keep (visual_behavior_analysis's
    limit_to_last_familiar_second_novel_active): in each container, sessions in order of acquisition, a Familiar
    experiment only if it is the last active session before the first Novel 1 session, a Novel >1 experiment only if
    it is the first active session after it (none of either in a container without Novel 1); Novel 1 is kept.
    Sessions acquired at the same time are taken in order of ophys_experiment_id."""
    level = experiments["experience_level"].to_numpy()
    active = experiments["passive"].eq(False).to_numpy()
    keep = ~np.isin(level, ("Familiar", "Novel >1"))
    acquired = pd.to_datetime(experiments["date_of_acquisition"], utc=True, format="ISO8601").to_numpy()
    order = np.lexsort((experiments["ophys_experiment_id"].to_numpy(), acquired))
    for _, container in pd.Series(order).groupby(experiments["ophys_container_id"].to_numpy()[order], sort=False):
        rows = container.to_numpy()  # the container's experiments, in order of acquisition
        novel = np.flatnonzero(level[rows] == "Novel 1")
        if not len(novel):
            continue
        position = np.arange(len(rows)) - novel[0]
        for chosen, wanted in ((rows[active[rows] & (position < 0)][-1:], "Familiar"),
                               (rows[active[rows] & (position > 0)][:1], "Novel >1")):
            keep[chosen[level[chosen] == wanted]] = True
    return keep


def platform_experiments(table: pd.DataFrame, sessions: str,
                         containers_with_all_experience_levels: bool) -> pd.DataFrame:
    """The response table's rows of the experiments the platform figures count: Allen's sessions
    (last_familiar_second_novel_active) or all of them; then, optionally, only containers with all three experience
    levels (visual_behavior_analysis's limit_to_containers_with_all_experience_levels)."""
    missing = [column for column in EXPERIMENT_COLUMNS if column not in table]
    if missing:
        raise TableError(f"the responses table has no column {', '.join(missing)}; it was built by an earlier version:"
                         " write its response stores and it again (snakemake --forcerun stimulus_responses)")
    experiments = table[EXPERIMENT_COLUMNS].drop_duplicates("ophys_experiment_id").reset_index(drop=True)
    unknown = experiments[experiments[["passive", "date_of_acquisition"]].isna().any(axis=1)].ophys_experiment_id
    if len(unknown):
        raise TableError(f"the responses table has no passive or date_of_acquisition for experiments"
                         f" {', '.join(map(str, unknown[:5]))}{' ...' if len(unknown) > 5 else ''}: their response"
                         " stores were written by an earlier version; write them again (snakemake --forcerun"
                         " stimulus_responses), then the table")
    if sessions == "last_familiar_second_novel_active":
        experiments = experiments[last_familiar_second_novel_active(experiments)]
    elif sessions != "all":
        raise ValueError(f"sessions must be last_familiar_second_novel_active or all, not {sessions!r}")
    if containers_with_all_experience_levels:
        levels = experiments.groupby("ophys_container_id")["experience_level"].agg(set)
        complete = levels.index[levels.map(lambda found: set(EXPERIENCE_LEVELS) <= found)]
        experiments = experiments[experiments["ophys_container_id"].isin(complete)]
    return table[table["ophys_experiment_id"].isin(experiments["ophys_experiment_id"])]


def read_response_table(path, data_type: str = "dff",
                        event_types: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The table's rows of one data type (and of the given event types only, when given: the rows of a release are
    millions, each with its mean trace), and the time base of their mean traces (in the file's metadata)."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    timestamps = np.asarray(json.loads(parquet.schema_arrow.metadata[b"eventlocked_timestamps"]), dtype=np.float64)
    filters = [("data_type", "==", data_type)] + ([("event_type", "in", list(event_types))] if event_types else [])
    return pd.read_parquet(path, filters=filters), timestamps


def cell_traces(table: pd.DataFrame, event_type: str) -> pd.DataFrame:
    """One mean trace per cell for an event type: the mean over all its presentations (the rows of a cell are per
    image for changes and images; weighted by their presentations)."""
    rows = table[(table.event_type == event_type) & (table.n_presentations > 0)]
    if rows.empty:
        raise TableError(f"the responses table has no {event_type} rows with presentations")
    weights = rows.n_presentations.to_numpy(dtype=np.float64)
    weighted = np.stack(rows.mean_trace.to_numpy()).astype(np.float64) * weights[:, None]
    frame = rows[CELL + GROUP].reset_index(drop=True)
    cell = frame.groupby(CELL, sort=True).ngroup().to_numpy()
    summed = np.zeros((cell.max() + 1, weighted.shape[1]))
    np.add.at(summed, cell, weighted)
    cells = frame.groupby(cell).first()  # the cell's group: the same on each of its rows
    cells["trace"] = list(summed / np.bincount(cell, weights=weights)[:, None])
    return cells.reset_index(drop=True)


def population_traces(table: pd.DataFrame, timestamps: np.ndarray, event_type: str) -> pd.DataFrame:
    """Per cre line x experience level and time: the mean over cells of their mean traces, its s.e.m. and n."""
    cells = cell_traces(table, event_type)
    rows = []
    for (cre_line, experience), group in cells.groupby(GROUP):
        traces = np.stack(group.trace.to_numpy())
        sem = traces.std(axis=0, ddof=1) / np.sqrt(len(traces)) if len(traces) > 1 else np.full(len(timestamps), np.nan)
        rows.append(pd.DataFrame({"cre_line": cre_line, "experience_level": experience, "event_type": event_type,
                                  "time": timestamps, "mean": traces.mean(axis=0), "sem": sem,
                                  "n_cells": len(traces), "n_experiments": group["ophys_experiment_id"].nunique()}))
    return pd.concat(rows, ignore_index=True)[POPULATION_COLUMNS]


def responsive_fractions(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Fraction of responsive cells per cre line x experience level, for changes and for omissions."""
    return pd.concat(
        [responsive_cells(table, GROUP, event_type=event_type, threshold=threshold).assign(event_type=event_type)
         for event_type in EVENT_TYPES if (table.event_type == event_type).any()],
        ignore_index=True,
    )[FRACTION_COLUMNS]
