"""Wires settings into the parts (SQL store, embedder, vector store, media, search), lazily.

The command line, the scheduler and the Streamlit pages all build one of these; the parts are
created on first use so that `shoplens stats` never loads a model.
"""

from __future__ import annotations

from functools import cached_property

from services.catalog.store import CatalogStore
from services.embedders.base import Embedder
from services.embedders.registry import get_embedder
from services.images import ImageLimits
from services.media import MediaStore
from services.search import SearchService
from services.settings import Settings, get_settings
from services.vectors import VectorStore, close_embedded_clients


class ShopLens:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()

    @cached_property
    def catalog(self) -> CatalogStore:
        return CatalogStore(self.settings.resolved_database_url)

    @cached_property
    def embedder(self) -> Embedder:
        return get_embedder(self.settings)

    @cached_property
    def vectors(self) -> VectorStore:
        return VectorStore.from_settings(self.settings, self.embedder.identity)

    @cached_property
    def media(self) -> MediaStore:
        return MediaStore(self.settings.media_dir)

    @cached_property
    def limits(self) -> ImageLimits:
        s = self.settings
        return ImageLimits(max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels, url_timeout=s.url_timeout)

    @cached_property
    def search(self) -> SearchService:
        return SearchService(self.catalog, self.vectors, self.embedder, self.media, self.settings.text_vector_weight, self.settings.min_score)

    def close(self) -> None:
        """Release the database pool and the embedded Qdrant folder lock (CLI exit, tests)."""
        if "catalog" in self.__dict__:
            self.catalog.close()
        if "vectors" in self.__dict__ and self.vectors.is_embedded:
            close_embedded_clients()
