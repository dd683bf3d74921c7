"""Parse and validate release manifests (layout document section 2), and map their URLs to keys and cache paths.

A key or URL from a manifest never decides where we write: every relative path is checked to stay inside its root.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlparse

from vb2p import layout
from vb2p.errors import ManifestError

SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
MANIFEST_NAME_RE = re.compile(r"_project_manifest_v(\d+\.\d+\.\d+)\.json$")
# Allen's version ids are 32 characters of [A-Za-z0-9._]; S3 only promises an opaque URL-safe string (other
# S3-compatible servers use UUIDs), so that is what is required.
VERSION_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,1024}$")
HASH_RE = re.compile(r"^[0-9a-f]{128}$")
HOST_RE = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\.s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com$")
# AllenSDK 2.16 reads manifests in [1.0.0, 2.0.0); older ones have another table layout.
SUPPORTED = ((1, 0, 0), (2, 0, 0))


def parse_semver(text: str) -> tuple[int, int, int]:
    match = SEMVER_RE.match(text)
    if not match:
        raise ManifestError(f"{text!r} is not a semantic version X.Y.Z")
    return tuple(int(part) for part in match.groups())


def version_of_manifest_name(name: str) -> str | None:
    match = MANIFEST_NAME_RE.search(name)
    return match.group(1) if match else None


def latest_version(names: list[str]) -> str:
    """The highest semantic version among manifest file names (compared as numbers: 1.10.0 > 1.9.0)."""
    versions = [v for v in (version_of_manifest_name(n) for n in names) if v]
    if not versions:
        raise ManifestError(f"no manifest named *_project_manifest_vX.Y.Z.json among {sorted(names)[:10]}")
    return max(versions, key=parse_semver)


def safe_relative_path(path: str, what: str) -> PurePosixPath:
    """A relative POSIX path that cannot leave the directory it is joined to."""
    pure = PurePosixPath(path)
    if not path or path.startswith("/") or "\\" in path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ManifestError(f"{what}: refusing path {path!r}: it is absolute, empty or climbs out with '..'")
    return pure


@dataclass(frozen=True)
class FileEntry:
    url: str
    version_id: str
    file_hash: str
    bucket: str
    key: str  # the object key in the bucket, e.g. visual-behavior-ophys/project_metadata/x.csv

    @property
    def cache_relative_path(self) -> PurePosixPath:
        """AllenSDK's layout: the URL path without its first component (the release prefix)."""
        return PurePosixPath(*PurePosixPath(self.key).parts[1:])


def parse_url(url: str, what: str) -> tuple[str, str]:
    """(bucket, key) of a manifest URL of the form https://<bucket>.s3.<region>.amazonaws.com/<key>."""
    parsed = urlparse(url)
    match = HOST_RE.match(parsed.netloc or "")
    if parsed.scheme != "https" or not match or parsed.query or parsed.fragment:
        raise ManifestError(f"{what}: URL {url!r} is not of the form https://<bucket>.s3.<region>.amazonaws.com/<key>")
    key = unquote(parsed.path.removeprefix("/"))
    safe_relative_path(key, f"{what} ({url})")
    if len(PurePosixPath(key).parts) < 2:
        raise ManifestError(f"{what}: URL {url!r} has no release prefix in its path")
    return match.group("bucket"), key


@dataclass(frozen=True)
class Manifest:
    name: str  # file name, visual-behavior-ophys_project_manifest_v1.1.0.json
    project_name: str
    manifest_version: str
    metadata_files: dict[str, FileEntry]
    data_files: dict[int, FileEntry]
    raw: dict

    @property
    def cache_subdir(self) -> str:
        return f"{self.project_name}-{self.manifest_version}"

    def entries(self) -> list[FileEntry]:
        return list(self.metadata_files.values()) + list(self.data_files.values())

    def experiment_entry(self, ophys_experiment_id: int) -> FileEntry:
        key_suffix = layout.experiment_key(ophys_experiment_id)
        for entry in self.data_files.values():
            if entry.key.endswith("/" + key_suffix):
                return entry
        raise ManifestError(f"manifest {self.name} lists no file for ophys_experiment_id {ophys_experiment_id}")


