"""The release as the workflow sees it: a verified cache built from the configured source."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vb2p import layout
from vb2p.cache import ReleaseCache
from vb2p.errors import ManifestError
from vb2p.files import atomic_write_bytes
from vb2p.manifest import FileEntry, Manifest
from vb2p.remote import MiB
from vb2p.source import open_source, parse_release_url
from vb2p.tables import load_tables


def release_cache(config: dict) -> ReleaseCache:
    release = config["release"]
    download = config["download"]
    location = parse_release_url(release["url"], release["region"], release["endpoint_url"])
    source = open_source(location, concurrency=download["concurrency"], part_bytes=download["part_mb"] * MiB)
    return ReleaseCache(config["cache_dir"], source, retries=download["retries"])


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


def experiment_entry(cache: ReleaseCache, manifest_version: str,
                     ophys_experiment_id: int) -> tuple[Manifest, FileEntry]:
    """The manifest (cached by the sync step: no network) and an experiment's entry in it."""
    manifest = cache.resolve_manifest(manifest_version)
    return manifest, manifest.experiment_entry(ophys_experiment_id)


def experiment_file(config: dict, manifest_version: str, ophys_experiment_id: int) -> tuple[Path, FileEntry, str]:
    """The checked local copy of an experiment's NWB file (fetched when missing or when it no longer matches its
    hash), its manifest entry and the manifest version. Needs no network while the cached copy checks out."""
    cache = release_cache(config)
    manifest, entry = experiment_entry(cache, manifest_version, ophys_experiment_id)
    return cache.fetch(manifest, entry), entry, manifest.manifest_version


def download_experiment(config: dict, record: dict, ophys_experiment_id: int, out_path: str | Path) -> dict:
    """Make one experiment's NWB file available and write a receipt of what was done.

    download.mode whole: the file is fetched into the verified cache (the receipt says what the transfer moved).
    download.mode datasets: nothing is downloaded here; the object's size and ETag are read (extraction reads its
    datasets by byte ranges, pinned to this version, this ETag and this size).
    """
    cache = release_cache(config)
    manifest, entry = experiment_entry(cache, record["manifest_version"], ophys_experiment_id)
    receipt = {
        "ophys_experiment_id": int(ophys_experiment_id),
        "mode": config["download"]["mode"],
        "url": entry.url,
        "version_id": entry.version_id,
        "file_hash": entry.file_hash,
        "manifest_version": manifest.manifest_version,
    }
    if receipt["mode"] == "datasets":
        pinned = cache.source.pin(entry.key, entry.version_id)
        receipt.update(bytes=pinned.size, etag=pinned.etag)
    else:
        path = cache.fetch(manifest, entry)
        transfer = cache.transfers.get(path)  # None: the copy in the cache checked out, nothing was fetched
        receipt.update(
            path=str(path),
            bytes=path.stat().st_size,
            moved={"requests": transfer.requests if transfer else 0,
                   "bytes_moved": transfer.bytes_moved if transfer else 0},
        )
    _write_json(out_path, receipt)
    return receipt


def _write_json(path: str | Path, content: dict) -> None:
    atomic_write_bytes(path, (json.dumps(content, indent=2) + "\n").encode())
