"""One contract for every vector backend, checked two ways (qdrant-client's congruence tests):
each backend against an exact numpy reference, and the backends against each other.

Backends: the embedded engine (edge) as it serves a small store (exact scan), the same engine
after its HNSW index is built, the same engine in parts (the full ones served by part servers),
and qdrant-client's embedded mode.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.vectors.base import (
    FACET_FIELDS,
    IMAGE,
    LEXICAL,
    TEXT,
    Hit,
    PointData,
    PointFilter,
    VectorBackend,
    VectorStoreUnavailable,
)
from services.vectors.edge import EdgeBackend, EdgeTuning, close_shards
from services.vectors.edge_parts import EdgeParts
from services.vectors.part_server import server_pids
from services.vectors.qdrant import QdrantBackend, close_local_clients, local_client
from services.vectors.spaces import Spaces
from services.vectors.store import split

IMAGE_DIM, TEXT_DIM = 32, 24
CATEGORIES, BRANDS = ("Bags", "Shoes", "Hats", "Coats"), ("Acme", "Globex", "Initech")
COLOURS = ("red", "green", "blue", "black", "white")
N_PRODUCTS = 120
# The contract is exact, so its stores keep full precision (half precision: its own test below).
EXACT = EdgeTuning(precision="float32")
# An index that builds on a few hundred points and is used for every unfiltered search.
SMALL_INDEX = EdgeTuning(
    m=16, ef_construct=128, ef_search=256, indexing_threshold_kb=4, full_scan_threshold_kb=1, precision="float32"
)

# Parts of 16 KB of vectors: the 360 photos (32 floats) fill three parts, the 120 texts one. The
# contract builds each part as it fills, so the full ones are served by part servers, and searches
# them exactly (every segment is below the full-scan threshold); the parts test uses the graph.
PARTS = dataclasses.replace(SMALL_INDEX, part_kb=16)
EXACT_PARTS = dataclasses.replace(EXACT, part_kb=16, indexing_threshold_kb=4)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def make_points(seed: int = 3) -> list[PointData]:
    """Clustered data: products around category centres, 3 photos around each product."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(CATEGORIES), IMAGE_DIM))
    points: list[PointData] = []
    for i in range(N_PRODUCTS):
        sku = f"SKU-{i:03d}"
        category = CATEGORIES[i % len(CATEGORIES)]
        payload = {
            "sku": sku,
            "category": category,
            "brand": BRANDS[i % len(BRANDS)],
            "price": float(5 + (i * 7) % 90),
            "in_stock": i % 3 != 0,
        }
        product = centres[i % len(CATEGORIES)] + 0.7 * rng.standard_normal(IMAGE_DIM)
        for j in range(3):
            vector = _unit(product + 0.3 * rng.standard_normal(IMAGE_DIM))
            points.append(
                PointData(
                    f"00000000-0000-4000-8000-{i:06d}{j:06d}",
                    IMAGE,
                    vector,
                    {**payload, "kind": IMAGE, "image_sha": f"{i}-{j}"},
                )
            )
        points.append(
            PointData(
                f"00000000-0000-4000-9000-{i:012d}",
                TEXT,
                _unit(rng.standard_normal(TEXT_DIM)),
                {
                    **payload,
                    "kind": TEXT,
                    "lexical": f"{sku} {category} by {payload['brand']} "
                    f"{COLOURS[i % 5]} {COLOURS[i % 3]} pattern{i % 7}",
                    "codes": [f"sku{i:03d}", f"40{i:08d}"],
                },
            )
        )
    return points


POINTS = make_points()
FILTERS = {
    "none": PointFilter(kind=IMAGE),
    "category": PointFilter(kind=IMAGE, categories=("Bags",)),
    "two brands": PointFilter(kind=IMAGE, brands=("Acme", "Initech")),
    "price range": PointFilter(kind=IMAGE, min_price=20, max_price=40),
    "in stock": PointFilter(kind=IMAGE, in_stock_only=True),
    "excluded skus": PointFilter(kind=IMAGE, exclude_skus=("SKU-000", "SKU-004", "SKU-008")),
    "everything": PointFilter(
        kind=IMAGE, categories=("Shoes", "Hats"), brands=("Globex",), max_price=60, in_stock_only=True
    ),
    "text": PointFilter(kind=TEXT, categories=("Coats",)),
}


