"""Builds the configured embedder, once per process.

Adding a backend: write one module with an `Embedder` subclass exposing
`from_settings(settings)` (raising EmbedderUnavailable when it cannot run here) and add one line
to BACKENDS.
"""

from __future__ import annotations

import importlib
import logging
import threading

from services.embedders.base import Embedder, EmbedderUnavailable
from services.settings import Settings

log = logging.getLogger(__name__)

BACKENDS: dict[str, str] = {
    "openclip": "services.embedders.openclip:OpenClipEmbedder",
    "offline": "services.embedders.offline:OfflineEmbedder",
    "dashscope": "services.embedders.dashscope:DashScopeEmbedder",
}
AUTO_ORDER = ("openclip", "offline")

_cache: dict[tuple, Embedder] = {}
_lock = threading.Lock()


def backend_class(name: str) -> type[Embedder]:
    try:
        module_name, _, attr = BACKENDS[name].partition(":")
    except KeyError:
        raise EmbedderUnavailable(f"unknown embedder {name!r}; choose one of {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module_name), attr)


def _cache_key(settings: Settings) -> tuple:
    relevant = settings.model_dump(include={"embedder", "device", "torch_threads", "embed_batch_size"})
    relevant.update({k: v for k, v in settings.model_dump().items() if k.startswith(("openclip_", "dashscope_"))})
    return tuple(sorted((k, str(v)) for k, v in relevant.items()))


def get_embedder(settings: Settings) -> Embedder:
    """The embedder the settings name; with `auto`, open_clip when its weights load, else offline."""
    key = _cache_key(settings)
    with _lock:
        if key not in _cache:
            _cache[key] = _build(settings)
        return _cache[key]


def _build(settings: Settings) -> Embedder:
    if settings.embedder != "auto":
        return backend_class(settings.embedder).from_settings(settings)
    reasons = []
    for name in AUTO_ORDER:
        try:
            embedder = backend_class(name).from_settings(settings)
        except EmbedderUnavailable as exc:
            reasons.append(f"{name}: {exc}")
            log.warning("embedder %s unavailable: %s", name, exc)
            continue
        if reasons:
            embedder.fallback_reason = "; ".join(reasons)
        return embedder
    raise EmbedderUnavailable("no embedder can run here: " + "; ".join(reasons))


def clear_cache() -> None:
    with _lock:
        for embedder in _cache.values():
            embedder.close()
        _cache.clear()
