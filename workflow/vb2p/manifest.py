"""Parse and validate release manifests (layout document section 2), and map their URLs to keys and cache paths.

A key or URL from a manifest never decides where we write: every relative path is checked to stay inside its root.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import jsonschema
import yaml

from vb2p import layout
from vb2p.errors import ManifestError

SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
MANIFEST_NAME_RE = re.compile(r"_project_manifest_v(\d+\.\d+\.\d+)\.json$")
HOST_RE = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\.s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com$")
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "manifest.schema.yaml"
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


def _describe(error: jsonschema.ValidationError, name: str) -> str:
    where = "/".join(str(part) for part in error.absolute_path)
    at = f" {where}" if where else ""
    if error.validator == "required":
        missing = [key for key in error.validator_value if key not in error.instance]
        if error.absolute_path and error.absolute_path[-1] == "metadata_files":
            return f"manifest {name}: metadata_files must hold exactly {list(layout.METADATA_TABLES)}; lacks {missing}"
        return f"manifest {name}{at} lacks required keys {missing}"
    if error.validator == "additionalProperties" and error.absolute_path and error.absolute_path[-1] == "metadata_files":
        return f"manifest {name}: metadata_files must hold exactly {list(layout.METADATA_TABLES)}; got {sorted(error.instance)}"
    if error.validator == "propertyNames":
        return f"manifest {name}: data_files key {error.instance!r} is not a decimal integer file_id"
    if error.validator == "pattern":
        return f"manifest {name}{at}: {error.instance[:40]!r} is not {error.schema.get('description', error.schema['pattern'])}"
    return f"manifest {name}{at}: {error.message}"


def _validate_structure(raw, name: str) -> None:
    """The manifest's structure against workflow/schemas/manifest.schema.yaml; every problem named by its key."""
    validator = jsonschema.Draft7Validator(_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ManifestError("; ".join(_describe(e, name) for e in errors[:10]))


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _file_entry(value: dict, what: str, expected_bucket: str | None) -> FileEntry:
    """A structurally valid file entry (url, version_id, file_hash) with its URL parsed and its bucket checked."""
    bucket, key = parse_url(value["url"], what)
    if expected_bucket is not None and bucket != expected_bucket:
        raise ManifestError(f"{what}: URL {value['url']!r} points at bucket {bucket!r}; this release is in {expected_bucket!r}")
    return FileEntry(url=value["url"], version_id=value["version_id"], file_hash=value["file_hash"], bucket=bucket, key=key)


def parse_manifest(content: bytes | str, name: str, expected_bucket: str | None = None) -> Manifest:
    """Validate a manifest's JSON; every problem is reported with the manifest's name and the offending key."""
    try:
        raw = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"manifest {name} is not valid JSON: {error}") from error
    _validate_structure(raw, name)
    version = raw["manifest_version"]
    low, high = SUPPORTED
    if not low <= parse_semver(version) < high:
        raise ManifestError(
            f"manifest {name}: version {version} is not supported (this workflow reads [1.0.0, 2.0.0), as AllenSDK 2.16 "
            "does); pin release.manifest_version to a version in that range"
        )
    named = version_of_manifest_name(name)
    if named is not None and named != version:
        raise ManifestError(f"manifest {name} says manifest_version {version}, its name says {named}")
    return Manifest(
        name=name,
        project_name=raw["project_name"],
        manifest_version=version,
        metadata_files={
            table: _file_entry(raw["metadata_files"][table], f"manifest {name} metadata_files.{table}", expected_bucket)
            for table in layout.METADATA_TABLES
        },
        data_files={
            int(file_id): _file_entry(value, f"manifest {name} data_files.{file_id}", expected_bucket)
            for file_id, value in raw["data_files"].items()
        },
    )
