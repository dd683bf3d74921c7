"""Cell counts by depth: release-wide from ophys_cells_table merged into the experiment table (as Allen's tutorial
does), and for the selected experiments from the Zarr stores, with their agreement checked."""

from __future__ import annotations

import numpy as np
import pandas as pd

EXPERIMENT_COLUMNS = ["cre_line", "targeted_structure", "imaging_depth", "equipment_name", "project_code", "mouse_id"]


def cells_by_experiment(experiments: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment with its number of cells (valid ROIs in ophys_cells_table; 0 when none)."""
    counts = cells.groupby("ophys_experiment_id").size().rename("n_cells")
    merged = experiments[EXPERIMENT_COLUMNS].join(counts).fillna({"n_cells": 0})
    merged["n_cells"] = merged.n_cells.astype(int)
    return merged.reset_index().sort_values("ophys_experiment_id").reset_index(drop=True)


def summary(by_experiment: pd.DataFrame) -> pd.DataFrame:
    """describe() of cells per experiment, overall and per cre_line."""
    overall = by_experiment.n_cells.describe().rename("all")
    per_line = by_experiment.groupby("cre_line").n_cells.describe().T
    table = pd.concat([overall, per_line], axis=1).T
    table.index.name = "group"
    return table.reset_index()


def counts_by_depth(by_experiment: pd.DataFrame, cells: pd.DataFrame, bin_width_um: int) -> pd.DataFrame:
    """Per cre_line x targeted_structure x depth bin: experiments, ROIs summed over them, and distinct neurons.

    A neuron imaged in every session of its container is one neuron but one ROI per session, so the sum of ROIs over
    experiments overcounts neurons by the number of sessions. Neurons are counted by cell_specimen_id; an ROI not
    matched across sessions (no cell_specimen_id) is one neuron of its own.
    """
    bins = by_experiment.set_index("ophys_experiment_id")
    bins = bins.assign(depth_bin_start_um=(bins.imaging_depth // bin_width_um * bin_width_um).astype(int))
    keys = ["cre_line", "targeted_structure", "depth_bin_start_um"]
    table = (
        bins.groupby(keys)
        .agg(n_experiments=("n_cells", "size"), n_rois_summed_over_experiments=("n_cells", "sum"))
        .reset_index()
    )
    located = cells.reset_index().join(bins[keys], on="ophys_experiment_id", how="inner")
    neuron = located.cell_specimen_id.astype("Int64").astype("string").fillna("roi " + located.cell_roi_id.astype(str))
    neurons = located.assign(neuron=neuron).groupby(keys).neuron.nunique().rename("n_neurons")
    table = table.join(neurons, on=keys).fillna({"n_neurons": 0})
    table["n_neurons"] = table.n_neurons.astype(int)
    table["mean_cells_per_experiment"] = table.n_rois_summed_over_experiments / table.n_experiments
    table["bin_width_um"] = bin_width_um
    return table


def selected_agreement(index: pd.DataFrame, by_experiment: pd.DataFrame) -> pd.DataFrame:
    """For the selected experiments: valid ROIs counted in the Zarr stores vs the table."""
    table_counts = by_experiment.set_index("ophys_experiment_id").n_cells
    result = index[["ophys_experiment_id", "cre_line", "targeted_structure", "imaging_depth"]].copy()
    result["n_cells_zarr"] = index.n_valid_rois.to_numpy()
    result["n_cells_table"] = index.ophys_experiment_id.map(table_counts).fillna(0).astype(int).to_numpy()
    result["agree"] = np.equal(result.n_cells_zarr, result.n_cells_table)
    return result
