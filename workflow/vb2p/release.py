"""The release as the workflow sees it: a verified cache built from the configured source."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vb2p import layout
from vb2p.cache import ReleaseCache
from vb2p.errors import ManifestError
from vb2p.manifest import FileEntry
from vb2p.files import atomic_write_bytes
from vb2p.source import open_source, parse_release_url
from vb2p.tables import load_tables


def release_cache(config: dict) -> ReleaseCache:
    release = config["release"]
    location = parse_release_url(release["url"], release["region"], release["endpoint_url"])
    return ReleaseCache(config["cache_dir"], open_source(location), retries=config["download"]["retries"])


def sync_metadata(config: dict, record_path: str | Path) -> dict:
    """Resolve the manifest, fetch the four metadata tables, and write the release record: what was synced."""
    cache = release_cache(config)
    manifest = cache.resolve_manifest(config["release"]["manifest_version"])
    tables = {table: str(cache.fetch(manifest, manifest.metadata_files[table])) for table in layout.METADATA_TABLES}
    record = {
        "source": cache.source.location.describe(),
        "cache_dir": str(cache.cache_dir),
        "manifest_name": manifest.name,
        "manifest_version": manifest.manifest_version,
        "manifest_path": str(cache.cache_dir / manifest.name),
        "tables": tables,
    }
    _write_json(record_path, record)
    return record


def read_record(record_path: str | Path) -> dict:
    path = Path(record_path)
    if not path.exists():
        raise ManifestError(f"release record {path} does not exist: run the sync step (`vb2p sync`) first")
    return json.loads(path.read_text())


def record_tables(record: dict) -> dict[str, pd.DataFrame]:
    return load_tables(record["tables"])


def experiment_file(config: dict, manifest_version: str, ophys_experiment_id: int) -> tuple[Path, FileEntry, str]:
    """The checked local copy of an experiment's NWB file (fetched when missing or when it no longer matches its
    hash), its manifest entry and the manifest version. Needs no network while the cached copy checks out."""
    cache = release_cache(config)
    manifest = cache.resolve_manifest(manifest_version)  # cached by the sync step: no network
    entry = manifest.experiment_entry(ophys_experiment_id)
    return cache.fetch(manifest, entry), entry, manifest.manifest_version


def download_experiment(config: dict, record: dict, ophys_experiment_id: int, out_path: str | Path) -> dict:
    """Fetch one experiment's NWB file into the verified cache; write a receipt of what was fetched."""
    path, entry, manifest_version = experiment_file(config, record["manifest_version"], ophys_experiment_id)
    receipt = {
        "ophys_experiment_id": int(ophys_experiment_id),
        "path": str(path),
        "url": entry.url,
        "version_id": entry.version_id,
        "file_hash": entry.file_hash,
        "manifest_version": manifest_version,
        "bytes": path.stat().st_size,
    }
    _write_json(out_path, receipt)
    return receipt


def _write_json(path: str | Path, content: dict) -> None:
    atomic_write_bytes(path, (json.dumps(content, indent=2) + "\n").encode())
