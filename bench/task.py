"""Task benchmarks, measured side by side in one run on the same files (warm page cache, medians).
Usage: .venv/bin/python bench/task.py [--repeats N] [--out bench/out]

On AllenSDK's task reference file (21,012 frames x 12 ROIs) and on copies enlarged to the ophys of a real Mesoscope
plane (48,000 frames x 40 ROIs) and a real Scientifica plane (140,000 frames x 200 ROIs), prints:
  (a) extraction with the task (extract_experiment) / extraction without it (the same with its task step left out;
      target <= 1.25), what the task adds to the store, and what reading all events costs from the store (their
      compressed chunks, moved as they are) and from the NWB (h5py);
  (b) AllenSDK's from_nwb_path + stimulus_presentations + trials + running_speed (its venv, timed inside a
      subprocess, imports excluded) / open_experiment(store) + the same three attributes (target >= 10x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import time
from unittest import mock
from pathlib import Path

import h5py
import pandas as pd
import zarr
from extraction import ALLENSDK_PYTHON, directory_bytes, experiment_id, interleaved_medians, median_time
from realistic_files import REPO, allensdk_readable_file

from vb2p import layout, task
from vb2p.experiment import open_experiment
from vb2p.extract import extract_experiment

TASK_REFERENCE = REPO / "tests" / "data" / "allensdk_nwb" / "task" / "ref_task_scientifica.nwb"
PEER = REPO / "tests" / "allensdk_task_peer.py"


def extract_without_task(nwb: Path, store: Path, identifier: int) -> dict:
    """The extraction as it was before the task: the same code with the task step left out."""
    with mock.patch("vb2p.extract.write_task", lambda *args, **kwargs: {}):
        return extract_experiment(nwb, store, identifier)


def read_events(nwb: Path) -> None:
    with h5py.File(nwb, "r") as f:
        f[task.NWB_EVENTS]["data"][:]


def read_stored_events(store: Path) -> None:
    zarr.open_array(store / "events", mode="r")[...]


def extraction_ratio(nwb: Path, work: Path, repeats: int) -> dict:
    identifier = experiment_id(nwb)
    plain, with_task = work / "plain.zarr", work / "with_task.zarr"
    without_s, with_s = interleaved_medians(lambda: extract_without_task(nwb, plain, identifier),
                                            lambda: extract_experiment(nwb, with_task, identifier), repeats)
    # Events stay deflate-compressed as AllenSDK wrote them: reading them inflates, from the store as from the NWB.
    nwb_read_s, store_read_s = interleaved_medians(lambda: read_events(nwb), lambda: read_stored_events(with_task),
                                                   repeats)
    added = {name: directory_bytes(with_task / name) for name in ("events", task.TASK_DIR)}
    return {"without_task_s": without_s, "with_task_s": with_s, "ratio": with_s / without_s,
            "read_events_nwb_s": nwb_read_s, "read_events_store_s": store_read_s,
            "store_bytes_without": directory_bytes(plain), "bytes_added": added}


def open_and_read(store: Path) -> None:
    experiment = open_experiment(store)
    _ = experiment.stimulus_presentations, experiment.trials, experiment.running_speed


def peer_ratio(nwb: Path, work: Path, repeats: int) -> dict:
    store = work / "peer.zarr"
    extract_experiment(nwb, store, experiment_id(nwb))
    ours = [median_time(lambda: open_and_read(store), 1) for _ in range(repeats)]
    if not ALLENSDK_PYTHON.exists():
        return {"ours_s": statistics.median(ours), "allensdk_s": None, "speedup": None,
                "note": "no .venv-allensdk (make test)"}
    allensdk = []
    for _ in range(max(3, repeats // 2)):
        result = subprocess.run([str(ALLENSDK_PYTHON), str(PEER), "time", str(nwb)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-400:])
        allensdk.append(json.loads(result.stdout.strip().splitlines()[-1])["seconds"])
    time.sleep(2)  # let the kernel reclaim AllenSDK's memory before timing ours again
    ours += [median_time(lambda: open_and_read(store), 1) for _ in range(repeats)]
    ours_s, allensdk_s = statistics.median(ours), statistics.median(allensdk)
    return {"ours_s": ours_s, "allensdk_s": allensdk_s, "speedup": allensdk_s / ours_s}


def release_weighted(results: dict) -> dict:
    """(a) for the whole release: every real experiment costed as the enlarged file of its rig."""
    rigs = pd.read_csv(REPO / "tests" / "data" / "real_metadata" / "ophys_experiment_table.csv").equipment_name
    counts = {"mesoscope": int(rigs.isin(layout.MESOSCOPE_RIGS).sum()),
              "scientifica": int((~rigs.isin(layout.MESOSCOPE_RIGS)).sum())}
    total = {key: sum(n * results[f"{rig}_size"]["extraction"][key] for rig, n in counts.items())
             for key in ("with_task_s", "without_task_s")}
    return {**counts, **total, "ratio": total["with_task_s"] / total["without_task_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    files = {"reference": TASK_REFERENCE}
    for name, (frames, rois) in (("mesoscope_size", (48_000, 40)), ("scientifica_size", (140_000, 200))):
        files[name] = allensdk_readable_file(args.out / "files" / f"allensdk_task_{frames // 1000}k.nwb",
                                             frames, rois, reference=TASK_REFERENCE)
    work = args.out / "work_task"
    results = {}
    for name, nwb in files.items():
        with h5py.File(nwb, "r") as f:
            shape = f[layout.NWB_DFF].shape
        print(f"== {name}: {nwb.name}, {shape[0]} frames x {shape[1]} ROIs, {nwb.stat().st_size / 1e9:.2f} GB",
              flush=True)
        work.mkdir(parents=True, exist_ok=True)
        entry = results[name] = {"frames": shape[0], "rois": shape[1]}
        a = entry["extraction"] = extraction_ratio(nwb, work, args.repeats)
        print(f"(a) extraction without task {a['without_task_s']:.3f} s, with task {a['with_task_s']:.3f} s,"
              f" ratio {a['ratio']:.2f} (target <= 1.25); reading all events from the store"
              f" {a['read_events_store_s']:.3f} s, from the NWB {a['read_events_nwb_s']:.3f} s; the task adds"
              f" {', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in a['bytes_added'].items())}"
              f" to a {a['store_bytes_without'] / 1e6:.1f} MB store", flush=True)
        b = entry["open"] = peer_ratio(nwb, work, args.repeats)
        allensdk = "n/a" if b["allensdk_s"] is None else f"{b['allensdk_s']:.2f} s"
        speedup = "n/a" if b["speedup"] is None else f"{b['speedup']:.0f}x"
        print(f"(b) AllenSDK from_nwb_path + 3 tables {allensdk},"
              f" open_experiment + 3 tables {b['ours_s'] * 1e3:.1f} ms,"
              f" ours {speedup} faster (target >= 10x) {b.get('note', '')}", flush=True)
        shutil.rmtree(work)
    results["release"] = release_weighted(results)
    print(f"(a) over the real release's experiments ({results['release']['mesoscope']} Mesoscope planes,"
          f" {results['release']['scientifica']} Scientifica): extraction with the task / without it"
          f" {results['release']['ratio']:.2f} (each plane costed as the file of its rig above)", flush=True)
    (args.out / "task.json").write_text(json.dumps(results, indent=2))
    print(f"results: {args.out / 'task.json'} (machine: {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
