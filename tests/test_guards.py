"""Guards that exist in the code and that no other test reaches: the reversed-encoder flip of running speed, manifest
versions refused, a verification stamp of another hash, duplicated table ids, containers in acquisition order, the
Mesoscope frame rate of filtered events, the ROI order of the dF/F region, and AllenSDK's image spacing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import DATA, release_config

from vb2p import layout, task
from vb2p.errors import DownloadError, ManifestError, TableError
from vb2p.experiment import open_experiment
from vb2p.extract import ExtractionOptions, extract_experiment
from vb2p.manifest import parse_manifest
from vb2p.release import release_cache
from vb2p.selection import experiment_groups
from vb2p.tables import load_table

OPHYS_REFERENCE = DATA / "allensdk_nwb" / "ref_scientifica.nwb"
TASK_REFERENCE = DATA / "allensdk_nwb" / "task" / "ref_task_scientifica.nwb"
REFERENCE_ID = 775614751
CELL_TABLE = layout.NWB_CELL_TABLE


# ----- running speed: a reversed encoder (mean below -1 cm/s) is flipped back, as AllenSDK's _fix_polarity does -----


def test_running_speed_of_a_reversed_encoder_is_flipped_back(tmp_path):
    """Rigs with reversed encoder polarity record negated speeds; AllenSDK flips a mean below -1 cm/s back."""
    reversed_nwb, slow_nwb = tmp_path / "reversed.nwb", tmp_path / "slow_backwards.nwb"
    for copy in (reversed_nwb, slow_nwb):
        shutil.copyfile(TASK_REFERENCE, copy)
    with h5py.File(TASK_REFERENCE, "r") as f:
        original = {filtered: task.running_speed(f, "original", filtered) for filtered in (True, False)}
    assert all(table.speed.mean() > 1 for table in original.values())  # negated, the mean is below -1
    assert original[False].speed.isna().any()  # the raw speed's NaNs: the mean must skip them
    with h5py.File(reversed_nwb, "r+") as reversed_file, h5py.File(slow_nwb, "r+") as slow_file:
        for name in ("speed", "speed_unfiltered"):
            data = reversed_file[f"{task.NWB_RUNNING}/{name}/data"]
            data[...] = -data[...]
            slow = slow_file[f"{task.NWB_RUNNING}/{name}/data"]
            slow[...] = -0.5 * slow[...] / np.nanmean(slow[...])  # mean -0.5 cm/s: backwards, not reversed
    with h5py.File(reversed_nwb, "r") as reversed_file, h5py.File(slow_nwb, "r") as slow_file:
        for filtered in (True, False):
            pd.testing.assert_frame_equal(task.running_speed(reversed_file, "reversed", filtered), original[filtered])
            slow = task.running_speed(slow_file, "slow", filtered)
            assert slow.speed.mean() == pytest.approx(-0.5)  # above -1 cm/s: left as recorded


# ----- manifest versions: only [1.0.0, 2.0.0), and the name and the content must agree -----


@pytest.mark.parametrize(("name_version", "content_version", "problem"), [
    ("2.0.0", "2.0.0", "version 2.0.0 is not supported"),
    ("1.0.0", "1.1.0", "says manifest_version 1.1.0, its name says 1.0.0"),
])
def test_a_manifest_of_version_2_or_whose_name_disagrees_is_refused(demo_root, name_version, content_version,
                                                                    problem):
    """AllenSDK 2.16 reads manifests below 2.0.0; a manifest named for one version and holding another is refused."""
    raw = json.loads((demo_root / layout.manifest_key("1.0.0")).read_text())
    raw["manifest_version"] = content_version
    name = f"visual-behavior-ophys_project_manifest_v{name_version}.json"
    with pytest.raises(ManifestError) as error:
        parse_manifest(json.dumps(raw), name)
    assert problem in str(error.value) and name in str(error.value)


# ----- the cache: a stamp records the hash it was verified against, and vouches for that hash only -----


def test_a_stamp_verified_for_another_hash_does_not_vouch_for_the_file(tmp_path, demo_root):
    """A manifest whose file_hash changed must not get the old file because its stamp (and stat) are unchanged."""
    cache = release_cache(release_config(demo_root, tmp_path / "cache"))
    manifest = cache.resolve_manifest("1.0.0")
    entry = manifest.metadata_files["ophys_experiment_table"]
    path = cache.fetch(manifest, entry)  # downloaded and stamped with entry.file_hash
    assert cache.check(path, entry.file_hash)
    changed = dataclasses.replace(entry, file_hash=hashlib.blake2b(b"another version of the table").hexdigest())
    assert not cache.check(path, changed.file_hash)
    with pytest.raises(DownloadError, match="BLAKE2b mismatch"):
        cache.fetch(manifest, changed)  # fetched again: the object's bytes do not have the new hash


# ----- metadata tables: the id column is an index -----


def test_a_metadata_table_with_a_duplicated_id_is_refused_naming_table_and_column(tmp_path):
    """Two rows of one ophys_experiment_id would make every lookup by id ambiguous."""
    rows = pd.read_csv(DATA / "real_metadata" / "ophys_experiment_table.csv", nrows=20)
    path = tmp_path / "ophys_experiment_table.csv"
    pd.concat([rows, rows.iloc[[3]]]).to_csv(path, index=False)
    with pytest.raises(TableError) as error:
        load_table(path, "ophys_experiment_table")
    message = str(error.value)
    assert "ophys_experiment_table" in message and "index column ophys_experiment_id" in message
    assert "duplicated" in message
    assert len(load_table(DATA / "real_metadata" / "ophys_experiment_table.csv", "ophys_experiment_table"))  # loads


# ----- selection: a container's sessions in acquisition order, whatever the order of the rows -----


def test_container_sessions_are_in_acquisition_order_whatever_the_row_order(real_experiments):
    """The first session of a container is the reference of its alignment: it must not depend on the file's rows."""
    shuffled = real_experiments.sample(frac=1, random_state=0)
    containers = experiment_groups(shuffled)["containers"]
    dates = real_experiments.date_of_acquisition
    for container, ids in containers.items():
        assert dates[ids].is_monotonic_increasing and dates[ids].is_unique, container
    assert containers == experiment_groups(real_experiments)["containers"]
    # The shuffle did put sessions out of order: listing them in row order would fail the checks above.
    in_row_order = shuffled.groupby("ophys_container_id").date_of_acquisition.apply(lambda d: d.is_monotonic_increasing)
    assert (~in_row_order).sum() > 100


