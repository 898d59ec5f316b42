"""Shared fixtures: a tiny open_clip checkpoint built at test time, settings, databases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here; fail fast instead of retrying

pytest_plugins = ["tests.support.fake_dashscope"]


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def openclip_env(tiny_clip_dir: Path) -> dict[str, str]:
    """Environment that selects the test checkpoint through the users' local-path setting."""
    return {"SHOPLENS_EMBEDDER": "openclip", "SHOPLENS_OPENCLIP_MODEL": f"local-dir:{tiny_clip_dir}"}
