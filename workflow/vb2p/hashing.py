"""BLAKE2b file hashes, the hash the release manifests use (64-byte digest, lowercase hex)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 8 * 1024 * 1024


def new_hasher() -> "hashlib._Hash":
    return hashlib.blake2b()


def file_blake2b(path: str | Path) -> str:
    hasher = new_hasher()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            hasher.update(block)
    return hasher.hexdigest()
