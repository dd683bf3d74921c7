"""Release access: one code path for a local mirror and for S3 (moto's server on loopback), a verified cache in
AllenSDK's layout, manifest resolution, and refusal of anything that would write outside the cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
from conftest import SEED, SMALL, publisher_client, release_config

from vb2p import layout
from vb2p.cache import ReleaseCache
from vb2p.demo.generate import generate_release
from publish import publish_release
from vb2p.errors import DownloadError, ManifestError
from vb2p.manifest import latest_version, parse_manifest
from vb2p.release import release_cache, sync_metadata
from vb2p.source import LocalSource, parse_release_url

BUCKET_URL = f"s3://{layout.BUCKET}/{layout.RELEASE_PREFIX}"


@pytest.fixture(scope="module")
def two_version_release(tmp_path_factory, demo_dir):
    """The small demo release with a second manifest (1.1.0) that re-releases some experiments."""
    out = tmp_path_factory.mktemp("two_versions")
    shutil.copytree(demo_dir, out, dirs_exist_ok=True, copy_function=shutil.copy2)
    generate_release(out, seed=SEED, size=SMALL, manifest_version="1.1.0", revision=1)
    return out / layout.RELEASE_PREFIX


@pytest.fixture(scope="module")
def published(s3_server, demo_root):
    """The demo release (1.0.0) in a versioned bucket with public-read objects, in a bucket of its own."""
    client = publisher_client(s3_server)
    bucket = "vbo-single-version"
    publish_release(demo_root, client, bucket=bucket)
    return s3_server, bucket


def s3_config(s3_server, bucket, cache_dir, **kwargs):
    return release_config(f"s3://{bucket}/{layout.RELEASE_PREFIX}", cache_dir, endpoint_url=s3_server, **kwargs)


def test_local_mirror_and_s3_give_identical_results(tmp_path, demo_root, published):
    s3_server, bucket = published
    from_local = sync_metadata(release_config(demo_root, tmp_path / "local"), tmp_path / "local.json")
    from_s3 = sync_metadata(s3_config(s3_server, bucket, tmp_path / "s3"), tmp_path / "s3.json")
    assert from_local["manifest_version"] == from_s3["manifest_version"] == "1.0.0"
    for table in layout.METADATA_TABLES:
        local_bytes = open(from_local["tables"][table], "rb").read()
        s3_bytes = open(from_s3["tables"][table], "rb").read()
        assert local_bytes == s3_bytes, table
    # Both caches are in AllenSDK's layout.
    for cache in (tmp_path / "local", tmp_path / "s3"):
        assert (cache / layout.CACHE_LAST_USED).read_text() == "visual-behavior-ophys_project_manifest_v1.0.0.json"
        assert (cache / "visual-behavior-ophys-1.0.0/project_metadata/ophys_experiment_table.csv").is_file()
        record = json.loads((cache / layout.CACHE_DOWNLOADED).read_text())
        assert len(record) == 4 and all(path.startswith("/") for path in record)


def test_s3_downloads_are_pinned_by_version_id(tmp_path, s3_server, demo_root):
    """Overwrite a key after publishing: the manifest's version id still fetches the published content."""
    client = publisher_client(s3_server)
    bucket = "vbo-pinned"
    published = publish_release(demo_root, client, bucket=bucket)
    key = f"{layout.RELEASE_PREFIX}/{layout.metadata_key('ophys_experiment_table')}"
    client.put_object(Bucket=bucket, Key=key, Body=b"not the published table\n", ACL="public-read")
    record = sync_metadata(s3_config(s3_server, bucket, tmp_path / "cache"), tmp_path / "r.json")
    content = open(record["tables"]["ophys_experiment_table"], "rb").read()
    manifest = next(iter(published.values()))
    assert hashlib.blake2b(content).hexdigest() == manifest["metadata_files"]["ophys_experiment_table"]["file_hash"]


