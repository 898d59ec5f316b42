"""Builds the configured embedder, once per process, and knows its identity without building it.

Adding a backend: write one module with an `Embedder` subclass exposing
`from_settings(settings)` (raising EmbedderUnavailable when it cannot run here) and, when its
identity follows from settings, `identity_for(settings)`; add one line to BACKENDS.

Identity without loading (the immich-ml pattern): a named backend computes it from settings
(`identity_for`); `auto` cannot (it depends on whether open_clip's weights load), so every build
records the identity it got in `store_meta` under a key of the identity-relevant settings, and
`resolve_identity` reads it back. A record also corrects a prediction that proved wrong.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import threading
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from services.embedders.base import Embedder, EmbedderIdentity, EmbedderUnavailable
from services.settings import Settings

if TYPE_CHECKING:
    from services.catalog.store import CatalogStore

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


# --------------------------------------------------------------------------- identity without loading
def predicted_identity(settings: Settings) -> EmbedderIdentity | None:
    """The named backend's `identity_for`; None for `auto` or when it cannot be known unloaded."""
    if settings.embedder == "auto":
        return None
    return backend_class(settings.embedder).identity_for(settings)


def identity_meta_key(settings: Settings) -> str:
    """The store_meta key of these settings: only what can change an identity (not device, batch
    size or credentials, so that tuning those keeps the record), hashed to fit the key column."""
    relevant = {k: v for k, v in settings.model_dump().items() if k.startswith("openclip_")}
    relevant.update(embedder=settings.embedder, dashscope_model=settings.dashscope_model)
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return f"embedder-identity:{digest}"


def _as_identity(value: Any) -> EmbedderIdentity | None:
    if not isinstance(value, dict):
        return None
    try:
        return EmbedderIdentity(**value)
    except TypeError:  # written by another version: ignore rather than guess
        return None


def resolve_identity(settings: Settings, catalog: CatalogStore) -> EmbedderIdentity | None:
    """The identity the configured embedder will have, without loading it; None when unknown.

    A recorded build wins when it was made under the same prediction (it is what loading
    really gave); a prediction that changed since (new weights, other settings) wins over an
    old record. For `auto` only a record can tell.
    """
    from services.catalog.meta import get_meta

    predicted = predicted_identity(settings)
    try:
        record = get_meta(catalog, identity_meta_key(settings))
    except Exception as exc:
        log.warning("cannot read the recorded embedder identity: %s", exc)
        record = None
    if record is not None:
        built = _as_identity(record.get("identity"))
        if built is not None and _as_identity(record.get("predicted")) == predicted:
            return built
    return predicted


def record_identity(settings: Settings, catalog: CatalogStore, built: EmbedderIdentity) -> None:
    """Remember what a build of these settings gave (and what was predicted), if that is news."""
    from services.catalog.meta import get_meta, set_meta

    predicted = predicted_identity(settings)
    if predicted is not None and predicted != built:
        log.warning(
            "embedder identity predicted as %s but the model reports %s; using the model's",
            predicted.describe(),
            built.describe(),
        )
    value = {"identity": asdict(built), "predicted": asdict(predicted) if predicted else None}
    key = identity_meta_key(settings)
    current = get_meta(catalog, key)
    if current != value:
        before = _as_identity(current.get("identity")) if isinstance(current, dict) else None
        if before is not None and before != built and before.photo_model and before.photo_model == built.photo_model:
            # a new text model beside the same photo model: its photo vectors can be reused
            set_meta(catalog, photo_donor_key(built), asdict(before))
        set_meta(catalog, key, value)


def photo_donor_key(identity: EmbedderIdentity) -> str:
    """The store_meta key naming an earlier identity whose photo vectors this one can reuse."""
    return f"photo-vectors:{identity.key}"


def photo_donor(catalog: CatalogStore, identity: EmbedderIdentity) -> EmbedderIdentity | None:
    """The earlier identity (same photo model, another text model) this one took over from, if any."""
    from services.catalog.meta import get_meta

    donor = _as_identity(get_meta(catalog, photo_donor_key(identity)))
    return donor if donor is not None and donor.photo_model == identity.photo_model else None
