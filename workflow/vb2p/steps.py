"""Every step of the workflow as one function with explicit inputs and outputs.

The rule scripts in scripts/ and the `vb2p` command line both call these, so a step run by hand does exactly what its
rule does. Paths are given by the caller (the rules name them through vb2p.results).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from vb2p import cell_counts as counts
from vb2p import figures, index, results
from vb2p.alignment import align_container, load_view
from vb2p.errors import SelectionError
from vb2p.extract import ExtractionOptions, extract_experiment
from vb2p.overview import release_overview, write_overview
from vb2p.population import session_population
from vb2p.release import download_experiment, experiment_file, read_record, record_tables, sync_metadata
from vb2p.selection import estimated_download_bytes, select_experiments, write_selection

log = logging.getLogger(__name__)
ASSUMED_DOWNLOAD_BYTES_PER_S = 100e6  # for the time estimate printed with a selection


def demo_release(demo: dict, workers: int, revision: int = 0) -> Path:
    from vb2p.demo.design import DemoSize
    from vb2p.demo.generate import generate_release

    size = DemoSize(
        mice=demo["mice"], duration_s=demo["duration_s"], cells_per_plane=demo["cells_per_plane"],
        all_traces=demo["all_traces"],
    )
    return generate_release(demo["out"], seed=demo["seed"], size=size, manifest_version=demo["manifest_version"],
                            revision=revision, workers=workers)


def sync(config: dict, record_path: Path) -> dict:
    record = sync_metadata(config, record_path)
    log.info("manifest %s from %s; tables in %s", record["manifest_version"], record["source"], record["cache_dir"])
    return record


def overview(record_path: Path, out_dir: Path) -> list[Path]:
    return write_overview(release_overview(record_tables(read_record(record_path))), out_dir)


def select(selection: dict, max_selection_gb: float | None, record_path: Path, out_path: Path) -> pd.DataFrame:
    """Apply the config's selection; refuse one whose download is larger than max_selection_gb (estimated)."""
    experiments = record_tables(read_record(record_path))["ophys_experiment_table"]
    selected = select_experiments(experiments, **selection)
    size = estimated_download_bytes(selected)
    what = (
        f"{len(selected)} experiments in {selected.ophys_container_id.nunique()} containers: about {size / 1e9:,.0f} GB "
        f"of NWB files to download (estimated from typical file sizes per rig), about "
        f"{size / ASSUMED_DOWNLOAD_BYTES_PER_S / 3600:.1f} h at {ASSUMED_DOWNLOAD_BYTES_PER_S / 1e6:.0f} MB/s"
    )
    if max_selection_gb is not None and size > max_selection_gb * 1e9:
        raise SelectionError(
            f"the selection is {what}, more than download.max_selection_gb ({max_selection_gb:g}). Narrow the "
            "selection (selection.filters, selection.max_containers), or raise download.max_selection_gb (null: no "
            "limit) to download it deliberately. Files already in the cache are not downloaded again."
        )
    write_selection(selected, out_path)
    log.info("selected %s", what)
    return selected


def download(config: dict, record_path: Path, ophys_experiment_id: int, receipt_path: Path) -> dict:
    return download_experiment(config, read_record(record_path), ophys_experiment_id, receipt_path)


def extract(config: dict, receipt_path: Path, ophys_experiment_id: int, store_path: Path) -> dict:
    """Check the cached NWB file against its hash (fetching it again if it changed since it was verified), then
    write the experiment's store."""
    receipt = json.loads(Path(receipt_path).read_text())
    nwb_path, _, _ = experiment_file(config, receipt["manifest_version"], ophys_experiment_id)
    summary = extract_experiment(
        nwb_path,
        store_path,
        ophys_experiment_id,
        provenance={k: receipt[k] for k in ("url", "version_id", "file_hash", "manifest_version")},
        options=ExtractionOptions(**config["extraction"]),
    )
    log.info("%d frames x %d ROIs (%d valid) -> %s", summary["n_frames"], summary["n_rois"], summary["n_valid_rois"],
             store_path)
    return summary


def build_index(stores: list[Path], record_path: Path, index_path: Path, mismatches_path: Path) -> pd.DataFrame:
    table = index.build_index(stores, Path(index_path).parent)
    index.write_table(table, index_path)
    cells = record_tables(read_record(record_path))["ophys_cells_table"]
    mismatches = index.cell_count_check(table, cells)
    index.write_table(mismatches, mismatches_path)
    if len(mismatches):
        log.warning("%d experiments have a valid-ROI count that differs from ophys_cells_table: see %s",
                    len(mismatches), mismatches_path)
    return table


def container_alignment(stores: list[Path], ophys_container_id: int, upsample: int, table_path: Path,
                        figure_path: Path) -> pd.DataFrame:
    """stores in acquisition order: the first is the reference session."""
    views = [load_view(store) for store in stores]
    table, registered = align_container(views, upsample)
    index.write_table(table, table_path)
    figures.save_png(figures.plot_container_alignment(ophys_container_id, views, table, registered), figure_path)
    return table


def cell_counts(record_path: Path, index_path: Path, depth_bin_um: int, tables: dict[str, Path],
                figure_paths: dict[str, Path]) -> dict[str, pd.DataFrame]:
    release = record_tables(read_record(record_path))
    by_experiment = counts.cells_by_experiment(release["ophys_experiment_table"], release["ophys_cells_table"])
    outputs = {
        "by_experiment": by_experiment,
        "by_depth": counts.counts_by_depth(by_experiment, release["ophys_cells_table"], depth_bin_um),
        "summary": counts.summary(by_experiment),
        "selected": counts.selected_agreement(pd.read_csv(index_path), by_experiment),
    }
    for name, path in tables.items():
        index.write_table(outputs[name], path)
    plots = {
        "histogram": lambda: figures.plot_cells_per_experiment_histogram(by_experiment),
        "vs_depth": lambda: figures.plot_cells_vs_depth(by_experiment),
        "by_cre_line": lambda: figures.plot_cells_by_cre_line(by_experiment),
        "by_depth_bin": lambda: figures.plot_counts_by_depth(outputs["by_depth"]),
    }
    for name, path in figure_paths.items():
        figures.save_png(plots[name](), path)
    return outputs


def population(stores: list[Path], ophys_session_id: int, window: tuple[float, float], table_path: Path,
               figure_path: Path) -> pd.DataFrame:
    traces = session_population(stores, window)
    index.write_table(traces, table_path)
    figures.save_png(figures.plot_session_population(ophys_session_id, traces, window), figure_path)
    return traces


def cell_count_outputs() -> tuple[dict[str, Path], dict[str, Path]]:
    """The cell-count tables and figures by name, where the workflow writes them."""
    return (
        {name: results.cell_count_table(name) for name in results.CELL_COUNT_TABLES},
        {name: results.cell_count_figure(name) for name in results.CELL_COUNT_FIGURES},
    )
