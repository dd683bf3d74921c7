"""vb2p.chunks: an HDF5 dataset's deflate chunks moved into Zarr shards as they are read back bit for bit by zarr and
xarray, through codecs of the Zarr v3 specification only; what cannot be moved is said so."""

from __future__ import annotations

import json
import zlib
from unittest import mock

import h5py
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr

from vb2p import chunks

SHAPE, CHUNKS = (1000, 13), (128, 5)  # edge chunks along both dimensions


def sparse_events(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.exponential(0.3, shape)
    values[rng.random(shape) < 0.95] = 0.0
    return values


def dataset_file(path, values, **options) -> h5py.Dataset:
    f = h5py.File(path, "w")
    return f.create_dataset("events", data=values, **{"chunks": CHUNKS, "compression": "gzip", **options})


def moved(tmp_path, dataset, band_bytes=50_000) -> zarr.Array:
    group = zarr.open_group(tmp_path / "store.zarr", mode="w", zarr_format=3)
    array = chunks.sharded_array(group, "events", dataset.shape, dataset.dtype, dataset.chunks, band_bytes,
                                 dataset.fillvalue, ["time", "cell"], {})
    chunks.move_chunks(dataset, array, tmp_path / "store.zarr" / "events")
    return zarr.open_array(tmp_path / "store.zarr" / "events", mode="r")


def test_moved_chunks_read_back_bit_for_bit_in_several_shards(tmp_path):
    values = sparse_events(SHAPE)
    array = moved(tmp_path, dataset_file(tmp_path / "a.h5", values))
    # Zarr chunks of 3 HDF5 chunks stacked in time (3 x 128 x 15 columns x 8 bytes <= 50,000), a band per shard: 3
    # shards, the last one past the end of the frames (its missing HDF5 chunk is a block of the fill value).
    assert array.chunks == (384, 5) and array.shards == (384, 15)
    assert sorted(p.name for p in (tmp_path / "store.zarr" / "events" / "c").iterdir()) == ["0", "1", "2"]
    np.testing.assert_array_equal(array[...], values)
    np.testing.assert_array_equal(array[:, 7], values[:, 7])  # one cell: a partial read of each shard
    np.testing.assert_array_equal(array[990:1000, 10:13], values[990:, 10:])
    opened = xr.open_zarr(tmp_path / "store.zarr", consolidated=False).events
    assert opened.dims == ("time", "cell") and np.array_equal(opened.values, values)


def test_a_local_file_and_a_file_object_give_the_same_shards(tmp_path):
    """Chunks of a local file are read at their offsets (pread); of a file object (ranged S3 reads), through h5py."""
    values = sparse_events(SHAPE)
    dataset_file(tmp_path / "a.h5", values).file.close()
    with h5py.File(tmp_path / "a.h5", "r") as local, open(tmp_path / "a.h5", "rb") as handle:
        with h5py.File(handle, "r") as through_object:
            assert local.driver == "sec2" and through_object.driver == "fileobj"
            (tmp_path / "local").mkdir()
            (tmp_path / "object").mkdir()
            moved(tmp_path / "local", local["events"])
            moved(tmp_path / "object", through_object["events"])
    shards = sorted((tmp_path / "local" / "store.zarr" / "events" / "c").rglob("*"))
    assert len([path for path in shards if path.is_file()]) == 3
    for path in shards:
        twin = tmp_path / "object" / path.relative_to(tmp_path / "local")
        assert path.is_dir() or path.read_bytes() == twin.read_bytes()
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "local" / "store.zarr" / "events")[...], values)


