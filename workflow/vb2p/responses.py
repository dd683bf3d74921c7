"""Stimulus-locked responses: brain_observatory_utilities 0.5.1's `get_stimulus_response_xr`, vectorised.

Same name, parameters, return value and values as bou's function (on AllenSDK's reference file the event-locked
traces are bit-identical, the means within 1e-15), computed with array operations instead of a pandas loop per cell
and per event. Where bou is wrong or fragile we differ on purpose, and say so where it happens:

- p_value_gray_screen: seeded (bou draws from NumPy's global state) and with response-window-long shuffled windows
  (bou's are output_sampling_rate times too long: 450 samples instead of ~15);
- output_sampling_rate=None means the trace's own frame rate (bou's is the frame rate times the number of cells);
- unmatched cells (cell_specimen_id NaN in AllenSDK, -1 in our stores) are kept, each as its own cell (bou raises);
- windows running off the recording are NaN where bou raises or wraps around.

Also here: the per-experiment Zarr store of responses, the release-wide Parquet table and the fraction of responsive
cells. This module also runs in AllenSDK's environment (numpy 1.23, pandas 1.5, xarray 2023.1), so zarr and pyarrow
are imported only by the functions that write.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from vb2p import __version__
from vb2p.errors import ConfigError, NwbError, TableError, Vb2pError
from vb2p.files import partial_directory, replace_directory

log = logging.getLogger(__name__)

EVENT_TYPES = ("changes", "omissions", "images", "all")
CELL_DATA_TYPES = ("dff", "events", "filtered_events")
DATA_TYPES = (*CELL_DATA_TYPES, "running_speed")
TABLE_EVENT_TYPES = ("changes", "omissions", "images")  # 'all' is their union: no rows of its own in the table
METADATA_COLUMNS = (
    "ophys_experiment_id",
    "ophys_session_id",
    "ophys_container_id",
    "behavior_session_id",
    "mouse_id",
    "cre_line",
    "reporter_line",
    "targeted_structure",
    "imaging_depth",
    "session_type",
    "session_number",
    "experience_level",
    "passive",
    "date_of_acquisition",
    "prior_exposures_to_image_set",
    "equipment_name",
    "project_code",
)
NUMBER_OF_SHUFFLES = 10_000  # bou's
SPONTANEOUS_DURATION_S = 4 * 60  # bou: the 4 minutes of gray screen before the change-detection block
SIGNIFICANT_P = 0.05  # a presentation is significant when its p_value_gray_screen is below this (bou, VBA)
# A cell is responsive when more than this fraction of its preferred image's presentations are significant: Allen's
# analysis code (visual_behavior_analysis) uses 0.1 over whole real sessions (config key platform.responsive_threshold).
RESPONSIVE_FRACTION = 0.1
UNMATCHED = -1  # cell_specimen_id of ROIs not matched across sessions, in our stores (AllenSDK: NaN)
PRESENTATION_COLUMNS = ("start_time", "image_name", "is_change", "omitted", "trials_id")
# Values computed per block of events (1 MB of float64): blocks this small keep the temporaries in memory the
# allocator reuses (fresh pages cost as much as the arithmetic on a VM); 2**17 beat 2**15 and 2**21 by 1.3-3x
# on 12 and on 170 cells when chosen.
BLOCK_ELEMENTS = 1 << 17
TRACE_CHUNK = (64, 256)  # cells x presentations per chunk of stored eventlocked_traces (all time samples)


@dataclass(frozen=True)
class Traces:
    """Traces sharing one time base: values (n_frames, n_traces), and the ids along the trace dimension."""

    timestamps: np.ndarray  # (n_frames,) float64 seconds
    values: np.ndarray  # (n_frames, n_traces) float64
    dim: str  # 'cell_specimen_id' (cells) or 'trace_id' (one behavioral trace, as bou)
    ids: np.ndarray  # (n_traces,) along dim
    cell_roi_id: np.ndarray | None  # (n_traces,) int64 for cells, None for a behavioral trace

    @property
    def frame_rate(self) -> float:
        """bou's sampling rate: 1 / mean interval."""
        return float(1 / np.diff(self.timestamps).mean())


def _experiment_name(experiment) -> str:
    experiment_id = getattr(experiment, "ophys_experiment_id", None)
    return f"experiment {experiment_id}" if experiment_id is not None else f"experiment {type(experiment).__name__}"


def load_traces(experiment, data_type: str = "dff", exclude_invalid_rois: bool = True) -> Traces:
    """The traces of one data type, cells in bou's order (ascending cell_specimen_id; unmatched cells by cell_roi_id).

    running_speed is one trace along a length-1 'trace_id' dimension, as bou returns it, so that code written for
    cells (or for bou) works on it unchanged. Our experiment objects offer `traces(data_type)` (valid ROIs only, as
    in the public NWB files); AllenSDK's per-cell arrays are stacked once. exclude_invalid_rois only filters
    AllenSDK objects (invalid ROIs exist only in Allen's internal database, as bou says).
    """
    name = _experiment_name(experiment)
    if data_type == "running_speed":
        running = _attribute(experiment, "running_speed", name)
        timestamps = np.asarray(running["timestamps"], dtype=np.float64)
        values = np.asarray(running["speed"], dtype=np.float64).reshape(-1, 1)
        return _checked(Traces(timestamps, values, "trace_id", np.zeros(1, dtype=np.int64), None), name, data_type)
    if data_type not in CELL_DATA_TYPES:
        raise ConfigError(f"data_type {data_type!r} is not one of {', '.join(DATA_TYPES)}")
    if hasattr(experiment, "traces"):
        timestamps, values, cell_specimen_id, cell_roi_id = experiment.traces(data_type)
    else:
        timestamps, values, cell_specimen_id, cell_roi_id = _allensdk_traces(experiment, data_type, exclude_invalid_rois)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    cell_specimen_id, cell_roi_id = np.asarray(cell_specimen_id), np.asarray(cell_roi_id, dtype=np.int64)
    if values.ndim != 2 or values.shape[1] != cell_roi_id.size or cell_specimen_id.shape != cell_roi_id.shape:
        raise NwbError(
            f"{name}: {data_type} is {values.shape} (frames x cells) for {cell_roi_id.size} cell_roi_ids and "
            f"{cell_specimen_id.size} cell_specimen_ids; the experiment's arrays disagree, re-extract it"
        )
    order = np.lexsort((cell_roi_id, cell_specimen_id))  # NaN (AllenSDK's unmatched) sorts last, -1 first
    if np.any(order != np.arange(order.size)):
        values = np.take(values, order, axis=1)  # C order (values[:, order] is not, and costs 15x more)
    traces = Traces(timestamps, np.ascontiguousarray(values), "cell_specimen_id", cell_specimen_id[order], cell_roi_id[order])
    return _checked(traces, name, data_type)


