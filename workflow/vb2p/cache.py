"""A verified download cache in AllenSDK's layout (layout document section 3).

    cache_dir/<manifest file name>                       every manifest used
    cache_dir/_manifest_last_used.txt                    name of the last one
    cache_dir/<project>-<version>/<url path minus prefix>  the files
    cache_dir/_downloaded_data.json                      {absolute resolved path: file_hash}

AllenSDK's `from_local_cache` reads a cache written here, and a cache AllenSDK wrote is reused here. Every file is
fetched pinned by version id, hashed while it streams, written under a temporary name and renamed only when its
BLAKE2b matches the manifest. A file whose hash was already downloaded for another manifest version is symlinked
(as AllenSDK does), not downloaded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import fcntl
import json
import logging
import os
import time
from pathlib import Path

from vb2p import layout
from vb2p.errors import DownloadError, ManifestError
from vb2p.files import HASH_NAME, atomic_write_bytes, blake2b_of, file_blake2b
from vb2p.manifest import FileEntry, Manifest, latest_version, parse_manifest, safe_relative_path
from vb2p.source import LocalSource, S3Source

log = logging.getLogger(__name__)
PARTIAL_SUFFIX = ".partial"
PROGRESS_EVERY_BYTES = 256 * 1024 * 1024


class ReleaseCache:
    def __init__(self, cache_dir: str | Path, source: S3Source | LocalSource, retries: int = 3, backoff_s: float = 2.0):
        self.cache_dir = Path(cache_dir).absolute()
        self.source = source
        self.retries = retries
        self.backoff_s = backoff_s
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    # ----- manifests -----

    @property
    def last_used_path(self) -> Path:
        return self.cache_dir / layout.CACHE_LAST_USED

    @property
    def downloaded_path(self) -> Path:
        return self.cache_dir / layout.CACHE_DOWNLOADED

    def resolve_manifest(self, version: str = "latest") -> Manifest:
        """Load (fetching once) the manifest for a pinned version, or the latest one the release lists."""
        if version == "latest":
            version = self._latest_version()
        name = layout.MANIFEST_NAME_TEMPLATE.format(version=version)
        path = self.cache_dir / name
        if not path.exists():
            content = self.source.read_manifest(name)
            self._validated(content, name)  # a manifest we would refuse is never cached
            atomic_write_bytes(path, content)
        manifest = self._validated(path.read_bytes(), name)
        atomic_write_bytes(self.last_used_path, name.encode())
        return manifest

    def _validated(self, content: bytes, name: str) -> Manifest:
        manifest = parse_manifest(content, name, expected_bucket=self.source.location.bucket)
        prefix = self.source.location.prefix + "/"
        for entry in manifest.entries():
            if not entry.key.startswith(prefix):
                raise ManifestError(
                    f"manifest {name}: {entry.url} is outside the release prefix {prefix!r} "
                    f"of {self.source.location.describe()}"
                )
        safe_relative_path(manifest.cache_subdir, f"manifest {name} project_name")
        return manifest

    def _latest_version(self) -> str:
        try:
            names = self.source.list_manifest_names()
        except DownloadError as error:
            # Offline re-run: the cache still knows which manifest it was built from.
            if self.last_used_path.exists():
                name = self.last_used_path.read_text().strip()
                log.warning("cannot list manifests (%s); using the last manifest used in this cache, %s", error, name)
                return latest_version([name])
            raise
        return latest_version(names)

    # ----- files -----

    def local_path(self, manifest: Manifest, entry: FileEntry) -> Path:
        relative = safe_relative_path(str(entry.cache_relative_path), f"manifest {manifest.name} entry {entry.url}")
        path = self.cache_dir / manifest.cache_subdir / relative
        if self.cache_dir not in path.parents:
            raise ManifestError(f"manifest {manifest.name}: {entry.url} would be written outside {self.cache_dir}")
        return path

    def fetch(self, manifest: Manifest, entry: FileEntry) -> Path:
        """The verified local copy of a manifest entry, downloading it only when no verified copy exists."""
        path = self.local_path(manifest, entry)
        if self._load_record().get(str(path.resolve())) == entry.file_hash and path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.cache_dir / ".locks" / f"{entry.file_hash[:40]}.lock"):
            record = self._load_record()
            if record.get(str(path.resolve())) == entry.file_hash and path.is_file():
                return path  # another process finished it while we waited
            if path.is_file() and not path.is_symlink():
                # Present but not recorded (a cache made before records were kept): verify it once.
                if file_blake2b(path) == entry.file_hash:
                    self._record(path, entry.file_hash)
                    return path
                log.warning("%s does not match its manifest hash; fetching it again", path)
            if path.is_symlink() or path.exists():
                path.unlink()
            same = _downloaded_with_hash(record, entry.file_hash)
            if same is not None:
                path.symlink_to(same)
                log.info("reused %s for %s (same BLAKE2b under another manifest version)", same, path)
                return path
            self._download(entry, path)
            self._record(path, entry.file_hash)
            return path

    def _download(self, entry: FileEntry, path: Path) -> None:
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        where = self.source.describe(entry.key, entry.version_id)
        last_problem = ""
        for attempt in range(1, self.retries + 1):
            offset = partial.stat().st_size if partial.exists() else 0
            if offset:
                log.info("resuming %s at byte %d", where, offset)
            hasher = blake2b_of(partial) if offset else hashlib.new(HASH_NAME)  # continues over bytes already written
            received = 0
            started = time.monotonic()
            try:
                with open(partial, "ab") as out:
                    for block in self.source.stream(entry.key, entry.version_id, offset):
                        out.write(block)
                        hasher.update(block)
                        received += len(block)
                        if received // PROGRESS_EVERY_BYTES != (received - len(block)) // PROGRESS_EVERY_BYTES:
                            _log_progress(where, offset + received, started, received)
                    out.flush()
                    os.fsync(out.fileno())
            except DownloadError as error:
                last_problem = str(error)
                log.warning("attempt %d/%d of %s failed: %s", attempt, self.retries, where, error)
                if offset and not received and "InvalidRange" in last_problem:
                    partial.unlink(missing_ok=True)  # longer than the object: it cannot be resumed, start over
                time.sleep(self.backoff_s * attempt)
                continue
            digest = hasher.hexdigest()
            _log_progress(where, offset + received, started, received)
            if digest == entry.file_hash:
                os.replace(partial, path)
                return
            last_problem = f"BLAKE2b mismatch: manifest says {entry.file_hash}, the file downloaded has {digest}"
            log.warning("attempt %d/%d of %s: %s", attempt, self.retries, where, last_problem)
            partial.unlink(missing_ok=True)
        raise DownloadError(f"{where} ({entry.url}) failed after {self.retries} attempts: {last_problem}")

    # ----- the record of downloads (_downloaded_data.json), shared with AllenSDK -----

    def _load_record(self) -> dict[str, str]:
        if not self.downloaded_path.exists():
            return {}
        try:
            return json.loads(self.downloaded_path.read_text())
        except json.JSONDecodeError as error:
            raise DownloadError(
                f"{self.downloaded_path} is not valid JSON ({error}); delete it and the cache re-verifies its files"
            ) from error

    def _record(self, path: Path, file_hash: str) -> None:
        with _locked(self.cache_dir / ".downloaded_data.lock"):
            record = self._load_record()
            record[str(path.resolve())] = file_hash
            atomic_write_bytes(self.downloaded_path, json.dumps(record, indent=2, sort_keys=True).encode())


def _downloaded_with_hash(record: dict[str, str], file_hash: str) -> Path | None:
    """A recorded file with this hash that still exists (downloaded for another manifest version)."""
    for recorded, recorded_hash in sorted(record.items()):
        if recorded_hash == file_hash and Path(recorded).is_file():
            return Path(recorded).resolve()
    return None


def _log_progress(where: str, total: int, started: float, received: int) -> None:
    elapsed = max(time.monotonic() - started, 1e-9)
    log.info("%s: %.1f MB, %.1f MB/s", where, total / 1e6, received / 1e6 / elapsed)


@contextlib.contextmanager
def _locked(lock_path: Path):
    """An exclusive advisory lock: parallel jobs never write one file or the download record at once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
