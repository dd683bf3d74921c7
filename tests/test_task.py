"""The task beside the activity: tables, events, performance and the AllenSDK-named experiment object, equal to what
AllenSDK 2.16.2 returns for files written by its own writer (saved expectations, and live in .venv-allensdk), the
store's layout, and bad input."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import pickle
import shutil
import subprocess
import uuid
import warnings

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr
import zarr
from allensdk_task_peer import table_json, typed_json, value_json
from conftest import DATA, REPO

from vb2p import layout, task
from vb2p.errors import NwbError
from vb2p.experiment import image_set, open_experiment
from vb2p.extract import ExtractionOptions, extract_experiment, extract_session_task
from vb2p.performance import change_outcomes, is_passive, performance_metrics, rolling_performance
from vb2p.responses import get_stimulus_response_xr

TASK_DATA = DATA / "allensdk_nwb" / "task"
REFERENCE = TASK_DATA / "ref_task_scientifica.nwb"
OPHYS_REFERENCE = DATA / "allensdk_nwb" / "ref_scientifica.nwb"
EYE_NWB = TASK_DATA / "eye_tracking.nwb"
EXPECTED = json.loads((TASK_DATA / "ref_task_scientifica.expected.json").read_text())["experiment"]
PERFORMANCE = json.loads((TASK_DATA / "ref_task_scientifica.performance.json").read_text())
EYE_EXPECTED = json.loads((TASK_DATA / "eye_tracking.expected.json").read_text())["eye_tracking"]
REFERENCE_ID = 775614751
WHERE = f"experiment {REFERENCE_ID}"
ALLENSDK_VENV = REPO / ".venv-allensdk"
PEER = REPO / "tests" / "allensdk_task_peer.py"


@pytest.fixture(scope="module")
def task_store(tmp_path_factory):
    """make(nwb, dff_dtype) -> (store, summary): the store extract_experiment writes for an NWB file, made once."""
    made = {}

    def make(nwb, dff_dtype="float64"):
        if (nwb, dff_dtype) not in made:
            with h5py.File(nwb, "r") as f:
                experiment_id = int(f[layout.NWB_METADATA].attrs["ophys_experiment_id"])
            store = tmp_path_factory.mktemp("store") / f"{experiment_id}.zarr"
            summary = extract_experiment(nwb, store, experiment_id, options=ExtractionOptions(dff_dtype=dff_dtype))
            made[nwb, dff_dtype] = store, summary
        return made[nwb, dff_dtype]

    return make


@pytest.fixture(scope="module")
def eye_nwb(tmp_path_factory):
    """The task reference with the eye tracking of eye_tracking.nwb (AllenSDK-written) added at its NWB path."""
    path = tmp_path_factory.mktemp("eye") / "ref_task_with_eye_tracking.nwb"
    shutil.copyfile(REFERENCE, path)
    with h5py.File(EYE_NWB, "r") as source, h5py.File(path, "r+") as target:
        source.copy(source[task.NWB_EYE_TRACKING], target["acquisition"], name="EyeTracking")
    return path


@pytest.fixture(scope="module")
def experiment(task_store):
    return open_experiment(task_store(REFERENCE)[0])


def sha256_of(table: pd.DataFrame) -> str:
    """The expected JSON's checksum of a table's index and values."""
    content = {"index": value_json(table.index.to_numpy()), "values": table_json(table)["values"]}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def same_table(ours: pd.DataFrame, theirs: dict, presentations: bool = False) -> None:
    """Index, columns, dtypes and values equal to table_json's. AllenSDK orders the presentations' columns after its
    fixed list by iterating a Python set (the order changes from run to run): those are compared as a set."""
    mine = table_json(ours)
    for key in ("index_name", "index_dtype", "index"):
        assert mine[key] == theirs[key], key
    fixed = set(task.PRESENTATIONS_ORDER) | {"end_time"}
    n = sum(column in fixed for column in theirs["columns"]) if presentations else len(theirs["columns"])
    assert mine["columns"][:n] == theirs["columns"][:n]
    assert sorted(mine["columns"][n:]) == sorted(theirs["columns"][n:])
    assert dict(zip(mine["columns"], mine["dtypes"])) == dict(zip(theirs["columns"], theirs["dtypes"]))
    for column, values in theirs["values"].items():
        assert mine["values"][column] == values, column


def same_metrics(ours: dict, theirs: dict) -> None:
    """AllenSDK's performance metrics (typed_json): same keys in order, ints as ints, floats to 1e-12, NaN as NaN."""
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert isinstance(ours[key], int if value["type"].startswith("int") else float), key
        if value["value"] is None:
            assert np.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value["value"], rel=1e-12), key


# ---- equal to AllenSDK's saved output (our venv) ---------------------------------------------------------------------


def test_stimulus_presentations_and_trials_equal_allensdk(experiment, task_store):
    summary = task_store(REFERENCE)[1]
    assert summary["has_task"] and summary["n_stimulus_presentations"] == EXPECTED["stimulus_presentations"]["n_rows"]
    for name in ("stimulus_presentations", "trials"):
        table, expected = getattr(experiment, name), EXPECTED[name]
        assert list(table.columns) == expected["columns"], name  # our order of the set-ordered tail: sorted
        assert [str(d) for d in table.dtypes] == expected["dtypes"], name
        assert table.index.name == expected["index_name"] and table.index.tolist() == expected["index"]
        assert sha256_of(table) == expected["sha256_values"], name
        for column, count in expected["counts"].items():
            if column != "per_block":
                assert int(table[column].sum()) == count, column
    presentations = experiment.stimulus_presentations
    assert presentations.stimulus_block.value_counts().to_dict() == {
        int(block): n for block, n in EXPECTED["stimulus_presentations"]["counts"]["per_block"].items()}
    assert isinstance(experiment.trials.lick_times.iloc[0], np.ndarray)  # ragged: one array per trial


