"""Runs inside the AllenSDK 2.16.2 venv (.venv-allensdk), never in ours: brain_observatory_utilities 0.5.1 as a peer
of vb2p.responses, both run on the same AllenSDK experiment object.

    python bou_peer.py compare NWB     per case, the largest differences between bou and ours (JSON)
    python bou_peer.py time NWB        for each event type read from stdin, the seconds of one call of bou's
                                       get_stimulus_response_xr on all cells, experiment already loaded (a line
                                       each: a benchmark alternates these with its own measurements)

The views are those of the expected file (ref_task_scientifica.expected.json, "views"): bou cannot run on the
experiment as AllenSDK loads it (unmatched cells share the cell_specimen_id NaN).
"""

import json
import sys
import time
import warnings
from pathlib import Path

warnings.simplefilter("ignore")

import numpy as np  # noqa: E402
from allensdk.brain_observatory.behavior.behavior_ophys_experiment import BehaviorOphysExperiment  # noqa: E402
from brain_observatory_utilities.datasets.optical_physiology import data_formatting  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from vb2p import responses  # noqa: E402

REFERENCE_CALL = dict(time_window=[-1, 1.5], response_window_duration=0.5, interpolate=True, output_sampling_rate=30)
COMPARED = ("eventlocked_traces", "mean_response", "mean_baseline")


class View:
    """The experiment with its cell tables replaced; everything else is the experiment's own."""

    def __init__(self, experiment, cell_specimen_table, dff_traces, events):
        self._experiment = experiment
        self.cell_specimen_table, self.dff_traces, self.events = cell_specimen_table, dff_traces, events

    def __getattr__(self, name):
        return getattr(self._experiment, name)


def matched_cells_view(experiment):
    """Without the unmatched cells (cell_specimen_id NaN); keys are cell_specimen_id."""
    tables = (experiment.cell_specimen_table, experiment.dff_traces, experiment.events)
    return View(experiment, *(table[table.index.notna()] for table in tables))


def roi_keyed_view(experiment):
    """Every ROI, keyed by cell_roi_id (under the name cell_specimen_id)."""
    tables = []
    for table in (experiment.cell_specimen_table, experiment.dff_traces, experiment.events):
        keyed = table.set_index(table["cell_roi_id"].to_numpy())
        keyed.index.name = "cell_specimen_id"
        tables.append(keyed)
    return View(experiment, *tables)


def bou(view, data_type, event_type, **call):
    np.random.seed(0)
    return data_formatting.get_stimulus_response_xr(view, data_type=data_type, event_type=event_type, **call)


def differences(ours, theirs, ours_order=None):
    """Largest absolute differences; ours_order reorders our cells onto theirs."""
    if ours_order is not None:
        ours = ours.isel({ours[COMPARED[0]].dims[0]: ours_order})
    dims = {name: list(theirs[name].dims) for name in COMPARED}
    return {
        "shapes_equal": all(ours[name].shape == theirs[name].shape for name in COMPARED),
        "dims_equal": all(list(ours[name].dims) == dims[name] for name in COMPARED),
        "coords_equal": all(
            np.array_equal(ours[name].values, theirs[name].values)
            for name in theirs.coords
            if name != "eventlocked_timestamps"
        ),
        "coord_dtypes": {name: [str(ours[name].dtype), str(theirs[name].dtype)] for name in theirs.coords},
        "max_abs_timestamps": float(np.max(np.abs(ours.eventlocked_timestamps.values - theirs.eventlocked_timestamps.values))),
        "max_abs": {
            name: float(np.nanmax(np.abs(ours[name].values - theirs[name].values))) if theirs[name].size else 0.0
            for name in COMPARED
        },
        "nan_equal": all(
            np.array_equal(np.isnan(ours[name].values), np.isnan(theirs[name].values)) for name in COMPARED
        ),
        "traces_bit_equal": bool(np.array_equal(ours.eventlocked_traces.values, theirs.eventlocked_traces.values)),
        "n_cells": int(theirs[COMPARED[0]].shape[0]),
        "n_presentations": int(theirs[COMPARED[0]].shape[1]),
    }


def compare(path):
    experiment = BehaviorOphysExperiment.from_nwb_path(path)
    matched, keyed = matched_cells_view(experiment), roi_keyed_view(experiment)
    native_rate = float(1 / np.diff(experiment.ophys_timestamps).mean())
    nearest = dict(REFERENCE_CALL, interpolate=False, output_sampling_rate=None)
    cases = {
        "matched_dff_changes": (matched, "dff", "changes", REFERENCE_CALL, REFERENCE_CALL),
        "matched_dff_omissions": (matched, "dff", "omissions", REFERENCE_CALL, REFERENCE_CALL),
        "roi_keyed_dff_changes": (keyed, "dff", "changes", REFERENCE_CALL, REFERENCE_CALL),
        "roi_keyed_dff_omissions": (keyed, "dff", "omissions", REFERENCE_CALL, REFERENCE_CALL),
        "roi_keyed_events_omissions": (keyed, "events", "omissions", REFERENCE_CALL, REFERENCE_CALL),
        "roi_keyed_filtered_events_omissions": (keyed, "filtered_events", "omissions", REFERENCE_CALL, REFERENCE_CALL),
        "roi_keyed_dff_omissions_nearest": (keyed, "dff", "omissions", nearest, nearest),
        "running_speed_changes": (keyed, "running_speed", "changes", REFERENCE_CALL, REFERENCE_CALL),
        # bou's None is the frame rate times the number of cells; ours is the frame rate, which bou gets told.
        "roi_keyed_dff_omissions_native_rate": (
            keyed, "dff", "omissions", dict(REFERENCE_CALL, output_sampling_rate=None),
            dict(REFERENCE_CALL, output_sampling_rate=native_rate),
        ),
    }
    result, theirs = {}, {}
    for name, (view, data_type, event_type, our_call, their_call) in cases.items():
        ours = responses.get_stimulus_response_xr(view, data_type, event_type, **our_call)
        theirs[name] = bou(view, data_type, event_type, **their_call)
        result[name] = differences(ours, theirs[name])
    # Ours on the experiment as loaded (unmatched cells included) against bou on every ROI, cell by cell_roi_id.
    for event_type in ("changes", "omissions"):
        ours = responses.get_stimulus_response_xr(experiment, "dff", event_type, **REFERENCE_CALL)
        keyed_result = theirs[f"roi_keyed_dff_{event_type}"]
        roi_ids = ours.cell_roi_id.values
        order = np.argsort(roi_ids)[np.searchsorted(np.sort(roi_ids), keyed_result.cell_specimen_id.values)]
        compared = differences(ours, keyed_result, order)
        compared["unmatched_kept"] = int(np.isnan(ours.cell_specimen_id.values).sum())
        compared["cell_roi_ids_equal"] = bool(np.array_equal(roi_ids[order], keyed_result.cell_specimen_id.values))
        result[f"as_loaded_dff_{event_type}"] = compared
    return result


def time_bou(path):
    experiment = BehaviorOphysExperiment.from_nwb_path(path)
    view = roi_keyed_view(experiment)
    experiment.stimulus_presentations, experiment.dff_traces, experiment.events  # loaded before timing
    print("ready", flush=True)
    for line in sys.stdin:
        start = time.perf_counter()
        bou(view, "dff", line.strip(), **REFERENCE_CALL)
        print(time.perf_counter() - start, flush=True)


if __name__ == "__main__":
    command, nwb = sys.argv[1], sys.argv[2]
    if command == "compare":
        print(json.dumps(compare(nwb)))
    else:
        time_bou(nwb)