def _entry(value, what: str, expected_bucket: str | None) -> FileEntry:
    if not isinstance(value, dict) or set(value) != set(layout.FILE_ENTRY_KEYS):
        raise ManifestError(f"{what}: expected an object with keys url, version_id, file_hash; got {value!r:.200}")
    url, version_id, file_hash = value["url"], value["version_id"], value["file_hash"]
    if not isinstance(url, str) or not isinstance(version_id, str) or not isinstance(file_hash, str):
        raise ManifestError(f"{what}: url, version_id and file_hash must be strings")
    if not VERSION_ID_RE.match(version_id):
        raise ManifestError(f"{what}: version_id {version_id!r} is not an S3 version id (URL-safe characters)")
    if not HASH_RE.match(file_hash):
        raise ManifestError(
            f"{what}: file_hash {file_hash[:20]!r}... is not a BLAKE2b digest (128 lowercase hex characters)"
        )
    bucket, key = parse_url(url, what)
    if expected_bucket is not None and bucket != expected_bucket:
        raise ManifestError(f"{what}: URL {url!r} points at bucket {bucket!r}; this release is in {expected_bucket!r}")
    return FileEntry(url=url, version_id=version_id, file_hash=file_hash, bucket=bucket, key=key)


def parse_manifest(content: bytes | str, name: str, expected_bucket: str | None = None) -> Manifest:
    """Validate a manifest's JSON; every problem is reported with the manifest's name and the offending key."""
    try:
        raw = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"manifest {name} is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ManifestError(f"manifest {name}: expected a JSON object at the top level")
    missing = [key for key in layout.MANIFEST_KEYS if key not in raw]
    if missing:
        raise ManifestError(f"manifest {name} lacks required keys {missing}")
    version = raw["manifest_version"]
    if not isinstance(version, str) or not SEMVER_RE.match(version):
        raise ManifestError(f"manifest {name}: manifest_version {version!r} is not X.Y.Z")
    low, high = SUPPORTED
    if not low <= parse_semver(version) < high:
        raise ManifestError(
            f"manifest {name}: version {version} is not supported (this workflow reads [1.0.0, 2.0.0), as AllenSDK 2.16 "
            "does); pin release.manifest_version to a version in that range"
        )
    named = version_of_manifest_name(name)
    if named is not None and named != version:
        raise ManifestError(f"manifest {name} says manifest_version {version}, its name says {named}")
    if not isinstance(raw["project_name"], str) or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", raw["project_name"]):
        raise ManifestError(f"manifest {name}: project_name {raw['project_name']!r} is not a plain directory name")
    if raw["metadata_file_id_column_name"] != "file_id":
        raise ManifestError(f"manifest {name}: metadata_file_id_column_name must be 'file_id'")
    metadata = raw["metadata_files"]
    if not isinstance(metadata, dict) or set(metadata) != set(layout.METADATA_TABLES):
        got = sorted(metadata) if isinstance(metadata, dict) else type(metadata).__name__
        raise ManifestError(f"manifest {name}: metadata_files must hold exactly {list(layout.METADATA_TABLES)}; got {got}")
    data = raw["data_files"]
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {name}: data_files must be an object keyed by file_id")
    metadata_files = {
        table: _entry(metadata[table], f"manifest {name} metadata_files.{table}", expected_bucket)
        for table in layout.METADATA_TABLES
    }
    data_files = {}
    for file_id, value in data.items():
        if not re.fullmatch(r"-?\d+", file_id) or str(int(file_id)) != file_id:
            raise ManifestError(f"manifest {name}: data_files key {file_id!r} is not a decimal integer file_id")
        data_files[int(file_id)] = _entry(value, f"manifest {name} data_files.{file_id}", expected_bucket)
    return Manifest(
        name=name,
        project_name=str(raw["project_name"]),
        manifest_version=version,
        metadata_files=metadata_files,
        data_files=data_files,
        raw=raw,
    )
