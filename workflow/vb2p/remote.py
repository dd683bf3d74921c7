"""Read HDF5 datasets straight from one pinned version of an S3 object, by ranged reads: only the bytes that matter.

    client = anonymous_client(endpoint_url)
    with open_remote(client, bucket, key, version_id) as remote, h5py.File(remote, "r") as f:
        prefetch_datasets(f, remote, EXTRACTION_READS)   # their bytes in a few parallel requests
        dff = f[layout.NWB_DFF][...]                        # served from what was fetched
    remote.stats.as_record()   # requests and bytes moved, for the experiment's record and the log

`RemoteFile` is a read-only, seekable file object that h5py opens with its fileobj driver. Every byte fetched is kept
in an unlinked local spill file, so no byte crosses the network twice (extraction reads dF/F twice: row blocks,
then column blocks). What is fetched:

- a small read (HDF5 metadata, small datasets) fetches the aligned `block_bytes` around it (16-128 kB, in
  proportion to the file: neighbouring headers come along); reads that follow one another (the chunks of a
  compressed dataset) double that window up to `readahead_bytes`;
- a large read fetches exactly its missing bytes, in `part_bytes` parts on `concurrency` parallel connections
  (one S3 connection gives ~50 MB/s: a single stream is the bottleneck);
- `prefetch_datasets` asks HDF5 where the datasets' bytes are (contiguous offset or chunk index) and fetches them
  all at once, coalesced and in parallel, instead of one round trip per dataset when h5py reads them.

The object is pinned: every request names the version id and carries If-Match with the ETag seen when the object
was opened; the ETag and size are checked again after reading (`verify`, run on leaving the `with` block). A version
deleted or replaced mid-read fails with DownloadError naming key and version; bytes of two versions are never
mixed. A 5xx or a refused connection before the body is retried by botocore (standard mode); a body cut off mid-way
(connection reset, timeout) is not covered by botocore, so `fetch_range` asks again for the bytes not yet received.

Why a class of our own over boto3 (bench/transfer.py, every dataset extraction reads from a 1.2 GB Scientifica-like
file, 20 ms each way and 50 MB/s per connection): this reads them in 4.8-6.3 s moving 1.01 x their bytes; remfile
(plain HTTP: no version or ETag checks) 10.4 s, 1.02 x, one connection; s3fs file objects 13.5-26 s, moving 1.07 x
(64 kB blocks) to 2.43 x (its default read-ahead), over one connection, and their caches drop blocks that extraction
reads again. h5py's ros3 driver is not built into the PyPI wheel. Page buffering (h5py's page_buf_size) is silently
ignored: the released files are not written with paged aggregation.
"""

from __future__ import annotations

import bisect
import io
import logging
import os
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

import h5py

from vb2p import layout
from vb2p.errors import DownloadError

log = logging.getLogger(__name__)

MiB = 1024 * 1024
BODY_CHUNK = MiB
# Groups and datasets the extraction reads (layout document sections 5 and 5b); absent ones are skipped. The task's
# are the session's (the same in every plane's file): read once for a session of several planes
# (vb2p.steps.session_task), by the extraction itself for a lone plane.
PLANE_READS = (
    "/processing/ophys/dff/traces",
    layout.NWB_CELL_TABLE,
    layout.NWB_MAX_PROJECTION,
    layout.NWB_AVERAGE_IMAGE,
    "/general",
    "/processing/ophys/event_detection",
)
TASK_READS = (
    "/intervals",
    "/processing/stimulus",
    "/processing/running",
    "/processing/licking",
    "/processing/rewards",
    "/acquisition/EyeTracking",
)
EXTRACTION_READS = PLANE_READS + TASK_READS


def anonymous_client(endpoint_url: str | None = None, region: str = layout.REGION, max_pool_connections: int = 16):
    """An unsigned S3 client (the public bucket allows anonymous reads) with a connection per parallel part."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    return boto3.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(
            signature_version=UNSIGNED,
            # botocore's attempts per request (connection errors, 5xx, throttling); whole downloads and ranged reads
            # add their own for bodies that break off (vb2p.cache, fetch_range)
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=20,
            read_timeout=60,
            max_pool_connections=max_pool_connections,
        ),
    )


@dataclass(frozen=True)
class PinnedObject:
    """One version of one S3 object, as head_object saw it when it was opened."""

    bucket: str
    key: str
    version_id: str
    size: int
    etag: str

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.key}?versionId={self.version_id}"


@dataclass
class TransferStats:
    """Requests made (botocore's own retries included) and bytes of response bodies received."""

    requests: int = 0
    bytes_moved: int = 0
    retries: int = 0  # bodies cut off and asked for again by fetch_range
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, requests: int = 0, bytes_moved: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_moved += bytes_moved
            self.retries += retries

    def as_record(self) -> dict:
        return {"requests": self.requests, "bytes_moved": self.bytes_moved, "retries": self.retries}


def _client_error(what: str, error) -> DownloadError:
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "?")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        hint = ""
        if code in ("NoSuchVersion", "NoSuchKey", "404", "PreconditionFailed", "412"):
            hint = ": this version was deleted or replaced on the bucket; use the manifest that lists the current one"
        return DownloadError(f"{what}: S3 answered {code} (HTTP {status}){hint}")
    return DownloadError(f"{what}: {error} (is the network or the endpoint URL reachable?)")


