"""Pluggable embedders behind one contract (see base.py) and a registry (see registry.py)."""

from services.embedders.base import (
    Embedded,
    Embedder,
    EmbedderIdentity,
    EmbedderUnavailable,
    EmbedError,
    QueryKind,
)
from services.embedders.registry import get_embedder

__all__ = [
    "Embedded",
    "EmbedError",
    "Embedder",
    "EmbedderIdentity",
    "EmbedderUnavailable",
    "QueryKind",
    "get_embedder",
]
