"""The workflow through profiles/slurm on a real one-node SLURM cluster on localhost (slurm-wlm 22.05 with slurmdbd,
so the executor plugin's sacct status checks work): outputs equal a local run's, and a job killed mid-run with
its processes killed is retried and the run completes with nothing lost.

(`scancel` is not used for the fault: snakemake-executor-plugin-slurm 2.8.0 reads sacct's "CANCELLED by <uid>" as
a running job and waits forever; profiles/README.md gives the workaround.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
import yaml
from conftest import REPO, SEED
from matplotlib.testing.compare import compare_images

from vb2p.demo.design import DemoSize
from vb2p.demo.generate import generate_release

START_CLUSTER = REPO / "tests" / "slurm" / "start_cluster.sh"
# Poll quickly on a test cluster; the profile keeps the plugin's gentler defaults for real clusters.
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2"]


@pytest.fixture(scope="module")
def slurm_cluster():
    if shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed here (.ci/run installs slurm-wlm, slurmdbd, mariadb-server, munge)")
    result = subprocess.run(["bash", str(START_CLUSTER)], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.skip(f"could not start the one-node SLURM cluster: {result.stderr[-1500:]}")
    return True


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """One release read by both runs, so their inputs are the same bytes."""
    out = tmp_path_factory.mktemp("slurm_release")
    return generate_release(out, seed=SEED, size=DemoSize(mice=2, duration_s=40.0, cells_per_plane=9))


def run_config(workdir, release):
    config = {
        "release": {"url": str(release)},
        "cache_dir": str(workdir / "cache"),
        "selection": {"filters": {"session_number": [1, 2]}, "max_containers": 1},
        "responses": {"event_types": ["changes", "omissions"], "data_types": ["dff"]},
        "figures": {"session_window_s": [10, 35]},
    }
    path = workdir / "config.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake_command(workdir, config, *extra):
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            "--configfile", str(config), *extra]


def running_slurm_jobs() -> list[str]:
    result = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True)
    return result.stdout.split()


def test_slurm_run_survives_a_killed_job_and_equals_a_local_run(slurm_cluster, release, tmp_path):
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    result = subprocess.run(snakemake_command(local, run_config(local, release), "--cores", "2"),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    command = snakemake_command(cluster, run_config(cluster, release),
                                "--workflow-profile", str(REPO / "profiles" / "slurm"), *FAST_STATUS)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        for job in running_slurm_jobs():
            # Kill the job's processes on the node, as an out-of-memory killer or a crash would.
            listed = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True).stdout
            pids = [line.split()[0] for line in listed.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
            pids = [pid for pid in pids if int(pid) > 1]
            if pids:
                time.sleep(1.0)  # let it get going: the kill lands mid-job
                subprocess.run(["kill", "-9", *pids], check=False)
                killed = job
                break
        time.sleep(0.3)
    output, _ = process.communicate(timeout=900)
    assert killed is not None, "no SLURM job was seen running: " + output[-2000:]
    assert process.returncode == 0, output[-4000:]
    states = subprocess.run(["sacct", "-n", "-X", "-j", killed, "-o", "State"], capture_output=True, text=True)
    assert "FAILED" in states.stdout or "CANCELLED" in states.stdout, states.stdout
    assert "Trying to restart job" in output or "attempt" in output.lower()

    compare_runs(local / "results", cluster / "results")


def compare_runs(local, cluster):
    tables = sorted(p.relative_to(local) for p in local.rglob("*.csv"))
    assert len(tables) > 20
    assert tables == sorted(p.relative_to(cluster) for p in cluster.rglob("*.csv"))
    for relative in tables:
        assert (local / relative).read_bytes() == (cluster / relative).read_bytes(), relative
    stores = sorted(p.relative_to(local) for p in (local / "zarr").glob("*.zarr"))
    assert stores == sorted(p.relative_to(cluster) for p in (cluster / "zarr").glob("*.zarr")) and stores
    for relative in stores:
        a, b = xr.open_zarr(local / relative), xr.open_zarr(cluster / relative)
        for name in a.variables:
            np.testing.assert_array_equal(a[name].values, b[name].values)
        strip = lambda attrs: {k: v for k, v in attrs.items() if k != "provenance"}  # noqa: E731
        assert strip(a.attrs) == strip(b.attrs)
        assert a.attrs["provenance"]["file_hash"] == b.attrs["provenance"]["file_hash"]
    figures = sorted(p.relative_to(local) for p in local.rglob("*.png"))
    assert figures == sorted(p.relative_to(cluster) for p in cluster.rglob("*.png")) and figures
    for relative in figures:
        assert compare_images(str(local / relative), str(cluster / relative), tol=1.0) is None, relative


FAKE_SBATCH = """#!/bin/bash
# Records the submission and prints a job id, as `sbatch --parsable` does; runs nothing.
n=$(( $(cat {log} 2>/dev/null | wc -l) + 1001 ))
echo "$n $*" >> {log}
echo "$n"
"""
FAKE_SACCT = """#!/bin/bash
# Status queries (--name <run id>): every submitted job has failed. Account queries: none.
case "$*" in *--name*) cut -d' ' -f1 {log} 2>/dev/null | sed 's/$/|FAILED/' ;; esac
exit 0
"""


def test_a_resumed_run_submits_each_job_once_in_a_job_of_its_own(release, tmp_path):
    """On a run resumed after the select_experiments checkpoint, with the profile unchanged, each sbatch call carries
    one job and no job is submitted twice. (With job groups, Snakemake merged the batches again when it re-planned
    after the checkpoint: jobs were submitted twice, once in an oversized batch; profiles/slurm/config.yaml.) sbatch
    and sacct are stand-ins that record submissions and report them failed, so no job runs and none is retried."""
    import re

    fake, log = tmp_path / "bin", tmp_path / "sbatch.log"
    fake.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("squeue", "#!/bin/bash\n"),
                       ("sinfo", "#!/bin/bash\n"), ("scontrol", "#!/bin/bash\n"), ("sacctmgr", "#!/bin/bash\n")):
        (fake / name).write_text(text.format(log=log))
        (fake / name).chmod(0o755)
    workdir = tmp_path / "run"
    config = run_config(workdir, release)
    settings = yaml.safe_load(config.read_text())
    settings["selection"] = {}  # every experiment of the small release: several multi-plane sessions
    config.write_text(yaml.safe_dump(settings))
    planned = subprocess.run(snakemake_command(workdir, config, "--cores", "2", "--until", "select_experiments"),
                             capture_output=True, text=True)
    assert planned.returncode == 0, planned.stderr[-3000:]

    env = {**__import__("os").environ, "PATH": f"{fake}:{__import__('os').environ['PATH']}"}
    resumed = subprocess.run(snakemake_command(workdir, config, "--workflow-profile", str(REPO / "profiles" / "slurm"),
                                               *FAST_STATUS, "--retries", "0"),
                             capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode != 0  # every submitted job reported failed
    submissions = [re.findall(r"'(\w+:[^']*)'", line.split("--target-jobs", 1)[1].split(" --", 1)[0])
                   for line in log.read_text().splitlines()]
    jobs = [job for targets in submissions for job in targets]
    assert sum(job.startswith("session_task:") for job in jobs) >= 2, jobs
    assert sum(job.startswith("extract_experiment:") for job in jobs) >= 2, jobs
    assert all(len(targets) == 1 for targets in submissions), [t for t in submissions if len(t) > 1]
    assert len(jobs) == len(set(jobs)), sorted(job for job in jobs if jobs.count(job) > 1)
