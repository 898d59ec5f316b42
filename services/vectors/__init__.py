"""Vectors: the embedded engine by default, a Qdrant server or cluster by URL.

The store (`store.py`) is imported on first use: it brings settings and the embedder registry,
which a part server (`part_server.py`, a process that only opens one part of the embedded
engine) and the index build child never need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from services.vectors.base import (
    IMAGE,
    TEXT,
    Hit,
    IndexBuild,
    PointData,
    PointFilter,
    ProductFilter,
    VectorStoreUnavailable,
    image_point_id,
    text_point_id,
)

if TYPE_CHECKING:
    from services.vectors.store import BACKENDS, VectorStore, backend_name, close_embedded_clients

_FROM_STORE = ("BACKENDS", "VectorStore", "backend_name", "close_embedded_clients")


def __getattr__(name: str) -> Any:
    if name in _FROM_STORE:
        return getattr(importlib.import_module("services.vectors.store"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "IMAGE",
    "TEXT",
    "Hit",
    "IndexBuild",
    "PointData",
    "PointFilter",
    "ProductFilter",
    "VectorStore",
    "VectorStoreUnavailable",
    "backend_name",
    "close_embedded_clients",
    "image_point_id",
    "text_point_id",
]
