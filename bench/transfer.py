"""Moving only the bytes that matter, on a realistic link: ranged reads of the datasets extraction needs
(vb2p.remote), whole-file downloads in parallel parts (vb2p.transfer), Zarr stores on object storage (vb2p.share).

Every figure is measured side by side in one run, through bench/link.py (20 ms each way, 50 MB/s per connection)
in front of bench/object_server.py, which serves the NWB files and a published Zarr store. Nothing is left running.

Usage: .venv/bin/python bench/transfer.py [--out bench/out] [--repeats 3] [--only candidates,bytes,...]
Sections: candidates (which reader), bytes (datasets mode / whole file), wall (datasets mode / download + local
reads), download (parallel parts / single stream, and the cost of BLAKE2b), share (Zarr on S3 / NWB by ranged
reads), release (the whole-release estimate). Results go to <out>/transfer.json.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from link import Link  # noqa: E402
from object_server import ObjectServer  # noqa: E402
from realistic_files import REPO, demo_experiment_file  # noqa: E402
from session_files import with_session_content  # noqa: E402

from vb2p import layout, task  # noqa: E402
from vb2p.extract import extract_experiment  # noqa: E402
from vb2p.files import file_blake2b  # noqa: E402
from vb2p.remote import (  # noqa: E402
    EXTRACTION_READS, PLANE_READS, TASK_READS, MiB, anonymous_client, dataset_ranges, datasets_under, open_remote,
    prefetch_datasets,
)
from vb2p.share import open_shared_store  # noqa: E402
from vb2p.transfer import discard_partial, download_object  # noqa: E402

BUCKET = "bench"
REAL_METADATA = REPO.parent / "shared" / "reference" / "real-metadata" / "ophys_experiment_table.csv"
# Layout document section 6: typical experiment file sizes, and the whole original release.
TYPICAL_BYTES = {"scientifica": 0.95e9, "mesoscope": 0.27e9}
RELEASE_BYTES = 563e9
LINK_BITS_PER_S = 1e9


def read_everything(f: h5py.File) -> int:
    """What extraction reads: every dataset under EXTRACTION_READS, whole, and the metadata attributes."""
    total = 0
    for dataset in datasets_under(f, EXTRACTION_READS):
        value = dataset[()]
        total += getattr(value, "nbytes", 0)
    dict(f[layout.NWB_METADATA].attrs)
    return total


def stored_bytes(path: Path, reads=EXTRACTION_READS) -> int:
    with h5py.File(path, "r") as f:
        return sum(end - start for d in datasets_under(f, reads) for start, end in dataset_ranges(d))


def plane_bytes(path: Path) -> int:
    """What a plane's extraction reads when its session's task is read once for all its planes (rule session_task):
    its own datasets and those that check the session's task is its own."""
    with h5py.File(path, "r") as f:
        return stored_bytes(path, (*PLANE_READS, *task.fingerprint_paths(f)))


def measured(link: Link, function) -> dict:
    """Wall time and what crossed the link (requests, bytes to the client) while function ran."""
    before = link.counters()
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    after = link.counters()
    return {"seconds": seconds, "requests": after["requests"] - before["requests"],
            "bytes": after["bytes_to_client"] - before["bytes_to_client"], "result": result}


# ----- readers compared (the choice of vb2p.remote's design) -----


def ours(client, key, version, prefetch=True, **tuning):
    def run():
        with open_remote(client, BUCKET, key, version, **tuning) as remote, h5py.File(remote, "r") as f:
            if prefetch:
                prefetch_datasets(f, remote)
            read_everything(f)
        return remote.stats.as_record()
    return run


def s3fs_reader(url, key, version, cache_type, block_size):
    def run():
        import s3fs

        fs = s3fs.S3FileSystem(anon=True, endpoint_url=url, version_aware=True, skip_instance_cache=True)
        raw = fs.open(f"{BUCKET}/{key}", "rb", version_id=version, cache_type=cache_type, block_size=block_size)
        with raw, h5py.File(raw, "r") as f:
            read_everything(f)
    return run


