"""Every step of the workflow as one function with explicit inputs and outputs.

The rule scripts in scripts/ and the `vb2p` command line both call these, so a step run by hand does exactly what its
rule does. Paths are given by the caller (the rules name them through vb2p.results).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import pandas as pd

from vb2p import layout, results
from vb2p.errors import SelectionError
from vb2p.release import (
    download_experiment,
    experiment_entry,
    experiment_file,
    read_record,
    record_tables,
    release_cache,
    sync_metadata,
)
from vb2p.selection import estimated_download_bytes, select_experiments, write_selection

# The modules of later stages (Zarr, xarray, matplotlib, scikit-image) are imported by the steps that use them: each
# rule's conda environment (envs/) carries only its stage's libraries.
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
    from vb2p.overview import release_overview, write_overview

    return write_overview(release_overview(record_tables(read_record(record_path))), out_dir)


def _duration(seconds: float) -> str:
    """Minutes below an hour (a small selection's download is not '0.0 h'), hours above."""
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def select(selection: dict, max_selection_gb: float | None, record_path: Path, out_path: Path) -> pd.DataFrame:
    """Apply the config's selection; refuse one whose download is larger than max_selection_gb (estimated)."""
    experiments = record_tables(read_record(record_path))["ophys_experiment_table"]
    selected = select_experiments(experiments, **selection)
    size = estimated_download_bytes(selected)
    what = (
        f"{len(selected)} experiments in {selected.ophys_container_id.nunique()} containers: about {size / 1e9:,.0f} GB "
        f"of NWB files to download (estimated from typical file sizes per rig), about "
        f"{_duration(size / ASSUMED_DOWNLOAD_BYTES_PER_S)} at {ASSUMED_DOWNLOAD_BYTES_PER_S / 1e6:.0f} MB/s"
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


@contextlib.contextmanager
def _experiment_nwb(config: dict, receipt: dict, ophys_experiment_id: int, reads):
    """The experiment's NWB as its receipt names it: yields (path or file object, its transfer counter or None).

    download.mode whole: the cached file, checked against its hash first (fetched again if it changed since it was
    verified). datasets: ranged reads of the pinned S3 object (vb2p.remote), its size and ETag checked against the
    receipt's on opening and again after reading; reads(f) names the datasets the step reads, fetched up front in a
    few parallel requests instead of one per read.
    """
    import h5py

    from vb2p.remote import prefetch_datasets

    if receipt["mode"] != "datasets":
        nwb_path, _, _ = experiment_file(config, receipt["manifest_version"], ophys_experiment_id)
        yield nwb_path, None
        return
    cache = release_cache(config)
    _, entry = experiment_entry(cache, receipt["manifest_version"], ophys_experiment_id)
    with cache.source.open(entry.key, entry.version_id, receipt["bytes"], receipt["etag"]) as remote:
        with h5py.File(remote, "r") as f:
            fetched = prefetch_datasets(f, remote, reads(f))
        yield remote, remote.stats
    moved = remote.stats.as_record()
    log.info("datasets mode: %.1f MB of datasets, %.1f MB moved in %d requests (%.3f of the %.1f MB file)",
             fetched / 1e6, moved["bytes_moved"] / 1e6, moved["requests"], moved["bytes_moved"] / receipt["bytes"],
             receipt["bytes"] / 1e6)


def session_task(config: dict, receipt_path: Path, ophys_experiment_id: int, ophys_session_id: int,
                 out_dir: Path) -> dict:
    """The session's task tables, from the file of one of its experiments (the receipt's), for every plane's store."""
    from vb2p.extract import extract_session_task
    from vb2p.remote import TASK_READS

    receipt = json.loads(Path(receipt_path).read_text())
    with _experiment_nwb(config, receipt, ophys_experiment_id, lambda f: TASK_READS) as (nwb, _):
        record = extract_session_task(nwb, out_dir, ophys_experiment_id, ophys_session_id)
    log.info("session %d: task from experiment %d: %d stimulus presentations, %d trials -> %s", ophys_session_id,
             ophys_experiment_id, record["n_stimulus_presentations"], record["n_trials"], out_dir)
    return record


def extract(config: dict, receipt_path: Path, ophys_experiment_id: int, store_path: Path,
            session_task_dir: Path | None = None) -> dict:
    """Write the experiment's store from the NWB file its receipt names, with the task tables of session_task_dir
    (the session_task step's) when they are this file's task."""
    from vb2p import task
    from vb2p.extract import ExtractionOptions, extract_experiment
    from vb2p.remote import PLANE_READS, TASK_READS

    receipt = json.loads(Path(receipt_path).read_text())
    provenance = {k: receipt[k] for k in ("url", "version_id", "file_hash", "manifest_version", "mode")}
    options = ExtractionOptions(**config["extraction"])

    def reads(f):  # the session's tables are taken from session_task_dir: only what checks they are this file's
        return (*PLANE_READS, *(task.fingerprint_paths(f) if session_task_dir else TASK_READS))

    with _experiment_nwb(config, receipt, ophys_experiment_id, reads) as (nwb, transfer):
        if transfer is None:
            provenance["transfer"] = receipt["moved"]
        summary = extract_experiment(nwb, store_path, ophys_experiment_id, provenance, options, transfer,
                                     session_task_dir)
    log.info("%d frames x %d ROIs (%d valid) -> %s", summary["n_frames"], summary["n_rois"], summary["n_valid_rois"],
             store_path)
    return summary


def build_index(stores: list[Path], record_path: Path, index_path: Path, mismatches_path: Path,
                transfers_path: Path) -> pd.DataFrame:
    """The index of the stores, the cell-count cross-check, and what reading the NWB files moved (logged in sum)."""
    from vb2p import index

    table = index.build_index(stores, Path(index_path).parent)
    index.write_table(table, index_path)
    cells = record_tables(read_record(record_path))["ophys_cells_table"]
    mismatches = index.cell_count_check(table, cells)
    index.write_table(mismatches, mismatches_path)
    if len(mismatches):
        log.warning("%d experiments have a valid-ROI count that differs from ophys_cells_table: see %s",
                    len(mismatches), mismatches_path)
    moved = index.transfers(stores)
    index.write_table(moved, transfers_path)
    cached = int(((moved["mode"] == "whole") & (moved.bytes_moved == 0)).sum())  # their copy checked out
    log.info("%d stores; reading their NWB files moved %.1f MB in %d requests (files already in the cache: %d)",
             len(table), moved.bytes_moved.sum() / 1e6, int(moved.requests.sum()), cached)
    return table


def container_alignment(stores: list[Path], ophys_container_id: int, upsample: int, table_path: Path,
                        figure_path: Path) -> pd.DataFrame:
    """stores in acquisition order: the first is the reference session."""
    from vb2p import figures, index
    from vb2p.alignment import align_container, load_view

    views = [load_view(store) for store in stores]
    table, registered = align_container(views, upsample)
    index.write_table(table, table_path)
    figures.save_png(figures.plot_container_alignment(ophys_container_id, views, table, registered), figure_path)
    return table


def cell_counts(record_path: Path, index_path: Path, depth_bin_um: int, tables: dict[str, Path],
                figure_paths: dict[str, Path]) -> dict[str, pd.DataFrame]:
    from vb2p import cell_counts as counts
    from vb2p import figures, index

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
    from vb2p import figures, index
    from vb2p.population import session_population

    traces = session_population(stores, window)
    index.write_table(traces, table_path)
    figures.save_png(figures.plot_session_population(ophys_session_id, traces, window), figure_path)
    return traces


def behavior_session(stores: list[Path], ophys_session_id: int, table_path: Path, figure_path: Path) -> pd.DataFrame:
    """Behavior performance of a session (AllenSDK's get_performance_metrics) and its figure. Every plane of a
    session holds the same task: the first store serves."""
    from vb2p import figures, index
    from vb2p.experiment import open_experiment
    from vb2p.performance import change_outcomes, is_passive

    experiment = open_experiment(stores[0])
    metadata = experiment.metadata
    row = {"ophys_session_id": int(ophys_session_id), "behavior_session_id": metadata["behavior_session_id"],
           "ophys_experiment_id": experiment.ophys_experiment_id, "mouse_id": metadata["mouse_id"],
           "cre_line": metadata["cre_line"], "session_type": metadata["session_type"],
           "equipment_name": metadata["equipment_name"], "has_task": experiment.has_task}
    if experiment.has_task:
        row.update(experiment.get_performance_metrics())
        trials = experiment.trials.join(experiment.get_rolling_performance_df())
        passive = is_passive(trials)
        behavior = {"running": experiment.running_speed, "licks": experiment.licks, "rewards": experiment.rewards,
                    "changes": change_outcomes(experiment.stimulus_presentations, trials), "trials": trials,
                    "passive": passive, "title": f"{metadata['session_type']}, mouse {metadata['mouse_id']}: " + (
                        "passive" if passive else
                        f"d' {row['mean_dprime']:.2f}, hits {row['hit_trial_count']} of {row['go_trial_count']} go"
                        f" trials, false alarms {row['false_alarm_trial_count']} of {row['catch_trial_count']}"
                        " catch trials")}
        figure = figures.plot_behavior_session(ophys_session_id, behavior)
    else:
        log.warning("session %s: its experiment file holds no task; no performance to report", ophys_session_id)
        figure = figures.plot_note(f"Session {ophys_session_id}: its NWB file holds no change-detection task")
    table = pd.DataFrame([row])
    index.write_table(table, table_path)
    figures.save_png(figure, figure_path)
    return table


def behavior_performance(session_tables: list[Path], out_path: Path) -> pd.DataFrame:
    """One row per session: the release-wide behavior performance table."""
    from vb2p import index

    table = pd.concat([pd.read_csv(path, dtype={"mouse_id": str}) for path in session_tables], ignore_index=True)
    table = table.sort_values("ophys_session_id").reset_index(drop=True)
    index.write_table(table, out_path)
    return table


def responses(store: Path, metadata: dict, section: dict, out_path: Path) -> dict:
    """The experiment's stimulus-locked responses (vb2p.responses), with its metadata (responses.experiment_metadata
    of the selection)."""
    from vb2p.experiment import open_experiment
    from vb2p.responses import ResponseParams, write_experiment_responses

    return write_experiment_responses(open_experiment(store), out_path, ResponseParams.from_config(section), metadata)


def response_table(stores: list[Path], out_path: Path) -> None:
    from vb2p.responses import build_response_table

    build_response_table([Path(store) for store in stores], Path(out_path))


def platform_figures(table_path: Path, section: dict, tables: dict[str, Path], figure_paths: dict[str, Path]) -> None:
    """The platform paper's population figures and the numbers behind them, over the experiments the config's
    `platform` section (schema defaults: Allen's sessions) selects."""
    from vb2p import figures, index, platform

    table, timestamps = platform.read_response_table(table_path, event_types=platform.EVENT_TYPES)
    table = platform.platform_experiments(table, section["sessions"], section["containers_with_all_experience_levels"])
    log.info("platform figures: %d experiments of %d containers (platform: %s)", table.ophys_experiment_id.nunique(),
             table.ophys_container_id.nunique(), section)
    if table.empty:
        why = ("No selected experiment is in the platform figures' sessions (config key platform): select whole"
               " containers, or set platform.sessions: all and platform.containers_with_all_experience_levels: false")
        log.warning(why)
        outputs = {"population_responses": pd.DataFrame(columns=platform.POPULATION_COLUMNS),
                   "responsive_fractions": pd.DataFrame(columns=platform.FRACTION_COLUMNS)}
        plots = {name: lambda: figures.plot_note(why) for name in figure_paths}
    else:
        population = pd.concat([platform.population_traces(table, timestamps, event_type)
                                for event_type in platform.EVENT_TYPES], ignore_index=True)
        outputs = {"population_responses": population,
                   "responsive_fractions": platform.responsive_fractions(table, section["responsive_threshold"])}
        plots = {
            "change_responses": lambda: figures.plot_population_responses(
                population[population.event_type == "changes"], "changes"),
            "omission_responses": lambda: figures.plot_population_responses(
                population[population.event_type == "omissions"], "omissions"),
            "responsive_fractions": lambda: figures.plot_responsive_fractions(outputs["responsive_fractions"]),
        }
    for name, path in tables.items():
        index.write_table(outputs[name], path)
    for name, path in figure_paths.items():
        figures.save_png(plots[name](), path)


def publish(index_path: Path, url: str, endpoint_url: str | None = None, response_table: Path | None = None) -> list:
    """Sync every store the index lists, the index (as Parquet) and the response table to s3://bucket/prefix, for
    anyone to open anonymously (vb2p.share). Uploads are signed with the credentials boto3 finds (environment,
    ~/.aws); only what changed is uploaded."""
    import boto3

    from vb2p import share

    bucket, prefix = share.parse_s3_prefix(url)
    client = boto3.client("s3", endpoint_url=endpoint_url, region_name=layout.REGION)
    table = pd.read_csv(index_path, dtype={"mouse_id": str})
    published = [share.publish_store(client, Path(index_path).parent / path, bucket, prefix) for path in table.path]
    share.publish_index(client, table, bucket, prefix)
    if response_table is not None and Path(response_table).exists():
        share.publish_file(client, response_table, bucket, f"{prefix}/{Path(response_table).name}")
    return published


def platform_outputs() -> tuple[dict[str, Path], dict[str, Path]]:
    return (
        {name: results.platform_table(name) for name in results.PLATFORM_TABLES},
        {name: results.platform_figure(name) for name in results.PLATFORM_FIGURES},
    )


def cell_count_outputs() -> tuple[dict[str, Path], dict[str, Path]]:
    """The cell-count tables and figures by name, where the workflow writes them."""
    return (
        {name: results.cell_count_table(name) for name in results.CELL_COUNT_TABLES},
        {name: results.cell_count_figure(name) for name in results.CELL_COUNT_FIGURES},
    )