def _checked(traces: Traces, name: str, data_type: str) -> Traces:
    n_frames = traces.timestamps.size
    if traces.timestamps.ndim != 1 or traces.values.shape[0] != n_frames or n_frames < 2:
        raise NwbError(
            f"{name}: {data_type} has {traces.values.shape[0]} samples for {n_frames} timestamps (at least 2, "
            "equal numbers needed); the experiment's arrays disagree, re-extract it"
        )
    if np.any(np.diff(traces.timestamps) <= 0):
        raise NwbError(f"{name}: the timestamps of {data_type} do not increase; the file is damaged, re-download it")
    return traces


def _attribute(experiment, attribute: str, name: str):
    value = getattr(experiment, attribute, None)
    if value is None:
        raise NwbError(f"{name} has no {attribute} (an experiment without the task?); it has no stimulus responses")
    return value


def _allensdk_traces(experiment, data_type: str, exclude_invalid_rois: bool):
    """AllenSDK's per-cell arrays (dff_traces or events, one row per cell) stacked once into (frames, cells)."""
    table = experiment.dff_traces if data_type == "dff" else experiment.events
    if exclude_invalid_rois:
        cells = experiment.cell_specimen_table
        valid_roi_ids = cells.loc[cells["valid_roi"].astype(bool), "cell_roi_id"].to_numpy()
        table = table[table["cell_roi_id"].isin(valid_roi_ids).to_numpy()]
    stacked = np.vstack(table[data_type].to_numpy()) if len(table) else np.empty((0, len(experiment.ophys_timestamps)))
    return experiment.ophys_timestamps, stacked.T, table.index.to_numpy(), table["cell_roi_id"].to_numpy()


@dataclass(frozen=True)
class Presentations:
    """Stimulus presentations as arrays, one per column bou's output needs, in table order."""

    stimulus_presentations_id: np.ndarray  # (n,) int64
    start_time: np.ndarray  # (n,) float64 seconds
    image_name: np.ndarray  # (n,) object: str ('omitted' for omissions)
    is_change: np.ndarray  # (n,) bool
    omitted: np.ndarray  # (n,) bool
    trials_id: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return self.start_time.size

    def subset(self, mask: np.ndarray) -> Presentations:
        return Presentations(*(getattr(self, field)[mask] for field in self.__dataclass_fields__))


def change_detection_block(experiment) -> Presentations:
    """The experiment's stimulus_presentations limited to the change-detection block, as bou limits them."""
    name = _experiment_name(experiment)
    table = _attribute(experiment, "stimulus_presentations", name)
    block = ("stimulus_block_name",) if "stimulus_block_name" in table else ("stimulus_block",)
    missing = [column for column in (*PRESENTATION_COLUMNS, *block) if column not in table]
    if missing:
        raise NwbError(
            f"{name}: stimulus_presentations has no column {', '.join(missing)} (it has {', '.join(table.columns)}); "
            "a table as AllenSDK 2.16 reads it is needed"
        )
    return change_detection_presentations(table)


def change_detection_presentations(stimulus_presentations: pd.DataFrame) -> Presentations:
    """bou's limit_stimulus_presentations_to_change_detection: the block whose name contains 'change_detection'
    (AllenSDK >= 2.16), or stimulus_block 0 in tables without block names. Columns are taken as arrays (a
    DataFrame filter costs 10x more than the rest of a small experiment's call)."""
    if "stimulus_block_name" in stimulus_presentations:
        names = stimulus_presentations["stimulus_block_name"]
        # a handful of block names: test each once, not each of ~4,800 rows
        keep = names.isin([name for name in names.unique() if isinstance(name, str) and "change_detection" in name])
    else:
        keep = stimulus_presentations["stimulus_block"] == 0
    keep = keep.to_numpy(dtype=bool)

    def flag(column: str) -> np.ndarray:
        # AllenSDK's omitted is nullable (NA outside the change-detection block): NA is not a flag.
        return stimulus_presentations[column].to_numpy(dtype=bool, na_value=False)[keep]

    return Presentations(
        stimulus_presentations.index.to_numpy(dtype=np.int64)[keep],
        stimulus_presentations["start_time"].to_numpy(dtype=np.float64)[keep],
        stimulus_presentations["image_name"].to_numpy(dtype=object)[keep],
        flag("is_change"),
        flag("omitted"),
        stimulus_presentations["trials_id"].to_numpy(dtype=np.int64)[keep],
    )


def event_mask(presentations: Presentations, event_type: str) -> np.ndarray:
    """Which presentations bou aligns to: 'all', 'images' (not omitted), 'omissions', 'changes' (and bou's aliases
    'omitted', 'is_change')."""
    masks = {
        "all": lambda: np.ones(len(presentations), dtype=bool),
        "images": lambda: ~presentations.omitted,
        "omissions": lambda: presentations.omitted,
        "omitted": lambda: presentations.omitted,
        "changes": lambda: presentations.is_change,
        "is_change": lambda: presentations.is_change,
    }
    if event_type not in masks:
        raise ConfigError(f"event_type {event_type!r} is not one of {', '.join(EVENT_TYPES)}")
    return masks[event_type]()


def time_grid(t_start: float, t_end: float, sampling_rate: float, include_endpoint: bool = True) -> np.ndarray:
    """bou's get_time_array, to the bit: linspace from t_start; a window that is no whole number of samples ends
    at the last whole sample, endpoint included."""
    step_size = 1 / sampling_rate
    n_steps = (t_end - t_start) / step_size
    if n_steps != int(n_steps):
        n_steps = int(n_steps)
        t_end = t_start + n_steps * step_size
        include_endpoint = True
    if include_endpoint:
        n_steps += 1
    return np.linspace(t_start, t_end, int(n_steps), endpoint=include_endpoint)