def test_latest_takes_the_highest_semantic_version_and_a_pin_is_honoured(tmp_path, two_version_release):
    latest = sync_metadata(release_config(two_version_release, tmp_path / "a"), tmp_path / "a.json")
    assert latest["manifest_version"] == "1.1.0"
    pinned = sync_metadata(release_config(two_version_release, tmp_path / "b", version="1.0.0"), tmp_path / "b.json")
    assert pinned["manifest_version"] == "1.0.0"
    assert latest_version(["x_project_manifest_v1.9.0.json", "x_project_manifest_v1.10.0.json"]) == "1.10.0"


def test_a_pinned_version_that_does_not_exist_names_it(tmp_path, demo_root):
    with pytest.raises(DownloadError, match="v1.4.2"):
        sync_metadata(release_config(demo_root, tmp_path / "c", version="1.4.2"), tmp_path / "c.json")


def test_files_unchanged_between_versions_are_reused_not_downloaded(tmp_path, two_version_release):
    cache = release_cache(release_config(two_version_release, tmp_path / "cache"))
    old = cache.resolve_manifest("1.0.0")
    for entry in old.entries():
        cache.fetch(old, entry)
    new = cache.resolve_manifest("1.1.0")
    reused = downloaded = 0
    for entry in new.entries():
        path = cache.fetch(new, entry)
        assert hashlib.blake2b(path.read_bytes()).hexdigest() == entry.file_hash
        if path.is_symlink():
            reused += 1
            assert "visual-behavior-ophys-1.0.0" in str(path.resolve())
        else:
            downloaded += 1
    changed = {e.file_hash for e in new.entries()} - {e.file_hash for e in old.entries()}
    assert downloaded == len(changed) > 0
    assert reused == len(new.entries()) - len(changed) > 0


class CorruptingSource(LocalSource):
    """Serves wrong bytes for one key, as a damaged mirror or a broken transfer would."""

    def __init__(self, location, bad_key, good_after=None):
        super().__init__(location)
        self.bad_key, self.calls, self.good_after = bad_key, 0, good_after

    def stream(self, key, version_id, offset=0):
        if key == self.bad_key:
            self.calls += 1
            if self.good_after is None or self.calls <= self.good_after:
                yield b"corrupted bytes"
                return
        yield from super().stream(key, version_id, offset)


def test_a_hash_mismatch_retries_then_fails_naming_the_file_and_both_hashes(tmp_path, demo_root):
    location = parse_release_url(str(demo_root))
    manifest = parse_manifest((demo_root / layout.manifest_key("1.0.0")).read_bytes(), "v1.0.0")
    entry = manifest.metadata_files["ophys_cells_table"]
    source = CorruptingSource(location, entry.key)
    cache = ReleaseCache(tmp_path / "cache", source, retries=3)
    manifest = cache.resolve_manifest("1.0.0")
    with pytest.raises(DownloadError) as error:
        cache.fetch(manifest, entry)
    message = str(error.value)
    assert "ophys_cells_table.csv" in message and entry.file_hash in message
    assert hashlib.blake2b(b"corrupted bytes").hexdigest() in message
    assert source.calls == 3
    path = cache.local_path(manifest, entry)
    assert not path.exists() and not path.with_name(path.name + ".partial").exists()
    # A transient corruption is retried and then succeeds.
    flaky = CorruptingSource(location, entry.key, good_after=1)
    assert ReleaseCache(tmp_path / "cache", flaky, retries=3).fetch(manifest, entry).is_file()
    assert flaky.calls == 2


