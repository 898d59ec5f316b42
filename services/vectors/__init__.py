"""Vectors: the embedded engine by default, a Qdrant server or cluster by URL."""

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
from services.vectors.store import BACKENDS, VectorStore, backend_name, close_embedded_clients

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
