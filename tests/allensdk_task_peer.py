"""AllenSDK 2.16.2 as a peer reader of the task (runs in .venv-allensdk; prints JSON on its last line).

    python allensdk_task_peer.py read NWB NPZ            everything BehaviorOphysExperiment.from_nwb_path returns
                                                         that vb2p.experiment mirrors: small tables and metadata as
                                                         JSON, large arrays (traces, running, timestamps) into NPZ
    python allensdk_task_peer.py eye-tracking NWB        EyeTrackingTable.from_nwb on a file with eye tracking
    python allensdk_task_peer.py write-eye-tracking OUT  an NWB file holding only eye tracking, written by AllenSDK's
                                                         writer from seeded synthetic fits with gaps and outliers
                                                         (made tests/data/allensdk_nwb/task/eye_tracking.nwb)
    python allensdk_task_peer.py time NWB                seconds for from_nwb_path + stimulus_presentations + trials
                                                         + running_speed (imports excluded)

`table_json` is also imported by tests/test_task.py (our venv): AllenSDK's and our tables go through the same
conversion, the one of ref_task_scientifica.expected.json ("conventions"). AllenSDK is imported only when run.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np
import pandas as pd


def value_json(value):
    """NaN / pd.NA / None -> None; +-inf -> 'inf' / '-inf'; numpy scalars -> Python; arrays -> lists."""
    if isinstance(value, (np.ndarray, list, tuple)):
        return [value_json(v) for v in value]
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None
        if np.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def table_json(table: pd.DataFrame) -> dict:
    """A table's index, columns, dtypes and values (in the expected JSON's conventions)."""
    return {
        "index_name": table.index.name,
        "index_dtype": str(table.index.dtype),
        "index": value_json(table.index.to_numpy()),
        "columns": [str(c) for c in table.columns],
        "dtypes": [str(d) for d in table.dtypes],
        "values": {str(c): value_json(list(table.iloc[:, k])) for k, c in enumerate(table.columns)},
    }


def typed_json(mapping: dict) -> dict:
    """Each value with the name of its Python type, so that types can be compared across venvs."""
    return {key: {"type": type(v).__name__, "value": str(v) if type(v).__name__ in ("UUID", "datetime")
                  else value_json(v)} for key, v in mapping.items()}


def read(nwb: str, npz: str) -> dict:
    from allensdk.brain_observatory.behavior.behavior_ophys_experiment import BehaviorOphysExperiment

    experiment = BehaviorOphysExperiment.from_nwb_path(nwb)
    arrays = {
        "ophys_timestamps": experiment.ophys_timestamps,
        "stimulus_timestamps": experiment.stimulus_timestamps,
        "dff": np.stack(experiment.dff_traces["dff"].to_list()),
        "events": np.stack(experiment.events["events"].to_list()),
        "filtered_events": np.stack(experiment.events["filtered_events"].to_list()),
        "roi_mask": np.stack(experiment.cell_specimen_table["roi_mask"].to_list()),
        "max_projection": experiment.max_projection.data,
        "average_projection": experiment.average_projection.data,
    }
    result = {}
    for name in ("running_speed", "raw_running_speed"):
        table = getattr(experiment, name)
        result[name] = {**table_json(table.head(0)), "length": len(table), "index_type": type(table.index).__name__}
        for column in table.columns:
            arrays[f"{name}.{column}"] = table[column].to_numpy()
    for name in ("stimulus_presentations", "trials", "licks", "rewards", "eye_tracking"):
        result[name] = table_json(getattr(experiment, name))
    result["dff_traces"] = table_json(experiment.dff_traces.drop(columns="dff"))
    result["events"] = table_json(experiment.events.drop(columns=["events", "filtered_events"]))
    result["cell_specimen_table"] = table_json(experiment.cell_specimen_table.drop(columns="roi_mask"))
    try:
        result["rolling_performance"] = table_json(experiment.get_rolling_performance_df())
        result["performance_metrics"] = typed_json(experiment.get_performance_metrics())
        arrays["reward_rate"] = experiment.get_reward_rate()
    except Exception as error:  # AllenSDK fails on some files (lick_times not ragged): say so, keep the rest
        result["performance_error"] = f"{type(error).__name__}: {error}"
    result["metadata"] = typed_json(experiment.metadata)
    images = {name: getattr(experiment, name) for name in ("max_projection", "average_projection")}
    result["images"] = {name: {"spacing": list(image.spacing), "unit": image.unit} for name, image in images.items()}
    result["ids"] = typed_json({name: getattr(experiment, name) for name in
                                ("ophys_experiment_id", "ophys_session_id", "behavior_session_id")})
    result["task_parameters"] = typed_json(experiment.task_parameters)
    result["cell_specimen_ids"] = value_json(experiment.get_cell_specimen_ids())
    matched = [value_json(i) for i in experiment.get_cell_specimen_ids()[::-1] if not np.isnan(i)]
    rows = experiment.get_cell_specimen_indices(matched)
    result["cell_specimen_indices"] = {"ids": matched, "rows": value_json(rows)}
    result["roi_masks"] = table_json(experiment.roi_masks.drop(columns="roi_mask"))
    result["array_types"] = {name: str(getattr(experiment, name).dtype) for name in
                             ("ophys_timestamps", "stimulus_timestamps")}
    np.savez(npz, **arrays)
    return result


def eye_tracking(nwb: str) -> dict:
    import pynwb
    from allensdk.brain_observatory.behavior.data_objects.eye_tracking.eye_tracking_table import EyeTrackingTable

    with pynwb.NWBHDF5IO(nwb, "r", load_namespaces=True) as io:
        return table_json(EyeTrackingTable.from_nwb(io.read()).value)


def write_eye_tracking(out: str) -> dict:
    """Seeded fits of 600 frames at 60 Hz: NaN fits (failed frames) and area outliers, so that likely_blink, its
    dilation and the NaN filtering all have something to do."""
    import datetime as dt

    import pynwb
    from allensdk.brain_observatory.behavior.data_objects.eye_tracking.eye_tracking_table import EyeTrackingTable

    rng = np.random.default_rng(20261126)
    n = 600
    columns = {"timestamps": 5.0 + np.arange(n) / 60.0}
    for prefix, area in (("cr", 40.0), ("eye", 9000.0), ("pupil", 1200.0)):
        columns[f"{prefix}_area"] = area * (1 + 0.05 * rng.standard_normal(n))
        columns[f"{prefix}_center_x"] = 300 + rng.standard_normal(n)
        columns[f"{prefix}_center_y"] = 240 + rng.standard_normal(n)
        columns[f"{prefix}_width"] = np.sqrt(area / np.pi) * (1 + 0.02 * rng.standard_normal(n))
        columns[f"{prefix}_height"] = np.sqrt(area / np.pi) * (1 + 0.02 * rng.standard_normal(n))
        columns[f"{prefix}_phi"] = rng.uniform(-0.5, 0.5, n)
    columns["pupil_area"][[100, 101, 350]] = np.nan  # failed fits
    columns["eye_area"][[200, 470]] = 9000.0 * 3  # outliers
    columns["pupil_area"][[20]] = 1200.0 * 0.05
    for prefix in ("cr", "eye", "pupil"):
        columns[f"{prefix}_area_raw"] = columns[f"{prefix}_area"].copy()
    columns["likely_blink"] = np.zeros(n, dtype=bool)  # written by AllenSDK, recomputed by its reader
    nwbfile = pynwb.NWBFile(session_description="eye tracking written by AllenSDK 2.16.2 for vb2p tests",
                            identifier="775614751",
                            session_start_time=dt.datetime(2022, 8, 24, 12, 35, tzinfo=dt.timezone.utc))
    EyeTrackingTable(eye_tracking=pd.DataFrame(columns)).to_nwb(nwbfile)
    with pynwb.NWBHDF5IO(out, "w") as io:
        io.write(nwbfile)
    return {"written": out, "frames": n}


def time_load(nwb: str) -> dict:
    from allensdk.brain_observatory.behavior.behavior_ophys_experiment import BehaviorOphysExperiment

    start = time.perf_counter()
    experiment = BehaviorOphysExperiment.from_nwb_path(nwb)
    _ = experiment.stimulus_presentations, experiment.trials, experiment.running_speed
    return {"seconds": time.perf_counter() - start}


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    command, path = sys.argv[1], sys.argv[2]
    if command == "read":
        output = read(path, sys.argv[3])
    elif command == "eye-tracking":
        output = eye_tracking(path)
    elif command == "write-eye-tracking":
        output = write_eye_tracking(path)
    else:
        output = time_load(path)
    print(json.dumps(output))
