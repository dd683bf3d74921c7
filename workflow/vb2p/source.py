"""Where a release is read from: the public S3 bucket (or any S3-compatible server), or a local mirror directory.

One interface, two implementations. Both stream a file's bytes from an offset (so an interrupted download resumes) and
serve the version a manifest pins: S3 by its version id; a local mirror from .versions/<version_id>/<key> when it kept
that earlier version there (the demo generator does), otherwise from the current file. The manifest's BLAKE2b guards
the content either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from vb2p import layout
from vb2p.errors import ConfigError, DownloadError, ManifestError
from vb2p.manifest import safe_relative_path

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
    """Anonymous (unsigned) reads, as the public bucket allows; endpoint_url redirects to a compatible server."""

    def __init__(self, location: ReleaseLocation):
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        self.location = location
        self._client = boto3.client(
            "s3",
            region_name=location.region,
            endpoint_url=location.endpoint_url,
            config=Config(
                signature_version=UNSIGNED,
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=20,
                read_timeout=120,
            ),
        )

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
        paginator = self._client.get_paginator("list_objects_v2")
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
            f"reading s3://{self.location.bucket}/{key}", self._client.get_object, Bucket=self.location.bucket, Key=key
        )
        return response["Body"].read()

    def stream(self, key: str, version_id: str, offset: int = 0) -> Iterator[bytes]:
        """The object's bytes from offset on, pinned to version_id."""
        from botocore.exceptions import BotoCoreError

        kwargs = {"Bucket": self.location.bucket, "Key": key, "VersionId": version_id}
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        response = self._call(f"fetching {self.describe(key, version_id)}", self._client.get_object, **kwargs)
        try:
            yield from response["Body"].iter_chunks(STREAM_CHUNK)
        except BotoCoreError as error:
            raise DownloadError(f"reading {self.describe(key, version_id)}: {error}") from error

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

    def stream(self, key: str, version_id: str, offset: int = 0) -> Iterator[bytes]:
        path = self._path(key)
        relative = path.relative_to(self.root)
        earlier = self.root / VERSIONS_DIR / safe_relative_path(version_id, f"version id of {key}") / relative
        if earlier.is_file():
            path = earlier
        if not path.is_file():
            raise DownloadError(f"{path} (listed in the manifest as {key}) does not exist in the local mirror")
        with open(path, "rb") as handle:
            handle.seek(offset)
            while block := handle.read(STREAM_CHUNK):
                yield block

    def describe(self, key: str, version_id: str | None = None) -> str:
        return str(self._path(key))


def open_source(location: ReleaseLocation) -> S3Source | LocalSource:
    return S3Source(location) if location.kind == "s3" else LocalSource(location)
