"""Container alignment: how far each session's field of view is displaced from the container's reference session.

Shifts are measured by phase correlation of the max projections (scikit-image's phase_cross_correlation, refined to
1/upsample px by its upsampled DFT; Guizar-Sicairos et al., Opt. Lett. 2008). Convention: (shift_y, shift_x) is how
far the image content of a session is displaced relative to the reference, i.e. session(y, x) ~ reference(y - shift_y,
x - shift_x); registering a session moves it back by that amount.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from scipy import ndimage
from skimage.registration import phase_cross_correlation

UPSAMPLE = 20  # 1/20 px precision in the refinement


def _prepare(image: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance and tapered to the edges, so brightness and borders do not drive the peak."""
    values = image.astype(np.float64)
    values = (values - values.mean()) / (values.std() or 1.0)
    window = np.outer(np.hanning(values.shape[0]), np.hanning(values.shape[1]))
    return values * window


def common_crop(*images: np.ndarray) -> list[np.ndarray]:
    """Crop images to their common top-left-anchored shape (sessions of a plane can differ by a few columns)."""
    height = min(i.shape[0] for i in images)
    width = min(i.shape[1] for i in images)
    return [i[:height, :width] for i in images]


def measure_shift(reference: np.ndarray, moving: np.ndarray, upsample: int = UPSAMPLE) -> tuple[float, float]:
    """(shift_y, shift_x) of moving's content relative to reference, sub-pixel."""
    reference, moving = common_crop(reference, moving)
    # skimage returns the shift that registers moving onto reference: the opposite of the content's displacement.
    shift, _, _ = phase_cross_correlation(_prepare(reference), _prepare(moving), upsample_factor=upsample,
                                          normalization="phase")
    return float(-shift[0]), float(-shift[1])


def register(image: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Move image content back by shift (Fourier shift; sub-pixel), so it lines up with the reference."""
    spectrum = ndimage.fourier_shift(np.fft.fft2(image.astype(np.float64)), (-shift[0], -shift[1]))
    return np.fft.ifft2(spectrum).real


def normalised_cross_correlation(a: np.ndarray, b: np.ndarray, margin: int = 0) -> float:
    """Pearson correlation of two images, ignoring a border of `margin` pixels (wrapped by registration)."""
    a, b = common_crop(a, b)
    if margin:
        a, b = a[margin:-margin, margin:-margin], b[margin:-margin, margin:-margin]
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@dataclass
class SessionView:
    """What alignment needs of one experiment, read from its Zarr store (valid ROIs only)."""

    ophys_experiment_id: int
    session_type: str
    date: str
    max_projection: np.ndarray
    roi_mask: np.ndarray
    cell_specimen_id: np.ndarray


def load_view(store: str | Path) -> SessionView:
    group = zarr.open_group(str(store), mode="r")
    valid = group["valid_roi"][:]
    attrs = group.attrs
    return SessionView(
        ophys_experiment_id=int(attrs["ophys_experiment_id"]),
        session_type=str(attrs["session_type"]),
        date=str(attrs["date_of_acquisition"])[:10],
        max_projection=group["max_projection"][:],
        roi_mask=group["roi_mask"][:][valid],
        cell_specimen_id=group["cell_specimen_id"][:][valid],
    )


def align_container(views: list[SessionView], upsample: int = UPSAMPLE) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Shifts, correlations and matched cells of every session against the first one (acquisition order).

    views must be in acquisition order; the first is the reference session.
    """
    reference = views[0]
    reference_cells = {int(c) for c in reference.cell_specimen_id if c >= 0}
    rows, registered = [], []
    for view in views:
        shift = (0.0, 0.0) if view is reference else measure_shift(reference.max_projection, view.max_projection, upsample)
        aligned = register(view.max_projection, shift)
        margin = int(np.ceil(max(abs(shift[0]), abs(shift[1])))) + 2
        cells = {int(c) for c in view.cell_specimen_id if c >= 0}
        rows.append(
            {
                "ophys_experiment_id": view.ophys_experiment_id,
                "session_type": view.session_type,
                "date_of_acquisition": view.date,
                "is_reference": view is reference,
                "shift_y": shift[0],
                "shift_x": shift[1],
                "ncc_before": normalised_cross_correlation(reference.max_projection, view.max_projection, margin),
                "ncc_after": normalised_cross_correlation(reference.max_projection, aligned, margin),
                "n_cells": len(view.cell_specimen_id),
                "n_matched_to_reference": len(cells & reference_cells),
            }
        )
        registered.append(aligned)
    return pd.DataFrame(rows), registered
