"""Figures: deterministic (fixed style, bundled font, no PNG metadata) so that CI can compare them with baselines.

Each plot function takes tables or arrays already computed (the numbers are tested separately) and returns a
matplotlib Figure; `save_png` writes it the same way every time.
"""

from __future__ import annotations

import colorsys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import pandas as pd  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

STYLE = {
    "font.family": "DejaVu Sans",  # bundled with matplotlib: the same glyphs on every machine
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.interpolation": "nearest",
    "path.simplify": False,
}
CRE_COLOURS = {"Slc17a7-IRES2-Cre": "#1b9e77", "Sst-IRES-Cre": "#d95f02", "Vip-IRES-Cre": "#7570b3"}
UNMATCHED_COLOUR = (0.6, 0.6, 0.6)


def new_figure(width: float, height: float):
    with plt.rc_context(STYLE):
        return plt.figure(figsize=(width, height), layout="constrained")


def save_png(figure, path: str | Path) -> None:
    """PNG without metadata (no software version, no date): the same figure gives the same bytes."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(STYLE):
        figure.savefig(path, format="png", metadata={"Software": None})
    plt.close(figure)


def cell_colour(cell_specimen_id: int) -> tuple[float, float, float]:
    """A stable colour per cell_specimen_id: the same cell has the same colour in every session and every run."""
    if cell_specimen_id < 0:
        return UNMATCHED_COLOUR
    hue = (cell_specimen_id * 0.61803398875) % 1.0  # golden-ratio steps spread neighbouring ids apart
    return colorsys.hsv_to_rgb(hue, 0.85, 1.0)


def outlines(masks: np.ndarray) -> np.ndarray:
    """A two-pixel ring around each boolean mask (cell, y, x) (its dilation minus its erosion), visible when the
    512-pixel image is drawn a few hundred pixels wide."""
    return np.stack([find_boundaries(mask, mode="thick") for mask in masks]) if len(masks) else masks.astype(bool)


def outline_overlay(image: np.ndarray, masks: np.ndarray, specimen_ids: np.ndarray) -> np.ndarray:
    """RGB image: the grey max projection with each ROI outlined in its cell's colour."""
    grey = image.astype(np.float64) / max(float(np.percentile(image, 99.5)), 1.0)
    rgb = np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=2)
    for edge, specimen in zip(outlines(masks), specimen_ids):
        rgb[edge] = cell_colour(int(specimen))
    return rgb


def _show(axis, image, title):
    axis.imshow(image, cmap="gray", vmin=0, vmax=max(float(np.percentile(image, 99.5)), 1.0))
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])


def plot_container_alignment(container_id: int, views: list, table: pd.DataFrame, registered: list[np.ndarray]):
    """Three rows, sessions in acquisition order: max projections, registered to the reference, ROI outlines
    coloured by cell_specimen_id (the same cell, the same colour in every session)."""
    n = len(views)
    figure = new_figure(3.0 * max(n, 2), 10.4)
    axes = figure.subplots(3, max(n, 2), squeeze=False)
    rows = table.set_index("ophys_experiment_id")
    for column, (view, image) in enumerate(zip(views, registered)):
        row = rows.loc[view.ophys_experiment_id]
        _show(axes[0, column], view.max_projection, f"{view.ophys_experiment_id}\n{view.session_type}\n{view.date}")
        label = "reference" if row.is_reference else f"shift y {row.shift_y:+.2f}, x {row.shift_x:+.2f} px"
        _show(axes[1, column], image, f"{label}\nNCC {row.ncc_before:.3f} -> {row.ncc_after:.3f}")
        overlay = outline_overlay(view.max_projection, view.roi_mask, view.cell_specimen_id)
        axes[2, column].imshow(overlay)
        axes[2, column].set_title(f"{row.n_matched_to_reference}/{row.n_cells} cells matched to reference")
        axes[2, column].set_xticks([])
        axes[2, column].set_yticks([])
    for column in range(n, axes.shape[1]):
        for axis in axes[:, column]:
            axis.axis("off")
    if n == 1:
        axes[1, 1].text(0, 0.5, "single session:\nnothing to align", fontsize=11, va="center")
    figure.suptitle(
        f"Container {container_id}: max projections (top), registered to the reference session (middle),"
        " ROIs coloured by cell_specimen_id (bottom)",
        fontsize=10,
    )
    return figure


