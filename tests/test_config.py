"""Configuration: the shipped files validate, and bad keys, types or values stop the run naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

from vb2p.config import load_config, validate_config
from vb2p.errors import ConfigError


def test_shipped_configs_validate_and_get_defaults():
    real = load_config(REPO / "config" / "config.yaml")
    assert real["release"]["url"] == "s3://visual-behavior-ophys-data/visual-behavior-ophys"
    assert real["release"]["manifest_version"] == "latest"
    assert "demo" not in real
    demo = load_config(REPO / "config" / "config.yaml", REPO / "config" / "demo.yaml")
    assert demo["release"]["url"] == "resources/demo_release/visual-behavior-ophys"
    assert demo["release"]["region"] == "us-west-2"  # kept from config.yaml by the merge
    assert demo["demo"]["mice"] == 3


def test_empty_config_gets_the_real_release_defaults():
    config = validate_config({})
    assert config["release"] == {
        "url": "s3://visual-behavior-ophys-data/visual-behavior-ophys",
        "endpoint_url": None,
        "region": "us-west-2",
        "manifest_version": "latest",
    }


@pytest.mark.parametrize(
    "config, named",
    [
        ({"relase": {}}, "relase"),
        ({"release": {"urll": "s3://b/p"}}, "release.urll"),
        ({"release": {"manifest_version": "v1"}}, "release.manifest_version"),
        ({"release": {"manifest_version": 1.1}}, "release.manifest_version"),
        ({"release": {"endpoint_url": "localhost:9000"}}, "release.endpoint_url"),
        ({"demo": {"mice": "three"}}, "demo.mice"),
        ({"demo": {"mice": 0}}, "demo.mice"),
        ({"cache_dir": ""}, "cache_dir"),
    ],
)
def test_bad_key_type_or_value_names_the_key(config, named):
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert named in str(error.value)


def test_snakemake_stops_before_any_work_on_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("release:\n  manifest_version: newest\n")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path / "work"),
         "--configfile", str(bad), "--cores", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode != 0
    assert "release.manifest_version" in result.stderr + result.stdout
    assert not (tmp_path / "work" / "results").exists()
