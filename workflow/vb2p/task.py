"""The change-detection task beside the activity: read from an experiment's NWB file exactly as AllenSDK 2.16.2's
`BehaviorOphysExperiment.from_nwb_path` returns it, and stored in the experiment's Zarr store.

Storage, added to the store that vb2p.extract writes (`results/zarr/<ophys_experiment_id>.zarr`):

    events (time, cell)                   float64, the events of every ROI in dff's ROI order, as the file stores them:
                                          AllenSDK's values bit for bit, its deflate-compressed chunks moved into
                                          the store's shards without inflating them (vb2p.chunks: 3.5 MB at 140,000
                                          frames x 200 ROIs). NaN columns: ROIs without events (AllenSDK drops them).
                                          filtered_events are not stored: like AllenSDK, vb2p.experiment computes
                                          them when they are read (filtered_events(), a causal filter: 0.4 s for that
                                          size), since storing them tripled the task's cost of extraction (they are
                                          dense and compress poorly)
    events_lambda, events_noise_std (cell)  float64, the detection's lambda and noise_std; NaN without events
    task/<name>.parquet                    one table per file (pyarrow): stimulus_presentations, trials,
                                           running_speed, raw_running_speed, licks, rewards, stimulus_timestamps and,
                                           when the file has eye tracking, eye_tracking. A directory without zarr.json
                                           is not a Zarr node: zarr and xarray ignore task/. In the workflow, for a
                                           session of several selected planes, these are hard links to the session's
                                           tables (write_session_task, once per session: its planes carry the same
                                           task), taken after checking that they are this file's task
                                           (task_fingerprint); a lone plane's are read from its own file
    root attributes                        has_task (bool), task_tables (names of the files in task/),
                                           task_parameters (/general/task_parameters), and the counts write_task
                                           returns (n_trials, n_stimulus_presentations, n_event_rois...)

Tables hold what AllenSDK returns, with its index, column names, order and dtypes, with one exception:
stimulus_presentations keeps the NWB's `stop_time`, which AllenSDK's attribute renames `end_time` (vb2p.experiment
does the same). A file whose presentations already have an `end_time` column gets two `end_time` columns from
AllenSDK, which no table format stores. Columns AllenSDK recomputes (is_change, flashes_since_change) are recomputed
here the same way; the columns after trials_id, which AllenSDK orders by iterating a Python set (the order changes
from run to run), are sorted by name.

Why Parquet for tables: it is columnar and typed (bool, nullable boolean, int64, float64, text, and lists of floats
for the ragged lick_times), keeps the pandas index and dtypes in its metadata, compresses, reads a whole table in
milliseconds, and any tool opens it without our code (pandas, polars, DuckDB, R's arrow). Zarr arrays would split
each table into one array per column on dimensions of their own, and CSV loses dtypes and the ragged lists.

Everything is read with h5py from the documented HDF5 paths (allen-release-layout.md, sections 5 and 5b), not pynwb:
fast, and robust to NWB schema versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from vb2p import chunks, layout
from vb2p.errors import NwbError
from vb2p.files import link_or_copy

log = logging.getLogger(__name__)

NWB_INTERVALS = "/intervals"
NWB_TRIALS = "/intervals/trials"
PRESENTATIONS_SUFFIX = "_presentations"
NWB_RUNNING = "/processing/running"
NWB_LICKS = "/processing/licking/licks"
NWB_REWARDS = "/processing/rewards"
NWB_STIMULUS_TIMESTAMPS = "/processing/stimulus/timestamps/timestamps"
NWB_EVENTS = "/processing/ophys/event_detection"
NWB_EYE_TRACKING = "/acquisition/EyeTracking"
NWB_TASK_PARAMETERS = "/general/task_parameters"

TASK_DIR = "task"
# AllenSDK's Presentations: these columns first, in this order (allensdk.core.dataframe_utils.enforce_df_column_order).
PRESENTATIONS_ORDER = (
    "stimulus_block", "stimulus_block_name", "image_index", "image_name", "movie_frame_index", "duration",
    "start_time", "end_time", "stop_time", "start_frame", "end_frame", "is_change", "is_image_novel", "omitted",
    "movie_repeat", "flashes_since_change", "trials_id",
)
# Filled with -99 and made int64 by AllenSDK (enforce_df_int_typing; _int_filled).
PRESENTATIONS_INT = ("flashes_since_change", "image_index", "movie_repeat", "movie_frame_index", "repeat",
                     "stimulus_index")
INT_NULL = -99
# AllenSDK 2.16 computes these when a file lacks them; every release file has them, so they are required here.
PRESENTATIONS_REQUIRED = ("start_time", "stop_time", "stimulus_block", "image_name", "omitted", "trials_id", "active",
                          "is_sham_change")
TRIALS_REQUIRED = ("start_time", "stop_time", "change_time", "go", "catch", "hit", "miss", "false_alarm",
                   "correct_reject", "aborted", "auto_rewarded", "lick_times", "reward_volume")
EYE_TRACKING_COLUMNS = (
    "timestamps", "cr_area", "eye_area", "pupil_area", "likely_blink", "pupil_area_raw", "cr_area_raw",
    "eye_area_raw", "cr_center_x", "cr_center_y", "cr_width", "cr_height", "cr_phi", "eye_center_x", "eye_center_y",
    "eye_width", "eye_height", "eye_phi", "pupil_center_x", "pupil_center_y", "pupil_width", "pupil_height",
    "pupil_phi",
)
EYE_TRACKING_BLINK_NAN = ("eye_area", "pupil_area", "cr_area", "eye_width", "eye_height", "eye_phi", "pupil_width",
                          "pupil_height", "pupil_phi")
# AllenSDK's defaults (BehaviorOphysExperiment.from_nwb).
EVENTS_FILTER_SCALE_S = 2.0 / 31.0
EVENTS_FILTER_STEPS = 20
EYE_Z_THRESHOLD = 3.0
EYE_DILATION_FRAMES = 2


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decoded(raw: np.ndarray) -> np.ndarray:
    """HDF5 text (bytes) as an object array of str, as h5py's asstr() gives it, but each distinct value decoded once:
    a column of 5,000 presentations holds a dozen image names."""
    codes, distinct = pd.factorize(raw.ravel())
    return np.array([value.decode() for value in distinct], dtype=object)[codes].reshape(raw.shape)


def _column(table: h5py.Group, members: set[str], path: str, name: str, n_rows: int, where: str):
    """One column of an NWB DynamicTable (members: the names in its group): text decoded; a ragged column (with
    `<name>_index`) as an object array of per-row arrays, as hdmf's to_dataframe gives it."""
    if name not in members:
        raise NwbError(f"{where}: table {path} lists column '{name}' but has no such dataset; the file is corrupt")
    dataset = table[name]
    values = _decoded(dataset[:]) if h5py.check_string_dtype(dataset.dtype) else dataset[:]
    if f"{name}_index" in members:
        ends = table[f"{name}_index"][:].astype(np.int64)
        starts = np.concatenate([[0], ends[:-1]])
        if len(ends) and (np.any(ends < starts) or ends[-1] > len(values)):
            raise NwbError(f"{where}: table {path}: {name}_index points outside the {len(values)} values of '{name}'"
                           " (decreasing or out of range); the file is corrupt")
        rows = np.empty(len(ends), dtype=object)
        for row, (start, end) in enumerate(zip(starts, ends)):
            rows[row] = values[start:end]
        values = rows
    if len(values) != n_rows:
        raise NwbError(f"{where}: table {path}: column '{name}' has {len(values)} rows, the table {n_rows}")
    return values