def plot_cells_per_experiment_histogram(by_experiment: pd.DataFrame):
    figure = new_figure(5.5, 3.6)
    axis = figure.subplots()
    counts = by_experiment.n_cells
    bins = np.linspace(0, max(int(counts.max()), 1) + 1, 31)
    axis.hist(counts, bins=bins, color="#4c72b0", edgecolor="white")
    axis.set_xlabel("cells per experiment (valid ROIs)")
    axis.set_ylabel("experiments")
    axis.set_title(f"{len(counts)} experiments, median {counts.median():.0f} cells")
    return figure


def plot_cells_vs_depth(by_experiment: pd.DataFrame):
    figure = new_figure(5.5, 3.8)
    axis = figure.subplots()
    for cre_line, group in by_experiment.groupby("cre_line", sort=True):
        axis.scatter(group.imaging_depth, group.n_cells, s=14, alpha=0.7, label=cre_line,
                     color=CRE_COLOURS.get(cre_line, "#333333"), linewidths=0)
    axis.set_xlabel("imaging depth (um)")
    axis.set_ylabel("cells per experiment")
    axis.legend(frameon=False)
    return figure


def plot_cells_by_cre_line(by_experiment: pd.DataFrame):
    figure = new_figure(5.0, 3.6)
    axis = figure.subplots()
    lines = sorted(by_experiment.cre_line.unique())
    data = [by_experiment.n_cells[by_experiment.cre_line == line].to_numpy() for line in lines]
    parts = axis.boxplot(data, patch_artist=True, widths=0.6)
    for patch, line in zip(parts["boxes"], lines):
        patch.set_facecolor(CRE_COLOURS.get(line, "#999999"))
    axis.set_xticks(range(1, len(lines) + 1), [line.split("-")[0] for line in lines])
    axis.set_ylabel("cells per experiment")
    return figure


def plot_counts_by_depth(by_depth: pd.DataFrame):
    """Distinct neurons per depth bin, with the ROIs summed over experiments behind them (a neuron imaged in n
    sessions is n ROIs)."""
    groups = sorted(by_depth[["cre_line", "targeted_structure"]].drop_duplicates().itertuples(index=False))
    figure = new_figure(7.0, 1.4 + 1.6 * len(groups))
    axes = np.atleast_1d(figure.subplots(len(groups), 1, sharex=True, sharey=True))
    width = int(by_depth.bin_width_um.iloc[0])
    deepest = int(by_depth.depth_bin_start_um.max()) + width
    for axis, (cre_line, structure) in zip(axes, groups):
        rows = by_depth[(by_depth.cre_line == cre_line) & (by_depth.targeted_structure == structure)]
        colour = CRE_COLOURS.get(cre_line, "#999999")
        axis.barh(rows.depth_bin_start_um, rows.n_rois_summed_over_experiments, height=0.85 * width, align="edge",
                  color=colour, alpha=0.3)
        axis.barh(rows.depth_bin_start_um, rows.n_neurons, height=0.85 * width, align="edge", color=colour)
        axis.set_ylim(deepest, 0)  # cortical surface at the top, the same depth scale in every panel
        axis.set_ylabel("depth (um)")
        axis.set_title(f"{cre_line}, {structure}", loc="left")
    key = [Patch(color="#555555", label="neurons (distinct cell_specimen_id; unmatched ROIs once each)"),
           Patch(color="#555555", alpha=0.3, label="ROIs summed over experiments (a neuron once per session)")]
    figure.legend(handles=key, loc="outside upper center", frameon=False, ncols=1)
    axes[-1].set_xlabel("count per depth bin")
    return figure


def plot_session_population(session_id: int, traces: pd.DataFrame, window: tuple[float, float]):
    """Mean dF/F of every imaging plane of a session over the window: one line per plane, stacked (shallow on
    top) so planes recorded at once can be compared without hiding each other."""
    planes = list(traces.groupby(["imaging_depth", "targeted_structure", "ophys_experiment_id"], sort=True))
    figure = new_figure(8.0, 1.2 + 0.9 * max(len(planes), 1))
    axis = figure.subplots()
    spacing = max((float(plane.mean_dff.max() - plane.mean_dff.min()) for _, plane in planes), default=1.0) or 1.0
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.85, max(len(planes), 1)))
    ticks, labels = [], []
    for position, (colour, ((depth, structure, _), plane)) in enumerate(zip(colours, planes)):
        offset = -position * spacing
        axis.plot(plane.time, plane.mean_dff + offset, linewidth=0.6, color=colour)
        ticks.append(offset)
        labels.append(f"{structure} {depth} um\n({plane.n_cells.iloc[0]} cells)")
    axis.set_yticks(ticks, labels)
    axis.set_xlim(*window)
    axis.set_xlabel("time (s)")
    axis.set_title(f"Session {session_id}: mean dF/F per imaging plane (offset; bar: 0.1 dF/F)")
    if planes:
        x = window[0] + 0.01 * (window[1] - window[0])
        axis.plot([x, x], [ticks[0] + 0.5 * spacing, ticks[0] + 0.5 * spacing - 0.1], color="black", linewidth=2)
    return figure