def test_running_licks_rewards_and_timestamps_equal_allensdk(experiment):
    running, expected = experiment.running_speed, EXPECTED["running_speed"]
    assert list(running.columns) == expected["columns"] and len(running) == expected["length"]
    assert running.speed.tolist()[:5] == expected["first5"]["speed"]
    assert running.timestamps.tolist()[:5] == expected["first5"]["timestamps"]
    assert running.sum().tolist() == pytest.approx([expected["sum"]["timestamps"], expected["sum"]["speed"]], rel=1e-12)
    raw = experiment.raw_running_speed
    assert value_json(raw.speed.to_numpy()[:5]) == EXPECTED["raw_running_speed"]["first5"]
    assert int(raw.speed.isna().sum()) == EXPECTED["raw_running_speed"]["n_nan"]
    licks, rewards = experiment.licks, experiment.rewards
    assert list(licks.columns) == EXPECTED["licks"]["columns"] and licks.frame.dtype == np.int64
    assert licks.timestamps.tolist() == EXPECTED["licks"]["timestamps"]
    assert licks.frame.tolist()[:5] == EXPECTED["licks"]["first5_frame"]
    assert list(rewards.columns) == EXPECTED["rewards"]["columns"]
    for column in ("timestamps", "volume", "auto_rewarded"):
        assert rewards[column].tolist() == EXPECTED["rewards"][column]
    for name in ("stimulus_timestamps", "ophys_timestamps"):
        values = getattr(experiment, name)
        assert values.dtype == np.float64 and len(values) == EXPECTED[name]["length"]
        assert values[:5].tolist() == EXPECTED[name]["first5"] and values[-1] == EXPECTED[name]["last"]


def test_events_equal_allensdk(experiment):
    events, expected = experiment.events, EXPECTED["events"]
    assert list(events.columns) == expected["columns"] and events.index.name == "cell_specimen_id"
    assert value_json(events.index.to_numpy()) == expected["index_cell_specimen_id"]  # NaN for unmatched cells
    assert events.cell_roi_id.tolist() == expected["cell_roi_id"]
    assert events["lambda"].tolist() == expected["lambda_"] and events.noise_std.tolist() == expected["noise_std"]
    stacked = np.stack(events.events.to_list())
    assert list(stacked.shape) == expected["stacked_shape"] and stacked.dtype == np.float64
    assert (stacked != 0).mean() == pytest.approx(expected["nonzero_fraction"], rel=1e-12)
    for column, sums in (("events", "row_sums_by_cell_roi_id"),
                         ("filtered_events", "filtered_row_sums_by_cell_roi_id")):
        ours = dict(zip(events.cell_roi_id.tolist(), np.stack(events[column].to_list()).sum(axis=1)))
        assert ours == pytest.approx({int(k): v for k, v in expected[sums].items()}, rel=1e-12), column
    filtered = np.stack(events.filtered_events.to_list())
    assert not np.array_equal(filtered, stacked) and np.all(filtered[:, 0] <= stacked[:, 0])  # causal smoothing


def test_dff_cell_table_and_metadata_equal_allensdk(experiment):
    dff, expected = experiment.dff_traces, EXPECTED["dff_traces"]
    cells_by_time = np.stack(dff.dff.to_list())
    assert list(cells_by_time.shape) == expected["shape_cells_by_time"]
    assert hashlib.sha256(cells_by_time.tobytes()).hexdigest() == expected["sha256_float64_cells_by_time_C"]
    assert value_json(dff.index.to_numpy()) == expected["cell_specimen_id"]
    assert dff.cell_roi_id.tolist() == expected["cell_roi_id"]
    table = experiment.cell_specimen_table
    assert table.cell_roi_id.tolist() == EXPECTED["cell_specimen_table"]["cell_roi_id"]
    assert table.valid_roi.tolist() == EXPECTED["cell_specimen_table"]["valid_roi"]
    assert table.roi_mask.iloc[0].shape == experiment.max_projection.data.shape == (512, 452)
    metadata = experiment.metadata
    assert sorted(metadata) == sorted(EXPECTED["metadata"])  # AllenSDK's order: checked live
    for key, value in EXPECTED["metadata"].items():
        if key == "date_of_acquisition":
            assert isinstance(metadata[key], dt.datetime) and metadata[key] == dt.datetime.fromisoformat(value)
        elif key == "behavior_session_uuid":
            assert metadata[key] == uuid.UUID(value)
        else:
            assert metadata[key] == value and type(metadata[key]) is type(value), key
    assert experiment.ophys_experiment_id == REFERENCE_ID


def test_performance_equals_allensdk(experiment):
    metrics = experiment.get_performance_metrics()
    same_metrics(metrics, PERFORMANCE["performance_metrics"])
    rolling, expected_rolling = experiment.get_rolling_performance_df(), PERFORMANCE["rolling_performance"]
    assert table_json(rolling)["columns"] == expected_rolling["columns"] and rolling.index.name == "trials_id"
    for column, values in expected_rolling["values"].items():
        np.testing.assert_allclose(rolling[column].to_numpy(), np.array(values, dtype=float), rtol=1e-12)
    # Fewer rewards per minute required: at least as many engaged trials.
    assert experiment.get_performance_metrics(0.5)["engaged_trial_count"] >= metrics["engaged_trial_count"]


