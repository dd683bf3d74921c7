"""One experiment's NWB file -> one chunked Zarr v3 store that `xarray.open_zarr` opens with labelled dimensions.

Store layout (`results/zarr/<ophys_experiment_id>.zarr`):

    dff             (time, cell)   float32 (or float64, lossless); chunks of a minute of frames x all cells:
                                   reading every cell over a window touches a few contiguous chunks
    dff_by_cell     (time, cell)   the same values, one chunk per cell: reading one cell's whole trace is one read
    time            (time,)        float64 seconds: the ophys timestamps
    cell_roi_id     (cell,)        int64, one per ROI of the plane (the NWB cell table's id)
    cell_specimen_id (cell,)       int64; -1 where the cell was not matched across sessions (AllenSDK: NaN)
    valid_roi       (cell,)        bool; ophys_cells_table and AllenSDK's dff_traces hold the valid ROIs only
    roi_x, roi_y, roi_width, roi_height (cell,)  int64 bounding box of each mask
    roi_mask        (cell, y, x)   bool, full frame, compressed (it is almost all zeros)
    max_projection, average_image (y, x) uint8, in their true shape (Scientifica planes are not square)
    root attributes: experiment, session, container, mouse and rig metadata; provenance (source URL, version id,
                     BLAKE2b, manifest version, workflow version)

The extractor reads the documented HDF5 paths directly with h5py (robust to NWB schema versions and fast), streams
dF/F in blocks of whole time chunks (memory does not grow with session length), writes under a temporary name
and renames the store only when it is complete.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from vb2p import __version__, layout
from vb2p.errors import NwbError

log = logging.getLogger(__name__)
UNMATCHED = layout.UNMATCHED_CELL_SPECIMEN_ID
CELL_COORDINATES = "cell_roi_id cell_specimen_id valid_roi"


@dataclass(frozen=True)
class ExtractionOptions:
    """Layout of dF/F; the defaults were chosen by benchmark (numbers and reasons in BENCHMARKS.md).

    No single chunk shape serves both reads: one cell's trace wants a cell's frames contiguous, a time window
    wants a span of frames of every cell contiguous. So dF/F is stored twice, uncompressed (noisy dF/F shrinks by
    ~10% at a decoding cost larger than the read itself); float32 keeps the pair the size of the NWB's float64.
    """

    dff_dtype: str = "float32"
    time_chunk: int = 3072  # frames per chunk of `dff` (99 s at 31 Hz, 287 s at 11 Hz)
    block_bytes: int = 32 * 1024 * 1024  # float64 read from the NWB per block: bounds memory (bench: 32 MB)
    compression_level: int = 3  # masks and images only

    def __post_init__(self):
        if self.dff_dtype not in ("float32", "float64"):
            raise ValueError(f"dff_dtype must be float32 or float64, not {self.dff_dtype!r}")


def _codec(level: int) -> BloscCodec:
    # zstd with byte shuffle: fast to decode, and the masks and images shrink to almost nothing.
    return BloscCodec(cname="zstd", clevel=level, shuffle="shuffle")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _scalar(value):
    """HDF5 attribute or dataset value -> a JSON-able Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_scalar(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _require(f: h5py.File, path: str, where: str):
    if path not in f:
        raise NwbError(f"{where}: {path} is missing; this is not a Visual Behavior behavior_ophys_experiment file")
    return f[path]


def _age_in_days(age: str) -> int | None:
    text = age.strip().upper()
    if text.startswith("P") and text.endswith("D") and text[1:-1].isdigit():
        return int(text[1:-1])
    return None


def nwb_metadata(f: h5py.File, where: str) -> dict:
    """Experiment metadata as AllenSDK reports it, from /general/metadata, the subject and the imaging plane."""
    attrs = _require(f, layout.NWB_METADATA, where).attrs
    subject = _require(f, layout.NWB_SUBJECT, where)
    plane = _require(f, layout.NWB_IMAGING_PLANE, where)
    genotype = _text(subject["genotype"][()])
    metadata = {
        key: _scalar(attrs[key])
        for key in (
            "ophys_experiment_id",
            "ophys_session_id",
            "ophys_container_id",
            "behavior_session_id",
            "imaging_depth",
            "targeted_imaging_depth",
            "field_of_view_width",
            "field_of_view_height",
            "imaging_plane_group",
            "imaging_plane_group_count",
            "session_type",
            "equipment_name",
            "project_code",
            "stimulus_frame_rate",
            "behavior_session_uuid",
        )
        if key in attrs
    }
    metadata.update(
        mouse_id=_text(subject["subject_id"][()]),
        full_genotype=genotype,
        cre_line=genotype.split(";")[0].removesuffix("/wt"),
        sex=_text(subject["sex"][()]) if "sex" in subject else None,
        age_in_days=_age_in_days(_text(subject["age"][()])) if "age" in subject else None,
        reporter_line=_scalar(subject.attrs["reporter_line"]) if "reporter_line" in subject.attrs else None,
        driver_line=_scalar(subject.attrs["driver_line"]) if "driver_line" in subject.attrs else None,
        indicator=_text(plane["indicator"][()]),
        targeted_structure=_text(plane["location"][()]),
        ophys_frame_rate=float(plane["imaging_rate"][()]),
        excitation_lambda=float(plane["excitation_lambda"][()]) if "excitation_lambda" in plane else None,
        date_of_acquisition=_text(f["session_start_time"][()]),
    )
    channel = plane.get("channel_1")
    if channel is not None and "emission_lambda" in channel:
        metadata["emission_lambda"] = float(channel["emission_lambda"][()])
    return metadata


def _partial_path(store: Path) -> Path:
    return store.with_name(f".{store.name}.partial")


def extract_experiment(
    nwb_path: str | Path,
    store_path: str | Path,
    ophys_experiment_id: int,
    provenance: dict | None = None,
    options: ExtractionOptions = ExtractionOptions(),
) -> dict:
    """Write the Zarr store of one experiment; returns a summary (ids, counts, rate) for the index."""
    nwb_path, store_path = Path(nwb_path), Path(store_path)
    where = f"experiment {ophys_experiment_id} ({nwb_path})"
    try:
        handle = h5py.File(nwb_path, "r")
    except OSError as error:
        raise NwbError(f"{where}: not a readable NWB/HDF5 file (corrupt or truncated?): {error}") from error
    partial = _partial_path(store_path)
    try:
        with handle as f:
            summary = _write_store(f, partial, ophys_experiment_id, where, provenance or {}, options)
    except (OSError, KeyError, ValueError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise NwbError(f"{where}: reading failed (corrupt or truncated file?): {error}") from error
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if store_path.exists():
        shutil.rmtree(store_path)
    os.replace(partial, store_path)
    return summary


def _write_store(f: h5py.File, partial: Path, experiment_id: int, where: str, provenance: dict, options) -> dict:
    metadata = nwb_metadata(f, where)
    if int(metadata.get("ophys_experiment_id", experiment_id)) != int(experiment_id):
        raise NwbError(f"{where}: the file says it is experiment {metadata['ophys_experiment_id']}")
    dff = _require(f, layout.NWB_DFF, where)
    timestamps = _require(f, layout.NWB_TIMESTAMPS, where)[:].astype(np.float64)
    table = _require(f, layout.NWB_CELL_TABLE, where)
    n_frames, n_rois = dff.shape
    if timestamps.shape != (n_frames,):
        raise NwbError(f"{where}: {n_frames} dF/F frames but {timestamps.shape[0]} timestamps")
    # dF/F columns follow the ROI region, which indexes rows of the cell table.
    order = _require(f, layout.NWB_DFF_ROIS, where)[:] if layout.NWB_DFF_ROIS in f else np.arange(n_rois)
    if len(order) != n_rois:
        raise NwbError(f"{where}: the dF/F ROI region lists {len(order)} ROIs for {n_rois} columns")
    roi_ids = table["id"][:][order].astype(np.int64)
    specimen_ids = table["cell_specimen_id"][:][order].astype(np.int64)
    valid = table["valid_roi"][:][order].astype(bool)
    max_projection = _require(f, layout.NWB_MAX_PROJECTION, where)[:]
    average_image = _require(f, layout.NWB_AVERAGE_IMAGE, where)[:]
    height, width = max_projection.shape

    shutil.rmtree(partial, ignore_errors=True)  # a store half-written by a killed run
    group = zarr.open_group(partial, mode="w", zarr_format=3)
    codec = _codec(options.compression_level)
    time_chunk = max(1, min(options.time_chunk, n_frames))

    def array(name, data_or_shape, dtype, chunks, dims, attrs, fill_value=0, compressed=True):
        created = group.create_array(
            name,
            shape=data_or_shape if isinstance(data_or_shape, tuple) else data_or_shape.shape,
            dtype=dtype,
            chunks=chunks,
            compressors=codec if compressed else None,
            dimension_names=dims,
            fill_value=fill_value,
            attributes=attrs,
        )
        if not isinstance(data_or_shape, tuple):
            created[...] = data_or_shape
        return created

    array("time", timestamps, "float64", (n_frames,), ["time"], {"units": "seconds", "long_name": "ophys timestamps"})
    array("cell_roi_id", roi_ids, "int64", (n_rois,), ["cell"], {"long_name": "ROI id (NWB cell table id)"})
    array(
        "cell_specimen_id",
        specimen_ids,
        "int64",
        (n_rois,),
        ["cell"],
        {
            "long_name": "cell id matched across the sessions of a container",
            "unmatched_value": UNMATCHED,
            "comment": f"{UNMATCHED} marks ROIs not matched across sessions (AllenSDK returns NaN for them)",
        },
    )
    array("valid_roi", valid, "bool", (n_rois,), ["cell"], {"long_name": "ROI passed Allen's classification"})
    for column in ("x", "y", "width", "height"):
        values = table[column][:][order].astype(np.int64)
        array(f"roi_{column}", values, "int64", (n_rois,), ["cell"], {"long_name": f"mask bounding box {column}"})
    array("max_projection", max_projection.astype(np.uint8), "uint8", (height, width), ["y", "x"], {})
    array("average_image", average_image.astype(np.uint8), "uint8", (height, width), ["y", "x"], {})

    masks = table["image_mask"]
    mask_chunk = min(n_rois, 64)
    roi_mask = array(
        "roi_mask", (n_rois, height, width), "bool", (mask_chunk, height, width), ["cell", "y", "x"],
        {"coordinates": CELL_COORDINATES, "long_name": "ROI masks, full field of view"}, fill_value=False,
    )
    for start in range(0, n_rois, mask_chunk):
        rows = order[start : start + mask_chunk]
        # h5py needs increasing indices; the ROI region is almost always 0..n-1.
        block = masks[int(rows.min()) : int(rows.max()) + 1][rows - rows.min()]
        roi_mask[start : start + len(rows)] = block.astype(bool)

    attrs = {"coordinates": CELL_COORDINATES, "units": "dF/F"}
    by_time = array(
        "dff", (n_frames, n_rois), options.dff_dtype, (time_chunk, n_rois), ["time", "cell"],
        {**attrs, "long_name": "dF/F, chunked by time (fast: every cell over a window)"},
        fill_value=np.nan, compressed=False,
    )
    by_cell = array(
        "dff_by_cell", (n_frames, n_rois), options.dff_dtype, (n_frames, 1), ["time", "cell"],
        {**attrs, "long_name": "dF/F, one chunk per cell (fast: one cell's whole trace); same values as dff"},
        fill_value=np.nan, compressed=False,
    )
    _copy_dff(dff, by_time, by_cell, options)

    n_valid = int(valid.sum())
    frame_rate = (n_frames - 1) / (timestamps[-1] - timestamps[0]) if n_frames > 1 else float("nan")
    group.attrs.update(
        {
            **{k: v for k, v in metadata.items() if v is not None},
            "ophys_experiment_id": int(experiment_id),
            "n_frames": int(n_frames),
            "n_rois": int(n_rois),
            "n_valid_rois": n_valid,
            "measured_frame_rate": float(frame_rate),
            "dff_dtype": options.dff_dtype,
            "extraction": asdict(options),
            "provenance": {
                **provenance,
                "workflow": "vb2p",
                "workflow_version": __version__,
                "extracted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr warns that consolidated metadata is not in the v3 spec yet
        zarr.consolidate_metadata(str(partial))
    return {
        "ophys_experiment_id": int(experiment_id),
        "n_frames": int(n_frames),
        "n_rois": int(n_rois),
        "n_valid_rois": n_valid,
        "frame_rate": float(metadata["ophys_frame_rate"]),
        "measured_frame_rate": float(frame_rate),
        "height": int(height),
        "width": int(width),
        "metadata": metadata,
    }


def _copy_dff(dff: h5py.Dataset, by_time, by_cell, options: ExtractionOptions) -> None:
    """Copy dF/F into both layouts, reading at most options.block_bytes of float64 at a time.

    Column k of dF/F is ROI order[k] and the id arrays are already in that order, so values copy as they are.
    Blocks are whole chunks of the array written, so every chunk is written exactly once.
    """
    n_frames, n_rois = dff.shape
    if n_frames * n_rois * 8 <= options.block_bytes:  # small plane: one read serves both layouts
        values = dff[:].astype(options.dff_dtype, copy=False)
        by_time[...] = values
        by_cell[...] = values
        return
    time_chunk = by_time.chunks[0]
    rows_per_block = max(1, options.block_bytes // (8 * n_rois) // time_chunk) * time_chunk
    for start in range(0, n_frames, rows_per_block):
        block = dff[start : start + rows_per_block]  # whole rows: one sequential read of contiguous bytes
        by_time[start : start + block.shape[0]] = block.astype(options.dff_dtype, copy=False)
    cells_per_block = max(1, options.block_bytes // (8 * n_frames))
    for start in range(0, n_rois, cells_per_block):
        block = dff[:, start : start + cells_per_block]
        by_cell[:, start : start + block.shape[1]] = block.astype(options.dff_dtype, copy=False)

