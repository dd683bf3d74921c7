"""Move an HDF5 dataset's deflate-compressed chunks into a sharded Zarr array as they are, without inflating them.

The release's NWB files hold detected events deflate-compressed (AllenSDK's writer: gzip level 4 in h5py's chunks of
a few thousand frames x a few ROIs). Inflating them alone costs most of an extraction (0.5 s at 140,000 frames x 200
ROIs, against 0.6 s for the rest of it), so their compressed chunks are moved instead. A Blosc frame is a header and
blocks, each block one zlib stream (with Blosc's zlib compressor and no splitting): so the HDF5 chunks of a column of
chunks stacked in time, whose bytes follow each other in C order, become the blocks of one frame, that is one Zarr
chunk of many HDF5 chunks; the Zarr chunks across all columns of that band of frames are packed into one shard (the
Zarr v3 sharding codec: chunks, then an index of (offset, length) per chunk and the index's CRC-32C). Only codecs of the
Zarr v3 specification are used (sharding, bytes, blosc, crc32c): any Zarr v3 reader and xarray open the array, and
its values are the file's, bit for bit.

A block whose stream Blosc would misread (one exactly the block's size: Blosc copies such a block as stored bytes),
or that HDF5 stored with its filter skipped, is kept as its plain bytes; HDF5 chunks the file never wrote are blocks of
the fill value. A dataset whose chunks are not plain deflate of little-endian numbers is not movable: vb2p.task writes
it through zarr in the same array layout.

Streams are not inflated here, so a damaged one would show only when the events are read: what guards them is the
file's BLAKE2b check against the release before extraction (and, for ranged reads, the version id and ETag pinned on
every request), as for every other byte the store holds.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import h5py
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

# c-blosc 1.x frame header: version, compressor format version, flags, typesize, nbytes, blocksize, cbytes; then the
# start of every block, and every block as its length and its stream.
BLOSC_HEADER = struct.Struct("<BBBBIII")
BLOSC_VERSION_FORMAT = 2
BLOSC_ZLIB_VERSION_FORMAT = 1
BLOSC_DONT_SPLIT = 0x10  # a block is one stream, not one per byte of the type
BLOSC_ZLIB_FORMAT = 3  # the compressor, in bits 5-7 of the flags
DEFLATE_LEVEL = 4  # AllenSDK's (h5py's gzip default)
# c-blosc 1.x reads frames of less than 2 GiB and blocks up to ~680 MiB: far above h5py's chunks (<= 1 MiB) and a band.
BLOSC_MAX_FRAME = 2**31 - 2**20
BLOSC_MAX_BLOCK = 2**28
NO_CHUNK = np.iinfo(np.uint64).max  # the shard index's "chunk not stored": read as the fill value


def movable(dataset: h5py.Dataset) -> bool:
    """True when the dataset's chunks can be moved as they are: 2-D, chunked, little-endian numbers, deflate the only
    filter (no shuffle, checksum or scale-offset)."""
    if dataset.ndim != 2 or dataset.chunks is None or dataset.dtype.kind not in "fiu":
        return False
    if dataset.chunks[0] * dataset.chunks[1] * dataset.dtype.itemsize > BLOSC_MAX_BLOCK:
        return False
    if not dataset.dtype.str.startswith("<"):
        return False
    plist = dataset.id.get_create_plist()
    return plist.get_nfilters() == 1 and plist.get_filter(0)[0] == h5py.h5z.FILTER_DEFLATE


def sharded_array(group: zarr.Group, name: str, shape: tuple[int, int], dtype, block: tuple[int, int],
                  band_bytes: int, fill_value, dimension_names: list[str], attributes: dict) -> zarr.Array:
    """A 2-D array compressed with Blosc's zlib, in shards of one band of frames across all columns, each band at
    most band_bytes uncompressed (at least one block of rows); its chunks are `block` stacked in time over the band,
    so that the HDF5 chunks of that shape can be moved into it (move_chunks)."""
    itemsize = np.dtype(dtype).itemsize
    shard_columns = math.ceil(shape[1] / block[1]) * block[1]
    block_bytes = block[0] * block[1] * itemsize
    blocks_per_band = max(1, min(band_bytes // (itemsize * shard_columns * block[0]), math.ceil(shape[0] / block[0]),
                                 BLOSC_MAX_FRAME // block_bytes))
    chunks = (blocks_per_band * block[0], block[1])
    codec = BloscCodec(cname="zlib", clevel=DEFLATE_LEVEL, shuffle="noshuffle", typesize=itemsize)
    serializer = ShardingCodec(chunk_shape=chunks, codecs=[BytesCodec(endian="little"), codec],
                               index_codecs=[BytesCodec(endian="little"), Crc32cCodec()], index_location="end")
    return group.create_array(name, shape=shape, dtype=dtype, chunks=(chunks[0], shard_columns),
                              serializer=serializer, compressors=None, fill_value=fill_value,
                              dimension_names=dimension_names, attributes=attributes)


def blosc_frame(blocks: list[bytes], blocksize: int) -> bytes:
    """The Blosc frame of len(blocks) blocks of blocksize bytes each, every one a zlib stream (or, when exactly
    blocksize long, the block's bytes as they are). The header's typesize is 1: without shuffling it only says how a
    block splits into streams, and with 1 even Blosc readers older than the don't-split flag read one stream."""
    starts, end = [], BLOSC_HEADER.size + 4 * len(blocks)
    for block in blocks:
        starts.append(end)
        end += 4 + len(block)
    header = BLOSC_HEADER.pack(BLOSC_VERSION_FORMAT, BLOSC_ZLIB_VERSION_FORMAT, BLOSC_DONT_SPLIT | BLOSC_ZLIB_FORMAT << 5,
                               1, blocksize * len(blocks), blocksize, end)
    body = b"".join(struct.pack("<i", len(block)) + block for block in blocks)
    return header + struct.pack(f"<{len(blocks)}i", *starts) + body


def shard(frames: dict[tuple[int, ...], bytes], chunks_per_shard: tuple[int, ...]) -> bytes:
    """A shard of the sharding codec (index at the end, coded as little-endian uint64 + CRC-32C)."""
    index = np.full((*chunks_per_shard, 2), NO_CHUNK, dtype="<u8")
    offset = 0
    for coords, frame in frames.items():
        index[coords] = (offset, len(frame))
        offset += len(frame)
    index_bytes = index.tobytes()
    return b"".join(frames.values()) + index_bytes + struct.pack("<I", google_crc32c.value(index_bytes))


def chunk_reader(dataset: h5py.Dataset) -> Callable[[h5py.h5d.StoreInfo], tuple[int, bytes]]:
    """(filter mask, stored bytes) of a chunk chunk_iter listed: read at its offset in the file with one pread when
    the file is a local file (h5py's read_direct_chunk looks each chunk up in the B-tree again: 5x slower), through
    h5py otherwise (a file object: vb2p.remote's ranged reads)."""
    if dataset.file.driver != "sec2":
        return lambda info: dataset.id.read_direct_chunk(info.chunk_offset)
    descriptor = dataset.file.id.get_vfd_handle()

    def read(info: h5py.h5d.StoreInfo) -> tuple[int, bytes]:
        data = os.pread(descriptor, info.size, info.byte_offset)
        if len(data) != info.size:
            raise OSError(f"{dataset.file.filename}: {dataset.name}: a chunk ends past the end of the file (truncated?)")
        return info.filter_mask, data

    return read


def _block(read, info: h5py.h5d.StoreInfo | None, blocksize: int, fill: bytes) -> bytes:
    """One HDF5 chunk (None: never written) as a Blosc block: its zlib stream, or its bytes when the stream cannot
    stand as it is."""
    if info is None:
        return fill
    filter_mask, data = read(info)
    if filter_mask or len(data) != blocksize:  # its bytes when deflate was skipped (filter mask), else its stream
        return data
    try:  # a stream as long as the block, which Blosc would copy as it is
        return zlib.decompress(data)
    except zlib.error:  # an edge chunk HDF5 stored unfiltered (H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS): its bytes
        return data


def move_chunks(dataset: h5py.Dataset, array: zarr.Array, array_dir: Path) -> None:
    """Fill `array` (made by sharded_array with the dataset's shape and dtype and its chunks as `block`, stored in
    array_dir) with the dataset's compressed chunks, shard by shard."""
    block = dataset.chunks
    if not (movable(dataset) and array.shape == dataset.shape and array.dtype == dataset.dtype
            and array.chunks[1] == block[1] and array.chunks[0] % block[0] == 0):
        raise ValueError(f"{dataset.name}: chunks {block} of {dataset.dtype} cannot be moved into {array.chunks}")
    chunks, shards = array.chunks, array.shards
    blocksize = block[0] * block[1] * dataset.dtype.itemsize
    fill_bytes = np.full(block, dataset.fillvalue, dtype=dataset.dtype).tobytes()
    fill = zlib.compress(fill_bytes, DEFLATE_LEVEL)
    fill = fill if len(fill) != blocksize else fill_bytes
    stored: dict[tuple[int, ...], h5py.h5d.StoreInfo] = {}
    dataset.id.chunk_iter(lambda info: stored.update({tuple(info.chunk_offset): info}))  # None: go on iterating
    read = chunk_reader(dataset)
    per_shard = (shards[0] // chunks[0], shards[1] // chunks[1])
    for band in range(math.ceil(dataset.shape[0] / shards[0])):
        frames = {}
        for row, column in itertools.product(*map(range, per_shard)):
            first = band * shards[0] + row * chunks[0]
            infos = [stored.get((first + k * block[0], column * block[1])) for k in range(chunks[0] // block[0])]
            if any(infos):  # else the whole chunk is the fill value: not stored
                frames[row, column] = blosc_frame([_block(read, info, blocksize, fill) for info in infos], blocksize)
        if frames:
            path = array_dir / array.metadata.encode_chunk_key((band, 0))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(shard(frames, per_shard))
