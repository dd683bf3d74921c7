"""Where a release is read from: the public S3 bucket (or any S3-compatible server), or a local mirror directory.

One interface, two implementations. Both stream a file's bytes from an offset (so an interrupted download resumes) and
serve the version a manifest pins: S3 by its version id; a local mirror from .versions/<version_id>/<key> when it kept
that earlier version there (the demo generator does), otherwise from the current file. The manifest's BLAKE2b guards
the content either way.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from vb2p import layout
from vb2p.errors import ConfigError, DownloadError, ManifestError
from vb2p.files import HASH_NAME, blake2b_of
from vb2p.manifest import safe_relative_path
from vb2p.remote import MiB, PinnedObject, anonymous_client, open_remote, pin
from vb2p.transfer import DownloadResult, download_object, require_free_space

log = logging.getLogger(__name__)

STREAM_CHUNK = 4 * 1024 * 1024
VERSIONS_DIR = ".versions"


@dataclass(frozen=True)
class ReleaseLocation:
    """A parsed release.url: the bucket and key prefix the manifests name, and where requests go."""

    kind: str  # "s3" or "local"
    bucket: str
    prefix: str  # key prefix of the release inside the bucket, e.g. visual-behavior-ophys
    root: Path | None = None  # local mirror directory (plays the role of s3://<bucket>/<prefix>)
    region: str = layout.REGION
    endpoint_url: str | None = None

    def describe(self) -> str:
        if self.kind == "local":
            return str(self.root)
        where = f" via {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"


def parse_release_url(url: str, region: str = layout.REGION, endpoint_url: str | None = None) -> ReleaseLocation:
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        prefix = parsed.path.strip("/")
        if not parsed.netloc or not prefix:
            raise ConfigError(
                f"release.url {url!r}: expected s3://<bucket>/<prefix> (e.g. {layout.DEFAULT_RELEASE_URL})"
            )
        return ReleaseLocation("s3", parsed.netloc, prefix, region=region, endpoint_url=endpoint_url)
    if parsed.scheme in ("file", ""):
        root = Path(parsed.path if parsed.scheme == "file" else url).expanduser()
        return ReleaseLocation("local", layout.BUCKET, layout.RELEASE_PREFIX, root=root, region=region)
    raise ConfigError(f"release.url {url!r}: use s3://bucket/prefix, file:///path or a local directory path")


class S3Source:
    """Anonymous (unsigned) reads, as the public bucket allows; endpoint_url redirects to a compatible server.
    A file is downloaded in `concurrency` parallel ranged parts of `part_bytes` (vb2p.transfer)."""

    def __init__(self, location: ReleaseLocation, concurrency: int = 8, part_bytes: int = 16 * MiB):
        self.location = location
        self.concurrency, self.part_bytes = concurrency, part_bytes
        self.client = anonymous_client(location.endpoint_url, location.region,
                                       max_pool_connections=max(10, concurrency))

    def _call(self, what: str, function, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return function(**kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "?")
            raise DownloadError(f"{what}: S3 answered {code} ({error})") from error
        except BotoCoreError as error:
            raise DownloadError(f"{what}: {error} (is the network or release.endpoint_url reachable?)") from error

    def list_manifest_names(self) -> list[str]:
        prefix = f"{self.location.prefix}/{layout.MANIFEST_DIR}/"
        names = []
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(
            f"listing s3://{self.location.bucket}/{prefix}",
            lambda **kw: list(paginator.paginate(**kw)),
            Bucket=self.location.bucket,
            Prefix=prefix,
        )
        for page in pages:
            names.extend(item["Key"][len(prefix) :] for item in page.get("Contents", []))
        return [name for name in names if "/" not in name]

    def read_manifest(self, name: str) -> bytes:
        key = f"{self.location.prefix}/{layout.MANIFEST_DIR}/{name}"
        response = self._call(
            f"reading s3://{self.location.bucket}/{key}", self.client.get_object, Bucket=self.location.bucket, Key=key
        )
        return response["Body"].read()

    def download(self, key: str, version_id: str, partial: Path) -> DownloadResult:
        """The pinned object into partial, in parallel parts, resuming the parts an interrupted run finished."""
        return download_object(self.client, self.location.bucket, key, version_id, partial,
                               concurrency=self.concurrency, part_bytes=self.part_bytes)

    def open(self, key: str, version_id: str, expected_size: int | None = None, expected_etag: str | None = None):
        """The pinned object as a read-only file h5py opens, fetching only the byte ranges read (vb2p.remote)."""
        return open_remote(self.client, self.location.bucket, key, version_id, expected_size, expected_etag,
                           concurrency=self.concurrency)

    def pin(self, key: str, version_id: str) -> PinnedObject:
        """The pinned object's size and ETag, as the bucket has them now."""
        return pin(self.client, self.location.bucket, key, version_id)

    def describe(self, key: str, version_id: str | None = None) -> str:
        version = f"?versionId={version_id}" if version_id else ""
        return f"s3://{self.location.bucket}/{key}{version}"


