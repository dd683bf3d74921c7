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


def counts_by_depth(by_experiment: pd.DataFrame, bin_width_um: int) -> pd.DataFrame:
    """Cells and experiments per depth bin, per cre_line x targeted_structure."""
    frame = by_experiment.copy()
    frame["depth_bin_start_um"] = (frame.imaging_depth // bin_width_um * bin_width_um).astype(int)
    grouped = frame.groupby(["cre_line", "targeted_structure", "depth_bin_start_um"])
    table = grouped.agg(n_experiments=("ophys_experiment_id", "count"), n_cells=("n_cells", "sum")).reset_index()
    table["mean_cells_per_experiment"] = table.n_cells / table.n_experiments
    table["bin_width_um"] = bin_width_um
    return table


def selected_agreement(index: pd.DataFrame, by_experiment: pd.DataFrame) -> pd.DataFrame:
    """For the selected experiments: valid ROIs counted in the Zarr stores vs the table."""
    table_counts = by_experiment.set_index("ophys_experiment_id").n_cells
    result = index[["ophys_experiment_id", "cre_line", "targeted_structure", "imaging_depth"]].copy()
    result["n_cells_zarr"] = index.n_valid_cells.to_numpy()
    result["n_cells_table"] = index.ophys_experiment_id.map(table_counts).fillna(0).astype(int).to_numpy()
    result["agree"] = np.equal(result.n_cells_zarr, result.n_cells_table)
    return result