def plot_note(text: str):
    """A figure that says why there is nothing to draw (a session without a task), so every output exists; the text
    wrapped to the figure's width."""
    lines = textwrap.wrap(text, width=80)
    figure = new_figure(7.0, 0.6 + 0.22 * len(lines))
    figure.text(0.5, 0.5, "\n".join(lines), ha="center", va="center", fontsize=10)
    return figure


def plot_behavior_session(session_id: int, behavior: dict):
    """One session's behavior over time: image changes by their trial's outcome (hit, miss, auto-rewarded: the
    performance table's counts), running speed, licks and rewards, and the rolling hit and false-alarm rates and d'
    over the non-aborted trials (where AllenSDK's rolling performance has them). A passive session (the mouse could
    not respond) is said to be one, without rates: AllenSDK's are then the trial-count correction alone.

    behavior: running (timestamps, speed), licks and rewards (timestamps), changes (start_time, outcome:
    vb2p.performance.change_outcomes), trials (start_time, hit_rate, false_alarm_rate, rolling_dprime), passive
    (vb2p.performance.is_passive) and title, as vb2p.steps.behavior_session reads them."""
    figure = new_figure(9.0, 6.0)
    change_axis, running_axis, lick_axis, rate_axis = figure.subplots(
        4, 1, sharex=True, height_ratios=[0.7, 2.0, 0.9, 1.8]
    )
    changes = behavior["changes"]
    labels = []
    for row, (outcome, colour, label) in enumerate((("hit", "#1b9e77", "hits"), ("miss", "#d95f02", "misses"),
                                                     ("auto_rewarded", "#e7298a", "auto-rewarded"))):
        times = changes.start_time[changes.outcome == outcome]
        change_axis.vlines(times, row, row + 0.8, color=colour, linewidth=0.8)
        labels.append(f"{label} ({len(times)})")
    change_axis.set_yticks([0.4, 1.4, 2.4], labels)
    change_axis.set_ylim(-0.1, 2.9)
    change_axis.set_title("image changes" + (" (passive: no response possible, so the trials call them misses)"
                                             if behavior["passive"] else ""), loc="left")
    running = behavior["running"]
    running_axis.plot(running.timestamps, running.speed, linewidth=0.4, color="#555555")
    running_axis.set_ylabel("running (cm/s)")
    lick_axis.eventplot([behavior["licks"].timestamps, behavior["rewards"].timestamps], lineoffsets=[1, 0],
                        linelengths=0.8, linewidths=0.6, colors=["#333333", "#1f78b4"])
    lick_axis.set_yticks([0, 1], [f"rewards ({len(behavior['rewards'])})", f"licks ({len(behavior['licks'])})"])
    rate_axis.set_ylim(-0.02, 1.02)
    rate_axis.set_xlabel("time (s)")
    figure.suptitle(f"Session {session_id}: {behavior['title']}", fontsize=10)
    if behavior["passive"]:
        rate_axis.text(0.5, 0.5, "passive session: no hit or false-alarm rates (AllenSDK sets d' to 0)",
                       ha="center", va="center", transform=rate_axis.transAxes, color="#888888")
        rate_axis.set_yticks([])
        return figure
    trials = behavior["trials"][~behavior["trials"]["aborted"].to_numpy(dtype=bool)]  # aborted trials have no rates
    rate_axis.plot(trials.start_time, trials.hit_rate, color="#1b9e77", linewidth=1.2, label="hit rate")
    rate_axis.plot(trials.start_time, trials.false_alarm_rate, color="#a6761d", linewidth=1.2,
                   label="false alarm rate")
    rate_axis.set_ylabel("rolling rate\n(100 trials, corrected)")
    dprime_axis = rate_axis.twinx()
    dprime_axis.plot(trials.start_time, trials.rolling_dprime, color="#7570b3", linewidth=0.8, linestyle="--",
                     label="d'")
    dprime_axis.set_ylabel("rolling d'")
    dprime_axis.spines["right"].set_visible(True)
    handles = rate_axis.get_legend_handles_labels()[0] + dprime_axis.get_legend_handles_labels()[0]
    rate_axis.legend(handles=handles, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncols=3)
    return figure


# Image flashes of the change-detection task: 0.25 s of image every 0.75 s (task_parameters), aligned to the event.
FLASH_S, FLASH_PERIOD_S = 0.25, 0.75