class LocalSource:
    """A directory mirroring s3://<bucket>/<prefix>: manifests/, project_metadata/, behavior_ophys_experiments/...

    Like a versioned bucket it may keep earlier versions of changed files, under .versions/<version_id>/<key>;
    a pinned version found there is served, otherwise the current file (its hash is checked either way).
    """

    def __init__(self, location: ReleaseLocation):
        self.location = location
        self.root = location.root

    def _path(self, key: str) -> Path:
        relative = key.removeprefix(self.location.prefix + "/")
        if relative == key:
            raise ManifestError(f"key {key!r} is not under the release prefix {self.location.prefix!r}")
        return self.root / safe_relative_path(relative, f"key {key!r}")

    def list_manifest_names(self) -> list[str]:
        directory = self.root / layout.MANIFEST_DIR
        if not directory.is_dir():
            raise DownloadError(
                f"{directory} does not exist: release.url must be the directory holding manifests/ "
                "(the one that plays the role of s3://visual-behavior-ophys-data/visual-behavior-ophys)"
            )
        return sorted(os.listdir(directory))

    def read_manifest(self, name: str) -> bytes:
        path = self.root / layout.MANIFEST_DIR / safe_relative_path(name, "manifest name")
        if not path.is_file():
            raise DownloadError(f"manifest {path} does not exist")
        return path.read_bytes()

    def download(self, key: str, version_id: str, partial: Path) -> DownloadResult:
        """Copy the file into partial, appending to the bytes an interrupted run left there; BLAKE2b as it goes."""
        offset = partial.stat().st_size if partial.exists() else 0
        if offset:
            log.info("resuming %s at byte %d", self.describe(key, version_id), offset)
        require_free_space(partial.parent, self._version_path(key, version_id).stat().st_size - offset,
                           self.describe(key, version_id))
        hasher = blake2b_of(partial) if offset else hashlib.new(HASH_NAME)  # continues over the bytes already there
        copied = 0
        with open(partial, "ab") as out:
            for block in self.stream(key, version_id, offset):
                out.write(block)
                hasher.update(block)
                copied += len(block)
            out.flush()
            os.fsync(out.fileno())
        return DownloadResult(hasher.hexdigest(), offset + copied, requests=0, bytes_moved=copied,
                              resumed_bytes=offset)

    def _version_path(self, key: str, version_id: str) -> Path:
        """The file of a pinned version: the one kept under .versions/ when there is one, else the current file."""
        path = self._path(key)
        relative = path.relative_to(self.root)
        earlier = self.root / VERSIONS_DIR / safe_relative_path(version_id, f"version id of {key}") / relative
        if earlier.is_file():
            path = earlier
        if not path.is_file():
            raise DownloadError(f"{path} (listed in the manifest as {key}) does not exist in the local mirror")
        return path

    def stream(self, key: str, version_id: str, offset: int = 0) -> Iterator[bytes]:
        """The file's bytes from offset on."""
        with open(self._version_path(key, version_id), "rb") as handle:
            handle.seek(offset)
            while block := handle.read(STREAM_CHUNK):
                yield block

    def describe(self, key: str, version_id: str | None = None) -> str:
        return str(self._path(key))


def open_source(location: ReleaseLocation, concurrency: int = 8, part_bytes: int = 16 * MiB) -> S3Source | LocalSource:
    return S3Source(location, concurrency, part_bytes) if location.kind == "s3" else LocalSource(location)
