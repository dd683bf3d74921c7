"""Calcium imaging traces made from events: each ROI's events (the spikes behind its dF/F, what AllenSDK's event
detection finds) filtered by its indicator's rise-and-decay kernel, plus measurement noise."""

from __future__ import annotations

import numpy as np
from scipy import signal

# Time constants (s) of GCaMP6f / GCaMP6s transients in vivo (rise: to the exponential's 1/e; decay: 1/e).
RISE_S = {"GCaMP6f": 0.05, "GCaMP6s": 0.15}
DECAY_S = {"GCaMP6f": 0.4, "GCaMP6s": 1.2}


def ophys_timestamps(rng: np.random.Generator, start_s: float, stop_s: float, rate_hz: float) -> np.ndarray:
    """Frame times in seconds at a constant frame period: imaging starts a few seconds after the stimulus clock and
    stops before it does."""
    start = start_s + rng.uniform(2.0, 4.0)
    return start + np.arange(int((stop_s - 1.0 - start) * rate_hz), dtype=np.float64) / rate_hz


def kernel_coefficients(rate_hz: float, rise_s: float, decay_s: float) -> tuple[np.ndarray, np.ndarray]:
    """lfilter coefficients of the transient a^n - b^n (n frames after the event; a, b the per-frame decay of the
    slow and fast exponentials), scaled to peak at 1: an event of amplitude x peaks at x dF/F."""
    slow, fast = np.exp(-1.0 / (decay_s * rate_hz)), np.exp(-1.0 / (rise_s * rate_hz))
    n = np.arange(1, int(np.ceil(10 * decay_s * rate_hz)) + 2)
    peak = (slow**n - fast**n).max()
    return np.array([0.0, (slow - fast) / peak]), np.array([1.0, -(slow + fast), slow * fast])


def dff_from_events(
    rng: np.random.Generator,
    events: np.ndarray,
    rate_hz: float,
    rise_s: np.ndarray,
    decay_s: np.ndarray,
    noise_sd: np.ndarray,
) -> np.ndarray:
    """(n_frames, n_rois) float64 dF/F, time first as in the NWB files, from events of the same shape; one kernel
    per ROI (rise_s, decay_s, noise_sd: (n_rois,))."""
    dff = np.empty_like(events, dtype=np.float64)
    for roi in range(events.shape[1]):
        b, a = kernel_coefficients(rate_hz, rise_s[roi], decay_s[roi])
        dff[:, roi] = signal.lfilter(b, a, events[:, roi])
    return dff + rng.standard_normal(events.shape) * noise_sd


def spontaneous_events(rng: np.random.Generator, n_frames: int, event_rate_hz: np.ndarray, rate_hz: float):
    """(n_frames, n_rois) events firing at random (Poisson) at each ROI's rate, with lognormal amplitudes (dF/F)."""
    counts = rng.poisson(np.asarray(event_rate_hz) / rate_hz, size=(n_frames, len(event_rate_hz)))
    return counts * rng.lognormal(np.log(0.25), 0.4, counts.shape)


def dff_traces(rng: np.random.Generator, timestamps: np.ndarray, n_rois: int, rate_hz: float, indicator: str):
    """dF/F of n_rois cells firing only spontaneously, for files that need realistic traces and no task."""
    events = spontaneous_events(rng, len(timestamps), rng.lognormal(np.log(0.1), 0.5, n_rois), rate_hz)
    rise, decay = np.full(n_rois, RISE_S[indicator]), np.full(n_rois, DECAY_S[indicator])
    return dff_from_events(rng, events, rate_hz, rise, decay, rng.uniform(0.03, 0.08, n_rois))