def test_a_chunk_past_the_end_of_a_truncated_file_is_an_error(tmp_path):
    values = sparse_events(SHAPE)
    dataset_file(tmp_path / "a.h5", values).file.close()
    with h5py.File(tmp_path / "a.h5", "r") as f:
        infos = []
        f["events"].id.chunk_iter(infos.append)
        last = max(infos, key=lambda info: info.byte_offset)
        with open(tmp_path / "a.h5", "r+b") as handle:  # cut the file inside its last chunk
            handle.truncate(last.byte_offset + last.size // 2)
        with pytest.raises(OSError, match="past the end of the file"):
            chunks.chunk_reader(f["events"])(last)


def test_only_codecs_of_the_zarr_v3_specification(tmp_path):
    moved(tmp_path, dataset_file(tmp_path / "a.h5", sparse_events(SHAPE)))
    metadata = json.loads((tmp_path / "store.zarr" / "events" / "zarr.json").read_text())
    (sharding,) = metadata["codecs"]
    names = [sharding["name"]] + [codec["name"] for codec in sharding["configuration"]["codecs"]
                                  + sharding["configuration"]["index_codecs"]]
    assert names == ["sharding_indexed", "bytes", "blosc", "bytes", "crc32c"]
    assert sharding["configuration"]["codecs"][1]["configuration"]["cname"] == "zlib"


def test_a_frame_holds_zlib_streams_and_plain_blocks_that_blosc_reads_in_order():
    blocks = [sparse_events(CHUNKS, seed=seed) for seed in (3, 4, 5)]
    streams = [zlib.compress(blocks[0].tobytes(), 4), blocks[1].tobytes(), zlib.compress(blocks[2].tobytes(), 9)]
    frame = chunks.blosc_frame(streams, blocks[0].nbytes)
    assert all(stream in frame for stream in streams)
    assert len(frame) == 16 + 3 * 4 + sum(4 + len(stream) for stream in streams)
    assert numcodecs.Blosc().decode(frame) == b"".join(block.tobytes() for block in blocks)


def stream_of_exactly(n_bytes: int) -> tuple[bytes, bytes]:
    """(data, its zlib stream) with a stream exactly n_bytes long: random bytes followed by zeros."""
    rng = np.random.default_rng(7)
    for n_random in range(n_bytes - 200, n_bytes):
        data = rng.bytes(n_random) + bytes(n_bytes - n_random)
        stream = zlib.compress(data, 4)
        if len(stream) == n_bytes:
            return data, stream
    raise AssertionError("no such stream")


def test_a_stream_as_long_as_its_block_is_moved_as_plain_bytes(tmp_path):
    data, stream = stream_of_exactly(CHUNKS[0] * CHUNKS[1] * 8)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        dataset = f.create_dataset("events", shape=CHUNKS, dtype="<f8", chunks=CHUNKS, compression="gzip")
        dataset.id.write_direct_chunk((0, 0), stream)
        assert dataset[...].tobytes() == data
        array = moved(tmp_path, dataset)
    assert array[...].tobytes() == data  # Blosc would have copied the stream itself as the block's bytes


def test_chunks_never_written_read_as_the_fill_value_and_skipped_filters_are_compressed_again(tmp_path):
    values = sparse_events(SHAPE, seed=1)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        data = f.create_dataset("events", shape=SHAPE, dtype="<f8", chunks=CHUNKS, compression="gzip", fillvalue=0.0)
        data[:128] = values[:128]
        data[256:384] = values[256:384]
        # A chunk stored with its deflate filter skipped (filter mask bit 0): raw bytes, as HDF5 allows.
        data.id.write_direct_chunk((512, 5), np.ascontiguousarray(values[512:640, 5:10]).tobytes(), filter_mask=1)
        expected = np.zeros(SHAPE)
        expected[:128], expected[256:384], expected[512:640, 5:10] = values[:128], values[256:384], values[512:640, 5:10]
        np.testing.assert_array_equal(data[...], expected)  # what h5py reads
        array = moved(tmp_path, data)
    np.testing.assert_array_equal(array[...], expected)


def test_an_edge_chunk_stored_unfiltered_is_moved_as_its_bytes(tmp_path):
    """HDF5's H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS stores edge chunks raw with filter mask 0 (h5py cannot set the
    option: the chunk is written so directly)."""
    values = sparse_events(SHAPE, seed=2)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        dataset = f.create_dataset("events", data=values, chunks=CHUNKS, compression="gzip")
        edge = np.zeros(CHUNKS)
        edge[: SHAPE[0] - 896] = values[896:, :5]
        dataset.id.write_direct_chunk((896, 0), edge.tobytes(), filter_mask=0)
        array = moved(tmp_path, dataset)
    np.testing.assert_array_equal(array[...], values)


def test_chunks_too_large_for_a_blosc_block_are_not_movable(tmp_path):
    data = dataset_file(tmp_path / "a.h5", np.zeros((8, 8)), chunks=(4, 4))
    assert chunks.movable(data)
    with mock.patch.object(chunks, "BLOSC_MAX_BLOCK", 4 * 4 * 8 - 1):
        assert not chunks.movable(data)


@pytest.mark.parametrize("options", [{"shuffle": True}, {"fletcher32": True}, {"compression": "lzf"},
                                     {"chunks": None, "compression": None}, {"dtype": ">f8"}])
def test_datasets_whose_chunks_are_not_plain_deflate_are_not_movable(tmp_path, options):
    data = dataset_file(tmp_path / "a.h5", sparse_events(SHAPE), **options)
    assert not chunks.movable(data)
    group = zarr.open_group(tmp_path / "store.zarr", mode="w", zarr_format=3)
    array = chunks.sharded_array(group, "events", SHAPE, data.dtype, CHUNKS, 200_000, 0.0, ["time", "cell"], {})
    with pytest.raises(ValueError, match="cannot be moved"):
        chunks.move_chunks(data, array, tmp_path / "store.zarr" / "events")


def test_plain_deflate_of_numbers_is_movable(tmp_path):
    assert chunks.movable(dataset_file(tmp_path / "a.h5", sparse_events(SHAPE)))
    assert chunks.movable(dataset_file(tmp_path / "b.h5", sparse_events(SHAPE).astype("<f4"), compression_opts=9))
