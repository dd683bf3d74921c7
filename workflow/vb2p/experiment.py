"""An experiment's Zarr store with AllenSDK's names: code written for AllenSDK 2.16.2's `BehaviorOphysExperiment`
runs on our output after changing one line,

    experiment = BehaviorOphysExperiment.from_nwb_path(nwb_path)   ->   experiment = open_experiment(store_path)

Attributes have AllenSDK's names, index, columns, dtypes and encodings (valid ROIs only; NaN cell_specimen_id for
ROIs not matched across sessions, where the store keeps -1), and each is read from the store on first use.
`traces` is the fast path for analysis code: arrays straight from Zarr, no per-cell Python objects.

Values equal AllenSDK's, except dF/F of a float32 store (the default: extraction.dff_dtype), which is AllenSDK's
values rounded to float32 (vb2p.extract); events are the release's float64 (vb2p.task).

Every access hands out a new table, array, image or dict, so editing one never changes what the experiment hands out
later, nor what vb2p computes from it (AllenSDK shares some of its attributes between accesses and builds others
anew). The arrays inside tables (a cell's trace or mask, a trial's lick times) are shared and read-only: copying a
plane's dF/F on every access would be hundreds of MB; copy one before editing it in place. A copy of a large table
costs its size (eye tracking: 48 MB, ~12 ms): assign an attribute once rather than reading it in a loop.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import zarr

from vb2p import layout, performance, task
from vb2p.errors import NwbError

TRACES = ("dff", "events", "filtered_events")
# AllenSDK's cell_specimen_table columns, in its order (the NWB cell table's colnames, id first).
CELL_TABLE_COLUMNS = ("cell_roi_id", "height", "width", "x", "y", "mask_image_plane", "max_correction_down",
                      "max_correction_left", "max_correction_right", "max_correction_up", "valid_roi", "roi_mask")
BEHAVIOR_METADATA = ("equipment_name", "sex", "age_in_days", "stimulus_frame_rate", "session_type",
                     "date_of_acquisition", "reporter_line", "cre_line", "behavior_session_uuid", "driver_line",
                     "mouse_id", "project_code", "full_genotype", "behavior_session_id")
OPHYS_METADATA = ("indicator", "emission_lambda", "excitation_lambda", "ophys_container_id", "field_of_view_height",
                  "field_of_view_width", "imaging_depth", "targeted_imaging_depth", "imaging_plane_group",
                  "imaging_plane_group_count", "ophys_experiment_id", "ophys_frame_rate", "ophys_session_id",
                  "project_code", "targeted_structure")


class Image(NamedTuple):
    """AllenSDK's image (allensdk.brain_observatory.behavior.image_api.Image): pixels, mm per pixel, unit."""

    data: np.ndarray
    spacing: tuple
    unit: str = "mm"

    def __eq__(self, other):
        return np.array_equal(self.data, other.data) and self.spacing == other.spacing and self.unit == other.unit

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.data, dtype=dtype)


def _handed_out(value):
    """A copy of a value an experiment keeps: tables (their object columns too, not the arrays in them), arrays,
    images and dicts."""
    if isinstance(value, Image):
        return Image(value.data.copy(), value.spacing, value.unit)
    return value.copy() if isinstance(value, (pd.DataFrame, np.ndarray)) else copy.deepcopy(value)


def _read_only_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The arrays inside a table's object columns made read-only: they are shared by every copy handed out."""
    for name in table.columns[table.dtypes == object]:
        for value in table[name].to_numpy():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
    return table


class read_once:
    """An attribute read from the store on first use and kept; every access returns a copy (_handed_out)."""

    def __init__(self, read):
        self.read = read
        self.__doc__ = read.__doc__

    def __set_name__(self, owner, name: str):
        self.kept = f"_kept_{name}"

    def __get__(self, experiment, owner=None):
        if experiment is None:
            return self
        if self.kept not in experiment.__dict__:
            value = self.read(experiment)
            experiment.__dict__[self.kept] = _read_only_cells(value) if isinstance(value, pd.DataFrame) else value
        return _handed_out(experiment.__dict__[self.kept])


def _stored_table(name: str, doc: str) -> read_once:
    """An attribute holding the task table `name` of the store."""

    def read(self) -> pd.DataFrame:
        return self._task_table(name)

    read.__doc__ = f"AllenSDK's {name}: {doc}."
    return read_once(read)


