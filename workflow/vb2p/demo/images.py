"""Synthetic two-photon projection images that look like layer 2/3 of mouse visual cortex.

A container's field (larger than one view) holds the tissue: dark neuropil texture, bright puncta of dendrites,
labelled somata with dark nuclei, and unlabelled dim cells. Each session sees a window of it displaced by a known
sub-pixel rigid shift (applied in the Fourier domain, so it is exact for the band-limited tissue), with its own
brightness and its own soma activity, which is what a max projection records.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (filtered in the Fourier domain)."""
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (fy**2 + fx**2))
    smooth = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=shape)
    return smooth / smooth.std()


def add_somata(image: np.ndarray, ys, xs, radii, amplitudes) -> None:
    """Draw somata in place: a soft disc with a dimmer nucleus (GCaMP stays out of the nucleus)."""
    height, width = image.shape
    for y, x, radius, amplitude in zip(ys, xs, radii, amplitudes):
        half = int(np.ceil(2.5 * radius))
        y0, y1 = max(0, int(y) - half), min(height, int(y) + half + 2)
        x0, x1 = max(0, int(x) - half), min(width, int(x) + half + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        distance = np.hypot(yy - y, xx - x) / radius
        profile = np.exp(-(distance**4)) * (1.0 - 0.3 * np.exp(-((distance / 0.4) ** 2)))
        image[y0:y1, x0:x1] += amplitude * profile


def add_puncta(rng: np.random.Generator, image: np.ndarray, density_per_px: float) -> None:
    """Small bright dots: dendrite and axon cross-sections in the neuropil."""
    count = int(density_per_px * image.size)
    ys = rng.uniform(0, image.shape[0], count)
    xs = rng.uniform(0, image.shape[1], count)
    radii = rng.uniform(0.9, 1.8, count)
    add_somata(image, ys, xs, radii, rng.uniform(20, 90, count))


def container_field(rng: np.random.Generator, shape, neuron_y, neuron_x, neuron_radius) -> dict[str, np.ndarray]:
    """The tissue of one imaging plane, in field coordinates: what every session of the container looks at.

    Returns 'background' (neuropil, puncta, unlabelled cells) and 'neuron_amplitude', the peak brightness of each
    labelled neuron; sessions draw the labelled somata themselves because their brightness follows activity.
    """
    background = 14.0 + 6.0 * smooth_noise(rng, shape, 1.5) + 7.0 * smooth_noise(rng, shape, 18.0)
    add_puncta(rng, background, density_per_px=1 / 260)
    n_dim = max(5, len(neuron_y) // 2)
    add_somata(
        background,
        rng.uniform(0, shape[0], n_dim),
        rng.uniform(0, shape[1], n_dim),
        rng.uniform(4.0, 6.5, n_dim),
        rng.uniform(12, 30, n_dim),
    )
    return {
        "background": np.clip(background, 0, None),
        "neuron_amplitude": rng.uniform(70, 170, len(neuron_y)),
    }


def fourier_shift(image: np.ndarray, shift_y: float, shift_x: float) -> np.ndarray:
    """Displace image content by (+shift_y, +shift_x) pixels, sub-pixel exact for band-limited content."""
    spectrum = ndimage.fourier_shift(np.fft.rfft2(image), (shift_y, shift_x), n=image.shape[1])
    return np.fft.irfft2(spectrum, s=image.shape)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def session_projections(
    rng: np.random.Generator,
    field: dict[str, np.ndarray],
    neuron_y,
    neuron_x,
    neuron_radius,
    margin: int,
    view_shape: tuple[int, int],
    shift: tuple[float, float],
    gain: float,
    activity: np.ndarray,
    extra_cells: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Max projection and average image (uint8, view_shape) of one session.

    activity: per-neuron factor of how active the neuron was in this session (scales its max-projection brightness).
    extra_cells: (y, x, radius) in view coordinates of ROIs seen only in this session.
    """
    labelled = np.zeros_like(field["background"])
    add_somata(labelled, neuron_y, neuron_x, neuron_radius, field["neuron_amplitude"] * activity)
    resting = np.zeros_like(field["background"])
    add_somata(resting, neuron_y, neuron_x, neuron_radius, 0.25 * field["neuron_amplitude"])
    window = (slice(margin, margin + view_shape[0]), slice(margin, margin + view_shape[1]))
    max_tissue = fourier_shift(field["background"] + labelled, *shift)[window]
    mean_tissue = fourier_shift(0.9 * field["background"] + resting, *shift)[window]
    extra = np.zeros(view_shape)
    add_somata(extra, *extra_cells, rng.uniform(60, 140, len(extra_cells[0])))
    max_projection = gain * (max_tissue + extra) + rng.normal(0, 2.5, view_shape)
    average_image = gain * (0.55 * mean_tissue + 0.2 * extra) + rng.normal(0, 0.8, view_shape)
    return to_uint8(max_projection), to_uint8(average_image)


def roi_mask(view_shape: tuple[int, int], y: float, x: float, radius: float) -> np.ndarray:
    """Full-frame boolean mask of a soma ROI, as Allen stores image_mask."""
    yy, xx = np.ogrid[: view_shape[0], : view_shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= (radius + 0.5) ** 2


def mask_bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, width, height) of a mask's bounding box: the cell table's x/y/width/height columns."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


# Stimulus templates are stored at a tenth of the real monitor resolution (1200 x 1920): the same layout, small files.
TEMPLATE_SCREEN_SHAPE = (120, 192)
TEMPLATE_IMAGE_SHAPE = (92, 117)  # the natural image's (918, 1174) pixels, visible in the middle of the screen


def stimulus_template(image_name: str) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic natural-like image (1/f texture, luminance matched to mean 127), the same in every file:
    (warped: uint8 screen as shown, unwarped: float64 screen with NaN where the image is not seen)."""
    rng = np.random.default_rng([31, int(image_name.removeprefix("im"))])
    texture = sum(smooth_noise(rng, TEMPLATE_IMAGE_SHAPE, sigma) / (1 + sigma) for sigma in (1.0, 3.0, 9.0))
    image = np.clip(127.0 + 40.0 * (texture - texture.mean()) / texture.std(), 0, 255)
    unwarped = np.full(TEMPLATE_SCREEN_SHAPE, np.nan)
    top = (TEMPLATE_SCREEN_SHAPE[0] - TEMPLATE_IMAGE_SHAPE[0]) // 2
    left = (TEMPLATE_SCREEN_SHAPE[1] - TEMPLATE_IMAGE_SHAPE[1]) // 2
    unwarped[top : top + TEMPLATE_IMAGE_SHAPE[0], left : left + TEMPLATE_IMAGE_SHAPE[1]] = image
    # The spherical warp stretches the image over the whole screen, the way the monitor shows it to the eye.
    zoom = np.array(TEMPLATE_SCREEN_SHAPE) / np.array(TEMPLATE_IMAGE_SHAPE)
    warped = ndimage.zoom(image, zoom, order=1, grid_mode=True, mode="nearest")
    return to_uint8(warped), unwarped