def remfile_reader(url, key, version):
    def run():
        import remfile

        with h5py.File(remfile.File(f"{url}/{BUCKET}/{key}?versionId={version}"), "r") as f:
            read_everything(f)
    return run


def candidates(link: Link, files: dict, versions: dict) -> dict:
    client = anonymous_client(link.url)
    name = "scientifica"
    key, useful = files[name].name, stored_bytes(files[name])
    readers = {
        "vb2p.remote (prefetch)": ours(client, key, versions[name]),
        "vb2p.remote (no prefetch)": ours(client, key, versions[name], prefetch=False),
        "vb2p.remote (1 connection)": ours(client, key, versions[name], concurrency=1),
        "s3fs readahead 5 MB": s3fs_reader(link.url, key, versions[name], "readahead", 5 * MiB),
        "s3fs blockcache 5 MB": s3fs_reader(link.url, key, versions[name], "blockcache", 5 * MiB),
        "s3fs bytes 64 kB": s3fs_reader(link.url, key, versions[name], "bytes", 64 * 1024),
    }
    if importlib.util.find_spec("remfile"):
        readers["remfile (defaults)"] = remfile_reader(link.url, key, versions[name])
    else:
        print("(remfile not importable: pip install --target DIR remfile and add DIR to PYTHONPATH to compare it)")
    results = {}
    print(f"\n== candidates: every dataset extraction reads from {key} ({useful / 1e6:.0f} MB stored)")
    for label, run in readers.items():
        m = measured(link, run)
        results[label] = {k: v for k, v in m.items() if k != "result"}
        print(f"{label:28s} {m['seconds']:7.2f} s {m['requests']:6d} requests {m['bytes'] / 1e6:8.1f} MB moved"
              f" = {m['bytes'] / useful:5.2f} x the datasets", flush=True)
    return results


# ----- bytes and wall time -----


def single_stream(url: str, key: str, version: str, out: Path) -> str:
    """The download this project made before parallel parts: one GET streamed to disk, BLAKE2b while it streams."""
    response = anonymous_client(url).get_object(Bucket=BUCKET, Key=key, VersionId=version)
    hasher = hashlib.blake2b()
    with open(out, "wb") as handle:
        for block in response["Body"].iter_chunks(4 * 1024 * 1024):
            handle.write(block)
            hasher.update(block)
    return hasher.hexdigest()


def bytes_and_wall(link: Link, files: dict, versions: dict, work: Path, repeats: int) -> dict:
    client = anonymous_client(link.url)
    results = {}
    print("\n== bytes moved and wall time: datasets mode (vb2p.remote) vs whole download + the same reads locally")
    for name, path in files.items():
        key, size, useful = path.name, path.stat().st_size, stored_bytes(path)
        local = work / key

        def whole_then_read():
            single_stream(link.url, key, versions[name], local)
            with h5py.File(local, "r") as f:
                return read_everything(f)

        def parallel_then_read():
            discard_partial(local)
            download_object(client, BUCKET, key, versions[name], local)
            with h5py.File(local, "r") as f:
                return read_everything(f)

        remote, whole, parallel = [], [], []
        for _ in range(repeats):  # interleaved: drift in the machine's speed hits all three alike
            remote.append(measured(link, ours(client, key, versions[name])))
            whole.append(measured(link, whole_then_read))
            parallel.append(measured(link, parallel_then_read))
        local.unlink(missing_ok=True)
        r_s, w_s, p_s = (statistics.median(m["seconds"] for m in runs) for runs in (remote, whole, parallel))
        moved = remote[0]["bytes"]
        results[name] = {"file_bytes": size, "datasets_bytes": useful, "plane_bytes": plane_bytes(path),
                         "task_bytes": stored_bytes(path, TASK_READS), "moved_bytes": moved,
                         "requests": remote[0]["requests"], "bytes_ratio": moved / size, "remote_s": r_s,
                         "whole_single_then_read_s": w_s, "whole_parallel_then_read_s": p_s,
                         "wall_ratio": r_s / w_s, "wall_ratio_vs_parallel": r_s / p_s}
        print(f"{name}: file {size / 1e6:.0f} MB, datasets {useful / 1e6:.1f} MB; datasets mode moved "
              f"{moved / 1e6:.1f} MB in {remote[0]['requests']} requests = {moved / useful:.3f} x the datasets, "
              f"{moved / size:.3f} x the file (targets: Scientifica <= 0.30, Mesoscope <= 0.15); of the datasets,"
              f" the plane's own {results[name]['plane_bytes'] / 1e6:.1f} MB ({results[name]['plane_bytes'] / size:.3f}"
              f" x the file), the session's task {results[name]['task_bytes'] / 1e6:.1f} MB (read once per session)")
        print(f"{name}: datasets mode {r_s:.2f} s; whole download (single stream) + local reads {w_s:.2f} s: "
              f"ratio {r_s / w_s:.3f} (target <= 0.5 on Scientifica); whole download (parallel parts) + local reads "
              f"{p_s:.2f} s: ratio {r_s / p_s:.3f}", flush=True)
    return results


