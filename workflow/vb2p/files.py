"""File hashes (BLAKE2b, the hash the release manifests use: 64-byte digest, lowercase hex) and atomic writes."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

HASH_NAME = "blake2b"


def blake2b_of(path: str | Path):
    """The BLAKE2b hash object of a file's bytes; it can be updated further (a resumed download continues it)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, HASH_NAME)


def file_blake2b(path: str | Path) -> str:
    return blake2b_of(path).hexdigest()


def sampled_blake2b(path: str | Path, blocks: int = 16, block_bytes: int = 4096) -> str:
    """BLAKE2b of `blocks` blocks spread evenly over the file, first and last included: a fingerprint read in
    microseconds that changes when an edit or a truncation touches any of them (not a substitute for the full hash)."""
    size = os.path.getsize(path)
    hasher = hashlib.new(HASH_NAME)
    with open(path, "rb") as handle:
        for position in sorted({round(i * max(size - block_bytes, 0) / max(blocks - 1, 1)) for i in range(blocks)}):
            handle.seek(position)
            hasher.update(handle.read(block_bytes))
    return hasher.hexdigest()


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call write(temporary) for a name in the same directory, then rename: readers never see a half-written file,
    and a writer killed half-way leaves only the temporary name behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")  # keeps the suffix readers check
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, content: bytes) -> None:
    atomic_write(path, lambda temporary: temporary.write_bytes(content))


def partial_directory(final: str | Path) -> Path:
    """Where a directory (a Zarr store) is written before it is complete: a hidden name beside its final one."""
    final = Path(final)
    return final.with_name(f".{final.name}.partial")


def replace_directory(partial: str | Path, final: str | Path) -> None:
    """Put a complete directory at its final name, replacing an older one."""
    if Path(final).exists():
        shutil.rmtree(final)
    os.replace(partial, final)


def link_or_copy(source: str | Path, destination: str | Path) -> None:
    """A hard link to a file that is never written again (no bytes copied or stored twice); a copy where the two
    paths are on different file systems or the file system has no hard links."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)
