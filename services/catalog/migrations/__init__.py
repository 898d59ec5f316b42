"""Alembic migration environment of the catalog store (a package so it ships with `services`)."""
