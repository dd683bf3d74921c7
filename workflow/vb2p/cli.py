"""`vb2p <step>`: every step of the workflow, runnable by hand in the directory the workflow runs in.

Each subcommand calls the same vb2p.steps function as the step's rule script, with the inputs and outputs where the
workflow keeps them (vb2p.results): `vb2p extract --experiment 951980471` reads results/downloads/951980471.json and
writes results/zarr/951980471.zarr, as the rule extract_experiment would. `--config` files are merged over
config/config.yaml exactly as Snakemake merges them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vb2p import results
from vb2p.errors import Vb2pError

DEFAULT_CONFIG = Path("config/config.yaml")


def _config(args: argparse.Namespace) -> dict:
    from vb2p.config import check_locations, load_config

    config = load_config(DEFAULT_CONFIG, *(args.config or []))
    check_locations(config)
    return config


def _groups() -> dict:
    from vb2p.selection import experiment_groups, read_selection

    return experiment_groups(read_selection(results.SELECTION))


def _stores(experiment_ids: list[int]) -> list[Path]:
    return [results.store(i) for i in experiment_ids]


def _demo_release(args: argparse.Namespace) -> None:
    from vb2p import steps

    demo = {key: getattr(args, key) for key in _demo_defaults()}
    print(steps.demo_release(demo, workers=args.workers, revision=args.revision))


def _sync(args) -> None:
    from vb2p import steps

    record = steps.sync(_config(args), results.RELEASE_RECORD)
    print(f"manifest {record['manifest_version']} from {record['source']} -> {results.RELEASE_RECORD}")


def _overview(args) -> None:
    from vb2p import steps

    for path in steps.overview(results.RELEASE_RECORD, results.OVERVIEW_DIR):
        print(path)


def _select(args) -> None:
    from vb2p import steps

    config = _config(args)
    selected = steps.select(config["selection"], config["download"]["max_selection_gb"], results.RELEASE_RECORD,
                            results.SELECTION)
    print(f"{len(selected)} experiments in {selected.ophys_container_id.nunique()} containers -> {results.SELECTION}")


def _download(args) -> None:
    from vb2p import steps

    receipt = steps.download(_config(args), results.RELEASE_RECORD, args.experiment,
                             results.download_receipt(args.experiment))
    # download.mode datasets fetches nothing here: extraction reads the datasets from the object the receipt pins
    print(receipt["path"] if receipt["mode"] != "datasets" else f"{receipt['url']} ({receipt['bytes']} bytes, pinned)")


def _session_task(args) -> None:
    from vb2p import steps

    groups = _groups()
    if args.session not in groups["task_sources"]:
        planes = groups["sessions"].get(args.session)
        if planes is None:
            raise SystemExit(f"session {args.session} is not in the selection ({results.SELECTION})")
        print(f"session {args.session} has one selected plane (experiment {planes[0]}): its extraction reads the "
              "task from its own file; nothing to do")
        return
    source = groups["task_sources"][args.session]
    steps.session_task(_config(args), results.download_receipt(source), source, args.session,
                       results.session_task(args.session))
    print(results.session_task(args.session))


def _extract(args) -> None:
    from vb2p import steps

    groups = _groups()
    session = groups["session_of"][args.experiment]
    steps.extract(_config(args), results.download_receipt(args.experiment), args.experiment,
                  results.store(args.experiment),
                  results.session_task(session) if session in groups["task_sources"] else None)
    print(results.store(args.experiment))


def _index(args) -> None:
    from vb2p import steps

    steps.build_index(_stores(_groups()["experiments"]), results.RELEASE_RECORD, results.ZARR_INDEX,
                      results.CELL_COUNT_MISMATCHES, results.TRANSFERS)
    print(results.ZARR_INDEX)


def _alignment(args) -> None:
    from vb2p import steps

    config = _config(args)
    container = args.container
    steps.container_alignment(_stores(_groups()["containers"][container]), container,
                              config["figures"]["alignment_upsample"], results.alignment_table(container),
                              results.alignment_figure(container))
    print(results.alignment_figure(container))


def _cell_counts(args) -> None:
    from vb2p import steps

    config = _config(args)
    tables, figure_paths = steps.cell_count_outputs()
    steps.cell_counts(results.RELEASE_RECORD, results.ZARR_INDEX, config["figures"]["depth_bin_um"], tables,
                      figure_paths)
    print(results.CELL_COUNTS_DIR)


def _population(args) -> None:
    from vb2p import steps

    config = _config(args)
    session = args.session
    steps.population(_stores(_groups()["sessions"][session]), session, tuple(config["figures"]["session_window_s"]),
                     results.session_table(session), results.session_figure(session))
    print(results.session_figure(session))


def _behavior(args) -> None:
    from vb2p import steps

    session = args.session
    steps.behavior_session(_stores(_groups()["sessions"][session]), session, results.behavior_session_table(session),
                           results.behavior_figure(session))
    print(results.behavior_figure(session))


def _behavior_performance(args) -> None:
    from vb2p import steps

    sessions = sorted(_groups()["sessions"])
    steps.behavior_performance([results.behavior_session_table(s) for s in sessions], results.BEHAVIOR_PERFORMANCE)
    print(results.BEHAVIOR_PERFORMANCE)


def _responses(args) -> None:
    from vb2p import steps
    from vb2p.responses import experiment_metadata
    from vb2p.selection import read_selection

    metadata = experiment_metadata(read_selection(results.SELECTION).loc[[args.experiment]])[args.experiment]
    steps.responses(results.store(args.experiment), metadata, _config(args)["responses"],
                    results.responses_store(args.experiment))
    print(results.responses_store(args.experiment))


def _response_table(args) -> None:
    from vb2p import steps

    steps.response_table([results.responses_store(i) for i in _groups()["experiments"]], results.RESPONSE_TABLE)
    print(results.RESPONSE_TABLE)


def _platform(args) -> None:
    from vb2p import steps

    steps.platform_figures(results.RESPONSE_TABLE, _config(args)["platform"], *steps.platform_outputs())
    print(results.platform_figure("change_responses").parent)


def _publish(args) -> None:
    from vb2p import steps

    for store in steps.publish(results.ZARR_INDEX, args.to, args.endpoint_url, results.RESPONSE_TABLE):
        print(store.url)


def _demo_defaults() -> dict:
    """The demo's knobs and their defaults, from the config schema (their one source)."""
    from vb2p.config import load_schema

    return {key: spec["default"] for key, spec in load_schema()["properties"]["demo"]["properties"].items()}


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        default=None,
        help="config file(s), merged in order over config/config.yaml as Snakemake merges --configfile",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vb2p", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)

    demo = steps.add_parser(
        "demo-release",
        help="write a synthetic release in the real bucket layout (rule demo_release)",
        description="Write a deterministic synthetic Visual Behavior 2P release under OUT/visual-behavior-ophys "
        "(manifest, four metadata tables, NWB files) and its ground truth under OUT/ground_truth. Defaults are the "
        "config schema's demo defaults.",
    )
    defaults = _demo_defaults()
    demo.add_argument("--out", type=Path, default=Path(defaults["out"]), help="directory that plays the bucket's role")
    demo.add_argument("--seed", type=int, default=defaults["seed"])
    demo.add_argument("--mice", type=int, default=defaults["mice"], help="mice (3: three cre lines, both rigs)")
    demo.add_argument("--duration-s", type=float, default=defaults["duration_s"],
                      help="change-detection block of each session (gray screens of min(300 s, this) around it)")
    demo.add_argument("--cells-per-plane", type=int, default=defaults["cells_per_plane"],
                      help="ROIs of a dense Slc17a7 Scientifica plane; other lines and rigs keep the real proportions")
    demo.add_argument("--all-traces", action="store_true", default=defaults["all_traces"],
                      help="also write the demixed and neuropil matrices (real file sizes)")
    demo.add_argument("--manifest-version", default=defaults["manifest_version"])
    demo.add_argument("--workers", type=int, default=defaults["workers"], help="processes writing NWB files")
    demo.add_argument("--revision", type=int, default=0,
                      help="0 for a first release; N > 0 (with another --manifest-version) re-releases every third "
                      "experiment with new content, as Allen's later manifests did")
    demo.set_defaults(run=_demo_release)

    # step, function, its option naming what it works on (or None), whether it reads the config, help
    for name, run, option, reads_config, help_text in (
        ("sync", _sync, None, True, "manifest and metadata tables into the cache (rule sync_metadata)"),
        ("overview", _overview, None, False, "tables that describe the whole release (rule release_overview)"),
        ("select", _select, None, True, "the config's selection of experiments (checkpoint select_experiments)"),
        ("download", _download, "--experiment", True, "one NWB file into the cache (rule download_experiment)"),
        ("session-task", _session_task, "--session", True,
         "the task tables a session's selected planes share, read once (rule session_task; a session of one "
         "selected plane has none: its extraction reads the task)"),
        ("extract", _extract, "--experiment", True,
         "write one experiment's Zarr store, after its session's session-task if it has one (rule "
         "extract_experiment)"),
        ("index", _index, None, False, "index the selection's stores, cross-check cell counts (rule zarr_index)"),
        ("alignment", _alignment, "--container", True, "a container's sessions aligned (rule container_alignment)"),
        ("population", _population, "--session", True, "mean dF/F of a session's planes (rule session_population)"),
        ("cell-counts", _cell_counts, None, True, "cells, neurons and ROIs by depth (rule cell_counts)"),
        ("behavior", _behavior, "--session", False, "a session's behavior performance (rule behavior_session)"),
        ("behavior-performance", _behavior_performance, None, False, "one row per session (rule behavior_performance)"),
        ("responses", _responses, "--experiment", True, "stimulus-locked responses (rule stimulus_responses)"),
        ("response-table", _response_table, None, False, "the release-wide response table (rule response_table)"),
        ("platform", _platform, None, True, "population responses and responsive fractions (rule platform_figures)"),
    ):
        step = steps.add_parser(name, help=help_text, description=help_text)
        if reads_config:
            _add_config_option(step)
        if option:
            step.add_argument(option, type=int, required=True, help=f"ophys_{option[2:]}_id")
        step.set_defaults(run=run)
    publish = steps.add_parser(
        "publish",
        help="sync the stores, their index and the response table to an S3 prefix (xr.open_zarr reads them there)",
        description="Publish results/zarr (the stores the index lists), the index as index.parquet and "
        "results/responses/cell_responses.parquet to s3://bucket/prefix, public-read; only what changed is uploaded. "
        "Credentials: boto3's (environment, ~/.aws).",
    )
    publish.add_argument("--to", required=True, help="s3://bucket/prefix")
    publish.add_argument("--endpoint-url", default=None, help="an S3-compatible server instead of AWS")
    publish.set_defaults(run=_publish)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except Vb2pError as error:
        print(f"vb2p {args.step}: {error}", file=sys.stderr)
        return 1
    return 0
