"""Derived stores on object storage: a lab publishes its processed release to an S3 prefix once, and everyone opens
the stores from there with xarray, without copying files.

    client = boto3.client("s3", ...)                                    # signed: it writes
    publish_store(client, "results/zarr/951980471.zarr", bucket, prefix)  # -> s3://bucket/prefix/951980471.zarr
    publish_index(client, index, bucket, prefix)                          # -> s3://bucket/prefix/index.parquet
    ds = open_shared_store(f"s3://{bucket}/{prefix}/951980471.zarr")    # anonymous reads, like the release

Stores keep their consolidated metadata (the root zarr.json lists every array), so opening one is a single GET
and nothing is listed: zarr 3.1's FsspecStore over s3fs. Publishing is a sync: only files whose size or MD5
(the ETag of a single-part upload; with SSE-KMS it is not, and every file is uploaded again) differ are uploaded,
and objects no longer in the local store are deleted. The
root zarr.json goes up last (and, when the store changes, is deleted first), so a store whose publishing was
interrupted has no root metadata: it fails to open instead of mixing two versions of the data.
"""

from __future__ import annotations

import hashlib
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vb2p import layout
from vb2p.errors import ShareError

log = logging.getLogger(__name__)
ROOT_METADATA = "zarr.json"
INDEX_NAME = "index.parquet"


@dataclass(frozen=True)
class Published:
    url: str
    uploaded: int  # files
    unchanged: int
    deleted: int  # stale objects removed
    bytes_uploaded: int


def storage_options(endpoint_url: str | None = None, region: str = layout.REGION) -> dict:
    """s3fs options for anonymous reads (through endpoint_url when given), as xarray and pandas take them.

    max_concurrency 1: otherwise s3fs heads every object before getting it (to split large ones into parallel
    ranges), two round trips per chunk; zarr already fetches the chunks of a read concurrently.
    """
    return {"anon": True, "endpoint_url": endpoint_url, "max_concurrency": 1, "client_kwargs": {"region_name": region}}


def _md5_etag(path: Path) -> str:
    with open(path, "rb") as handle:
        return f'"{hashlib.file_digest(handle, "md5").hexdigest()}"'


def _remote_objects(client, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """{key: (size, ETag)} under prefix."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update({item["Key"]: (item["Size"], item["ETag"]) for item in page.get("Contents", [])})
    return found


def _call(what: str, function, **kwargs):
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return function(**kwargs)
    except (ClientError, BotoCoreError) as error:
        raise ShareError(
            f"{what}: {error} (are the endpoint, bucket and credentials of the publishing client right?)"
        ) from error


def publish_store(client, store: str | Path, bucket: str, prefix: str, acl: str | None = "public-read",
                  concurrency: int = 8) -> Published:
    """Sync one local Zarr store to s3://bucket/prefix/<store name>; client must be allowed to write there."""
    store = Path(store)
    if not (store / ROOT_METADATA).is_file():
        raise ShareError(f"{store} is not a finished Zarr store (no {ROOT_METADATA}); extract it first")
    base = f"{prefix.strip('/')}/{store.name}"
    local = {f"{base}/{p.relative_to(store).as_posix()}": p for p in sorted(store.rglob("*")) if p.is_file()}
    remote = _call(f"listing s3://{bucket}/{base}/", _remote_objects, client=client, bucket=bucket, prefix=base + "/")
    root = f"{base}/{ROOT_METADATA}"
    changed = [k for k, p in local.items() if remote.get(k) != (p.stat().st_size, _md5_etag(p))]
    stale = sorted(set(remote) - set(local))
    extra = {"ACL": acl} if acl else {}

    def upload(key: str) -> None:
        with open(local[key], "rb") as body:
            _call(f"uploading {local[key]} to s3://{bucket}/{key}", client.put_object, Bucket=bucket, Key=key,
                  Body=body, **extra)

    if changed or stale:
        if root in remote:  # from now until the new root metadata is up, the store does not open
            _call(f"deleting s3://{bucket}/{root}", client.delete_object, Bucket=bucket, Key=root)
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(upload, [k for k in changed if k != root]))
            list(pool.map(lambda key: _call(f"deleting s3://{bucket}/{key}", client.delete_object, Bucket=bucket,
                                            Key=key), stale))
        upload(root)
    url = f"s3://{bucket}/{base}"
    log.info("%s: %d files uploaded, %d unchanged, %d stale objects deleted", url, len(changed),
             len(local) - len(changed), len(stale))
    return Published(url, len(changed), len(local) - len(changed), len(stale),
                     sum(local[k].stat().st_size for k in changed))


def publish_index(client, index: pd.DataFrame, bucket: str, prefix: str, acl: str | None = "public-read") -> str:
    """The index of the stores (one row per experiment; `path` relative to the index, as in results/zarr) as Parquet
    beside them; returns its URL."""
    buffer = io.BytesIO()
    index.to_parquet(buffer, index=False)
    key = f"{prefix.strip('/')}/{INDEX_NAME}"
    extra = {"ACL": acl} if acl else {}
    _call(f"uploading s3://{bucket}/{key}", client.put_object, Bucket=bucket, Key=key, Body=buffer.getvalue(), **extra)
    return f"s3://{bucket}/{key}"


def publish_file(client, path: str | Path, bucket: str, key: str, acl: str | None = "public-read") -> str:
    """One file (the release-wide response table) to s3://bucket/key; returns its URL."""
    extra = {"ACL": acl} if acl else {}
    with open(path, "rb") as body:
        _call(f"uploading {path} to s3://{bucket}/{key}", client.put_object, Bucket=bucket, Key=key, Body=body, **extra)
    return f"s3://{bucket}/{key}"


def parse_s3_prefix(url: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://bucket/prefix."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ShareError(f"{url!r} is not s3://bucket/prefix")
    return parsed.netloc, parsed.path.strip("/")


def read_shared_index(url: str, endpoint_url: str | None = None, region: str = layout.REGION) -> pd.DataFrame:
    try:
        return pd.read_parquet(url, storage_options=storage_options(endpoint_url, region))
    except (FileNotFoundError, OSError) as error:
        raise ShareError(f"{url}: cannot read the shared index ({error}); was it published?") from error


def open_shared_store(url: str, endpoint_url: str | None = None, region: str = layout.REGION):
    """xarray Dataset of a published store, read anonymously and lazily: one GET for the metadata, then chunks."""
    import xarray as xr

    try:
        return xr.open_zarr(url, storage_options=storage_options(endpoint_url, region), consolidated=True,
                            zarr_format=3)
    except PermissionError as error:
        raise ShareError(f"{url}: anonymous reads are refused ({error}); publish with acl='public-read' or a bucket "
                         "policy that allows them") from error
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise ShareError(f"{url}: no finished store there ({type(error).__name__}: {error}); publishing it may not "
                         "have finished: publish it again") from error
