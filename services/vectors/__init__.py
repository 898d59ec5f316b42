"""Vectors in Qdrant (embedded on-disk store by default, a server or cluster by URL)."""

from services.vectors.store import (
    IMAGE,
    TEXT,
    Hit,
    PointData,
    VectorStore,
    VectorStoreUnavailable,
    close_embedded_clients,
    image_point_id,
    make_client,
    text_point_id,
)

__all__ = [
    "IMAGE",
    "TEXT",
    "Hit",
    "PointData",
    "VectorStore",
    "VectorStoreUnavailable",
    "close_embedded_clients",
    "image_point_id",
    "make_client",
    "text_point_id",
]
