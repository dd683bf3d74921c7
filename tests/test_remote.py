"""Ranged reads of NWB files on S3 (vb2p.remote) and parallel, resumable whole-file downloads (vb2p.transfer).

Everything goes to moto's S3 server on loopback, through a small HTTP proxy that counts requests and body bytes and
injects the faults of a real link: a 503 answer, a connection reset in the middle of a body, slow responses.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import DATA, REPO, publisher_client
from publish import ensure_versioned_bucket
from vb2p import layout
from vb2p.errors import DownloadError
from vb2p.remote import (
    EXTRACTION_READS,
    anonymous_client,
    dataset_ranges,
    datasets_under,
    open_remote,
    open_url,
    prefetch_datasets,
)
from vb2p.transfer import discard_partial, download_object, download_verified, parts_path

BUCKET = "remote-tests"
TASK_FILE = DATA / "allensdk_nwb" / "task" / "ref_task_scientifica.nwb"  # AllenSDK's writer, with the task
SLOW_BODY = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Slow down</Message></Error>"


class FaultProxy:
    """HTTP in front of moto. Each request goes upstream on a fresh connection; the answer is counted and sent back
    whole, or replaced by a fault: `faults` holds {"action": "503" | "reset", "min_range": bytes}, each used once by
    the first GET whose Range is at least min_range bytes ("reset" sends half the body, then a TCP RST)."""

    def __init__(self, upstream: str):
        self.upstream_port = int(upstream.rsplit(":", 1)[1])
        self.faults: list[dict] = []
        self.applied: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.body_bytes = 0
        self.delay_s = 0.0
        self.lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                buffered = b""
                while True:
                    while b"\r\n\r\n" not in buffered:
                        data = self.request.recv(65536)
                        if not data:
                            return
                        buffered += data
                    head, buffered = buffered.split(b"\r\n\r\n", 1)
                    if not proxy.answer(self.request, head):
                        return

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _fault_for(self, method: str, headers: dict) -> str | None:
        ranged = headers.get("range", "")
        if method != "GET" or not ranged.startswith("bytes="):
            return None
        first, _, last = ranged[6:].partition("-")
        length = int(last) - int(first) + 1
        with self.lock:
            for fault in self.faults:
                if length >= fault["min_range"]:
                    self.faults.remove(fault)
                    self.applied.append(fault["action"])
                    return fault["action"]
        return None

    def answer(self, client: socket.socket, head: bytes) -> bool:
        """Answer one request; False when the client connection must end."""
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        with self.lock:
            self.requests.append((method, target))
        time.sleep(self.delay_s)
        fault = self._fault_for(method, headers)
        if fault == "503":
            client.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                           + f"Content-Length: {len(SLOW_BODY)}\r\n\r\n".encode() + SLOW_BODY)
            return True
        forwarded = [line for line in lines if not line.lower().startswith("connection:")] + ["Connection: close"]
        with socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            upstream.sendall("\r\n".join(forwarded).encode("latin-1") + b"\r\n\r\n")
            response = b"".join(iter(lambda: upstream.recv(1 << 20), b""))
        response_head, body = response.split(b"\r\n\r\n", 1)
        kept = [line for line in response_head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        response_head = b"\r\n".join(kept) + b"\r\n\r\n"
        if fault == "reset":
            client.sendall(response_head + body[: len(body) // 2])
            with self.lock:
                self.body_bytes += len(body) // 2
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # RST: the client sees the connection reset mid-body
            return False
        client.sendall(response_head + body)
        with self.lock:
            self.body_bytes += len(body) if method != "HEAD" else 0
        return True

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(s3_server):
    proxy = FaultProxy(s3_server)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def uploader(s3_server):
    client = publisher_client(s3_server)
    ensure_versioned_bucket(client, BUCKET)
    return client


def put(uploader, key: str, content: bytes) -> str:
    return uploader.put_object(Bucket=BUCKET, Key=key, Body=content, ACL="public-read")["VersionId"]


def demo_experiment(demo_root: Path) -> Path:
    return sorted((demo_root / layout.EXPERIMENT_DIR).glob("*.nwb"))[0]


@pytest.fixture(scope="module")
def nwb_objects(uploader, demo_root):
    """{name: (local path, key, version id)}: AllenSDK's task file and a demo experiment file, on the bucket."""
    objects = {}
    for name, path in (("allensdk_task", TASK_FILE), ("demo", demo_experiment(demo_root))):
        key = f"nwb/{path.name}"
        objects[name] = (path, key, put(uploader, key, path.read_bytes()))
    return objects


