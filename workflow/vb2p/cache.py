"""A verified download cache in AllenSDK's layout (layout document section 3).

    cache_dir/<manifest file name>                         every manifest used
    cache_dir/_manifest_last_used.txt                      name of the last one
    cache_dir/<project>-<version>/<url path minus prefix>  the files
    cache_dir/_downloaded_data.json                        AllenSDK's download list: {resolved path: file_hash}
    cache_dir/.vb2p/verified/<path of the file>.json        our verification stamp of each file (below)
    cache_dir/.vb2p/locks/                                  one lock per file being fetched

AllenSDK's `from_local_cache` reads a cache written here, and a cache AllenSDK wrote is reused here. Every file is
fetched pinned by version id, hashed while it streams, written under a temporary name and renamed only when its
BLAKE2b matches the manifest.

What the cache hands out is checked every time, not trusted forever: a verification stamp records the file's hash with
its size, mtime, inode and a hash of 16 sampled blocks when it was hashed. Each use compares these with the file
(well under a millisecond); when any differs (a truncation, an edit in place, a sync tool, a restore) or there is no
stamp (a file AllenSDK downloaded), the whole file is hashed again. A file that no longer matches its manifest hash is fetched again,
resuming from its bytes when it is only shorter. A file whose hash was downloaded for another manifest version of
this cache is linked instead of downloaded (as AllenSDK does), after the same check of the file linked to.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from pathlib import Path

from filelock import FileLock

from vb2p import layout
from vb2p.errors import DownloadError, ManifestError, NoSpaceError
from vb2p.files import atomic_write_bytes, file_blake2b, sampled_blake2b
from vb2p.manifest import FileEntry, Manifest, latest_version, parse_manifest, safe_relative_path
from vb2p.source import LocalSource, S3Source
from vb2p.transfer import PARTIAL_SUFFIX, DownloadResult, discard_partial

log = logging.getLogger(__name__)
STAMP_DIR = Path(".vb2p") / "verified"
LOCK_DIR = Path(".vb2p") / "locks"


def _fingerprint(path: Path) -> dict:
    """What a verification stamp compares on each use: the stat fields an edit, a truncation or a copy changes,
    and a BLAKE2b of 16 sampled blocks, for edits that keep the stat (a tool restoring mtime, a disk error)."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino, "sampled": sampled_blake2b(path)}


