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


def test_the_demo_defaults_have_one_source_and_release_url_follows_demo_out(tmp_path):
    from vb2p.cli import build_parser
    from vb2p.config import load_schema

    defaults = {key: spec["default"] for key, spec in load_schema()["properties"]["demo"]["properties"].items()}
    parsed = vars(build_parser().parse_args(["demo-release"]))
    assert {key: parsed[key] for key in defaults} == {**defaults, "out": parsed["out"]}
    assert str(parsed["out"]) == defaults["out"]
    from dataclasses import asdict

    from vb2p.demo.design import DemoSize

    assert asdict(DemoSize()) == {k: defaults[k] for k in ("mice", "duration_s", "cells_per_plane", "all_traces")}
    demo = load_config(REPO / "config" / "config.yaml", REPO / "config" / "demo.yaml")
    assert demo["demo"] == defaults
    assert demo["release"]["url"] == f"{defaults['out']}/visual-behavior-ophys"
    moved = validate_config({"demo": {"out": str(tmp_path / "elsewhere")}})
    assert moved["release"]["url"] == str(tmp_path / "elsewhere" / "visual-behavior-ophys")
    with pytest.raises(ConfigError, match="release.url .* and demo.out .* disagree"):
        validate_config({"demo": {"out": "a"}, "release": {"url": "b/visual-behavior-ophys"}})


def test_every_step_of_the_workflow_can_be_run_by_hand():
    """The command line offers a subcommand for every rule that does work (not `all`)."""
    import re

    from vb2p.cli import build_parser

    rules = set(re.findall(r"^\s*(?:rule|checkpoint) (\w+):", "".join(
        p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk")), flags=re.M))
    by_hand = {"demo_release": "demo-release", "sync_metadata": "sync", "release_overview": "overview",
               "select_experiments": "select", "download_experiment": "download", "session_task": "session-task",
               "extract_experiment": "extract",
               "zarr_index": "index", "container_alignment": "alignment", "session_population": "population",
               "cell_counts": "cell-counts", "behavior_session": "behavior", "behavior_performance": "behavior-performance",
               "stimulus_responses": "responses", "response_table": "response-table", "platform_figures": "platform"}
    assert rules == set(by_hand), rules ^ set(by_hand)
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert set(by_hand.values()) <= set(subcommands)
    scripts = {p.stem: p.read_text() for p in (REPO / "scripts").glob("*.py")}
    for rule in rules:  # each rule's script is a thin call of vb2p.steps
        assert "steps." in scripts[rule], rule


@pytest.mark.parametrize(
    "responses, named",
    [
        ({"time_window": [-0.2, 1.5]}, "responses.time_window"),  # does not hold the 0.5 s baseline window
        ({"time_window": [1.5, -1]}, "responses.time_window"),
        ({"output_sampling_rate": -30}, "responses.output_sampling_rate"),
        ({"event_types": ["changes", "licks"]}, "responses.event_types"),
        ({"response_window_duration": 0}, "responses.response_window_duration"),
    ],
)
def test_a_bad_response_parameter_is_refused_before_any_work_naming_the_key(responses, named):
    with pytest.raises(ConfigError) as error:
        validate_config({"responses": responses})
    assert named in str(error.value)
