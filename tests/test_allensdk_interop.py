"""AllenSDK 2.16.2 (its own venv) reads a cache we made, and we reuse, offline, a cache AllenSDK made."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import REPO, publisher_client, release_config

from vb2p import layout
from publish import publish_release
from vb2p.release import release_cache, sync_metadata

ALLENSDK_VENV = REPO / ".venv-allensdk"
ALLENSDK_PYTHON = ALLENSDK_VENV / "bin" / "python"
PEER = REPO / "tests" / "allensdk_peer.py"


def allensdk(*args, env=None):
    if not (ALLENSDK_VENV / ".installed").exists():
        failure = REPO / ".venv-allensdk-failed.log"
        reason = failure.read_text()[-500:] if failure.exists() else "run `make test` to create .venv-allensdk"
        pytest.skip(f"AllenSDK 2.16.2 venv is not installed: {reason}")
    result = subprocess.run(
        [str(ALLENSDK_PYTHON), str(PEER), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_allensdk_reads_a_cache_we_made(tmp_path, demo_root):
    config = release_config(demo_root, tmp_path / "cache", version="1.0.0")
    sync_metadata(config, tmp_path / "record.json")
    cache = release_cache(config)
    manifest = cache.resolve_manifest("1.0.0")
    experiment_paths = {}
    for file_id, entry in manifest.data_files.items():
        if layout.EXPERIMENT_DIR in entry.key:
            experiment_paths[entry.key.rsplit("_", 1)[1].removesuffix(".nwb")] = str(cache.fetch(manifest, entry))
    seen = allensdk("read", tmp_path / "cache")
    assert seen["manifest"] == manifest.name
    assert seen["experiment_ids"] == sorted(int(i) for i in experiment_paths)
    # AllenSDK finds every file we downloaded where it would have put it (no download: from_local_cache is offline).
    assert seen["files"] == experiment_paths


def test_we_reuse_a_cache_allensdk_made_without_network(tmp_path, s3_server, demo_root):
    publish_release(demo_root, publisher_client(s3_server), bucket=layout.BUCKET)
    cache_dir = tmp_path / "allensdk_cache"
    made = allensdk("download", cache_dir, 3, env={"AWS_ENDPOINT_URL_S3": s3_server})
    assert len(made["files"]) == 3
    before = {path: os.stat(path).st_mtime_ns for path in made["files"].values()}
    version = made["manifest"].rsplit("_v", 1)[1].removesuffix(".json")
    # A dead endpoint: anything we tried to download would fail.
    offline = release_config(f"s3://{layout.BUCKET}/{layout.RELEASE_PREFIX}", cache_dir, "http://127.0.0.1:9", version)
    record = sync_metadata(offline, tmp_path / "record.json")
    assert record["manifest_name"] == made["manifest"]
    cache = release_cache(offline)
    manifest = cache.resolve_manifest(version)
    for experiment_id, path in made["files"].items():
        assert str(cache.fetch(manifest, manifest.experiment_entry(int(experiment_id)))) == path
    assert before == {path: os.stat(path).st_mtime_ns for path in made["files"].values()}
