"""The pinned environment: conda envs list the lock's versions; direct pins are in the lock."""

from __future__ import annotations

import re

import yaml
from conftest import REPO


def pins(lines):
    result = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]+\])?==(\S+)", line)
        if match:
            result[match.group(1).lower().replace("_", "-")] = match.group(3)
    return result


def lock():
    return pins((REPO / "requirements" / "lock.txt").read_text().splitlines())


def test_every_dependency_is_pinned_exactly():
    for path in ("requirements/lock.txt", "requirements/direct.txt"):
        for line in (REPO / path).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            assert not line or "==" in line, f"{path}: unpinned line {line!r}"


def test_direct_pins_agree_with_the_lock():
    locked = lock()
    direct = pins((REPO / "requirements" / "direct.txt").read_text().splitlines())
    for name in ("snakemake", "pandas", "numpy", "h5py", "pynwb", "zarr", "numcodecs", "boto3", "matplotlib",
                 "xarray", "pytest", "moto"):
        assert name in direct, name
    assert direct["zarr"].startswith("3.1."), "zarr must stay 3.1.x on Python 3.11"
    assert direct["snakemake"].startswith("9.")
    for name, version in direct.items():
        assert locked.get(name) == version, f"{name}: direct {version}, lock {locked.get(name)}"
    assert "hdmf-zarr" not in locked


def test_conda_envs_list_the_locked_versions():
    locked = lock()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for path in envs:
        spec = yaml.safe_load(path.read_text())
        assert "python=3.11" in spec["dependencies"], path.name
        pip_section = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        listed = pins(pip_section)
        assert listed and len(listed) == len(pip_section), path.name
        for name, version in listed.items():
            assert locked.get(name) == version, f"{path.name}: {name}=={version}, lock has {locked.get(name)}"


def test_every_conda_env_is_used_by_a_rule():
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for path in (REPO / "envs").glob("*.yaml"):
        assert f"envs/{path.name}" in rules, f"{path.name} is used by no rule"
