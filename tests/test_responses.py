"""Stimulus-locked responses: equal to brain_observatory_utilities 0.5.1 (live in AllenSDK's venv, and the values its
expected file records), exact on traces whose answer is known by hand, the p-value's shuffles, the per-experiment
store, the release-wide table and the fraction of responsive cells."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr
from conftest import DATA, REPO

from vb2p import layout
from vb2p.errors import ConfigError, NwbError, TableError
from vb2p.responses import (
    METADATA_COLUMNS,
    ResponseParams,
    build_response_table,
    get_stimulus_response_xr,
    p_value_gray_screen,
    responsive_cells,
    time_grid,
    write_experiment_responses,
)

TASK = DATA / "allensdk_nwb" / "task"
REFERENCE = TASK / "ref_task_scientifica.nwb"
EXPECTED = json.loads((TASK / "ref_task_scientifica.expected.json").read_text())
DESIGN = json.loads((TASK / "ref_task_scientifica.design.json").read_text())
BOU = EXPECTED["brain_observatory_utilities"]
REFERENCE_CALL = dict(time_window=[-1, 1.5], response_window_duration=0.5, interpolate=True, output_sampling_rate=30)
ALLENSDK_VENV = REPO / ".venv-allensdk"
PEER = REPO / "tests" / "bou_peer.py"


class ArrayExperiment:
    """The interface of vb2p.experiment objects over in-memory arrays: the fast path traces(data_type) plus
    AllenSDK's stimulus_presentations and running_speed."""

    def __init__(self, timestamps, values, cell_specimen_id, cell_roi_id, stimulus_presentations, running_speed=None,
                 ophys_experiment_id=1, has_task=True):
        self.timestamps, self.values = timestamps, values
        self.cell_specimen_id, self.cell_roi_id = cell_specimen_id, cell_roi_id
        self.stimulus_presentations, self.running_speed = stimulus_presentations, running_speed
        self.ophys_experiment_id, self.has_task = ophys_experiment_id, has_task

    def traces(self, data_type):
        return self.timestamps, self.values[data_type], self.cell_specimen_id, self.cell_roi_id


def reference_experiment() -> ArrayExperiment:
    """The reference file's dF/F, events and running speed (h5py, the NWB paths of the layout document) with the
    stimulus_presentations AllenSDK read from it (the expected file's own values)."""
    table = EXPECTED["experiment"]["stimulus_presentations"]
    presentations = pd.DataFrame(table["values"], index=pd.Index(table["index"], name="stimulus_presentations_id"))
    for column, dtype in zip(table["columns"], table["dtypes"]):
        presentations[column] = presentations[column].astype(dtype)
    with h5py.File(REFERENCE, "r") as f:
        cells = f[layout.NWB_CELL_TABLE]
        rois = f[layout.NWB_DFF_ROIS][:]
        assert np.array_equal(f["/processing/ophys/event_detection/rois"][:], rois)
        running = pd.DataFrame(
            {"timestamps": f["/processing/running/speed/timestamps"][:], "speed": f["/processing/running/speed/data"][:]}
        )
        return ArrayExperiment(
            f[layout.NWB_TIMESTAMPS][:],
            {"dff": f[layout.NWB_DFF][:], "events": f["/processing/ophys/event_detection/data"][:]},
            cells["cell_specimen_id"][:][rois].astype(np.int64),
            cells["id"][:][rois].astype(np.int64),
            presentations,
            running,
            ophys_experiment_id=EXPECTED["experiment"]["metadata"]["ophys_experiment_id"],
        )


@pytest.fixture(scope="module")
def reference():
    return reference_experiment()


def reference_metadata() -> dict:
    metadata = {key: EXPECTED["experiment"]["metadata"].get(key) for key in METADATA_COLUMNS}
    return {**metadata, "session_number": 1, "experience_level": "Familiar", "prior_exposures_to_image_set": 5,
            "passive": False}  # what the selection adds to the file's metadata


# --- equal to bou ---------------------------------------------------------------------------------------------