def download(link: Link, files: dict, versions: dict, work: Path, repeats: int) -> dict:
    import boto3.s3.transfer

    client = anonymous_client(link.url, max_pool_connections=32)
    name = "scientifica"
    key, size = files[name].name, files[name].stat().st_size
    out = work / key
    print(f"\n== whole-file download of {key} ({size / 1e6:.0f} MB)")

    def ours_with(concurrency, part_bytes):
        def run():
            discard_partial(out)
            return download_object(client, BUCKET, key, versions[name], out, concurrency=concurrency,
                                   part_bytes=part_bytes).blake2b
        return run

    def s3transfer_then_hash():
        config = boto3.s3.transfer.TransferConfig(max_concurrency=8, multipart_chunksize=16 * MiB)
        client.download_file(BUCKET, key, str(out), ExtraArgs={"VersionId": versions[name]}, Config=config)
        return file_blake2b(out)

    runs = {
        "single stream, hashed while streaming (today)": lambda: single_stream(link.url, key, versions[name], out),
        "vb2p.transfer 8 x 16 MB parts, hashed in order": ours_with(8, 16 * MiB),
        "vb2p.transfer 16 x 8 MB parts": ours_with(16, 8 * MiB),
        "vb2p.transfer 4 x 32 MB parts": ours_with(4, 32 * MiB),
        "s3transfer 8 x 16 MB, then a hash pass": s3transfer_then_hash,
    }
    expected = file_blake2b(files[name])
    results = {}
    for label, run in runs.items():
        times = []
        for _ in range(repeats):
            m = measured(link, run)
            assert m["result"] == expected, label
            times.append(m["seconds"])
        results[label] = statistics.median(times)
    single = results["single stream, hashed while streaming (today)"]
    for label, seconds in results.items():
        print(f"{label:48s} {seconds:6.2f} s {size / seconds / 1e6:6.0f} MB/s  speed-up {single / seconds:4.1f}x"
              " (target >= 3x)")
    started = time.perf_counter()
    file_blake2b(out)
    hash_pass = time.perf_counter() - started
    one_gb = 1e9 / size * hash_pass
    print(f"BLAKE2b second pass over the downloaded file (page cache warm): {hash_pass:.2f} s, {one_gb:.2f} s per GB")
    out.unlink(missing_ok=True)
    results["hash_pass_s_per_gb"] = one_gb
    return results


# ----- Zarr on S3 vs NWB by ranged reads -----