def values_equal(remote: h5py.Dataset, local: h5py.Dataset) -> bool:
    """Values read through h5py; references are compared by the names they point to."""
    if h5py.check_dtype(ref=local.dtype) or (local.dtype.names and any(
            h5py.check_dtype(ref=local.dtype.fields[n][0]) for n in local.dtype.names)):
        return remote.shape == local.shape  # references: their bytes are compared byte for byte below
    a, b = remote[()], local[()]
    if isinstance(b, np.ndarray) and b.dtype.kind != "O":
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=b.dtype.kind == "f")
    return np.asarray(a, dtype=object).tolist() == np.asarray(b, dtype=object).tolist()


# ----- vb2p.remote -----


@pytest.mark.parametrize("name", ["allensdk_task", "demo"])
def test_every_dataset_extraction_reads_equals_the_local_file(nwb_objects, proxy, name):
    local_path, key, version = nwb_objects[name]
    client = anonymous_client(proxy.url)
    with open(local_path, "rb") as raw, h5py.File(local_path, "r") as local:
        with open_remote(client, BUCKET, key, version) as remote, h5py.File(remote, "r") as f:
            stored = prefetch_datasets(f, remote)
            datasets = datasets_under(f, EXTRACTION_READS)
            names = {d.name for d in datasets}
            assert names >= {layout.NWB_DFF, layout.NWB_TIMESTAMPS, f"{layout.NWB_CELL_TABLE}/image_mask"}
            after_prefetch = remote.stats.requests
            for dataset in datasets:
                assert values_equal(dataset, local[dataset.name]), dataset.name
                for start, end in dataset_ranges(dataset):  # the stored bytes themselves
                    remote.seek(start)
                    raw.seek(start)
                    assert remote.read(end - start) == raw.read(end - start), dataset.name
            assert dict(f[layout.NWB_METADATA].attrs) == dict(local[layout.NWB_METADATA].attrs)
            reads_after_prefetch = remote.stats.requests - after_prefetch
    stats = remote.stats
    # Counted exactly: every request the proxy saw (heads at open and at verify included), every body byte.
    assert stats.requests == len(proxy.requests)
    assert stats.bytes_moved == proxy.body_bytes
    assert stats.bytes_moved <= 1.2 * stored, (stats.bytes_moved, stored)
    assert reads_after_prefetch <= 0.1 * len(datasets)  # prefetched: reading needs (almost) no more requests
    if name == "allensdk_task":
        assert stored > 8e6 and {"/intervals/trials/start_time", "/processing/running/speed/data"} <= names


def test_a_503_and_a_connection_reset_mid_read_are_retried_with_the_same_bytes(nwb_objects, proxy):
    local_path, key, version = nwb_objects["allensdk_task"]
    with h5py.File(local_path, "r") as local:
        expected = local[layout.NWB_DFF][()]
    proxy.faults = [{"action": "reset", "min_range": 256 * 1024}, {"action": "503", "min_range": 256 * 1024}]
    client = anonymous_client(proxy.url)
    with open_remote(client, BUCKET, key, version, part_bytes=1 << 30) as remote, h5py.File(remote, "r") as f:
        values = f[layout.NWB_DFF][()]  # 2 MB: one ranged GET, cut off, then answered 503, then whole
    assert proxy.applied == ["reset", "503"]
    assert np.array_equal(values, expected)
    assert remote.stats.retries == 1  # the reset: ours (botocore does not retry a body cut off)
    gets = [t for m, t in proxy.requests if m == "GET"]
    assert len(gets) >= 3  # the cut-off GET, the 503 (botocore's retry), the GET that completed


