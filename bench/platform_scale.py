"""The platform figures at the release's scale: a response table of a demo run repeated (new experiment, session and
container ids) until it holds as many ROIs as the release's valid ROIs (133,066 in v1.1.0), then the rule's step,
vb2p.steps.platform_figures, in a subprocess: seconds and peak RSS (what the SLURM profile's memory must hold).
Usage, after `make run`:

    .venv/bin/python bench/platform_scale.py [--table results/responses/cell_responses.parquet] [--rois 133066]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
STEP = """
import resource, sys, time
from pathlib import Path
from vb2p import steps
out = Path(sys.argv[3])
section = {"sessions": sys.argv[2], "containers_with_all_experience_levels": False, "responsive_threshold": 0.1}
start = time.perf_counter()
tables, figures = steps.platform_outputs()
steps.platform_figures(Path(sys.argv[1]), section, {n: out / p.name for n, p in tables.items()},
                       {n: out / p.name for n, p in figures.items()})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(f"{time.perf_counter() - start:.1f} s, peak RSS {peak:.2f} GiB")
"""


def release_sized(source: Path, out: Path, target_rois: int) -> str:
    table = pq.read_table(source)
    rois = len(set(zip(table["ophys_experiment_id"].to_pylist(), table["cell_roi_id"].to_pylist())))
    copies = -(-target_rois // rois)
    with pq.ParquetWriter(out, table.schema) as writer:
        for copy in range(copies):
            shifted = table
            for name in ("ophys_experiment_id", "ophys_container_id", "ophys_session_id"):
                shifted = shifted.set_column(shifted.schema.get_field_index(name), name,
                                             pc.add(shifted[name], pa.scalar(copy * 10**10, pa.int64())))
            writer.write_table(shifted)
    return f"{copies * rois} ROIs, {copies * len(table)} rows, {out.stat().st_size / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=REPO / "results/responses/cell_responses.parquet")
    parser.add_argument("--rois", type=int, default=133_066)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        table = Path(scratch) / "release.parquet"
        print("table:", release_sized(args.table, table, args.rois), flush=True)
        for sessions in ("last_familiar_second_novel_active", "all"):
            out = Path(scratch) / sessions
            out.mkdir()
            result = subprocess.run([sys.executable, "-c", STEP, str(table), sessions, str(out)], check=True,
                                    capture_output=True, text=True)
            print(f"platform_figures, sessions {sessions}: {result.stdout.strip()}", flush=True)


if __name__ == "__main__":
    main()
