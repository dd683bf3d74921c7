"""download.mode: `whole` (the NWB file into the verified cache, in parallel ranged parts) and `datasets` (extraction
reads only the datasets it needs from the pinned S3 object): the same stores, from the loopback S3 server."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from conftest import REPO, publisher_client, run_workflow
from publish import publish_release

from vb2p import layout, steps
from vb2p.config import validate_config
from vb2p.errors import ConfigError

BUCKET = "vbo-download-modes"


@pytest.fixture(scope="module")
def s3_release(s3_server, demo_root):
    publish_release(demo_root, publisher_client(s3_server), bucket=BUCKET)
    return s3_server


def config_for(tmp_path, s3_server, mode):
    return validate_config({
        "release": {"url": f"s3://{BUCKET}/{layout.RELEASE_PREFIX}", "endpoint_url": s3_server},
        "cache_dir": str(tmp_path / mode / "cache"),
        "download": {"mode": mode},
    })


def extract_in(tmp_path, config, mode, experiment_ids):
    record = tmp_path / mode / "release.json"
    steps.sync(config, record)
    stores = {}
    for experiment_id in experiment_ids:
        receipt = tmp_path / mode / f"{experiment_id}.json"
        steps.download(config, record, experiment_id, receipt)
        stores[experiment_id] = tmp_path / mode / f"{experiment_id}.zarr"
        steps.extract(config, receipt, experiment_id, stores[experiment_id])
    return stores


def assert_same_store(a, b):
    group_a, group_b = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    names = sorted(name for name, _ in group_a.arrays())
    assert names == sorted(name for name, _ in group_b.arrays()) and "events" in names
    for name in names:
        np.testing.assert_array_equal(group_a[name][...], group_b[name][...], err_msg=name)
    strip = lambda attrs: {k: v for k, v in attrs.items() if k != "provenance"}  # noqa: E731
    assert strip(dict(group_a.attrs)) == strip(dict(group_b.attrs))
    tables = sorted(p.name for p in (a / "task").glob("*.parquet"))
    assert tables and tables == sorted(p.name for p in (b / "task").glob("*.parquet"))
    for name in tables:
        pd.testing.assert_frame_equal(pd.read_parquet(a / "task" / name), pd.read_parquet(b / "task" / name))


def test_datasets_mode_extracts_what_whole_mode_extracts(tmp_path, s3_release, demo_root):
    experiments = pd.read_csv(demo_root / layout.metadata_key("ophys_experiment_table"))
    chosen = [int(experiments[experiments.equipment_name == rig].ophys_experiment_id.iloc[0])
              for rig in ("MESO.1", "CAM2P.4")]
    whole = extract_in(tmp_path, config_for(tmp_path, s3_release, "whole"), "whole", chosen)
    datasets = extract_in(tmp_path, config_for(tmp_path, s3_release, "datasets"), "datasets", chosen)
    for experiment_id in chosen:
        assert_same_store(whole[experiment_id], datasets[experiment_id])
        nwb_bytes = (demo_root / layout.experiment_key(experiment_id)).stat().st_size
        moved = zarr.open_group(datasets[experiment_id], mode="r").attrs["provenance"]["transfer"]
        assert 0 < moved["bytes_moved"] < nwb_bytes and moved["requests"] > 0
        downloaded = zarr.open_group(whole[experiment_id], mode="r").attrs["provenance"]["transfer"]
        assert downloaded["bytes_moved"] == nwb_bytes
    assert list((tmp_path / "whole" / "cache").rglob("behavior_ophys_experiment_*.nwb"))
    assert not list((tmp_path / "datasets" / "cache").rglob("*.nwb"))  # no whole NWB is written


def test_datasets_mode_needs_an_s3_release(demo_root):
    with pytest.raises(ConfigError, match="download.mode: datasets reads byte ranges of S3 objects"):
        validate_config({"release": {"url": str(demo_root)}, "download": {"mode": "datasets"}})


def test_a_local_mirror_and_s3_datasets_mode_give_the_same_workflow_results(tmp_path, s3_release, demo_root):
    """The same release read from a local mirror (whole files) and from S3 by ranged reads of datasets: the same
    tables (a container's sessions expanded from one), and stores of the same values."""
    s3 = {"url": f"s3://{BUCKET}/{layout.RELEASE_PREFIX}", "endpoint_url": s3_release}
    # S3 in whole mode against datasets mode, array by array: test_datasets_mode_extracts_what_whole_mode_extracts
    runs = {"local": ({"url": str(demo_root)}, "whole"), "s3_datasets": (s3, "datasets")}
    selection = {"filters": {"equipment_name": "CAM2P.3", "session_number": 1}, "expand": "container"}
    for name, (release, mode) in runs.items():
        result = run_workflow(tmp_path / name, {"release": release, "cache_dir": str(tmp_path / name / "cache"),
                                                "download": {"mode": mode}, "selection": selection})
        assert result.returncode == 0, result.stderr[-3000:]
    tables = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local" / "results").rglob("*.csv")
                    if p.name != "transfers.csv")  # what crossed the network: the one table that differs
    assert len(tables) > 20
    assert len(pd.read_csv(tmp_path / "local" / "results/selection/experiments.csv")) == 5  # the Sst container
    for relative in tables:
        assert (tmp_path / "local" / relative).read_bytes() == (tmp_path / "s3_datasets" / relative).read_bytes(), relative
    for store in sorted((tmp_path / "local" / "results/zarr").glob("*.zarr")):
        assert_same_store(store, tmp_path / "s3_datasets" / "results/zarr" / store.name)
    moved = pd.read_csv(tmp_path / "s3_datasets" / "results/qc/transfers.csv")
    assert (moved["mode"] == "datasets").all() and (moved.bytes_moved > 0).all()
    log = (tmp_path / "s3_datasets" / "results/logs/zarr_index.log").read_text()
    assert f"moved {moved.bytes_moved.sum() / 1e6:.1f} MB in {moved.requests.sum()} requests" in log


