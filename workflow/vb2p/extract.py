"""One experiment's NWB file -> one chunked Zarr v3 store that `xarray.open_zarr` opens with labelled dimensions.

Store layout (`results/zarr/<ophys_experiment_id>.zarr`):

    dff             (time, cell)   float32 (or float64, lossless); chunks of extraction.time_chunk frames (3,072:
                                   ~100 s) x all cells: every cell over a window is a few contiguous chunks
    dff_by_cell     (time, cell)   the same values, one chunk per cell: reading one cell's whole trace is one read
    time            (time,)        float64 seconds: the ophys timestamps
    cell_roi_id     (cell,)        int64, one per ROI of the plane (the NWB cell table's id)
    cell_specimen_id (cell,)       int64; -1 where the cell was not matched across sessions (AllenSDK: NaN)
    valid_roi       (cell,)        bool; ophys_cells_table and AllenSDK's dff_traces hold the valid ROIs only
    roi_x, roi_y, roi_width, roi_height (cell,)  int64 bounding box of each mask
    mask_image_plane (cell,) int64, max_correction_down/left/right/up (cell,) float64: the rest of AllenSDK's
                                   cell_specimen_table
    roi_mask        (cell, y, x)   bool, full frame, compressed (it is almost all zeros)
    max_projection, average_image (y, x) uint8, in their true shape (Scientifica planes are not square); attributes
                                   spacing (mm per pixel) and unit, as AllenSDK's Image has them
    events          (time, cell)   float64 detected events, the file's compressed chunks moved as they are;
                                   events_lambda, events_noise_std (cell,)  (vb2p.task, vb2p.chunks)
    task/<table>.parquet           stimulus_presentations, trials, running_speed, raw_running_speed, licks, rewards,
                                   stimulus_timestamps, eye_tracking (when the file has it): AllenSDK's tables
    root attributes: experiment, session, container, mouse and rig metadata; has_task and the task's counts;
                     provenance (source URL, version id, BLAKE2b, manifest version, workflow version)

The extractor reads the documented HDF5 paths directly with h5py (robust to NWB schema versions and fast), streams
dF/F and events in blocks of whole time chunks (memory does not grow with session length), writes under a temporary
name and renames the store only when it is complete. `vb2p.open_experiment` reads a store back with AllenSDK's names.
"""

from __future__ import annotations

import contextlib
import errno
import datetime as dt
import logging
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from vb2p import __version__, layout
from vb2p.errors import NwbError, OutputError
from vb2p.files import partial_directory, replace_directory
from vb2p.task import write_session_task, write_task

log = logging.getLogger(__name__)
UNMATCHED = layout.UNMATCHED_CELL_SPECIMEN_ID
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
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
    block_bytes: int = 32 * 1024 * 1024  # dF/F values held per block (NWB rows, store columns): bounds memory
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


def check_ids(stated: dict, expected: dict, where: str) -> None:
    """The ids the file states in /general/metadata are the expected ones: a file of another experiment (a wrong
    path, a mixed-up cache) would otherwise be stored as this one. A release file states them all."""
    for key, value in expected.items():
        if key not in stated:
            raise NwbError(f"{where}: {layout.NWB_METADATA} states no {key}, so the file cannot be told to be of"
                           f" {key} {value}; every file of the release states it: download the file again")
        if int(_scalar(stated[key])) != int(value):
            raise NwbError(f"{where}: the file says its {key} is {_scalar(stated[key])}, not {value}: the file at this"
                           " path is another's; download it again")


@contextlib.contextmanager
def reading(where: str):
    """Errors while reading the NWB file are the file's: name the experiment and the file."""
    try:
        yield
    except (OSError, KeyError, ValueError) as error:
        raise NwbError(f"{where}: reading failed (corrupt or truncated file?): {error}") from error


@contextlib.contextmanager
def writing(store: Path):
    """Errors while writing the store are the output's (disk full, read-only, no permission), never the NWB's."""
    try:
        yield
    except OSError as error:
        raise OutputError(
            f"writing {store} failed: {error.strerror or error}. The NWB file is fine: free space on, or fix the "
            f"permissions of, {store.parent}, then run again"
        ) from error


