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


def selected_experiment_ids():
    """The experiments chosen by the select_experiments checkpoint (evaluated once it has run)."""
    from vb2p.selection import read_selection

    return list(
        read_selection(checkpoints.select_experiments.get().output.experiments).index
    )


def selected_stores(wildcards):
    return expand(
        "results/zarr/{ophys_experiment_id}.zarr",
        ophys_experiment_id=selected_experiment_ids(),
    )


def final_outputs():
    return [
        RELEASE_RECORD,
        *expand("results/overview/{name}.csv", name=OVERVIEW_TABLES),
        SELECTION,
        ZARR_INDEX,
        CELL_COUNT_MISMATCHES,
    ]
