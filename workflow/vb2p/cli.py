"""`vb2p <step>`: every step of the workflow, runnable by hand (the rule scripts call the same functions)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vb2p.errors import Vb2pError


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
