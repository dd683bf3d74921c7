"""The Snakemake workflow as a whole: lint and format clean, and the demo run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from conftest import REPO, quick


def snakemake(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "snakemake", *args], capture_output=True, text=True, cwd=cwd)


def test_snakemake_lint_has_no_findings():
    result = snakemake("--lint", "--configfile", "config/demo.yaml")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output and "Congratulations" in output, output


def test_snakefmt_check_is_clean():
    files = ["Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "snakefmt"), "--check", *files], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_demo_run_syncs_selects_and_extracts_every_selected_experiment(tmp_path):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["demo"].update(duration_s=30, cells_per_plane=6, mice=1)
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(quick({**config, "selection": {}})))  # no filters
    result = snakemake("-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--configfile", str(tmp_path / "demo.yaml"),
                       "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = tmp_path / "resources/demo_release/visual-behavior-ophys/manifests"
    manifest = json.loads((manifest / "visual-behavior-ophys_project_manifest_v1.0.0.json").read_text())
    assert len(manifest["data_files"]) > 0
    for step in ("demo_release", "sync_metadata", "release_overview", "select_experiments"):
        assert (tmp_path / f"results/logs/{step}.log").exists(), step
        assert (tmp_path / f"results/benchmarks/{step}.tsv").exists(), step
    assert (tmp_path / "cache/demo/_manifest_last_used.txt").exists()
    summary = (tmp_path / "results/overview/summary.csv").read_text()
    assert "mice,1" in summary
    selected = (tmp_path / "results/selection/experiments.csv").read_text().splitlines()
    assert len(selected) - 1 == int(summary.split("ophys_experiments,")[1].split()[0])  # no filters: everything
    index = (tmp_path / "results/zarr/index.csv").read_text().splitlines()
    assert len(index) == len(selected)
    for line in index[1:]:
        assert (tmp_path / "results/zarr" / line.split(",")[1]).is_dir()
    assert (tmp_path / "results/qc/cell_count_mismatches.csv").read_text().startswith("ophys_experiment_id,")
    # The task of a session of several planes (Mesoscope) is read once and every plane's store holds those files; a
    # session of one plane (Scientifica) has no session task: its extraction reads the task itself. (This demo of one
    # mouse may have no Mesoscope session: test_download_modes runs one of 4 planes.)
    import pandas as pd

    experiments = pd.read_csv(tmp_path / "results/selection/experiments.csv")
    planes = experiments.groupby("ophys_session_id").ophys_experiment_id.agg(list)
    shared = planes[planes.map(len) > 1]
    assert (planes.map(len) == 1).any()
    assert sorted(p.stem for p in (tmp_path / "results/logs/session_task").glob("*.log")) == sorted(map(str, shared.index))
    assert sorted(p.name for p in (tmp_path / "results/task").glob("*")) == sorted(map(str, shared.index))
    for session_id, experiment_ids in planes.items():
        tables = sorted((tmp_path / f"results/task/{session_id}").glob("*.parquet"))
        assert (session_id in shared) == bool(tables)
        for experiment_id in experiment_ids:
            store_tables = sorted((tmp_path / f"results/zarr/{experiment_id}.zarr/task").glob("*.parquet"))
            assert {t.stem for t in store_tables} >= {"stimulus_presentations", "trials", "running_speed"}
            for table in tables:
                assert (tmp_path / f"results/zarr/{experiment_id}.zarr/task/{table.name}").samefile(table)
            log = (tmp_path / f"results/logs/extract_experiment/{experiment_id}.log").read_text()
            assert "own task" not in log, log


def test_an_empty_selection_stops_the_run_with_a_message(tmp_path, demo_root):
    config = {"release": {"url": str(demo_root)}, "cache_dir": str(tmp_path / "cache"),
              "selection": {"filters": {"targeted_structure": "VISam"}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(quick(config)))
    result = snakemake("-s", str(REPO / "Snakefile"), "-d", str(tmp_path / "w"), "--configfile", str(tmp_path / "c.yaml"),
                       "--cores", "1")
    assert result.returncode != 0
    log = (tmp_path / "w/results/logs/select_experiments.log").read_text()
    assert "selection.filters.targeted_structure" in log and "VISl, VISp" in log
    assert not (tmp_path / "w/results/selection/experiments.csv").exists()


def test_a_corrupt_nwb_fails_its_experiment_and_keep_going_finishes_the_others(tmp_path, demo_dir):
    """A file published broken (its manifest hash matches the broken bytes): extraction names it, others finish."""
    import hashlib
    import shutil

    release = tmp_path / "release"
    shutil.copytree(demo_dir / "visual-behavior-ophys", release)
    manifest_path = release / "manifests/visual-behavior-ophys_project_manifest_v1.0.0.json"
    manifest = json.loads(manifest_path.read_text())
    victim_key, victim = next((k, v) for k, v in manifest["data_files"].items() if "behavior_ophys_experiment_" in v["url"])
    victim_path = release / victim["url"].split("/visual-behavior-ophys/", 1)[1]
    victim_path.write_bytes(victim_path.read_bytes()[:300_000])
    manifest["data_files"][victim_key]["file_hash"] = hashlib.blake2b(victim_path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    victim_id = victim_path.stem.rsplit("_", 1)[1]
    config = {"release": {"url": str(release)}, "cache_dir": str(tmp_path / "cache"),
              "selection": {"filters": {"equipment_name": "CAM2P.4"}}}  # the victim's container: 5 experiments
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(quick(config)))
    result = snakemake("-s", str(REPO / "Snakefile"), "-d", str(tmp_path / "w"), "--configfile", str(tmp_path / "c.yaml"),
                       "--cores", "2", "--keep-going")
    assert result.returncode != 0
    import pandas as pd

    selected = pd.read_csv(tmp_path / "w/results/selection/experiments.csv", index_col="ophys_experiment_id")
    assert int(victim_id) in selected.index and len(selected) >= 5
    for experiment_id in selected.index:
        store = tmp_path / f"w/results/zarr/{experiment_id}.zarr"
        assert store.exists() == (experiment_id != int(victim_id)), experiment_id
    # A Scientifica session has one plane: no session task; the victim's extraction names it.
    assert not (tmp_path / "w/results/logs/session_task").exists()
    log = (tmp_path / f"w/results/logs/extract_experiment/{victim_id}.log").read_text()
    assert f"experiment {victim_id}" in log and str(victim_path.name) in log
    assert not list((tmp_path / "w/results/zarr").glob(".*partial"))


def test_every_step_by_hand_gives_what_the_workflow_gives(tmp_path, demo_root):
    """The README's by-hand commands, one per rule, in a fresh directory: the same tables as a Snakemake run."""
    import pandas as pd
    from conftest import run_workflow

    config = {"release": {"url": str(demo_root)},
              "selection": {"filters": {"equipment_name": "CAM2P.3", "session_number": [1, 2]}},
              "figures": {"session_window_s": [10, 40]}}
    by_hand, workflow = tmp_path / "by_hand", tmp_path / "workflow"
    for directory in (by_hand, workflow):
        directory.mkdir()
        (directory / "config").mkdir()
        (directory / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
        (directory / "mine.yaml").write_text(yaml.safe_dump({**config, "cache_dir": str(directory / "cache")}))
    assert run_workflow(workflow, {**config, "cache_dir": str(workflow / "cache")}).returncode == 0

    def vb2p(*args):
        result = subprocess.run([sys.executable, "-m", "vb2p", *args], cwd=by_hand, capture_output=True, text=True,
                                env={**__import__("os").environ, "PYTHONPATH": str(REPO / "workflow")})
        assert result.returncode == 0, (args, result.stderr[-2000:])
        return result.stdout + result.stderr  # the steps log to stderr

    mine = ["--config", "mine.yaml"]
    vb2p("sync", *mine)
    vb2p("overview")
    vb2p("select", *mine)
    selected = pd.read_csv(by_hand / "results/selection/experiments.csv")
    for experiment_id in selected.ophys_experiment_id:
        vb2p("download", *mine, "--experiment", str(experiment_id))
    for session_id in selected.ophys_session_id.unique():  # Scientifica: one plane each, no session task
        assert "nothing to do" in vb2p("session-task", *mine, "--session", str(session_id))
    for experiment_id in selected.ophys_experiment_id:
        vb2p("extract", *mine, "--experiment", str(experiment_id))
    vb2p("index")
    for container_id in selected.ophys_container_id.unique():
        vb2p("alignment", *mine, "--container", str(container_id))
    for session_id in selected.ophys_session_id.unique():
        vb2p("population", *mine, "--session", str(session_id))
        vb2p("behavior", "--session", str(session_id))
    vb2p("behavior-performance")
    for experiment_id in selected.ophys_experiment_id:
        vb2p("responses", *mine, "--experiment", str(experiment_id))
    vb2p("response-table")
    vb2p("platform", *mine)
    vb2p("cell-counts", *mine)
    tables = sorted(p.relative_to(workflow) for p in (workflow / "results").rglob("*.csv"))
    assert len(tables) > 15
    for relative in tables:
        assert (by_hand / relative).read_bytes() == (workflow / relative).read_bytes(), relative
    # Downloading again finds the file in the cache: nothing moved, and the index says how many such files it saw
    assert "files already in the cache: 0)" in vb2p("index")
    vb2p("download", *mine, "--experiment", str(selected.ophys_experiment_id.iloc[0]))
    vb2p("extract", *mine, "--experiment", str(selected.ophys_experiment_id.iloc[0]))
    assert f"{len(selected)} stores" in (logged := vb2p("index")) and "files already in the cache: 1)" in logged


def test_the_readmes_by_hand_commands_parse_and_pass_the_runs_config_to_every_step_that_reads_it():
    """Each line of the README's by-hand block is a valid `vb2p` command, and every step that takes --config is
    given the demo's config, as `make run` was (without it a step silently works with other settings)."""
    import re
    import shlex

    from vb2p.cli import build_parser

    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Running a step by hand.*?```bash\n(.*?)```", readme, flags=re.S).group(1)
    commands = [shlex.split(line.partition("#")[0])[1:] for line in block.splitlines()]
    parser = build_parser()
    subparsers = parser._subparsers._group_actions[0].choices
    steps = [args[0] for args in commands if args[0] != "--help"]
    # publish is no rule's step: the README shows it where it explains sharing
    assert set(steps) == set(subparsers) - {"publish"}, "every rule's step has its line in the README"
    for args in commands:
        if args[0] == "--help":
            continue
        parser.parse_args(args)  # exits (fails the test) on an unknown option or a missing required one
        takes_config = any("--config" in action.option_strings for action in subparsers[args[0]]._actions)
        assert takes_config == ("--config" in args), args
        if takes_config:
            assert args[args.index("--config") + 1] == "config/demo.yaml", args
