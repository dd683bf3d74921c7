"""Inputs that used to finish with exit 0 and wrong or misleading output (issue: no silent wrong results).

Each test names the rule the case broke. The class of each bug is checked across the whole config schema too: every
window is an x-interval, every path is an x-path, every known column's filter values are typed.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml
from conftest import REPO, run_workflow

from vb2p import layout
from vb2p.cell_counts import cells_by_experiment, counts_by_depth
from vb2p.config import load_schema, validate_config
from vb2p.errors import ConfigError, SelectionError
from vb2p.release import experiment_file, release_cache
from vb2p.selection import select_experiments
from vb2p.tables import load_tables

SHORT_WINDOW = {"session_window_s": [10, 40]}  # inside the test demo's sessions


# ----- 1. Rule: a filter compares values in the column's type, and refuses what is not of that type -----


def test_a_boolean_filter_written_as_text_selects_what_it_says(real_experiments):
    active = select_experiments(real_experiments, filters={"passive": "false"})
    assert len(active) == (~real_experiments.passive).sum() and not active.passive.any()
    assert select_experiments(real_experiments, filters={"passive": "TRUE"}).passive.all()
    assert select_experiments(real_experiments, filters={"passive": ["False"]}).equals(active)
    assert select_experiments(real_experiments, filters={"passive": False}).equals(active)


@pytest.mark.parametrize(
    "filters, named",
    [
        ({"passive": "maybe"}, "selection.filters.passive: 'maybe' is not a boolean"),
        ({"passive": 0}, "selection.filters.passive: 0 is not a boolean"),
        ({"passive": ["false", "no"]}, "'no' is not a boolean"),
        ({"imaging_depth": "deep"}, "selection.filters.imaging_depth: 'deep' is not a number"),
        ({"imaging_depth": True}, "True is not a number"),
        ({"imaging_depth": {"min": "shallow"}}, "'shallow' is not a number"),
        ({"imaging_depth": {"min": 300, "max": 100}}, "min 300 is above max 100"),
        ({"ophys_container_id": 1018028342.5}, "is not an integer id"),
        ({"ophys_experiment_id": ["951980471", "x1"]}, "'x1' is not an integer id"),
        ({"cre_line": {"min": 1}}, "a min/max range needs a column of numbers, ids or dates"),
        ({"date_of_acquisition": {"min": "not a date"}}, "is not a date"),
    ],
)
def test_a_filter_value_of_the_wrong_type_is_refused_before_any_work(filters, named):
    with pytest.raises(ConfigError) as error:
        validate_config({"selection": {"filters": filters}})
    assert named in str(error.value)


def test_numbers_and_ids_written_as_text_are_read_as_numbers(real_experiments):
    assert (select_experiments(real_experiments, filters={"imaging_depth": "150"}).imaging_depth == 150).all()
    assert len(select_experiments(real_experiments, filters={"ophys_experiment_id": "951980471"})) == 1
    deep = select_experiments(real_experiments, filters={"imaging_depth": {"min": "300"}})
    assert (deep.imaging_depth >= 300).all()
    spring = select_experiments(real_experiments,
                                filters={"date_of_acquisition": {"min": "2019-04-01", "max": "2019-04-30"}})
    assert len(spring) and spring.date_of_acquisition.dt.month.eq(4).all()


def test_a_column_the_release_adds_is_typed_from_the_table(real_experiments):
    """Columns not known in advance are checked when the table is read (before any download)."""
    table = real_experiments.assign(is_new_column=real_experiments.passive)
    assert not select_experiments(table, filters={"is_new_column": "false"}).passive.any()
    with pytest.raises(SelectionError, match="selection.filters.is_new_column: 'perhaps' is not a boolean"):
        select_experiments(table, filters={"is_new_column": "perhaps"})


def test_every_known_experiment_column_has_a_kind(real_experiments):
    """The class of bug: a column without a kind would be compared as text."""
    columns = set(real_experiments.reset_index().columns) - {"file_path"}  # an internal column of that table only
    assert columns <= set(layout.EXPERIMENT_COLUMN_KINDS), columns - set(layout.EXPERIMENT_COLUMN_KINDS)


def test_a_bad_filter_stops_snakemake_before_any_work(tmp_path, demo_root):
    result = run_workflow(tmp_path, {"release": {"url": str(demo_root)}, "cache_dir": str(tmp_path / "cache"),
                                     "selection": {"filters": {"passive": "maybe"}}})
    assert result.returncode != 0
    assert "selection.filters.passive: 'maybe' is not a boolean" in result.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


# ----- 2. Rule: what the cache hands out is checked against its hash, not trusted forever -----


def test_a_cached_nwb_changed_in_place_is_fetched_again_before_extraction(tmp_path, demo_root, caplog):
    config = validate_config({"release": {"url": str(demo_root)}, "cache_dir": str(tmp_path / "cache")})
    experiment_id = int(pd.read_csv(demo_root / layout.metadata_key("ophys_experiment_table")).ophys_experiment_id[0])
    path, entry, version = experiment_file(config, "latest", experiment_id)
    original = path.read_bytes()
    # Same length, other bytes: a user's script editing the file (mtime changes).
    with open(path, "r+b") as handle:
        handle.seek(len(original) // 2)
        handle.write(b"\x00" * 64 if original[len(original) // 2] else b"\x01" * 64)
    with caplog.at_level("INFO", logger="vb2p"):
        again, _, _ = experiment_file(config, version, experiment_id)
    assert again.read_bytes() == original
    assert any("its mtime_ns" in m and "changed since it was verified" in m for m in caplog.messages)
    assert any("does not match its manifest hash" in m for m in caplog.messages)


def test_an_edit_that_keeps_size_and_mtime_is_caught_by_the_sampled_fingerprint(tmp_path, demo_root, caplog):
    """A disk error or a tool that restores mtime: the stat is unchanged; the first block is always sampled."""
    config = validate_config({"release": {"url": str(demo_root)}, "cache_dir": str(tmp_path / "cache")})
    experiment_id = int(pd.read_csv(demo_root / layout.metadata_key("ophys_experiment_table")).ophys_experiment_id[0])
    path, _, version = experiment_file(config, "latest", experiment_id)
    original, stat = path.read_bytes(), path.stat()
    with open(path, "r+b") as handle:
        handle.seek(100)
        handle.write(bytes(b ^ 0xFF for b in original[100:104]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with caplog.at_level("INFO", logger="vb2p"):
        assert experiment_file(config, version, experiment_id)[0].read_bytes() == original
    assert any("its sampled changed since it was verified" in m for m in caplog.messages)


def test_a_changed_nwb_with_the_release_unreachable_fails_naming_the_file(tmp_path, demo_root):
    from vb2p.errors import DownloadError

    mirror = tmp_path / "mirror"
    import shutil

    shutil.copytree(demo_root, mirror)
    config = validate_config({"release": {"url": str(mirror)}, "cache_dir": str(tmp_path / "cache")})
    experiment_id = int(pd.read_csv(mirror / layout.metadata_key("ophys_experiment_table")).ophys_experiment_id[0])
    path, entry, version = experiment_file(config, "latest", experiment_id)
    path.write_bytes(path.read_bytes()[:-10] + b"x" * 10)
    shutil.rmtree(mirror / layout.EXPERIMENT_DIR)  # the release cannot be reached any more
    cache = release_cache(config)
    cache.backoff_s = 0
    with pytest.raises(DownloadError) as error:
        cache.fetch(cache.resolve_manifest(version), entry)
    assert path.name in str(error.value)


# ----- 3. Rule: every window in the config is finite with start < end, checked before any work -----


@pytest.mark.parametrize("window", [[50, 10], [10, 10], [0, float("inf")], [float("nan"), 5]])
def test_a_reversed_or_empty_window_is_refused_naming_the_key(window):
    with pytest.raises(ConfigError, match="config key figures.session_window_s"):
        validate_config({"figures": {"session_window_s": window}})


def _schema_nodes(schema, where=""):
    for key, sub in schema.get("properties", {}).items():
        name = f"{where}.{key}" if where else key
        yield name, sub
        yield from _schema_nodes(sub, name)


def test_every_window_in_the_schema_is_an_interval():
    """The class of bug: any [start, end] pair of numbers in the config is checked as a window."""
    pairs = [(name, node) for name, node in _schema_nodes(load_schema())
             if node.get("type") == "array" and node.get("minItems") == 2 and node.get("maxItems") == 2]
    assert pairs, "the schema has windows"
    for name, node in pairs:
        assert node.get("x-interval") is True, name


def test_a_window_outside_the_session_is_an_error_naming_the_key(tmp_path, demo_root):
    experiments = pd.read_csv(demo_root / layout.metadata_key("ophys_experiment_table"))
    session = experiments[experiments.equipment_name == "CAM2P.3"].ophys_session_id.iloc[0]
    result = run_workflow(tmp_path, {"release": {"url": str(demo_root)}, "cache_dir": str(tmp_path / "cache"),
                                     "figures": {"session_window_s": [5000, 6000]}},
                          f"results/sessions/{session}.csv")
    assert result.returncode != 0
    assert "figures.session_window_s [5000, 6000]" in result.stderr and "has no frames in it" in result.stderr


# ----- 4. Rule: ~ and environment variables in paths are expanded, as a shell would -----


def test_tilde_and_variables_in_paths_are_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    config = validate_config({"cache_dir": "~/vb2p-cache", "release": {"url": "$SCRATCH/mirror"}})
    assert config["cache_dir"] == str(tmp_path / "home" / "vb2p-cache")
    assert config["release"]["url"] == str(tmp_path / "scratch" / "mirror")
    demo = validate_config({"demo": {"out": "${SCRATCH}/demo"}})
    assert demo["demo"]["out"] == str(tmp_path / "scratch" / "demo")
    assert demo["release"]["url"] == str(tmp_path / "scratch" / "demo" / "visual-behavior-ophys")
    assert validate_config({"release": {"url": "~/mirror"}})["release"]["url"] == str(tmp_path / "home" / "mirror")
    s3 = "s3://visual-behavior-ophys-data/visual-behavior-ophys"
    assert validate_config({"release": {"url": s3}})["release"]["url"] == s3
    with pytest.raises(ConfigError, match="cache_dir.*NOT_SET_ANYWHERE"):
        validate_config({"cache_dir": "$NOT_SET_ANYWHERE/cache"})


def test_every_path_key_in_the_schema_is_expanded():
    """The class of bug: a key that holds a path without x-path would create a directory named '~'."""
    path_like = [name for name, node in _schema_nodes(load_schema())
                 if node.get("type") == "string" and name.rsplit(".", 1)[-1] in ("cache_dir", "url", "out", "dir")]
    assert sorted(path_like) == ["cache_dir", "demo.out", "release.url"]
    for name, node in _schema_nodes(load_schema()):
        if name in path_like:
            assert node.get("x-path") is True, name


def test_the_workflow_puts_a_tilde_cache_in_the_home_directory(tmp_path, demo_root):
    home = tmp_path / "home"
    result = run_workflow(tmp_path / "work", {"release": {"url": str(demo_root)}, "cache_dir": "~/vb2p-cache",
                                              "selection": {"max_containers": 1}, "figures": SHORT_WINDOW},
                          "results/release/release.json", env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (home / "vb2p-cache" / layout.CACHE_DOWNLOADED).is_file()
    assert not (tmp_path / "work" / "~").exists()


# ----- 5. Rule: neurons are counted once; ROI totals are labelled as ROI totals -----


def test_neurons_are_counted_once_per_depth_bin(demo_dir, demo_root):
    tables = load_tables({t: demo_root / layout.metadata_key(t) for t in layout.METADATA_TABLES})
    experiments, cells = tables["ophys_experiment_table"], tables["ophys_cells_table"]
    by_depth = counts_by_depth(cells_by_experiment(experiments, cells), cells, 50)
    truth = pd.read_csv(demo_dir / "ground_truth" / "cell_matching.csv")
    truth = truth[truth.valid_roi]
    checked = 0
    for row in by_depth.itertuples():
        in_bin = experiments[(experiments.cre_line == row.cre_line)
                             & (experiments.targeted_structure == row.targeted_structure)
                             & (experiments.imaging_depth // 50 * 50 == row.depth_bin_start_um)]
        if in_bin.ophys_container_id.nunique() != 1:
            continue
        container = truth[truth.ophys_experiment_id.isin(in_bin.index)]
        true_neurons = container[container.container_neuron >= 0].container_neuron.nunique()
        true_neurons += (container.container_neuron < 0).sum()  # each unmatched ROI is a neuron of its own
        assert row.n_neurons == true_neurons, row
        assert row.n_rois_summed_over_experiments == len(container)
        assert row.n_rois_summed_over_experiments > row.n_neurons  # the old count: every session again
        checked += 1
    assert checked >= 2


# ----- 6. Rule: every output location is checked before any work; the failure is reported once -----


@pytest.mark.parametrize("key, value", [("cache_dir", "/sys/vb2p-cache"), ("cache_dir", "/proc/1/vb2p")])
def test_an_impossible_cache_dir_fails_once_before_any_work(tmp_path, demo_root, key, value):
    result = run_workflow(tmp_path, {"release": {"url": str(demo_root)}, key: value})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count(f"cache_dir = {value}: cannot write there") == 1, output[-3000:]
    assert "Traceback" not in output and "PermissionError" not in output
    assert not (tmp_path / "results").exists()


# ----- 7. Rule: only what can pass on a second try is retried; a deterministic failure is reported once -----


def test_a_deterministic_failure_runs_once_and_prints_its_message_once(tmp_path, demo_root):
    result = run_workflow(tmp_path, {"release": {"url": str(demo_root)}, "cache_dir": str(tmp_path / "cache"),
                                     "selection": {"filters": {"targeted_structure": "VISam"}}})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count("selection.filters.targeted_structure: ['VISam'] match no experiment") == 1, output[-3000:]
    assert "Trying to restart" not in output
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert profile["retries"] == 0


# ----- 8. Rule: a selection larger than the configured limit is shown and refused until allowed -----


def test_the_whole_release_is_refused_until_allowed_deliberately(tmp_path):
    from vb2p import steps

    record = tmp_path / "release.json"
    real = REPO / "tests" / "data" / "real_metadata" / "ophys_experiment_table.csv"
    record.write_text(json.dumps({"tables": {"ophys_experiment_table": str(real)}}))
    selection = validate_config({})["selection"]
    with pytest.raises(SelectionError) as error:
        steps.select(selection, 100, record, tmp_path / "selected.csv")
    message = str(error.value)
    assert "1941 experiments" in message and "about 822 GB" in message and "about 2.3 h at 100 MB/s" in message
    assert "download.max_selection_gb (100)" in message
    assert not (tmp_path / "selected.csv").exists()
    assert len(steps.select(selection, None, record, tmp_path / "selected.csv")) == 1941
    assert validate_config({})["download"]["max_selection_gb"] == 100
    one_container = {**selection, "filters": {"ophys_container_id": 791352433}}
    with pytest.raises(SelectionError, match=r"about 6 GB .* about 1 min at 100 MB/s"):  # not "0.0 h"
        steps.select(one_container, 1, record, tmp_path / "selected.csv")


def test_the_readme_first_look_at_the_real_release_is_small(tmp_path):
    from vb2p import steps

    record = tmp_path / "release.json"
    real = REPO / "tests" / "data" / "real_metadata" / "ophys_experiment_table.csv"
    record.write_text(json.dumps({"tables": {"ophys_experiment_table": str(real)}}))
    config = yaml.safe_load((REPO / "config" / "first_look.yaml").read_text())
    assert "config/first_look.yaml" in (REPO / "README.md").read_text()
    full = validate_config(config)
    selected = steps.select(full["selection"], full["download"]["max_selection_gb"], record, tmp_path / "s.csv")
    assert 1 <= len(selected) <= 20
