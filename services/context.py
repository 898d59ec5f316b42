"""Wires settings into the parts (SQL store, embedder, vector store, media, search), lazily.

The command line, the scheduler and the Streamlit pages all build one of these; the parts are
created on first use so that `shoplens stats` never loads a model: the vector collection is
named by `identity`, which is known from settings or from what an earlier build recorded
(see services/embedders/registry.py), and only `embedder` loads weights.
"""

from __future__ import annotations

import logging
from functools import cached_property

from services.catalog.store import CatalogStore
from services.embedders.base import Embedder, EmbedderIdentity
from services.embedders.registry import get_embedder, photo_donor, record_identity, resolve_identity
from services.images import ImageLimits
from services.media import MediaStore
from services.search import SearchService
from services.settings import Settings, get_settings
from services.vectors import VectorStore, close_embedded_clients

log = logging.getLogger(__name__)


class ShopLens:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()

    @cached_property
    def catalog(self) -> CatalogStore:
        return CatalogStore(self.settings.resolved_database_url)

    @cached_property
    def identity(self) -> EmbedderIdentity:
        """The embedder's identity, without loading the model whenever it can be known otherwise."""
        if "embedder" in self.__dict__:
            return self.embedder.identity
        known = resolve_identity(self.settings, self.catalog)
        return known if known is not None else self.embedder.identity

    @cached_property
    def embedder(self) -> Embedder:
        embedder = get_embedder(self.settings)
        self._adopt(embedder.identity)
        return embedder

    @cached_property
    def vectors(self) -> VectorStore:
        return VectorStore.from_settings(self.settings, self.identity)

    def photo_vectors_from(self) -> VectorStore | None:
        """The collection of the identity this one replaced when only the text model changed
        (offline: MiniLM to multilingual-e5): its photo vectors are reused instead of embedding
        every photo again. None when there is none, or it is gone."""
        try:
            donor = photo_donor(self.catalog, self.embedder.identity)
        except Exception as exc:  # a hint, never a reason to fail an ingest
            log.warning("cannot look for reusable photo vectors: %s", exc)
            return None
        return VectorStore.open_existing(self.settings, donor) if donor is not None else None

    def _adopt(self, built: EmbedderIdentity) -> None:
        """Trust the built model: record its identity, and correct an identity known beforehand."""
        try:
            record_identity(self.settings, self.catalog, built)
        except Exception as exc:
            log.warning("cannot record the embedder identity: %s", exc)
        known = self.__dict__.get("identity")
        if known is not None and known != built:
            log.warning(
                "embedder identity was %s, the model reports %s; switching to it", known.describe(), built.describe()
            )
            self.__dict__["identity"] = built
            if "vectors" in self.__dict__:
                self.vectors.retarget(self.settings, built)

    @cached_property
    def media(self) -> MediaStore:
        return MediaStore(self.settings.media_dir)

    @cached_property
    def limits(self) -> ImageLimits:
        s = self.settings
        return ImageLimits(
            max_bytes=s.max_image_bytes,
            max_pixels=s.max_image_pixels,
            url_timeout=s.url_timeout,
            url_deadline=s.url_deadline,
        )

    @cached_property
    def search(self) -> SearchService:
        return SearchService(
            self.catalog,
            self.vectors,
            self.embedder,
            self.media,
            self.settings.text_vector_weight,
            self.settings.min_score,
            self.limits,
        )

    def close(self) -> None:
        """Release the database pool and the embedded Qdrant folder lock (CLI exit, tests)."""
        if "catalog" in self.__dict__:
            self.catalog.close()
        if "vectors" in self.__dict__ and self.vectors.is_embedded:
            close_embedded_clients()
