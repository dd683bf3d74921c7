"""The rest of a real experiment file, added to a demo file for the transfer benchmarks: what extraction reads
besides the ophys traces (the task, events) and what it never reads (stimulus templates, eye tracking), at the sizes
of a 75-minute session. Real Mesoscope planes are mostly the latter (layout document section 6).

- task: every dataset of AllenSDK's reference task file (tests/data/allensdk_nwb/task, written by AllenSDK
  2.16.2's writer: intervals, stimulus timestamps, running, licks, rewards, v_in/v_sig) at its own path, layout and
  compression, lengthened from its 11 minutes to 75 (frame-based series to 270,000 display frames). Ragged indices
  are not kept consistent: the benchmark moves bytes, it does not interpret them. Object references are skipped.
- events: /processing/ophys/event_detection as AllenSDK writes it (gzip, h5py's chunk guess), sparse like real events.
- stimulus templates: 8 images of 1200 x 1920, warped (uint8) and unwarped (float64), as
  ndx-aibs-stimulus-template stores them: 166 MB.
- eye tracking: three ellipse series (eye, pupil, corneal reflection) at 60 Hz plus blinks: 42 MB.

A part already in the file (a demo generator that writes the task) is left as it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
REFERENCE_TASK = REPO / "tests" / "data" / "allensdk_nwb" / "task" / "ref_task_scientifica.nwb"
TASK_GROUPS = ("/intervals", "/processing/stimulus", "/processing/running", "/processing/licking",
               "/processing/rewards", "/acquisition/v_in", "/acquisition/v_sig")
SESSION_SCALE = 75 / 11  # the reference task lasts 11 minutes
DISPLAY_FRAMES = 270_000  # 75 minutes at 60 Hz
TEMPLATE_SHAPE = (8, 1200, 1920)
EYE_SERIES = ("eye_tracking", "pupil_tracking", "corneal_reflection_tracking")


def _has_reference(dtype: np.dtype) -> bool:
    if dtype.names:
        return any(_has_reference(dtype.fields[name][0]) for name in dtype.names)
    return h5py.check_dtype(ref=dtype) is not None


def _copy_lengthened(source: h5py.Dataset, target: h5py.File) -> None:
    if _has_reference(source.dtype) or source.shape == ():
        return
    length = source.shape[0]
    new_length = int(round(length * SESSION_SCALE)) if length > 1 else length
    data = np.resize(source[()], (new_length, *source.shape[1:]))
    options = {"chunks": True, "compression": source.compression} if source.chunks else {}
    created = target.require_group(source.parent.name).create_dataset(source.name.rsplit("/", 1)[1], data=data,
                                                                      dtype=source.dtype, **options)
    for key, value in source.attrs.items():
        if not isinstance(value, h5py.Reference):
            created.attrs[key] = value


def add_task(f: h5py.File) -> None:
    with h5py.File(REFERENCE_TASK, "r") as reference:
        for group in TASK_GROUPS:
            if group in f:
                continue
            reference[group].visititems(
                lambda _, item: _copy_lengthened(item, f) if isinstance(item, h5py.Dataset) else None)


def add_events(f: h5py.File, rng: np.random.Generator) -> None:
    if "/processing/ophys/event_detection" in f:
        return
    dff = f["/processing/ophys/dff/traces"]
    n_frames, n_rois = dff["data"].shape
    events = np.zeros((n_frames, n_rois))
    spikes = rng.random((n_frames, n_rois)) < 0.005  # sparse, like real detected events
    events[spikes] = rng.exponential(0.3, spikes.sum())
    group = f.create_group("/processing/ophys/event_detection")
    group.create_dataset("data", data=events, chunks=True, compression="gzip")
    group.create_dataset("lambdas", data=rng.uniform(0.1, 1.0, n_rois))
    group.create_dataset("noise_stds", data=rng.uniform(0.01, 0.1, n_rois))
    group.create_dataset("rois", data=np.arange(n_rois, dtype=np.int64))
    group.create_dataset("timestamps", data=dff["timestamps"][()])


def add_stimulus_templates(f: h5py.File, rng: np.random.Generator) -> None:
    if "/stimulus/templates/images_A" in f:
        return
    group = f.require_group("/stimulus/templates/images_A")
    warped = rng.integers(0, 256, TEMPLATE_SHAPE, dtype=np.uint8)
    unwarped = warped.astype(np.float64)
    unwarped[:, :100] = np.nan  # pixels not seen after warping
    group.create_dataset("data", data=warped)
    group.create_dataset("unwarped", data=unwarped)


def add_eye_tracking(f: h5py.File, rng: np.random.Generator) -> None:
    if "/acquisition/EyeTracking" in f:
        return
    group = f.require_group("/acquisition/EyeTracking")
    timestamps = np.arange(DISPLAY_FRAMES) / 60.0
    for name in EYE_SERIES:
        series = group.create_group(name)
        series.create_dataset("data", data=rng.normal(200, 5, (DISPLAY_FRAMES, 2)))
        for column in ("area", "width", "height", "angle"):
            series.create_dataset(column, data=rng.normal(10, 1, DISPLAY_FRAMES))
        if name == "eye_tracking":
            series.create_dataset("timestamps", data=timestamps)
        else:
            series["timestamps"] = group["eye_tracking/timestamps"]  # a link, as pynwb writes shared timestamps
    blinks = group.create_group("likely_blink")
    blinks.create_dataset("data", data=rng.random(DISPLAY_FRAMES) < 0.01)


def with_session_content(demo_file: Path, out: Path, seed: int = 0) -> Path:
    """A copy of demo_file with task, events, stimulus templates and eye tracking added (once; kept)."""
    if out.exists():
        return out
    partial = out.with_name(out.stem + ".partial.nwb")
    shutil.copyfile(demo_file, partial)
    rng = np.random.default_rng(seed)
    with h5py.File(partial, "r+") as f:
        add_task(f)
        add_events(f, rng)
        add_stimulus_templates(f, rng)
        add_eye_tracking(f, rng)
    partial.rename(out)
    return out