def test_a_new_version_on_the_bucket_does_not_change_what_a_pinned_reader_reads(uploader, proxy):
    first, second = os.urandom(300_000), os.urandom(300_000)
    version = put(uploader, "replaced.bin", first)
    with open_remote(anonymous_client(proxy.url), BUCKET, "replaced.bin", version, block_bytes=4096) as remote:
        head = remote.read(1000)
        put(uploader, "replaced.bin", second)  # the key now names other bytes
        rest = remote.read()
    assert head + rest == first


def test_a_deleted_version_fails_naming_key_and_version(uploader, proxy):
    version = put(uploader, "deleted.bin", os.urandom(300_000))
    client = anonymous_client(proxy.url)
    remote = open_remote(client, BUCKET, "deleted.bin", version, block_bytes=4096)
    remote.read(1000)
    uploader.delete_object(Bucket=BUCKET, Key="deleted.bin", VersionId=version)
    with pytest.raises(DownloadError, match=f"deleted.bin\\?versionId={version}.*deleted or replaced"):
        remote.read(100_000)  # not fetched yet
    with pytest.raises(DownloadError, match=f"deleted.bin\\?versionId={version}"):
        remote.verify()
    remote.close()
    with pytest.raises(DownloadError, match=f"opening s3://{BUCKET}/deleted.bin\\?versionId={version}"):
        open_remote(client, BUCKET, "deleted.bin", version)


def test_an_object_other_than_expected_is_refused(uploader, proxy):
    version = put(uploader, "sized.bin", b"x" * 1000)
    client = anonymous_client(proxy.url)
    with pytest.raises(DownloadError, match="1000 bytes on the bucket, 999 expected"):
        open_remote(client, BUCKET, "sized.bin", version, expected_size=999)
    with pytest.raises(DownloadError, match="ETag"):
        open_remote(client, BUCKET, "sized.bin", version, expected_etag='"0123"')
    with pytest.raises(DownloadError, match="versionId=<version id>"):
        open_url(f"s3://{BUCKET}/sized.bin", endpoint_url=proxy.url)
    with open_url(f"s3://{BUCKET}/sized.bin?versionId={version}", endpoint_url=proxy.url) as remote:
        assert remote.read() == b"x" * 1000


# ----- vb2p.transfer -----


def test_parallel_download_equals_the_object_and_its_blake2b(uploader, proxy, tmp_path):
    content = os.urandom(3_000_000)
    version = put(uploader, "whole.bin", content)
    partial = tmp_path / "whole.bin.partial"
    result = download_object(anonymous_client(proxy.url), BUCKET, "whole.bin", version, partial,
                             concurrency=4, part_bytes=256 * 1024)
    assert partial.read_bytes() == content
    assert result.blake2b == hashlib.blake2b(content).hexdigest()
    assert (result.size, result.bytes_moved, result.resumed_bytes) == (len(content), len(content), 0)
    assert result.requests == len(proxy.requests) == 1 + 12  # the head, then 12 parts
    assert not parts_path(partial).exists()


def test_a_wrong_hash_leaves_nothing_at_the_final_name(uploader, proxy, tmp_path):
    version = put(uploader, "wrong.bin", os.urandom(100_000))
    final = tmp_path / "wrong.bin"
    with pytest.raises(DownloadError, match="BLAKE2b .* expected; the partial file was removed"):
        download_verified(anonymous_client(proxy.url), BUCKET, "wrong.bin", version, final, "0" * 128)
    assert list(tmp_path.iterdir()) == []


KILLED_DOWNLOAD = """
import sys
sys.path.insert(0, sys.argv[1])
from vb2p.remote import anonymous_client
from vb2p.transfer import download_verified
download_verified(anonymous_client(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7],
                  concurrency=2, part_bytes=64 * 1024)
"""


