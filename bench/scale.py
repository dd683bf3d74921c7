"""Planning the whole release: how long `snakemake -n` takes to plan every job for 100 ... 1,941 experiments.

Builds a local mirror of the real release's metadata: the real tables (tests/data/real_metadata: 1,941
experiments) and a manifest whose experiment entries carry the real v1.1.0 URLs and version ids (from
../shared/reference/real-metadata/v1.1.0-urls-with-version-ids.txt when present; synthetic ids otherwise). NWB files
are never fetched: a dry run only plans. Then, for each size, it syncs and selects (real steps, through the
workflow) and times the dry run of everything downstream.

Usage: .venv/bin/python bench/scale.py [--urls PATH] [--out bench/out/scale]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from vb2p import layout  # noqa: E402
from vb2p.demo.generate import version_id_for  # noqa: E402
from vb2p.files import file_blake2b  # noqa: E402

REAL = REPO / "tests" / "data" / "real_metadata"
DEFAULT_URLS = REPO.parent / "shared" / "reference" / "real-metadata" / "v1.1.0-urls-with-version-ids.txt"
SIZES = (100, 250, 500, 1000, 2000)


def real_versions(urls_file: Path) -> dict[str, tuple[str, str]]:
    """key (visual-behavior-ophys/...) -> (url, version id) from the real v1.1.0 list."""
    versions = {}
    if not urls_file.exists():
        return versions
    for line in urls_file.read_text().split():
        url, _, version = line.partition("?versionId=")
        versions[url.split(".amazonaws.com/", 1)[1]] = (url, version)
    return versions


def build_mirror(root: Path, urls_file: Path) -> tuple[int, int]:
    """The real release's metadata as a local mirror; returns (experiments, of which with real version ids)."""
    metadata = root / layout.METADATA_DIR
    metadata.mkdir(parents=True, exist_ok=True)
    versions = real_versions(urls_file)
    experiments = pd.read_csv(REAL / "ophys_experiment_table.csv", dtype=str, keep_default_na=False)
    experiments["file_id"] = [str(i) for i in range(len(experiments))]  # as published: 0.. in table order
    experiments.drop(columns="file_path").to_csv(metadata / "ophys_experiment_table.csv", index=False)
    for table in ("behavior_session_table", "ophys_session_table"):
        frame = pd.read_csv(REAL / f"{table}.csv", dtype=str, keep_default_na=False)
        frame.drop(columns=[c for c in ("file_path",) if c in frame]).to_csv(metadata / f"{table}.csv", index=False)
    # No real cells table is available: one placeholder row per experiment keeps the cell-count steps planned.
    cells = pd.DataFrame({"cell_roi_id": range(len(experiments)), "cell_specimen_id": "",
                          "ophys_experiment_id": experiments.ophys_experiment_id})
    cells.to_csv(metadata / "ophys_cells_table.csv", index=False)

    def entry(key: str, file_hash: str) -> dict:
        url, version = versions.get(key, (layout.public_url(key.split("/", 1)[1]), version_id_for(key, file_hash)))
        return {"url": url, "version_id": version, "file_hash": file_hash}

    metadata_files = {
        table: entry(f"{layout.RELEASE_PREFIX}/{layout.metadata_key(table)}", file_blake2b(root / layout.metadata_key(table)))
        for table in layout.METADATA_TABLES
    }
    data_files, real = {}, 0
    for file_id, experiment_id in zip(experiments.file_id, experiments.ophys_experiment_id):
        key = f"{layout.RELEASE_PREFIX}/{layout.experiment_key(int(experiment_id))}"
        real += key in versions
        placeholder_hash = hashlib.blake2b(key.encode()).hexdigest()  # never fetched by a dry run
        data_files[file_id] = entry(key, placeholder_hash)
    manifest = {
        "project_name": layout.PROJECT_NAME,
        "manifest_version": "1.1.0",
        "metadata_file_id_column_name": "file_id",
        "data_pipeline": [{"name": "AllenSDK", "version": "2.16.0", "comment": "scale benchmark"}],
        "metadata_files": metadata_files,
        "data_files": data_files,
    }
    (root / layout.MANIFEST_DIR).mkdir(exist_ok=True)
    (root / layout.manifest_key("1.1.0")).write_text(json.dumps(manifest, indent=1))
    return len(experiments), real


def snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(config), "--cores", "2", *args]
    return subprocess.run(command, capture_output=True, text=True)


def dry_run(mirror: Path, workdir: Path, max_containers: int | None, repeats: int) -> dict:
    config = {"release": {"url": str(mirror), "manifest_version": "1.1.0"}, "cache_dir": str(workdir / "cache"),
              "selection": {"max_containers": max_containers},
              "download": {"max_selection_gb": None}}  # planned, never downloaded: the size guard does not apply
    path = workdir / "config.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    prepared = snakemake(workdir, path, "--until", "select_experiments", "release_overview")
    if prepared.returncode != 0:
        raise RuntimeError(prepared.stderr[-2000:])
    n_experiments = len(pd.read_csv(workdir / "results/selection/experiments.csv"))
    times, jobs = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        planned = snakemake(workdir, path, "-n", "--quiet", "rules")
        times.append(time.perf_counter() - start)
        if planned.returncode != 0:
            raise RuntimeError(planned.stderr[-2000:])
        jobs = int(re.findall(r"^total\s+(\d+)\s*$", planned.stdout, flags=re.M)[-1])  # snakemake's job stats
    seconds = statistics.median(times)
    return {"experiments": n_experiments, "jobs": jobs, "dry_run_s": seconds, "ms_per_experiment": 1e3 * seconds / n_experiments}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--urls", type=Path, default=DEFAULT_URLS)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "scale")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    mirror = args.out / "mirror" / layout.RELEASE_PREFIX
    n_experiments, with_real_ids = build_mirror(mirror, args.urls)
    print(f"mirror: {n_experiments} experiments, {with_real_ids} with real v1.1.0 URLs and version ids", flush=True)
    containers = pd.read_csv(REAL / "ophys_experiment_table.csv").groupby("ophys_container_id").size().sort_index()
    results = []
    for size in SIZES:
        # The first N containers (by id) hold about `size` experiments; 2000 means the whole release.
        cap = None if size >= n_experiments else int((containers.cumsum() <= size).sum()) or 1
        result = dry_run(mirror, args.out / f"run_{size}", cap, args.repeats)
        results.append(result)
        print(f"{result['experiments']:>5} experiments, {result['jobs']:>5} jobs: dry run {result['dry_run_s']:.2f} s"
              f" ({result['ms_per_experiment']:.2f} ms per experiment)", flush=True)
    (args.out / "scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
