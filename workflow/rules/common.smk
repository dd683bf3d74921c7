import functools
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The library lives in workflow/vb2p: importable here and in every job, whichever environment runs it.
LIBRARY_DIR = str(Path(workflow.basedir) / "workflow")
sys.path.insert(0, LIBRARY_DIR)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (LIBRARY_DIR, os.environ.get("PYTHONPATH")) if p
)


envvars:
    "PYTHONPATH",


from vb2p import layout
from vb2p.overview import OVERVIEW_TABLES
from vb2p.config import validate_config
from vb2p.errors import ConfigError

try:
    config.update(validate_config(config))
except ConfigError as error:
    raise WorkflowError(str(error))

LOGS = "results/logs"
BENCHMARKS = "results/benchmarks"
RELEASE_RECORD = "results/release/release.json"
SELECTION = "results/selection/experiments.csv"
ZARR_INDEX = "results/zarr/index.csv"
CELL_COUNT_MISMATCHES = "results/qc/cell_count_mismatches.csv"
CELL_COUNT_TABLES = ("by_experiment", "by_depth", "summary", "selected")
CELL_COUNT_FIGURES = ("histogram", "vs_depth", "by_cre_line", "by_depth_bin")


wildcard_constraints:
    ophys_experiment_id=r"\d+",
    ophys_container_id=r"\d+",
    ophys_session_id=r"\d+",


DEMO = config.get("demo")


def demo_manifest():
    """The file whose appearance marks a finished demo release (written last, atomically)."""
    root = Path(DEMO["out"]) / layout.RELEASE_PREFIX
    return str(root / layout.manifest_key(DEMO["manifest_version"]))


def demo_release_inputs():
    """The sync step reads the demo release once it is written (nothing when reading a real bucket)."""
    return [demo_manifest()] if DEMO else []


def stores_of(experiment_ids):
    return expand("results/zarr/{id}.zarr", id=experiment_ids)


@functools.lru_cache(maxsize=4)
def _plan(selection_path, modified_ns):
    """Stores per container (acquisition order: the first is the reference session) and per session.

    Cached per version of the selection file: input functions run once per job, thousands of times for the whole
    release, and must not read the CSV each time.
    """
    from vb2p.selection import read_selection

    chosen = read_selection(selection_path)
    ordered = chosen.sort_values("date_of_acquisition")
    return {
        "experiments": stores_of(chosen.index),
        "containers": {
            int(c): stores_of(rows.index)
            for c, rows in ordered.groupby("ophys_container_id")
        },
        "sessions": {
            int(s): stores_of(rows.index)
            for s, rows in chosen.groupby("ophys_session_id")
        },
    }


def selection_plan():
    """What the select_experiments checkpoint chose (evaluated once it has run)."""
    path = checkpoints.select_experiments.get().output.experiments
    return _plan(path, os.stat(path).st_mtime_ns)


def selected_stores(wildcards):
    return selection_plan()["experiments"]


def container_stores(wildcards):
    return selection_plan()["containers"][int(wildcards.ophys_container_id)]


def session_stores(wildcards):
    return selection_plan()["sessions"][int(wildcards.ophys_session_id)]


def figure_outputs(wildcards):
    plan = selection_plan()
    containers, sessions = sorted(plan["containers"]), sorted(plan["sessions"])
    return [
        *expand("results/figures/containers/{c}.png", c=containers),
        *expand("results/alignment/{c}.csv", c=containers),
        *expand("results/figures/sessions/{s}.png", s=sessions),
        *expand("results/sessions/{s}.csv", s=sessions),
    ]


def final_outputs():
    return [
        RELEASE_RECORD,
        *expand("results/overview/{name}.csv", name=OVERVIEW_TABLES),
        SELECTION,
        ZARR_INDEX,
        CELL_COUNT_MISMATCHES,
        *expand("results/cell_counts/{name}.csv", name=CELL_COUNT_TABLES),
        *expand("results/figures/cell_counts/{name}.png", name=CELL_COUNT_FIGURES),
    ]