@dataclass
class Plane:
    """What one experiment file holds, read from the NWB: small arrays in memory, the large ones as datasets."""

    metadata: dict
    timestamps: np.ndarray  # (n_frames,) float64 seconds
    dff: h5py.Dataset  # (n_frames, n_rois) float64, time first
    roi_order: np.ndarray  # dF/F column k is row roi_order[k] of the cell table
    cells: dict[str, np.ndarray]  # per-ROI columns in dF/F column order
    masks: h5py.Dataset  # (n_table_rows, height, width) bool
    max_projection: np.ndarray  # (height, width) uint8
    average_image: np.ndarray
    image_spacing_mm: dict[str, float]  # mm per pixel of each image

    @property
    def n_frames(self) -> int:
        return self.dff.shape[0]

    @property
    def n_rois(self) -> int:
        return self.dff.shape[1]


def read_plane(f: h5py.File, experiment_id: int, where: str) -> Plane:
    """Open the datasets of one experiment file and read its small arrays, checking that they agree."""
    metadata = nwb_metadata(f, where)
    check_ids(metadata, {"ophys_experiment_id": experiment_id}, where)
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
    cells = {
        "cell_roi_id": table["id"][:][order].astype(np.int64),
        "cell_specimen_id": table["cell_specimen_id"][:][order].astype(np.int64),
        "valid_roi": table["valid_roi"][:][order].astype(bool),
        **{f"roi_{column}": table[column][:][order].astype(np.int64) for column in ("x", "y", "width", "height")},
        **{name: table[name][:][order].astype(np.int64 if name == "mask_image_plane" else np.float64)
           for name in layout.NWB_CELL_TABLE_EXTRAS},
    }
    images = {name: _require(f, path, where) for name, path in (("max_projection", layout.NWB_MAX_PROJECTION),
                                                                  ("average_image", layout.NWB_AVERAGE_IMAGE))}
    return Plane(
        metadata=metadata,
        timestamps=timestamps,
        dff=dff,
        roi_order=order,
        cells=cells,
        masks=table["image_mask"],
        max_projection=images["max_projection"][:].astype(np.uint8),
        average_image=images["average_image"][:].astype(np.uint8),
        # AllenSDK's Image spacing: the NWB resolution x 10, in mm (nwb_utils.get_image)
        image_spacing_mm={name: float(image.attrs["resolution"]) * 10 for name, image in images.items()},
    )


