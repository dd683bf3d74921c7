"""`vb2p <step>`: every step of the workflow, runnable by hand (the rule scripts call the same functions)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vb2p.errors import Vb2pError

DEFAULT_CONFIG = Path("config/config.yaml")


def _demo_release(args: argparse.Namespace) -> None:
    from vb2p.demo.design import DemoSize
    from vb2p.demo.generate import generate_release

    size = DemoSize(mice=args.mice, duration_s=args.duration_s, cells_per_plane=args.cells, all_traces=args.all_traces)
    root = generate_release(
        args.out,
        seed=args.seed,
        size=size,
        manifest_version=args.manifest_version,
        revision=args.revision,
        workers=args.workers,
    )
    print(root)


def _config(args: argparse.Namespace) -> dict:
    from vb2p.config import load_config

    return load_config(DEFAULT_CONFIG, *(args.config or []))


def _sync(args: argparse.Namespace) -> None:
    from vb2p.release import sync_metadata

    record = sync_metadata(_config(args), args.out)
    print(f"manifest {record['manifest_version']} from {record['source']}; tables in {record['cache_dir']}")


def _overview(args: argparse.Namespace) -> None:
    from vb2p.overview import release_overview, write_overview
    from vb2p.release import read_record, record_tables

    for path in write_overview(release_overview(record_tables(read_record(args.record))), args.out):
        print(path)


def _select(args: argparse.Namespace) -> None:
    from vb2p.release import read_record, record_tables
    from vb2p.selection import select_experiments, write_selection

    experiments = record_tables(read_record(args.record))["ophys_experiment_table"]
    selected = select_experiments(experiments, **_config(args)["selection"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_selection(selected, args.out)
    print(f"{len(selected)} experiments in {selected.ophys_container_id.nunique()} containers -> {args.out}")


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        default=None,
        help="config file(s), merged in order over config/config.yaml as Snakemake merges --configfile",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vb2p", description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)

    demo = steps.add_parser(
        "demo-release",
        help="write a synthetic release in the real bucket layout",
        description="Write a deterministic synthetic Visual Behavior 2P release under OUT/visual-behavior-ophys "
        "(manifest, four metadata tables, NWB files) and its ground truth under OUT/ground_truth. Running it again "
        "in the same directory with another --manifest-version adds that manifest; --revision N re-releases every "
        "third experiment with new content.",
    )
    demo.add_argument("--out", type=Path, required=True, help="output directory (it plays the role of the bucket)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--mice", type=int, default=3, help="number of mice (3: three cre lines, both rig types)")
    demo.add_argument("--duration-s", type=float, default=660.0, help="length of each ophys session in seconds")
    demo.add_argument("--cells", type=int, default=40, help="ROIs per Scientifica plane (Mesoscope: a third)")
    demo.add_argument("--all-traces", action="store_true", help="also write the other trace matrices (real sizes)")
    demo.add_argument("--manifest-version", default="1.0.0")
    demo.add_argument("--revision", type=int, default=0, help="0 for a first release; N > 0 re-releases files")
    demo.add_argument("--workers", type=int, default=1, help="processes writing NWB files")
    demo.set_defaults(run=_demo_release)

    sync = steps.add_parser("sync", help="resolve the manifest and fetch the metadata tables into the cache")
    _add_config_option(sync)
    sync.add_argument("--out", type=Path, default=Path("results/release/release.json"), help="sync record")
    sync.set_defaults(run=_sync)

    overview = steps.add_parser("overview", help="tables that describe the whole release")
    overview.add_argument("--record", type=Path, default=Path("results/release/release.json"))
    overview.add_argument("--out", type=Path, default=Path("results/overview"))
    overview.set_defaults(run=_overview)

    select = steps.add_parser("select", help="apply the config's selection to the experiment table")
    _add_config_option(select)
    select.add_argument("--record", type=Path, default=Path("results/release/release.json"))
    select.add_argument("--out", type=Path, default=Path("results/selection/experiments.csv"))
    select.set_defaults(run=_select)
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