def test_edits_to_what_an_experiment_hands_out_never_reach_it(task_store, eye_nwb):
    """Analysis code edits the tables it gets (a value set in place, a column replaced, rows dropped): the next
    access, and what vb2p computes from the experiment, are what a fresh experiment gives. Arrays inside tables are
    shared and refuse in-place edits, also after a pickle round trip."""
    store = task_store(eye_nwb)[0]
    experiment, fresh = open_experiment(store), open_experiment(store)
    tables = ("stimulus_presentations", "trials", "running_speed", "raw_running_speed", "licks", "rewards",
              "eye_tracking", "dff_traces", "events", "cell_specimen_table", "roi_masks")
    metrics = experiment.get_performance_metrics()
    responses = get_stimulus_response_xr(experiment, "dff", "changes")
    edited_in_place = []
    for name in tables:
        edited = getattr(experiment, name)
        floats = [k for k, dtype in enumerate(edited.dtypes) if dtype == np.float64]
        if floats and len(edited):
            edited.iloc[0, floats[0]] = -12345.0
            edited_in_place.append(name)
        edited[edited.columns[0]] = 0
        edited.drop(edited.index[:2], inplace=True)
    assert {"stimulus_presentations", "trials", "running_speed", "eye_tracking", "events"} <= set(edited_in_place)
    for name in ("ophys_timestamps", "stimulus_timestamps"):
        times = getattr(experiment, name)
        times -= times[0]
    experiment.metadata["imaging_depth"] = -1
    experiment.task_parameters["response_window_sec"][0] = 5.0
    experiment.max_projection.data[:] = 0
    for name in tables:
        pd.testing.assert_frame_equal(getattr(experiment, name), getattr(fresh, name), obj=name)
    for name in ("ophys_timestamps", "stimulus_timestamps"):
        np.testing.assert_array_equal(getattr(experiment, name), getattr(fresh, name))
    assert experiment.metadata == fresh.metadata and experiment.task_parameters == fresh.task_parameters
    assert experiment.max_projection == fresh.max_projection
    assert experiment.get_performance_metrics() == metrics
    xr.testing.assert_identical(get_stimulus_response_xr(experiment, "dff", "changes"), responses)
    for opened in (experiment, pickle.loads(pickle.dumps(experiment))):
        for table, column in (("dff_traces", "dff"), ("events", "events"), ("cell_specimen_table", "roi_mask"),
                              ("trials", "lick_times")):
            cell = next(value for value in getattr(opened, table)[column] if len(value))
            with pytest.raises(ValueError, match="read-only"):
                cell[0] = 1
        for data_type in ("dff", "events", "filtered_events"):  # what vb2p's responses are computed from
            for array in opened.traces(data_type):
                with pytest.raises(ValueError, match="read-only"):
                    array[0] = 1


def test_image_set_is_allensdks_for_every_real_session_type():
    """AllenSDK's parse_stimulus_set on the release's session types (tests/data/real_metadata), and None where it
    raises."""
    session_types = pd.read_csv(DATA / "real_metadata/ophys_session_table.csv").session_type.unique()
    assert {image_set(session_type) for session_type in session_types} == {"images_A", "images_B", "images_G",
                                                                           "images_H"}
    assert image_set("OPHYS_5_images_B_passive") == "images_B" and image_set("TRAINING_1_gratings") == "gratings"
    assert image_set("OPHYS_1") is None and image_set("OPHYS_1_movies") is None


def test_changes_by_outcome_count_as_the_performance_metrics(experiment):
    """The behavior figure's changes: hits, misses and auto-rewarded changes as get_performance_metrics counts them
    (an auto-rewarded change is not a miss)."""
    changes = change_outcomes(experiment.stimulus_presentations, experiment.trials)
    metrics = experiment.get_performance_metrics()
    counts = changes.outcome.value_counts()
    assert metrics["auto_reward_count"] > 0
    for outcome, metric in (("hit", "hit_trial_count"), ("miss", "miss_trial_count"),
                            ("auto_rewarded", "auto_reward_count")):
        assert counts.get(outcome, 0) == metrics[metric], outcome
    assert len(changes) == int(experiment.stimulus_presentations.is_change.sum())


def test_a_passive_session_has_dprime_zero_and_sessions_without_responses_give_nan(experiment):
    """Passive: the reference's trials without licks or reward volume (AllenSDK then sets d' to 0, and the behavior
    figure draws no rates). No trials, or aborted trials only: NaN rates and d', where AllenSDK raises."""
    trials = experiment.trials
    assert not is_passive(trials)
    passive = trials.assign(reward_volume=0.0, lick_times=[np.array([])] * len(trials))
    assert is_passive(passive)
    rolling = rolling_performance(passive, 0.15)
    kept = ~trials.aborted.to_numpy()
    assert (rolling.rolling_dprime[kept] == 0).all() and rolling.rolling_dprime[~kept].isna().all()
    assert (experiment.get_rolling_performance_df().rolling_dprime[kept] != 0).any()
    no_rewards = experiment.rewards.iloc[:0]
    for name, table in (("no trials", trials.iloc[:0]), ("aborted only", trials.assign(aborted=True))):
        metrics = performance_metrics(table, no_rewards, 0.15)
        assert all(np.isnan(metrics[key]) for key in ("mean_hit_rate", "mean_false_alarm_rate", "mean_dprime",
                                                      "max_dprime")), name
        assert metrics["trial_count"] == len(table), name