def test_a_download_killed_mid_transfer_resumes_with_the_parts_it_had(uploader, proxy, tmp_path):
    content = os.urandom(2_000_000)  # 31 parts of 64 kB
    version = put(uploader, "killed.bin", content)
    final = tmp_path / "killed.bin"
    partial = final.with_name("killed.bin.partial")
    file_hash = hashlib.blake2b(content).hexdigest()
    proxy.delay_s = 0.1  # ~1.6 s for the whole download: time to kill it half-way
    child = subprocess.Popen([sys.executable, "-c", KILLED_DOWNLOAD, str(REPO / "workflow"), proxy.url, BUCKET,
                              "killed.bin", version, str(final), file_hash])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.poll() is None:
        record = parts_path(partial)
        if record.exists() and len(json.loads(record.read_text())["done"]) >= 6:
            break
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not final.exists()
    done = json.loads(parts_path(partial).read_text())["done"]
    assert 6 <= len(done) < 31
    proxy.delay_s = 0.0
    result = download_verified(anonymous_client(proxy.url), BUCKET, "killed.bin", version, final, file_hash,
                               concurrency=2, part_bytes=64 * 1024)
    assert final.read_bytes() == content
    assert result.resumed_bytes >= len(done) * 64 * 1024 - 64 * 1024  # the last part may be short
    assert result.bytes_moved == len(content) - result.resumed_bytes
    assert not partial.exists() and not parts_path(partial).exists()


def test_a_record_of_another_version_or_a_single_stream_partial(uploader, proxy, tmp_path):
    content = os.urandom(1_000_000)
    version = put(uploader, "resume.bin", content)
    partial = tmp_path / "resume.bin.partial"
    client = anonymous_client(proxy.url)
    # A record written for another version: its bytes are not trusted.
    partial.write_bytes(os.urandom(len(content)))
    parts_path(partial).write_text(json.dumps({"bucket": BUCKET, "key": "resume.bin", "version_id": "other",
                                               "done": list(range(15))}))
    result = download_object(client, BUCKET, "resume.bin", version, partial, part_bytes=64 * 1024)
    assert (result.resumed_bytes, partial.read_bytes()) == (0, content)
    # The earlier single-stream download left the first 300,000 bytes: its 4 whole parts are kept.
    discard_partial(partial)
    partial.write_bytes(content[:300_000])
    result = download_object(client, BUCKET, "resume.bin", version, partial, part_bytes=64 * 1024)
    assert result.resumed_bytes == 4 * 64 * 1024
    assert result.bytes_moved == len(content) - 4 * 64 * 1024
    assert result.blake2b == hashlib.blake2b(content).hexdigest()


def test_an_s3_download_that_cannot_fit_is_refused_before_its_file_is_made(uploader, proxy, tmp_path, monkeypatch):
    """The parts are written into a file preallocated sparse at the object's size: without the check the disk would
    fill part way; the bytes a resumed download already has do not count."""
    import shutil

    from vb2p.errors import NoSpaceError

    content = os.urandom(300_000)
    version = put(uploader, "big.bin", content)
    partial = tmp_path / "big.bin.partial"
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=200_000))
    client = anonymous_client(proxy.url)
    with pytest.raises(NoSpaceError, match=rf"big.bin.* needs 0.00 GB more in {tmp_path}, whose file system has"):
        download_object(client, BUCKET, "big.bin", version, partial, part_bytes=64 * 1024)
    assert not partial.exists()
    partial.write_bytes(content[:4 * 64 * 1024])  # an earlier run's 4 parts: 37,856 bytes to go, which fit
    result = download_object(client, BUCKET, "big.bin", version, partial, part_bytes=64 * 1024)
    assert result.resumed_bytes == 4 * 64 * 1024 and result.blake2b == hashlib.blake2b(content).hexdigest()