def test_equal_to_bou_run_live_in_allensdk_venv():
    """bou and ours on the same AllenSDK objects (tests/bou_peer.py in .venv-allensdk), both views of the expected
    file, every data type, nearest samples, bou told our default rate; and ours on the experiment as loaded."""
    if not (ALLENSDK_VENV / ".installed").exists():
        failure = REPO / ".venv-allensdk-failed.log"
        reason = failure.read_text()[-500:] if failure.exists() else "run `make test` to create .venv-allensdk"
        pytest.skip(f"AllenSDK 2.16.2 venv is not installed: {reason}")
    result = subprocess.run(
        [str(ALLENSDK_VENV / "bin" / "python"), str(PEER), "compare", str(REFERENCE)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cases = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(cases) == 11
    for name, case in cases.items():
        assert case["shapes_equal"] and case["dims_equal"] and case["nan_equal"], name
        assert max(case["max_abs"].values()) <= 1e-9 and case["max_abs_timestamps"] <= 1e-12, (name, case)
        assert case["n_presentations"] > 0 and case["n_cells"] > 0, name
        if name.startswith("as_loaded"):  # bou keyed by cell_roi_id; ours keeps the 2 unmatched cells as NaN
            assert case["cell_roi_ids_equal"] and case["unmatched_kept"] == 2, name
        else:  # same coordinates, same dtypes (float64 cell_specimen_id in the matched view, as bou)
            assert case["coords_equal"], name
            assert all(ours == theirs for ours, theirs in case["coord_dtypes"].values()), (name, case["coord_dtypes"])
    assert cases["matched_dff_changes"]["coord_dtypes"]["cell_specimen_id"] == ["float64", "float64"]
    assert cases["running_speed_changes"]["n_cells"] == 1  # bou's length-1 trace_id


@pytest.mark.parametrize("event_type", ["changes", "omissions"])
@pytest.mark.parametrize("view", ["matched_cells", "all_cells_roi_keyed"])
def test_equal_to_the_values_bou_recorded(reference, view, event_type):
    """The expected file's exact call, in our venv on our experiment interface: ids, time base, means (6 decimals
    recorded) and the event-locked traces to the last bit (sha256 of bou's float64 array)."""
    recorded = BOU["calls"][view][event_type]
    ours = get_stimulus_response_xr(reference, "dff", event_type, **REFERENCE_CALL)
    key = "cell_specimen_id" if view == "matched_cells" else "cell_roi_id"
    ids = ours[key].values
    cells = [int(np.flatnonzero(ids == cell)[0]) for cell in recorded["cell_ids"]]
    ours = ours.isel(cell_specimen_id=cells)
    assert ours.stimulus_presentations_id.values.tolist() == recorded["stimulus_presentations_id"]
    np.testing.assert_allclose(ours.eventlocked_timestamps, recorded["eventlocked_timestamps"]["values"], atol=5e-10)
    for name in ("mean_response", "mean_baseline"):
        expected = np.array([recorded[name][str(cell)] for cell in recorded["cell_ids"]])
        np.testing.assert_allclose(ours[name].values, expected, rtol=0, atol=5.01e-7)
    expected_mean_trace = np.array([recorded["mean_trace_over_presentations"][str(c)] for c in recorded["cell_ids"]])
    mean_trace = ours.eventlocked_traces.mean("stimulus_presentations_id").values
    np.testing.assert_allclose(mean_trace, expected_mean_trace, rtol=0, atol=5.01e-7)
    traces = np.ascontiguousarray(ours.eventlocked_traces.values, dtype=np.float64)
    assert list(traces.shape) == recorded["data_vars"]["eventlocked_traces"]["shape"]
    assert hashlib.sha256(traces.tobytes()).hexdigest() == recorded["trace_sha256_float64_C"]


def test_output_has_bous_structure_plus_presentation_and_roi_coordinates(reference):
    ours = get_stimulus_response_xr(reference, "dff", "omissions", **REFERENCE_CALL)
    assert set(ours.data_vars) == {"eventlocked_traces", "mean_response", "mean_baseline", "p_value_gray_screen"}
    assert ours.eventlocked_traces.dims == ("cell_specimen_id", "stimulus_presentations_id", "eventlocked_timestamps")
    assert ours.mean_response.dims == ours.p_value_gray_screen.dims == ("cell_specimen_id", "stimulus_presentations_id")
    assert ours.stimulus_presentations_id.values.tolist() == DESIGN["omitted_flash_indices"]
    assert (ours.image_name.values == "omitted").all() and ours.omitted.values.all() and not ours.is_change.values.any()
    presentations = reference.stimulus_presentations.loc[ours.stimulus_presentations_id.values]
    np.testing.assert_array_equal(ours.start_time.values, presentations.start_time.values)
    np.testing.assert_array_equal(ours.trials_id.values, presentations.trials_id.values)
    assert ours.trials_id.dtype == np.int64 and ours.cell_roi_id.dtype == np.int64
    # Unmatched cells (-1) are kept, each its own cell, ordered as bou orders cells: by cell_specimen_id, then ROI.
    assert ours.sizes["cell_specimen_id"] == 12 and (ours.cell_specimen_id.values == -1).sum() == 2
    assert ours.cell_specimen_id.values.tolist() == sorted(ours.cell_specimen_id.values.tolist())
    assert sorted(ours.cell_roi_id.values.tolist()) == sorted(reference.cell_roi_id.tolist())
    p = ours.p_value_gray_screen.values
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert ours.attrs["p_value_window_samples"] == 15  # round(0.5 s x 30.99997 Hz); bou's windows are 450 samples


def test_every_event_type_selects_bous_presentations_in_the_change_detection_block(reference):
    counts = EXPECTED["experiment"]["stimulus_presentations"]["counts"]
    sizes = {
        event_type: get_stimulus_response_xr(reference, "dff", event_type, **REFERENCE_CALL).sizes["stimulus_presentations_id"]
        for event_type in ("all", "images", "omissions", "changes")
    }
    assert sizes == {
        "all": counts["per_block"]["0"],  # the gray-screen block (1) is left out, as bou does
        "images": counts["per_block"]["0"] - counts["omitted"],
        "omissions": counts["omitted"],
        "changes": counts["is_change"],
    }
    assert BOU["limit_stimulus_presentations_to_change_detection"]["n_rows"] == sizes["all"]


def test_responses_find_the_cells_the_reference_was_designed_with(reference):
    """Ground truth of the synthetic cells: change cells respond most to changes, omission cells to omissions."""
    groups = {int(roi): group for roi, group in DESIGN["cell_groups"].items()}
    for event_type, group in (("changes", "change"), ("omissions", "omission")):
        ours = get_stimulus_response_xr(reference, "dff", event_type, **REFERENCE_CALL)
        evoked = (ours.mean_response - ours.mean_baseline).mean("stimulus_presentations_id").values
        designed = np.array([groups[roi] == group for roi in ours.cell_roi_id.values])
        assert evoked[designed].min() > evoked[~designed].max(), event_type
        significant = (ours.p_value_gray_screen < 0.05).mean("stimulus_presentations_id").values
        assert significant[designed].min() >= 0.9, event_type


# --- known answers --------------------------------------------------------------------------------------------

RATE = 32.0  # 1/32 s is exact in binary: sample times and rates come out exact
LINEAR_PARAMS = ResponseParams(data_types=("dff", "running_speed"))
SLOPES = np.array([0.5, -2.0, 3.0])
OFFSETS = np.array([1.0, 0.0, -4.0])


def presentations_table(start_times, omitted=(), changes=(), gray_screen_after=True) -> pd.DataFrame:
    n = len(start_times)
    table = pd.DataFrame(
        {
            "start_time": np.asarray(start_times, dtype=np.float64),
            "image_name": ["omitted" if i in omitted else f"im{i % 2}" for i in range(n)],
            "is_change": [i in changes for i in range(n)],
            "omitted": pd.array([i in omitted for i in range(n)], dtype="boolean"),
            "trials_id": np.arange(n, dtype=np.int64) // 4,
            "stimulus_block": 0,
            "stimulus_block_name": "change_detection_behavior",
        },
        index=pd.Index(np.arange(n, dtype=np.int64), name="stimulus_presentations_id"),
    )
    if gray_screen_after:  # a later block that must be left out
        gray = pd.DataFrame(
            {"start_time": [start_times[-1] + 5.0], "image_name": [np.nan], "is_change": [False],
             "omitted": pd.array([pd.NA], dtype="boolean"), "trials_id": [-99], "stimulus_block": [1],
             "stimulus_block_name": ["post_behavior_gray_screen_5min"]},
            index=pd.Index([n], name="stimulus_presentations_id"),
        )
        table = pd.concat([table, gray])
    return table


def linear_experiment(jitter=0.0, **presentation_kwargs) -> ArrayExperiment:
    """Three cells whose dF/F is slope * t + offset, at 32 Hz from t = 1 s for 60 s (one unmatched: -1); running
    speed 2 * t."""
    rng = np.random.default_rng(1)
    timestamps = 1.0 + np.arange(int(60 * RATE)) / RATE + rng.uniform(0, jitter, int(60 * RATE))
    values = timestamps[:, None] * SLOPES + OFFSETS
    starts = [20.0, 20.75, 21.5, 22.25, 30.013, 41.7]
    return ArrayExperiment(
        timestamps, {"dff": values}, np.array([7, -1, 5]), np.array([101, 102, 103]),
        presentations_table(starts, **presentation_kwargs),
        pd.DataFrame({"timestamps": timestamps, "speed": 2.0 * timestamps}),
    )


def test_time_grid_is_bous():
    np.testing.assert_array_equal(time_grid(-1, 1.5, 30), np.linspace(-1, 1.5, 76))
    # 1.25 s at 10 Hz is no whole number of steps... 12.5: the grid ends at the last whole step, endpoint included
    np.testing.assert_allclose(time_grid(-0.5, 0.75, 10), np.arange(13) * 0.1 - 0.5, atol=1e-15)
    np.testing.assert_allclose(time_grid(0, 1, 4, include_endpoint=False), [0, 0.25, 0.5, 0.75])


def test_linear_traces_interpolate_exactly_with_bous_edge_rule():
    experiment = linear_experiment(jitter=0.004)
    ours = get_stimulus_response_xr(experiment, "dff", "all", time_window=[-0.5, 1.0], response_window_duration=0.25,
                                    output_sampling_rate=16)
    grid = np.linspace(-0.5, 1.0, 25)
    np.testing.assert_array_equal(ours.eventlocked_timestamps.values, grid)
    starts = ours.start_time.values
    assert starts.size == 6 and ours.stimulus_presentations_id.values.tolist() == list(range(6))
    # cells in bou's order: cell_specimen_id -1, 5, 7
    assert ours.cell_specimen_id.values.tolist() == [-1, 5, 7] and ours.cell_roi_id.values.tolist() == [102, 103, 101]
    slopes, offsets = SLOPES[[1, 2, 0]], OFFSETS[[1, 2, 0]]
    times = starts[:, None] + grid  # (events, grid)
    # bou interpolates among the samples inside [start - 0.5, start + 1.0] only: grid points before the first such
    # sample take its value, after the last its value (np.interp's clamp), not the line's.
    ts = experiment.timestamps
    first = ts[np.searchsorted(ts, starts - 0.5, "left")]
    last = ts[np.searchsorted(ts, starts + 1.0, "right") - 1]
    clamped = np.clip(times, first[:, None], last[:, None])
    expected = clamped[None] * slopes[:, None, None] + offsets[:, None, None]
    np.testing.assert_allclose(ours.eventlocked_traces.values, expected, rtol=0, atol=1e-12)
    assert (times[:, 0] < first).all()  # the clamp is exercised: the first grid point precedes the first sample
    response = (grid >= 0) & (grid <= 0.25)
    baseline = (grid >= -0.25) & (grid <= 0)  # both include 0, as bou's label slices
    np.testing.assert_allclose(ours.mean_response.values, expected[..., response].mean(-1), atol=1e-12)
    np.testing.assert_allclose(ours.mean_baseline.values, expected[..., baseline].mean(-1), atol=1e-12)
    # a line's mean over a symmetric window is its value at the window's middle
    np.testing.assert_allclose(ours.mean_response.values, slopes[:, None] * (starts + 0.125) + offsets[:, None], atol=1e-9)


def test_nearest_samples_without_interpolation():
    experiment = linear_experiment()
    experiment.values["dff"] = np.tile(np.arange(experiment.timestamps.size, dtype=np.float64)[:, None], 3)
    ours = get_stimulus_response_xr(experiment, "dff", "all", time_window=[-1, 1.5], interpolate=False)
    # bou: offsets int(-1 * 32) = -32 ... int(-32 + 2.5 * 32) + 1 = 49, in samples of the trace's own rate
    offsets = np.arange(-32, 49)
    np.testing.assert_allclose(ours.eventlocked_timestamps.values, offsets / RATE, rtol=1e-12)
    nearest = np.rint((ours.start_time.values - 1.0) * RATE)
    np.testing.assert_array_equal(ours.eventlocked_traces.values[0], nearest[:, None] + offsets)
    assert ours.attrs["output_sampling_rate"] == pytest.approx(RATE)


def test_windows_off_the_recording_are_nan_not_an_error():
    experiment = linear_experiment()
    experiment.stimulus_presentations.loc[5, "start_time"] = 60.5  # the recording ends at 61 s: half a window
    experiment.stimulus_presentations.loc[4, "start_time"] = 70.0  # no sample at all in its window
    ours = get_stimulus_response_xr(experiment, "dff", "all", time_window=[-1, 1.5], output_sampling_rate=30)
    assert np.isnan(ours.eventlocked_traces.sel(stimulus_presentations_id=4)).all()
    assert np.isnan(ours.mean_response.sel(stimulus_presentations_id=4)).all()
    assert np.isnan(ours.p_value_gray_screen.sel(stimulus_presentations_id=4)).all()
    half = ours.eventlocked_traces.sel(stimulus_presentations_id=5).values
    assert np.isfinite(half).all()  # bou's clamp: the last sample's value after the end of the recording
    nearest = get_stimulus_response_xr(experiment, "dff", "all", time_window=[-1, 1.5], interpolate=False)
    assert np.isnan(nearest.eventlocked_traces.sel(stimulus_presentations_id=5).values[:, -1]).all()
    experiment.stimulus_presentations.loc[3, "start_time"] = 1.2  # the recording starts at 1 s: 0.8 s before it
    nearest = get_stimulus_response_xr(experiment, "dff", "all", time_window=[-1, 1.5], interpolate=False)
    early = nearest.eventlocked_traces.sel(stimulus_presentations_id=3).values  # (cells, samples)
    before = nearest.eventlocked_timestamps.values < 1.0 - 1.2 - 0.5 / RATE  # samples before the first frame
    assert before.sum() > 20 and np.isnan(early[:, before]).all() and np.isfinite(early[:, ~before]).all()


def test_release_table_means_skip_presentations_off_the_recording(tmp_path):
    """A presentation whose window has no sample (NaN traces and means) leaves its image's means those of the
    other presentations, not pulled toward 0."""
    experiment = linear_experiment()
    experiment.stimulus_presentations.loc[4, "start_time"] = 70.0  # the recording ends at 61 s
    store, out = tmp_path / "1.zarr", tmp_path / "responses.parquet"
    write_experiment_responses(experiment, store, LINEAR_PARAMS, {"ophys_experiment_id": 1})
    build_response_table([store], out)
    stored = xr.open_zarr(store, group="dff/images")
    image = stored.image_name.sel(stimulus_presentations_id=4).item()
    chosen = stored.image_name.values.astype(object) == image
    assert chosen.sum() >= 2 and np.isnan(stored.mean_response.sel(stimulus_presentations_id=4)).all()
    table = pd.read_parquet(out)
    rows = table[(table.data_type == "dff") & (table.event_type == "images") & (table.image_name == image)]
    assert len(rows) == 3
    for row in rows.itertuples():
        cell = int(np.flatnonzero(stored.cell_roi_id.values == row.cell_roi_id)[0])
        expected = np.nanmean(stored.mean_response.values[cell, chosen])
        assert np.isfinite(row.mean_response) and row.mean_response == pytest.approx(expected, rel=1e-12)
        np.testing.assert_allclose(row.mean_trace, np.nanmean(stored.eventlocked_traces.values[cell, chosen], axis=0),
                                   rtol=1e-5)


def test_default_rate_is_the_traces_own():
    ours = get_stimulus_response_xr(linear_experiment(), "dff", "changes", time_window=[-1, 1.5])
    assert ours.attrs["output_sampling_rate"] == pytest.approx(RATE)
    assert ours.sizes["eventlocked_timestamps"] == 81  # 2.5 s at 32 Hz: 80 steps, endpoint included


def test_running_speed_is_one_trace_on_bous_trace_id(caplog):
    experiment = linear_experiment(omitted=(1, 4))
    ours = get_stimulus_response_xr(experiment, "running_speed", "omissions", time_window=[-1, 1.5],
                                    output_sampling_rate=30)
    assert ours.eventlocked_traces.dims[0] == "trace_id" and ours.trace_id.values.tolist() == [0]
    assert "cell_roi_id" not in ours.coords
    starts = ours.start_time.values
    np.testing.assert_allclose(ours.mean_response.values[0], 2.0 * (starts + 0.25), atol=1e-9)


def test_allensdk_objects_are_stacked_once_keep_unmatched_cells_and_drop_invalid_rois():
    linear = linear_experiment()
    timestamps, values = linear.timestamps, linear.values["dff"]

    class AllenSdkLike:  # AllenSDK's attributes: per-cell arrays indexed by cell_specimen_id (NaN: unmatched)
        ophys_timestamps = timestamps
        stimulus_presentations = linear.stimulus_presentations
        index = pd.Index([7.0, np.nan, np.nan, 5.0], name="cell_specimen_id")
        dff_traces = pd.DataFrame(
            {"cell_roi_id": [101, 102, 104, 103], "dff": [values[:, 0], values[:, 1], values[:, 1] * 2, values[:, 2]]},
            index=index,
        )
        cell_specimen_table = pd.DataFrame({"cell_roi_id": [101, 102, 104, 103], "valid_roi": [True, True, False, True]},
                                           index=index)

    ours = get_stimulus_response_xr(AllenSdkLike(), "dff", "changes", time_window=[-1, 1.5])
    assert ours.cell_specimen_id.dtype == np.float64  # AllenSDK's dtype, as bou returns it
    assert ours.cell_roi_id.values.tolist() == [103, 101, 102]  # 5, 7, then the unmatched NaN (sorted last)
    fast = get_stimulus_response_xr(linear, "dff", "changes", time_window=[-1, 1.5])
    np.testing.assert_array_equal(ours.eventlocked_traces.values, fast.eventlocked_traces.values[[1, 2, 0]])
    everything = get_stimulus_response_xr(AllenSdkLike(), "dff", "changes", time_window=[-1, 1.5],
                                          exclude_invalid_rois=False)
    assert everything.cell_roi_id.values.tolist() == [103, 101, 102, 104]


def test_bad_arguments_and_broken_experiments_name_what_is_wrong():
    experiment = linear_experiment()
    with pytest.raises(ConfigError, match="event_type 'flashes'"):
        get_stimulus_response_xr(experiment, "dff", "flashes")
    with pytest.raises(ConfigError, match="data_type 'pupil_area'"):
        get_stimulus_response_xr(experiment, "pupil_area", "changes")
    experiment.values["dff"] = experiment.values["dff"][:, :2]
    with pytest.raises(NwbError, match="experiment 1: dff is"):
        get_stimulus_response_xr(experiment, "dff", "changes")
    experiment = linear_experiment()
    experiment.stimulus_presentations = None
    with pytest.raises(NwbError, match="experiment 1 has no stimulus_presentations"):
        get_stimulus_response_xr(experiment, "dff", "changes")
    experiment = linear_experiment()
    experiment.stimulus_presentations = experiment.stimulus_presentations.drop(columns="trials_id")
    with pytest.raises(NwbError, match="experiment 1: stimulus_presentations has no column trials_id"):
        get_stimulus_response_xr(experiment, "dff", "changes")


# --- p_value_gray_screen --------------------------------------------------------------------------------------


def test_p_values_equal_brute_force_over_the_same_draws():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(3000, 4))
    frames = np.arange(100, 2000)
    responses = rng.normal(scale=0.4, size=(4, 50))
    responses[0, :3] = [10.0, -10.0, np.nan]
    ours = p_value_gray_screen(responses, values, frames, window_samples=16, seed=11)
    starts = np.random.default_rng(11).choice(frames, 10_000)
    shuffled = np.stack([values[s : s + 16].mean(axis=0) for s in starts[:10_000]])  # (shuffles, cells)
    brute = (shuffled.T[:, None, :] >= responses[:, :, None]).mean(axis=2)  # fraction of shuffles at least as large
    brute[np.isnan(responses)] = np.nan
    np.testing.assert_allclose(ours, brute, atol=1e-12)
    assert ours[0, 0] == 0.0 and ours[0, 1] == 1.0 and np.isnan(ours[0, 2])
    assert np.array_equal(ours, p_value_gray_screen(responses, values, frames, 16, seed=11), equal_nan=True)
    assert not np.array_equal(ours, p_value_gray_screen(responses, values, frames, 16, seed=12), equal_nan=True)


def test_p_value_windows_are_the_response_window_long():
    """A gray screen that is 0 except one 1.0 every 40 frames: a 16-frame window holds at most one (mean <= 1/16),
    bou's 450-sample windows ~11 (mean ~0.025): a response of 0.05 is significant only with the right length."""
    experiment = linear_experiment()
    timestamps = experiment.timestamps
    gray = np.zeros(timestamps.size)
    gray[::40] = 1.0
    experiment.values["dff"] = np.column_stack([gray, gray, gray])
    experiment.stimulus_presentations["start_time"] += 10.0  # 30 s of gray screen before the first image
    ours = get_stimulus_response_xr(experiment, "dff", "all", time_window=[-1, 1.5], output_sampling_rate=30)
    assert ours.attrs["p_value_window_samples"] == 16
    frames = np.arange(0, np.searchsorted(timestamps, 30.0))
    p = p_value_gray_screen(np.array([[0.05]]), gray[:, None], frames, 16)
    assert 0.2 < p[0, 0] < 0.6  # 16-sample windows with a 1.0 (mean 1/16 > 0.05) are the larger ones
    assert p_value_gray_screen(np.array([[0.05]]), gray[:, None], frames, 450)[0, 0] == 0.0


def test_no_gray_screen_before_the_task_gives_nan_p_values_and_a_warning(caplog):
    experiment = linear_experiment()
    experiment.stimulus_presentations["start_time"] -= 19.0  # first image at 1 s: no frame before it
    with caplog.at_level(logging.WARNING, logger="vb2p.responses"):
        ours = get_stimulus_response_xr(experiment, "dff", "all", time_window=[-1, 1.5], output_sampling_rate=30)
    assert np.isnan(ours.p_value_gray_screen.values).all()
    assert any("p_value_gray_screen is NaN" in message for message in caplog.messages)


# --- parameters -----------------------------------------------------------------------------------------------


def test_response_params_defaults_and_config():
    params = ResponseParams()
    assert params.time_window == (-1.0, 1.5) and params.response_window_duration == 0.5
    assert params.output_sampling_rate == 30 and params.interpolate and params.seed == 0
    assert params.event_types == ("changes", "omissions", "images", "all")
    assert params.data_types == ("dff", "events", "running_speed")
    assert ResponseParams.from_config({"time_window": [-2, 3], "event_types": ["changes"]}).time_window == (-2, 3)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"time_window": [1.5, -1]}, "responses.time_window"),
        ({"time_window": [-1, float("inf")]}, "responses.time_window"),
        ({"time_window": [-0.2, 1.5]}, "responses.time_window"),  # does not contain the 0.5 s baseline
        ({"time_window": [-1, 0.3]}, "responses.time_window"),  # nor the response window
        ({"response_window_duration": 0}, "responses.response_window_duration"),
        ({"output_sampling_rate": 0}, "responses.output_sampling_rate"),
        ({"output_sampling_rate": None}, "responses.output_sampling_rate"),
        ({"event_types": ["changes", "flashes"]}, "responses.event_types"),
        ({"data_types": ["pupil_area"]}, "responses.data_types"),
        ({"seed": -1}, "responses.seed"),
        ({"interpolate": "yes"}, "responses.interpolate"),
        ({"trace_dtype": "float16"}, "responses.trace_dtype"),
        ({"window": [-1, 1]}, "responses.window"),
    ],
)
def test_response_params_errors_name_the_config_key(section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ResponseParams.from_config(section)


# --- per-experiment store, release-wide table, responsive cells ------------------------------------------------


@pytest.fixture(scope="module")
def reference_store(reference, tmp_path_factory):
    store = tmp_path_factory.mktemp("responses") / "775614751.zarr"
    summary = write_experiment_responses(reference, store, ResponseParams(), reference_metadata())
    return store, summary


def test_store_holds_every_data_and_event_type_equal_to_the_function(reference, reference_store):
    store, summary = reference_store
    assert summary["has_task"] and summary["n_cells"] == 12
    assert summary["n_presentations"] == {"changes": 70, "omissions": 28, "images": 532, "all": 560}
    assert not store.with_name(f".{store.name}.partial").exists()
    tree = xr.open_datatree(store, engine="zarr")
    assert sorted(tree.children) == ["dff", "events", "running_speed"]
    assert tree.attrs["metadata"] == reference_metadata() and tree.attrs["responses"]["seed"] == 0
    for data_type in ("dff", "events", "running_speed"):
        assert sorted(tree[data_type].children) == ["all", "changes", "images", "omissions"]
    for data_type, event_type in (("dff", "changes"), ("events", "images"), ("running_speed", "omissions")):
        stored = xr.open_zarr(store, group=f"{data_type}/{event_type}")
        direct = get_stimulus_response_xr(reference, data_type, event_type, time_window=[-1, 1.5],
                                          response_window_duration=0.5, output_sampling_rate=30)
        assert stored.eventlocked_traces.dtype == np.float32
        np.testing.assert_allclose(stored.eventlocked_traces.values, direct.eventlocked_traces.values, rtol=1e-6,
                                   atol=1e-7)
        for name in ("mean_response", "mean_baseline", "p_value_gray_screen"):
            np.testing.assert_array_equal(stored[name].values, direct[name].values)
        for name in ("stimulus_presentations_id", "is_change", "omitted", "trials_id", "start_time"):
            np.testing.assert_array_equal(stored[name].values, direct[name].values)
        assert stored.image_name.values.tolist() == direct.image_name.values.tolist()
    assert xr.open_zarr(store, group="dff/all").cell_specimen_id.dtype == np.int64


def test_allensdk_nan_ids_are_stored_as_minus_one(tmp_path):
    linear = linear_experiment()

    class AllenSdkLike:
        ophys_timestamps, stimulus_presentations = linear.timestamps, linear.stimulus_presentations
        running_speed = linear.running_speed
        index = pd.Index([7.0, np.nan, 5.0], name="cell_specimen_id")
        dff_traces = pd.DataFrame({"cell_roi_id": [101, 102, 103], "dff": list(linear.values["dff"].T)}, index=index)
        cell_specimen_table = pd.DataFrame({"cell_roi_id": [101, 102, 103], "valid_roi": True}, index=index)

    params = ResponseParams(data_types=("dff",), event_types=("changes", "all"))
    write_experiment_responses(AllenSdkLike(), tmp_path / "a.zarr", params, {"ophys_experiment_id": 3})
    stored = xr.open_zarr(tmp_path / "a.zarr", group="dff/all")
    assert stored.cell_specimen_id.values.tolist() == [5, 7, -1] and stored.cell_specimen_id.dtype == np.int64


def test_an_experiment_without_the_task_gets_an_empty_well_formed_store(tmp_path, caplog):
    experiment = linear_experiment()
    experiment.has_task, experiment.stimulus_presentations, experiment.running_speed = False, None, None
    with caplog.at_level(logging.INFO, logger="vb2p.responses"):
        summary = write_experiment_responses(experiment, tmp_path / "e.zarr", LINEAR_PARAMS, {"ophys_experiment_id": 9})
    assert any("experiment 9 has no change-detection block" in message for message in caplog.messages)
    assert not summary["has_task"] and summary["n_presentations"] == dict.fromkeys(LINEAR_PARAMS.event_types, 0)
    assert summary["groups"] == [f"dff/{event_type}" for event_type in LINEAR_PARAMS.event_types]  # no running either
    for group in summary["groups"]:
        stored = xr.open_zarr(tmp_path / "e.zarr", group=group)
        assert stored.sizes["stimulus_presentations_id"] == 0 and stored.sizes["cell_specimen_id"] == 3
        assert stored.sizes["eventlocked_timestamps"] == 76 and stored.image_name.dtype.kind in "TUO"


def test_a_store_without_the_task_through_open_experiment_style_errors(tmp_path):
    """vb2p.experiment raises NwbError for the task tables of a store without the task: no running groups then."""

    class NoTask(ArrayExperiment):
        @property
        def running_speed(self):
            raise NwbError("experiment 4 has no task in its store")

        @running_speed.setter
        def running_speed(self, value):
            pass

    linear = linear_experiment()
    experiment = NoTask(linear.timestamps, linear.values, linear.cell_specimen_id, linear.cell_roi_id, None,
                        ophys_experiment_id=4, has_task=False)
    summary = write_experiment_responses(experiment, tmp_path / "n.zarr", LINEAR_PARAMS, {"ophys_experiment_id": 4})
    assert summary["groups"] == [f"dff/{event_type}" for event_type in LINEAR_PARAMS.event_types]


def test_a_failure_leaves_no_store_and_no_partial_one(tmp_path):
    experiment = linear_experiment()
    store = tmp_path / "x.zarr"
    write_experiment_responses(experiment, store, ResponseParams(data_types=("dff",)), {"ophys_experiment_id": 1})
    before = sorted(os.listdir(store))

    def broken(data_type):
        raise OSError("disk gone")

    experiment.traces = broken
    with pytest.raises(OSError):
        write_experiment_responses(experiment, store, ResponseParams(), {"ophys_experiment_id": 1})
    assert sorted(os.listdir(tmp_path)) == ["x.zarr"] and sorted(os.listdir(store)) == before  # the old one intact
    with pytest.raises(OSError):
        write_experiment_responses(experiment, tmp_path / "y.zarr", ResponseParams(), {"ophys_experiment_id": 2})
    assert sorted(os.listdir(tmp_path)) == ["x.zarr"]


def test_release_table_rows_equal_the_store_and_filter_by_column(reference_store, tmp_path):
    store, _ = reference_store
    other = linear_experiment(omitted=(1,), changes=(2, 4))
    other_store = tmp_path / "2.zarr"
    write_experiment_responses(other, other_store, LINEAR_PARAMS, {"ophys_experiment_id": 2, "cre_line": "Vip-IRES-Cre"})
    empty = linear_experiment()
    empty.has_task = False
    write_experiment_responses(empty, tmp_path / "3.zarr", LINEAR_PARAMS, {"ophys_experiment_id": 3})
    out = tmp_path / "responses.parquet"
    build_response_table([store, other_store, tmp_path / "3.zarr"], out)
    table = pd.read_parquet(out)
    assert pq.ParquetFile(out).num_row_groups == 2  # one per experiment with rows, written one at a time
    assert set(table.columns) >= set(METADATA_COLUMNS) | {"mean_trace", "fraction_significant", "n_presentations"}
    grid = json.loads(pq.read_schema(out).metadata[b"eventlocked_timestamps"])
    np.testing.assert_array_equal(grid, np.linspace(-1, 1.5, 76))
    reference_rows = table[table.ophys_experiment_id == 775614751]
    # 12 cells x (8 change images + 1 omission + 8 images) x (dff, events)
    assert len(reference_rows) == 12 * (8 + 1 + 8) * 2
    assert set(reference_rows.event_type) == {"changes", "omissions", "images"}  # 'all' is their union
    assert (reference_rows.cre_line == "Slc17a7-IRES2-Cre").all() and (reference_rows.session_number == 1).all()

    stored = xr.open_zarr(store, group="dff/changes")
    cell = int(np.flatnonzero(stored.cell_roi_id.values == 1080884343)[0])
    image = "im031"
    chosen = stored.image_name.values.astype(object) == image
    row = reference_rows[(reference_rows.data_type == "dff") & (reference_rows.event_type == "changes")
                         & (reference_rows.cell_roi_id == 1080884343) & (reference_rows.image_name == image)].iloc[0]
    assert row.n_presentations == chosen.sum() and row.cell_specimen_id == stored.cell_specimen_id.values[cell]
    np.testing.assert_allclose(row.mean_response, stored.mean_response.values[cell, chosen].mean(), rtol=1e-12)
    np.testing.assert_allclose(row.mean_baseline, stored.mean_baseline.values[cell, chosen].mean(), rtol=1e-12)
    assert row.fraction_significant == (stored.p_value_gray_screen.values[cell, chosen] < 0.05).mean()
    np.testing.assert_allclose(row.mean_trace, stored.eventlocked_traces.values[cell, chosen].mean(0), rtol=1e-5)

    vip = pd.read_parquet(out, filters=[("cre_line", "==", "Vip-IRES-Cre"), ("event_type", "==", "omissions")])
    assert set(vip.ophys_experiment_id) == {2} and set(vip.image_name) == {"omitted"} and len(vip) == 3  # 3 cells


def test_release_table_refuses_stores_with_different_time_bases(reference_store, tmp_path):
    store, _ = reference_store
    other = tmp_path / "2.zarr"
    params = ResponseParams(time_window=(-2, 2), data_types=("dff",))
    write_experiment_responses(linear_experiment(), other, params, {"ophys_experiment_id": 2})
    with pytest.raises(ConfigError, match="different eventlocked_timestamps"):
        build_response_table([store, other], tmp_path / "t.parquet")
    assert not (tmp_path / "t.parquet").exists()


def test_responsive_cells_counts_preferred_images_above_the_threshold():
    table = pd.DataFrame(
        {
            "ophys_experiment_id": [1, 1, 1, 1, 2, 2, 2],
            "cell_roi_id": [10, 10, 11, 11, 20, 20, 21],
            "cre_line": ["Sst", "Sst", "Sst", "Sst", "Vip", "Vip", "Vip"],
            "experience_level": "Familiar",
            "data_type": "dff",
            "event_type": "images",
            "image_name": ["a", "b", "a", "b", "a", "b", "a"],
            "mean_response": [0.1, 0.3, 0.2, 0.1, 0.5, 0.4, np.nan],
            "fraction_significant": [0.9, 0.05, 0.5, 0.9, 0.25, 0.9, 0.9],
        }
    )
    # cell 10: preferred b (0.05) no; 11: preferred a (0.5) yes; 20: preferred a, exactly 0.25: no (strictly more);
    # 21: no response at all: not counted
    result = responsive_cells(table, event_type="images", threshold=0.25).set_index("cre_line")
    assert result.loc["Sst", "n_cells"] == 2 and result.loc["Sst", "n_responsive"] == 1
    assert result.loc["Vip", "n_cells"] == 1 and result.loc["Vip", "fraction_responsive"] == 0.0
    # Allen's threshold (the default): 20 is responsive at 0.25 > 0.1
    assert responsive_cells(table, event_type="images").set_index("cre_line").loc["Vip", "fraction_responsive"] == 1.0
    with pytest.raises(TableError, match="no column depth"):
        responsive_cells(table, group_by=["depth"], event_type="images")
    with pytest.raises(TableError, match="no rows for data_type 'dff' and event_type 'changes'"):
        responsive_cells(table)


def _sessions(container: int, *sessions: tuple[str, bool]) -> pd.DataFrame:
    """One experiment per (experience_level, passive) session of a container, a day apart, in that order."""
    return pd.DataFrame({
        "ophys_experiment_id": [container * 10 + day for day in range(len(sessions))],
        "ophys_container_id": container,
        "experience_level": [level for level, _ in sessions],
        "passive": [passive for _, passive in sessions],
        "date_of_acquisition": [f"2019-03-{10 + day:02d} 10:00:00+00:00" for day in range(len(sessions))],
    })


def test_the_platform_figures_use_allens_sessions_and_containers():
    """visual_behavior_analysis's limit_to_last_familiar_second_novel_active, then
    limit_to_containers_with_all_experience_levels, on containers whose answer is known; rows in any order."""
    from vb2p.platform import last_familiar_second_novel_active, platform_experiments

    familiar, novel, later = "Familiar", "Novel 1", "Novel >1"
    table = pd.concat([
        # the last active familiar (3), novel 1 (4), the first active session after it (6, not the passive 5)
        _sessions(1, (familiar, False), (familiar, True), (familiar, False), (novel, False), (later, True),
                  (later, False), (later, False)),
        # no Novel 1: Allen keeps none of its Familiar or Novel >1 sessions
        _sessions(2, (familiar, False), (later, False)),
        # only a passive familiar session before Novel 1: no Familiar
        _sessions(3, (familiar, True), (novel, False), (later, False)),
        # two Novel 1 sessions: counted from the first, whose next active session is no Novel >1
        _sessions(4, (familiar, False), (novel, False), (novel, False), (later, False)),
    ]).sample(frac=1, random_state=0)
    kept = set(table.ophys_experiment_id[last_familiar_second_novel_active(table)])
    assert kept == {12, 13, 15, 31, 32, 40, 41, 42}
    chosen = platform_experiments(table, "last_familiar_second_novel_active", True)
    assert set(chosen.ophys_experiment_id) == {12, 13, 15}
    assert set(platform_experiments(table, "all", True).ophys_container_id) == {1, 3, 4}
    assert len(platform_experiments(table, "all", False)) == len(table)
    with pytest.raises(TableError, match="no column passive.*forcerun stimulus_responses"):
        platform_experiments(table.drop(columns="passive"), "all", False)
    # stores written before passive and date_of_acquisition were kept give a table without them
    unknown = table.assign(passive=table.passive.astype(object).where(table.ophys_container_id != 3, None))
    with pytest.raises(TableError, match="no passive or date_of_acquisition for experiments 3.*forcerun"):
        platform_experiments(unknown, "last_familiar_second_novel_active", False)


def test_allens_sessions_on_the_real_release_are_one_of_each_level_per_container():
    experiments = pd.read_csv(DATA / "real_metadata/ophys_experiment_table.csv")
    from vb2p.platform import platform_experiments

    chosen = platform_experiments(experiments, "last_familiar_second_novel_active", True)
    per_container = chosen.groupby("ophys_container_id").experience_level.agg(sorted)
    assert len(per_container) > 100 and (per_container.map(tuple) == ("Familiar", "Novel 1", "Novel >1")).all()
    assert not chosen.passive.any()
    order = chosen.sort_values("date_of_acquisition").groupby("ophys_container_id").experience_level.agg(list)
    assert (order.map(tuple) == ("Familiar", "Novel 1", "Novel >1")).all()
    # the Familiar session kept is the container's last active one before Novel 1
    novel = experiments[experiments.experience_level == "Novel 1"]
    novel_dates = novel.groupby("ophys_container_id").date_of_acquisition.min()
    active_familiar = experiments[(experiments.experience_level == "Familiar") & ~experiments.passive]
    before = active_familiar[active_familiar.date_of_acquisition < active_familiar.ophys_container_id.map(novel_dates)]
    last = before.sort_values("date_of_acquisition").groupby("ophys_container_id").ophys_experiment_id.last()
    kept_familiar = chosen[chosen.experience_level == "Familiar"].set_index("ophys_container_id").ophys_experiment_id
    assert (kept_familiar == last[kept_familiar.index]).all()


def test_platform_figures_of_a_selection_without_allens_sessions_say_so(reference_store, tmp_path, caplog):
    """One Familiar experiment: Allen's sessions keep none of it; every output is still written, the figures and
    the log say why, and with every session the figures are drawn."""
    from vb2p import steps
    from vb2p.platform import FRACTION_COLUMNS, POPULATION_COLUMNS, read_response_table

    store, _ = reference_store
    build_response_table([store], tmp_path / "t.parquet")
    assert set(pd.read_parquet(tmp_path / "t.parquet").experience_level) == {"Familiar"}
    rows, _ = read_response_table(tmp_path / "t.parquet", event_types=("changes", "omissions"))
    assert set(rows.event_type) == {"changes", "omissions"} and set(rows.data_type) == {"dff"}
    tables = {name: tmp_path / f"{name}.csv" for name in ("population_responses", "responsive_fractions")}
    figures = {name: tmp_path / f"{name}.png" for name in ("change_responses", "omission_responses",
                                                           "responsive_fractions")}
    section = {"sessions": "last_familiar_second_novel_active", "containers_with_all_experience_levels": True,
               "responsive_threshold": 0.1}
    with caplog.at_level(logging.WARNING, logger="vb2p"):
        steps.platform_figures(tmp_path / "t.parquet", section, tables, figures)
    assert any("No selected experiment is in the platform figures' sessions" in r.message for r in caplog.records)
    assert list(pd.read_csv(tables["population_responses"]).columns) == POPULATION_COLUMNS
    assert pd.read_csv(tables["responsive_fractions"]).empty and all(path.stat().st_size for path in figures.values())
    steps.platform_figures(tmp_path / "t.parquet", {**section, "sessions": "all",
                                                    "containers_with_all_experience_levels": False}, tables, figures)
    fractions = pd.read_csv(tables["responsive_fractions"])
    assert list(fractions.columns) == FRACTION_COLUMNS and fractions.n_cells.sum() > 0


def test_responsive_cells_on_the_reference_finds_the_omission_cells(reference_store, tmp_path):
    store, _ = reference_store
    build_response_table([store], tmp_path / "t.parquet")
    table = pd.read_parquet(tmp_path / "t.parquet")
    groups = {int(roi): group for roi, group in DESIGN["cell_groups"].items()}
    table["design"] = table.cell_roi_id.map(groups)
    result = responsive_cells(table, group_by=["design"], event_type="omissions").set_index("design")
    assert result.loc["omission", "fraction_responsive"] == 1.0 and result.n_cells.sum() == 12