def pin(client, bucket: str, key: str, version_id: str, expected_size: int | None = None,
        expected_etag: str | None = None, stats: TransferStats | None = None) -> PinnedObject:
    """Head one version of an object; its size and ETag must be the expected ones when given."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"s3://{bucket}/{key}?versionId={version_id}"
    stats = stats or TransferStats()
    try:
        head = client.head_object(Bucket=bucket, Key=key, VersionId=version_id)
    except (ClientError, BotoCoreError) as error:
        stats.count(requests=1 + _retry_attempts(error))
        raise _client_error(f"opening {where}", error) from error
    stats.count(requests=1 + head["ResponseMetadata"].get("RetryAttempts", 0))
    pinned = PinnedObject(bucket, key, version_id, int(head["ContentLength"]), head["ETag"])
    _check_same(pinned, expected_size, expected_etag, "expected")
    return pinned


def _check_same(pinned: PinnedObject, size: int | None, etag: str | None, what: str) -> None:
    if size is not None and size != pinned.size:
        raise DownloadError(f"{pinned.describe()}: {pinned.size} bytes on the bucket, {size} {what}")
    if etag is not None and etag != pinned.etag:
        raise DownloadError(f"{pinned.describe()}: ETag {pinned.etag} on the bucket, {etag} {what}")


def _body_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError

    return (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, ProtocolError, ConnectionError,
            socket.timeout)


def fetch_range(client, pinned: PinnedObject, start: int, end: int, write, stats: TransferStats,
                attempts: int = 5, backoff_s: float = 0.5) -> None:
    """Bytes [start, end) of the pinned version, passed in order to write(offset, data), each byte once.

    A body cut off mid-way is asked for again from its first missing byte (up to `attempts` requests).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    position, body_errors = start, _body_errors()
    for attempt in range(1, attempts + 1):
        try:
            response = client.get_object(
                Bucket=pinned.bucket, Key=pinned.key, VersionId=pinned.version_id, IfMatch=pinned.etag,
                Range=f"bytes={position}-{end - 1}",
            )
        except (ClientError, BotoCoreError) as error:
            stats.count(requests=1 + _retry_attempts(error))
            raise _client_error(f"reading bytes {position}-{end - 1} of {pinned.describe()}", error) from error
        stats.count(requests=1 + response["ResponseMetadata"].get("RetryAttempts", 0))
        _check_response(pinned, response, position, end)
        body = response["Body"]
        try:
            while position < end:
                data = body.read(min(BODY_CHUNK, end - position))
                if not data:  # botocore raises IncompleteReadError first; a server closing early lands here
                    raise ConnectionError(f"the body ended at byte {position} of {end}")
                write(position, data)
                position += len(data)
                stats.count(bytes_moved=len(data))
            return
        except body_errors as error:
            stats.count(retries=1)
            log.warning("%s: reading bytes %d-%d was cut off (%s); asking again (attempt %d/%d)",
                        pinned.describe(), position, end - 1, error, attempt, attempts)
            time.sleep(backoff_s * attempt)
        finally:
            body.close()
    raise DownloadError(f"reading bytes {position}-{end - 1} of {pinned.describe()}: cut off {attempts} times")


def _retry_attempts(error) -> int:
    return getattr(error, "response", {}).get("ResponseMetadata", {}).get("RetryAttempts", 0)


def _check_response(pinned: PinnedObject, response: dict, start: int, end: int) -> None:
    """The response is the pinned version, and exactly the range asked for."""
    total = response.get("ContentRange", "").rpartition("/")[2]
    problems = []
    if response.get("ETag") != pinned.etag:
        problems.append(f"ETag {response.get('ETag')} instead of {pinned.etag}")
    if response.get("VersionId", pinned.version_id) != pinned.version_id:
        problems.append(f"version {response.get('VersionId')}")
    if total and total != "*" and int(total) != pinned.size:
        problems.append(f"object size {total} instead of {pinned.size}")
    if int(response["ContentLength"]) != end - start:
        problems.append(f"{response['ContentLength']} bytes for a range of {end - start}")
    if problems:
        raise DownloadError(f"{pinned.describe()} changed while it was read: {', '.join(problems)}")