def test_a_killed_download_resumes_and_a_bad_partial_restarts(tmp_path, demo_root, published):
    s3_server, bucket = published
    cache = release_cache(s3_config(s3_server, bucket, tmp_path / "cache"))
    manifest = cache.resolve_manifest("latest")
    entry = next(iter(manifest.data_files.values()))
    source_file = demo_root / entry.cache_relative_path
    path = cache.local_path(manifest, entry)
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True)
    # A kill mid-transfer leaves the first bytes under the temporary name and nothing recorded.
    content = source_file.read_bytes()
    partial.write_bytes(content[: len(content) // 3])
    assert cache.fetch(manifest, entry) == path
    assert path.read_bytes() == content and not partial.exists()
    # A partial file that does not match (a different version was being written) is thrown away and restarted.
    other = manifest.metadata_files["behavior_session_table"]
    other_path = cache.local_path(manifest, other)
    other_partial = other_path.with_name(other_path.name + ".partial")
    other_partial.parent.mkdir(parents=True, exist_ok=True)
    other_partial.write_bytes(b"garbage from another version")
    assert hashlib.blake2b(cache.fetch(manifest, other).read_bytes()).hexdigest() == other.file_hash


def test_a_verified_file_is_never_fetched_again_and_reruns_need_no_network(tmp_path, s3_server, demo_root):
    client = publisher_client(s3_server)
    bucket = "vbo-offline"
    publish_release(demo_root, client, bucket=bucket)
    config = s3_config(s3_server, bucket, tmp_path / "cache")
    first = sync_metadata(config, tmp_path / "r1.json")
    mtimes = {t: os.stat(path).st_mtime_ns for t, path in first["tables"].items()}
    # Now no server answers: a dead port on loopback.
    for version in ("latest", "1.0.0"):
        offline = s3_config("http://127.0.0.1:9", bucket, tmp_path / "cache", version=version)
        again = sync_metadata(offline, tmp_path / "r2.json")
        assert again["tables"] == first["tables"] and again["manifest_version"] == "1.0.0"
    assert mtimes == {t: os.stat(path).st_mtime_ns for t, path in first["tables"].items()}
    # Without a cache, the same offline run fails with a message naming the endpoint problem.
    with pytest.raises(DownloadError, match="127.0.0.1:9|endpoint|connect"):
        sync_metadata(s3_config("http://127.0.0.1:9", bucket, tmp_path / "empty"), tmp_path / "r3.json")


def write_manifest(root, name, raw):
    path = root / layout.MANIFEST_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize(
    "url, problem",
    [
        ("https://visual-behavior-ophys-data.s3.us-west-2.amazonaws.com/visual-behavior-ophys/../../escape.csv", ".."),
        ("https://visual-behavior-ophys-data.s3.us-west-2.amazonaws.com//etc/passwd", "absolute"),
        ("https://another-bucket.s3.us-west-2.amazonaws.com/visual-behavior-ophys/x.csv", "another-bucket"),
        ("https://visual-behavior-ophys-data.s3.us-west-2.amazonaws.com/other-prefix/x.csv", "prefix"),
        ("http://example.com/visual-behavior-ophys/x.csv", "not of the form"),
    ],
)
def test_manifest_urls_cannot_write_outside_the_cache(tmp_path, demo_root, url, problem):
    mirror = tmp_path / "mirror"
    shutil.copytree(demo_root / layout.MANIFEST_DIR, mirror / layout.MANIFEST_DIR)
    raw = json.loads((demo_root / layout.manifest_key("1.0.0")).read_text())
    raw["metadata_files"]["ophys_cells_table"]["url"] = url
    write_manifest(mirror, "visual-behavior-ophys_project_manifest_v1.0.0.json", raw)
    cache_dir = tmp_path / "cache"
    with pytest.raises(ManifestError) as error:
        sync_metadata(release_config(mirror, cache_dir), tmp_path / "r.json")
    assert problem in str(error.value)
    assert not (tmp_path / "escape.csv").exists()
    assert not list(cache_dir.glob("*.json")), "a refused manifest must not be cached"


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda m: m.pop("data_files"), "lacks required keys ['data_files']"),
        (lambda m: m.update(manifest_version="0.3.0"), "not supported"),
        (lambda m: m["metadata_files"].pop("ophys_cells_table"), "metadata_files must hold exactly"),
        (lambda m: m["metadata_files"]["ophys_cells_table"].update(file_hash="d41d8cd98f00b204e9800998ecf8427e"), "BLAKE2b"),
        (lambda m: m["data_files"].update({"0.0": m["data_files"]["0"]}), "'0.0' is not a decimal integer"),
        (lambda m: m.update(project_name="../x"), "project_name"),
    ],
)
def test_a_malformed_manifest_says_what_is_wrong(tmp_path, demo_root, change, problem):
    raw = json.loads((demo_root / layout.manifest_key("1.0.0")).read_text())
    change(raw)
    name = "visual-behavior-ophys_project_manifest_v1.0.0.json"
    with pytest.raises(ManifestError) as error:
        parse_manifest(json.dumps(raw), name)
    assert problem in str(error.value) and name in str(error.value)


