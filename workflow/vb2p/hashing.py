"""BLAKE2b file hashes, the hash the release manifests use (64-byte digest, lowercase hex), and atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK_BYTES = 8 * 1024 * 1024


def new_hasher() -> "hashlib._Hash":
    return hashlib.blake2b()


def update_from_file(hasher, path: str | Path) -> None:
    """Feed a file's bytes to a hasher, a block at a time."""
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            hasher.update(block)


def file_blake2b(path: str | Path) -> str:
    hasher = new_hasher()
    update_from_file(hasher, path)
    return hasher.hexdigest()


def atomic_write_bytes(path: str | Path, content: bytes) -> None:
    """Write through a temporary name in the same directory, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)
