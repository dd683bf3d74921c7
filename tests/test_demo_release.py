"""The demo release generator against the layout of the real release (allen-release-layout.md)."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil

import h5py
import numpy as np
import pandas as pd
import pynwb
import pytest
from hdmf.validate import ValidatorMap
from pynwb.validation import get_cached_namespaces_to_validate
from conftest import DATA, SEED, SMALL

from vb2p import layout
from vb2p.demo.design import (
    DENSEST_PLANE,
    MIN_ROIS_PER_PLANE,
    REAL_ROIS_PER_PLANE,
    DemoSize,
    design_release,
    mouse_cells_per_plane,
)
from vb2p.demo.generate import generate_release
from vb2p.errors import Vb2pError

URL_RE = re.compile(r"^https://visual-behavior-ophys-data\.s3\.us-west-2\.amazonaws\.com/visual-behavior-ophys/(.+)$")
VERSION_ID_RE = re.compile(r"^[A-Za-z0-9._]{32}$")
TABLES = ("behavior_session_table", "ophys_session_table", "ophys_experiment_table")
# Columns of the published v1.1.0 CSVs that the AllenSDK-written reference tables lack (layout document section 4).
PUBLISHED_ONLY = {
    "behavior_session_table": {
        "trial_count",
        "go_trial_count",
        "catch_trial_count",
        "hit_trial_count",
        "miss_trial_count",
        "false_alarm_trial_count",
        "correct_reject_trial_count",
        "engaged_trial_count",
    },
    "ophys_session_table": set(),
    "ophys_experiment_table": {"published_at", "isi_experiment_id"},
}


def cached_specifications(path) -> dict[str, bytes]:
    """The namespace and extension specs a file caches, by their path under /specifications."""
    specs = {}
    with h5py.File(path, "r") as f:
        f["specifications"].visititems(
            lambda name, item: specs.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None
        )
    return specs


def validate(paths) -> dict[str, list[str]]:
    """pynwb's validator against the namespaces each file caches, as `pynwb.validate(use_cached_namespaces=True)`
    does, with the namespaces loaded once (every file must cache the same specs) instead of once per file."""
    namespaces, manager, _ = get_cached_namespaces_to_validate(path=str(paths[0]))
    reference = cached_specifications(paths[0])
    errors = {}
    for path in paths:
        specs = cached_specifications(path)
        assert all(reference[name] == spec for name, spec in specs.items()), path
        cached = {name.split("/")[0] for name in specs}
        with pynwb.NWBHDF5IO(str(path), "r", manager=manager) as io:
            builder = io.read_builder()
            errors[str(path)] = [
                str(error)
                for namespace in namespaces if namespace in cached
                for error in ValidatorMap(manager.namespace_catalog.get_namespace(namespace)).validate(builder)
            ]
    return errors


def one_file_per_kind(root) -> list:
    """An experiment file of each kind the demo writes: Scientifica and Mesoscope, active and passive, with and
    without eye tracking."""
    experiments = text_table(root, "ophys_experiment_table").set_index("ophys_experiment_id")
    chosen = {}
    for path in experiment_files(root):
        row = experiments.loc[path.stem.rsplit("_", 1)[1]]
        with h5py.File(path, "r") as f:
            kind = (row.equipment_name, row.passive, "EyeTracking" in f["acquisition"])
        chosen.setdefault(kind, path)
    return list(chosen.values())


def manifest_of(root, version="1.0.0"):
    return json.loads((root / layout.manifest_key(version)).read_text())


def text_table(root, name):
    return pd.read_csv(root / layout.metadata_key(name), dtype=str, keep_default_na=False)


def experiment_files(root):
    return sorted((root / layout.EXPERIMENT_DIR).glob("*.nwb"))


def test_manifest_has_the_six_keys_and_real_form_entries(demo_root):
    manifest = manifest_of(demo_root)
    assert list(manifest) == list(layout.MANIFEST_KEYS)
    assert manifest["project_name"] == "visual-behavior-ophys"
    assert manifest["manifest_version"] == "1.0.0"
    assert manifest["metadata_file_id_column_name"] == "file_id"
    assert set(manifest["metadata_files"]) == set(layout.METADATA_TABLES)
    entries = list(manifest["metadata_files"].values()) + list(manifest["data_files"].values())
    for key in manifest["data_files"]:
        assert key == str(int(key)), key
    for entry in entries:
        assert set(entry) == {"url", "version_id", "file_hash"}
        match = URL_RE.match(entry["url"])
        assert match, entry["url"]
        assert VERSION_ID_RE.match(entry["version_id"]), entry["version_id"]
        assert re.fullmatch(r"[0-9a-f]{128}", entry["file_hash"])
        path = demo_root / match.group(1)
        assert path.is_file(), path
        assert hashlib.blake2b(path.read_bytes()).hexdigest() == entry["file_hash"], path


def test_manifest_lists_every_experiment_and_behavior_only_session(demo_root):
    manifest = manifest_of(demo_root)
    experiments = text_table(demo_root, "ophys_experiment_table")
    behavior = text_table(demo_root, "behavior_session_table")
    by_file_id = {int(k): URL_RE.match(v["url"]).group(1) for k, v in manifest["data_files"].items()}
    # Experiments are numbered from 0 in table order, as in v1.1.0.
    assert [int(f) for f in experiments.file_id] == list(range(len(experiments)))
    for row in experiments.itertuples():
        assert by_file_id[int(row.file_id)] == layout.experiment_key(int(row.ophys_experiment_id))
    behavior_only = behavior[behavior.ophys_session_id == ""]
    for row in behavior_only.itertuples():
        assert by_file_id[int(row.file_id)] == layout.behavior_session_key(int(row.behavior_session_id))
    assert len(by_file_id) == len(experiments) + len(behavior_only)
    assert min(int(f) for f in behavior_only.file_id) > len(experiments)


@pytest.mark.parametrize("table", TABLES)
def test_tables_have_every_real_column(demo_root, table):
    real = pd.read_csv(DATA / "real_metadata" / f"{table}.csv", nrows=1)
    demo = text_table(demo_root, table)
    expected = (set(real.columns) - {"file_path"}) | PUBLISHED_ONLY[table]
    assert set(demo.columns) == expected


def test_cells_table_columns(demo_root):
    assert list(text_table(demo_root, "ophys_cells_table").columns) == [
        "cell_roi_id",
        "cell_specimen_id",
        "ophys_experiment_id",
    ]


def test_table_encodings_are_the_real_ones(demo_root):
    behavior = text_table(demo_root, "behavior_session_table")
    sessions = text_table(demo_root, "ophys_session_table")
    experiments = text_table(demo_root, "ophys_experiment_table")
    # Lists are Python repr text.
    for column in ("ophys_experiment_id", "ophys_container_id", "driver_line"):
        for cell in sessions[column]:
            assert isinstance(ast.literal_eval(cell), list)
    assert "['Slc17a7-IRES2-Cre', 'Camk2a-tTA']" in set(experiments.driver_line)
    assert set(experiments.passive) == {"True", "False"}
    # Training sessions have no ophys ids; ophys rows of the behavior table have float-written ids and lists.
    training = behavior[behavior.session_type.str.startswith("TRAINING")]
    assert (training.ophys_session_id == "").all() and (training.ophys_experiment_id == "").all()
    ophys_rows = behavior[behavior.ophys_session_id != ""]
    assert ophys_rows.ophys_session_id.str.fullmatch(r"\d+\.0").all()
    assert set(ophys_rows.file_id) == {"-999", ""}  # both encodings occur in the real tables
    assert training.session_number.eq("").all()
    assert ophys_rows.session_number.str.fullmatch(r"\d\.0").all()
    # Dates: with zone in the behavior table, without in the ophys tables.
    assert behavior.date_of_acquisition.str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00").all()
    assert experiments.date_of_acquisition.str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}").all()
    # imaging_plane_group: 0.0..3.0 on the Mesoscope, empty on Scientifica.
    meso = experiments.equipment_name == "MESO.1"
    assert experiments.imaging_plane_group[meso].isin(["0.0", "1.0", "2.0", "3.0"]).all()
    assert experiments.imaging_plane_group[~meso].eq("").all()
    assert set(experiments.image_set) <= {"A", "B", "G", "H"}
    assert set(sessions.image_set) <= {"images_A", "images_B", "images_G", "images_H"}
    assert behavior.prior_exposures_to_image_set[behavior.image_set == "gratings"].eq("").all()
    assert experiments.mouse_id.str.fullmatch(r"\d{6}").all()


def test_content_spans_lines_projects_and_rigs(demo_root):
    experiments = text_table(demo_root, "ophys_experiment_table")
    assert experiments.cre_line.nunique() >= 3
    assert experiments.project_code.nunique() >= 2
    assert {"MESO.1"} < set(experiments.equipment_name)
    assert set(experiments.equipment_name) & {"CAM2P.3", "CAM2P.4", "CAM2P.5"}
    meso = experiments[experiments.equipment_name == "MESO.1"]
    assert set(meso.targeted_structure) == {"VISp", "VISl"}
    assert meso.groupby("targeted_structure").imaging_depth.nunique().min() >= 2
    assert meso.groupby("ophys_session_id").size().max() >= 4
    for _, container in experiments.groupby("ophys_container_id"):
        ordered = container.sort_values("date_of_acquisition")
        assert 3 <= len(ordered) <= 6
        numbers = ordered.session_number.astype(int).tolist()
        assert numbers == sorted(numbers)
        assert {"Familiar", "Novel 1"} <= set(ordered.experience_level)
        assert set(ordered.passive) == {"True", "False"}


def test_nwb_files_have_the_real_paths_dtypes_and_shapes(demo_root):
    experiments = text_table(demo_root, "ophys_experiment_table").set_index("ophys_experiment_id")
    saw_unmatched = False
    for path in experiment_files(demo_root):
        experiment_id = path.stem.rsplit("_", 1)[1]
        row = experiments.loc[experiment_id]
        with h5py.File(path, "r") as f:
            dff = f[layout.NWB_DFF]
            n_frames, n_rois = dff.shape
            assert dff.dtype == np.float64 and dff.chunks is None and dff.compression is None
            assert f[layout.NWB_TIMESTAMPS].shape == (n_frames,) and f[layout.NWB_TIMESTAMPS].dtype == np.float64
            assert np.all(np.diff(f[layout.NWB_TIMESTAMPS][:]) > 0)
            assert f[layout.NWB_DFF_ROIS][:].tolist() == list(range(n_rois))
            table = f[layout.NWB_CELL_TABLE]
            assert table["id"].dtype == np.int64 and table["cell_specimen_id"].dtype == np.int64
            assert table["valid_roi"].dtype == np.bool_
            for column in ("x", "y", "width", "height"):
                assert table[column].shape == (n_rois,)
            max_projection = f[layout.NWB_MAX_PROJECTION]
            height, width = max_projection.shape
            assert max_projection.dtype == np.uint8 and f[layout.NWB_AVERAGE_IMAGE].dtype == np.uint8
            assert f[layout.NWB_AVERAGE_IMAGE].shape == (height, width)
            assert table["image_mask"].shape == (n_rois, height, width) and table["image_mask"].dtype == np.bool_
            saw_unmatched |= bool((table["cell_specimen_id"][:] == -1).any())
            attrs = f[layout.NWB_METADATA].attrs
            assert attrs["neurodata_type"] == "OphysBehaviorMetadata"
            assert str(attrs["ophys_experiment_id"]) == experiment_id
            assert str(attrs["ophys_container_id"]) == row.ophys_container_id
            assert attrs["equipment_name"] == row.equipment_name
            plane = f[layout.NWB_IMAGING_PLANE]
            assert plane["location"][()].decode() == row.targeted_structure
            rate = plane["imaging_rate"][()]
            assert f[layout.NWB_SUBJECT]["genotype"][()].decode() == row.full_genotype
            assert f[layout.NWB_SUBJECT]["subject_id"][()].decode() == row.mouse_id
            assert f["identifier"][()].decode() == experiment_id
            seconds = f[layout.NWB_TIMESTAMPS][-1] - f[layout.NWB_TIMESTAMPS][0]
            plane_group = int(attrs["imaging_plane_group"])
        if row.equipment_name == "MESO.1":
            assert (height, width) == (512, 512) and rate == 11.0 and plane_group >= 0
        else:
            assert height == 512 and 447 <= width <= 452 and rate == 31.0 and plane_group == -1
        assert abs(n_frames / seconds - rate) < 0.5
    assert saw_unmatched


def test_each_kind_of_nwb_file_passes_the_pynwb_validator(demo_root):
    """Every kind of file (the writer's branches: rigs, passive sessions without licks and rewards, sessions without
    eye tracking, behavior-only files); a file of each kind takes about a second."""
    files = one_file_per_kind(demo_root) + sorted((demo_root / layout.BEHAVIOR_SESSION_DIR).glob("*.nwb"))[:1]
    assert len(files) >= 5
    assert validate(files) == {str(path): [] for path in files}


def test_the_validator_finds_a_broken_file(tmp_path, demo_root):
    broken = tmp_path / "broken.nwb"
    shutil.copyfile(one_file_per_kind(demo_root)[0], broken)
    with h5py.File(broken, "r+") as f:
        del f["processing/ophys/event_detection/lambdas"]
    assert any("lambdas" in error for error in validate([broken])[str(broken)])


@pytest.mark.slow
def test_every_nwb_file_passes_the_pynwb_validator(demo_root):
    files = experiment_files(demo_root) + sorted((demo_root / layout.BEHAVIOR_SESSION_DIR).glob("*.nwb"))
    assert validate(files) == {str(path): [] for path in files}


def test_cells_table_matches_the_valid_rois_of_each_file(demo_root):
    cells = text_table(demo_root, "ophys_cells_table")
    invalid_seen = False
    for path in experiment_files(demo_root):
        experiment_id = path.stem.rsplit("_", 1)[1]
        with h5py.File(path, "r") as f:
            table = f[layout.NWB_CELL_TABLE]
            valid = table["valid_roi"][:]
            invalid_seen |= not valid.all()
            roi_ids = table["id"][:][valid]
            specimen_ids = table["cell_specimen_id"][:][valid]
        rows = cells[cells.ophys_experiment_id == experiment_id]
        assert rows.cell_roi_id.astype(int).tolist() == roi_ids.tolist()
        expected = ["" if s == -1 else str(s) for s in specimen_ids]
        assert rows.cell_specimen_id.tolist() == expected
    assert invalid_seen


def test_rois_per_plane_follow_the_release_by_line_and_rig(demo_root):
    """Dense Slc17a7 Scientifica planes, sparse Sst and Vip planes (real: about 270 against 9-30 ROIs)."""
    experiments = text_table(demo_root, "ophys_experiment_table")
    counts = text_table(demo_root, "ophys_cells_table").groupby("ophys_experiment_id").size()
    experiments["n_rois"] = experiments.ophys_experiment_id.map(counts)
    experiments["mesoscope"] = experiments.equipment_name == "MESO.1"
    mean = experiments.groupby(["cre_line", "mesoscope"]).n_rois.mean()
    dense = mean.pop(("Slc17a7-IRES2-Cre", False))
    assert len(mean) >= 2 and (mean < 0.6 * dense).all(), mean


def test_cells_per_plane_sets_the_dense_plane_and_keeps_the_real_proportions():
    real = DemoSize(mice=6, duration_s=20.0, cells_per_plane=REAL_ROIS_PER_PLANE[DENSEST_PLANE])
    default = DemoSize()
    kinds = set()
    for mouse in design_release(0, real).mice:
        kind = (mouse.genotype["cre_line"], mouse.is_mesoscope)
        kinds.add(kind)
        assert mouse_cells_per_plane(mouse, real) == REAL_ROIS_PER_PLANE[kind]
        # The default 40 scales the sparse lines below the floor (Vip Scientifica: 4.4, Sst Mesoscope: 1.3).
        expected = default.cells_per_plane if kind == DENSEST_PLANE else MIN_ROIS_PER_PLANE
        assert mouse_cells_per_plane(mouse, default) == expected
    assert len(kinds) == 5  # the six mouse plans: both rigs for Sst and Vip, Scientifica Slc17a7


def test_matched_cells_share_ids_across_a_container(demo_dir):
    truth = pd.read_csv(demo_dir / "ground_truth" / "cell_matching.csv")
    matched = truth[truth.cell_specimen_id != -1]
    per_id = matched.groupby("cell_specimen_id").agg(
        containers=("ophys_container_id", "nunique"), sessions=("ophys_experiment_id", "nunique")
    )
    assert (per_id.containers == 1).all()
    assert (per_id.sessions >= 2).mean() > 0.8
    assert (truth.cell_specimen_id == -1).any()


def test_roi_masks_sit_on_the_ground_truth_somata(demo_dir, demo_root):
    truth = pd.read_csv(demo_dir / "ground_truth" / "cell_matching.csv").set_index("cell_roi_id")
    path = experiment_files(demo_root)[0]
    with h5py.File(path, "r") as f:
        ids = f[layout.NWB_CELL_TABLE]["id"][:]
        masks = f[layout.NWB_CELL_TABLE]["image_mask"][:]
        max_projection = f[layout.NWB_MAX_PROJECTION][:].astype(float)
    for roi_id, mask in zip(ids, masks):
        rows, cols = np.nonzero(mask)
        assert abs(rows.mean() - truth.loc[roi_id, "center_y"]) < 0.5
        assert abs(cols.mean() - truth.loc[roi_id, "center_x"]) < 0.5
    # Somata are bright: ROI pixels are far brighter than the background of the max projection.
    inside = masks.any(axis=0)
    assert max_projection[inside].mean() > 2.5 * max_projection[~inside].mean()


def test_sessions_of_a_container_view_one_field_with_the_injected_shifts(demo_dir, demo_root):
    """Integer-pixel cross-correlation of two sessions' max projections peaks at the injected shift difference."""
    shifts = pd.read_csv(demo_dir / "ground_truth" / "injected_shifts.csv")
    container_id, group = next(iter(shifts.groupby("ophys_container_id")))
    first, second = group.iloc[0], group.iloc[1]
    images = []
    for experiment_id in (first.ophys_experiment_id, second.ophys_experiment_id):
        with h5py.File(demo_root / layout.experiment_key(experiment_id), "r") as f:
            image = f[layout.NWB_MAX_PROJECTION][:].astype(float)
        images.append(image - image.mean())
    spectrum = np.fft.fft2(images[1]) * np.conj(np.fft.fft2(images[0]))
    correlation = np.fft.ifft2(spectrum).real
    peak = np.unravel_index(np.argmax(correlation), correlation.shape)
    measured = [p if p <= n // 2 else p - n for p, n in zip(peak, correlation.shape)]
    expected = (second.shift_y - first.shift_y, second.shift_x - first.shift_x)
    assert abs(measured[0] - expected[0]) <= 1 and abs(measured[1] - expected[1]) <= 1, (measured, expected)


def test_dff_has_calcium_like_transients(demo_root):
    with h5py.File(experiment_files(demo_root)[0], "r") as f:
        dff = f[layout.NWB_DFF][:]
    centred = dff - dff.mean(axis=0)
    skew = (centred**3).mean(axis=0) / centred.std(axis=0) ** 3
    # Transients are brief positive excursions over symmetric noise: positively skewed for most cells.
    assert np.median(skew) > 1.0
    assert dff.max() > 0.5 and np.median(dff) < 0.1


def all_datasets(path) -> dict[str, np.ndarray]:
    """Every dataset of an NWB file but the ones that differ between writes by design (object references, the
    specifications cache)."""
    values = {}
    with h5py.File(path, "r") as f:
        def keep(name, item):
            if isinstance(item, h5py.Dataset) and not name.startswith("specifications") and item.dtype.kind != "V":
                values[name] = item[()] if item.dtype != object or item.shape == () else item.asstr()[()]
        f.visititems(keep)
    return values


def test_same_seed_gives_identical_tables_ground_truth_and_arrays(tmp_path):
    size = DemoSize(mice=1, duration_s=20.0, cells_per_plane=8)
    first, second = (generate_release(tmp_path / name, seed=SEED, size=size) for name in ("a", "b"))
    for table in layout.METADATA_TABLES:
        key = layout.metadata_key(table)
        assert (first / key).read_bytes() == (second / key).read_bytes(), table
    truth = sorted((tmp_path / "a" / "ground_truth").glob("*.csv"))
    assert len(truth) == 7
    for path in truth:
        assert path.read_bytes() == (tmp_path / "b" / "ground_truth" / path.name).read_bytes(), path.name
    for path in experiment_files(first):
        a, b = all_datasets(path), all_datasets(second / layout.EXPERIMENT_DIR / path.name)
        assert a.keys() == b.keys() and len(a) > 150
        for name in a:
            if name not in ("file_create_date", "session_start_time", "timestamps_reference_time"):
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_another_seed_gives_another_release(tmp_path, demo_root):
    other = generate_release(tmp_path, seed=SEED + 1, size=DemoSize(mice=1, duration_s=30.0, cells_per_plane=5))
    key = layout.metadata_key("ophys_experiment_table")
    assert (other / key).read_bytes() != (demo_root / key).read_bytes()


def test_a_second_manifest_version_changes_only_some_files(tmp_path, demo_dir):
    out = tmp_path / "release"
    shutil.copytree(demo_dir, out, copy_function=shutil.copy2)
    root = out / "visual-behavior-ophys"
    before = {p: p.stat().st_mtime_ns for p in experiment_files(root)}
    generate_release(out, seed=SEED, size=SMALL, manifest_version="1.1.0", revision=1)
    old, new = manifest_of(root, "1.0.0"), manifest_of(root, "1.1.0")
    assert new["manifest_version"] == "1.1.0"
    changed = {k for k in old["data_files"] if old["data_files"][k]["file_hash"] != new["data_files"][k]["file_hash"]}
    assert 0 < len(changed) < len(old["data_files"])
    for key in changed:
        assert old["data_files"][key]["version_id"] != new["data_files"][key]["version_id"]
    # Unchanged files are not rewritten: same bytes, same modification time.
    rewritten = [p for p, mtime in before.items() if p.stat().st_mtime_ns != mtime]
    assert len(rewritten) == len(changed)
    tables_changed = {
        t for t in layout.METADATA_TABLES if old["metadata_files"][t]["file_hash"] != new["metadata_files"][t]["file_hash"]
    }
    assert tables_changed == {"ophys_experiment_table"}  # published_at of the re-released experiments


def test_extending_a_release_made_with_other_knobs_is_refused(tmp_path):
    generate_release(tmp_path, seed=1, size=DemoSize(mice=1, duration_s=20.0, cells_per_plane=4))
    with pytest.raises(Vb2pError, match="seed 1"):
        generate_release(tmp_path, seed=2, size=DemoSize(mice=1, duration_s=20.0, cells_per_plane=4))
