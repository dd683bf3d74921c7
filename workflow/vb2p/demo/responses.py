"""The events each ROI emits in a session: spontaneous events for every ROI, and for responsive cells one response
to each change, to each omission or to each flash of their preferred image (what the ground truth lists).

A response's amplitude is the summed amplitude of its events in dF/F (an event of amplitude x peaks at x dF/F):
change and image responses are one event 50-120 ms after the flash appears; omission responses are a ramp of events
from the omitted flash until the next flash is due (as Vip cells do). Responses are the same in active and passive
sessions; 90 % of presentations evoke one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vb2p.demo.design import Cell
from vb2p.demo.task import FLASH_S, IMAGE_SETS, Task, stimulus_presentations
from vb2p.demo.traces import DECAY_S, RISE_S, spontaneous_events

LATENCY_S = (0.05, 0.12)
RELIABILITY = 0.9
OMISSION_RAMP_S = (0.1, FLASH_S + 0.1)  # from the omitted flash's onset until just after the next flash


@dataclass
class RoiKinetics:
    """Per-ROI parameters of one session's traces, (n_rois,) each."""

    rise_s: np.ndarray
    decay_s: np.ndarray
    noise_sd: np.ndarray
    spontaneous_rate_hz: np.ndarray


def roi_kinetics(rng: np.random.Generator, n_rois: int, indicator: str) -> RoiKinetics:
    return RoiKinetics(
        rise_s=RISE_S[indicator] * rng.uniform(0.85, 1.15, n_rois),
        decay_s=DECAY_S[indicator] * rng.uniform(0.85, 1.15, n_rois),
        noise_sd=rng.uniform(0.03, 0.08, n_rois),
        spontaneous_rate_hz=rng.lognormal(np.log(0.05), 0.5, n_rois),
    )


def preferred_image(cell: Cell, image_set: str, familiar_image_set: str) -> str | None:
    """The image an image cell prefers in the session's image set (tuning is drawn afresh for the novel set)."""
    if cell.response.response_type != "image":
        return None
    return IMAGE_SETS[image_set][cell.response.preferred_rank[0 if image_set == familiar_image_set else 1]]


def response_onsets(cell: Cell, presentations: pd.DataFrame, preferred: str | None) -> np.ndarray:
    """Start times of the presentations this cell responds to."""
    kind = cell.response.response_type
    flashes = presentations[presentations.stimulus_block == 1]
    if kind == "change":
        chosen = flashes.is_change
    elif kind == "omission":
        chosen = flashes.omitted.astype(bool)
    elif kind == "image":
        chosen = flashes.image_name == preferred
    else:
        return np.empty(0)
    return flashes.start_time[chosen].to_numpy()


def cell_events(
    rng: np.random.Generator,
    cells: list[Cell],
    task: Task,
    familiar_image_set: str,
    timestamps: np.ndarray,
    kinetics: RoiKinetics,
) -> np.ndarray:
    """(n_frames, n_rois) float64 events at the ophys frames, ROI order as `cells`."""
    rate_hz = 1.0 / np.median(np.diff(timestamps))
    events = spontaneous_events(rng, len(timestamps), kinetics.spontaneous_rate_hz, rate_hz)
    presentations = stimulus_presentations(task)
    for roi, cell in enumerate(cells):
        onsets = response_onsets(cell, presentations, preferred_image(cell, task.image_set, familiar_image_set))
        onsets = onsets[rng.random(len(onsets)) < RELIABILITY]
        amplitude = cell.response.amplitude * rng.lognormal(-0.02, 0.2, len(onsets))  # mean 1 jitter
        if cell.response.response_type == "omission":
            times, weights = _ramp(onsets, rate_hz)
            amplitude = np.repeat(amplitude, weights.shape[1]) * weights.ravel()
        else:
            times = onsets + rng.uniform(*LATENCY_S, len(onsets))
        frames = np.searchsorted(timestamps, np.ravel(times))
        inside = frames < len(timestamps)
        np.add.at(events[:, roi], frames[inside], amplitude[inside])
    return events


def _ramp(onsets: np.ndarray, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Event times (n_onsets, n_steps) of an omission ramp, one per ophys frame, and weights rising linearly and
    summing to 1."""
    offsets = np.arange(OMISSION_RAMP_S[0], OMISSION_RAMP_S[1], 1.0 / rate_hz)
    weights = np.arange(1, len(offsets) + 1, dtype=np.float64)
    return onsets[:, None] + offsets[None, :], np.broadcast_to(weights / weights.sum(), (len(onsets), len(offsets)))
