"""Catalog ingestion: readers → validation → images → embedding → SQL + Qdrant, and the CLI."""
