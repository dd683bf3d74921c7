"""Where every result lives, relative to the run's working directory: the workflow's rules and the `vb2p` command
line name their outputs through this module, so a step run by hand reads and writes what the workflow would."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path("results")
LOGS = RESULTS / "logs"
BENCHMARKS = RESULTS / "benchmarks"
RELEASE_RECORD = RESULTS / "release" / "release.json"
OVERVIEW_DIR = RESULTS / "overview"
SELECTION = RESULTS / "selection" / "experiments.csv"
ZARR_DIR = RESULTS / "zarr"
ZARR_INDEX = ZARR_DIR / "index.csv"
CELL_COUNT_MISMATCHES = RESULTS / "qc" / "cell_count_mismatches.csv"
TRANSFERS = RESULTS / "qc" / "transfers.csv"
CELL_COUNTS_DIR = RESULTS / "cell_counts"
CELL_COUNT_TABLES = ("by_experiment", "by_depth", "summary", "selected")
CELL_COUNT_FIGURES = ("histogram", "vs_depth", "by_cre_line", "by_depth_bin")
FIGURES = RESULTS / "figures"


def download_receipt(ophys_experiment_id) -> Path:
    return RESULTS / "downloads" / f"{ophys_experiment_id}.json"


def session_task(ophys_session_id) -> Path:
    return RESULTS / "task" / f"{ophys_session_id}"


def store(ophys_experiment_id) -> Path:
    return ZARR_DIR / f"{ophys_experiment_id}.zarr"


def alignment_table(ophys_container_id) -> Path:
    return RESULTS / "alignment" / f"{ophys_container_id}.csv"


def alignment_figure(ophys_container_id) -> Path:
    return FIGURES / "containers" / f"{ophys_container_id}.png"


def session_table(ophys_session_id) -> Path:
    return RESULTS / "sessions" / f"{ophys_session_id}.csv"


def session_figure(ophys_session_id) -> Path:
    return FIGURES / "sessions" / f"{ophys_session_id}.png"


def cell_count_table(name: str) -> Path:
    return CELL_COUNTS_DIR / f"{name}.csv"


def cell_count_figure(name: str) -> Path:
    return FIGURES / "cell_counts" / f"{name}.png"


def responses_store(ophys_experiment_id) -> Path:
    return RESULTS / "responses" / f"{ophys_experiment_id}.zarr"


RESPONSE_TABLE = RESULTS / "responses" / "cell_responses.parquet"
PLATFORM_FIGURES = ("change_responses", "omission_responses", "responsive_fractions")
PLATFORM_TABLES = ("population_responses", "responsive_fractions")
BEHAVIOR_PERFORMANCE = RESULTS / "behavior" / "performance.csv"


def platform_figure(name: str) -> Path:
    return FIGURES / "platform" / f"{name}.png"


def platform_table(name: str) -> Path:
    return RESULTS / "platform" / f"{name}.csv"


def behavior_session_table(ophys_session_id) -> Path:
    return RESULTS / "behavior" / "sessions" / f"{ophys_session_id}.csv"


def behavior_figure(ophys_session_id) -> Path:
    return FIGURES / "behavior" / f"{ophys_session_id}.png"
