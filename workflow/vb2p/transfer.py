"""Download one pinned version of an S3 object whole, in parallel ranged parts, resumable after a kill.

    result = download_verified(client, bucket, key, version_id, path, file_hash)  # path appears only when verified

or, to keep the steps apart (download_verified does exactly this):

    result = download_object(client, bucket, key, version_id, partial)   # partial: <path>.partial
    if result.blake2b == file_hash: os.replace(partial, path)
    else: discard_partial(partial)

One S3 connection gives ~50 MB/s; `concurrency` connections each fetch `part_bytes` parts (bench/transfer.py
measures the gain). Parts land at their offsets in the partial file. A part is recorded as finished in
`<partial>.parts` (JSON, replaced atomically) only once its bytes are on disk (fdatasync), so a download killed at
any moment resumes with exactly the parts not recorded; a record naming another version, ETag, size or part size
starts over. A partial file without a record is a sequential download of the earlier single-stream code: its whole
parts count as finished.

BLAKE2b runs in order over the growing prefix of finished parts, reading them back from the page cache while later
parts still download, so the hash costs almost no time after the last byte (a resumed download hashes the parts it
already had while fetching the others). Every request is pinned by version id and If-Match on the ETag, and a body
cut off mid-way is asked for again from its first missing byte (`vb2p.remote.fetch_range`).

Why not s3transfer's download_file: it cannot resume (its ExtraArgs take no Range, and a transfer always fetches
every part), and it hashes nothing; for a fresh download it is not faster than this (bench/transfer.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from vb2p.errors import DownloadError, NoSpaceError
from vb2p.files import HASH_NAME, atomic_write_bytes
from vb2p.remote import MiB, PinnedObject, TransferStats, fetch_range, pin

log = logging.getLogger(__name__)
PARTIAL_SUFFIX = ".partial"
PARTS_SUFFIX = ".parts"
HASH_READ_BYTES = 8 * MiB


@dataclass(frozen=True)
class DownloadResult:
    blake2b: str  # of the whole partial file
    size: int
    requests: int
    bytes_moved: int
    resumed_bytes: int  # bytes already on disk from an earlier, interrupted run


def parts_path(partial: str | Path) -> Path:
    partial = Path(partial)
    return partial.with_name(partial.name + PARTS_SUFFIX)


def discard_partial(partial: str | Path) -> None:
    """Remove a partial download and its record of finished parts."""
    parts_path(partial).unlink(missing_ok=True)
    Path(partial).unlink(missing_ok=True)


def _identity(pinned: PinnedObject, part_bytes: int) -> dict:
    return {"bucket": pinned.bucket, "key": pinned.key, "version_id": pinned.version_id, "etag": pinned.etag,
            "size": pinned.size, "part_bytes": part_bytes}


def _finished_parts(partial: Path, identity: dict) -> set[int]:
    """Parts already on disk from an interrupted run of the same download (none if it was another one)."""
    record = parts_path(partial)
    if record.exists():
        try:
            saved = json.loads(record.read_text())
        except json.JSONDecodeError:
            saved = {}
        if {k: saved.get(k) for k in identity} == identity and partial.exists():
            return set(saved.get("done", []))
        log.info("%s belongs to another download (%s); starting over", partial, record)
        discard_partial(partial)
        return set()
    if partial.exists():  # a single-stream partial: its first bytes are valid
        return set(range(min(partial.stat().st_size, identity["size"]) // identity["part_bytes"]))
    return set()


def _save(partial: Path, identity: dict, done: set[int]) -> None:
    atomic_write_bytes(parts_path(partial), json.dumps({**identity, "done": sorted(done)}).encode())


def require_free_space(directory: Path, needed: int, what: str) -> None:
    """Refuse to start a download that cannot fit: the file is preallocated sparse, so the disk would otherwise fill
    part way through it."""
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise NoSpaceError(f"{what} needs {needed / 1e9:.2f} GB more in {directory}, whose file system has"
                            f" {free / 1e9:.2f} GB free: free space there, or set cache_dir on a larger file system,"
                            " then run again (what was downloaded is kept)")


def download_object(client, bucket: str, key: str, version_id: str, partial_path: str | Path,
                    expected_size: int | None = None, concurrency: int = 8, part_bytes: int = 16 * MiB,
                    expected_etag: str | None = None) -> DownloadResult:
    """Fetch one version of s3://bucket/key into partial_path (resuming what an earlier run left there)."""
    partial = Path(partial_path)
    stats = TransferStats()
    pinned = pin(client, bucket, key, version_id, expected_size, expected_etag, stats)
    identity = _identity(pinned, part_bytes)
    n_parts = -(-pinned.size // part_bytes)
    done = _finished_parts(partial, identity)
    resumed = sum(min(part_bytes, pinned.size - i * part_bytes) for i in done)
    if resumed:
        log.info("resuming %s: %d of %d parts already on disk", pinned.describe(), len(done), n_parts)
    partial.parent.mkdir(parents=True, exist_ok=True)
    require_free_space(partial.parent, pinned.size - resumed, pinned.describe())
    _save(partial, identity, done)  # before the file: a partial with no record is never one of ours
    hasher = hashlib.new(HASH_NAME)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, pinned.size)

        def fetch(part: int) -> int:
            start = part * part_bytes
            fetch_range(client, pinned, start, min(start + part_bytes, pinned.size),
                        lambda offset, data: os.pwrite(fd, data, offset), stats)
            os.fdatasync(fd)  # on disk before the record says so
            return part

        hashed = 0  # parts hashed so far, in order
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="vb2p-download") as pool:
            pending = {pool.submit(fetch, part) for part in range(n_parts) if part not in done}
            try:
                while pending or hashed < n_parts:
                    while hashed in done:
                        _hash_part(fd, hasher, hashed * part_bytes, min(part_bytes, pinned.size - hashed * part_bytes))
                        hashed += 1
                    if not pending:
                        continue
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    done.update(future.result() for future in finished if future.exception() is None)
                    _save(partial, identity, done)
                    for future in finished:
                        future.result()  # the first failure, once the parts that made it are recorded
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    finally:
        os.close(fd)
    parts_path(partial).unlink(missing_ok=True)
    return DownloadResult(hasher.hexdigest(), pinned.size, stats.requests, stats.bytes_moved, resumed)


def download_verified(client, bucket: str, key: str, version_id: str, path: str | Path, file_hash: str,
                      **options) -> DownloadResult:
    """Download into <path>.partial and rename it to path only if its BLAKE2b is file_hash; otherwise discard it
    and raise DownloadError. options: those of download_object."""
    path = Path(path)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    result = download_object(client, bucket, key, version_id, partial, **options)
    if result.blake2b != file_hash:
        discard_partial(partial)
        raise DownloadError(
            f"s3://{bucket}/{key}?versionId={version_id}: BLAKE2b {result.blake2b} of the bytes downloaded, "
            f"{file_hash} expected; the partial file was removed, the next attempt starts over"
        )
    os.replace(partial, path)
    return result


def _hash_part(fd: int, hasher, start: int, length: int) -> None:
    end = start + length
    while start < end:
        data = os.pread(fd, min(HASH_READ_BYTES, end - start), start)
        if not data:
            raise DownloadError(f"partial file ends at byte {start}, before {end}: it was truncated while downloading")
        hasher.update(data)
        start += len(data)
