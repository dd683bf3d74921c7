"""Derived stores on object storage (vb2p.share): published with a signed client to moto's S3 server on loopback,
opened anonymously from there with xarray, equal to the local stores."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import xarray as xr
from botocore.exceptions import EndpointConnectionError

from conftest import publisher_client
from publish import ensure_versioned_bucket
from vb2p import layout
from vb2p.extract import ExtractionOptions, extract_experiment
from vb2p.index import build_index
from vb2p.share import ShareError, open_shared_store, publish_index, publish_store, read_shared_index

BUCKET = "shared-stores"
PREFIX = "lab/vb2p-1.0.0"


@pytest.fixture(scope="module")
def extracted(demo_root, tmp_path_factory) -> list[tuple[Path, int, Path]]:
    """(NWB file, experiment, Zarr store) of two demo experiments, the stores made by the extraction."""
    out = tmp_path_factory.mktemp("zarr")
    made = []
    for nwb in sorted((demo_root / layout.EXPERIMENT_DIR).glob("*.nwb"))[:2]:
        experiment = int(nwb.stem.rsplit("_", 1)[1])
        extract_experiment(nwb, out / f"{experiment}.zarr", experiment)
        made.append((nwb, experiment, out / f"{experiment}.zarr"))
    return made


@pytest.fixture(scope="module")
def stores(extracted) -> list[Path]:
    return [store for _, _, store in extracted]


@pytest.fixture(scope="module")
def client(s3_server):
    client = publisher_client(s3_server)
    ensure_versioned_bucket(client, BUCKET)
    return client


def server_requests(caplog) -> list[str]:
    """Request lines moto's server logged ("GET /bucket/key?... HTTP/1.1")."""
    lines = [record.args[0] for record in caplog.records if record.name == "werkzeug" and record.args]
    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]  # werkzeug colours some lines


def test_published_stores_open_anonymously_with_the_local_values(stores, client, s3_server, caplog):
    published = [publish_store(client, store, BUCKET, PREFIX) for store in stores]
    assert [p.url for p in published] == [f"s3://{BUCKET}/{PREFIX}/{s.name}" for s in stores]
    assert all(p.uploaded > 10 and p.unchanged == 0 for p in published)
    index = build_index(stores, stores[0].parent)
    index_url = publish_index(client, index, BUCKET, PREFIX)
    shared_index = read_shared_index(index_url, endpoint_url=s3_server)
    assert shared_index.drop(columns="path").equals(index.drop(columns="path"))
    caplog.set_level(logging.INFO, logger="werkzeug")
    for row, store in zip(shared_index.itertuples(), stores):
        caplog.clear()
        shared = open_shared_store(f"s3://{BUCKET}/{PREFIX}/{row.path}", endpoint_url=s3_server)
        with xr.open_zarr(store) as local:
            xr.testing.assert_identical(shared.load(), local.load())
        assert shared.attrs["ophys_experiment_id"] == row.ophys_experiment_id
        # One GET for the consolidated metadata, one per chunk: nothing listed, no head before each get. (A chunk
        # holding only the fill value is not stored: its GET finds nothing, and zarr fills it in.)
        chunks = {p.relative_to(store).as_posix() for p in store.rglob("*")  # task/*.parquet: not Zarr, not read
                  if p.is_file() and p.name != "zarr.json" and "task" not in p.relative_to(store).parts}
        requests = server_requests(caplog)
        assert all(r.startswith("GET ") and "list-type" not in r for r in requests), requests
        keys = [r.split()[1].split(f"{store.name}/", 1)[1] for r in requests]
        assert keys.count("zarr.json") == 1 and len(keys) == len(set(keys))
        assert chunks <= set(keys) and all(k == "zarr.json" or "/c/" in k for k in keys)


