from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
sys.path.insert(0, str(REPO / "workflow"))

from vb2p.demo.design import DemoSize  # noqa: E402
from vb2p.demo.generate import generate_release  # noqa: E402

# Small enough for seconds, large enough for every structural feature (3 cre lines, both rigs, 3-6 sessions).
SMALL = DemoSize(mice=3, duration_s=60.0, cells_per_plane=12)
SEED = 7


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A small demo release, generated once per test session (read-only for tests)."""
    out = tmp_path_factory.mktemp("demo")
    generate_release(out, seed=SEED, size=SMALL, manifest_version="1.0.0", workers=2)
    return out


@pytest.fixture(scope="session")
def demo_root(demo_dir) -> Path:
    return demo_dir / "visual-behavior-ophys"


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 server on loopback: the real protocol, through the same boto3 code as the real bucket."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def publisher_client(endpoint_url: str):
    """A signed client (fake credentials) for uploading; the workflow itself reads anonymously."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def release_config(url: str, cache_dir, endpoint_url: str | None = None, version: str = "latest", **selection) -> dict:
    from vb2p.config import validate_config

    return validate_config(
        {
            "release": {"url": str(url), "endpoint_url": endpoint_url, "manifest_version": version},
            "cache_dir": str(cache_dir),
            "download": {"retries": 2},
            "selection": selection,
        }
    )


# What workflow tests run when they do not say otherwise: one experiment, a window inside the test demo's sessions,
# the responses that matter (a run of every demo experiment and event type takes minutes; test_figures does it once).
QUICK = {
    "selection": {"filters": {"equipment_name": "CAM2P.3", "session_number": 1}},
    "figures": {"session_window_s": [10, 40]},
    "responses": {"event_types": ["changes", "omissions"], "data_types": ["dff"]},
}


def quick(config: dict) -> dict:
    """config over QUICK: a test's own selection replaces QUICK's; its figures and responses keys are merged."""
    merged = {**QUICK, **config}
    for key in ("figures", "responses"):
        merged[key] = {**QUICK[key], **config.get(key, {})}
    return merged


def run_workflow(workdir: Path, config: dict, *extra: str, env: dict | None = None):
    """The workflow as a user runs it (the default profile applies), on quick(config) written to
    workdir/config.yaml."""
    import os
    import subprocess

    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(quick(config)))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
         str(workdir / "config.yaml"), "--cores", "2", *extra],
        capture_output=True, text=True, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def real_experiments():
    from vb2p.tables import load_table

    return load_table(DATA / "real_metadata" / "ophys_experiment_table.csv", "ophys_experiment_table")
