"""The ingestion's download and decode threads run below the model's priority (Linux nice values)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

import ingest.pipeline as pipeline
from ingest.background import MAX_NICE, background_pool, thread_nice
from ingest.pipeline import ingestor_for
from ingest.readers import read_catalog
from services.context import ShopLens
from tests.support.catalog import write_catalog

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")


def test_a_pools_threads_run_lower_and_the_thread_that_made_it_does_not() -> None:
    base = thread_nice()
    assert base is not None
    with background_pool(2, "low", 5) as pool:
        assert {pool.submit(thread_nice).result() for _ in range(4)} == {min(MAX_NICE, base + 5)}
    assert thread_nice() == base
    with background_pool(1, "same", 0) as pool:
        assert pool.submit(thread_nice).result() == base


def test_workers_started_from_a_lowered_thread_are_not_lowered_twice() -> None:
    """A pool's workers start in the thread that submits to it: the ingest's image workers start in
    its (already lowered) reader thread."""
    base = thread_nice()
    assert base is not None
    with background_pool(2, "images", 4) as images, background_pool(1, "reader", 4) as reader:
        nested = reader.submit(lambda: images.submit(thread_nice).result()).result()
    assert nested == min(MAX_NICE, base + 4)


def test_an_ingestion_downloads_decodes_and_prepares_below_the_model(
    settings_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, int | None] = {}
    real = pipeline.prepare_images

    def recording(*args, **kwargs):
        seen[threading.current_thread().name] = thread_nice()
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "prepare_images", recording)
    embedding: list[int | None] = []
    preparing: dict[str, int | None] = {}
    app = ShopLens(settings_factory(ingest_background_nice=7))
    try:
        embed, prepare = app.embedder.embed_prepared, app.embedder.prepare_image

        def embed_recording(prepared):
            embedding.append(thread_nice())
            return embed(prepared)

        def prepare_recording(image):
            preparing[threading.current_thread().name] = thread_nice()
            return prepare(image)

        monkeypatch.setattr(app.embedder, "embed_prepared", embed_recording)
        monkeypatch.setattr(app.embedder, "prepare_image", prepare_recording)
        base = thread_nice()
        assert base is not None
        result = ingestor_for(app).ingest(read_catalog(write_catalog(tmp_path / "shop", 6)))
    finally:
        app.close()
    assert result.status == "succeeded" and result.counts.images_embedded == 6
    assert seen and set(seen.values()) == {min(MAX_NICE, base + 7)}, seen
    # each photo made ready for the model in the decode threads, not in the model's
    assert preparing and set(preparing.values()) == {min(MAX_NICE, base + 7)}, preparing
    assert all(name.startswith("images") for name in preparing), preparing
    assert embedding and set(embedding) == {base}  # the model runs at the caller's priority