def _block_size(n_samples: int, n_traces: int) -> int:
    return max(1, BLOCK_ELEMENTS // max(1, n_samples * n_traces))


def _event_blocks(n_events: int, n_samples: int, n_traces: int):
    size = _block_size(n_samples, n_traces)
    for start in range(0, n_events, size):
        yield slice(start, min(start + size, n_events))


def _interpolation_plan(timestamps: np.ndarray, events: np.ndarray, grid: np.ndarray, time_window: Sequence[float]):
    """For events (n, 1) and every grid point: the samples and factors of np.interp over the window's samples.

    np.interp computes (y[right] - y[left]) / (x[right] - x[left]) * (x - x[left]) + y[left] with x relative to
    the event; a grid point on a sample, before the window's first sample or after its last takes that sample's
    value: right = left, divisor 1, offset 0 give it exactly. Also returns where the window has no samples."""
    n_frames = timestamps.size
    first = np.searchsorted(timestamps, events + time_window[0], "left")
    last = np.searchsorted(timestamps, events + time_window[1], "right") - 1
    last_sample = np.clip(last, 0, n_frames - 1)
    # The sample at or before each grid point, kept inside the window so that left + 1 <= last.
    left = np.clip(np.searchsorted(timestamps, events + grid, "right") - 1, first, np.maximum(last - 1, first))
    left = np.minimum(left, n_frames - 1)
    right = np.minimum(left + 1, n_frames - 1)
    x_left = timestamps[left] - events
    on_left = (grid <= x_left) | (last <= first)
    after = grid >= timestamps[last_sample] - events
    exact = on_left | after
    left = np.where(after, last_sample, left)
    right = np.where(exact, left, right)
    divisor = np.where(exact, 1.0, timestamps[right] - events - x_left)
    offset = np.where(exact, 0.0, grid - x_left)
    return left, right, divisor, offset, np.broadcast_to(last < first, left.shape)


def eventlocked_interpolated(
    timestamps: np.ndarray, values: np.ndarray, event_times: np.ndarray, grid: np.ndarray, time_window: Sequence[float]
) -> np.ndarray:
    """(n_events, n_grid, n_traces): each trace around each event, interpolated onto event_time + grid.

    As bou (np.interp of the samples inside [event + start, event + end] only, times relative to the event): grid
    points before the first sample of the window take its value, after the last sample the last value. Same
    arithmetic as np.interp, so the values agree to the last bit. A window without samples is NaN (bou raises).
    Presentation-major: gathering whole frames (every cell at once) is ~5x faster than writing cell by cell.
    """
    n_traces = values.shape[1]
    out = np.empty((event_times.size, grid.size, n_traces))
    y_left = np.empty((min(_block_size(grid.size, n_traces), event_times.size), grid.size, n_traces))
    for block in _event_blocks(event_times.size, grid.size, n_traces):
        left, right, divisor, offset, empty = _interpolation_plan(timestamps, event_times[block, None], grid, time_window)
        locked, y = out[block], y_left[: block.stop - block.start]
        np.take(values, right, axis=0, out=locked, mode="clip")  # indices are in range: 'clip' skips a buffer
        np.take(values, left, axis=0, out=y, mode="clip")
        np.subtract(locked, y, out=locked)
        np.divide(locked, divisor[..., None], out=locked)
        np.multiply(locked, offset[..., None], out=locked)
        np.add(locked, y, out=locked)
        locked[empty] = np.nan
    return out


def nearest_index(timestamps: np.ndarray, event_times: np.ndarray) -> np.ndarray:
    """bou's index_of_nearest_value (ties go to the later sample), kept inside the trace."""
    n = timestamps.size
    insertion = np.searchsorted(timestamps, event_times)
    after = timestamps[np.minimum(insertion, n - 1)] - event_times
    before = np.abs(timestamps[np.maximum(insertion - 1, 0)] - event_times)
    return np.minimum(insertion - (after > before), n - 1)


def nearest_offsets(frame_rate: float, time_window: Sequence[float], include_endpoint: bool = True) -> np.ndarray:
    """bou's slice_inds_and_offsets: sample offsets from the nearest sample (int() truncates toward zero)."""
    start = int(time_window[0] * frame_rate)
    end = int(start + (time_window[1] - time_window[0]) * frame_rate) + int(include_endpoint)
    return np.arange(start, end)


def eventlocked_nearest(values: np.ndarray, event_indices: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n_events, n_offsets, n_traces): samples at event_index + offset (bou's interpolate=False); NaN off the
    recording (bou raises, or wraps around to the end for negative indices)."""
    n_frames, n_traces = values.shape
    out = np.empty((event_indices.size, offsets.size, n_traces))
    for block in _event_blocks(event_indices.size, offsets.size, n_traces):
        rows = event_indices[block, None] + offsets
        locked = out[block]
        np.take(values, rows, axis=0, out=locked, mode="clip")
        locked[(rows < 0) | (rows >= n_frames)] = np.nan
    return out


def window_means(locked: np.ndarray, grid: np.ndarray, response_window_duration: float) -> tuple[np.ndarray, np.ndarray]:
    """bou's compute_means_xr on (events, samples, traces): NaN-skipping means over [0, d] (response) and [-d, 0]
    (baseline) of the grid, both ends included (xarray's label slices), so the sample at 0 counts in both.
    (n_events, n_traces) each."""

    def mean_over(start: float, stop: float) -> np.ndarray:
        window = locked[:, np.searchsorted(grid, start, "left") : np.searchsorted(grid, stop, "right")]
        if not np.isnan(window).any():
            return window.mean(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN window: NaN, as xarray gives
            return np.nanmean(window, axis=1)

    return mean_over(0, response_window_duration), mean_over(-response_window_duration, 0)


def spontaneous_frames(presentations: Presentations, timestamps: np.ndarray) -> np.ndarray:
    """bou's get_spontaneous_frames('before'): frames of the 4 minutes before the change-detection block's first
    presentation (its second when the first is an omission), nearest samples at both ends, end excluded."""
    first = 1 if presentations.image_name[0] == "omitted" else 0
    block_start = float(presentations.start_time[first])
    start, end = nearest_index(timestamps, np.array([block_start - SPONTANEOUS_DURATION_S, block_start]))
    return np.arange(start, end)


@dataclass(frozen=True)
class GrayScreenShuffles:
    """bou's null distribution of p_value_gray_screen, per trace: the means of shuffled gray-screen windows, each
    distinct draw once (sorted) with the number of draws below it. Computed once per set of traces."""

    sorted_means: np.ndarray  # (n_traces, n_distinct_draws)
    below: np.ndarray  # (n_traces, n_distinct_draws + 1) int64: draws among the k smallest means
    number_of_shuffles: int

    def p_values(self, mean_response: np.ndarray) -> np.ndarray:
        """(n_traces, n_events): the fraction of shuffles whose mean is at least the response (bou: 1 -
        searchsorted(sorted shuffle means, response) / shuffles, so ties count as larger); NaN for NaN."""
        position = searchsorted_rows(self.sorted_means, mean_response)
        p_values = 1 - np.take_along_axis(self.below, position, axis=1) / self.number_of_shuffles
        p_values[np.isnan(mean_response)] = np.nan
        return p_values


def gray_screen_shuffles(
    values: np.ndarray, frames: np.ndarray, window_samples: int, seed: int = 0,
    number_of_shuffles: int = NUMBER_OF_SHUFFLES,
) -> GrayScreenShuffles | None:
    """Shuffles of window_samples-long windows of each trace (values: frames x traces) starting at frames drawn
    with replacement from `frames` with NumPy's default_rng(seed), the same draws for every trace (as bou); None
    if no window fits in the trace."""
    n_frames, n_traces = values.shape
    frames = frames[(frames >= 0) & (frames + window_samples <= n_frames)]
    if frames.size == 0:
        return None
    first = int(frames.min())
    starts = np.random.default_rng(seed).choice(frames, number_of_shuffles) - first
    # Each distinct start once, weighted by how often it was drawn: the same distribution as the 10,000 draws.
    drawn, weight = np.unique(starts, return_counts=True)
    # Window means from running sums (one pass over the gray screen; rounding ~1e-13, far below any response).
    running = np.zeros((int(drawn[-1]) + window_samples + 1, n_traces))
    np.cumsum(values[first : first + running.shape[0] - 1], axis=0, out=running[1:])
    means = ((running[drawn + window_samples] - running[drawn]) / window_samples).T  # (traces, drawn)
    order = np.argsort(means, axis=1)
    below = np.zeros((n_traces, drawn.size + 1), dtype=np.int64)
    np.cumsum(weight[order], axis=1, out=below[:, 1:])
    return GrayScreenShuffles(np.take_along_axis(means, order, axis=1), below, number_of_shuffles)


def p_value_gray_screen(
    mean_response: np.ndarray, values: np.ndarray, frames: np.ndarray, window_samples: int, seed: int = 0,
    number_of_shuffles: int = NUMBER_OF_SHUFFLES,
) -> np.ndarray:
    """(n_traces, n_events) p-values of mean responses against gray-screen shuffles (gray_screen_shuffles); NaN
    where the response is NaN or no window fits in the trace."""
    shuffles = gray_screen_shuffles(values, frames, window_samples, seed, number_of_shuffles)
    return np.full(mean_response.shape, np.nan) if shuffles is None else shuffles.p_values(mean_response)


def searchsorted_rows(sorted_rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """np.searchsorted(sorted_rows[i], values[i], side='left') for every row i in one call, no loop over rows:
    complex keys row + 1j * value sort lexicographically (row first, then value), so the rows laid end to end
    are one sorted array. NaN (last in each sorted row, as np.sort puts it) is searched as +inf: numpy would sort
    a complex NaN after every row."""
    n_rows, n_sorted = sorted_rows.shape
    rows = np.arange(n_rows)[:, None]

    def keys(array: np.ndarray) -> np.ndarray:
        key = np.empty(array.shape, dtype=np.complex128)  # not row + 1j * value: 1j * inf is nan + inf j
        key.real, key.imag = rows, np.where(np.isnan(array), np.inf, array)
        return key.ravel()

    return np.searchsorted(keys(sorted_rows), keys(values), "left").reshape(values.shape) - rows * n_sorted


def _locker(traces: Traces, time_window, interpolate: bool, output_sampling_rate, include_endpoint: bool):
    """The time base, its sampling rate, and event_times -> (events, samples, traces) as bou aligns."""
    frame_rate = traces.frame_rate
    if interpolate:
        rate = frame_rate if output_sampling_rate is None else float(output_sampling_rate)
        grid = time_grid(time_window[0], time_window[1], rate, include_endpoint)
        return grid, rate, lambda times: eventlocked_interpolated(traces.timestamps, traces.values, times, grid, time_window)
    offsets = nearest_offsets(frame_rate, time_window, include_endpoint)
    return offsets / frame_rate, frame_rate, lambda times: eventlocked_nearest(
        traces.values, nearest_index(traces.timestamps, times), offsets
    )


def _shuffles(traces: Traces, presentations: Presentations, response_window_duration: float, seed: int):
    """The gray-screen shuffles of these traces (None without gray screen) and their window length: as long as
    the response window, in samples of the trace the windows are cut from (bou: output_sampling_rate x longer)."""
    window_samples = max(1, round(response_window_duration * traces.frame_rate))
    if len(presentations) == 0:
        return None, window_samples
    shuffles = gray_screen_shuffles(traces.values, spontaneous_frames(presentations, traces.timestamps), window_samples, seed)
    if shuffles is None:
        log.warning(
            "no %d-sample window of gray screen before the change-detection block in the %s traces: "
            "p_value_gray_screen is NaN", window_samples, traces.dim,
        )
    return shuffles, window_samples


def _p_values(shuffles: GrayScreenShuffles | None, mean_response: np.ndarray) -> np.ndarray:
    return np.full(mean_response.shape, np.nan) if shuffles is None else shuffles.p_values(mean_response)


def _dataset(traces: Traces, events: Presentations, grid: np.ndarray, variables: dict, attrs: dict) -> xr.Dataset:
    """bou's Dataset (variables by name: (traces, events[, samples]) arrays) with our coordinates."""
    cell_dims = (traces.dim, "stimulus_presentations_id")
    coords = {
        "eventlocked_timestamps": grid,
        "stimulus_presentations_id": events.stimulus_presentations_id,
        traces.dim: traces.ids,
        **{name: ("stimulus_presentations_id", getattr(events, name))
           for name in ("image_name", "is_change", "omitted", "trials_id", "start_time")},
    }
    if traces.cell_roi_id is not None:
        coords["cell_roi_id"] = (traces.dim, traces.cell_roi_id)
    dims = {name: (*cell_dims, "eventlocked_timestamps") if values.ndim == 3 else cell_dims
            for name, values in variables.items()}
    return xr.Dataset({name: (dims[name], values) for name, values in variables.items()}, coords=coords, attrs=attrs)


def _attrs(event_type, time_window, response_window_duration, interpolate, rate, window_samples, seed) -> dict:
    return {
        "event_type": event_type,
        "time_window": [float(t) for t in time_window],
        "response_window_duration": float(response_window_duration),
        "interpolate": bool(interpolate),
        "output_sampling_rate": float(rate),
        "p_value_window_samples": int(window_samples),
        "p_value_number_of_shuffles": NUMBER_OF_SHUFFLES,
        "seed": int(seed),
    }


def stimulus_responses(
    traces: Traces,
    presentations: Presentations,
    event_type: str = "all",
    time_window: Sequence[float] = (-3, 3),
    response_window_duration: float = 0.5,
    interpolate: bool = True,
    output_sampling_rate: float | None = None,
    seed: int = 0,
    include_endpoint: bool = True,
) -> xr.Dataset:
    """get_stimulus_response_xr on traces already loaded and presentations already limited to change detection
    (one load serves every event type)."""
    events = presentations.subset(event_mask(presentations, event_type))
    grid, rate, lock = _locker(traces, time_window, interpolate, output_sampling_rate, include_endpoint)
    locked = lock(events.start_time)
    mean_response, mean_baseline = window_means(locked, grid, response_window_duration)
    shuffles, window_samples = _shuffles(traces, presentations if len(events) else events, response_window_duration, seed)
    variables = {
        "eventlocked_traces": locked.transpose(2, 0, 1),  # a view: bou's dimension order
        "mean_response": mean_response.T,
        "mean_baseline": mean_baseline.T,
        "p_value_gray_screen": _p_values(shuffles, mean_response.T),
    }
    attrs = _attrs(event_type, time_window, response_window_duration, interpolate, rate, window_samples, seed)
    return _dataset(traces, events, grid, variables, attrs)


def get_stimulus_response_xr(
    ophys_experiment,
    data_type="dff",
    event_type="all",
    time_window=(-3, 3),
    response_window_duration=0.5,
    interpolate=True,
    output_sampling_rate=None,
    exclude_invalid_rois=True,
    *,
    seed=0,
    include_endpoint=True,
) -> xr.Dataset:
    """Stimulus-locked responses of one experiment, as brain_observatory_utilities 0.5.1's function of this name.

    Parameters (bou's, same order and defaults): ophys_experiment (AllenSDK's BehaviorOphysExperiment or ours);
    data_type 'dff', 'events', 'filtered_events' or 'running_speed'; event_type 'all', 'images', 'omissions',
    'changes'; time_window [start, end] s around each event; response_window_duration s (mean response over
    [0, d], baseline over [-d, 0]); interpolate (onto a grid at output_sampling_rate, else nearest samples);
    output_sampling_rate (None: the trace's own frame rate); exclude_invalid_rois. Ours: seed (the shuffles of
    p_value_gray_screen), include_endpoint (bou passes it through **kwargs).

    Returns bou's Dataset: eventlocked_traces (cell_specimen_id x stimulus_presentations_id x
    eventlocked_timestamps), mean_response, mean_baseline and p_value_gray_screen, limited to the change-detection
    block; plus image_name, is_change, omitted, trials_id and start_time along stimulus_presentations_id, and
    cell_roi_id along cell_specimen_id. Cells are in bou's order (ascending cell_specimen_id). cell_specimen_id
    keeps the experiment's dtype and its mark of unmatched cells (AllenSDK: float64 with NaN, as bou's coordinate;
    ours: int64 with -1); as those repeat, select several cells with .isel or after
    .swap_dims(cell_specimen_id="cell_roi_id"). running_speed has bou's length-1 'trace_id' dimension instead of
    cells (one trace; code written for cells works on it). eventlocked_traces is a transposed view of a
    presentation-major array (np.ascontiguousarray gives bou's memory layout). Values equal bou's: traces to the
    last bit, means within 1e-15.

    p_value_gray_screen is bou's method (the fraction of 10,000 shuffled windows of the gray screen before the
    task whose mean is at least the response) except that the windows are as long as the response window, in
    samples of the trace (bou's are output_sampling_rate times longer, 450 samples instead of 15), and are drawn
    from default_rng(seed), reproducibly (bou draws from NumPy's global state), from the trace's own time base
    (bou uses the ophys timestamps for running speed too). Also unlike bou: output_sampling_rate=None means the
    trace's frame rate (bou's is the frame rate times the number of cells); unmatched cells are kept (bou raises);
    windows off the recording are NaN (bou raises or wraps around).
    """
    presentations = change_detection_block(ophys_experiment)
    traces = load_traces(ophys_experiment, data_type, exclude_invalid_rois)
    return stimulus_responses(
        traces, presentations, event_type, time_window, response_window_duration, interpolate,
        output_sampling_rate, seed, include_endpoint,
    )


@dataclass(frozen=True)
class ResponseParams:
    """The `responses` section of the workflow config; every check names its key (responses.<key>)."""

    time_window: tuple[float, float] = (-1.0, 1.5)
    response_window_duration: float = 0.5
    output_sampling_rate: float = 30.0
    interpolate: bool = True
    seed: int = 0
    event_types: tuple[str, ...] = EVENT_TYPES
    data_types: tuple[str, ...] = ("dff", "events", "running_speed")
    trace_dtype: str = "float32"  # stored eventlocked_traces: halves the store; float32 resolves dF/F to ~1e-7

    def __post_init__(self):
        for key in ("time_window", "event_types", "data_types"):
            value = getattr(self, key)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ConfigError(f"config key responses.{key}: expected a list, got {value!r}")
            object.__setattr__(self, key, tuple(value))
        self._check_window()
        if not _is_number(self.output_sampling_rate) or not self.output_sampling_rate > 0:
            raise ConfigError(
                f"config key responses.output_sampling_rate: {self.output_sampling_rate!r} is not a rate in Hz > 0"
            )
        if not isinstance(self.interpolate, bool):
            raise ConfigError(f"config key responses.interpolate: {self.interpolate!r} is not true or false")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"config key responses.seed: {self.seed!r} is not an integer >= 0")
        for key, allowed in (("event_types", EVENT_TYPES), ("data_types", DATA_TYPES)):
            chosen = getattr(self, key)
            unknown = [value for value in chosen if value not in allowed]
            if unknown or not chosen or len(set(chosen)) != len(chosen):
                raise ConfigError(
                    f"config key responses.{key}: {list(chosen)!r} must list distinct values among "
                    f"{', '.join(allowed)}" + (f" (unknown: {', '.join(map(str, unknown))})" if unknown else "")
                )
        if self.trace_dtype not in ("float32", "float64"):
            raise ConfigError(f"config key responses.trace_dtype: {self.trace_dtype!r} is not float32 or float64")

    def _check_window(self):
        window, duration = self.time_window, self.response_window_duration
        if len(window) != 2 or not all(_is_number(t) for t in window) or not window[0] < window[1]:
            raise ConfigError(
                f"config key responses.time_window: {list(window)!r} must be [start, end] in seconds, finite, "
                "start < end"
            )
        if not _is_number(duration) or not duration > 0:
            raise ConfigError(f"config key responses.response_window_duration: {duration!r} is not seconds > 0")
        if window[0] > -duration or window[1] < duration:
            raise ConfigError(
                f"config key responses.time_window: {list(window)!r} must contain the baseline and response windows "
                f"[-{duration}, {duration}] (responses.response_window_duration)"
            )

    @classmethod
    def from_config(cls, section: Mapping | None) -> ResponseParams:
        section = dict(section or {})
        unknown = sorted(set(section) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"unknown config key {', '.join('responses.' + key for key in unknown)}; allowed here: "
                f"{', '.join(cls.__dataclass_fields__)}"
            )
        return cls(**section)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


def _task_presentations(experiment) -> Presentations | None:
    """The change-detection presentations, or None for an experiment without the task or without that block."""
    if getattr(experiment, "has_task", True) is False:
        return None
    table = getattr(experiment, "stimulus_presentations", None)
    if table is None or len(table) == 0:
        return None
    presentations = change_detection_block(experiment)
    return presentations if len(presentations) else None


def _has_running_speed(experiment) -> bool:
    try:
        return getattr(experiment, "running_speed", None) is not None
    except NwbError:  # vb2p.experiment's way of saying that a store has no task tables
        return False


def _no_presentations() -> Presentations:
    return Presentations(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=object), np.zeros(0, dtype=bool),
                         np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64))


