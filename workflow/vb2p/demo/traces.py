"""Synthetic dF/F with calcium-like transients: sparse events convolved with the indicator's kernel, a response
locked to the 750 ms image cadence of the change-detection task, slow state drift, and measurement noise."""

from __future__ import annotations

import numpy as np

DECAY_S = {"GCaMP6f": 0.4, "GCaMP6s": 1.2}
RISE_S = 0.05
FLASH_PERIOD_S = 0.75  # 250 ms image, 500 ms grey
FLASH_ON_S = 0.25
CELL_BLOCK = 32  # cells convolved together: bounds the FFT work array


def ophys_timestamps(rng: np.random.Generator, n_frames: int, rate_hz: float) -> np.ndarray:
    """Frame times in seconds: imaging starts a few seconds into the session, at a constant frame period."""
    start = 8.0 + rng.uniform(0.0, 1.5)
    return start + np.arange(n_frames, dtype=np.float64) / rate_hz


def calcium_kernel(rate_hz: float, indicator: str) -> np.ndarray:
    decay = DECAY_S.get(indicator, DECAY_S["GCaMP6f"])
    t = np.arange(int(np.ceil(6 * decay * rate_hz)) + 1) / rate_hz
    kernel = (1.0 - np.exp(-t / RISE_S)) * np.exp(-t / decay)
    return kernel / kernel.max()


def dff_traces(
    rng: np.random.Generator, timestamps: np.ndarray, n_cells: int, rate_hz: float, indicator: str
) -> np.ndarray:
    """(n_frames, n_cells) float64 dF/F, time first as in the NWB files."""
    n_frames = len(timestamps)
    dt = 1.0 / rate_hz
    flash_on = (np.mod(timestamps, FLASH_PERIOD_S) < FLASH_ON_S).astype(np.float64)
    state = np.cumsum(rng.standard_normal(n_frames)) / np.sqrt(max(n_frames, 1))
    state = 1.0 + 0.5 * (state - state.mean())  # slow engagement drift, shared by the population
    base_rate = rng.lognormal(np.log(0.08), 0.7, n_cells)  # events per second
    stimulus_gain = rng.uniform(0.0, 3.0, n_cells)
    amplitude = rng.lognormal(np.log(0.5), 0.4, n_cells)
    noise_sd = rng.uniform(0.03, 0.08, n_cells)
    kernel = calcium_kernel(rate_hz, indicator)
    n_fft = 1 << int(np.ceil(np.log2(n_frames + len(kernel))))
    kernel_spectrum = np.fft.rfft(kernel, n_fft)
    dff = np.empty((n_frames, n_cells), dtype=np.float64)
    for start in range(0, n_cells, CELL_BLOCK):
        cells = slice(start, min(start + CELL_BLOCK, n_cells))
        rate = base_rate[cells] * (1.0 + stimulus_gain[cells] * flash_on[:, None]) * state[:, None]
        events = rng.poisson(np.clip(rate, 0, None) * dt) * rng.lognormal(0.0, 0.35, rate.shape)
        transients = np.fft.irfft(np.fft.rfft(events, n_fft, axis=0) * kernel_spectrum[:, None], n_fft, axis=0)
        dff[:, cells] = amplitude[cells] * transients[:n_frames]
        dff[:, cells] += noise_sd[cells] * rng.standard_normal((n_frames, cells.stop - cells.start))
    return dff