def test_eye_tracking_equals_allensdk_and_is_empty_without_it(experiment, task_store, eye_nwb):
    with h5py.File(EYE_NWB, "r") as f:
        same_table(task.eye_tracking(f, WHERE), EYE_EXPECTED)
    store, summary = task_store(eye_nwb)
    assert summary["has_eye_tracking"]
    opened = open_experiment(store)
    eyes = opened.eye_tracking
    same_table(eyes, EYE_EXPECTED)
    assert eyes.likely_blink.sum() > 0 and eyes.pupil_area[eyes.likely_blink].isna().all()
    # In the Parquet file itself, a blink's pupil area is NaN as in the NWB, not a null (README: the task tables)
    stored = pq.read_table(store / task.TASK_DIR / "eye_tracking.parquet", columns=["pupil_area"]).column(0)
    assert stored.null_count == 0 and np.isnan(stored.to_numpy()).sum() == eyes.likely_blink.sum()
    # Number and bool columns of numpy dtype are declared without nulls (Parquet "required": no definition levels
    # written); text and pandas' nullable booleans keep theirs.
    for name in ("eye_tracking", "trials", "stimulus_presentations"):
        table = getattr(opened, name)
        dtypes = {**table.dtypes.to_dict(), table.index.name: table.index.dtype}
        schema = pq.read_schema(store / task.TASK_DIR / f"{name}.parquet")
        for field in schema:
            if field.name in dtypes:
                plain = isinstance(dtypes[field.name], np.dtype) and dtypes[field.name].kind in "fiub"
                assert field.nullable != plain, (name, field, dtypes[field.name])
        assert not schema.field("timestamps" if name == "eye_tracking" else "start_time").nullable
    empty = experiment.eye_tracking  # no eye tracking in the reference: AllenSDK's empty table
    assert empty.empty and list(empty.columns) == EYE_EXPECTED["columns"] and empty.index.name == "frame"



def test_blinks_grow_as_scipy_dilates_them_at_the_edges_too():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    masks = [rng.random(n) < p for n in (1, 2, 5, 300) for p in (0.02, 0.3)]
    masks += [np.array([True, False, False, False, True]), np.zeros(0, dtype=bool)]
    for mask in masks:
        for frames in (1, 2, 3, 9):
            assert np.array_equal(task.dilated(mask, frames), ndimage.binary_dilation(mask, iterations=frames)), (
                mask, frames)
        assert np.array_equal(task.dilated(mask, 0), mask)  # AllenSDK's dilation_frames=0: no dilation


def test_presentations_tables_stack_as_pandas_concat_stacks_them():
    """A column some presentations tables lack (the gray screens have no image_name or omitted) is NaN there, and its
    dtype follows pandas' rules; columns every table has keep theirs."""
    rows = [3, 2, 1]
    tables = [
        {"omitted": np.array([0.0, 1.0, 0.0]), "image_name": np.array(["a", "b", "a"], dtype=object),
         "index": np.array([1, 2, 3]), "shown": np.array([True, False, True]), "both": np.array([1, 2, 3])},
        {"both": np.array([4.5, 5.5]), "shown": np.array([False, True])},
        {"image_name": np.array(["c"], dtype=object), "omitted": np.array([1.0]), "both": np.array([6, 7])[:1]},
    ]
    stacked = task._stacked(tables, rows)
    expected = pd.concat([pd.DataFrame(table, index=range(n)) for table, n in zip(tables, rows)])
    assert list(stacked) == list(expected.columns)
    for name, values in stacked.items():
        assert values.dtype == expected[name].to_numpy().dtype, name
        np.testing.assert_array_equal(pd.isna(values), pd.isna(expected[name].to_numpy()), err_msg=name)
        known = ~pd.isna(values)
        np.testing.assert_array_equal(values[known], expected[name].to_numpy()[known], err_msg=name)
        assert [type(v) for v in values[~known]] == [type(v) for v in expected[name].to_numpy()[~known]], name

def test_float32_store_rounds_dff_and_keeps_events_as_published(task_store, experiment):
    single = open_experiment(task_store(REFERENCE, "float32")[0])
    group = zarr.open_group(single.path, mode="r")
    assert group["dff"].dtype == np.float32 and group["events"].dtype == np.float64
    exact = experiment.traces("dff")[1]
    assert single.traces("dff")[1].dtype == np.float64
    np.testing.assert_array_equal(single.traces("dff")[1], exact.astype(np.float32).astype(np.float64))
    # events are the file's bytes: AllenSDK's values, and the filter of them, whatever the store's dF/F precision
    for data_type in ("events", "filtered_events"):
        np.testing.assert_array_equal(single.traces(data_type)[1], experiment.traces(data_type)[1])
    assert single.stimulus_presentations.equals(experiment.stimulus_presentations)


def test_store_layout_for_zarr_and_xarray(task_store):
    store, _ = task_store(REFERENCE)
    ds = xr.open_zarr(store)
    assert ds.events.dims == ("time", "cell") and ds.events_lambda.dims == ("cell",)
    assert "filtered_events" not in ds.variables  # computed when read, as AllenSDK does
    assert set(ds.events.coords) >= {"time", "cell_roi_id", "cell_specimen_id", "valid_roi"}
    group = zarr.open_group(store, mode="r", use_consolidated=False)  # task/ is not a Zarr node, even unconsolidated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        members = dict(group.members())
    assert "task" not in members and "task" not in ds.variables
    with h5py.File(REFERENCE, "r") as f:  # the file's chunks, moved as they are (stacked in time), bit for bit
        data = f[task.NWB_EVENTS]["data"]
        assert group["events"].chunks == (16 * data.chunks[0], data.chunks[1]) and group["events"].shards == (21024, 12)
        np.testing.assert_array_equal(group["events"][...], data[...])
    assert group.attrs["has_task"] is True and group.attrs["n_trials"] == EXPECTED["trials"]["n_rows"]
    assert sorted(p.stem for p in (store / task.TASK_DIR).glob("*.parquet")) == sorted(group.attrs["task_tables"])
    assert group.attrs["task_parameters"]["response_window_sec"] == [0.15, 0.75]
    assert group["max_projection"].attrs["unit"] == "mm"


