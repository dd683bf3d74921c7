"""Task benchmarks, measured side by side in one run on the same files (warm page cache, medians).
Usage: .venv/bin/python bench/task.py [--repeats N] [--out bench/out]

On AllenSDK's task reference file (an 11-minute session: 21,012 frames x 12 ROIs, 561 flashes, no eye tracking) and
on demo experiment files of real size (which AllenSDK opens): a Mesoscope plane (48,289 frames x 39 ROIs, the real
mean) and a Scientifica plane (139,986 frames x 202 ROIs), each with a whole 75-minute task (5,200 flashes, 590
trials, 60 Hz running and eye tracking: 270,000 rows), prints:
  (a) extraction with the task / extraction without it (the same with its task step left out; target <= 1.25; the
      median of the ratios of the steps timed in the same round, with its quartiles and 95 % bootstrap interval,
      and the ratio of medians), for a session of as many planes as the real sessions of its rig have (1
      Scientifica, 6 Mesoscope: the median), as the workflow runs it: a session of several planes has its task tables read once (rule session_task), then
      every plane's extraction takes them (its events, and a check that the session's task is its file's); the
      plane of a session of one plane reads its task itself. Then over the whole real release, every session
      costed by its rig and its number of planes. Also what the task adds to the store, and what reading all events
      costs from the store (their compressed chunks, moved as they are) and from the NWB (h5py);
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
import numpy as np
import pandas as pd
import zarr
from extraction import ALLENSDK_PYTHON, directory_bytes, experiment_id, interleaved_medians, median_time
from realistic_files import REPO, demo_experiment_file

from vb2p import layout, task
from vb2p.experiment import open_experiment
from vb2p.extract import extract_experiment, extract_session_task

# The median number of planes of the real release's Mesoscope sessions (266 sessions, 1,503 planes; mean 5.65).
MESOSCOPE_SESSION_PLANES = 6
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


def read_whole(path: Path) -> None:
    """Read a file into the page cache (this machine's kernel pages out what it has not read for a few seconds)."""
    with open(path, "rb") as handle:
        while handle.read(16 * 2**20):
            pass


def touch_memory(n_bytes: int = 2**30) -> None:
    """Write to n_bytes of fresh memory and free it: the pages a step allocates next are then ones the host backs."""
    np.ones(n_bytes // 8)


def interleaved_fresh(steps: list[tuple], nwb: Path, repeats: int) -> tuple[list[list[float]], list[list[float]]]:
    """Wall and CPU seconds of each (function, output) step on the NWB file, per round (rounds x steps): a ratio of
    steps is taken within each round, whose steps ran seconds apart (this machine's speed drifts by 20-40 % over
    minutes, which a ratio of medians over the whole run mixes in). Each is timed as a workflow job runs on a
    machine of its own: into an output that does not exist yet (the previous one is removed untimed, as
    Snakemake removes a job's old output before it starts), from a warm page cache, with no other step's writes
    pending. Done untimed before each step, because this sandbox VM is not such a machine:
    - the NWB file is read whole: its kernel pages out file data idle for a few seconds (DAMON), so a step that
      reads the eye tracking once a round read it from disk in a third of the rounds;
    - os.sync: on 2 cores the kernel's write-back of one step's output otherwise falls on the next one's time;
    - touch_memory: its host backs the guest's memory lazily, so the first write to a 2 MB page the guest has not
      used for a while stalls the guest (47 MB took 5 ms or 107-150 ms, at random, with the same page faults).
    The steps alternate in an order that rotates every round, so that no step always follows the same one."""
    wall, cpu = [], []
    for round_ in range(repeats + 1):  # round 0 warms the imports
        round_wall, round_cpu = [0.0] * len(steps), [0.0] * len(steps)
        for k in range(len(steps)):
            index = (k + round_) % len(steps)
            function, output = steps[index]
            shutil.rmtree(output, ignore_errors=True)
            read_whole(nwb)
            os.sync()
            touch_memory()
            cpu_start, start = time.process_time(), time.perf_counter()
            function()
            round_wall[index] = time.perf_counter() - start
            round_cpu[index] = time.process_time() - cpu_start
        if round_:
            wall.append(round_wall)
            cpu.append(round_cpu)
    return wall, cpu


def medians(rounds: list[list[float]]) -> list[float]:
    """Each step's median over the rounds."""
    return [statistics.median(times) for times in zip(*rounds)]


def paired(rounds: list[list[float]], planes: int, resamples: int = 5000) -> dict:
    """A session's ratio (session_ratio) in every round: its median, quartiles and the 95 % bootstrap interval of the
    median (how far another run of as many rounds may land)."""
    ratios = np.array([session_ratio(seconds, planes) for seconds in rounds])
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    resampled = np.random.default_rng(0).choice(ratios, (resamples, len(ratios)))
    low, high = np.percentile(np.median(resampled, axis=1), [2.5, 97.5])
    return {"median": float(median), "quartiles": [float(q1), float(q3)], "interval": [float(low), float(high)]}


def extraction_ratio(nwb: Path, work: Path, planes: int, repeats: int) -> dict:
    """A session of `planes` planes of this size (the same file for each: the planes of a session are alike)."""
    identifier = experiment_id(nwb)
    with h5py.File(nwb, "r") as f:
        session = int(f[layout.NWB_METADATA].attrs["ophys_session_id"])
    plain, alone, with_session = work / "plain.zarr", work / "alone.zarr", work / "with_session.zarr"
    session_dir, timed_session_dir = work / "task", work / "timed_task"
    extract_session_task(nwb, session_dir, identifier, session)  # what the planes take; the timed one is rewritten
    wall_rounds, cpu_rounds = interleaved_fresh([
        (lambda: extract_without_task(nwb, plain, identifier), plain),
        (lambda: extract_session_task(nwb, timed_session_dir, identifier, session), timed_session_dir),
        (lambda: extract_experiment(nwb, with_session, identifier, session_task=session_dir), with_session),
        (lambda: extract_experiment(nwb, alone, identifier), alone),
    ], nwb, repeats)
    wall, cpu = medians(wall_rounds), medians(cpu_rounds)
    without_s, task_s, plane_s, alone_s = wall
    ratio, cpu_ratio = paired(wall_rounds, planes), paired(cpu_rounds, planes)
    # Events stay deflate-compressed as AllenSDK wrote them: reading them inflates, from the store as from the NWB.
    nwb_read_s, store_read_s = interleaved_medians(lambda: read_events(nwb), lambda: read_stored_events(alone),
                                                   repeats=repeats)
    added = {name: directory_bytes(alone / name) for name in ("events", task.TASK_DIR)}
    return {"planes": planes, "without_task_s": without_s, "session_task_s": task_s, "plane_with_session_task_s": plane_s,
            "alone_with_task_s": alone_s, "seconds": wall, "rounds": wall_rounds,
            "ratio": ratio["median"], "ratio_quartiles": ratio["quartiles"], "ratio_interval": ratio["interval"],
            "ratio_of_medians": session_ratio(wall, planes),
            "cpu_s": dict(zip(("without_task", "session_task", "plane_with_session_task", "alone_with_task"), cpu)),
            "cpu_ratio": cpu_ratio["median"],
            "read_events_nwb_s": nwb_read_s, "read_events_store_s": store_read_s,
            "store_bytes_without": directory_bytes(plain), "bytes_added": added}


def session_seconds(seconds: list[float], planes: int) -> float:
    """A session's extraction with the task as the workflow runs it, from the (without task, session task, plane with
    the session's task, plane alone) times of a plane: the tables once then every plane, or a lone plane by itself."""
    without_s, task_s, plane_s, alone_s = seconds
    return task_s + planes * plane_s if planes > 1 else alone_s


def session_ratio(seconds: list[float], planes: int) -> float:
    """A session's extraction with the task / without it."""
    return session_seconds(seconds, planes) / (planes * seconds[0])


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
    """(a) for the whole release: every real session costed as the file of its rig, with its number of planes. Each
    rig's ratio is paired within rounds (the median over rounds of all its sessions' time with the task / without),
    and the rigs' ratios are weighted by their planes' time without the task."""
    experiments = pd.read_csv(REPO / "tests" / "data" / "real_metadata" / "ophys_experiment_table.csv")
    planes = experiments.groupby("ophys_session_id").agg(n=("ophys_experiment_id", "size"), rig=("equipment_name", "first"))
    mesoscope = planes.rig.isin(layout.MESOSCOPE_RIGS)
    without_s, with_s = {}, {}
    for rig, sessions in (("mesoscope", planes[mesoscope]), ("scientifica", planes[~mesoscope])):
        extraction = results[f"{rig}_size"]["extraction"]
        ratio = statistics.median(sum(session_seconds(seconds, n) for n in sessions.n) / (sessions.n.sum() * seconds[0])
                                  for seconds in extraction["rounds"])
        without_s[rig] = sessions.n.sum() * extraction["without_task_s"]
        with_s[rig] = ratio * without_s[rig]
    return {"mesoscope": int(planes.n[mesoscope].sum()), "scientifica": int(planes.n[~mesoscope].sum()),
            "mesoscope_sessions": int(mesoscope.sum()), "session_tasks": int((planes.n > 1).sum()),
            "with_task_s": sum(with_s.values()), "without_task_s": sum(without_s.values()),
            "ratio": sum(with_s.values()) / sum(without_s.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    files = {"reference": TASK_REFERENCE}
    planes = {"reference": 1, "mesoscope_size": MESOSCOPE_SESSION_PLANES, "scientifica_size": 1}
    # The files of bench/extraction.py (the Mesoscope one with 515 cells per dense plane: 39 on a Vip plane).
    for name, (rig, duration_s, cells, file_name) in (("mesoscope_size", ("mesoscope", 3905.0, 515, "mesoscope_48k_40rois")),
                                                      ("scientifica_size", ("scientifica", 3925.0, 210, "scientifica_140k"))):
        files[name] = demo_experiment_file(args.out / "files" / f"{file_name}.nwb", rig, duration_s, cells)
    work = args.out / "work_task"
    results = {}
    # (a) for every file first: (b) runs AllenSDK in subprocesses that take and free GBs of memory, which this
    # sandbox's host then backs again only lazily.
    for name, nwb in files.items():
        with h5py.File(nwb, "r") as f:
            shape = f[layout.NWB_DFF].shape
        print(f"== {name}: {nwb.name}, {shape[0]} frames x {shape[1]} ROIs, {nwb.stat().st_size / 1e9:.2f} GB",
              flush=True)
        work.mkdir(parents=True, exist_ok=True)
        entry = results[name] = {"frames": shape[0], "rois": shape[1]}
        a = entry["extraction"] = extraction_ratio(nwb, work, planes[name], args.repeats)
        shared = (f"{a['session_task_s']:.3f} s for the session's tables + {a['plane_with_session_task_s']:.3f} s a"
                  " plane")
        alone = f"{a['alone_with_task_s']:.3f} s for the plane reading its own task"
        print(f"(a) a session of {a['planes']} plane(s): without the task {a['without_task_s']:.3f} s a plane; with it"
              f" {shared if a['planes'] > 1 else alone}: ratio {a['ratio']:.2f} (target <= 1.25; the median of the"
              f" rounds' ratios, quartiles {a['ratio_quartiles'][0]:.2f}-{a['ratio_quartiles'][1]:.2f}, 95 % interval"
              f" of the median {a['ratio_interval'][0]:.2f}-{a['ratio_interval'][1]:.2f}; ratio of the"
              f" medians {a['ratio_of_medians']:.2f}; in CPU time"
              f" {a['cpu_ratio']:.2f}); for comparison, {alone if a['planes'] > 1 else shared}. Reading all events"
              f" from the store {a['read_events_store_s']:.3f} s, from the NWB {a['read_events_nwb_s']:.3f} s; the"
              f" task adds {', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in a['bytes_added'].items())}"
              f" to a {a['store_bytes_without'] / 1e6:.1f} MB store", flush=True)
        shutil.rmtree(work)
    results["release"] = release_weighted(results)
    release = results["release"]
    print(f"(a) over the real release ({release['mesoscope']} Mesoscope planes in {release['mesoscope_sessions']}"
          f" sessions, {release['scientifica']} Scientifica planes; {release['session_tasks']} sessions of several"
          f" planes have a session task): extraction with the task / without it {release['ratio']:.2f} (each session"
          " costed as the files of its rig above, with its number of planes)", flush=True)
    for name, nwb in files.items():
        work.mkdir(parents=True, exist_ok=True)
        b = results[name]["open"] = peer_ratio(nwb, work, args.repeats)
        allensdk = "n/a" if b["allensdk_s"] is None else f"{b['allensdk_s']:.2f} s"
        speedup = "n/a" if b["speedup"] is None else f"{b['speedup']:.0f}x"
        print(f"(b) {name}: AllenSDK from_nwb_path + 3 tables {allensdk}, open_experiment + 3 tables"
              f" {b['ours_s'] * 1e3:.1f} ms, ours {speedup} faster (target >= 10x) {b.get('note', '')}", flush=True)
        shutil.rmtree(work)
    (args.out / "task.json").write_text(json.dumps(results, indent=2))
    print(f"results: {args.out / 'task.json'} (machine: {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
