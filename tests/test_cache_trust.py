"""The cache verifies what it hands out, and errors name the real culprit (faults injected one at a time on the demo
release, as an operator would meet them)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import SEED, SMALL, run_workflow

from vb2p import layout
from vb2p.config import validate_config
from vb2p.demo.generate import generate_release
from vb2p.errors import OutputError
from vb2p.extract import extract_experiment
from vb2p.release import experiment_file, release_cache

SHORT_WINDOW = {"session_window_s": [10, 40]}


def first_experiment(root: Path) -> int:
    return int(pd.read_csv(root / layout.metadata_key("ophys_experiment_table")).ophys_experiment_id[0])


def blake2b(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes()).hexdigest()


@pytest.fixture
def mounted(tmp_path):
    """mount(directory, options): a small tmpfs at directory, unmounted afterwards (skips where mounting is not
    allowed: the tests need root in a container that permits it)."""
    mounts = []

    def mount(directory: Path, options: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounts.append(directory)
        return directory

    yield mount
    for directory in reversed(mounts):
        subprocess.run(["umount", "-l", str(directory)], check=False)


# ----- 1. A truncated cached NWB is fetched again (resumed from its bytes), by the download step and extraction -----


def test_a_truncated_cached_file_is_resumed_not_trusted(tmp_path, demo_root, caplog):
    config = validate_config({"release": {"url": str(demo_root)}, "cache_dir": str(tmp_path / "cache")})
    experiment_id = first_experiment(demo_root)
    path, entry, version = experiment_file(config, "latest", experiment_id)
    content = path.read_bytes()
    with open(path, "r+b") as handle:
        handle.truncate(len(content) // 2)
    with caplog.at_level("INFO", logger="vb2p"):
        again, _, _ = experiment_file(config, version, experiment_id)
    assert again.read_bytes() == content
    assert any("resuming" in m and f"at byte {len(content) // 2}" in m for m in caplog.messages), caplog.messages


def test_a_download_that_cannot_fit_stops_naming_the_cache_and_resumes_once_there_is_room(tmp_path, demo_root,
                                                                                        mounted, monkeypatch):
    """The cache's file system has less room than the file: refused before a byte is written, naming cache_dir and
    the bytes needed; when parallel downloads fill it anyway (here: the free space misreported), the full disk is said
    so, not retried, and the bytes written are kept for the next run."""
    from vb2p.errors import NoSpaceError
    from vb2p.source import LocalSource

    experiment_id = first_experiment(demo_root)
    size = (demo_root / layout.experiment_key(experiment_id)).stat().st_size
    cache = mounted(tmp_path / "cache", f"size={size // 2}")
    config = validate_config({"release": {"url": str(demo_root)}, "cache_dir": str(cache)})
    release_cache(config).resolve_manifest("latest")  # the manifest fits; the NWB file does not
    with pytest.raises(NoSpaceError, match=rf"needs {size / 1e9:.2f} GB more in {cache}/.*GB free: free space there"):
        experiment_file(config, "latest", experiment_id)
    assert not [p for p in cache.rglob("*.nwb*") if p.stat().st_size]

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=10**12))
    attempts = []
    download = LocalSource.download
    monkeypatch.setattr(LocalSource, "download", lambda *args: attempts.append(args) or download(*args))
    with pytest.raises(NoSpaceError, match=rf"file system of {cache}/.* is full, or your quota is .*No space left"):
        experiment_file(config, "latest", experiment_id)
    partial = [p for p in cache.rglob("*.partial") if p.stat().st_size]
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < size  # kept, to resume from
    assert len(attempts) == 1  # stopped at the full disk, not retried with back-off


def test_forcerun_download_repairs_a_truncated_file_and_its_receipt(tmp_path, demo_root):
    config = {"release": {"url": str(demo_root)}, "cache_dir": str(tmp_path / "cache"),
              "selection": {"max_containers": 1}, "figures": SHORT_WINDOW}
    assert run_workflow(tmp_path / "w", config, "results/zarr/index.csv").returncode == 0
    receipts = sorted((tmp_path / "w/results/downloads").glob("*.json"))
    receipt = json.loads(receipts[0].read_text())
    nwb = Path(receipt["path"])
    nwb.write_bytes(nwb.read_bytes()[: receipt["bytes"] // 3])
    result = run_workflow(tmp_path / "w", config, "results/zarr/index.csv", "--forcerun", "download_experiment")
    assert result.returncode == 0, result.stderr[-3000:]
    assert blake2b(nwb) == receipt["file_hash"]
    again = json.loads(receipts[0].read_text())
    assert again["bytes"] == receipt["bytes"] == nwb.stat().st_size


# ----- 2. Reuse across manifest versions: only files of this cache, checked first, and the log says what was done -----


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, demo_dir):
    out = tmp_path_factory.mktemp("two_versions_trust")
    shutil.copytree(demo_dir, out, dirs_exist_ok=True, copy_function=shutil.copy2)
    generate_release(out, seed=SEED, size=SMALL, manifest_version="1.1.0", revision=1)
    return out / layout.RELEASE_PREFIX


def unchanged_entry(cache, old, new):
    """An experiment file whose content is the same in both manifest versions."""
    old_hashes = {e.file_hash for e in old.data_files.values()}
    return next(e for e in new.data_files.values() if e.file_hash in old_hashes and layout.EXPERIMENT_DIR in e.key)


def test_a_corrupted_file_of_another_version_is_not_linked(tmp_path, two_versions, caplog):
    cache = release_cache(validate_config({"release": {"url": str(two_versions)}, "cache_dir": str(tmp_path / "c")}))
    old, new = cache.resolve_manifest("1.0.0"), cache.resolve_manifest("1.1.0")
    entry = unchanged_entry(cache, old, new)
    old_path = cache.fetch(old, entry)
    data = bytearray(old_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    old_path.write_bytes(bytes(data))  # corrupted after it was verified
    with caplog.at_level("INFO", logger="vb2p"):
        new_path = cache.fetch(new, entry)
    assert not new_path.is_symlink() and blake2b(new_path) == entry.file_hash
    assert not any("linked" in m for m in caplog.messages)
    assert any("changed since it was verified" in m for m in caplog.messages)


def test_a_good_file_of_another_version_is_linked_after_its_check(tmp_path, two_versions, caplog):
    cache = release_cache(validate_config({"release": {"url": str(two_versions)}, "cache_dir": str(tmp_path / "c")}))
    old, new = cache.resolve_manifest("1.0.0"), cache.resolve_manifest("1.1.0")
    entry = unchanged_entry(cache, old, new)
    old_path = cache.fetch(old, entry)
    with caplog.at_level("INFO", logger="vb2p"):
        new_path = cache.fetch(new, entry)
    assert new_path.is_symlink() and new_path.resolve() == old_path.resolve()
    assert any("linked" in m and "same BLAKE2b" in m for m in caplog.messages)


def test_a_listed_file_outside_the_cache_is_never_reused(tmp_path, two_versions, caplog):
    config = validate_config({"release": {"url": str(two_versions)}, "cache_dir": str(tmp_path / "c")})
    cache = release_cache(config)
    new = cache.resolve_manifest("1.1.0")
    entry = next(e for e in new.data_files.values() if layout.EXPERIMENT_DIR in e.key)
    elsewhere = tmp_path / "elsewhere" / "copy.nwb"
    elsewhere.parent.mkdir()
    shutil.copyfile(two_versions / entry.cache_relative_path, elsewhere)
    (tmp_path / "c" / layout.CACHE_DOWNLOADED).write_text(json.dumps({str(elsewhere): entry.file_hash}))
    with caplog.at_level("INFO", logger="vb2p"):
        path = cache.fetch(new, entry)
    assert not path.is_symlink() and blake2b(path) == entry.file_hash
    assert any("outside" in m for m in caplog.messages)


# ----- 3. A write error is reported as a write error, naming the output, never the NWB -----


def test_a_full_results_disk_is_reported_as_such(tmp_path, demo_root, mounted):
    results = mounted(tmp_path / "results", "size=256k")
    nwb = demo_root / layout.experiment_key(first_experiment(demo_root))
    with pytest.raises(OutputError) as error:
        extract_experiment(nwb, results / "1.zarr", first_experiment(demo_root))
    message = str(error.value)
    assert "No space left on device" in message and str(results / ".1.zarr.partial") in message
    assert "corrupt" not in message and str(nwb) not in message and "The NWB file is fine" in message
    assert not (results / "1.zarr").exists() and not (results / ".1.zarr.partial").exists()


# ----- 4. A store deleted by hand is made again -----


def test_a_deleted_store_is_rebuilt(tmp_path, demo_root):
    experiments = pd.read_csv(demo_root / layout.metadata_key("ophys_experiment_table"))
    session = int(experiments.set_index("ophys_experiment_id").ophys_session_id[first_experiment(demo_root)])
    config = {"release": {"url": str(demo_root)}, "cache_dir": str(tmp_path / "cache"),
              "selection": {"filters": {"ophys_session_id": session}}, "figures": SHORT_WINDOW}  # one plane
    assert run_workflow(tmp_path / "w", config).returncode == 0
    index = pd.read_csv(tmp_path / "w/results/zarr/index.csv")
    victim = tmp_path / "w/results/zarr" / index.path[0]
    shutil.rmtree(victim)
    result = run_workflow(tmp_path / "w", config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "extract_experiment" in result.stderr and victim.is_dir()


# ----- 5. Small ones: duplicate keys, --cores 0, a read-only output folder -----


def test_a_config_file_with_a_duplicate_key_is_refused(tmp_path, demo_root):
    config = tmp_path / "dup.yaml"
    config.write_text(f"release:\n  url: {demo_root}\ncache_dir: {tmp_path}/a\ncache_dir: {tmp_path}/b\n")
    result = subprocess.run(
        [*snakemake_command(tmp_path / "w"), "--configfile", str(config), "--cores", "1"],
        capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert f"{config}: key 'cache_dir' is written twice (lines 3 and 4)" in result.stderr
    assert not (tmp_path / "w" / "results").exists()


def test_cores_zero_is_refused_at_once(tmp_path, demo_root):
    result = run_workflow(tmp_path, {"release": {"url": str(demo_root)}, "cache_dir": str(tmp_path / "c")},
                          "--cores", "0")
    assert result.returncode != 0
    assert "--cores 0 leaves no core to run a job on" in result.stderr


def test_a_read_only_output_folder_is_refused_before_any_work(tmp_path, demo_root, mounted):
    zarr_dir = mounted(tmp_path / "w" / "results" / "zarr", "size=1m,ro")
    result = run_workflow(tmp_path / "w", {"release": {"url": str(demo_root)}, "cache_dir": str(tmp_path / "c")})
    assert result.returncode != 0
    assert f"{Path('results/zarr')} = results/zarr: cannot write there: Read-only file system" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "c").exists() and not list(zarr_dir.iterdir())


def snakemake_command(workdir: Path) -> list[str]:
    import sys

    from conftest import REPO

    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