def test_traces_fast_path(experiment):
    timestamps, values, specimen_ids, roi_ids = experiment.traces("dff")
    assert timestamps.dtype == values.dtype == np.float64 and specimen_ids.dtype == roi_ids.dtype == np.int64
    assert values.shape == (len(timestamps), len(roi_ids)) == (21012, 12)
    np.testing.assert_array_equal(values.T, np.stack(experiment.dff_traces.dff.to_list()))
    unmatched = experiment.dff_traces.index.isna()
    assert (specimen_ids[unmatched] == -1).all()
    assert (specimen_ids[~unmatched] == experiment.dff_traces.index[~unmatched]).all()
    _, filtered, _, event_roi_ids = experiment.traces("filtered_events")
    np.testing.assert_array_equal(filtered.T, np.stack(experiment.events.filtered_events.to_list()))
    assert event_roi_ids.tolist() == experiment.events.cell_roi_id.tolist()
    with pytest.raises(ValueError, match="data_type"):
        experiment.traces("neuropil")


# ---- files without a task, the ophys-only reference, ROIs without events ---------------------------------------------


def test_a_file_without_a_task_gives_has_task_false(tmp_path, task_store, caplog):
    nwb = tmp_path / "no_task.nwb"
    shutil.copyfile(OPHYS_REFERENCE, nwb)
    with h5py.File(nwb, "r+") as f:
        del f["intervals"]
    with caplog.at_level(logging.WARNING, logger="vb2p.task"):
        store, summary = task_store(nwb)
    assert summary["has_task"] is False and summary["n_trials"] == 0 and summary["n_event_rois"] == 12
    assert any(f"experiment {REFERENCE_ID}" in r.message and "no task" in r.message for r in caplog.records)
    experiment = open_experiment(store)
    assert experiment.has_task is False and not (store / task.TASK_DIR).exists()
    assert len(experiment.events) == 12 and experiment.eye_tracking.empty
    with pytest.raises(NwbError, match=f"experiment {REFERENCE_ID} has no task"):
        experiment.trials
    # The same through the session's task, as the workflow runs it.
    record = extract_session_task(nwb, tmp_path / "task", REFERENCE_ID, session_of(nwb))
    assert record["has_task"] is False and record["task_tables"] == [] and record["fingerprint"] is None
    extract_experiment(nwb, tmp_path / "via_session.zarr", REFERENCE_ID, session_task=tmp_path / "task")
    assert task_attributes(tmp_path / "via_session.zarr") == task_attributes(store)
    assert not (tmp_path / "via_session.zarr" / task.TASK_DIR).exists()


def test_the_ophys_only_reference_holds_a_small_task_read_as_allensdk_does(task_store):
    """ref_scientifica.nwb is not task-free: AllenSDK's writer put 98 flashes and 10 trials in it, with lick_times
    written flat (one lick per trial) and presentations carrying both stop_time and end_time."""
    store, summary = task_store(OPHYS_REFERENCE)
    assert summary["has_task"] and summary["n_stimulus_presentations"] == 98 and summary["n_trials"] == 10
    experiment = open_experiment(store)
    assert list(experiment.stimulus_presentations.columns).count("end_time") == 2  # as AllenSDK
    assert experiment.trials.lick_times.dtype == np.float64  # as AllenSDK: a float per trial
    assert experiment.get_performance_metrics()["hit_trial_count"] == int(experiment.trials.hit.sum())


# ---- one task per session -------------------------------------------------------------------------------------------


def session_of(nwb) -> int:
    with h5py.File(nwb, "r") as f:
        return int(f[layout.NWB_METADATA].attrs["ophys_session_id"])


def task_attributes(store) -> dict:
    attrs = zarr.open_group(store, mode="r").attrs.asdict()
    return {key: attrs[key] for key in (*task.task_counts({}), "n_event_rois", "task_tables", "task_parameters")}


@pytest.mark.parametrize("nwb_name", ["reference", "with_eye_tracking", "ophys_only"])
def test_a_store_takes_its_sessions_task_as_it_would_read_it_itself(tmp_path, task_store, eye_nwb, nwb_name):
    """The workflow's path (rule session_task, then each plane with it) gives the stores the by-itself extraction
    gives, which the tests above hold to AllenSDK; the tables are the session's files, hard-linked."""
    nwb = {"reference": REFERENCE, "with_eye_tracking": eye_nwb, "ophys_only": OPHYS_REFERENCE}[nwb_name]
    alone, _ = task_store(nwb)
    experiment_id = int(zarr.open_group(alone, mode="r").attrs["ophys_experiment_id"])
    session_dir = tmp_path / "task" / str(session_of(nwb))
    record = extract_session_task(nwb, session_dir, experiment_id, session_of(nwb))
    assert record["task_tables"] == task_attributes(alone)["task_tables"] and record["ophys_experiment_id"] == experiment_id
    assert not list(session_dir.parent.glob(".*partial"))
    store = tmp_path / f"{experiment_id}.zarr"
    extract_experiment(nwb, store, experiment_id, session_task=session_dir)
    assert task_attributes(store) == task_attributes(alone)
    assert ("eye_tracking" in record["task_tables"]) == (nwb_name == "with_eye_tracking")
    for name in record["task_tables"]:
        path = store / task.TASK_DIR / f"{name}.parquet"
        assert path.stat().st_ino == (session_dir / f"{name}.parquet").stat().st_ino  # one file, not a copy
        pd.testing.assert_frame_equal(task.read_stored_table(store, name), task.read_stored_table(alone, name))


