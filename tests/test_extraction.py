"""NWB -> Zarr extraction: equality with what AllenSDK reads from a file AllenSDK wrote, xarray opening, the dtype
switch, atomicity after a kill, corrupt files, and the cell-count cross-check."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import DATA, REPO

from vb2p import layout
from vb2p.errors import NwbError
from vb2p.extract import ExtractionOptions, extract_experiment
from vb2p.index import build_index, cell_count_check

REFERENCE = DATA / "allensdk_nwb" / "ref_scientifica.nwb"
EXPECTED = json.loads((DATA / "allensdk_nwb" / "ref_scientifica.expected.json").read_text())
REFERENCE_ID = 775614751


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("ref") / f"{REFERENCE_ID}.zarr"
    extract_experiment(REFERENCE, store, REFERENCE_ID, {"file_hash": "x"}, ExtractionOptions(dff_dtype="float64"))
    return store


def test_reference_file_matches_what_allensdk_reads(reference_store):
    ds = xr.open_zarr(reference_store)
    assert ds.dff.dims == ("time", "cell") and ds.roi_mask.dims == ("cell", "y", "x")
    assert ds.cell_roi_id.values.tolist() == EXPECTED["cell_roi_id"]
    expected_specimen = [-1 if v is None else v for v in EXPECTED["cell_specimen_id"]]
    assert ds.cell_specimen_id.values.tolist() == expected_specimen  # the two unmatched cells are -1
    assert ds.cell_specimen_id.dtype == np.int64
    cells_by_time = np.ascontiguousarray(ds.dff.values.T)
    assert list(cells_by_time.shape) == EXPECTED["dff_shape_cells_by_time"]
    assert hashlib.sha256(cells_by_time.tobytes()).hexdigest() == EXPECTED["dff_sha256_float64_cells_by_time_C"]
    np.testing.assert_allclose(cells_by_time.sum(axis=1), EXPECTED["dff_row_sums"], rtol=1e-12)
    np.testing.assert_array_equal(cells_by_time[:, :5], EXPECTED["dff_first5_of_each_cell"])
    np.testing.assert_allclose(cells_by_time.mean(axis=0)[:10], EXPECTED["population_mean_dff_first10"], rtol=1e-12)
    np.testing.assert_array_equal(ds.dff_by_cell.values, ds.dff.values)
    assert len(ds.time) == EXPECTED["ophys_timestamps_len"]
    np.testing.assert_array_equal(ds.time.values[:3], EXPECTED["ophys_timestamps_first3"])
    assert ds.time.values[-1] == EXPECTED["ophys_timestamps_last"]
    max_projection = ds.max_projection.values
    assert list(max_projection.shape) == EXPECTED["max_projection_shape"] and max_projection.dtype == np.uint8
    assert hashlib.sha256(np.ascontiguousarray(max_projection).tobytes()).hexdigest() == EXPECTED["max_projection_sha256"]
    assert int(max_projection.sum()) == EXPECTED["max_projection_sum"]
    assert list(ds.average_image.shape) == EXPECTED["average_image_shape"]
    assert int(ds.average_image.values.astype(np.int64).sum()) == EXPECTED["average_image_sum"]
    assert int(ds.valid_roi.sum()) == EXPECTED["n_valid_rois"]
    assert ds.roi_mask.values.sum(axis=(1, 2)).tolist() == EXPECTED["roi_mask_pixel_counts"]


def test_reference_metadata_matches_allensdk(reference_store):
    attrs = xr.open_zarr(reference_store).attrs
    expected = EXPECTED["metadata"]
    for key in ("equipment_name", "sex", "age_in_days", "stimulus_frame_rate", "session_type", "reporter_line",
                "cre_line", "behavior_session_uuid", "mouse_id", "project_code", "full_genotype", "indicator",
                "emission_lambda", "excitation_lambda", "imaging_plane_group_count", "ophys_experiment_id",
                "ophys_frame_rate", "targeted_structure"):
        assert attrs[key] == expected[key], key
    for key in ("behavior_session_id", "ophys_container_id", "ophys_session_id", "imaging_depth",
                "targeted_imaging_depth", "field_of_view_height", "field_of_view_width"):
        assert str(attrs[key]) == expected[key], key
    assert sorted(attrs["driver_line"]) == sorted(expected["driver_line"])
    assert pd.Timestamp(attrs["date_of_acquisition"]) == pd.Timestamp(expected["date_of_acquisition"])
    assert expected["imaging_plane_group"] is None and attrs["imaging_plane_group"] == -1  # single-plane rig
    assert attrs["provenance"]["workflow"] == "vb2p" and attrs["provenance"]["file_hash"] == "x"


def test_float32_by_default_and_float64_is_lossless(tmp_path, demo_root):
    nwb = sorted((demo_root / layout.EXPERIMENT_DIR).glob("*.nwb"))[0]
    experiment_id = int(nwb.stem.rsplit("_", 1)[1])
    with h5py.File(nwb, "r") as f:
        original = f[layout.NWB_DFF][:]
    single = extract_experiment(nwb, tmp_path / "a.zarr", experiment_id)
    double = extract_experiment(nwb, tmp_path / "b.zarr", experiment_id, options=ExtractionOptions(dff_dtype="float64"))
    assert single["n_frames"] == double["n_frames"] == original.shape[0]
    a, b = xr.open_zarr(tmp_path / "a.zarr"), xr.open_zarr(tmp_path / "b.zarr")
    assert a.dff.dtype == np.float32 and b.dff.dtype == np.float64
    np.testing.assert_array_equal(b.dff.values, original)
    np.testing.assert_array_equal(a.dff.values, original.astype(np.float32))
    assert a.attrs["dff_dtype"] == "float32"


def test_xarray_opens_a_demo_store_with_labels_and_true_shapes(tmp_path, demo_root):
    experiments = pd.read_csv(demo_root / layout.metadata_key("ophys_experiment_table"), dtype={"mouse_id": str})
    row = experiments[experiments.equipment_name != "MESO.1"].iloc[0]
    nwb = demo_root / layout.experiment_key(row.ophys_experiment_id)
    extract_experiment(nwb, tmp_path / "s.zarr", row.ophys_experiment_id)
    ds = xr.open_zarr(tmp_path / "s.zarr")
    assert set(ds.coords) >= {"time", "cell_roi_id", "cell_specimen_id", "valid_roi"}
    assert ds.max_projection.shape[0] == 512 and 447 <= ds.max_projection.shape[1] <= 452
    assert ds.attrs["mouse_id"] == row.mouse_id and ds.attrs["cre_line"] == row.cre_line
    assert ds.attrs["targeted_structure"] == row.targeted_structure
    assert ds.attrs["ophys_container_id"] == row.ophys_container_id
    one_cell = ds.dff_by_cell.isel(cell=3)
    assert one_cell.dims == ("time",) and np.array_equal(one_cell.values, ds.dff.values[:, 3])
    window = ds.dff.sel(time=slice(20, 30))
    assert window.time.min() >= 20 and window.time.max() <= 30


def test_a_corrupt_or_truncated_file_names_the_experiment_and_file(tmp_path):
    truncated = tmp_path / "behavior_ophys_experiment_1.nwb"
    truncated.write_bytes(REFERENCE.read_bytes()[:400_000])
    with pytest.raises(NwbError) as error:
        extract_experiment(truncated, tmp_path / "1.zarr", 1)
    assert "experiment 1" in str(error.value) and str(truncated) in str(error.value)
    not_hdf5 = tmp_path / "behavior_ophys_experiment_2.nwb"
    not_hdf5.write_bytes(b"<html>AccessDenied</html>")
    with pytest.raises(NwbError, match="experiment 2"):
        extract_experiment(not_hdf5, tmp_path / "2.zarr", 2)
    assert not any(tmp_path.glob("*.zarr")) and not any(tmp_path.glob(".*partial"))


def test_a_file_of_another_experiment_is_refused(tmp_path):
    with pytest.raises(NwbError, match="says its ophys_experiment_id is 775614751"):
        extract_experiment(REFERENCE, tmp_path / "5.zarr", 5)


def test_a_killed_extraction_never_leaves_a_store_that_looks_finished(tmp_path):
    """SIGKILL mid-write: no store at the final name; the next run cleans the leftover and completes."""
    big = tmp_path / "big.nwb"
    with h5py.File(REFERENCE, "r") as src, h5py.File(big, "w") as dst:
        for name in ("general", "session_start_time", "identifier"):
            src.copy(src[name], dst, name=name)
        ophys = dst.create_group("processing/ophys")
        src.copy(src["processing/ophys/image_segmentation"], ophys, name="image_segmentation")
        src.copy(src["processing/ophys/images"], ophys, name="images")
        n_frames = 1_500_000  # long enough that the kill lands mid-write
        traces = ophys.create_group("dff/traces")
        traces["data"] = np.tile(src[layout.NWB_DFF][:], (n_frames // 2000, 1))
        traces["timestamps"] = np.arange(n_frames) / 31.0
        traces["rois"] = np.arange(12)
    store = tmp_path / f"{REFERENCE_ID}.zarr"
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from vb2p.extract import extract_experiment, ExtractionOptions\n"
        "extract_experiment(%r, %r, %d, options=ExtractionOptions(time_chunk=256, block_bytes=1<<16))\n"
    ) % (str(REPO / "workflow"), str(big), str(store), REFERENCE_ID)
    process = subprocess.Popen([sys.executable, "-c", code])
    partial = tmp_path / f".{store.name}.partial"
    deadline = time.monotonic() + 60
    while not (partial / "dff").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial.exists(), "the kill should land while the store is being written"
    assert not store.exists()
    summary = extract_experiment(big, store, REFERENCE_ID, options=ExtractionOptions(time_chunk=65536))
    assert summary["n_frames"] == n_frames and store.exists() and not partial.exists()
    assert xr.open_zarr(store).dff.shape == (n_frames, 12)


def test_cell_count_cross_check_reports_mismatches(tmp_path, demo_root):
    nwbs = sorted((demo_root / layout.EXPERIMENT_DIR).glob("*.nwb"))[:3]
    stores = []
    for nwb in nwbs:
        experiment_id = int(nwb.stem.rsplit("_", 1)[1])
        extract_experiment(nwb, tmp_path / f"{experiment_id}.zarr", experiment_id)
        stores.append(tmp_path / f"{experiment_id}.zarr")
    index = build_index(stores, tmp_path)
    assert index.path.tolist() == sorted(f"{int(n.stem.rsplit('_', 1)[1])}.zarr" for n in nwbs)
    cells = pd.read_csv(demo_root / layout.metadata_key("ophys_cells_table"))
    assert cell_count_check(index, cells).empty  # the demo's table agrees with its files
    tampered = cells.drop(cells.index[cells.ophys_experiment_id == index.ophys_experiment_id[1]][:2])
    mismatches = cell_count_check(index, tampered)
    assert mismatches.ophys_experiment_id.tolist() == [index.ophys_experiment_id[1]]
    assert mismatches.difference.tolist() == [2]
    reopened = xr.open_zarr(tmp_path / index.path[0])
    assert int(reopened.valid_roi.sum()) == index.n_valid_rois[0]
    shutil.rmtree(tmp_path / index.path[0])


def test_each_step_of_the_extraction_on_its_own(tmp_path):
    """read_plane, write_ids_and_images, copy_masks, copy_traces (several blocks), plane_summary, store_attributes."""
    import zarr

    from vb2p.extract import (copy_masks, copy_traces, plane_summary, read_plane, store_attributes,
                              write_ids_and_images)

    # 64-frame chunks and blocks of 3 chunks: the 2,000 frames of the reference take 11 row blocks, 4 cell blocks.
    options = ExtractionOptions(dff_dtype="float64", time_chunk=64, block_bytes=3 * 64 * 12 * 8)
    with h5py.File(REFERENCE, "r") as f:
        plane = read_plane(f, REFERENCE_ID, "the reference")
        assert (plane.n_frames, plane.n_rois) == (2000, 12)
        assert plane.cells["cell_roi_id"].tolist() == EXPECTED["cell_roi_id"]
        group = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
        write_ids_and_images(group, plane, options)
        np.testing.assert_array_equal(group["time"][:], f[layout.NWB_TIMESTAMPS][:])
        np.testing.assert_array_equal(group["max_projection"][:], f[layout.NWB_MAX_PROJECTION][:])
        assert group["valid_roi"][:].sum() == EXPECTED["n_valid_rois"]
        copy_masks(group, tmp_path / "s.zarr", plane, "the reference", options)
        masks = f[layout.NWB_CELL_TABLE]["image_mask"][:][plane.roi_order]
        np.testing.assert_array_equal(group["roi_mask"][:], masks)
        copy_traces(group, tmp_path / "s.zarr", plane, "the reference", options)
        np.testing.assert_array_equal(group["dff"][:], f[layout.NWB_DFF][:])
        np.testing.assert_array_equal(group["dff_by_cell"][:], f[layout.NWB_DFF][:])
        summary = plane_summary(plane, REFERENCE_ID)
        assert summary["n_valid_rois"] == EXPECTED["n_valid_rois"] and summary["measured_frame_rate"] > 30
        attrs = store_attributes(summary, plane.metadata, {"file_hash": "x"}, options)
        assert attrs["provenance"]["file_hash"] == "x" and attrs["dff_dtype"] == "float64"
        with pytest.raises(NwbError, match="says its ophys_experiment_id is"):
            read_plane(f, 1, "the reference")