def image_set(session_type: str) -> str | None:
    """AllenSDK's image set of a session type (parse_stimulus_set): OPHYS_1_images_A -> images_A,
    TRAINING_1_gratings -> gratings; None when it names neither."""
    parts = session_type.split("_")
    if parts[2:3] == ["images"] and len(parts) > 3:
        return f"images_{parts[3]}"
    return "gratings" if parts[2:3] == ["gratings"] else None


def open_experiment(path: str | Path) -> Experiment:
    """The experiment in a store written by vb2p.extract (results/zarr/<ophys_experiment_id>.zarr)."""
    return Experiment(path)


class Experiment:
    """One experiment's store, read lazily with AllenSDK's BehaviorOphysExperiment attribute names."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise NwbError(f"{self.path} is not an experiment store (no zarr.json); stores are written by"
                           " `vb2p extract` as results/zarr/<ophys_experiment_id>.zarr")
        self._group = zarr.open_group(self.path, mode="r")
        self._traces: dict[str, tuple] = {}  # by data type: analyses read the same traces again and again

    def __repr__(self) -> str:
        return f"Experiment({str(self.path)!r})"

    def __getstate__(self) -> dict:
        """Only the path: what was read is read again after unpickling (it would come back writable and shared)."""
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    @cached_property
    def _attrs(self) -> dict:
        return dict(self._group.attrs)

    def _array(self, name: str) -> np.ndarray:
        if name not in self._group:
            raise NwbError(f"experiment {self.ophys_experiment_id}: its store {self.path} has no '{name}'; it was"
                           " written without it (an older extraction, or the NWB file has none): extract it again")
        return self._group[name][...]

    @property
    def ophys_experiment_id(self) -> int:
        return int(self._attrs["ophys_experiment_id"])

    @property
    def ophys_session_id(self) -> int:
        return int(self._attrs["ophys_session_id"])

    @property
    def behavior_session_id(self) -> int:
        return int(self._attrs["behavior_session_id"])

    @property
    def has_task(self) -> bool:
        """Whether the store holds the change-detection task (its NWB file had trials and stimulus presentations)."""
        return bool(self._attrs.get("has_task", False))

    # ---- cells and traces -----------------------------------------------------------------------------------------

    @cached_property
    def _cell_ids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self._array("cell_roi_id").astype(np.int64), self._array("cell_specimen_id").astype(np.int64),
                self._array("valid_roi").astype(bool))

    def _cells(self, data_type: str) -> np.ndarray:
        """Which ROIs AllenSDK shows for a data type: valid ROIs, and for events those with events."""
        if data_type not in TRACES:
            raise ValueError(f"data_type must be one of {', '.join(TRACES)}, not {data_type!r}")
        valid = self._cell_ids[2]
        if data_type == "dff":
            return valid
        return valid & ~np.isnan(self._array("events_lambda")) & ~np.isnan(self._array("events_noise_std"))

    def traces(self, data_type: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(timestamps, values (n_frames, n_cells) float64, cell_specimen_id, cell_roi_id) of a data type; read from
        the store once per experiment object (see _read_traces)."""
        if data_type not in self._traces:
            self._traces[data_type] = self._read_traces(data_type)
        return self._traces[data_type]

    def _read_traces(self, data_type: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(timestamps (n_frames,) float64, values (n_frames, n_cells) float64, cell_specimen_id (n_cells,) int64
        with -1 for unmatched cells, cell_roi_id (n_cells,) int64) for "dff", "events" or "filtered_events", of the
        ROIs AllenSDK shows (valid ROIs; for events, valid ROIs with events), in store order."""
        keep = self._cells(data_type)
        values = self._array("events" if data_type == "filtered_events" else data_type)
        if not keep.all():
            values = values[:, keep]
        if data_type == "filtered_events":  # computed when read, as AllenSDK does (vb2p.task.filtered_events)
            values = task.filtered_events(values.astype(np.float64), float(self._attrs["ophys_frame_rate"]))
        roi_ids, specimen_ids, _ = self._cell_ids
        traces = (self.ophys_timestamps, values.astype(np.float64, copy=False), specimen_ids[keep], roi_ids[keep])
        for array in traces:  # shared by every later call: read-only, so no caller changes another's data
            array.flags.writeable = False
        return traces

    def _specimen_index(self, keep: np.ndarray) -> pd.Index:
        """AllenSDK's index: cell_specimen_id, NaN for unmatched ROIs (float64 then, int64 when every ROI of the
        plane is matched)."""
        specimen_ids = self._cell_ids[1]
        unmatched = specimen_ids == layout.UNMATCHED_CELL_SPECIMEN_ID
        values = np.where(unmatched, np.nan, specimen_ids) if unmatched.any() else specimen_ids
        return pd.Index(values[keep], name="cell_specimen_id")

    @staticmethod
    def _per_cell(arrays: np.ndarray) -> np.ndarray:
        """An object column holding arrays[k] for cell k, as AllenSDK's tables hold traces and masks."""
        column = np.empty(len(arrays), dtype=object)
        for cell, array in enumerate(arrays):
            column[cell] = array
        return column

    @classmethod
    def _traces_per_cell(cls, values: np.ndarray) -> np.ndarray:
        """(n_frames, n_cells) -> one contiguous trace per cell."""
        return cls._per_cell(np.ascontiguousarray(values.T))

    @read_once
    def ophys_timestamps(self) -> np.ndarray:
        return self._array("time").astype(np.float64, copy=False)

    @read_once
    def dff_traces(self) -> pd.DataFrame:
        _, values, _, roi_ids = self.traces("dff")
        keep = self._cells("dff")
        return pd.DataFrame({"cell_roi_id": roi_ids, "dff": self._traces_per_cell(values)}, index=self._specimen_index(keep))

    @read_once
    def events(self) -> pd.DataFrame:
        _, events, _, roi_ids = self.traces("events")
        filtered = self.traces("filtered_events")[1]
        keep = self._cells("events")
        return pd.DataFrame(
            {
                "cell_roi_id": roi_ids,
                "events": self._traces_per_cell(events),
                "filtered_events": self._traces_per_cell(filtered),
                "lambda": self._array("events_lambda")[keep],
                "noise_std": self._array("events_noise_std")[keep],
            },
            index=self._specimen_index(keep),
        )

    @read_once
    def cell_specimen_table(self) -> pd.DataFrame:
        keep = self._cells("dff")
        columns = {
            "cell_roi_id": self._cell_ids[0][keep],
            **{name: self._array(f"roi_{name}")[keep] for name in ("height", "width", "x", "y")},
            **{name: self._array(name)[keep] for name in layout.NWB_CELL_TABLE_EXTRAS},
            "valid_roi": self._cell_ids[2][keep],
            "roi_mask": self._per_cell(self._array("roi_mask")[keep]),
        }
        return pd.DataFrame({name: columns[name] for name in CELL_TABLE_COLUMNS}, index=self._specimen_index(keep))

    @property
    def roi_masks(self) -> pd.DataFrame:
        """cell_roi_id and roi_mask of the cell table, as AllenSDK's roi_masks."""
        return self.cell_specimen_table[["cell_roi_id", "roi_mask"]]

    def get_cell_specimen_ids(self) -> np.ndarray:
        """The cell table's index (AllenSDK's legacy method; it raises when no cell is matched across sessions)."""
        ids = self._specimen_index(self._cells("dff")).to_numpy()
        if np.isnan(ids.astype(float)).sum() == len(ids):  # as AllenSDK: none matched, or no cell at all
            raise ValueError(f"cell_specimen_id values not assigned for {self.ophys_experiment_id}")
        return ids

    def get_cell_specimen_indices(self, cell_specimen_ids) -> list[int]:
        """Rows of the cell table (and of dff_traces) of the given cell_specimen_ids."""
        index = self._specimen_index(self._cells("dff"))
        return [index.get_loc(cell_specimen_id) for cell_specimen_id in cell_specimen_ids]

    # ---- images and metadata --------------------------------------------------------------------------------------

    def _image(self, name: str) -> Image:
        attrs = self._group[name].attrs
        if "spacing" not in attrs:
            raise NwbError(f"experiment {self.ophys_experiment_id}: '{name}' in {self.path} has no spacing; the store"
                           " was written by an earlier version: extract it again")
        return Image(self._array(name), tuple(attrs["spacing"]), attrs["unit"])

    @read_once
    def max_projection(self) -> Image:
        return self._image("max_projection")

    @read_once
    def average_projection(self) -> Image:
        return self._image("average_image")

    @read_once
    def metadata(self) -> dict:
        """AllenSDK's metadata dict: its keys in its order, its value types (datetime, UUID, sorted driver lines;
        imaging_plane_group None and imaging_plane_group_count 0 on single-plane rigs)."""
        attrs = self._attrs
        values = {key: attrs.get(key) for key in BEHAVIOR_METADATA + OPHYS_METADATA}
        multiplane = int(attrs.get("imaging_plane_group_count", 0)) > 1
        values.update(
            date_of_acquisition=dt.datetime.fromisoformat(attrs["date_of_acquisition"]),
            behavior_session_uuid=uuid.UUID(attrs["behavior_session_uuid"]) if attrs.get("behavior_session_uuid")
            else None,
            driver_line=sorted(attrs["driver_line"]) if attrs.get("driver_line") is not None else None,
            reporter_line=None if attrs.get("reporter_line") == "None" else attrs.get("reporter_line"),
            imaging_plane_group=int(attrs["imaging_plane_group"]) if multiplane else None,
            imaging_plane_group_count=int(attrs["imaging_plane_group_count"]) if multiplane else 0,
        )
        return values

    # ---- the task ---------------------------------------------------------------------------------------------------

    def _task_table(self, name: str) -> pd.DataFrame:
        self._require_task()
        return task.read_stored_table(self.path, name)

    def _require_task(self) -> None:
        if not self.has_task:
            raise NwbError(f"experiment {self.ophys_experiment_id} has no task in its store {self.path}"
                           " (has_task is false): its NWB file holds no trials or stimulus presentations, or the"
                           " store was written before tasks were extracted")

    @read_once
    def stimulus_presentations(self) -> pd.DataFrame:
        return self._task_table("stimulus_presentations").rename(columns={"stop_time": "end_time"})

    trials = _stored_table("trials", "trials_id: one row per trial; lick_times one array per trial")
    running_speed = _stored_table("running_speed", "timestamps, speed (cm/s, 10 Hz low-pass), one per display frame")
    raw_running_speed = _stored_table("raw_running_speed", "timestamps, speed (cm/s) before the low-pass filter")
    licks = _stored_table("licks", "timestamps and display frame of each lick")
    rewards = _stored_table("rewards", "volume (mL), timestamps, auto_rewarded of each reward")

    @read_once
    def stimulus_timestamps(self) -> np.ndarray:
        return self._task_table("stimulus_timestamps")["timestamps"].to_numpy()

    @read_once
    def eye_tracking(self) -> pd.DataFrame:
        """AllenSDK's eye_tracking; an empty table with its columns when the file has none (as AllenSDK)."""
        if "eye_tracking" in self._attrs.get("task_tables", ()):
            return self._task_table("eye_tracking")
        return task.empty_eye_tracking()

    @property
    def task_parameters(self) -> dict:
        """AllenSDK's task_parameters: /general/task_parameters (stimulus, response window, reward volumes...) and
        image_set, read from the session type as AllenSDK reads it ('images_A', 'gratings'), keys in order."""
        self._require_task()
        parameters = copy.deepcopy(self._attrs["task_parameters"])
        parameters["image_set"] = image_set(parameters["session_type"])
        if parameters["image_set"] is None:
            raise NwbError(f"experiment {self.ophys_experiment_id}: session_type {parameters['session_type']!r} names"
                           " no image set or gratings (AllenSDK cannot read it either)")
        return dict(sorted(parameters.items()))

    @property
    def _response_window_start(self) -> float:
        return float(self._attrs["task_parameters"]["response_window_sec"][0])

    def get_reward_rate(self) -> np.ndarray:
        """Rewards per minute over trials i-25 to i+24 of each trial i (AllenSDK's get_reward_rate; NaN for the first
        10 trials)."""
        return performance.reward_rate(self.trials, self._response_window_start)

    def get_rolling_performance_df(self) -> pd.DataFrame:
        """Per trial: reward rate, rolling hit and false-alarm rates (raw and trial-count corrected) and d'."""
        return performance.rolling_performance(self.trials, self._response_window_start)

    def get_performance_metrics(self, engaged_trial_reward_rate_threshold: float = 2.0) -> dict:
        """The session's behavior performance: AllenSDK's keys and values (vb2p.performance)."""
        return performance.performance_metrics(self.trials, self.rewards, self._response_window_start,
                                               engaged_trial_reward_rate_threshold)