def test_the_planes_of_a_mesoscope_session_share_its_task_read_once(tmp_path, s3_release, demo_root):
    """One session of 4 planes in datasets mode: the task's datasets are read once, by rule session_task; each plane
    reads its own datasets and the few that check the task is its own, and its store equals the one extraction
    writes from the whole file by itself."""
    from vb2p import results, task
    from vb2p.extract import extract_experiment
    from vb2p.remote import PLANE_READS, TASK_READS, dataset_ranges, datasets_under

    experiments = pd.read_csv(demo_root / layout.metadata_key("ophys_experiment_table"))
    session = int(experiments[experiments.equipment_name == "MESO.1"].ophys_session_id.iloc[0])
    planes = sorted(experiments[experiments.ophys_session_id == session].ophys_experiment_id)
    assert len(planes) == 4
    s3 = {"url": f"s3://{BUCKET}/{layout.RELEASE_PREFIX}", "endpoint_url": s3_release}
    result = run_workflow(tmp_path / "w", {"release": s3, "cache_dir": str(tmp_path / "cache"), "download": {"mode": "datasets"},
                                           "selection": {"filters": {"ophys_session_id": session}}}, str(results.ZARR_INDEX))
    assert result.returncode == 0, result.stderr[-3000:]
    work = tmp_path / "w"
    assert [p.name for p in (work / "results/logs/session_task").iterdir()] == [f"{session}.log"]
    assert f"task from experiment {planes[0]}" in (work / f"results/logs/session_task/{session}.log").read_text()
    tables = sorted((work / results.session_task(session)).glob("*.parquet"))
    assert len(tables) == 8  # with eye tracking
    moved = pd.read_csv(work / results.TRANSFERS).set_index("ophys_experiment_id").bytes_moved
    for plane in planes:
        store = work / results.store(plane)
        assert all((store / task.TASK_DIR / table.name).samefile(table) for table in tables)
        nwb = demo_root / layout.experiment_key(plane)
        extract_experiment(nwb, tmp_path / f"{plane}.zarr", plane)
        assert_same_store(store, tmp_path / f"{plane}.zarr")
        with h5py.File(nwb, "r") as f:
            plane_bytes, task_bytes = (sum(end - start for d in datasets_under(f, reads) for start, end in dataset_ranges(d))
                                       for reads in (PLANE_READS, TASK_READS))
        # measured: its datasets + 0.6 MB of HDF5 metadata and read-ahead; reading the task too would add 2.6 MB
        assert moved[plane] < plane_bytes + task_bytes / 2, (moved[plane], plane_bytes, task_bytes)
    # The same steps by hand (README): the session's tables and record as the workflow's, and a plane's store takes them.
    hand = tmp_path / "by_hand"
    (hand / "config").mkdir(parents=True)
    (hand / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    (hand / "mine.yaml").write_text(yaml.safe_dump({"release": s3, "cache_dir": str(tmp_path / "hand_cache"),
                                                    "download": {"mode": "datasets"},
                                                    "selection": {"filters": {"ophys_session_id": session}}}))
    for args in (["sync"], ["select"], ["download", "--experiment", planes[0]], ["download", "--experiment", planes[1]],
                 ["session-task", "--session", session], ["extract", "--experiment", planes[1]]):
        result = subprocess.run([sys.executable, "-m", "vb2p", *map(str, args), "--config", "mine.yaml"], cwd=hand,
                                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "workflow")})
        assert result.returncode == 0, (args, result.stderr[-2000:])
    for name in [table.name for table in tables] + [task.SESSION_RECORD]:
        assert (hand / results.session_task(session) / name).read_bytes() == (work / results.session_task(session) / name).read_bytes()
        assert name == task.SESSION_RECORD or (hand / results.store(planes[1]) / task.TASK_DIR / name).samefile(
            hand / results.session_task(session) / name)