def test_publishing_again_syncs_only_what_changed_and_the_root_metadata_last(extracted, client, s3_server, tmp_path):
    nwb, experiment, first = extracted[0]
    publish_store(client, first, BUCKET, "sync")
    assert publish_store(client, first, BUCKET, "sync").uploaded == 0  # nothing changed: nothing moves
    # The same experiment with shorter time chunks: more dff chunk files, other bytes, the same name.
    store = tmp_path / first.name
    extract_experiment(nwb, store, experiment, options=ExtractionOptions(time_chunk=128))
    calls = []

    def record(params, model, **_):
        calls.append((model.name, params.get("Key")))

    client.meta.events.register("before-parameter-build.s3", record)
    try:
        again = publish_store(client, store, BUCKET, "sync")
    finally:
        client.meta.events.unregister("before-parameter-build.s3", record)
    root = f"sync/{store.name}/zarr.json"
    writes = [call for call in calls if call[0] in ("PutObject", "DeleteObject")]
    assert writes[0] == ("DeleteObject", root)  # the old root metadata goes first: the store stops opening
    assert writes[-1] == ("PutObject", root) and writes.count(("PutObject", root)) == 1  # the new one comes last
    assert again.uploaded > 1 and again.unchanged > 0
    shared = open_shared_store(f"s3://{BUCKET}/sync/{store.name}", endpoint_url=s3_server)
    with xr.open_zarr(store) as local:
        xr.testing.assert_identical(shared.load(), local.load())
    assert shared.dff.encoding["chunks"][0] == 128


def test_an_interrupted_publish_leaves_a_store_that_does_not_open(stores, client, s3_server):
    puts = []

    def fail_on_the_third_upload(params, model, **_):
        if model.name == "PutObject":
            puts.append(params["Key"])
            if len(puts) == 3:
                raise EndpointConnectionError(endpoint_url=s3_server)

    client.meta.events.register("before-parameter-build.s3.PutObject", fail_on_the_third_upload)
    try:
        with pytest.raises(ShareError, match="uploading .* to s3://shared-stores/broken/"):
            publish_store(client, stores[1], BUCKET, "broken", concurrency=1)
    finally:
        client.meta.events.unregister("before-parameter-build.s3.PutObject", fail_on_the_third_upload)
    with pytest.raises(ShareError, match="no finished store there"):
        open_shared_store(f"s3://{BUCKET}/broken/{stores[1].name}", endpoint_url=s3_server)


def test_reads_are_anonymous_a_private_store_does_not_open(stores, client, s3_server):
    publish_store(client, stores[0], BUCKET, "private", acl=None)
    with pytest.raises(ShareError, match="anonymous reads are refused"):
        open_shared_store(f"s3://{BUCKET}/private/{stores[0].name}", endpoint_url=s3_server)


def test_a_directory_that_is_not_a_store_is_refused(client, tmp_path):
    with pytest.raises(ShareError, match="not a finished Zarr store"):
        publish_store(client, tmp_path, BUCKET, PREFIX)


def test_the_publish_step_shares_stores_index_and_response_table(stores, client, s3_server, monkeypatch, tmp_path):
    """`vb2p publish --to s3://...`: what a lab runs once; a colleague then reads everything anonymously."""
    import pandas as pd

    from vb2p import steps
    from vb2p.experiment import open_experiment
    from vb2p.index import write_table
    from vb2p.responses import ResponseParams, build_response_table, write_experiment_responses
    from vb2p.share import storage_options

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    index_path = stores[0].parent / "index.csv"
    write_table(build_index(stores, stores[0].parent), index_path)
    response_store = tmp_path / "responses.zarr"
    write_experiment_responses(open_experiment(stores[0]), response_store,
                               ResponseParams(event_types=("changes",), data_types=("dff",)),
                               {"ophys_experiment_id": int(stores[0].name.removesuffix(".zarr"))})
    table = tmp_path / "cell_responses.parquet"
    build_response_table([response_store], table)
    published = steps.publish(index_path, f"s3://{BUCKET}/lab/shared", s3_server, table)
    assert [p.url for p in published] == [f"s3://{BUCKET}/lab/shared/{s.name}" for s in stores]
    shared_index = read_shared_index(f"s3://{BUCKET}/lab/shared/index.parquet", s3_server)
    for row in shared_index.itertuples():
        shared = open_shared_store(f"s3://{BUCKET}/lab/shared/{row.path}", s3_server)
        xr.testing.assert_identical(shared.load(), xr.open_zarr(stores[0].parent / row.path).load())
    shared_table = pd.read_parquet(f"s3://{BUCKET}/lab/shared/cell_responses.parquet",
                                   storage_options=storage_options(s3_server))
    pd.testing.assert_frame_equal(shared_table, pd.read_parquet(table))
    again = steps.publish(index_path, f"s3://{BUCKET}/lab/shared", s3_server, table)
    assert all(p.uploaded == 0 for p in again)  # a sync: nothing changed, nothing uploaded