# ----- filtered events: filtered at the plane's own frame rate (Mesoscope ~11 Hz, not 31 Hz) -----


def test_filtered_events_of_a_mesoscope_plane_use_its_frame_rate(tmp_path, demo_root):
    """AllenSDK's events filter spans 2/31 s x the frame rate: a fixed 31 Hz would smear a Mesoscope plane's events."""
    experiments = pd.read_csv(demo_root / layout.metadata_key("ophys_experiment_table"))
    experiment_id = int(experiments[experiments.equipment_name.str.startswith("MESO")].ophys_experiment_id.iloc[0])
    store = tmp_path / f"{experiment_id}.zarr"
    extract_experiment(demo_root / layout.experiment_key(experiment_id), store, experiment_id)
    experiment = open_experiment(store)
    frame_rate = float(xr.open_zarr(store).attrs["ophys_frame_rate"])
    assert 10 < frame_rate < 12
    events = np.stack(experiment.events.events.to_list()).T  # (time, cell)
    filtered = np.stack(experiment.events.filtered_events.to_list()).T
    assert events.shape[1] > 0 and np.count_nonzero(events) > 0
    np.testing.assert_allclose(filtered, task.filtered_events(events, frame_rate), rtol=1e-12, atol=1e-15)
    assert not np.allclose(filtered, task.filtered_events(events, 31.0), rtol=1e-6, atol=1e-9)


# ----- ROI order: dF/F column k is the cell table row the dF/F ROI region names at k -----


def test_store_columns_follow_the_dff_roi_region_when_it_is_not_the_table_order(tmp_path):
    """A file whose dF/F columns are a permutation of the cell table must not pair one ROI's trace with another's id."""
    permuted = tmp_path / "permuted.nwb"
    shutil.copyfile(OPHYS_REFERENCE, permuted)
    order = np.array([5, 0, 11, 3, 8, 1, 10, 2, 7, 4, 9, 6])  # dF/F column k is cell table row order[k]
    with h5py.File(permuted, "r+") as f:
        f[layout.NWB_DFF_ROIS][...] = order
        f[layout.NWB_DFF][...] = f[layout.NWB_DFF][...][:, order]
        f[CELL_TABLE]["valid_roi"][order[1]] = False  # one invalid ROI: the valid flags must travel with their ROI
        assert f[f"{task.NWB_EVENTS}/rois"][:].tolist() == list(range(12))  # events stay in the table's row order
    store = tmp_path / "store.zarr"
    extract_experiment(permuted, store, REFERENCE_ID, options=ExtractionOptions(dff_dtype="float64"))
    ds = xr.open_zarr(store)
    with h5py.File(OPHYS_REFERENCE, "r") as f:  # the original: region 0..11, so column j is row j
        assert f[layout.NWB_DFF_ROIS][:].tolist() == list(range(12))
        ids, masks = f[CELL_TABLE]["id"][:], f[CELL_TABLE]["image_mask"][:].astype(bool)
        specimen_ids, dff = f[CELL_TABLE]["cell_specimen_id"][:], f[layout.NWB_DFF][:]
        events, lambdas = f[f"{task.NWB_EVENTS}/data"][:], f[f"{task.NWB_EVENTS}/lambdas"][:]
    assert ds.cell_roi_id.values.tolist() == ids[order].tolist()
    assert ds.cell_specimen_id.values.tolist() == specimen_ids[order].tolist()
    assert ds.valid_roi.values.tolist() == [k != 1 for k in range(12)]
    np.testing.assert_array_equal(ds.roi_mask.values, masks[order])
    np.testing.assert_array_equal(ds.dff.values, dff[:, order])
    np.testing.assert_array_equal(ds.dff_by_cell.values, dff[:, order])
    np.testing.assert_array_equal(ds.events.values, events[:, order])
    np.testing.assert_array_equal(ds.events_lambda.values, lambdas[order])


# ----- image spacing: AllenSDK's mm per pixel, not the NWB's resolution attribute as it stands -----


def test_image_spacing_is_allensdks_millimetres_per_pixel(tmp_path):
    """AllenSDK's projections have spacing pixel_size_um / 1000 mm (0.78125 um pixels on Scientifica rigs); it writes
    resolution = spacing / 10 to the NWB and reads spacing = resolution x 10 (nwb_utils.get_image)."""
    store = tmp_path / "store.zarr"
    extract_experiment(OPHYS_REFERENCE, store, REFERENCE_ID)
    with h5py.File(OPHYS_REFERENCE, "r") as f:
        assert f[layout.NWB_MAX_PROJECTION].attrs["resolution"] == pytest.approx(0.78125 / 1000 / 10)
    experiment = open_experiment(store)
    for image in (experiment.max_projection, experiment.average_projection):
        assert image.unit == "mm"
        assert image.spacing == pytest.approx((0.78125 / 1000, 0.78125 / 1000), rel=1e-12)