def reference(
    points: list[PointData], vector: np.ndarray, using: str, flt: PointFilter, limit: int, grouped: bool
) -> list[tuple[str, float]]:
    """Exact cosine over the points that pass the filter, in Python."""
    scored = sorted(
        (
            (p.id, float(p.vector @ vector), p.payload["sku"])
            for p in points
            if p.kind == using and flt.matches(p.payload)
        ),
        key=lambda s: -s[1],
    )
    if grouped:
        seen: set[str] = set()
        scored = [s for s in scored if not (s[2] in seen or seen.add(s[2]))]
    return [(pid, score) for pid, score, _ in scored[:limit]]


DIMS = {IMAGE: IMAGE_DIM, TEXT: TEXT_DIM}


def open_backend(kind: str, root: Path, collection: str = "contract") -> VectorBackend:
    """The backend as the store builds it: photos and texts each in their own collection."""
    if kind == "qdrant-local":
        client = local_client(root / "qdrant")
        return split(lambda name: QdrantBackend(client, name), collection)
    if kind == "edge-parts":
        return split(lambda name: EdgeParts(root / "edge", name, EXACT_PARTS), collection)
    tuning = SMALL_INDEX if kind == "edge-hnsw" else EXACT
    return split(lambda name: EdgeBackend(root / "edge", name, tuning), collection)


def edge(root: Path, collection: str, tuning: EdgeTuning = EXACT) -> VectorBackend:
    return split(lambda name: EdgeBackend(root, name, tuning), collection)


def close_all() -> None:
    close_shards()
    close_local_clients()