class ReleaseCache:
    def __init__(self, cache_dir: str | Path, source: S3Source | LocalSource, retries: int = 3, backoff_s: float = 2.0):
        self.cache_dir = Path(cache_dir).absolute()
        self.source = source
        self.retries = retries
        self.backoff_s = backoff_s
        self.transfers: dict[Path, DownloadResult] = {}  # what each download of this process moved
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    # ----- manifests -----

    @property
    def last_used_path(self) -> Path:
        return self.cache_dir / layout.CACHE_LAST_USED

    @property
    def downloaded_data_path(self) -> Path:
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
        """The local copy of a manifest entry, checked against its hash (see the module docstring); fetched when
        there is none, or when the one there no longer matches."""
        path = self.local_path(manifest, entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self._lock_path(entry.file_hash)):
            if path.is_symlink() and not path.exists():
                path.unlink()  # the file it pointed at is gone
            if path.exists():
                if self.check(path, entry.file_hash):
                    return path
                self._set_aside(path)
            same = self._reusable_copy(entry.file_hash)
            if same is not None:
                path.symlink_to(same)
                self._add_to_downloaded_data(path, entry.file_hash)
                log.info("linked %s to %s: same BLAKE2b, downloaded for another manifest version", path, same)
                return path
            self._download(entry, path)
            self._stamp(path, entry.file_hash)
            self._add_to_downloaded_data(path, entry.file_hash)
            return path

    def check(self, path: Path, file_hash: str) -> bool:
        """True when path (or the file it links to) has file_hash: by its stamp when its stat is unchanged since it
        was hashed, by hashing it again otherwise (and then stamped anew)."""
        real = path.resolve()
        stamp = self._read_stamp(real)
        now = _fingerprint(real)
        if stamp is not None and stamp["file_hash"] == file_hash and all(stamp.get(k) == now[k] for k in now):
            return True
        if stamp is None:
            log.info("hashing %s: it has no verification stamp (a file this cache did not download)", real)
        else:
            changed = [k for k in now if stamp.get(k) != now[k]] or ["file_hash"]
            log.warning("hashing %s again: its %s changed since it was verified", real, ", ".join(changed))
        started = time.monotonic()
        digest = file_blake2b(real)
        log.info("hashed %s (%.1f MB) in %.2f s", real, now["size"] / 1e6, time.monotonic() - started)
        if digest != file_hash:
            log.warning("%s does not match its manifest hash (manifest %s, file %s)", real, file_hash, digest)
            return False
        self._stamp(real, file_hash)
        return True

    def _set_aside(self, path: Path) -> None:
        """A copy that failed its check: a link is removed; a file becomes the partial download to resume from (the
        bytes it shares with the object are kept when it was only cut short; the final hash check catches the rest)."""
        log.warning("fetching %s again: the copy in the cache no longer matches the manifest", path)
        self._remove_from_downloaded_data(path)
        if path.is_symlink():
            path.unlink()
        else:
            os.replace(path, path.with_name(path.name + PARTIAL_SUFFIX))

    def _reusable_copy(self, file_hash: str) -> Path | None:
        """A file of this cache, listed with this hash (downloaded for another manifest version), that checks out."""
        root = self.cache_dir.resolve()
        for listed, listed_hash in sorted(self._downloaded_data().items()):
            candidate = Path(listed)
            if listed_hash != file_hash or not candidate.is_file():
                continue
            real = candidate.resolve()
            if root not in real.parents:
                log.info("not reusing %s: it lies outside %s", real, root)
                continue
            if self.check(real, file_hash):
                return real
        return None

    def _download(self, entry: FileEntry, path: Path) -> None:
        """Fetch the pinned object into path + .partial (the source's way: parallel ranged parts from S3, a copy
        from a mirror) and rename it when its BLAKE2b matches.

        botocore retries a request that fails before its body arrives (connection errors, 5xx, throttling); this
        loop adds what it does not do: another attempt after a transfer broke off, resuming from the bytes already
        written, and starting over after a hash mismatch.
        """
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        where = self.source.describe(entry.key, entry.version_id)
        last_problem = ""
        for attempt in range(1, self.retries + 1):
            started = time.monotonic()
            try:
                result = self.source.download(entry.key, entry.version_id, partial)
            except NoSpaceError:
                raise
            except OSError as error:
                if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise NoSpaceError(f"{where}: the file system of {partial.parent} is full, or your quota is ({error}):"
                                   " free space there, or set cache_dir on a larger file system, then run again (the"
                                   " bytes downloaded are kept and the download resumes)") from error
            except DownloadError as error:
                last_problem = str(error)
                log.warning("attempt %d/%d of %s failed: %s", attempt, self.retries, where, error)
                time.sleep(self.backoff_s * attempt)
                continue
            elapsed = max(time.monotonic() - started, 1e-9)
            log.info("%s: %.1f MB (%.1f MB moved in %d requests, %.1f MB/s; %.1f MB were on disk already)", where,
                     result.size / 1e6, result.bytes_moved / 1e6, result.requests, result.bytes_moved / 1e6 / elapsed,
                     result.resumed_bytes / 1e6)
            if result.blake2b == entry.file_hash:
                os.replace(partial, path)
                self.transfers[path] = result
                return
            last_problem = f"BLAKE2b mismatch: manifest says {entry.file_hash}, the file downloaded has {result.blake2b}"
            log.warning("attempt %d/%d of %s: %s", attempt, self.retries, where, last_problem)
            discard_partial(partial)
        raise DownloadError(f"{where} ({entry.url}) failed after {self.retries} attempts: {last_problem}")

    # ----- verification stamps (ours) -----

    def _stamp_path(self, real: Path) -> Path:
        return self.cache_dir / STAMP_DIR / f"{real.relative_to(self.cache_dir.resolve())}.json"

    def _read_stamp(self, real: Path) -> dict | None:
        try:
            return json.loads(self._stamp_path(real).read_text())
        except (FileNotFoundError, ValueError):  # none yet, or unreadable: hash the file again
            return None

    def _stamp(self, path: Path, file_hash: str) -> None:
        real = path.resolve()
        atomic_write_bytes(self._stamp_path(real), json.dumps({"file_hash": file_hash, **_fingerprint(real)}).encode())

    def _lock_path(self, file_hash: str) -> Path:
        lock = self.cache_dir / LOCK_DIR / f"{file_hash[:40]}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        return lock

    # ----- AllenSDK's download list (_downloaded_data.json) -----

    def _downloaded_data(self) -> dict[str, str]:
        if not self.downloaded_data_path.exists():
            return {}
        try:
            return json.loads(self.downloaded_data_path.read_text())
        except json.JSONDecodeError as error:
            raise DownloadError(
                f"{self.downloaded_data_path} is not valid JSON ({error}); delete it and the cache re-verifies its files"
            ) from error

    def _update_downloaded_data(self, change) -> None:
        with FileLock(self.cache_dir / LOCK_DIR / "downloaded_data.lock"):
            listed = self._downloaded_data()
            change(listed)
            atomic_write_bytes(self.downloaded_data_path, json.dumps(listed, indent=2, sort_keys=True).encode())

    # AllenSDK lists the resolved path: a link made for a later manifest version lists the file it points at.
    def _add_to_downloaded_data(self, path: Path, file_hash: str) -> None:
        self._update_downloaded_data(lambda listed: listed.__setitem__(str(path.resolve()), file_hash))

    def _remove_from_downloaded_data(self, path: Path) -> None:
        self._update_downloaded_data(lambda listed: listed.pop(str(path.resolve()), None))


