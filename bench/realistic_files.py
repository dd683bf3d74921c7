"""Realistic experiment files for benchmarks.

- `demo_experiment_file`: one experiment written by the demo generator at real size (all four trace matrices).
- `allensdk_readable_file`: AllenSDK's own reference file (written by AllenSDK 2.16.2's NWB writer, with every
  behavior section its reader needs) with its ophys datasets enlarged to real size, so AllenSDK can load the same
  bytes we extract.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from vb2p.demo.design import DemoSize, design_release  # noqa: E402
from vb2p.demo.generate import write_experiment_file  # noqa: E402
from vb2p.demo.traces import dff_traces  # noqa: E402

REFERENCE = REPO / "tests" / "data" / "allensdk_nwb" / "ref_scientifica.nwb"


def demo_experiment_file(out: Path, rig: str, duration_s: float, cells: int, seed: int = 0) -> Path:
    """The first Scientifica ('scientifica') or Mesoscope ('mesoscope') experiment of a demo release, real size."""
    if out.exists():
        return out
    size = DemoSize(mice=2, duration_s=duration_s, cells_per_plane=cells, all_traces=True)
    design = design_release(seed, size)
    mesoscope = rig == "mesoscope"
    experiment = next(e for e in design.experiments() if (e.imaging_plane_group is not None) == mesoscope)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_experiment_file((seed, size, experiment.ophys_experiment_id, 0, out))
    return out


def _replace(group: h5py.Group, name: str, data: np.ndarray, **kwargs) -> None:
    """Recreate a dataset with new contents, keeping its attributes (neurodata types, table references)."""
    attrs = dict(group[name].attrs)
    del group[name]
    dataset = group.create_dataset(name, data=data, **kwargs)
    for key, value in attrs.items():
        dataset.attrs[key] = value


def allensdk_readable_file(out: Path, n_frames: int, n_rois: int, seed: int = 0, reference: Path = REFERENCE) -> Path:
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.stem + ".partial.nwb")
    shutil.copyfile(reference, partial)
    rng = np.random.default_rng(seed)
    with h5py.File(partial, "r+") as f:
        ophys = f["processing/ophys"]
        start = ophys["dff/traces/timestamps"][0]
        timestamps = start + np.arange(n_frames) / 30.94
        dff = dff_traces(rng, timestamps, n_rois, 30.94, "GCaMP6f")
        per_time = {
            "dff/traces/data": dff,
            "corrected_fluorescence/traces/data": 200 * (1 + dff),
            "demixed_trace/traces/data": 200 * (1 + dff) + 50,
            "neuropil_trace/traces/data": np.full_like(dff, 140.0),
        }
        for path, values in per_time.items():
            group, name = path.rsplit("/", 1)
            _replace(ophys[group], name, values)
        events = np.where(dff > 0.3, dff, 0.0)
        # As AllenSDK's writer stores them: gzip, chunks chosen by h5py.
        _replace(ophys["event_detection"], "data", events, chunks=True, compression="gzip")
        for group in ("dff/traces", "corrected_fluorescence/traces", "demixed_trace/traces", "neuropil_trace/traces",
                      "event_detection", "ophys_motion_correction_x", "ophys_motion_correction_y"):
            _replace(ophys[group], "timestamps", timestamps)
        for axis in ("x", "y"):
            _replace(ophys[f"ophys_motion_correction_{axis}"], "data", rng.normal(0, 1, n_frames))
        for group in ("dff/traces", "event_detection"):
            _replace(ophys[group], "rois", np.arange(n_rois, dtype=np.int64))
        for group in ("event_detection/lambdas", "event_detection/noise_stds", "corrected_fluorescence/RMSE/data",
                      "corrected_fluorescence/r/data", "corrected_fluorescence/RMSE/timestamps",
                      "corrected_fluorescence/r/timestamps"):
            parent, name = group.rsplit("/", 1)
            _replace(ophys[parent], name, rng.uniform(0.1, 1.0, n_rois))
        table = ophys["image_segmentation/cell_specimen_table"]
        reference_masks = table["image_mask"][:]
        height, width = reference_masks.shape[1:]
        base_roi, base_cell = int(table["id"][0]), int(table["cell_specimen_id"][0])
        specimen = base_cell + np.arange(n_rois, dtype=np.int64)
        specimen[rng.random(n_rois) < 0.1] = -1
        masks = np.zeros((n_rois, height, width), dtype=bool)
        ys, xs = rng.integers(10, height - 10, n_rois), rng.integers(10, width - 10, n_rois)
        for k, (y, x) in enumerate(zip(ys, xs)):
            masks[k, y - 6 : y + 6, x - 6 : x + 6] = True
        columns = {
            "id": base_roi + np.arange(n_rois, dtype=np.int64),
            "cell_specimen_id": specimen,
            "x": (xs - 6).astype(np.int64),
            "y": (ys - 6).astype(np.int64),
            "width": np.full(n_rois, 12, dtype=np.int64),
            "height": np.full(n_rois, 12, dtype=np.int64),
            "mask_image_plane": np.zeros(n_rois, dtype=np.int64),
            "valid_roi": np.ones(n_rois, dtype=bool),
            "image_mask": masks,
        }
        for side in ("down", "left", "right", "up"):
            columns[f"max_correction_{side}"] = np.full(n_rois, 5.0)
        for name, values in columns.items():
            _replace(table, name, values)
    partial.rename(out)
    return out