def share(link: Link, root: Path, files: dict, versions: dict, work: Path, repeats: int) -> dict:
    """Both read through the same link from the same server: the store is laid out under the served directory
    with the keys publish_store gives it (tests publish to moto, which copies a whole object per request)."""
    name = "scientifica"
    nwb = files[name]
    store = work / "store" / f"{nwb.stem}.zarr"
    if not store.exists():
        with h5py.File(nwb, "r") as f:
            experiment = int(f[layout.NWB_METADATA].attrs["ophys_experiment_id"])
        extract_experiment(nwb, store, experiment)
    shutil.copytree(store, root / BUCKET / "shared" / store.name, dirs_exist_ok=True)
    url = f"s3://{BUCKET}/shared/{store.name}"
    client = anonymous_client(link.url)
    with h5py.File(nwb, "r") as f:
        n_frames, n_rois = f[layout.NWB_DFF].shape
        rate = float(f[layout.NWB_IMAGING_PLANE]["imaging_rate"][()])
        timestamps = f[layout.NWB_TIMESTAMPS][()]
    window = int(300 * rate)
    rng = np.random.default_rng(3)
    cells, starts = rng.integers(0, n_rois, repeats), rng.integers(0, n_frames - window, repeats)

    def nwb_read(select):
        with open_remote(client, BUCKET, nwb.name, versions[name]) as remote, h5py.File(remote, "r") as f:
            return select(f[layout.NWB_DFF])

    def zarr_open():
        return open_shared_store(url, endpoint_url=link.url)

    reads = {
        "cell": (lambda i: nwb_read(lambda d: d[:, int(cells[i])]),
                 lambda i: zarr_open().dff_by_cell.isel(cell=int(cells[i])).values),
        "window": (lambda i: nwb_read(lambda d: d[int(starts[i]) : int(starts[i]) + window]),
                   lambda i: zarr_open().dff.sel(time=slice(timestamps[starts[i]], timestamps[starts[i] + window - 1]))
                   .values),
    }
    results = {}
    print(f"\n== one cell's whole trace and a 5-minute window of all cells ({n_frames} x {n_rois}): Zarr on S3 "
          "(open + read) vs the NWB on S3 by ranged reads (open + read)")
    zarr_open().close()  # warm the connection pool of each side once
    nwb_read(lambda d: d.shape)
    for what, (from_nwb, from_zarr) in reads.items():
        nwb_runs = [measured(link, lambda i=i: from_nwb(i)) for i in range(repeats)]
        zarr_runs = [measured(link, lambda i=i: from_zarr(i)) for i in range(repeats)]
        for i in range(repeats):
            assert np.allclose(nwb_runs[i]["result"], zarr_runs[i]["result"], rtol=1e-6), what
        nwb_s = statistics.median(m["seconds"] for m in nwb_runs)
        zarr_s = statistics.median(m["seconds"] for m in zarr_runs)
        results[what] = {"nwb_s": nwb_s, "zarr_s": zarr_s, "speedup": nwb_s / zarr_s,
                         "nwb_requests": nwb_runs[0]["requests"], "zarr_requests": zarr_runs[0]["requests"],
                         "nwb_bytes": nwb_runs[0]["bytes"], "zarr_bytes": zarr_runs[0]["bytes"]}
        target = ">= 10x" if what == "cell" else ">= 3x"
        print(f"{what}: NWB {nwb_s:.3f} s ({nwb_runs[0]['requests']} requests, {nwb_runs[0]['bytes'] / 1e6:.1f} MB), "
              f"Zarr {zarr_s:.3f} s ({zarr_runs[0]['requests']} requests, {zarr_runs[0]['bytes'] / 1e6:.1f} MB): "
              f"{nwb_s / zarr_s:.1f}x faster (target {target})", flush=True)
    return results


# ----- the whole release -----