def experiment_metadata(selected: pd.DataFrame) -> dict[int, dict]:
    """Per experiment of a selection (indexed by ophys_experiment_id), the metadata its response store carries
    (METADATA_COLUMNS), as JSON values."""
    columns = [key for key in METADATA_COLUMNS if key != "ophys_experiment_id"]
    return {int(experiment_id): {"ophys_experiment_id": int(experiment_id),
                                 **{key: _json_value(value) for key, value in zip(columns, values)}}
            for experiment_id, values in zip(selected.index, selected[columns].itertuples(index=False))}


def _json_value(value):
    """A metadata value as JSON: numpy scalars as Python, NaN / NA / None as null."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(item) for item in value]
    if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return str(value)


def _stored(dataset: xr.Dataset) -> xr.Dataset:
    """One convention in every store: int64 cell_specimen_id with -1 for unmatched cells (AllenSDK's NaN), and
    image names as UTF-8 strings (an object array of no presentations would be stored as float)."""
    coords = {"image_name": dataset["image_name"].astype(np.dtypes.StringDType())}
    if "cell_specimen_id" in dataset.coords and dataset["cell_specimen_id"].dtype.kind == "f":
        ids = dataset["cell_specimen_id"].values
        coords["cell_specimen_id"] = np.where(np.isnan(ids), UNMATCHED, ids).astype(np.int64)
    return dataset.assign_coords(coords)


class _TraceWriter:
    """Appends (presentations, samples, traces) blocks to a group's eventlocked_traces (traces x presentations x
    samples) in whole chunks along presentations: every chunk is compressed and written once."""

    def __init__(self, group, shape: tuple[int, int, int], dim: str, dtype: str):
        self.chunk = max(1, min(shape[1], TRACE_CHUNK[1]))
        self.array = group.create_array(
            "eventlocked_traces", shape=shape, dtype=dtype, fill_value=np.nan,
            chunks=(max(1, min(shape[0], TRACE_CHUNK[0])), self.chunk, max(1, shape[2])),
            dimension_names=[dim, "stimulus_presentations_id", "eventlocked_timestamps"],
        )
        self.pending: list[np.ndarray] = []
        self.written = 0

    def append(self, locked: np.ndarray) -> None:
        self.pending.append(locked.astype(self.array.dtype))
        if sum(block.shape[0] for block in self.pending) >= self.chunk:
            self._flush(whole_chunks=True)

    def _flush(self, whole_chunks: bool) -> None:
        if not self.pending:
            return
        pending = np.concatenate(self.pending)
        n = pending.shape[0] // self.chunk * self.chunk if whole_chunks else pending.shape[0]
        if n:
            self.array[:, self.written : self.written + n, :] = pending[:n].transpose(2, 0, 1)
        self.written += n
        self.pending = [pending[n:]] if n < pending.shape[0] else []

    def close(self) -> None:
        self._flush(whole_chunks=False)


def _write_data_type(traces: Traces, presentations: Presentations, params: ResponseParams, store: Path,
                     data_type: str) -> dict[str, int]:
    """Every event type of one data type, computed once for all presentations in blocks (memory bounded by a
    block, whatever the number of cells) and written as each event type's subset: the same values as
    get_stimulus_response_xr per event type (every presentation's window and p-value are its own)."""
    import zarr

    grid, rate, lock = _locker(traces, params.time_window, params.interpolate, params.output_sampling_rate, True)
    shuffles, window_samples = _shuffles(traces, presentations, params.response_window_duration, params.seed)
    chosen = {event_type: event_mask(presentations, event_type) for event_type in params.event_types}
    root = zarr.open_group(store, mode="a", zarr_format=3)
    writers = {
        event_type: _TraceWriter(
            root.require_group(f"{data_type}/{event_type}"), (traces.ids.size, int(mask.sum()), grid.size),
            traces.dim, params.trace_dtype,
        )
        for event_type, mask in chosen.items()
    }
    times = presentations.start_time
    mean_response = np.empty((times.size, traces.ids.size))
    mean_baseline = np.empty_like(mean_response)
    for start in range(0, times.size, TRACE_CHUNK[1]):
        block = slice(start, start + TRACE_CHUNK[1])
        locked = lock(times[block])
        mean_response[block], mean_baseline[block] = window_means(locked, grid, params.response_window_duration)
        for event_type, writer in writers.items():
            writer.append(locked[chosen[event_type][block]])
    p_values = _p_values(shuffles, mean_response.T)
    for event_type, mask in chosen.items():
        writers[event_type].close()
        variables = {"mean_response": mean_response[mask].T, "mean_baseline": mean_baseline[mask].T,
                     "p_value_gray_screen": p_values[:, mask]}
        attrs = _attrs(event_type, params.time_window, params.response_window_duration, params.interpolate, rate,
                       window_samples, params.seed)
        subset = _dataset(traces, presentations.subset(mask), grid, variables, {**attrs, "data_type": data_type})
        _stored(subset).to_zarr(store, group=f"{data_type}/{event_type}", mode="a", zarr_format=3, consolidated=False)
    return {event_type: int(mask.sum()) for event_type, mask in chosen.items()}


def write_experiment_responses(experiment, out_path: str | Path, params: ResponseParams, metadata: Mapping) -> dict:
    """One Zarr store of an experiment's responses: a group per <data_type>/<event_type> holding
    get_stimulus_response_xr's Dataset (eventlocked_traces as params.trace_dtype), `metadata` (the experiment's
    index row) and the parameters in the root attributes. Written under a temporary name and renamed, so a store
    that exists is complete.

    An experiment without the task or without a change-detection block gets the same groups with no
    presentations, and a log line naming it (and no running_speed groups if it has no running either).
    """
    import zarr  # not in AllenSDK's environment, where the rest of this module also runs

    out_path = Path(out_path)
    experiment_id = _json_value(metadata.get("ophys_experiment_id"))
    name = f"experiment {experiment_id}"
    presentations = _task_presentations(experiment)
    if presentations is None:
        log.info("%s has no change-detection block (no task): its response store %s has no presentations", name, out_path)
    partial = partial_directory(out_path)
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed run
    n_presentations, n_cells, written = {}, 0, []
    try:
        zarr.open_group(partial, mode="w", zarr_format=3)
        for data_type in params.data_types:
            if data_type == "running_speed" and presentations is None and not _has_running_speed(experiment):
                log.info("%s has no running_speed either: no running_speed groups", name)
                continue
            traces = load_traces(experiment, data_type)
            n_presentations = _write_data_type(
                traces, _no_presentations() if presentations is None else presentations, params, partial, data_type
            )
            written += [f"{data_type}/{event_type}" for event_type in params.event_types]
            n_cells = traces.ids.size if traces.cell_roi_id is not None else n_cells
            del traces  # one data type in memory at a time
        root = zarr.open_group(partial, mode="a", zarr_format=3)
        root.update_attributes(
            {
                "metadata": {key: _json_value(value) for key, value in metadata.items()},
                "responses": {key: _json_value(value) for key, value in asdict(params).items()},
                "groups": written,
                "has_task": presentations is not None,
                "n_cells": int(n_cells),
                "n_presentations": n_presentations,
                "vb2p_version": __version__,
            }
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns that consolidated metadata is not in the v3 spec yet
            zarr.consolidate_metadata(str(partial))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    replace_directory(partial, out_path)
    return {
        "ophys_experiment_id": experiment_id,
        "path": str(out_path),
        "has_task": presentations is not None,
        "n_cells": int(n_cells),
        "n_presentations": n_presentations,
        "groups": written,
    }


STRING_METADATA = {"mouse_id", "cre_line", "reporter_line", "targeted_structure", "session_type", "experience_level",
                   "equipment_name", "project_code", "date_of_acquisition"}  # ISO 8601 text: as the selection has it
BOOL_METADATA = {"passive"}  # the other metadata columns are integers


def response_table_schema(eventlocked_timestamps: Sequence[float]):
    """The release-wide table's columns; the time base of mean_trace in its metadata."""
    import pyarrow as pa

    fields = [(key, pa.string() if key in STRING_METADATA else pa.bool_() if key in BOOL_METADATA else pa.int64())
              for key in METADATA_COLUMNS]
    fields += [
        ("data_type", pa.string()),
        ("event_type", pa.string()),
        ("image_name", pa.string()),
        ("cell_specimen_id", pa.int64()),
        ("cell_roi_id", pa.int64()),
        ("n_presentations", pa.int64()),
        ("mean_response", pa.float64()),
        ("mean_baseline", pa.float64()),
        ("fraction_significant", pa.float64()),
        ("mean_trace", pa.list_(pa.float32())),
    ]
    return pa.schema(fields).with_metadata(
        {
            "eventlocked_timestamps": json.dumps([float(t) for t in eventlocked_timestamps]),
            "fraction_significant": f"fraction of presentations with p_value_gray_screen < {SIGNIFICANT_P}",
        }
    )


def _group_means(values: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """NaN-skipping means over presentations per group: values (..., presentations) @ membership (presentations,
    groups) -> (..., groups)."""
    finite = np.isfinite(values)
    if finite.all():
        return (values @ membership) / membership.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(finite, values, 0) @ membership) / (finite.astype(membership.dtype) @ membership)


def _metadata_value(key: str, value):
    if value is None:
        return None
    if key in STRING_METADATA:
        return str(value)
    return bool(value) if key in BOOL_METADATA else int(value)


def experiment_response_rows(store: str | Path, cell_block: int = 32) -> dict | None:
    """The table rows of one store (columns -> arrays; mean_trace as a (rows, samples) array), or None if it has
    no cells or no presentations. One row per cell x event type x image (changes by change image, omissions,
    image presentations by image). Cells are read in blocks: memory is bounded by the block."""
    import zarr

    attrs = zarr.open_group(str(store), mode="r").attrs.asdict()
    parts: dict[str, list] = {}
    for group in attrs.get("groups", []):
        data_type, event_type = group.split("/")
        if data_type not in CELL_DATA_TYPES or event_type not in TABLE_EVENT_TYPES:
            continue
        dataset = xr.open_zarr(str(store), group=group, consolidated=False)
        images, inverse = np.unique(dataset["image_name"].values.astype(object), return_inverse=True)
        n_cells, n_images = dataset.sizes["cell_specimen_id"], images.size
        if n_images == 0 or n_cells == 0:
            continue
        membership = np.zeros((inverse.size, n_images))  # presentations x images
        membership[np.arange(inverse.size), inverse] = 1
        count = membership.sum(axis=0)
        significant = (dataset["p_value_gray_screen"].values < SIGNIFICANT_P) @ membership / count
        traces = dataset["eventlocked_traces"]
        trace_membership = membership.astype(traces.dtype)  # float32 traces: single-precision products, twice as fast
        traces = [
            _group_means(traces[start : start + cell_block].values.transpose(0, 2, 1), trace_membership)
            for start in range(0, n_cells, cell_block)
        ]  # each (cells, samples, images)
        n_rows = n_cells * n_images
        group_columns = {
            "data_type": np.full(n_rows, data_type, dtype=object),
            "event_type": np.full(n_rows, event_type, dtype=object),
            "image_name": np.tile(images, n_cells),
            "cell_specimen_id": np.repeat(dataset["cell_specimen_id"].values.astype(np.int64), n_images),
            "cell_roi_id": np.repeat(dataset["cell_roi_id"].values.astype(np.int64), n_images),
            "n_presentations": np.tile(count.astype(np.int64), n_cells),
            "mean_response": _group_means(dataset["mean_response"].values, membership).ravel(),
            "mean_baseline": _group_means(dataset["mean_baseline"].values, membership).ravel(),
            "fraction_significant": significant.ravel(),
            "mean_trace": np.concatenate(traces).transpose(0, 2, 1).reshape(n_rows, -1).astype(np.float32),
        }
        for key, values in group_columns.items():
            parts.setdefault(key, []).append(values)
    if not parts:
        return None
    rows = {key: np.concatenate(values) for key, values in parts.items()}
    metadata = attrs.get("metadata", {})
    for key in METADATA_COLUMNS:
        rows[key] = [_metadata_value(key, metadata.get(key))] * rows["data_type"].size
    return rows


def _store_time_base(store: Path) -> np.ndarray | None:
    import zarr

    root = zarr.open_group(str(store), mode="r")
    if "responses" not in root.attrs:
        raise Vb2pError(f"{store} is not a response store (no 'responses' attribute); write it with vb2p.responses")
    groups = root.attrs.get("groups", [])
    return root[f"{groups[0]}/eventlocked_timestamps"][:] if groups else None


def build_response_table(stores: list[Path], out_path: Path) -> None:
    """The release-wide Parquet table: one row per cell x event type x image with mean_response, mean_baseline,
    fraction_significant (p_value_gray_screen < 0.05), n_presentations, mean_trace (a list column; its time base,
    eventlocked_timestamps, is in the file's metadata), cell ids and the experiment's metadata columns.

    Written one experiment at a time with pyarrow's ParquetWriter (a row group each: memory bounded by the
    largest experiment, and filters on metadata columns skip whole experiments). Every store must have the same
    time base (the same responses parameters); the file appears only when complete.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vb2p.files import atomic_write

    stores = [Path(store) for store in stores]
    grid, first = None, None
    for store in stores:
        store_grid = _store_time_base(store)
        if store_grid is None:
            continue
        if grid is None:
            grid, first = store_grid, store
        elif not np.array_equal(store_grid, grid):
            raise ConfigError(
                f"{store} and {first} have different eventlocked_timestamps (made with different responses "
                "parameters); the table needs one time base: rerun the responses step with one config"
            )
    schema = response_table_schema([] if grid is None else grid)

    def write(temporary: Path) -> None:
        with pq.ParquetWriter(str(temporary), schema) as writer:
            for store in stores:
                rows = experiment_response_rows(store)
                if rows is None:
                    continue
                traces = rows.pop("mean_trace")
                arrays = {key: pa.array(values, type=schema.field(key).type) for key, values in rows.items()}
                offsets = pa.array(np.arange(traces.shape[0] + 1, dtype=np.int32) * traces.shape[1])
                arrays["mean_trace"] = pa.ListArray.from_arrays(offsets, pa.array(traces.ravel(), type=pa.float32()))
                writer.write_table(pa.table([arrays[field.name] for field in schema], schema=schema))

    atomic_write(out_path, write)


def preferred_responses(table: pd.DataFrame, data_type: str = "dff", event_type: str = "changes",
                        threshold: float = RESPONSIVE_FRACTION) -> pd.DataFrame:
    """Each cell's row for its preferred image (largest mean_response; the one row of omissions), with `responsive`:
    more than `threshold` of those presentations are significant (p_value_gray_screen < 0.05), as Allen's
    platform-paper code counts them (visual_behavior_analysis's get_fraction_responsive_cells, threshold 0.1, on its
    pref_stim rows; see RESPONSIVE_FRACTION for the threshold). A cell is an ROI of an experiment."""
    missing = [column for column in ("data_type", "event_type", "mean_response", "fraction_significant",
                                     "ophys_experiment_id", "cell_roi_id") if column not in table]
    if missing:
        raise TableError(f"the responses table has no column {', '.join(missing)}; it has {', '.join(table.columns)}")
    rows = table[(table["data_type"] == data_type) & (table["event_type"] == event_type)].dropna(subset=["mean_response"])
    if rows.empty:
        raise TableError(
            f"the responses table has no rows for data_type {data_type!r} and event_type {event_type!r}; it has "
            f"{sorted(set(zip(table['data_type'], table['event_type'])))}"
        )
    preferred = rows.loc[rows.groupby(["ophys_experiment_id", "cell_roi_id"])["mean_response"].idxmax()]
    return preferred.assign(responsive=preferred["fraction_significant"] > threshold)


def responsive_cells(
    table: pd.DataFrame,
    group_by: Sequence[str] = ("cre_line", "experience_level"),
    data_type: str = "dff",
    event_type: str = "changes",
    threshold: float = RESPONSIVE_FRACTION,
) -> pd.DataFrame:
    """The fraction of responsive cells (preferred_responses) per group, as Allen's platform-paper figures count
    them. Returns group_by columns, n_cells, n_responsive, fraction_responsive."""
    group_by = list(group_by)
    missing = [column for column in group_by if column not in table]
    if missing:
        raise TableError(f"the responses table has no column {', '.join(missing)}; it has {', '.join(table.columns)}")
    preferred = preferred_responses(table, data_type, event_type, threshold)
    counts = preferred.groupby(group_by, dropna=False)["responsive"].agg(n_cells="size", n_responsive="sum")
    counts["fraction_responsive"] = counts["n_responsive"] / counts["n_cells"]
    return counts.reset_index()
