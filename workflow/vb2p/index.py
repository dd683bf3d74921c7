"""The index of the derived dataset (one row per Zarr store) and the cell-count cross-check against the
ophys_cells_table: every experiment whose valid ROIs in the NWB differ from the table is reported."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import zarr

INDEX_METADATA = (
    "ophys_session_id",
    "ophys_container_id",
    "behavior_session_id",
    "mouse_id",
    "cre_line",
    "full_genotype",
    "imaging_depth",
    "targeted_structure",
    "imaging_plane_group",
    "equipment_name",
    "session_type",
    "project_code",
    "date_of_acquisition",
    "dff_dtype",
)


def store_attributes(store: str | Path) -> dict:
    return dict(zarr.open_group(str(store), mode="r").attrs)


def build_index(stores: list[str | Path], index_dir: str | Path) -> pd.DataFrame:
    rows = []
    for store in stores:
        attrs = store_attributes(store)
        provenance = attrs.get("provenance", {})
        rows.append(
            {
                "ophys_experiment_id": attrs["ophys_experiment_id"],
                "path": os.path.relpath(Path(store).resolve(), Path(index_dir).resolve()),
                "n_rois": attrs["n_rois"],
                "n_valid_rois": attrs["n_valid_rois"],
                "n_frames": attrs["n_frames"],
                "frame_rate": attrs["ophys_frame_rate"],
                "measured_frame_rate": attrs["measured_frame_rate"],
                **{key: attrs.get(key) for key in INDEX_METADATA},
                "has_task": attrs.get("has_task", False),
                "n_stimulus_presentations": attrs.get("n_stimulus_presentations", 0),
                "n_trials": attrs.get("n_trials", 0),
                "file_hash": provenance.get("file_hash"),
                "manifest_version": provenance.get("manifest_version"),
            }
        )
    return pd.DataFrame(rows).sort_values("ophys_experiment_id").reset_index(drop=True)


def transfers(stores: list[str | Path]) -> pd.DataFrame:
    """What reading each experiment's NWB moved over the network, from the store's provenance: the download of a
    whole file (0 when the cached copy checked out) or the ranged reads of datasets mode."""
    rows = []
    for store in stores:
        provenance = store_attributes(store).get("provenance", {})
        transfer = provenance.get("transfer", {})
        rows.append({"ophys_experiment_id": int(Path(store).name.removesuffix(".zarr")),
                     "mode": provenance.get("mode"), "bytes_moved": transfer.get("bytes_moved", 0),
                     "requests": transfer.get("requests", 0)})
    return pd.DataFrame(rows, columns=["ophys_experiment_id", "mode", "bytes_moved", "requests"])


def cell_count_check(index: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per experiment: valid ROIs in the NWB file vs rows of ophys_cells_table; only the mismatches."""
    in_table = cells.groupby("ophys_experiment_id").size()
    compared = pd.DataFrame(
        {
            "ophys_experiment_id": index.ophys_experiment_id,
            "n_valid_rois_nwb": index.n_valid_rois,
            "n_cells_table": index.ophys_experiment_id.map(in_table).fillna(0).astype(int),
        }
    )
    compared["difference"] = compared.n_valid_rois_nwb - compared.n_cells_table
    return compared[compared.difference != 0].reset_index(drop=True)


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """A result table as CSV, the same bytes for the same frame (no index, Unix line ends)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, lineterminator="\n")
