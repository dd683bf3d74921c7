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
    generate_release(out, seed=SEED, size=SMALL, manifest_version="1.0.0")
    return out


@pytest.fixture(scope="session")
def demo_root(demo_dir) -> Path:
    return demo_dir / "visual-behavior-ophys"