def test_a_manifest_that_is_not_json_is_named(tmp_path):
    with pytest.raises(ManifestError, match="m_project_manifest_v1.0.0.json is not valid JSON"):
        parse_manifest(b"<html>", "m_project_manifest_v1.0.0.json")


def test_a_download_process_killed_mid_transfer_resumes_on_the_next_run(tmp_path, s3_server, demo_root, caplog):
    """SIGKILL a real download from the S3 server mid-transfer; the next fetch keeps the parts already on disk and
    fetches only the others."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    client = publisher_client(s3_server)
    bucket = "vbo-killed-download"
    published = publish_release(demo_root, client, bucket=bucket)
    big_key = f"{layout.RELEASE_PREFIX}/{layout.experiment_key(1)}"
    content = os.urandom(64 * 1024 * 1024)
    version = client.put_object(Bucket=bucket, Key=big_key, Body=content, ACL="public-read")["VersionId"]
    manifest = next(iter(published.values()))
    manifest["data_files"]["999999"] = {
        "url": layout.public_url(layout.experiment_key(1), bucket=bucket),
        "version_id": version,
        "file_hash": hashlib.blake2b(content).hexdigest(),
    }
    client.put_object(Bucket=bucket, Key=f"{layout.RELEASE_PREFIX}/{layout.manifest_key('1.0.0')}",
                      Body=json.dumps(manifest).encode(), ACL="public-read")
    # 1 MiB parts, one at a time: 64 parts, so the kill lands between two of them.
    config = s3_config(s3_server, bucket, tmp_path / "cache", version="1.0.0")
    config["download"].update(part_mb=1, concurrency=1)
    cache = release_cache(config)
    parsed = cache.resolve_manifest("1.0.0")
    entry = parsed.data_files[999999]
    partial = cache.local_path(parsed, entry).with_name(cache.local_path(parsed, entry).name + ".partial")
    finished_parts = partial.with_name(partial.name + ".parts")
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'workflow')!r})\n"
        "from vb2p.release import release_cache\n"
        f"config = {config!r}\n"
        "cache = release_cache(config)\n"
        "manifest = cache.resolve_manifest('1.0.0')\n"
        "cache.fetch(manifest, manifest.data_files[999999])\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60

    def done():
        try:
            return len(json.loads(finished_parts.read_text())["done"])
        except (OSError, ValueError, KeyError):
            return 0

    while time.monotonic() < deadline and done() < 8:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = done()
    assert 8 <= kept < 64, "the kill should land mid-transfer"
    assert not cache.local_path(parsed, entry).exists()
    with caplog.at_level("INFO", logger="vb2p"):
        path = cache.fetch(parsed, entry)
    assert path.read_bytes() == content and not partial.exists() and not finished_parts.exists()
    transfer = cache.transfers[path]
    assert transfer.resumed_bytes >= kept * 1024 * 1024 and transfer.bytes_moved == len(content) - transfer.resumed_bytes
    assert any("parts already on disk" in message for message in caplog.messages)


def test_a_network_outage_keeps_the_partial_file_and_an_oversized_one_restarts(tmp_path, published, demo_root):
    s3_server, bucket = published
    config = s3_config(s3_server, bucket, tmp_path / "cache", version="1.0.0")
    cache = release_cache(config)
    manifest = cache.resolve_manifest("1.0.0")
    entry = next(iter(manifest.data_files.values()))
    content = (demo_root / entry.cache_relative_path).read_bytes()
    path = cache.local_path(manifest, entry)
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True)
    partial.write_bytes(content[:1000])
    offline = release_cache(s3_config("http://127.0.0.1:9", bucket, tmp_path / "cache", version="1.0.0"))
    offline.backoff_s = 0.0
    with pytest.raises(DownloadError):
        offline.fetch(manifest, entry)
    assert partial.read_bytes() == content[:1000], "bytes already downloaded survive an outage"
    partial.write_bytes(content + b"more bytes than the object has")
    assert cache.fetch(manifest, entry).read_bytes() == content  # S3 answers InvalidRange: start over
