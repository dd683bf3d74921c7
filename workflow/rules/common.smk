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


from vb2p import layout, results
from vb2p.selection import experiment_groups, read_selection
from vb2p.overview import OVERVIEW_TABLES
from vb2p.config import check_locations, read_config_file, validate_config
from vb2p.errors import ConfigError

# Before any job: Snakemake's own YAML reading keeps the last of two equal keys, so every config file is read again
# strictly; then the merged config is validated and every place the run writes to is probed.
try:
    for configfile_path in {
        *workflow.configfiles,
        *(workflow.overwrite_configfiles or []),
    }:
        read_config_file(configfile_path)
    config.update(validate_config(config))
    check_locations(config)
except ConfigError as error:
    raise WorkflowError(str(error))
if workflow.resource_settings.cores == 0:
    raise WorkflowError(
        "--cores 0 leaves no core to run a job on (Snakemake would wait forever): use --cores 1 or more"
    )

LOGS = str(results.LOGS)
BENCHMARKS = str(results.BENCHMARKS)
RELEASE_RECORD = str(results.RELEASE_RECORD)
SELECTION = str(results.SELECTION)
ZARR_INDEX = str(results.ZARR_INDEX)
CELL_COUNT_MISMATCHES = str(results.CELL_COUNT_MISMATCHES)
# A rule's params are what decides its output: changing one re-runs it (Snakemake's rerun trigger params). How files are
# fetched (download.retries, concurrency, part_mb) and the selection's size limit decide no output, so they are not
# params (as params, raising max_selection_gb re-ran the sync, which can move to a newer release, and everything
# after it); the scripts read them from the whole config (snakemake.config).
RELEASE_SOURCE = {key: config[key] for key in ("release", "cache_dir")}


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
    return [str(results.store(i)) for i in experiment_ids]


@functools.lru_cache(maxsize=4)
def _plan(selection_path, modified_ns):
    """The selection's experiment groups, as store paths. Cached per version of the selection file: input functions
    run once per job, thousands of times for the whole release, and must not read the CSV each time.
    """
    # imported once the selection exists: planning up to it does not need xarray
    from vb2p.responses import experiment_metadata

    selected = read_selection(selection_path)
    groups = experiment_groups(selected)
    return {
        "response_metadata": experiment_metadata(selected),
        "experiments": stores_of(groups["experiments"]),
        "session_of": groups["session_of"],
        "task_sources": groups["task_sources"],
        "responses": [str(results.responses_store(i)) for i in groups["experiments"]],
        "containers": {c: stores_of(ids) for c, ids in groups["containers"].items()},
        "sessions": {s: stores_of(ids) for s, ids in groups["sessions"].items()},
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


def session_task_dir(wildcards):
    """The task of the experiment's session (rule session_task), which its store takes; none when the experiment is
    its session's only selected plane (its extraction reads the task itself: nothing to share).
    """
    experiment = int(wildcards.ophys_experiment_id)
    plan = selection_plan()
    session = plan["session_of"].get(experiment)
    if session is None:
        raise WorkflowError(
            f"experiment {experiment} is not in the selection ({SELECTION}): stores are made for selected "
            "experiments; widen selection in the config to include it"
        )
    return str(results.session_task(session)) if session in plan["task_sources"] else []


def task_source(wildcards):
    return selection_plan()["task_sources"][int(wildcards.ophys_session_id)]


def task_source_download(wildcards):
    return str(results.download_receipt(task_source(wildcards)))


def response_metadata(wildcards):
    return selection_plan()["response_metadata"][int(wildcards.ophys_experiment_id)]


def selected_response_stores(wildcards):
    return selection_plan()["responses"]


def session_behavior_tables(wildcards):
    return [
        str(results.behavior_session_table(s))
        for s in sorted(selection_plan()["sessions"])
    ]


def per_experiment_outputs(wildcards):
    """Every output made per experiment, container or session: targets of `all` themselves, so one deleted by hand
    is made again (Snakemake does not remake a missing intermediate file whose dependents are up to date).
    """
    plan = selection_plan()
    containers, sessions = sorted(plan["containers"]), sorted(plan["sessions"])
    return [
        *plan["experiments"],
        *plan["responses"],
        *[str(results.alignment_figure(c)) for c in containers],
        *[str(results.alignment_table(c)) for c in containers],
        *[str(results.session_figure(s)) for s in sessions],
        *[str(results.session_table(s)) for s in sessions],
        *[str(results.behavior_figure(s)) for s in sessions],
        *[str(results.behavior_session_table(s)) for s in sessions],
    ]


def final_outputs():
    return [
        RELEASE_RECORD,
        *[str(results.OVERVIEW_DIR / f"{name}.csv") for name in OVERVIEW_TABLES],
        SELECTION,
        ZARR_INDEX,
        CELL_COUNT_MISMATCHES,
        str(results.TRANSFERS),
        *[str(results.cell_count_table(name)) for name in results.CELL_COUNT_TABLES],
        *[str(results.cell_count_figure(name)) for name in results.CELL_COUNT_FIGURES],
        str(results.BEHAVIOR_PERFORMANCE),
        str(results.RESPONSE_TABLE),
        *[str(results.platform_table(name)) for name in results.PLATFORM_TABLES],
        *[str(results.platform_figure(name)) for name in results.PLATFORM_FIGURES],
    ]