@contextlib.contextmanager
def _output_directory(nwb: str | Path | BinaryIO, out_path: Path, where: str):
    """Open the NWB file and yield it with an empty directory to write into, beside out_path; the directory is
    renamed to out_path once complete and removed on failure: a killed or failed step never leaves an output that
    looks finished."""
    partial = partial_directory(out_path)
    with reading(where):
        handle = h5py.File(nwb, "r")
    try:
        with handle as f:
            with writing(partial):
                shutil.rmtree(partial, ignore_errors=True)  # left half-written by a killed run
                partial.mkdir(parents=True)
            yield f, partial
        with writing(out_path):
            replace_directory(partial, out_path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def extract_experiment(
    nwb: str | Path | BinaryIO,
    store_path: str | Path,
    ophys_experiment_id: int,
    provenance: dict | None = None,
    options: ExtractionOptions = ExtractionOptions(),
    transfer=None,
    session_task: str | Path | None = None,
) -> dict:
    """Write the Zarr store of one experiment; returns a summary (ids, counts, rate) for the index.

    nwb: the file's path, or a readable file object (vb2p.remote's ranged reads of an S3 object). transfer: what
    counts the bytes that file object moves (its `as_record()` goes into the store's provenance). session_task: the
    directory extract_session_task wrote for the experiment's session, whose tables the store takes when they are
    this file's task (the planes of a Mesoscope session share one); without it, the task is read from this file.
    """
    where = f"experiment {ophys_experiment_id} ({nwb})"
    with _output_directory(nwb, Path(store_path), where) as (f, partial):
        with reading(where):
            plane = read_plane(f, ophys_experiment_id, where)
        with writing(partial):
            group = zarr.open_group(partial, mode="w", zarr_format=3)
        return write_store(f, group, partial, plane, ophys_experiment_id, where, provenance or {}, options,
                           transfer, session_task)


def extract_session_task(nwb: str | Path | BinaryIO, out_dir: str | Path, ophys_experiment_id: int,
                         ophys_session_id: int) -> dict:
    """The task of one session, read once from one of its planes' files (vb2p.task.write_session_task): stimulus
    presentations, trials, running, licks, rewards and eye tracking are the session's, the same in every plane's
    file, so a Mesoscope session of 8 planes computes them once instead of 8 times."""
    where = f"experiment {ophys_experiment_id} of session {ophys_session_id} ({nwb})"
    with _output_directory(nwb, Path(out_dir), where) as (f, partial):
        with reading(where):
            check_ids(_require(f, layout.NWB_METADATA, where).attrs,  # only the ids: the plane is not read here
                      {"ophys_experiment_id": ophys_experiment_id, "ophys_session_id": ophys_session_id}, where)
        return _task_step(lambda: write_session_task(f, partial, ophys_session_id, ophys_experiment_id, where),
                          partial, where)


def write_store(f: h5py.File, group: zarr.Group, partial: Path, plane: Plane, experiment_id: int, where: str,
                provenance: dict, options: ExtractionOptions, transfer=None, session_task: Path | None = None) -> dict:
    """Every array, table and attribute of the store, in the order a reader of this function follows the data."""
    with writing(partial):
        write_ids_and_images(group, plane, options)
    copy_masks(group, partial, plane, where, options)
    dff = copy_traces(group, partial, plane, where, options)
    task_summary = copy_task(f, group, dff, partial, plane, where, options, session_task)
    summary = {**plane_summary(plane, experiment_id), **task_summary}
    with writing(partial):
        read = {"transfer": transfer.as_record()} if transfer is not None else {}  # every read done by now
        group.update_attributes({**store_attributes(summary, plane.metadata, {**provenance, **read}, options),
                                 **task_summary})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns that consolidated metadata is not in the v3 spec yet
            zarr.consolidate_metadata(str(partial))
    return summary


def _array(group: zarr.Group, name: str, shape: tuple, dtype: str, chunks: tuple, dims: list[str], attrs: dict,
           options: ExtractionOptions, fill_value=0, compressed: bool = True) -> zarr.Array:
    return group.create_array(
        name,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        compressors=_codec(options.compression_level) if compressed else None,
        dimension_names=dims,
        fill_value=fill_value,
        attributes=attrs,
    )


CELL_ARRAY_ATTRIBUTES = {
    "cell_roi_id": {"long_name": "ROI id (NWB cell table id)"},
    "cell_specimen_id": {
        "long_name": "cell id matched across the sessions of a container",
        "unmatched_value": UNMATCHED,
        "comment": f"{UNMATCHED} marks ROIs not matched across sessions (AllenSDK returns NaN for them)",
    },
    "valid_roi": {"long_name": "ROI passed Allen's classification"},
    **{f"roi_{c}": {"long_name": f"mask bounding box {c}"} for c in ("x", "y", "width", "height")},
    **{name: {"long_name": f"cell table {name}"} for name in layout.NWB_CELL_TABLE_EXTRAS},
}


def write_ids_and_images(group: zarr.Group, plane: Plane, options: ExtractionOptions) -> None:
    """The time axis, the per-ROI columns and the two projection images (small: written whole)."""
    n_frames, n_rois = plane.n_frames, plane.n_rois
    time = _array(group, "time", (n_frames,), "float64", (n_frames,), ["time"],
                  {"units": "seconds", "long_name": "ophys timestamps"}, options)
    time[...] = plane.timestamps
    for name, values in plane.cells.items():
        _array(group, name, (n_rois,), str(values.dtype), (n_rois,), ["cell"], CELL_ARRAY_ATTRIBUTES[name],
               options)[...] = values
    for name in ("max_projection", "average_image"):
        image = getattr(plane, name)
        spacing = plane.image_spacing_mm[name]
        _array(group, name, image.shape, "uint8", image.shape, ["y", "x"], {"spacing": [spacing, spacing], "unit": "mm"},
               options)[...] = image


def copy_masks(group: zarr.Group, partial: Path, plane: Plane, where: str, options: ExtractionOptions) -> None:
    """Full-frame ROI masks in dF/F column order, a block of ROIs at a time (they are n_rois x 512 x 512 bool)."""
    height, width = plane.max_projection.shape
    n_rois = plane.n_rois
    mask_chunk = max(1, min(n_rois, 64))
    with writing(partial):
        roi_mask = _array(
            group, "roi_mask", (n_rois, height, width), "bool", (mask_chunk, height, width), ["cell", "y", "x"],
            {"coordinates": CELL_COORDINATES, "long_name": "ROI masks, full field of view"}, options, fill_value=False,
        )
    for start in range(0, n_rois, mask_chunk):
        rows = plane.roi_order[start : start + mask_chunk]
        with reading(where):
            # h5py needs increasing indices; the ROI region is almost always 0..n-1.
            block = plane.masks[int(rows.min()) : int(rows.max()) + 1][rows - rows.min()].astype(bool)
        with writing(partial):
            roi_mask[start : start + len(rows)] = block


def copy_traces(group: zarr.Group, partial: Path, plane: Plane, where: str, options: ExtractionOptions) -> zarr.Array:
    """dF/F in its two layouts (see ExtractionOptions); returns the time-chunked one."""
    n_frames, n_rois = plane.n_frames, plane.n_rois
    attrs = {"coordinates": CELL_COORDINATES, "units": "dF/F"}
    with writing(partial):
        by_time = _array(
            group, "dff", (n_frames, n_rois), options.dff_dtype, (max(1, min(options.time_chunk, n_frames)), n_rois),
            ["time", "cell"], {**attrs, "long_name": "dF/F, chunked by time (fast: every cell over a window)"},
            options, fill_value=np.nan, compressed=False,
        )
        by_cell = _array(
            group, "dff_by_cell", (n_frames, n_rois), options.dff_dtype, (n_frames, 1), ["time", "cell"],
            {**attrs, "long_name": "dF/F, one chunk per cell (fast: one cell's whole trace); same values as dff"},
            options, fill_value=np.nan, compressed=False,
        )
    _copy_dff(plane.dff, by_time, by_cell, partial, where, options)
    return by_time


def copy_task(f: h5py.File, group: zarr.Group, dff: zarr.Array, partial: Path, plane: Plane, where: str,
              options: ExtractionOptions, session_task: Path | None = None) -> dict:
    """The task tables and the events (vb2p.task); returns the task's root attributes."""
    return _task_step(lambda: write_task(f, group, partial, dff, plane.roi_order, plane.cells["valid_roi"], where,
                                         options.block_bytes, session_task, plane.metadata.get("ophys_session_id")),
                      partial, where)


def _task_step(step, partial: Path, where: str):
    """Reads and writes interleave in the task's steps, so an OS error is told apart by its kind: no space, quota or
    a read-only file system can only be the output's."""
    try:
        return step()
    except OSError as error:
        if error.errno in WRITE_ERRNOS:
            with writing(partial):
                raise
        with reading(where):
            raise


def plane_summary(plane: Plane, experiment_id: int) -> dict:
    """Ids, counts and rates of the plane: the index's row, the log line and the store's attributes."""
    n_frames = plane.n_frames
    span = plane.timestamps[-1] - plane.timestamps[0] if n_frames > 1 else 0.0
    height, width = plane.max_projection.shape
    return {
        "ophys_experiment_id": int(experiment_id),
        "n_frames": int(n_frames),
        "n_rois": int(plane.n_rois),
        "n_valid_rois": int(plane.cells["valid_roi"].sum()),
        "frame_rate": float(plane.metadata["ophys_frame_rate"]),
        "measured_frame_rate": float((n_frames - 1) / span) if span > 0 else float("nan"),
        "height": int(height),
        "width": int(width),
    }


def store_attributes(summary: dict, metadata: dict, provenance: dict, options: ExtractionOptions) -> dict:
    counts = {k: summary[k] for k in ("ophys_experiment_id", "n_frames", "n_rois", "n_valid_rois", "measured_frame_rate")}
    return {
        **{k: v for k, v in metadata.items() if v is not None},
        **counts,
        "dff_dtype": options.dff_dtype,
        "extraction": asdict(options),
        "provenance": {
            **provenance,
            "workflow": "vb2p",
            "workflow_version": __version__,
            "extracted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _copy_dff(dff: h5py.Dataset, by_time, by_cell, partial: Path, where: str, options: ExtractionOptions) -> None:
    """Copy dF/F into both layouts, holding at most options.block_bytes of values at a time.

    Column k of dF/F is ROI order[k] and the id arrays are already in that order, so values copy as they are.
    The NWB is read once, in whole rows (contiguous bytes: one sequential read per block, also cheap over ranged S3
    reads); the one-chunk-per-cell layout is then filled from the time-chunked array just written, a block of cells
    at a time (the same values: both hold the NWB's float64 cast to the store's dtype). Blocks are whole chunks of the
    array written, so every chunk is written exactly once.
    """
    n_frames, n_rois = dff.shape
    time_chunk = by_time.chunks[0]
    rows_per_block = max(1, options.block_bytes // (8 * n_rois) // time_chunk) * time_chunk
    for start in range(0, n_frames, rows_per_block):
        with reading(where):
            block = dff[start : start + rows_per_block]
        with writing(partial):
            by_time[start : start + block.shape[0]] = block.astype(options.dff_dtype, copy=False)
    # A block of by_time's cells (the store's dtype) is read whole chunks at a time.
    cells_per_block = max(1, options.block_bytes // (by_time.dtype.itemsize * n_frames))
    with writing(partial):
        for start in range(0, n_rois, cells_per_block):
            by_cell[:, start : start + cells_per_block] = by_time[:, start : start + cells_per_block]
