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


def selection():
    """The experiments chosen by the select_experiments checkpoint (evaluated once it has run)."""
    from vb2p.selection import read_selection

    return read_selection(checkpoints.select_experiments.get().output.experiments)


def stores_of(experiment_ids):
    return expand("results/zarr/{id}.zarr", id=experiment_ids)


def selected_stores(wildcards):
    return stores_of(selection().index)


def container_stores(wildcards):
    """The container's selected experiments, in acquisition order (the first is the reference session)."""
    chosen = selection()
    chosen = chosen[chosen.ophys_container_id == int(wildcards.ophys_container_id)]
    return stores_of(chosen.sort_values("date_of_acquisition").index)


def session_stores(wildcards):
    chosen = selection()
    return stores_of(
        chosen[chosen.ophys_session_id == int(wildcards.ophys_session_id)].index
    )


def figure_outputs(wildcards):
    chosen = selection()
    containers = sorted(chosen.ophys_container_id.unique())
    sessions = sorted(chosen.ophys_session_id.unique())
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
