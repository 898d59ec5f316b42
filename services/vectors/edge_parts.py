"""One collection of the embedded engine as a row of shards of bounded size, each served by
its own part server.

Why: the engine holds the GIL while it opens, closes or flushes a shard, for a time in proportion
to the shard, so one shard per collection in the serving process froze every search for up to a
second at the end of each index build. Here each part lives in a part server (part_server.py), so
this process never waits on the engine with the GIL held. Writes fill the last part (the tail);
when it holds `EdgeTuning.part_kb` of vectors its HNSW graph is built (in a child process, searches
go on) and a new tail is started, so a bulk load indexes as it goes and no part outgrows one
build. A search asks every part at once and merges their answers by score.

Layout: the first part is the folder `<collection>` (a store made before parts opens as it is);
the next ones are `<collection>@1`, `<collection>@2`, … beside it. A point lives in exactly one
part: a write of a point already held by an earlier part goes to that part.

Lexical (BM25) scores are each part's own: its word statistics are its own points'. Past one
part they are close to, not equal to, those of a single shard; a part holds 100k or more texts.
"""

from __future__ import annotations

import heapq
import shutil
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.vectors.base import Hit, IndexBuild, PointData, PointFilter, Record, VectorBackend, summed_facets
from services.vectors.edge import EdgeTuning, shared
from services.vectors.part_server import ServedPart

_SEP = "@"


class _Row:
    """The parts of one collection, shared by every backend object of this process."""

    def __init__(self, root: Path, collection: str, tuning: EdgeTuning):
        self.root, self.collection, self.tuning = root, collection, tuning
        self.lock = threading.Lock()  # writers: routing a batch, starting a new tail
        self.parts = [self.opened(name) for name in [collection, *self.found()]]
        self.dims: dict[str, int] | None = None
        self.seals: list[IndexBuild] = []  # the builds of parts that filled, in this process

    def opened(self, name: str) -> ServedPart:
        """A part and its part server (one per part and process: a part server reopens it)."""
        shard = shared(self.root / name)
        return shard.served if shard.served is not None else ServedPart(shard, self.tuning)

    def found(self) -> list[str]:
        """The numbered parts on disk, in order."""
        numbered = []
        for folder in self.root.glob(f"{self.collection}{_SEP}*") if self.root.exists() else []:
            suffix = folder.name[len(self.collection) + 1 :]
            if folder.is_dir() and suffix.isdigit():
                numbered.append((int(suffix), folder.name))
        return [name for _, name in sorted(numbered)]


_rows: dict[tuple[Path, str], _Row] = {}
_rows_lock = threading.Lock()


def _row(root: Path, collection: str, tuning: EdgeTuning) -> _Row:
    with _rows_lock:
        key = (root.resolve(), collection)
        if key not in _rows:
            _rows[key] = _Row(root, collection, tuning)
        return _rows[key]


def forget_rows() -> None:
    """With `close_shards`: a process that reopens its stores finds their parts on disk again."""
    with _rows_lock:
        _rows.clear()