class Intervals:
    """Disjoint, sorted [start, end) byte ranges."""

    def __init__(self):
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self.ends, start)  # first range that ends at or after start: may touch
        j = bisect.bisect_right(self.starts, end)  # ranges before j start at or before end: may touch
        if i < j:
            start, end = min(start, self.starts[i]), max(end, self.ends[j - 1])
        self.starts[i:j], self.ends[i:j] = [start], [end]

    def containing(self, position: int) -> tuple[int, int]:
        """The range holding position, or (0, 0)."""
        i = bisect.bisect_right(self.starts, position) - 1
        return (self.starts[i], self.ends[i]) if i >= 0 and position < self.ends[i] else (0, 0)

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        gaps, position = [], start
        for i in range(bisect.bisect_right(self.ends, start), len(self.starts)):
            if self.starts[i] >= end:
                break
            if self.starts[i] > position:
                gaps.append((position, self.starts[i]))
            position = max(position, self.ends[i])
        if position < end:
            gaps.append((position, end))
        return gaps


def coalesce(ranges, gap: int) -> list[tuple[int, int]]:
    """Sorted ranges merged where less than `gap` bytes separate them: one request instead of two."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start - merged[-1][1] < gap:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def default_block_bytes(size: int) -> int:
    """What a small read fetches: size / 512 as a power of two, between 16 kB and 128 kB.

    A file is opened with a few dozen small reads whatever its size, so blocks in proportion to the file keep the
    metadata fetched a small share of the datasets read (bench/transfer.py: 128 kB is the fastest on real-size
    files, at 1.01-1.04 x the datasets' bytes).
    """
    return 1 << max(14, min(17, (size // 512).bit_length() - 1))


class RemoteFile(io.RawIOBase):
    """A read-only file over one pinned S3 object version, for h5py.File(remote, "r"). Open it with open_remote."""

    def __init__(self, client, pinned: PinnedObject, concurrency: int = 8, part_bytes: int = 8 * MiB,
                 block_bytes: int | None = None, readahead_bytes: int = 8 * MiB, spill_dir: str | None = None,
                 stats: TransferStats | None = None):
        super().__init__()
        self.client, self.pinned = client, pinned
        self.part_bytes, self.readahead_bytes = part_bytes, readahead_bytes
        self.block_bytes = block_bytes or default_block_bytes(pinned.size)
        self.stats = stats or TransferStats()
        self._have = Intervals()
        self._spill = tempfile.TemporaryFile(dir=spill_dir, prefix="vb2p-remote-")  # unlinked: gone on close
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="vb2p-remote")
        self._spill_fd = self._spill.fileno()
        self._position = 0
        self._last_read_end = -1
        self._hit_start = self._hit_end = 0  # the fetched range that held the last read
        self._window = self.block_bytes

    def __str__(self) -> str:  # error messages name the object read
        return self.pinned.describe()

    # ----- io.RawIOBase -----

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.pinned.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset} in {self.pinned.describe()}")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer) -> int:
        start = self._position
        end = min(start + len(buffer), self.pinned.size)
        if end <= start:
            return 0
        # Fast path: inside the range fetched last. h5py reads a column block of a contiguous matrix row by row.
        if not self._hit_start <= start or end > self._hit_end:
            self._ensure(start, end)
        self._last_read_end = end
        view = memoryview(buffer).cast("B")
        done = 0
        while done < end - start:
            done += os.preadv(self._spill_fd, [view[done : end - start]], start + done)
        self._position = end
        return end - start

    def close(self) -> None:
        if not self.closed:
            self._pool.shutdown(wait=True)
            self._spill.close()
            log.info("%s: %d requests, %.1f MB moved of %.1f MB", self.pinned.describe(), self.stats.requests,
                     self.stats.bytes_moved / 1e6, self.pinned.size / 1e6)
        super().close()

    def __exit__(self, kind, value, traceback):
        try:
            if kind is None:
                self.verify()
        finally:
            self.close()

    # ----- fetching -----

    def _ensure(self, start: int, end: int) -> None:
        missing = self._have.missing(start, end)
        if missing and end - start >= self.block_bytes:
            self._fetch(missing)
        elif missing:
            # A small read: its aligned block, or a growing window while reads follow one another.
            sequential = 0 <= start - self._last_read_end < self.block_bytes
            self._window = min(2 * self._window, self.readahead_bytes) if sequential else self.block_bytes
            low = start - start % self.block_bytes
            high = min(max(-(-end // self.block_bytes) * self.block_bytes, low + self._window), self.pinned.size)
            self._fetch(self._have.missing(low, high))
        self._hit_start, self._hit_end = self._have.containing(start)

    def prefetch(self, ranges) -> None:
        """Fetch every byte of these [start, end) ranges not fetched yet: coalesced, in parallel parts."""
        wanted = Intervals()
        for start, end in ranges:
            start, end = max(0, start), min(end, self.pinned.size)
            if start < end:
                wanted.add(start, end)
        missing = [gap for s, e in zip(wanted.starts, wanted.ends) for gap in self._have.missing(s, e)]
        self._fetch(missing)

    def _fetch(self, missing: list[tuple[int, int]]) -> None:
        spans = coalesce(missing, self.block_bytes)
        parts = [(s, min(s + self.part_bytes, end)) for start, end in spans
                 for s in range(start, end, self.part_bytes)]
        if len(parts) == 1:
            self._fetch_part(*parts[0])
        else:
            for future in [self._pool.submit(self._fetch_part, start, end) for start, end in parts]:
                future.result()
        for start, end in spans:
            self._have.add(start, end)

    def _fetch_part(self, start: int, end: int) -> None:
        fd = self._spill_fd
        fetch_range(self.client, self.pinned, start, end, lambda offset, data: os.pwrite(fd, data, offset), self.stats)

    def verify(self) -> None:
        """The object on the bucket is still the version read, with the same ETag and size."""
        again = pin(self.client, self.pinned.bucket, self.pinned.key, self.pinned.version_id, stats=self.stats)
        _check_same(again, self.pinned.size, self.pinned.etag, "when it was opened")


def open_remote(client, bucket: str, key: str, version_id: str, expected_size: int | None = None,
                expected_etag: str | None = None, **tuning) -> RemoteFile:
    """A RemoteFile over one version of s3://bucket/key (head_object first: its size and ETag are pinned)."""
    stats = TransferStats()
    pinned = pin(client, bucket, key, version_id, expected_size, expected_etag, stats)
    return RemoteFile(client, pinned, stats=stats, **tuning)


def open_url(url: str, endpoint_url: str | None = None, region: str = layout.REGION, **tuning) -> RemoteFile:
    """A RemoteFile over s3://bucket/key?versionId=..., read anonymously (through endpoint_url when given)."""
    parsed = urlparse(url)
    version = parse_qs(parsed.query).get("versionId", [None])[0]
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/") or not version:
        raise DownloadError(f"{url!r}: expected s3://<bucket>/<key>?versionId=<version id> (a pinned version)")
    concurrency = tuning.get("concurrency", 8)
    client = anonymous_client(endpoint_url, region, max_pool_connections=max(10, concurrency))
    return open_remote(client, parsed.netloc, parsed.path.lstrip("/"), version, **tuning)


# ----- which bytes a set of datasets needs -----


def dataset_ranges(dataset: h5py.Dataset) -> list[tuple[int, int]]:
    """The [start, end) byte ranges in the file holding a dataset's data (none when compact or never written)."""
    dataset_id = dataset.id
    kind = dataset_id.get_create_plist().get_layout()
    if kind == h5py.h5d.CONTIGUOUS:
        offset, size = dataset_id.get_offset(), dataset_id.get_storage_size()
        return [(offset, offset + size)] if offset is not None and size else []
    if kind == h5py.h5d.CHUNKED:
        ranges: list[tuple[int, int]] = []
        dataset_id.chunk_iter(lambda chunk: ranges.append((chunk.byte_offset, chunk.byte_offset + chunk.size)))
        return ranges
    return []  # compact: stored in the object header, read with the metadata


def datasets_under(f: h5py.File, paths) -> list[h5py.Dataset]:
    """The datasets at these paths and every dataset inside the groups among them; absent paths are skipped."""
    found: dict[str, h5py.Dataset] = {}

    def add(_, item) -> None:  # visititems stops at the first callback that returns something
        if isinstance(item, h5py.Dataset):
            found.setdefault(item.name, item)

    for path in paths:
        node = f.get(path)
        if isinstance(node, h5py.Dataset):
            add(path, node)
        elif isinstance(node, h5py.Group):
            node.visititems(add)
    return list(found.values())


def prefetch_datasets(f: h5py.File, remote: RemoteFile, paths=EXTRACTION_READS) -> int:
    """Fetch the data of every dataset under paths in one parallel batch; returns their stored bytes."""
    ranges = [r for dataset in datasets_under(f, paths) for r in dataset_ranges(dataset)]
    remote.prefetch(ranges)
    return sum(end - start for start, end in ranges)