def test_a_plane_whose_task_differs_from_its_sessions_reads_its_own(tmp_path, caplog):
    """No silent wrong result: a file of another session, or of the same session with other trials (a reprocessed
    file), is not given the session's tables; its own are read, and the log says why."""
    session = session_of(REFERENCE)
    session_dir = tmp_path / "task"
    extract_session_task(REFERENCE, session_dir, REFERENCE_ID, session)
    other_trials, other_session = tmp_path / "other_trials.nwb", tmp_path / "other_session.nwb"
    for path in (other_trials, other_session):
        shutil.copyfile(REFERENCE, path)
    with h5py.File(other_trials, "r+") as f:
        f[task.NWB_TRIALS]["start_time"][-1] += 0.5
    with h5py.File(other_session, "r+") as f:
        f[layout.NWB_METADATA].attrs["ophys_session_id"] = session + 1
    for nwb, why in ((other_trials, "differs from this file's task"), (other_session, f"of session {session}, this")):
        store = tmp_path / f"{nwb.stem}.zarr"
        with caplog.at_level(logging.WARNING, logger="vb2p.task"):
            extract_experiment(nwb, store, REFERENCE_ID, session_task=session_dir)
        assert any(WHERE in r.message and why in r.message and "own task" in r.message for r in caplog.records), why
        assert (store / task.TASK_DIR / "trials.parquet").stat().st_ino != (session_dir / "trials.parquet").stat().st_ino
    trials = task.read_stored_table(tmp_path / "other_trials.zarr", "trials")
    assert trials.start_time.iloc[-1] == pd.read_parquet(session_dir / "trials.parquet").start_time.iloc[-1] + 0.5


def test_a_session_task_from_a_file_of_another_session_or_experiment_fails(tmp_path):
    session = session_of(REFERENCE)
    with pytest.raises(NwbError, match=f"{WHERE} of session {session + 1} .*ophys_session_id is {session}"):
        extract_session_task(REFERENCE, tmp_path / "task", REFERENCE_ID, session + 1)
    with pytest.raises(NwbError, match=f"experiment 5 of session {session} .*ophys_experiment_id is {REFERENCE_ID}"):
        extract_session_task(REFERENCE, tmp_path / "task", 5, session)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_file_that_states_no_ids_or_a_session_task_without_its_record_fails(tmp_path, task_store):
    """A file whose metadata states no ids cannot be told to be the experiment's (it was stored under the asked id);
    a session task directory without its record is named, not the NWB file."""
    session = session_of(REFERENCE)
    nwb = tmp_path / "no_ids.nwb"
    shutil.copyfile(REFERENCE, nwb)
    with h5py.File(nwb, "r+") as f:
        del f[layout.NWB_METADATA].attrs["ophys_experiment_id"]
    with pytest.raises(NwbError, match=f"{WHERE} .*states no ophys_experiment_id.*download the file again"):
        extract_experiment(nwb, tmp_path / "store.zarr", REFERENCE_ID)
    with pytest.raises(NwbError, match="states no ophys_experiment_id"):
        extract_session_task(nwb, tmp_path / "task", REFERENCE_ID, session)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["no_ids.nwb"]
    unfinished = tmp_path / "unfinished_task"
    unfinished.mkdir()
    with pytest.raises(NwbError, match=f"{unfinished} has no session_task.json.*run that step again"):
        extract_experiment(REFERENCE, tmp_path / "store.zarr", REFERENCE_ID, session_task=unfinished)
    assert not (tmp_path / "store.zarr").exists()


