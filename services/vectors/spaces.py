"""Photos and texts in separate vector spaces: one collection each, behind one backend.

Why: an engine stores a named vector densely, one slot per point of its collection, whether
the point has that vector or not. With photos and texts in one collection every photo point
carried an empty text slot and every text point an empty photo slot (at 100k products × 3
photos, 195 MB mapped for nothing). Here each space is its own collection holding one vector
per point, and `Spaces` routes every call to the space(s) it concerns, so the layers above
still speak of one store.

A store written before the split (both spaces in one collection, `legacy`) is copied into the
two spaces the first time it is opened, then dropped; the copy is an idempotent upsert by
point id, so an upgrade cut short starts over from the intact old collection.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from dataclasses import replace
from itertools import chain
from typing import Any

import numpy as np

from services.vectors.base import TEXT, Hit, IndexBuild, PointData, PointFilter, Record, VectorBackend, summed_facets

log = logging.getLogger(__name__)


class Spaces(VectorBackend):
    """One backend per vector space (`image`, `text`); point payloads name their space (`kind`)."""

    def __init__(self, parts: dict[str, VectorBackend], legacy: VectorBackend | None = None):
        self.parts = parts
        self.legacy = legacy
        first = next(iter(parts.values()))
        self.name = first.name
        self.group_fetch_cap = first.group_fetch_cap

    @property
    def is_embedded(self) -> bool:
        return next(iter(self.parts.values())).is_embedded

    def _part(self, space: str) -> VectorBackend:
        try:
            return self.parts[space]
        except KeyError:
            raise ValueError(f"no vector space named {space!r} (spaces: {', '.join(self.parts)})") from None

    def _for(self, flt: PointFilter | None) -> list[VectorBackend]:
        """The spaces a filter can pass points of: one when it names a kind, else all."""
        if flt is None or flt.kind is None:
            return list(self.parts.values())
        return [self.parts[flt.kind]] if flt.kind in self.parts else []

    def _reading(self, flt: PointFilter | None) -> list[tuple[VectorBackend, PointFilter | None]]:
        """The spaces to read, each with the filter it needs: a space holds one kind only, so the
        kind clause is dropped (a clause that passes every point still makes the engine walk the
        payload index instead of scanning, or searching its graph, unfiltered)."""
        return [(part, None if flt is None else _without_kind(flt)) for part in self._for(flt)]

    # -- lifecycle ------------------------------------------------------------------------
    def ensure(self, dims: dict[str, int]) -> None:
        for space, part in self.parts.items():
            part.ensure({space: dims[space]})
        if self.legacy is not None and self.legacy.exists():
            self._adopt_legacy()

    def _adopt_legacy(self) -> None:
        """Copy a one-collection store into the spaces (by id: safe to repeat), then drop it."""
        assert self.legacy is not None
        copied = 0
        for batch in self.legacy.scroll(None, with_vectors=True):
            points = [p for p in map(_point, batch) if p is not None]
            self.upsert(points)
            copied += len(points)
        for part in self.parts.values():
            part.close()  # flushed before the only other copy goes
        self.legacy.drop()
        log.info("vector store upgraded to one collection per vector space: %d points copied", copied)

    def exists(self) -> bool:
        return any(p.exists() for p in self.parts.values()) or bool(self.legacy and self.legacy.exists())

    def drop(self) -> None:
        for part in self.parts.values():
            part.drop()
        if self.legacy is not None:
            self.legacy.drop()

    def close(self) -> None:
        for part in self.parts.values():
            part.close()

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, points: Sequence[PointData]) -> None:
        by_space: dict[str, list[PointData]] = {}
        for p in points:
            by_space.setdefault(p.kind, []).append(p)
        for space, group in by_space.items():
            self._part(space).upsert(group)

    def overwrite_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        by_space: dict[str, dict[str, dict[str, Any]]] = {}
        for pid, payload in payloads.items():
            by_space.setdefault(str(payload["kind"]), {})[pid] = payload
        for space, group in by_space.items():
            self._part(space).overwrite_payloads(group)

    def delete_where(self, flt: PointFilter, keep_ids: Collection[str] = ()) -> None:
        for part in self._for(flt):
            part.delete_where(flt, keep_ids)

    def delete_ids(self, ids: Sequence[str]) -> None:
        for part in self.parts.values():
            part.delete_ids(ids)

    def build_index(self) -> IndexBuild | None:
        builds = {space: part.build_index() for space, part in self.parts.items()}
        done = {space: b for space, b in builds.items() if b is not None}
        held = {f"{space} {step}": ms for space, b in done.items() for step, ms in b.held.items()}
        return IndexBuild.of_several(list(done.values()), held)

    # -- reads ----------------------------------------------------------------------------
    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Record]:
        return [r for part in self.parts.values() for r in part.retrieve(ids, with_vectors)]

    def search(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> list[Hit]:
        return self._searching(using, flt).search(vector, using, _without_kind(flt), limit)

    def search_grouped(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> list[Hit]:
        return self._searching(using, flt).search_grouped(vector, using, _without_kind(flt), limit)

    def search_batch(
        self, vectors: Sequence[np.ndarray], using: str, flts: Sequence[PointFilter], limit: int
    ) -> list[list[Hit]]:
        part = self._part(using)
        if any(f.kind not in (None, using) for f in flts):
            raise ValueError(f"a search of the {using} space cannot pass points of another kind")
        return part.search_batch(vectors, using, [_without_kind(f) for f in flts], limit)

    def _searching(self, using: str, flt: PointFilter) -> VectorBackend:
        if flt.kind not in (None, using):
            raise ValueError(f"a search of the {using} space cannot pass {flt.kind} points")
        return self._part(using)

    def scroll(self, flt: PointFilter | None, with_vectors: bool) -> Iterator[list[Record]]:
        return chain.from_iterable(part.scroll(f, with_vectors) for part, f in self._reading(flt))

    def count(self, flt: PointFilter | None = None) -> int:
        return sum(part.count(f) for part, f in self._reading(flt))

    def lexical_search(self, text: str, flt: PointFilter, limit: int) -> list[Hit]:
        # the words live on text points only
        return self._part(TEXT).lexical_search(text, _without_kind(flt), limit) if flt.kind in (None, TEXT) else []

    def facet(self, key: str, flt: PointFilter | None, limit: int) -> list[tuple[str, int]]:
        return summed_facets((part.facet(key, f, limit) for part, f in self._reading(flt)), limit)


def _without_kind(flt: PointFilter) -> PointFilter:
    return replace(flt, kind=None)


def _point(record: Record) -> PointData | None:
    kind = record.payload.get("kind")
    vector = record.vectors.get(str(kind)) if kind is not None else None
    if vector is None:
        log.warning("vector store upgrade: point %s has no %s vector; skipped", record.id, kind)
        return None
    return PointData(record.id, str(kind), vector, record.payload)
