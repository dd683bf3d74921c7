"""The release as the workflow sees it: a verified cache built from the configured source."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from vb2p import layout
from vb2p.cache import ReleaseCache
from vb2p.errors import ManifestError
from vb2p.manifest import Manifest, parse_manifest
from vb2p.source import open_source, parse_release_url
from vb2p.tables import load_tables


def release_cache(config: dict) -> ReleaseCache:
    release = config["release"]
    location = parse_release_url(release["url"], release["region"], release["endpoint_url"])
    return ReleaseCache(config["cache_dir"], open_source(location), retries=config["download"]["retries"])


def sync_metadata(config: dict, record_path: str | Path) -> dict:
    """Resolve the manifest, fetch the four metadata tables, and write a record naming what was synced."""
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
    record_path = Path(record_path)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = record_path.with_name(f".{record_path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(temporary, record_path)
    return record


def read_record(record_path: str | Path) -> dict:
    path = Path(record_path)
    if not path.exists():
        raise ManifestError(f"sync record {path} does not exist: run the sync step (`vb2p sync`) first")
    return json.loads(path.read_text())


def record_manifest(record: dict) -> Manifest:
    path = Path(record["manifest_path"])
    if not path.exists():
        raise ManifestError(f"{path} (named by the sync record) is gone; re-run the sync step")
    return parse_manifest(path.read_bytes(), record["manifest_name"])


def record_tables(record: dict) -> dict[str, pd.DataFrame]:
    return load_tables(record["tables"])
