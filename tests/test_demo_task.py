"""The change-detection task inside the demo experiment files, against the ground truth written beside the release:
the HDF5 content read with h5py here, and what AllenSDK 2.16.2's own reader returns (tests/allensdk_demo_peer.py in
.venv-allensdk; those tests skip, saying why, when that venv is absent)."""

from __future__ import annotations

import json
import subprocess

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SMALL
from scipy import signal
from test_demo_release import one_file_per_kind

from vb2p import layout
from vb2p.demo.design import MIN_ROIS_PER_PLANE, RESPONSE_TYPES, DemoSize, design_release
from vb2p.demo.task import (
    FLASH_FRAMES,
    IMAGE_FRAMES,
    IMAGE_SETS,
    RESPONSE_WINDOW_S,
    STIMULUS_FRAME_RATE_HZ,
    plan_session_task,
    stimulus_presentations,
)
from vb2p.demo.traces import kernel_coefficients
from vb2p.errors import ConfigError

ALLENSDK_VENV = REPO / ".venv-allensdk"
PEER = REPO / "tests" / "allensdk_demo_peer.py"
NOT_A_COLUMN = ("tags", "tags_index", "timeseries", "timeseries_index", "id")


# --- reading the files and the ground truth ---------------------------------------------------------------------


def text(values) -> list:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def read_table(group: h5py.Group) -> pd.DataFrame:
    """An NWB DynamicTable as written (ragged columns as arrays per row)."""
    columns = {}
    for name in text(group.attrs["colnames"]):
        if name in NOT_A_COLUMN:
            continue
        values = group[name][:]
        if f"{name}_index" in group:
            ends = group[f"{name}_index"][:]
            values = np.split(values, ends[:-1])
        columns[name] = text(values) if values[0].__class__ is bytes else list(values)
    return pd.DataFrame(columns)


def read_presentations(f: h5py.File) -> pd.DataFrame:
    tables = [read_table(group) for name, group in f["intervals"].items() if name.endswith("_presentations")]
    return pd.concat(tables).sort_values("start_time", ignore_index=True)


def experiment_files(root):
    return sorted((root / layout.EXPERIMENT_DIR).glob("*.nwb"))