def _shade_flashes(axis, start: float, stop: float, omitted_at_zero: bool) -> None:
    """Gray spans where images were shown around the event (none at 0 for an omission)."""
    for k in range(int(np.floor(start / FLASH_PERIOD_S)), int(np.ceil(stop / FLASH_PERIOD_S)) + 1):
        if k == 0 and omitted_at_zero:
            continue
        onset = k * FLASH_PERIOD_S
        if onset < stop and onset + FLASH_S > start:
            axis.axvspan(max(onset, start), min(onset + FLASH_S, stop), color="#e8e8e8", linewidth=0, zorder=0)


def plot_population_responses(population: pd.DataFrame, event_type: str):
    """Mean +- s.e.m. over cells of the response to an event, in a grid of cre line (rows) x experience level; image
    flashes shaded."""
    from vb2p.platform import CRE_LINES, EXPERIENCE_LEVELS

    figure = new_figure(8.0, 6.4)
    axes = figure.subplots(len(CRE_LINES), len(EXPERIENCE_LEVELS), sharex=True, squeeze=False)
    for row, cre_line in enumerate(CRE_LINES):
        for column, experience in enumerate(EXPERIENCE_LEVELS):
            axis = axes[row, column]
            _shade_flashes(axis, population.time.min(), population.time.max(), event_type == "omissions")
            group = population[(population.cre_line == cre_line) & (population.experience_level == experience)]
            colour = CRE_COLOURS[cre_line]
            if group.empty:
                axis.text(0.5, 0.5, "no cells", ha="center", va="center", transform=axis.transAxes, color="#888888")
                axis.set_yticks([])
            else:
                axis.fill_between(group.time, group["mean"] - group["sem"], group["mean"] + group["sem"],
                                  color=colour, alpha=0.3, linewidth=0)
                axis.plot(group.time, group["mean"], color=colour, linewidth=1.2)
                n_experiments = group.n_experiments.iloc[0]
                axis.text(0.98, 0.95, f"{group.n_cells.iloc[0]} cells, {n_experiments} plane"
                          f"{'s' if n_experiments > 1 else ''}", ha="right", va="top", fontsize=8,
                          transform=axis.transAxes)
            axis.axvline(0, color="#888888", linewidth=0.6, linestyle=":")
            if row == 0:
                axis.set_title(experience)
            if column == 0:
                axis.set_ylabel(f"{cre_line.split('-')[0]}\ndF/F")
            if row == len(CRE_LINES) - 1:
                axis.set_xlabel(f"time from {event_type[:-1]} (s)")
    figure.suptitle(f"Population response to {event_type} (mean +- s.e.m. over cells; gray: image shown)", fontsize=10)
    return figure


def plot_responsive_fractions(fractions: pd.DataFrame):
    """Fraction of responsive cells per cre line and experience level, for changes and omissions."""
    from vb2p.platform import CRE_LINES, EXPERIENCE_LEVELS

    event_types = [e for e in ("changes", "omissions") if (fractions.event_type == e).any()]
    figure = new_figure(8.0, 3.2)
    axes = np.atleast_1d(figure.subplots(1, len(event_types), sharey=True))
    width = 0.8 / len(EXPERIENCE_LEVELS)
    shades = (1.0, 0.65, 0.35)
    for axis, event_type in zip(axes, event_types):
        rows = fractions[fractions.event_type == event_type]
        for k, (experience, shade) in enumerate(zip(EXPERIENCE_LEVELS, shades)):
            for i, cre_line in enumerate(CRE_LINES):
                value = rows[(rows.cre_line == cre_line) & (rows.experience_level == experience)].fraction_responsive
                if len(value):
                    x, n_cells = i + (k - 1) * width, int(rows.loc[value.index[0], "n_cells"])
                    axis.bar(x, float(value.iloc[0]), width=width * 0.95, color=CRE_COLOURS[cre_line], alpha=shade)
                    axis.text(x, float(value.iloc[0]) + 0.01, str(n_cells), ha="center", va="bottom", fontsize=7)
        axis.set_xticks(range(len(CRE_LINES)), [line.split("-")[0] for line in CRE_LINES])
        axis.set_title(f"{event_type}")
        axis.set_ylim(0, 1)
    axes[0].set_ylabel("fraction responsive (n: cells)")
    levels = [Patch(color="#555555", alpha=shade, label=level) for level, shade in zip(EXPERIENCE_LEVELS, shades)]
    axes[-1].legend(handles=levels, frameon=False, loc="upper right", title="experience (light: later)")
    return figure