class EdgeParts(VectorBackend):
    name = "edge"

    def __init__(self, root: Path, collection: str, tuning: EdgeTuning | None = None):
        self.root, self.collection = root, collection
        self.tuning = tuning or EdgeTuning()
        self.row = _row(root, collection, self.tuning)

    @property
    def is_embedded(self) -> bool:
        return True

    def _parts(self) -> list[ServedPart]:
        return list(self.row.parts)

    def _ask(self, method: str, *args: Any) -> list[Any]:
        """Every part's answer, asked at once: the part servers work side by side."""
        return _asked(self._parts(), method, *args)

    def _capacity(self) -> int:
        """Points a part takes before it is sealed: `part_kb` of float32 vectors."""
        dim = sum((self.row.dims or {"": 512}).values())
        return max(1, self.row.tuning.part_kb * 1024 // (dim * 4))

    # -- lifecycle ------------------------------------------------------------------------
    def ensure(self, dims: dict[str, int]) -> None:
        self.row.dims = dict(dims)
        with self.row.lock:
            for part in self._parts():
                part.ensure(dims)

    def exists(self) -> bool:
        return (self.root / self.collection).exists()

    def drop(self) -> None:
        with self.row.lock:
            for part in self._parts():
                part.drop()
            for folder in self.row.found():
                shutil.rmtree(self.root / folder, ignore_errors=True)
            self.row.parts = [self.row.opened(self.collection)]

    def close(self) -> None:
        for part in self._parts():
            part.close()

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, points: Sequence[PointData]) -> None:
        if not points:
            return
        with self.row.lock:
            parts = self._parts()
            owners = self._owners(parts[:-1], [p.id for p in points])
            for i, part in enumerate(parts[:-1]):
                mine = [p for p in points if owners.get(p.id) == i]
                if mine:
                    part.upsert(mine)
            rest = [p for p in points if p.id not in owners]
            tail, filled = parts[-1], parts[-1].count()
            while rest:  # the tail takes what fits; a full tail is sealed and a new one started
                room = max(1, self._capacity() - filled)
                tail.upsert(rest[:room])
                rest = rest[room:]
                filled = tail.count()
                if filled >= self._capacity():
                    tail, filled = self._seal(), 0

    def _owners(self, parts: Sequence[ServedPart], ids: Sequence[str]) -> dict[str, int]:
        """Which earlier part holds each id (a re-written photo stays where it is)."""
        owners: dict[str, int] = {}
        for i, held in enumerate(_asked(parts, "holding", ids)):
            for pid in held:
                owners[pid] = i
        return owners

    def _seal(self) -> ServedPart:
        """Build the full tail's graph and start the next part, which it returns."""
        build = self.row.parts[-1].build_index()  # searches go on; writes wait (we hold the row's lock)
        if build is not None:
            self.row.seals.append(build)
        fresh = self.row.opened(f"{self.collection}{_SEP}{len(self.row.parts)}")
        fresh.ensure(self.row.dims or {})
        self.row.parts = [*self.row.parts, fresh]
        return fresh

    def overwrite_payloads(self, payloads: dict[str, dict[str, Any]]) -> None:
        with self.row.lock:
            parts = self._parts()
            owners = self._owners(parts[:-1], list(payloads))
            for i, part in enumerate(parts):
                mine = {pid: p for pid, p in payloads.items() if owners.get(pid, len(parts) - 1) == i}
                if mine:
                    part.overwrite_payloads(mine)

    def delete_where(self, flt: PointFilter, keep_ids: Collection[str] = ()) -> None:
        with self.row.lock:
            for part in self._parts():
                part.delete_where(flt, keep_ids)

    def delete_ids(self, ids: Sequence[str]) -> None:
        with self.row.lock:
            for part in self._parts():
                part.delete_ids(ids)

    # -- reads ----------------------------------------------------------------------------
    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[Record]:
        return [r for records in self._ask("retrieve", ids, with_vectors) for r in records]

    def search(self, vector: np.ndarray, using: str, flt: PointFilter, limit: int) -> list[Hit]:
        return _best(self._ask("search", vector, using, flt, limit), limit)

    def search_batch(
        self, vectors: Sequence[np.ndarray], using: str, flts: Sequence[PointFilter], limit: int
    ) -> list[list[Hit]]:
        answers = self._ask("search_batch", vectors, using, flts, limit)
        return [_best([a[i] for a in answers], limit) for i in range(len(vectors))]

    def lexical_search(self, text: str, flt: PointFilter, limit: int) -> list[Hit]:
        return _best(self._ask("lexical_search", text, flt, limit), limit)

    def facet(self, key: str, flt: PointFilter | None, limit: int) -> list[tuple[str, int]]:
        # a value just outside one part's top may be in the others': past one part ask each for more
        answers = self._ask("facet", key, flt, limit if len(self.row.parts) == 1 else limit * 4)
        return answers[0] if len(answers) == 1 else summed_facets(answers, limit)

    def scroll(self, flt: PointFilter | None, with_vectors: bool) -> Iterator[list[Record]]:
        for part in self._parts():
            yield from part.scroll(flt, with_vectors)

    def count(self, flt: PointFilter | None = None) -> int:
        return sum(self._ask("count", flt))

    # -- index ----------------------------------------------------------------------------
    @property
    def seals(self) -> list[IndexBuild]:
        """What building each part that filled did."""
        return list(self.row.seals)

    def unindexed_kb(self) -> float:
        return sum(self._ask("unindexed_kb"))

    def build_index(self) -> IndexBuild | None:
        """Build each part's graph that has enough unindexed vectors: after a load, the tail's."""
        with self.row.lock:
            builds = [b for b in (part.build_index() for part in self._parts()) if b is not None]
        return IndexBuild.of_several(builds)


def _asked(parts: Sequence[ServedPart], method: str, *args: Any) -> list[Any]:
    """Every part's answer, asked at once. A started request holds its part's socket until its
    answer is collected, so every started one is collected, even when a later part cannot be asked
    or an earlier one answers with an error; the first error is raised after."""
    answers: list[Callable[[], Any]] = []
    failure: BaseException | None = None
    try:
        for part in parts:
            answers.append(part.start(method, *args))
    except BaseException as exc:
        failure = exc
    results = []
    for answer in answers:
        try:
            results.append(answer())
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    return results


def _best(answers: Sequence[list[Hit]], limit: int) -> list[Hit]:
    """The `limit` best of each part's best, best first (each part answers best first)."""
    if len(answers) == 1:
        return answers[0][:limit]
    merged = heapq.merge(*answers, key=lambda h: -h.score)
    out: list[Hit] = []
    seen: set[str] = set()
    for hit in merged:
        if hit.point_id not in seen:
            seen.add(hit.point_id)
            out.append(hit)
            if len(out) == limit:
                break
    return out
