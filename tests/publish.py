"""Publish a release directory to a versioned S3 bucket, as Allen publishes theirs.

Files are uploaded public-read in manifest-version order; a file whose content is already the current version of its
key is not uploaded again. Each manifest is rewritten with the version ids the server assigned (the ids in a local
release are placeholders) and URLs naming this bucket before it is uploaded, so the bucket is self-consistent
exactly like the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

from vb2p import layout
from vb2p.manifest import parse_manifest, parse_semver, version_of_manifest_name

HASH_METADATA_KEY = "blake2b"


def ensure_versioned_bucket(client, bucket: str) -> None:
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": layout.REGION})
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def _current_version(client, bucket: str, key: str, file_hash: str) -> str | None:
    """The version id of key if its current content has file_hash, else None."""
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError:
        return None
    return head["VersionId"] if head.get("Metadata", {}).get(HASH_METADATA_KEY) == file_hash else None


def publish_release(root: str | Path, client, bucket: str = layout.BUCKET, prefix: str = layout.RELEASE_PREFIX) -> dict:
    """Upload every manifest under root/manifests and the files it lists; returns {manifest name: manifest dict}."""
    root = Path(root)
    ensure_versioned_bucket(client, bucket)
    names = [n.name for n in (root / layout.MANIFEST_DIR).glob("*.json") if version_of_manifest_name(n.name)]
    published = {}
    for name in sorted(names, key=lambda n: parse_semver(version_of_manifest_name(n))):
        raw = json.loads((root / layout.MANIFEST_DIR / name).read_text())
        manifest = parse_manifest(json.dumps(raw), name)
        sections = [("metadata_files", k) for k in raw["metadata_files"]] + [("data_files", k) for k in raw["data_files"]]
        for section, item in sections:
            entry = manifest.metadata_files[item] if section == "metadata_files" else manifest.data_files[int(item)]
            version_id = _current_version(client, bucket, entry.key, entry.file_hash)
            if version_id is None:
                local = root / entry.cache_relative_path
                with open(local, "rb") as body:
                    response = client.put_object(
                        Bucket=bucket,
                        Key=entry.key,
                        Body=body,
                        ACL="public-read",
                        Metadata={HASH_METADATA_KEY: entry.file_hash},
                    )
                version_id = response["VersionId"]
            raw[section][item]["version_id"] = version_id
            raw[section][item]["url"] = layout.public_url(
                str(entry.cache_relative_path), bucket=bucket, prefix=entry.key.split("/", 1)[0]
            )
        client.put_object(
            Bucket=bucket,
            Key=f"{prefix}/{layout.MANIFEST_DIR}/{name}",
            Body=json.dumps(raw, indent=2).encode(),
            ACL="public-read",
        )
        published[name] = raw
    return published