@pytest.fixture(params=["edge", "edge-hnsw", "edge-parts", "qdrant-local"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def parts_made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The contract store in parts, loaded once (each full part is built as it fills)."""
    root = tmp_path_factory.mktemp("parts")
    backend = open_backend("edge-parts", root)
    backend.ensure(DIMS)
    backend.upsert(POINTS)
    close_all()
    return root


@pytest.fixture
def loaded(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[VectorBackend]:
    if kind == "edge-parts":  # a copy of the loaded store, opened as a fresh process would
        shutil.copytree(request.getfixturevalue("parts_made"), tmp_path, dirs_exist_ok=True)
    backend = open_backend(kind, tmp_path)
    backend.ensure(DIMS)
    if kind != "edge-parts":
        backend.upsert(POINTS)
    if kind == "edge-hnsw":
        build = backend.build_index()
        assert build is not None and build.vectors == len(POINTS)
    if kind == "edge-parts":
        assert sorted(f.name for f in (tmp_path / "edge").iterdir()) == [
            "contract-image",
            "contract-image@1",
            "contract-image@2",
            "contract-text",
        ]
        assert len(server_pids()) == 4  # one a part: three of photos, one of texts
    yield backend
    close_all()


def queries(seed: int = 11) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    images = [p.vector for p in POINTS if p.kind == IMAGE]
    return [_unit(images[i] + 0.2 * rng.standard_normal(IMAGE_DIM)) for i in rng.integers(0, len(images), 6)]


def _ids_scores(hits: list[Hit]) -> list[tuple[str, float]]:
    return [(h.point_id, h.score) for h in hits]


def assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1e-4)


def test_grouped_search_is_exact(loaded: VectorBackend) -> None:
    """Every filter against one loaded store: searches do not change it, and loading a store (an
    index build, four part servers) costs far more than the searches."""
    for name, flt in FILTERS.items():
        using, dim = (TEXT, TEXT_DIM) if flt.kind == TEXT else (IMAGE, IMAGE_DIM)
        for q in queries() if using == IMAGE else [_unit(np.random.default_rng(5).standard_normal(dim))]:
            got = loaded.search_grouped(q, using, flt, 10)
            try:
                assert_same(_ids_scores(got), reference(POINTS, q, using, flt, 10, grouped=True))
            except AssertionError as exc:
                raise AssertionError(f"filter {name!r}: {exc}") from None
            assert len({h.payload["sku"] for h in got}) == len(got), name
            assert all(flt.matches(h.payload) for h in got), name


def test_point_search_is_exact(loaded: VectorBackend) -> None:
    for q in queries():
        assert_same(
            _ids_scores(loaded.search(q, IMAGE, FILTERS["none"], 15)),
            reference(POINTS, q, IMAGE, FILTERS["none"], 15, grouped=False),
        )


def test_batched_search_is_exact_under_each_querys_filter(loaded: VectorBackend) -> None:
    """The catalog audit's batches: each query with its own filter (its own SKU left out)."""
    qs = queries()
    skus = sorted({str(p.payload["sku"]) for p in POINTS})
    flts = [PointFilter(kind=IMAGE, exclude_skus=(skus[i % len(skus)],)) for i in range(len(qs))]
    answers = loaded.search_batch(qs, IMAGE, flts, 12)
    assert len(answers) == len(qs)
    for q, flt, got in zip(qs, flts, answers, strict=True):
        assert_same(_ids_scores(got), reference(POINTS, q, IMAGE, flt, 12, grouped=False))
    assert loaded.search_batch([], IMAGE, [], 5) == []


def test_grouping_reads_further_when_one_product_fills_the_page(loaded: VectorBackend) -> None:
    crowd = [
        PointData(
            f"00000000-0000-4000-a000-{j:012d}", IMAGE, POINTS[0].vector, {**POINTS[0].payload, "image_sha": f"dup{j}"}
        )
        for j in range(60)
    ]
    loaded.upsert(crowd)
    got = loaded.search_grouped(POINTS[0].vector, IMAGE, FILTERS["none"], 5)
    assert len(got) == 5 and got[0].payload["sku"] == "SKU-000"
    assert_same(_ids_scores(got)[1:], reference(POINTS, POINTS[0].vector, IMAGE, FILTERS["none"], 5, grouped=True)[1:])


def test_count_scroll_retrieve(loaded: VectorBackend) -> None:
    assert loaded.count() == len(POINTS)
    assert loaded.count(PointFilter(kind=TEXT)) == N_PRODUCTS
    assert loaded.count(PointFilter(kind=IMAGE, in_stock_only=True)) == sum(
        1 for p in POINTS if p.kind == IMAGE and p.payload["in_stock"]
    )
    scrolled = {r.id: r.payload for batch in loaded.scroll(None, False) for r in batch}
    assert scrolled == {p.id: p.payload for p in POINTS}
    some = [POINTS[5], POINTS[42]]
    records = loaded.retrieve([p.id for p in some] + ["00000000-0000-4000-8000-999999999999"], with_vectors=True)
    assert {r.id for r in records} == {p.id for p in some}
    for record in records:
        want = next(p for p in some if p.id == record.id)
        np.testing.assert_allclose(record.vectors[want.kind], want.vector, atol=1e-5)
        assert record.payload == want.payload


def test_writes_are_idempotent_and_visible_at_once(loaded: VectorBackend) -> None:
    loaded.upsert(POINTS[:50])  # again: nothing new
    assert loaded.count() == len(POINTS)
    photo = [p for p in POINTS if p.kind == IMAGE][7]
    fresh = PointData(
        "00000000-0000-4000-b000-000000000001",
        IMAGE,
        _unit(-photo.vector),
        {**photo.payload, "sku": "NEW-1", "image_sha": "n"},
    )
    loaded.upsert([fresh])
    assert loaded.search_grouped(fresh.vector, IMAGE, FILTERS["none"], 1)[0].payload["sku"] == "NEW-1"


def test_payload_overwrite_moves_a_product_between_filters(loaded: VectorBackend) -> None:
    target = next(p for p in POINTS if p.kind == IMAGE and not p.payload["in_stock"])
    assert not loaded.search_grouped(
        target.vector, IMAGE, PointFilter(kind=IMAGE, skus=(target.payload["sku"],), in_stock_only=True), 3
    )
    loaded.overwrite_payloads({target.id: {**target.payload, "in_stock": True, "price": 1234.0}})
    hit = loaded.search_grouped(target.vector, IMAGE, PointFilter(kind=IMAGE, in_stock_only=True, min_price=1000), 3)
    assert [h.point_id for h in hit] == [target.id] and hit[0].payload["in_stock"] is True


def test_deletes(loaded: VectorBackend) -> None:
    sku_points = [p for p in POINTS if p.payload["sku"] == "SKU-010"]
    keep = sku_points[0].id
    loaded.delete_where(PointFilter(skus=("SKU-010",)), keep_ids={keep})
    assert [r.id for b in loaded.scroll(PointFilter(skus=("SKU-010",)), False) for r in b] == [keep]
    loaded.delete_where(PointFilter(skus=("SKU-011", "SKU-012")))
    loaded.delete_ids([POINTS[0].id])
    gone = len(sku_points) - 1 + 8 + 1
    assert loaded.count() == len(POINTS) - gone
    survivors = [
        p
        for p in POINTS
        if p.id != POINTS[0].id
        and p.payload["sku"] not in ("SKU-011", "SKU-012")
        and (p.payload["sku"] != "SKU-010" or p.id == keep)
    ]
    for q in queries():
        assert_same(
            _ids_scores(loaded.search_grouped(q, IMAGE, FILTERS["none"], 10)),
            reference(survivors, q, IMAGE, FILTERS["none"], 10, grouped=True),
        )


def test_data_survives_reopening(kind: str, tmp_path: Path) -> None:
    backend = open_backend(kind, tmp_path)
    backend.ensure(DIMS)
    backend.upsert(POINTS)
    if kind == "edge-hnsw":
        backend.build_index()
    backend.close()
    close_all()
    again = open_backend(kind, tmp_path)
    again.ensure(DIMS)
    assert again.count() == len(POINTS)
    q = queries()[0]
    assert_same(
        _ids_scores(again.search_grouped(q, IMAGE, FILTERS["none"], 10)),
        reference(POINTS, q, IMAGE, FILTERS["none"], 10, grouped=True),
    )
    again.drop()
    close_all()


def test_backends_agree_with_each_other(tmp_path: Path) -> None:
    """The same calls on every backend give the same answers (ids, scores, order)."""
    backends = {}
    for kind in ("edge", "edge-hnsw", "edge-parts", "qdrant-local"):
        backend = open_backend(kind, tmp_path / kind)
        backend.ensure(DIMS)
        backend.upsert(POINTS)
        backend.build_index()
        backends[kind] = backend
    try:
        for flt in FILTERS.values():
            using = flt.kind or IMAGE
            q = queries()[1] if using == IMAGE else _unit(np.random.default_rng(9).standard_normal(TEXT_DIM))
            answers = {k: _ids_scores(b.search_grouped(q, using, flt, 8)) for k, b in backends.items()}
            first = answers.pop("qdrant-local")
            for other in answers.values():
                assert_same(other, first)
            counts = {b.count(flt) for b in backends.values()}
            assert len(counts) == 1
        for text in ("red", "green hats", "pattern3 white", "bags acme blue"):
            flt = PointFilter(kind=TEXT, in_stock_only=True)
            lexical = {k: dict(_ids_scores(b.lexical_search(text, flt, 200))) for k, b in backends.items()}
            first = lexical.pop("qdrant-local")
            for other in lexical.values():  # the same points, each with the same BM25 score (ties in any order)
                assert other.keys() == first.keys(), text
                np.testing.assert_allclose([other[k] for k in first], list(first.values()), rtol=1e-3)
    finally:
        close_all()


# -- lexical search, identifiers and facets ---------------------------------------------------
def _words(payload: dict) -> set[str]:
    return set(payload[LEXICAL].lower().split())


def test_lexical_search_ranks_points_holding_the_words(loaded: VectorBackend) -> None:
    texts = [p for p in POINTS if p.kind == TEXT]
    for query, flt in [
        ("green", PointFilter(kind=TEXT)),
        ("Blue Hats", PointFilter(kind=TEXT)),
        ("white pattern2", PointFilter(kind=TEXT, categories=("Coats", "Bags"))),
        ("blue", PointFilter(kind=TEXT, min_price=20, max_price=60, in_stock_only=True)),
    ]:
        words = set(query.lower().split())
        hits = loaded.lexical_search(query, flt, 200)
        holding = {p.id for p in texts if flt.matches(p.payload) and words & _words(p.payload)}
        assert {h.point_id for h in hits} == holding, query
        overlap = [len(words & _words(next(p.payload for p in texts if p.id == h.point_id))) for h in hits]
        assert overlap == sorted(overlap, reverse=True)  # more of the words first (rare words count more)
        assert all(LEXICAL not in h.payload and h.payload["kind"] == TEXT for h in hits)
    assert loaded.lexical_search("xyzzy qwerty", PointFilter(kind=TEXT), 10) == []
    assert loaded.lexical_search("  ", PointFilter(kind=TEXT), 10) == []


def test_codes_and_facets_match_the_payloads(loaded: VectorBackend) -> None:
    found = [
        r.payload["sku"]
        for b in loaded.scroll(PointFilter(kind=TEXT, codes=("sku007", "4000000011")), False)
        for r in b
    ]
    assert sorted(found) == ["SKU-007", "SKU-011"]
    for flt in [PointFilter(kind=TEXT), PointFilter(kind=TEXT, categories=("Bags", "Hats"), in_stock_only=True)]:
        for key in FACET_FIELDS:
            want: dict[str, int] = {}
            for p in POINTS:
                if p.kind == TEXT and flt.matches(p.payload):
                    want[p.payload[key]] = want.get(p.payload[key], 0) + 1
            got = loaded.facet(key, flt, 50)
            assert dict(got) == want and [c for _, c in got] == sorted(want.values(), reverse=True)


# -- the embedded engine's own promises -----------------------------------------------------
def test_index_build_lets_searches_through_and_keeps_writes(tmp_path: Path) -> None:
    backend = edge(tmp_path, "busy", SMALL_INDEX)
    backend.ensure(DIMS)
    backend.upsert(POINTS)
    q = queries()[2]
    want = reference(POINTS, q, IMAGE, FILTERS["none"], 10, grouped=True)
    answered_during_build: list[list[tuple[str, float]]] = []
    builder = threading.Thread(target=backend.build_index)
    builder.start()
    while builder.is_alive():
        answer = _ids_scores(backend.search_grouped(q, IMAGE, FILTERS["none"], 10))
        if builder.is_alive():
            answered_during_build.append(answer)
        time.sleep(0.01)  # a shopper's pace: searching back to back would starve the build of the GIL
    builder.join()
    assert answered_during_build, "no search was answered while the index was being built"
    for answer in answered_during_build:
        assert_same(answer, want)
    assert backend.build_index() is None  # nothing left to index
    extra = PointData(
        "00000000-0000-4000-c000-000000000001", IMAGE, q, {**POINTS[0].payload, "sku": "LATE", "image_sha": "late"}
    )
    backend.upsert([extra])
    assert backend.search_grouped(q, IMAGE, FILTERS["none"], 1)[0].payload["sku"] == "LATE"
    close_all()


def test_a_build_cut_short_leaves_the_live_version(tmp_path: Path) -> None:
    backend = EdgeBackend(tmp_path, "swap", SMALL_INDEX)
    backend.ensure(DIMS)
    backend.upsert(POINTS[:40])
    backend.build_index()
    backend.upsert(POINTS[40:])
    close_all()
    root = tmp_path / "swap"
    live = (root / "CURRENT").read_text()
    shutil.copytree(root / live, root / "v9")  # a killed build's half-made copy
    shutil.copytree(root / live, root / "v1")  # a version swapped out but not yet removed
    again = EdgeBackend(tmp_path, "swap", SMALL_INDEX)
    again.ensure(DIMS)
    assert again.count() == len(POINTS)
    assert sorted(p.name for p in root.glob("v*")) == [live]
    assert again.build_index() is not None and again.count() == len(POINTS)
    close_all()


def test_second_process_gets_a_clear_error(tmp_path: Path) -> None:
    backend = EdgeBackend(tmp_path, "locked")
    backend.ensure(DIMS)
    code = (
        "import sys; from pathlib import Path\n"
        "from services.vectors.edge import EdgeBackend\n"
        "from services.vectors.base import VectorStoreUnavailable\n"
        "try:\n    EdgeBackend(Path(sys.argv[1]), 'locked').ensure({'image': 32})\n"
        "except VectorStoreUnavailable as exc:\n    print(exc); sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "in use by another ShopLens process" in done.stdout
    close_all()
    with pytest.raises(VectorStoreUnavailable):
        EdgeBackend(tmp_path, "missing").retrieve(["00000000-0000-4000-8000-000000000000"])


def test_a_store_made_before_lexical_search_gets_its_indexes(tmp_path: Path) -> None:
    """Opening a collection made by an older ShopLens (no text or code index) adds them; the next
    payload writes (an ingest re-syncs every product's payload, nothing re-embedded) feed them."""
    import qdrant_edge as qe

    old = EdgeBackend(tmp_path, "old-text", EdgeTuning())
    old.ensure({TEXT: TEXT_DIM})
    old._update([qe.UpdateOperation.delete_field_index(LEXICAL), qe.UpdateOperation.delete_field_index("codes")])
    texts = [p for p in POINTS if p.kind == TEXT]
    old.upsert(
        [
            PointData(p.id, p.kind, p.vector, {k: v for k, v in p.payload.items() if k not in (LEXICAL, "codes")})
            for p in texts
        ]
    )
    close_all()
    reopened = EdgeBackend(tmp_path, "old-text", EdgeTuning())
    reopened.ensure({TEXT: TEXT_DIM})
    assert {LEXICAL, "codes"} <= set(reopened._engine().info().payload_schema)
    assert reopened.lexical_search("green", PointFilter(kind=TEXT), 10) == []  # nothing written yet
    reopened.overwrite_payloads({p.id: p.payload for p in texts})
    assert reopened.lexical_search("green", PointFilter(kind=TEXT), 200)
    assert [r.payload["sku"] for b in reopened.scroll(PointFilter(kind=TEXT, codes=("sku007",)), False) for r in b] == [
        "SKU-007"
    ]
    close_all()


# -- one collection per vector space --------------------------------------------------------
@pytest.mark.parametrize("kind", ["edge", "qdrant-local"])
def test_each_space_holds_only_its_own_vectors(kind: str, tmp_path: Path) -> None:
    backend = open_backend(kind, tmp_path)
    backend.ensure(DIMS)
    backend.upsert(POINTS)
    assert isinstance(backend, Spaces)
    for space, part in backend.parts.items():
        records = [r for b in part.scroll(None, True) for r in b]
        assert len(records) == sum(p.kind == space for p in POINTS)
        assert all(set(r.vectors) == {space} and r.payload["kind"] == space for r in records)
    close_all()


def test_a_search_cannot_ask_one_space_for_the_other_spaces_points(tmp_path: Path) -> None:
    backend = open_backend("edge", tmp_path)
    backend.ensure(DIMS)
    backend.upsert(POINTS)
    q = queries()[0]
    with pytest.raises(ValueError, match="cannot pass"):
        backend.search_grouped(q, IMAGE, PointFilter(kind=TEXT), 5)
    with pytest.raises(ValueError, match="cannot pass"):
        backend.search_batch([q], IMAGE, [PointFilter(kind=TEXT)], 5)
    with pytest.raises(ValueError, match="no vector space named"):
        backend.search(q, "sound", PointFilter(), 5)
    assert backend.lexical_search("green", PointFilter(kind=IMAGE), 10) == []  # photos hold no words
    close_all()


@pytest.mark.parametrize("kind", ["edge", "qdrant-local"])
def test_a_store_from_before_the_split_is_moved_into_its_spaces(kind: str, tmp_path: Path) -> None:
    """The old layout (both vectors in one collection) is copied point by point on first open,
    then removed; an upgrade cut short (some points already copied) just runs again."""
    if kind == "qdrant-local":
        old: VectorBackend = QdrantBackend(local_client(tmp_path / "qdrant"), "shop")
    else:
        old = EdgeBackend(tmp_path / "edge", "shop", EXACT)
    old.ensure(DIMS)
    old.upsert(POINTS)
    old.close()
    close_all()
    half_done = open_backend(kind, tmp_path, "shop")
    assert isinstance(half_done, Spaces)
    half_done.parts[IMAGE].ensure({IMAGE: IMAGE_DIM})
    half_done.parts[IMAGE].upsert([p for p in POINTS if p.kind == IMAGE][:50])
    close_all()

    upgraded = open_backend(kind, tmp_path, "shop")
    upgraded.ensure(DIMS)
    assert upgraded.count() == len(POINTS)
    assert upgraded.count(PointFilter(kind=TEXT)) == N_PRODUCTS
    assert isinstance(upgraded, Spaces) and upgraded.legacy is not None and not upgraded.legacy.exists()
    for q in queries():
        assert_same(
            _ids_scores(upgraded.search_grouped(q, IMAGE, FILTERS["none"], 10)),
            reference(POINTS, q, IMAGE, FILTERS["none"], 10, grouped=True),
        )
    assert upgraded.lexical_search("green", PointFilter(kind=TEXT), 200)
    close_all()


def test_half_precision_keeps_the_ranking(tmp_path: Path) -> None:
    """The embedded default stores float16 (half the memory and disk of float32, BENCHMARKS.md):
    scores within 1e-3 of exact and the same products found, before and after the index build."""
    backend = edge(tmp_path, "shop", EdgeTuning(indexing_threshold_kb=4))
    backend.ensure(DIMS)
    backend.upsert(POINTS)
    for built in (False, True):
        if built:
            assert backend.build_index() is not None
        for q in queries():
            got = _ids_scores(backend.search_grouped(q, IMAGE, FILTERS["none"], 10))
            want = reference(POINTS, q, IMAGE, FILTERS["none"], 10, grouped=True)
            assert len({g[0] for g in got} & {w[0] for w in want}) >= 9
            np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1e-3)
    record = backend.retrieve([POINTS[0].id], with_vectors=True)[0]
    np.testing.assert_allclose(record.vectors[IMAGE], POINTS[0].vector, atol=1e-3)
    close_all()
    segments = list(tmp_path.rglob("segment.json"))
    stored = {v["datatype"] for f in segments for v in json.loads(f.read_text())["config"]["vector_data"].values()}
    assert segments and stored == {"float16"}


def test_a_collection_grows_in_parts_each_indexed_as_it_fills(tmp_path: Path) -> None:
    """Photos fill bounded parts, each built as it fills; a re-written point stays in its part;
    deletes and payload writes reach every part; a reopened store finds its parts on disk."""
    backend = EdgeParts(tmp_path, "grow", PARTS)
    backend.ensure({IMAGE: IMAGE_DIM})
    photos = [p for p in POINTS if p.kind == IMAGE]
    backend.upsert(photos)
    folders = sorted(f.name for f in tmp_path.iterdir())
    assert folders == ["grow", "grow@1", "grow@2"]
    parts = backend._parts()
    assert [p.shard.engine for p in parts] == [None, None, None]  # each served by its part server
    assert len(server_pids()) == 3
    assert [p.count() for p in parts] == [128, 128, 104]
    assert [p.unindexed_kb() for p in parts[:2]] == [0, 0]  # sealed parts were built as they filled
    first = photos[0]
    moved = PointData(first.id, IMAGE, photos[-1].vector, {**first.payload, "brand": "Moved"})
    backend.upsert([moved])
    assert [p.count() for p in parts] == [128, 128, 104]  # not a second copy in the tail
    hit = backend.search(photos[-1].vector, IMAGE, PointFilter(brands=("Moved",)), 1)[0]
    assert hit.point_id == first.id and hit.score == pytest.approx(1.0, abs=1e-5)
    backend.overwrite_payloads({photos[200].id: {**photos[200].payload, "brand": "Late"}})
    assert [r.payload["brand"] for r in backend.retrieve([photos[200].id])] == ["Late"]
    backend.delete_ids([photos[1].id, photos[300].id])
    backend.delete_where(PointFilter(brands=("Late",)))
    assert backend.count() == len(photos) - 3
    close_all()
    schema = EdgeBackend(tmp_path, "grow@2", PARTS)._engine().info().payload_schema
    assert "brand" in schema and LEXICAL not in schema and "codes" not in schema  # words live on texts
    close_all()
    again = EdgeParts(tmp_path, "grow", PARTS)
    again.ensure({IMAGE: IMAGE_DIM})
    assert again.count() == len(photos) - 3
    q = queries()[2]
    kept = [p for p in photos if p.id not in {photos[1].id, photos[300].id, photos[200].id, first.id}]
    assert_same(
        _ids_scores(again.search_grouped(q, IMAGE, FILTERS["in stock"], 10)),
        reference(kept, q, IMAGE, FILTERS["in stock"], 10, grouped=True),
    )
    again.drop()
    assert not any(tmp_path.iterdir())
    close_all()


def test_word_search_across_text_parts_finds_the_same_points(tmp_path: Path) -> None:
    """BM25 statistics are each part's own, so scores move a little; the points found do not."""
    texts = [p for p in POINTS if p.kind == TEXT]
    one = EdgeParts(tmp_path / "one", "t", EXACT)
    many = EdgeParts(tmp_path / "many", "t", dataclasses.replace(EXACT, part_kb=4))  # 42 texts a part
    for backend in (one, many):
        backend.ensure({TEXT: TEXT_DIM})
        backend.upsert(texts)
    assert len(list((tmp_path / "many").iterdir())) == 3
    for query in ("green", "blue hats", "pattern3 white"):
        flt = PointFilter(in_stock_only=True)
        assert {h.point_id for h in many.lexical_search(query, flt, 200)} == {
            h.point_id for h in one.lexical_search(query, flt, 200)
        }
    for key in FACET_FIELDS:
        assert dict(many.facet(key, None, 50)) == dict(one.facet(key, None, 50))
    close_all()
