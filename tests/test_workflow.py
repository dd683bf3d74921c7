"""The Snakemake workflow as a whole: lint and format clean, and the demo run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from conftest import REPO


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


def test_demo_run_generates_the_release(tmp_path):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["demo"].update(duration_s=30, cells_per_plane=6, mice=2)
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--configfile", str(tmp_path / "demo.yaml"),
                       "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = tmp_path / "resources/demo_release/visual-behavior-ophys/manifests"
    manifest = json.loads((manifest / "visual-behavior-ophys_project_manifest_v1.0.0.json").read_text())
    assert len(manifest["data_files"]) > 0
    assert (tmp_path / "results/logs/demo_release.log").exists()
    assert (tmp_path / "results/benchmarks/demo_release.tsv").exists()