def release_estimate(measured_bytes: dict) -> dict:
    table = pd.read_csv(REAL_METADATA, usecols=["equipment_name", "ophys_session_id"])
    mesoscope = table.equipment_name.isin(layout.MESOSCOPE_RIGS)
    counts = {"mesoscope": int(mesoscope.sum()), "scientifica": int((~mesoscope).sum())}
    sessions = {"mesoscope": table.ophys_session_id[mesoscope].nunique(),
                "scientifica": table.ophys_session_id[~mesoscope].nunique()}
    whole = sum(counts[rig] * TYPICAL_BYTES[rig] for rig in counts)
    by_plane = sum(counts[rig] * TYPICAL_BYTES[rig] * measured_bytes[rig]["bytes_ratio"] for rig in counts)

    def moved(rig, part):  # a part of the typical file, with the measured bytes moved per byte of datasets
        m = measured_bytes[rig]
        return TYPICAL_BYTES[rig] * m[part] / m["file_bytes"] * m["moved_bytes"] / m["datasets_bytes"]

    datasets = sum(counts[rig] * moved(rig, "plane_bytes") + sessions[rig] * moved(rig, "task_bytes") for rig in counts)

    def hours(n):
        return n * 8 / LINK_BITS_PER_S / 3600

    print(f"\n== the whole release at 1 Gb/s ({counts['scientifica']} Scientifica, {counts['mesoscope']} Mesoscope "
          f"experiments; typical file sizes of layout section 6)")
    print(f"whole release as published (incl. behavior-only sessions): {RELEASE_BYTES / 1e9:.0f} GB, "
          f"{hours(RELEASE_BYTES):.1f} h")
    print(f"experiment files whole: {whole / 1e9:.0f} GB, {hours(whole):.1f} h")
    print(f"datasets mode, every plane reading the task (measured ratios): {by_plane / 1e9:.0f} GB,"
          f" {hours(by_plane):.1f} h ({by_plane / whole:.2f} of the whole files)")
    print(f"datasets mode, the task once per session ({sessions['mesoscope']} Mesoscope and {sessions['scientifica']}"
          f" Scientifica sessions; the workflow's way): {datasets / 1e9:.0f} GB, {hours(datasets):.1f} h"
          f" ({datasets / whole:.2f} of the whole files)")
    return {"counts": counts, "sessions": sessions, "whole_release_bytes": RELEASE_BYTES,
            "experiment_files_bytes": whole, "datasets_mode_every_plane_bytes": by_plane, "datasets_mode_bytes": datasets, "hours_whole_release": hours(RELEASE_BYTES),
            "hours_experiment_files": hours(whole), "hours_datasets_mode": hours(datasets)}


def realistic_files(out: Path) -> dict[str, Path]:
    made = out / "files"
    scientifica = demo_experiment_file(made / "scientifica_140k.nwb", "scientifica", 3925.0, 210)
    # Mesoscope planes: 41 ROIs (about the mean of Mesoscope planes) and 22 (the median ROI count of all planes).
    mesoscope = demo_experiment_file(made / "mesoscope_48k_41rois.nwb", "mesoscope", 3905.0, 100)
    mesoscope_small = demo_experiment_file(made / "mesoscope_48k_22rois.nwb", "mesoscope", 3905.0, 55)
    return {"scientifica": with_session_content(scientifica, made / "scientifica_session.nwb"),
            "mesoscope": with_session_content(mesoscope, made / "mesoscope_session.nwb"),
            "mesoscope_22_rois": with_session_content(mesoscope_small, made / "mesoscope_22rois_session.nwb")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="candidates,bytes,download,share,release")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    files = realistic_files(args.out)
    root, work = args.out / "object_server", args.out / "transfer_work"
    (root / BUCKET).mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        served = root / BUCKET / path.name
        if not served.exists():
            os.link(path, served)
    results = {}
    with ObjectServer(root) as origin, Link(origin.port) as link:
        versions = {name: anonymous_client(origin.url).head_object(Bucket=BUCKET, Key=p.name)["VersionId"]
                    for name, p in files.items()}
        if "candidates" in sections:
            results["candidates"] = candidates(link, files, versions)
        if "bytes" in sections or "release" in sections:
            results["bytes_and_wall"] = bytes_and_wall(link, files, versions, work, args.repeats)
        if "download" in sections:
            results["download"] = download(link, files, versions, work, args.repeats)
        if "share" in sections:
            results["share"] = share(link, root, files, versions, work, args.repeats + 2)
        if "release" in sections:
            results["release"] = release_estimate(results["bytes_and_wall"])
    shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transfer.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"\nwritten {args.out / 'transfer.json'}")


if __name__ == "__main__":
    main()
