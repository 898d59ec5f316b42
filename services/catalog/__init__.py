"""Product metadata in SQL (SQLAlchemy 2): products, their images, ingest runs."""

from services.catalog.models import IngestRun, Product, ProductImage
from services.catalog.store import CatalogStore, CatalogUnavailable, Facets

__all__ = ["CatalogStore", "CatalogUnavailable", "Facets", "IngestRun", "Product", "ProductImage"]