def same_length(where: str, path: str, datasets: dict) -> int:
    """The length the datasets (or arrays) under path share; else an error listing each length."""
    lengths = {name: len(dataset) for name, dataset in datasets.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise NwbError(f"{where}: {path}: datasets of the same samples differ in length ({listed}); the file is"
                       " corrupt: download it again")
    return next(iter(lengths.values()), 0)


def read_columns(f: h5py.File, path: str, where: str, required: tuple[str, ...] = (),
                 skip: tuple[str, ...] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ids and the columns (in `colnames` order) of an NWB DynamicTable, checked: the required columns are there
    and start times never decrease."""
    table = f[path]
    ids = table["id"][:].astype(np.int64)
    names = [_text(name) for name in table.attrs["colnames"]]
    missing = [name for name in required if name not in names]
    if missing:
        raise NwbError(f"{where}: table {path} has no column {', '.join(missing)}; a Visual Behavior task table has"
                       " them (allen-release-layout.md, section 5b)")
    members = set(table)  # listed once: h5py looks a name up in the file each time it is asked
    columns = {name: _column(table, members, path, name, len(ids), where) for name in names if name not in skip}
    if "start_time" in columns:
        start = columns["start_time"].astype(np.float64, copy=False)
        bad = np.flatnonzero(~np.isfinite(start) | np.concatenate([[False], np.diff(start) < 0]))
        if len(bad):
            row = int(bad[0])
            shown = ", ".join(str(value) for value in start[max(row - 1, 0) : row + 1])
            raise NwbError(f"{where}: table {path}: start_time is not increasing (or not finite) at row {row}"
                           f" ({shown}); the file is corrupt: download it again")
    if not len(ids):
        log.warning("%s: table %s has no rows", where, path)
    return ids, columns


def has_task(f: h5py.File) -> bool:
    """A file holds a task when it has trials and at least one stimulus presentations table."""
    intervals = f.get(NWB_INTERVALS)
    return intervals is not None and "trials" in intervals and bool(_presentation_tables(f))


def _presentation_tables(f: h5py.File) -> list[str]:
    intervals = f.get(NWB_INTERVALS, {})
    return sorted(f"{NWB_INTERVALS}/{name}" for name in intervals if name.endswith(PRESENTATIONS_SUFFIX))


def _filled(omitted, value: bool) -> np.ndarray:
    """`omitted` (a bool, nullable boolean or 0/1 float column) as bools, its gaps set to value."""
    return np.asarray(pd.array(omitted, dtype="boolean").fillna(value), dtype=bool)


def is_change(image_name: np.ndarray, omitted) -> np.ndarray:
    """AllenSDK's is_change_event: the first shown image that differs from the previous shown image. Omitted flashes
    and rows without an `omitted` value (gray screen, movies) are not shown images; the first shown image is no
    change."""
    shown = np.flatnonzero(~_filled(omitted, True))
    change = np.zeros(len(image_name), dtype=bool)
    change[shown[1:]] = image_name[shown[1:]] != image_name[shown[:-1]]
    return change


def flashes_since_change(image_name: np.ndarray, omitted, change: np.ndarray) -> np.ndarray:
    """AllenSDK's get_flashes_since_change, without its row loop: 0 at a change (and at the first row), +1 at every
    other row, and omitted rows repeat the count of the row before."""
    carried = (image_name == "omitted") | _filled(omitted, False)
    counted = np.cumsum(~carried)
    position = np.arange(len(change))
    reset = ~carried & (change | (position == 0))
    last_reset = np.maximum.accumulate(np.where(reset, position, -1))
    return (counted - np.where(last_reset >= 0, counted[np.maximum(last_reset, 0)], 0)).astype(np.int64)


def _stacked(tables: list[dict[str, np.ndarray]], rows: list[int]) -> dict[str, np.ndarray]:
    """Columns of tables stacked as pd.concat(sort=False) stacks them: in order of first appearance, and where a table
    lacks a column, NaN there (pandas' rules: integers then become floats, bools and text objects)."""
    names = list(dict.fromkeys(name for table in tables for name in table))
    stacked = {}
    for name in names:
        pieces = [table.get(name) for table in tables]
        kinds = {piece.dtype.kind for piece in pieces if piece is not None}
        # One kind, and where a piece is missing, a float or object one (NaN keeps its dtype): numpy stacks them as
        # pandas would, 0.3 ms faster a column.
        if len(kinds) == 1 and (all(piece is not None for piece in pieces) or kinds <= {"f", "O"}):
            dtype = next(piece.dtype for piece in pieces if piece is not None)
            stacked[name] = np.concatenate([np.full(n, np.nan, dtype=dtype) if piece is None else piece
                                            for piece, n in zip(pieces, rows)])
        else:
            stacked[name] = pd.concat([pd.DataFrame({name: piece}) if piece is not None else pd.DataFrame(index=range(n))
                                       for piece, n in zip(pieces, rows)])[name].to_numpy()
    return stacked


def _int_filled(values: np.ndarray) -> np.ndarray:
    """AllenSDK's integer columns (enforce_df_int_typing): gaps filled with -99, then int64."""
    return np.asarray(pd.Series(values).fillna(INT_NULL), dtype=np.int64)


def _presentations_dtype(name: str, values: np.ndarray):
    """AllenSDK's dtype rules: integer columns int64; float columns holding only 0, 1 and NaN are nullable booleans
    (its writer stores booleans with gaps as floats)."""
    if values.dtype.kind == "i":
        return values.astype(np.int64, copy=False)
    if values.dtype.kind == "f" and not name.endswith("_index") and np.isin(values[~np.isnan(values)], (0, 1)).all():
        return pd.array(values, dtype="boolean")
    return values


def stimulus_presentations(f: h5py.File, where: str) -> pd.DataFrame:
    """AllenSDK's stimulus presentations (Presentations.from_nwb): every /intervals/*_presentations table, in order
    of start_time, with is_change and flashes_since_change recomputed. `stop_time` keeps its NWB name.

    Columns are stacked and typed as numpy arrays and made a DataFrame once (a pandas operation per column and table
    took three times as long)."""
    tables, rows = [], []
    for path in _presentation_tables(f):
        ids, columns = read_columns(f, path, where, required=("start_time", "stop_time"),
                                    skip=("tags", "timeseries", "is_change", "flashes_since_change"))  # recomputed
        for values in columns.values():
            if values.dtype == object and len(values) and isinstance(values[0], str):  # text, not a ragged column
                values[values == "N/A"] = ""
        tables.append(columns)
        rows.append(len(ids))
    table = _stacked(tables, rows)
    missing = [name for name in PRESENTATIONS_REQUIRED if name not in table]
    if missing:
        raise NwbError(f"{where}: no stimulus presentations table ({', '.join(_presentation_tables(f))}) has column"
                       f" {', '.join(missing)}; AllenSDK's release files have them")
    # Stable: equal start times (none in release files) keep the tables' order, where AllenSDK's quicksort is arbitrary.
    order = np.argsort(table["start_time"], kind="stable")
    table = {name: _presentations_dtype(name, values)[order] for name, values in table.items()
             if name not in ("image_set", "index")}
    image_name = np.asarray(table["image_name"], dtype=object)
    table["is_change"] = is_change(image_name, table["omitted"])
    table["flashes_since_change"] = flashes_since_change(image_name, table["omitted"], table["is_change"])
    for name in PRESENTATIONS_INT:
        if name in table:
            table[name] = _int_filled(table[name])
    first = [name for name in PRESENTATIONS_ORDER if name in table]
    return pd.DataFrame({name: table[name] for name in first + sorted(set(table) - set(first))},
                        index=pd.RangeIndex(len(order), name="stimulus_presentations_id"))


def trials(f: h5py.File, where: str) -> pd.DataFrame:
    """AllenSDK's trials (Trials.from_nwb): /intervals/trials, index trials_id, lick_times one array per trial,
    without lick_events, stimulus_change named is_change, change_frame int64 with -99 where there is no change."""
    ids, columns = read_columns(f, NWB_TRIALS, where, required=TRIALS_REQUIRED, skip=("lick_events",))
    if "change_frame" in columns:
        columns["change_frame"] = _int_filled(columns["change_frame"])
    return pd.DataFrame({"is_change" if name == "stimulus_change" else name: values for name, values in columns.items()},
                        index=pd.Index(ids, dtype="int64", name="trials_id"))


def _require(f: h5py.File, path: str, where: str, what: str):
    if path not in f:
        raise NwbError(f"{where}: {path} is missing, yet the file has a task: AllenSDK cannot read {what} either")
    return f[path]


def running_speed(f: h5py.File, where: str, filtered: bool = True) -> pd.DataFrame:
    """AllenSDK's running_speed (10 Hz low-pass, as stored) or raw_running_speed; a speed whose mean is below
    -1 cm/s is flipped, as AllenSDK does for rigs with reversed encoder polarity."""
    path = f"{NWB_RUNNING}/{'speed' if filtered else 'speed_unfiltered'}"
    series = _require(f, path, where, "running speed")
    n_samples = same_length(where, path, {"data": series["data"], "timestamps": series["timestamps"]})
    block = np.empty((2, n_samples))  # (column, sample): pandas takes it as its block, no copy
    series["timestamps"].read_direct(block[0])
    series["data"].read_direct(block[1])
    if np.nanmean(block[1]) < -1:
        block[1] *= -1
    return pd.DataFrame(block.T, columns=["timestamps", "speed"], copy=False)


def licks(f: h5py.File, where: str) -> pd.DataFrame:
    """AllenSDK's licks: time and display frame of each lick; empty (float columns) when the file has none."""
    if NWB_LICKS not in f:
        return pd.DataFrame({"timestamps": [], "frame": []})
    series = f[NWB_LICKS]
    same_length(where, NWB_LICKS, {"timestamps": series["timestamps"], "data": series["data"]})
    return pd.DataFrame({"timestamps": series["timestamps"][:], "frame": series["data"][:]})


def rewards(f: h5py.File, where: str) -> pd.DataFrame:
    """AllenSDK's rewards: volume, time, auto_rewarded; empty when the file has none (passive sessions)."""
    if NWB_REWARDS not in f:
        return pd.DataFrame({"volume": [], "timestamps": [], "auto_rewarded": []})
    module = f[NWB_REWARDS]
    columns = {"volume": module["volume/data"], "timestamps": module["autorewarded/timestamps"],
               "auto_rewarded": module["autorewarded/data"]}
    same_length(where, NWB_REWARDS, columns)
    return pd.DataFrame({name: dataset[:] for name, dataset in columns.items()})


def stimulus_timestamps(f: h5py.File, where: str) -> pd.DataFrame:
    """One time per display frame (monitor delay included), as a one-column table."""
    return pd.DataFrame({"timestamps": _require(f, NWB_STIMULUS_TIMESTAMPS, where, "stimulus timestamps")[:]})


def _outliers(area: np.ndarray, z_threshold: float) -> np.ndarray:
    """AllenSDK's determine_outliers for one column (scipy 1.10's zscore, nan_policy omit, as AllenSDK 2.16.2 runs
    it): |z| above the threshold, z from the mean and SD of the non-NaN values; a constant column has none."""
    values = area[~np.isnan(area)]
    if values.size == 0 or np.all(values == values[0]):
        return np.zeros(len(area), dtype=bool)
    if values.size < area.size:
        mean, sd = np.nanmean(area), np.nanstd(area)
    else:
        mean, sd = area.mean(), area.std()
    with np.errstate(invalid="ignore"):
        return np.abs((area - mean) / sd) > z_threshold


def dilated(mask: np.ndarray, frames: int) -> np.ndarray:
    """A 1-D mask grown by `frames` on each side: scipy.ndimage.binary_dilation(mask, iterations=frames), as AllenSDK
    dilates blinks, without importing scipy.ndimage in every extraction job (0.1 s)."""
    grown = mask.copy()
    for shift in range(1, min(frames, len(mask)) + 1):
        grown[shift:] |= mask[:-shift]
        grown[:-shift] |= mask[shift:]
    return grown


def eye_tracking(f: h5py.File, where: str, z_threshold: float = EYE_Z_THRESHOLD,
                 dilation_frames: int = EYE_DILATION_FRAMES) -> pd.DataFrame | None:
    """AllenSDK's eye_tracking (EyeTrackingTable.from_nwb) from /acquisition/EyeTracking (ndx-ellipse-eye-tracking),
    or None when the file has none. likely_blink is recomputed: frames with a missing eye or pupil area or an area
    more than z_threshold SDs from its mean, dilated by dilation_frames; areas and eye and pupil shapes are NaN there.

    The float columns are read into one (column, frame) array, which pandas takes as its block without copying
    (a 60 Hz, 75-minute session is 270,000 rows x 22 columns: 48 MB).
    """
    if NWB_EYE_TRACKING not in f:
        return None
    acquisition = f[NWB_EYE_TRACKING]
    eye, pupil, cr = (acquisition[name] for name in ("eye_tracking", "pupil_tracking", "corneal_reflection_tracking"))
    floats = [name for name in EYE_TRACKING_COLUMNS if name != "likely_blink"]
    row = {name: i for i, name in enumerate(floats)}
    block = np.empty((len(floats), len(eye["timestamps"])))
    eye["timestamps"].read_direct(block[row["timestamps"]])  # into the block: no array of its own to copy from
    for prefix, series in (("cr", cr), ("eye", eye), ("pupil", pupil)):
        same_length(where, NWB_EYE_TRACKING, {"eye_tracking/timestamps": eye["timestamps"],
                                              **{f"{series.name.rsplit('/', 1)[-1]}/{name}": series[name]
                                                 for name in ("area_raw", "data", "width", "height", "angle")}})
        series["area_raw"].read_direct(block[row[f"{prefix}_area_raw"]])
        block[row[f"{prefix}_area"]] = block[row[f"{prefix}_area_raw"]]
        centre = series["data"][:]
        block[row[f"{prefix}_center_x"]], block[row[f"{prefix}_center_y"]] = centre[:, 0], centre[:, 1]
        for name, dataset in (("width", "width"), ("height", "height"), ("phi", "angle")):
            series[dataset].read_direct(block[row[f"{prefix}_{name}"]])
    areas = [block[row[name]] for name in ("eye_area_raw", "pupil_area_raw")]
    blink = np.isnan(areas[0]) | np.isnan(areas[1])
    for area in areas:
        blink |= _outliers(area, z_threshold)
    blink = dilated(blink, dilation_frames)
    blinks = np.flatnonzero(blink)  # a few % of the frames: indexing them beats a mask over all of them
    for name in EYE_TRACKING_BLINK_NAN:
        block[row[name], blinks] = np.nan
    table = pd.DataFrame(block.T, columns=floats, copy=False)
    table.insert(EYE_TRACKING_COLUMNS.index("likely_blink"), "likely_blink", blink)
    table.index.name = "frame"
    return table


def empty_eye_tracking() -> pd.DataFrame:
    """What AllenSDK returns for a file without eye tracking."""
    return pd.DataFrame({name: [] for name in EYE_TRACKING_COLUMNS}, index=pd.Index([], name="frame"))


def task_parameters(f: h5py.File, where: str) -> dict:
    """/general/task_parameters as a JSON-able dict; the two ranges AllenSDK reads as floats (written as text)."""
    attrs = _require(f, NWB_TASK_PARAMETERS, where, "the task parameters").attrs
    parameters = {}
    for key, value in attrs.items():
        if key in ("namespace", "neurodata_type", "object_id"):
            continue
        if isinstance(value, np.ndarray):
            value = [_text(v) if isinstance(v, (bytes, str)) else v.item() for v in value]
        elif isinstance(value, (bytes, str)):
            value = _text(value)
        else:
            value = value.item() if isinstance(value, np.generic) else value
        parameters[key] = value
    for key in ("blank_duration_sec", "response_window_sec"):
        if key in parameters:
            parameters[key] = [float(v) for v in parameters[key]]
    return parameters


def events_filter(frame_rate: float) -> np.ndarray:
    """AllenSDK's causal half-Gaussian filter of events (event_detection.filter_events_array): halfnorm weights of
    scale 2/31 s over 20 frames, normalized."""
    from scipy import stats  # imported here: it takes ~1 s, and readers of stores need none of it

    weights = stats.halfnorm(loc=0, scale=EVENTS_FILTER_SCALE_S * frame_rate).pdf(np.arange(EVENTS_FILTER_STEPS))
    return weights / np.sum(weights)


def _in_store_order(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """NWB event columns -> dff's ROI order; NaN for ROIs without events."""
    ordered = np.full((values.shape[0], len(columns)), np.nan)
    ordered[:, columns >= 0] = values[:, columns[columns >= 0]]
    return ordered


def filtered_events(events: np.ndarray, frame_rate: float) -> np.ndarray:
    """AllenSDK's filtered_events of (n_frames, n_cells) events, along time for every cell at once. lfilter's FIR
    sums give the same values as AllenSDK's per-ROI np.convolve (same = its first n_frames values)."""
    from scipy import signal  # imported here, as in events_filter

    return signal.lfilter(events_filter(frame_rate), [1.0], events, axis=0)


def _write_events(f: h5py.File, group: zarr.Group, store_dir: Path, dff: zarr.Array, roi_order: np.ndarray,
                  where: str, block_bytes: int) -> np.ndarray:
    """events (time, cell) in dff's ROI order, as the file stores them (float64 in its chunks, deflate-compressed:
    vb2p.chunks moves the compressed chunks as they are), with lambda and noise_std. Returns which ROIs have events.

    Files whose event columns are not dff's ROIs in dff's order, or whose chunks are not plain deflate, are read and
    written in bands of whole shards (memory does not grow with the session) into the same array layout."""
    detection = f[NWB_EVENTS]
    data = detection["data"]
    event_rows = detection["rois"][:].astype(np.int64)
    n_frames, n_rois = dff.shape
    if data.shape != (n_frames, len(event_rows)):
        raise NwbError(f"{where}: {NWB_EVENTS}/data is {data.shape}, expected {n_frames} frames x {len(event_rows)}"
                       " ROIs (its `rois`)")
    column_of_row = {row: column for column, row in enumerate(event_rows.tolist())}
    columns = np.array([column_of_row.get(int(row), -1) for row in roi_order], dtype=np.int64)
    in_order = np.array_equal(columns, np.arange(len(event_rows)))  # the usual case: nothing to rearrange
    same_length(where, NWB_EVENTS, {"rois": event_rows, "lambdas": detection["lambdas"],
                                    "noise_stds": detection["noise_stds"]})
    for name, source in (("events_lambda", "lambdas"), ("events_noise_std", "noise_stds")):
        group.create_array(name, data=_in_store_order(detection[source][:][None], columns)[0], chunks=(n_rois,),
                           dimension_names=["cell"], fill_value=np.nan,
                           attributes={"long_name": f"event detection {source[:-1]}"})

    move = in_order and chunks.movable(data) and data.dtype == np.float64
    events = chunks.sharded_array(
        group, "events", (n_frames, n_rois), np.float64, data.chunks if move else dff.chunks, block_bytes,
        float(data.fillvalue) if move else 0.0, ["time", "cell"],
        {"coordinates": dff.attrs["coordinates"],
         "long_name": "detected events: rise of calcium transients, magnitude ~ dF/F increase; NaN: no events"},
    )
    if move:
        chunks.move_chunks(data, events, store_dir / "events")
    else:
        log.info("%s: events are not movable as stored (chunks %s, ROIs in order: %s): inflating them",
                 where, data.chunks, in_order)
        band = events.shards[0]
        for start in range(0, n_frames, band):
            values = data[start : start + band]
            events[start : start + len(values)] = values if in_order else _in_store_order(values, columns)
    return columns >= 0


def arrow_table(table: pd.DataFrame) -> pa.Table:
    """The table as Arrow with pandas' metadata (index, names, dtypes), as pa.Table.from_pandas makes it, but numpy
    number and bool columns are taken as they are, and declared without nulls: float NaN stays NaN, as the NWB and
    AllenSDK have it (from_pandas would scan every value to make NaN a null: 8 ms of a 270,000-row eye tracking
    table), and float columns are not copied. Other columns (text, nullable extension dtypes, lists) are converted
    as from_pandas converts them."""
    schema = pa.Schema.from_pandas(table)
    index_levels = {name: level for level, name in enumerate(schema.pandas_metadata["index_columns"])
                    if isinstance(name, str)}  # a RangeIndex is metadata only, not a column
    arrays, fields = [], []
    for field in schema:
        values = (table.index.get_level_values(index_levels[field.name]) if field.name in index_levels
                  else table[field.name])
        plain = isinstance(values.dtype, np.dtype) and values.dtype.kind in "fiub"
        arrays.append(pa.array(values.to_numpy() if plain else values, type=field.type, from_pandas=not plain))
        # A numpy column has no nulls: declared so, Parquet writes no definition levels for it (eye tracking's
        # write 29 -> 22 ms).
        fields.append(field.with_nullable(False) if plain else field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=schema.metadata))


WRITE_BATCH_ROWS = 64 * 1024


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Parquet with the pandas index. Float columns are neither compressed nor summarised: measured values do not
    compress (eye tracking: 46.1 MB with snappy, 47.2 MB without) and compressing them was a quarter of the write;
    their min/max statistics are another 10 %, for row-group skipping that tables of one row group never use.
    Dictionary encoding for text only (it slows float columns 2-3x, for nothing). Values are handed to the encoder
    64 Ki rows at a time rather than 1 Ki (eye tracking's write 18.6 -> 16.2 ms; a page then closes at up to 1.5 MB,
    not 1 MB)."""
    arrow = arrow_table(table)
    floats = {field.name for field in arrow.schema if pa.types.is_floating(field.type)}
    pq.write_table(arrow, path, use_dictionary=[field.name for field in arrow.schema if pa.types.is_string(field.type)],
                   compression={name: "none" if name in floats else "snappy" for name in arrow.schema.names},
                   write_statistics=[name for name in arrow.schema.names if name not in floats],
                   write_batch_size=WRITE_BATCH_ROWS)


def read_stored_table(store_dir: Path, name: str) -> pd.DataFrame:
    """A table of task/ as written. Parquet gives missing text back as None: text columns get AllenSDK's NaN."""
    arrow = pq.read_table(Path(store_dir) / TASK_DIR / f"{name}.parquet")
    table = arrow.to_pandas()
    for field in arrow.schema:
        text = pa.types.is_string(field.type) or pa.types.is_large_string(field.type) or pa.types.is_null(field.type)
        if field.name in table.columns and text:
            values = table[field.name].to_numpy(dtype=object, copy=True)
            values[pd.isna(values)] = np.nan
            table[field.name] = values
    return table


def write_task_tables(f: h5py.File, directory: Path, where: str) -> dict:
    """The session's task as AllenSDK returns it, one Parquet file per table in directory (not made when the file
    holds no task). Returns the task's root attributes of a store: has_task, the tables' row counts (task_counts),
    task_tables (their names) and task_parameters."""
    if not has_task(f):
        return {**task_counts({}), "task_tables": [], "task_parameters": {}}
    tables = {
        "stimulus_presentations": stimulus_presentations(f, where),
        "trials": trials(f, where),
        "running_speed": running_speed(f, where),
        "raw_running_speed": running_speed(f, where, filtered=False),
        "licks": licks(f, where),
        "rewards": rewards(f, where),
        "stimulus_timestamps": stimulus_timestamps(f, where),
    }
    eyes = eye_tracking(f, where)
    if eyes is not None:
        tables["eye_tracking"] = eyes
    directory.mkdir(exist_ok=True)
    for name, table in tables.items():
        write_table(table, directory / f"{name}.parquet")
    return {**task_counts(tables), "task_tables": list(tables), "task_parameters": task_parameters(f, where)}


def task_counts(tables: dict[str, pd.DataFrame]) -> dict:
    """has_task and the rows of the task's tables: root attributes of the store, columns of the index."""
    return {
        "has_task": bool(tables),
        "n_stimulus_presentations": len(tables.get("stimulus_presentations", ())),
        "n_trials": len(tables.get("trials", ())),
        "n_licks": len(tables.get("licks", ())),
        "n_rewards": len(tables.get("rewards", ())),
        "n_running_samples": len(tables.get("running_speed", ())),
        "has_eye_tracking": "eye_tracking" in tables,
    }


# Time series whose length identifies the task with the trials' and presentations' start times (task_fingerprint).
FINGERPRINT_SERIES = (f"{NWB_RUNNING}/speed/timestamps", f"{NWB_RUNNING}/speed_unfiltered/timestamps",
                      NWB_STIMULUS_TIMESTAMPS, f"{NWB_LICKS}/timestamps", f"{NWB_REWARDS}/autorewarded/timestamps",
                      f"{NWB_EYE_TRACKING}/eye_tracking/timestamps")


def _interval_tables(f: h5py.File) -> list[str]:
    """The task's interval tables (trials and every presentations table): their start times identify the task."""
    return [NWB_TRIALS, *_presentation_tables(f)] if has_task(f) else []


def fingerprint_paths(f: h5py.File) -> list[str]:
    """The datasets task_fingerprint reads (their data, not only their shape): a remote file prefetches them."""
    return [f"{path}/start_time" for path in _interval_tables(f)]


def task_fingerprint(f: h5py.File) -> str | None:
    """What tells one session's task from another in a millisecond, without reading the tables: the columns and
    start times of the trials and of every presentations table, and the length of every time series. None without
    a task. Every plane's file of a session carries the session's task (AllenSDK writes it into each)."""
    tables = _interval_tables(f)
    if not tables:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for path in tables:
        digest.update(f"{path}:{[_text(name) for name in f[path].attrs['colnames']]}".encode())
        digest.update(f[path]["start_time"][:].astype("<f8").tobytes())
    for path in FINGERPRINT_SERIES:
        series = f.get(path)
        digest.update(f"{path}:{None if series is None else series.shape}".encode())
    return digest.hexdigest()


SESSION_RECORD = "session_task.json"
# What a session's record says beside the store attributes it hands every plane (write_task_tables').
SESSION_PROVENANCE = ("ophys_session_id", "ophys_experiment_id", "fingerprint")


def write_session_task(f: h5py.File, directory: Path, ophys_session_id: int, ophys_experiment_id: int,
                       where: str) -> dict:
    """The session's task tables, computed once from one of its planes' files, into directory (empty, being
    written) with a record of where they come from: every plane's extraction takes them from there (write_task)."""
    record = {"ophys_session_id": int(ophys_session_id), "ophys_experiment_id": int(ophys_experiment_id),
              "fingerprint": task_fingerprint(f), **write_task_tables(f, directory, where)}
    (directory / SESSION_RECORD).write_text(json.dumps(record, indent=1))
    return record


def _session_record(session_task: Path, f: h5py.File, ophys_session_id: int | None, where: str) -> dict | None:
    """The session's task record when it is this file's task (same session, same fingerprint); None otherwise,
    with a warning saying why: the file's own task is then read."""
    if not (session_task / SESSION_RECORD).is_file():
        raise NwbError(f"{where}: {session_task} has no {SESSION_RECORD}: it is not a session task `vb2p session-task`"
                       " finished; remove it and run that step again")
    record = json.loads((session_task / SESSION_RECORD).read_text())
    source = f"the session task in {session_task} (from experiment {record['ophys_experiment_id']})"
    if ophys_session_id is not None and record["ophys_session_id"] != int(ophys_session_id):
        log.warning("%s: %s is of session %s, this file of session %s: reading the file's own task",
                    where, source, record["ophys_session_id"], ophys_session_id)
        return None
    if record["fingerprint"] != task_fingerprint(f):
        log.warning("%s: %s differs from this file's task (trials, presentations or time series): reading the"
                    " file's own task", where, source)
        return None
    return record


def link_tables(names: list[str], source: Path, directory: Path) -> None:
    """The session's tables into a store's task/ (hard links where the file system allows)."""
    if names:
        directory.mkdir(exist_ok=True)
    for name in names:
        link_or_copy(source / f"{name}.parquet", directory / f"{name}.parquet")


def write_task(f: h5py.File, group: zarr.Group, store_dir: Path, dff: zarr.Array, roi_order: np.ndarray,
               valid_roi: np.ndarray, where: str, block_bytes: int = 32 * 1024 * 1024, session_task: Path | None = None,
               ophys_session_id: int | None = None) -> dict:
    """Add the task and the events to a store vb2p.extract is writing, beside its dff (events take its time
    coordinate and chunks where they are not moved as stored).

    roi_order: rows of the NWB cell table in dff's column order, so events line up with dff; valid_roi in that
    order. block_bytes bounds the float64 events held at a time (vb2p.extract's ExtractionOptions.block_bytes).
    session_task: a directory write_session_task wrote for this plane's session (ophys_session_id): its tables are
    taken when they are this file's task; without one, the tables are read from the file. Returns the task's root
    attributes of the store (has_task, counts, task_tables, task_parameters), which vb2p.extract writes with the
    others: the index reads them.
    """
    store_dir = Path(store_dir)
    roi_order = np.asarray(roi_order, dtype=np.int64)
    if NWB_EVENTS in f:
        with_events = _write_events(f, group, store_dir, dff, roi_order, where, block_bytes)
        without = int(np.sum(valid_roi & ~with_events))
        if without:
            log.warning("%s: %d valid ROIs have no events (AllenSDK leaves them out of `events`)", where, without)
    else:
        with_events = np.zeros(len(roi_order), dtype=bool)
        log.warning("%s: the file has no %s: the store has no events", where, NWB_EVENTS)
    record = None if session_task is None else _session_record(Path(session_task), f, ophys_session_id, where)
    if record is None:
        attributes = write_task_tables(f, store_dir / TASK_DIR, where)
    else:
        attributes = {key: value for key, value in record.items() if key not in SESSION_PROVENANCE}
        link_tables(attributes["task_tables"], Path(session_task), store_dir / TASK_DIR)
    if not attributes["has_task"]:
        log.warning("%s: the file holds no task (no %s, or no %s/*%s table): the store has dF/F and events only",
                    where, NWB_TRIALS, NWB_INTERVALS, PRESENTATIONS_SUFFIX)
    return {**attributes, "n_event_rois": int(with_events.sum())}
