"""Stimulus-response benchmarks, measured side by side in one run. Usage:

    .venv/bin/python bench/responses.py [--repeats N] [--out bench/out]

1. peer: brain_observatory_utilities 0.5.1's get_stimulus_response_xr (in .venv-allensdk, on an AllenSDK experiment
   already loaded) against ours (here, on open_experiment of the same file's store), for every event type with the
   expected file's call, alternating call by call; medians of N rounds; the ratio per event type, for all four, and
   for all four from a fresh open_experiment (the store's reads included). On the reference file (12 ROIs) and on
   AllenSDK's task reference with real-size ophys (200 ROIs x 140,000 frames; one round: bou takes minutes).
2. scale: a synthetic Scientifica-sized plane (170 cells x 140,000 frames at 31 Hz, 4,800 flashes, dF/F and events,
   60 Hz running) in a subprocess: seconds for each event type of dF/F, seconds for the whole per-experiment store,
   and peak RSS (VmHWM) with the inputs alone and at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_responses import REFERENCE, REFERENCE_CALL, ArrayExperiment  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from realistic_files import allensdk_readable_file  # noqa: E402

from vb2p.experiment import open_experiment  # noqa: E402
from vb2p.extract import ExtractionOptions, extract_experiment  # noqa: E402

from vb2p.responses import EVENT_TYPES, ResponseParams, get_stimulus_response_xr, write_experiment_responses  # noqa: E402

ALLENSDK_PYTHON = REPO / ".venv-allensdk" / "bin" / "python"
PEER = REPO / "tests" / "bou_peer.py"
SCIENTIFICA = dict(n_cells=170, n_frames=140_000, frame_rate=31.0, n_flashes=4_800)


def vm_hwm() -> int:
    """Peak resident memory of this process, bytes (VmHWM: not ru_maxrss, which counts the parent's pages)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) * 1024


def peer(nwb: Path, repeats: int) -> dict:
    """bou and ours alternate, call by call, so that the machine's drifting load hits both alike: bou on an AllenSDK
    experiment of the file already loaded, ours on open_experiment of the file's store (its traces read from the store
    by its first call); then ours from a fresh open_experiment, all four event types."""
    work = Path(tempfile.mkdtemp(prefix="vb2p-bench-responses-"))
    store = work / "experiment.zarr"
    with h5py.File(nwb, "r") as f:
        experiment_id = int(f["general/metadata"].attrs["ophys_experiment_id"])
    extract_experiment(nwb, store, experiment_id, options=ExtractionOptions(dff_dtype="float64"))
    experiment = open_experiment(store)
    bou = subprocess.Popen(
        [str(ALLENSDK_PYTHON), str(PEER), "time", str(nwb)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )
    assert bou.stdout.readline().strip() == "ready", "tests/bou_peer.py did not start in .venv-allensdk"
    seconds = {event_type: {"bou": [], "ours": []} for event_type in EVENT_TYPES}
    for _ in range(repeats + 1):  # the first round warms both
        for event_type in EVENT_TYPES:
            bou.stdin.write(event_type + "\n")
            bou.stdin.flush()
            seconds[event_type]["bou"].append(float(bou.stdout.readline()))
            seconds[event_type]["ours"].append(
                timed(lambda: get_stimulus_response_xr(experiment, "dff", event_type, **REFERENCE_CALL)))
    bou.stdin.close()
    bou.wait(timeout=60)
    rows = {}
    for event_type, measured in seconds.items():
        bou_s, ours_s = statistics.median(measured["bou"][1:]), statistics.median(measured["ours"][1:])
        rows[event_type] = {"bou_s": bou_s, "ours_s": ours_s, "ratio": bou_s / ours_s}
    total_bou, total_ours = sum(row["bou_s"] for row in rows.values()), sum(row["ours_s"] for row in rows.values())
    rows["all four"] = {"bou_s": total_bou, "ours_s": total_ours, "ratio": total_bou / total_ours}

    def from_a_fresh_open() -> None:
        opened = open_experiment(store)
        for event_type in EVENT_TYPES:
            get_stimulus_response_xr(opened, "dff", event_type, **REFERENCE_CALL)

    fresh = statistics.median(timed(from_a_fresh_open) for _ in range(max(repeats, 1)))
    rows["open_experiment + all four"] = {"bou_s": total_bou, "ours_s": fresh, "ratio": total_bou / fresh}
    shutil.rmtree(work)
    return rows


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def scientifica_plane(seed: int = 0) -> ArrayExperiment:
    """Real sizes and timing: 5 min of gray screen, 4,800 flashes every 0.75 s (about 5 % omitted, a change every
    ~10 flashes, 8 images), then gray screen to the end; dF/F noise with responses, sparse events, running."""
    rng = np.random.default_rng(seed)
    n_cells, n_frames, rate, n_flashes = (SCIENTIFICA[key] for key in ("n_cells", "n_frames", "frame_rate", "n_flashes"))
    timestamps = 3.0 + np.arange(n_frames) / rate + rng.uniform(0, 2e-4, n_frames)
    starts = 303.0 + 0.75 * np.arange(n_flashes)
    omitted = rng.random(n_flashes) < 0.05
    changes = (rng.random(n_flashes) < 0.1) & ~omitted
    images = np.array([f"im{i:03d}" for i in rng.integers(0, 8, n_flashes)], dtype=object)
    images[omitted] = "omitted"
    presentations = pd.DataFrame(
        {
            "start_time": starts, "image_name": images, "is_change": changes,
            "omitted": pd.array(omitted, dtype="boolean"), "trials_id": np.cumsum(changes),
            "stimulus_block": 0, "stimulus_block_name": "change_detection_behavior",
        },
        index=pd.Index(np.arange(n_flashes), name="stimulus_presentations_id"),
    )
    dff = rng.normal(0, 0.05, (n_frames, n_cells))
    onsets = np.searchsorted(timestamps, starts[~omitted])
    dff[onsets[:, None] + np.arange(8), :] += 0.2 * rng.random(n_cells)  # an evoked bump in every cell
    events = np.where(rng.random((n_frames, n_cells)) < 0.02, rng.exponential(0.1, (n_frames, n_cells)), 0.0)
    running_times = np.arange(0.0, timestamps[-1], 1 / 60)
    running = pd.DataFrame({"timestamps": running_times, "speed": 10 + 5 * np.sin(running_times / 7)})
    return ArrayExperiment(
        timestamps, {"dff": dff, "events": events}, 1_000_000 + np.arange(n_cells), 2_000_000 + np.arange(n_cells),
        presentations, running, ophys_experiment_id=0,
    )


def scale_child(out_dir: Path) -> dict:
    """Runs in its own process, so that VmHWM is this computation's alone."""
    experiment = scientifica_plane()
    inputs = vm_hwm()
    seconds = {}
    for event_type in EVENT_TYPES:
        start = time.perf_counter()
        result = get_stimulus_response_xr(experiment, "dff", event_type, **REFERENCE_CALL)
        seconds[f"get_stimulus_response_xr dff {event_type}"] = time.perf_counter() - start
        shape = list(result.eventlocked_traces.shape)
        del result
    after_function = vm_hwm()
    start = time.perf_counter()
    summary = write_experiment_responses(experiment, out_dir / "plane.zarr", ResponseParams(), {"ophys_experiment_id": 0})
    seconds["write_experiment_responses (dff, events, running_speed x 4 event types)"] = time.perf_counter() - start
    size = sum(path.stat().st_size for path in (out_dir / "plane.zarr").rglob("*") if path.is_file())
    return {
        "plane": SCIENTIFICA, "all_shape": shape, "n_presentations": summary["n_presentations"], "seconds": seconds,
        "vmhwm_inputs_bytes": inputs, "vmhwm_after_function_bytes": after_function, "vmhwm_peak_bytes": vm_hwm(),
        "store_bytes": size,
    }


def scale() -> dict:
    out_dir = Path(tempfile.mkdtemp(prefix="responses-bench-"))
    try:
        result = subprocess.run(
            [sys.executable, __file__, "--scale-child", str(out_dir)], capture_output=True, text=True, check=True,
            timeout=3600,
        )
        return json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--only", choices=("peer", "scale"), help="run one of the two benchmarks")
    parser.add_argument("--scale-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_child:
        print(json.dumps(scale_child(args.scale_child)))
        return
    report = {}
    if args.only in (None, "peer"):
        # The reference file (12 ROIs, 11 minutes) and AllenSDK's task reference with real-size ophys (200 ROIs,
        # 140,000 frames: bench/task.py's file), where bou's loop over cells takes seconds per event type.
        real_size = allensdk_readable_file(args.out / "files" / "allensdk_task_140k.nwb", 140_000, 200,
                                           reference=REFERENCE)
        for name, nwb, repeats in (("reference, 12 ROIs", REFERENCE, args.repeats),
                                   ("real size, 200 ROIs x 140,000 frames", real_size, 1)):
            report[f"peer {name}"] = rows = peer(nwb, repeats)
            print(f"peer: bou 0.5.1 / ours, {nwb.name} ({name}), medians of {repeats}")
            for event_type, row in rows.items():
                print(f"  {event_type:26s} bou {row['bou_s'] * 1e3:9.1f} ms   ours {row['ours_s'] * 1e3:7.2f} ms   "
                      f"ratio {row['ratio']:7.1f}x")
    if args.only in (None, "scale"):
        report["scale"] = plane = scale()
        print(f"scale: {SCIENTIFICA['n_cells']} cells x {SCIENTIFICA['n_frames']} frames, {plane['n_presentations']}")
        for name, seconds in plane["seconds"].items():
            print(f"  {name}: {seconds:.2f} s")
        print(f"  peak RSS (VmHWM): inputs {plane['vmhwm_inputs_bytes'] / 2**30:.2f} GiB, after the function "
              f"{plane['vmhwm_after_function_bytes'] / 2**30:.2f} GiB, end {plane['vmhwm_peak_bytes'] / 2**30:.2f} "
              f"GiB (target < 2 GB); store {plane['store_bytes'] / 2**20:.0f} MiB")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "responses.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