@pytest.mark.parametrize(("dataset", "label"), [
    (f"{task.NWB_RUNNING}/speed/data", "data"), (f"{task.NWB_LICKS}/data", "data"),
    (f"{task.NWB_REWARDS}/volume/data", "volume"),
    (f"{task.NWB_EYE_TRACKING}/pupil_tracking/width", "pupil_tracking/width"), (f"{task.NWB_EVENTS}/lambdas", "lambdas"),
])
def test_datasets_of_the_same_samples_differing_in_length_fail_naming_them(tmp_path, eye_nwb, dataset, label):
    nwb = tmp_path / "shorter.nwb"
    shutil.copyfile(eye_nwb, nwb)
    group, name = dataset.rsplit("/", 1)
    with h5py.File(nwb, "r+") as f:
        _replace(f[group], name, f[dataset][:-3])
    with pytest.raises(NwbError, match=f"experiment {REFERENCE_ID} .*differ in length .*{label} ") as error:
        extract_experiment(nwb, tmp_path / "store.zarr", REFERENCE_ID)
    assert "corrupt: download it again" in str(error.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["shorter.nwb"]


def _replace(group: h5py.Group, name: str, data) -> None:
    attrs = dict(group[name].attrs)
    del group[name]
    group.create_dataset(name, data=data)
    group[name].attrs.update(attrs)


def test_rois_without_events_are_left_out_as_allensdk_does(tmp_path, task_store, caplog):
    nwb = tmp_path / "fewer_events.nwb"
    shutil.copyfile(REFERENCE, nwb)
    with h5py.File(nwb, "r+") as f:
        detection = f[task.NWB_EVENTS]
        kept = np.array([k for k in range(12) if k != 4])
        _replace(detection, "data", detection["data"][:][:, kept])
        for name in ("rois", "lambdas", "noise_stds"):
            _replace(detection, name, detection[name][:][kept])
    with caplog.at_level(logging.WARNING, logger="vb2p.task"):
        store, summary = task_store(nwb)
    assert summary["n_event_rois"] == 11 and any("1 valid ROIs have no events" in r.message for r in caplog.records)
    experiment = open_experiment(store)
    missing = experiment.dff_traces.cell_roi_id.iloc[4]
    assert missing not in experiment.events.cell_roi_id.tolist() and len(experiment.events) == 11
    assert experiment.traces("events")[1].shape[1] == 11 and experiment.traces("dff")[1].shape[1] == 12
    reference = open_experiment(task_store(REFERENCE)[0]).events
    pd.testing.assert_frame_equal(experiment.events[["cell_roi_id", "lambda"]],
                                  reference[reference.cell_roi_id != missing][["cell_roi_id", "lambda"]])
    # Read and written again (the columns are not dff's): the same array layout, NaN for the ROI without events.
    stored, moved = zarr.open_group(store, mode="r")["events"], zarr.open_group(task_store(REFERENCE)[0])["events"]
    assert stored.shards and stored.metadata.codecs[0].codecs == moved.metadata.codecs[0].codecs  # Blosc zlib
    assert np.isnan(stored[:, 4]).all() and np.array_equal(np.delete(stored[...], 4, axis=1),
                                                          np.delete(moved[...], 4, axis=1))


# ---- bad input -------------------------------------------------------------------------------------------------------


@pytest.fixture
def intervals(tmp_path):
    """A small HDF5 file holding the reference's /intervals, to break."""
    path = tmp_path / "intervals.nwb"
    with h5py.File(REFERENCE, "r") as source, h5py.File(path, "w") as target:
        source.copy(source["intervals"], target)
    return path


def test_a_missing_required_column_names_experiment_table_and_column(intervals):
    with h5py.File(intervals, "r+") as f:
        table = f[task.NWB_TRIALS]
        table.attrs["colnames"] = [c for c in table.attrs["colnames"] if c != "hit"]
        del table["hit"]
    with h5py.File(intervals, "r") as f, pytest.raises(NwbError) as error:
        task.trials(f, WHERE)
    assert all(text in str(error.value) for text in (WHERE, task.NWB_TRIALS, "hit"))
    with h5py.File(intervals, "r+") as f:
        for name in f["intervals"]:
            if name.endswith("_presentations") and "omitted" in f["intervals"][name]:
                table = f["intervals"][name]
                table.attrs["colnames"] = [c for c in table.attrs["colnames"] if c != "omitted"]
    with h5py.File(intervals, "r") as f, pytest.raises(NwbError, match=f"{WHERE}: .*presentations.* omitted"):
        task.stimulus_presentations(f, WHERE)


def test_start_times_not_increasing_name_experiment_and_table(intervals):
    with h5py.File(intervals, "r+") as f:
        start = f[task.NWB_TRIALS]["start_time"]
        values = start[:]
        values[[3, 4]] = values[[4, 3]]
        start[...] = values
    with h5py.File(intervals, "r") as f, pytest.raises(NwbError) as error:
        task.trials(f, WHERE)
    expected = (WHERE, task.NWB_TRIALS, "start_time is not increasing", "at row 4")
    assert all(text in str(error.value) for text in expected)
    with h5py.File(intervals, "r+") as f:
        values[[3, 4]] = values[[4, 3]]
        values[0] = np.nan
        f[task.NWB_TRIALS]["start_time"][...] = values
    with h5py.File(intervals, "r") as f, pytest.raises(NwbError, match="not finite.* at row 0 .*download it again"):
        task.trials(f, WHERE)


def test_a_task_table_without_rows_is_said(intervals, caplog):
    """No image flashes with trials (AllenSDK raises a TypeError there): the store would have a task without
    changes, so the log says which table is empty."""
    with h5py.File(intervals, "r") as f:
        images = next(name for name in f["intervals"] if name.endswith("_presentations") and "spontaneous" not in name)
    with h5py.File(intervals, "r+") as f:
        table = f["intervals"][images]
        for name in list(table):
            _replace(table, name, table[name][:0])
    with h5py.File(intervals, "r") as f, caplog.at_level(logging.WARNING, logger="vb2p.task"):
        presentations = task.stimulus_presentations(f, WHERE)
    assert not presentations.is_change.any()
    assert [r.message for r in caplog.records] == [f"{WHERE}: table /intervals/{images} has no rows"]


def test_a_ragged_index_out_of_range_names_experiment_table_and_column(intervals):
    with h5py.File(intervals, "r+") as f:
        index = f[task.NWB_TRIALS]["lick_times_index"]
        values = index[:]
        values[-1] = len(f[task.NWB_TRIALS]["lick_times"]) + 5
        index[...] = values
    with h5py.File(intervals, "r") as f, pytest.raises(NwbError) as error:
        task.trials(f, WHERE)
    assert all(text in str(error.value) for text in (WHERE, task.NWB_TRIALS, "lick_times_index", "out of range"))


def test_open_experiment_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(NwbError, match=f"{tmp_path / 'missing.zarr'} is not an experiment store"):
        open_experiment(tmp_path / "missing.zarr")


# ---- live against AllenSDK 2.16.2 (.venv-allensdk) -------------------------------------------------------------------


def allensdk_task(*args) -> dict:
    if not (ALLENSDK_VENV / ".installed").exists():
        failure = REPO / ".venv-allensdk-failed.log"
        reason = failure.read_text()[-500:] if failure.exists() else "run `make test` to create .venv-allensdk"
        pytest.skip(f"AllenSDK 2.16.2 venv is not installed: {reason}")
    result = subprocess.run([str(ALLENSDK_VENV / "bin" / "python"), str(PEER), *map(str, args)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_equals_allensdk(ours, nwb, work) -> None:
    """Every attribute of our experiment equals what AllenSDK's from_nwb_path returns for the same file."""
    theirs = allensdk_task("read", nwb, work / "allensdk.npz")
    kind = {"int64": "int", "float64": "float", "int": "int"}
    arrays = np.load(work / "allensdk.npz")
    same_table(ours.stimulus_presentations, theirs["stimulus_presentations"], presentations=True)
    for name in ("trials", "licks", "rewards", "eye_tracking", "dff_traces", "events", "cell_specimen_table"):
        table = getattr(ours, name)
        same_table(table.drop(columns=["dff", "events", "filtered_events", "roi_mask"], errors="ignore"), theirs[name])
    for name in ("running_speed", "raw_running_speed"):
        table = getattr(ours, name)
        same_table(table.head(0), {k: v for k, v in theirs[name].items() if k not in ("length", "index_type")})
        assert len(table) == theirs[name]["length"] and type(table.index).__name__ == theirs[name]["index_type"]
        for column in table.columns:
            np.testing.assert_array_equal(table[column].to_numpy(), arrays[f"{name}.{column}"])
    for name in ("ophys_timestamps", "stimulus_timestamps"):
        np.testing.assert_array_equal(getattr(ours, name), arrays[name])
    np.testing.assert_array_equal(np.stack(ours.dff_traces.dff.to_list()), arrays["dff"])
    np.testing.assert_array_equal(np.stack(ours.events.events.to_list()), arrays["events"])
    np.testing.assert_allclose(np.stack(ours.events.filtered_events.to_list()), arrays["filtered_events"], rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_array_equal(np.stack(ours.cell_specimen_table.roi_mask.to_list()), arrays["roi_mask"])
    for name in ("max_projection", "average_projection"):
        image = getattr(ours, name)
        assert list(image.spacing) == theirs["images"][name]["spacing"] and image.unit == theirs["images"][name]["unit"]
        np.testing.assert_array_equal(np.asarray(image), arrays[name])
    for name, value in theirs["ids"].items():
        assert getattr(ours, name) == value["value"] and kind[value["type"]] == type(getattr(ours, name)).__name__
    assert typed_json(ours.task_parameters) == theirs["task_parameters"]
    assert list(ours.task_parameters) == list(theirs["task_parameters"])
    assert value_json(ours.get_cell_specimen_ids()) == theirs["cell_specimen_ids"]
    matched = theirs["cell_specimen_indices"]
    assert matched["ids"] and ours.get_cell_specimen_indices(matched["ids"]) == matched["rows"]
    same_table(ours.roi_masks.drop(columns="roi_mask"), theirs["roi_masks"])
    np.testing.assert_array_equal(ours.get_reward_rate(), arrays["reward_rate"])
    for key, value in theirs["metadata"].items():
        mine = ours.metadata[key]
        assert kind.get(value["type"], value["type"]) == type(mine).__name__, key
        assert (str(mine) if value["type"] in ("UUID", "datetime") else value_json(mine)) == value["value"], key
    assert list(ours.metadata) == list(theirs["metadata"])
    same_metrics(ours.get_performance_metrics(), theirs["performance_metrics"])
    rolling = table_json(ours.get_rolling_performance_df())
    assert rolling["columns"] == theirs["rolling_performance"]["columns"]
    for column, values in theirs["rolling_performance"]["values"].items():
        np.testing.assert_allclose(np.array(rolling["values"][column], dtype=float), np.array(values, dtype=float),
                                   rtol=1e-12)


def test_live_every_attribute_equals_allensdk(tmp_path, task_store, eye_nwb):
    assert_equals_allensdk(open_experiment(task_store(eye_nwb)[0]), eye_nwb, tmp_path)


def test_live_a_mesoscope_demo_plane_equals_allensdk(tmp_path, task_store, demo_root):
    """A plane of a multi-plane session (metadata imaging_plane_group), written by the demo generator."""
    experiments = pd.read_csv(demo_root / layout.metadata_key("ophys_experiment_table"))
    mesoscope = experiments[experiments.equipment_name == "MESO.1"].ophys_experiment_id
    nwb = demo_root / layout.experiment_key(mesoscope.iloc[0])
    with h5py.File(nwb, "r") as f:
        if not task.has_task(f):
            pytest.skip("the demo release's files carry no task (demo generator without one)")
    ours = open_experiment(task_store(nwb)[0])
    assert ours.metadata["imaging_plane_group_count"] > 1 and ours.metadata["imaging_plane_group"] is not None
    assert_equals_allensdk(ours, nwb, tmp_path)


def test_live_ophys_only_reference_tables_equal_allensdk(tmp_path, task_store):
    theirs = allensdk_task("read", OPHYS_REFERENCE, tmp_path / "allensdk.npz")
    ours = open_experiment(task_store(OPHYS_REFERENCE)[0])
    assert theirs["performance_error"].startswith("TypeError")  # AllenSDK cannot rate this session; we can
    same_table(ours.stimulus_presentations, theirs["stimulus_presentations"], presentations=True)
    for name in ("trials", "licks", "rewards", "eye_tracking"):
        same_table(getattr(ours, name), theirs[name])