def experiment_id(path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


@pytest.fixture(scope="module")
def truth(demo_dir):
    folder = demo_dir / "ground_truth"
    return {name: pd.read_csv(folder / f"{name}.csv")
            for name in ("stimulus_presentations", "trials", "licks", "rewards", "cell_responses")}


@pytest.fixture(scope="module")
def experiments(demo_root):
    table = pd.read_csv(demo_root / layout.metadata_key("ophys_experiment_table"))
    return table.set_index("ophys_experiment_id")


def session_truth(truth, name, behavior_session_id) -> pd.DataFrame:
    table = truth[name]
    return table[table.behavior_session_id == behavior_session_id].reset_index(drop=True)


# --- the task in the HDF5 files -----------------------------------------------------------------------------------


def test_presentations_in_every_file_are_the_ground_truth(demo_root, truth, experiments):
    for path in experiment_files(demo_root):
        session_id = experiments.loc[experiment_id(path), "behavior_session_id"]
        expected = session_truth(truth, "stimulus_presentations", session_id)
        with h5py.File(path, "r") as f:
            shown = read_presentations(f)
            stimulus_times = f["processing/stimulus/timestamps/timestamps"][:]
        assert len(shown) == len(expected), path
        for column in ("stimulus_block", "start_frame", "end_frame", "trials_id"):
            np.testing.assert_array_equal(shown[column], expected[column], err_msg=column)
        for column in ("is_change", "is_sham_change", "active"):
            np.testing.assert_array_equal(shown[column].astype(bool), expected[column], err_msg=column)
        np.testing.assert_allclose(shown.start_time, expected.start_time, atol=1e-8)
        np.testing.assert_allclose(shown.stop_time, expected.stop_time, atol=1e-8)
        flashes = shown.stimulus_block == 1
        assert shown.image_name[flashes].tolist() == expected.image_name[flashes].tolist()
        # Omitted is stored as 0/1 floats (AllenSDK's nullable-boolean convention), missing on the gray screens.
        np.testing.assert_array_equal(shown.omitted[flashes].astype(bool), expected.omitted[flashes])
        assert shown.omitted[~flashes].isna().all() and shown.stimulus_name[~flashes].eq("spontaneous").all()
        # Presentations start at their display frame on the stimulus clock (monitor delay included).
        np.testing.assert_allclose(shown.start_time, stimulus_times[shown.start_frame], atol=1e-9)


def test_flashes_are_250_ms_images_every_750_ms_with_changes_and_about_5_percent_omissions():
    design = design_release(0, DemoSize())  # the default demo's sessions, planned without writing files
    for session in (s for s in design.sessions if s.is_ophys):
        task = plan_session_task(design, session)
        flashes = task.flashes
        assert (np.diff(flashes.start_frame) == FLASH_FRAMES).all()
        assert (flashes.end_frame - flashes.start_frame == IMAGE_FRAMES).all()
        assert 0.03 <= flashes.omitted.mean() <= 0.07, session.session_type
        shown = flashes[~flashes.omitted]
        # A change is exactly where the image differs from the last image shown.
        changed = shown.image_name.ne(shown.image_name.shift()) & (shown.index > 0)
        assert changed.tolist() == shown.is_change.tolist()
        assert flashes.is_change.sum() >= 60 and flashes.is_sham_change.sum() >= 5
        # Omissions never fall on a change or sham change, next to one, or twice in a row.
        special = np.flatnonzero(flashes.is_change | flashes.is_sham_change)
        near = np.unique(np.concatenate([special - 1, special, special + 1]))
        assert not flashes.omitted.iloc[near[near < len(flashes)]].any()
        assert not (flashes.omitted & flashes.omitted.shift(fill_value=False)).any()
        assert set(flashes.image_name) - {"omitted"} <= set(IMAGE_SETS[session.image_set[-1]])


def test_gray_screens_frame_the_task_and_last_5_minutes_in_the_default_demo(demo_root):
    assert DemoSize().gray_screen_s == 300.0 and SMALL.gray_screen_s == SMALL.duration_s
    assert DemoSize(duration_s=4000.0).gray_screen_s == 300.0
    design = design_release(0, DemoSize())
    session = next(s for s in design.sessions if s.is_ophys)
    presentations = stimulus_presentations(plan_session_task(design, session))
    gray = presentations[presentations.stimulus_name == "spontaneous"]
    assert gray.stimulus_block.tolist() == [0, 2] and (gray.duration > 299.0).all()
    assert gray.index.tolist() == [0, len(presentations) - 1]
    with h5py.File(experiment_files(demo_root)[0], "r") as f:
        gray = read_table(f["intervals/spontaneous_presentations"])
    assert gray.stimulus_block_name.tolist() == ["initial_gray_screen_5min", "post_behavior_gray_screen_5min"]
    np.testing.assert_allclose(gray.stop_time - gray.start_time, SMALL.gray_screen_s, atol=0.1)


def test_too_short_a_task_is_refused_naming_the_knob():
    with pytest.raises(ConfigError, match="duration_s"):
        DemoSize(duration_s=5.0)


def test_trials_are_the_ground_truth_and_the_table_counts(demo_root, truth, experiments):
    behavior = pd.read_csv(demo_root / layout.metadata_key("behavior_session_table")).set_index("behavior_session_id")
    for path in experiment_files(demo_root):
        session_id = experiments.loc[experiment_id(path), "behavior_session_id"]
        expected = session_truth(truth, "trials", session_id)
        with h5py.File(path, "r") as f:
            trials = read_table(f["intervals/trials"])
            stimulus_times = f["processing/stimulus/timestamps/timestamps"][:]
            licks = f["processing/licking/licks/timestamps"][:] if "licking" in f["processing"] else np.empty(0)
        kinds = trials[["go", "catch", "aborted", "auto_rewarded"]].astype(int)
        assert (kinds.sum(axis=1) == 1).all()  # every trial is of exactly one kind
        for column in ("go", "catch", "aborted", "auto_rewarded", "hit", "miss", "false_alarm", "correct_reject"):
            assert trials[column].astype(bool).tolist() == expected[column].tolist(), column
        for column in ("start_time", "stop_time", "change_time", "response_time", "reward_time", "response_latency"):
            np.testing.assert_allclose(trials[column], expected[column], atol=1e-8, err_msg=column)
        assert (trials.hit | trials.miss).tolist() == trials.go.tolist()
        assert (trials.false_alarm | trials.correct_reject).tolist() == trials["catch"].tolist()
        changed = trials[~trials.aborted]
        np.testing.assert_allclose(changed.change_time, stimulus_times[changed.change_frame], atol=1e-9)
        hits = trials[trials.hit]
        assert hits.response_latency.between(*RESPONSE_WINDOW_S).all()
        np.testing.assert_allclose(hits.reward_time, hits.response_time)
        # lick_times are the licks inside each trial.
        for row in trials.itertuples():
            inside = licks[(licks >= row.start_time) & (licks < row.stop_time)]
            np.testing.assert_array_equal(row.lick_times, inside)
        counts = behavior.loc[session_id]
        assert counts.trial_count == len(trials) and counts.go_trial_count == trials.go.sum()
        assert counts.hit_trial_count == trials.hit.sum() and counts.catch_trial_count == trials["catch"].sum()
        assert counts.false_alarm_trial_count == trials.false_alarm.sum()


def test_licks_and_rewards_are_the_ground_truth_and_passive_sessions_have_none(demo_root, truth, experiments):
    saw = set()
    for path in experiment_files(demo_root):
        row = experiments.loc[experiment_id(path)]
        licks = session_truth(truth, "licks", row.behavior_session_id)
        rewards = session_truth(truth, "rewards", row.behavior_session_id)
        with h5py.File(path, "r") as f:
            modules = set(f["processing"])
            trials = read_table(f["intervals/trials"])
            if row.passive:
                assert not {"licking", "rewards"} & modules and licks.empty and rewards.empty
                assert not (trials.hit.any() or trials.false_alarm.any() or trials.auto_rewarded.any())
                saw.add("passive")
                continue
            np.testing.assert_array_equal(f["processing/licking/licks/data"][:], licks.frame)
            np.testing.assert_allclose(f["processing/licking/licks/timestamps"][:], licks.timestamps, atol=1e-8)
            np.testing.assert_allclose(f["processing/rewards/volume/timestamps"][:], rewards.timestamps, atol=1e-8)
            np.testing.assert_allclose(f["processing/rewards/volume/data"][:], rewards.volume)
            np.testing.assert_array_equal(f["processing/rewards/autorewarded/data"][:], rewards.auto_rewarded)
            # Licks sit on the display-frame clock without the monitor delay, as AllenSDK writes them.
            frame_times = f["processing/running/speed/timestamps"][:]
            np.testing.assert_allclose(licks.timestamps, frame_times[licks.frame], atol=1e-8)
            saw.add("active")
    assert saw == {"active", "passive"}


def test_image_sets_novelty_and_templates_follow_the_session_type(demo_root, experiments):
    for path in experiment_files(demo_root):
        row = experiments.loc[experiment_id(path)]
        letter = row.session_type.split("_images_")[1][0]
        with h5py.File(path, "r") as f:
            flashes = read_presentations(f).query("stimulus_block == 1")
            (template,) = f["stimulus/templates"].values()
            names = text(template["control_description"][:])
            assert template.attrs["neurodata_type"] == "StimulusTemplate"
            assert template["data"].shape[0] == template["unwarped"].shape[0] == 8
            parameters = f["general/task_parameters"].attrs
            assert parameters["session_type"] == row.session_type and parameters["stimulus"] == "images"
        assert names == list(IMAGE_SETS[letter]) and row.image_set == letter
        shown = flashes[flashes.omitted == 0]
        assert set(shown.image_name) <= set(names)
        assert (shown.is_image_novel == 1).all() == row.experience_level.startswith("Novel")
        assert (shown.is_image_novel == 0).all() == (row.experience_level == "Familiar")
        assert flashes.is_image_novel[flashes.omitted == 1].isna().all()


def test_running_eye_tracking_and_stimulus_clock(demo_root, experiments):
    eye_by_session: dict[int, set[bool]] = {}
    for path in experiment_files(demo_root):
        with h5py.File(path, "r") as f:
            n_frames = int(f["general/task_parameters"].attrs["n_stimulus_frames"])
            stimulus_times = f["processing/stimulus/timestamps/timestamps"][:]
            frame_times = f["processing/running/speed/timestamps"][:]
            assert len(stimulus_times) == n_frames and len(f["acquisition/v_sig/data"]) == n_frames
            delay = stimulus_times - frame_times
            assert np.ptp(delay) < 1e-9 and 0.01 < delay[0] < 0.05  # one monitor delay
            assert abs(1 / np.median(np.diff(frame_times)) - STIMULUS_FRAME_RATE_HZ) < 0.1
            speed = f["processing/running/speed/data"][:]
            assert 5 < np.mean(speed) < 40 and f["processing/running/dx"].attrs["neurodata_type"] == "TimeSeries"
            has_eye = "EyeTracking" in f["acquisition"]
            if has_eye:
                assert f["acquisition/EyeTracking"].attrs["neurodata_type"] == "EllipseEyeTracking"
                assert "eye_tracking_rig_metadata" in f["processing"]
        eye_by_session.setdefault(experiments.loc[experiment_id(path), "ophys_session_id"], set()).add(has_eye)
    assert all(len(kinds) == 1 for kinds in eye_by_session.values())  # every plane of a session alike
    with_eye = [kinds == {True} for kinds in eye_by_session.values()]
    assert 0.5 <= np.mean(with_eye) < 1.0  # most sessions, as in the release, but not all


# --- the cells ----------------------------------------------------------------------------------------------------


def test_ground_truth_lists_every_roi_and_matched_neurons_keep_their_response(demo_root, truth):
    cells = truth["cell_responses"]
    for path in experiment_files(demo_root):
        with h5py.File(path, "r") as f:
            roi_ids = f[layout.NWB_CELL_TABLE]["id"][:]
        rows = cells[cells.ophys_experiment_id == experiment_id(path)]
        assert rows.cell_roi_id.tolist() == roi_ids.tolist()
    # Every container's neurons have known answers of each kind (a session sees 90 % of them).
    matched = cells[cells.cell_specimen_id != -1]
    for _, neurons in matched.groupby("ophys_container_id"):
        assert neurons.cell_specimen_id.nunique() >= MIN_ROIS_PER_PLANE
        assert set(neurons.response_type) == set(RESPONSE_TYPES)
    assert (cells.response_type[~cells.valid_roi] == "none").all()
    per_neuron = matched.groupby("cell_specimen_id").agg(types=("response_type", "nunique"),
                                                         amplitudes=("amplitude", "nunique"))
    assert (per_neuron.types == 1).all() and (per_neuron.amplitudes == 1).all()
    images = matched[matched.response_type == "image"].copy()
    images["image_set"] = images.preferred_image.map({n: s for s, names in IMAGE_SETS.items() for n in names
                                                      if s in "AB"})
    assert (images.groupby(["cell_specimen_id", "image_set"]).preferred_image.nunique() == 1).all()


def test_dff_is_the_events_filtered_by_each_cells_indicator_kernel_plus_noise(demo_root, truth, experiments):
    cells = truth["cell_responses"].set_index("cell_roi_id")
    for path in experiment_files(demo_root)[::5]:
        with h5py.File(path, "r") as f:
            dff = f[layout.NWB_DFF][:]
            detection = f["processing/ophys/event_detection"]
            events = detection["data"][:]
            assert detection.attrs["neurodata_type"] == "OphysEventDetection" and detection["data"].compression
            noise_stds = detection["noise_stds"][:]
            roi_ids = f[layout.NWB_CELL_TABLE]["id"][:]
            rate = f[layout.NWB_IMAGING_PLANE]["imaging_rate"][()]
        rate = {31.0: 30.94, 11.0: 10.72}[rate]  # the true frame rates behind the rounded attribute
        assert events.shape == dff.shape and (events >= 0).all() and (events > 0).any(axis=0).all()
        truth_rows = cells.loc[roi_ids]
        np.testing.assert_allclose(noise_stds, truth_rows.noise_sd, atol=1e-6)
        for roi, row in enumerate(truth_rows.itertuples()):
            b, a = kernel_coefficients(rate, row.rise_s, row.decay_s)
            residual = dff[:, roi] - signal.lfilter(b, a, events[:, roi])
            assert abs(residual.std() / row.noise_sd - 1) < 0.1 and abs(residual.mean()) < 0.01


def mean_response(times: np.ndarray, dff: np.ndarray, onsets, baseline: np.ndarray, window=(0.05, 0.6)):
    """Per ROI: mean dF/F in the window after the onsets, above the ROI's mean on the gray screens (flashes come
    every 750 ms, so the time just before a flash still holds the previous flash's response)."""
    if len(onsets) == 0:
        return np.zeros(dff.shape[1])
    starts = np.searchsorted(times, np.add.outer(np.asarray(onsets), window))
    return np.mean([dff[a:b].mean(axis=0) for a, b in starts], axis=0) - baseline


def test_an_analysis_of_dff_recovers_who_responds_to_what(demo_root, truth):
    """Event-locked mean dF/F: the strongest of change, omission and best-image responses names the cell's type,
    'none' when all are small; image cells' best image is their preferred one."""
    cells = truth["cell_responses"].set_index("cell_roi_id")
    found, expected, preferred = [], [], []
    for path in experiment_files(demo_root):
        with h5py.File(path, "r") as f:
            dff, times = f[layout.NWB_DFF][:], f[layout.NWB_TIMESTAMPS][:]
            roi_ids = f[layout.NWB_CELL_TABLE]["id"][:]
            presentations = read_presentations(f)
        gray = presentations[presentations.stimulus_block != 1]
        in_gray = np.zeros(len(times), dtype=bool)
        for start, stop in zip(gray.start_time, gray.stop_time):
            in_gray |= (times >= start) & (times < stop)
        baseline = dff[in_gray].mean(axis=0)
        flashes = presentations[presentations.stimulus_block == 1]
        shown = flashes[flashes.omitted == 0]
        change = mean_response(times, dff, flashes.start_time[flashes.is_change.astype(bool)], baseline)
        omission = mean_response(times, dff, flashes.start_time[flashes.omitted == 1], baseline, window=(0.4, 0.9))
        names = sorted(set(shown.image_name))
        by_image = np.array(
            [mean_response(times, dff, shown.start_time[(shown.image_name == n) & ~shown.is_change], baseline)
             for n in names]
        )
        strength = np.stack([change, omission, by_image.max(axis=0)])
        kind = np.where(strength.max(axis=0) > 0.1, np.array(["change", "omission", "image"])[strength.argmax(axis=0)],
                        "none")
        found += kind.tolist()
        truth_rows = cells.loc[roi_ids]
        expected += truth_rows.response_type.tolist()
        # The best image of the cells the analysis calls image cells.
        preferred += [(names[i], image) for i, image, k in zip(by_image.argmax(axis=0), truth_rows.preferred_image,
                                                               kind) if k == "image"]
    found, expected = np.array(found), np.array(expected)
    assert (found == expected).mean() > 0.9, pd.crosstab(expected, found)
    for kind in RESPONSE_TYPES:
        assert (found[expected == kind] == kind).mean() > 0.8, kind
    assert np.mean([shown == truth_image for shown, truth_image in preferred]) > 0.9


# --- AllenSDK 2.16.2 reads the files ------------------------------------------------------------------------------


def allensdk_read(paths) -> dict:
    if not (ALLENSDK_VENV / ".installed").exists():
        failure = REPO / ".venv-allensdk-failed.log"
        reason = failure.read_text()[-500:] if failure.exists() else "run `make test` to create .venv-allensdk"
        pytest.skip(f"AllenSDK 2.16.2 venv is not installed: {reason}")
    result = subprocess.run([str(ALLENSDK_VENV / "bin" / "python"), str(PEER), *map(str, paths)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_allensdk_view(seen: dict, truth, experiments, cells) -> None:
    for key, view in seen.items():
        row = experiments.loc[int(key)]
        presentations = pd.DataFrame(view["presentations"]).set_index("index")
        expected = session_truth(truth, "stimulus_presentations", row.behavior_session_id)
        assert presentations.index.tolist() == expected.stimulus_presentations_id.tolist()
        for column in ("is_change", "is_sham_change", "active", "stimulus_block", "trials_id", "start_frame"):
            assert presentations[column].tolist() == expected[column].tolist(), column
        np.testing.assert_allclose(presentations.start_time, expected.start_time, atol=1e-8)
        np.testing.assert_allclose(presentations.end_time, expected.stop_time, atol=1e-8)
        flashes = expected.stimulus_block == 1
        assert presentations.image_name[flashes.to_numpy()].tolist() == expected.image_name[flashes].tolist()
        assert presentations.omitted.tolist() == [bool(v) if f else None for v, f in zip(expected.omitted, flashes)]
        trials = pd.DataFrame(view["trials"]).set_index("index")
        expected = session_truth(truth, "trials", row.behavior_session_id)
        for column in ("go", "catch", "aborted", "auto_rewarded", "hit", "miss", "false_alarm", "correct_reject",
                       "change_frame", "initial_image_name", "change_image_name"):
            assert trials[column].tolist() == expected[column].tolist(), column
        for column in ("start_time", "stop_time", "change_time", "response_time", "reward_time"):
            np.testing.assert_allclose(trials[column].astype(float), expected[column], atol=1e-8, err_msg=column)
        licks = session_truth(truth, "licks", row.behavior_session_id)
        rewards = session_truth(truth, "rewards", row.behavior_session_id)
        assert view["licks"]["frame"] == licks.frame.tolist() and sum(view["trials"]["n_licks"]) <= len(licks)
        np.testing.assert_allclose(view["licks"]["timestamps"], licks.timestamps, atol=1e-8)
        np.testing.assert_allclose(view["rewards"]["timestamps"], rewards.timestamps, atol=1e-8)
        assert view["rewards"]["auto_rewarded"] == rewards.auto_rewarded.tolist()
        assert view["session_type"] == row.session_type
        assert view["task_parameters"]["image_set"] == f"images_{row.image_set}"
        assert view["stimulus_templates"] == list(IMAGE_SETS[row.image_set])
        assert view["n_running_speed"] == view["n_stimulus_timestamps"]
        valid = cells[(cells.ophys_experiment_id == int(key)) & cells.valid_roi]
        assert view["cell_roi_id"] == valid.cell_roi_id.tolist()  # AllenSDK keeps the valid ROIs
        assert view["events_shape"] == view["dff_shape"] == [len(valid), view["n_ophys_timestamps"]]


def test_allensdk_reads_the_task_of_each_kind_of_demo_file(demo_root, truth, experiments):
    paths = one_file_per_kind(demo_root)
    assert len(paths) >= 4
    seen = allensdk_read(paths)
    assert sorted(seen) == sorted(str(experiment_id(p)) for p in paths)
    check_allensdk_view(seen, truth, experiments, truth["cell_responses"])
    assert any(view["n_eye_tracking"] > 0 for view in seen.values())


@pytest.mark.slow
def test_allensdk_opens_every_demo_experiment_file(demo_root, truth, experiments):
    paths = experiment_files(demo_root)
    seen = allensdk_read(paths)
    assert len(seen) == len(paths)
    check_allensdk_view(seen, truth, experiments, truth["cell_responses"])
