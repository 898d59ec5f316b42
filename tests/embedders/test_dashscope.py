"""DashScope backend against the local fake server (tests/support/fake_dashscope.py): protocol,
limits, retries, secrecy, rate limiting. The shared contract suite runs on it too (test_contract.py).

The embedder calls the official `dashscope` SDK (its v2 client), pointed at the fake's URL: these
tests go through the SDK, httpx and real sockets; nothing is mocked but a missing package."""

from __future__ import annotations

import base64
import io
import json
import logging
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from services.embedders import EmbedderUnavailable, EmbedError
from services.embedders.dashscope import (
    MAX_IMAGE_BYTES,
    DashScopeEmbedder,
    _retry_after,
    _token_cost,
    dashscope_identity,
    encode_image,
    prepare_text,
    truncate_text,
)
from services.embedders.registry import get_embedder
from services.settings import Settings
from tests.support.fake_dashscope import PATH, FakeDashScope


def photo(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    pixels = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.fixture
def server(fake_dashscope: FakeDashScope):
    fake_dashscope.reset()
    yield fake_dashscope
    fake_dashscope.reset()


@pytest.fixture
def make(server: FakeDashScope):
    built: list[DashScopeEmbedder] = []

    def build(**overrides) -> DashScopeEmbedder:
        options = dict(
            base_url=server.base_url,
            requests_per_minute=100_000,
            timeout=2.0,
            max_retries=2,
            backoff_base=0.01,
            backoff_max=0.05,
        )
        options.update(overrides)
        key = options.pop("api_key", server.api_key)
        embedder = DashScopeEmbedder(SecretStr(key), **options)
        built.append(embedder)
        return embedder

    yield build
    for embedder in built:
        embedder.close()


def sent_contents(server: FakeDashScope) -> list[list[dict]]:
    return [r.json["input"]["contents"] for r in server.requests]


# -- protocol


def test_text_request_is_exactly_the_protocol(server: FakeDashScope, make) -> None:
    embedder = make()
    vector = embedder.embed_text("red running shoes")
    assert vector.shape == (1024,) and vector.dtype == np.float32
    (request,) = server.requests
    assert request.method == "POST" and request.path == PATH
    assert request.headers["authorization"] == f"Bearer {server.api_key}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-dashscope-sdk-client"].startswith("python-sdk/")  # sent by the official SDK
    assert request.json == {
        "model": "multimodal-embedding-v1",
        "input": {"contents": [{"text": "red running shoes"}]},
        "parameters": {},
    }
    assert request.status == 200


def test_image_is_sent_as_jpeg_data_uri(server: FakeDashScope, make) -> None:
    rgba = Image.new("RGBA", (90, 60), (255, 0, 0, 128))
    make().embed_images([photo(1), rgba, photo(2).convert("P")])
    assert server.statuses() == [200, 200, 200]
    for (content,) in sent_contents(server):
        assert set(content) == {"image"}
        prefix = "data:image/jpeg;base64,"
        assert content["image"].startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(content["image"][len(prefix) :]))) as decoded:
            assert decoded.format == "JPEG" and decoded.mode == "RGB"


def test_fake_rejects_local_paths_and_bad_bodies(server: FakeDashScope) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
    bodies = [
        {"model": "multimodal-embedding-v1", "input": {"contents": [{"image": "/tmp/shoe.jpg"}]}, "parameters": {}},
        {"model": "multimodal-embedding-v1", "input": {"contents": [{"text": "x"}]}},  # no parameters
        {"model": "other-model", "input": {"contents": [{"text": "x"}]}, "parameters": {}},
        {"model": "multimodal-embedding-v1", "input": {"contents": [{"text": "x", "image": "y"}]}, "parameters": {}},
    ]
    for body in bodies:
        response = httpx.post(server.url, json=body, headers=headers)
        assert response.status_code == 400 and response.json()["code"] == "InvalidParameter", body
    assert httpx.post(server.url + "x", json=bodies[0], headers=headers).status_code == 404
    assert httpx.post(server.url, json=bodies[0], headers={"Authorization": "Bearer nope"}).status_code == 401


def test_results_ordered_by_index_and_contents_per_call(server: FakeDashScope, make) -> None:
    images = [photo(i) for i in range(3)]
    single = np.stack([make().embed_image(img) for img in images])
    server.reset()
    server.max_images_per_call = 3
    server.shuffle_response = True  # the fake answers in reverse order
    batch = make(contents_per_call=3).embed_images(images)
    assert not batch.errors
    assert [len(c) for c in sent_contents(server)] == [3]
    np.testing.assert_allclose(batch.vectors, single, atol=1e-5)


def test_one_content_per_call_by_default(server: FakeDashScope, make) -> None:
    embedder = DashScopeEmbedder.from_settings(
        Settings(
            _env_file=None,
            dashscope_api_key=server.api_key,
            dashscope_base_url=server.base_url,
            dashscope_requests_per_minute=100_000,
        )
    )
    try:
        assert embedder.image_batch_size == embedder.text_batch_size == 1
        result = embedder.embed_texts(["a", "b", "c"])
        assert not result.errors
        assert [len(c) for c in sent_contents(server)] == [1, 1, 1]
    finally:
        embedder.close()


def test_identity(make) -> None:
    ident = make().identity
    assert (ident.backend, ident.model, ident.image_dim, ident.text_dim, ident.cross_modal) == (
        "dashscope",
        "multimodal-embedding-v1",
        1024,
        1024,
        True,
    )


# -- text


def test_chinese_and_english_text(server: FakeDashScope, make) -> None:
    result = make().embed_texts(["红色的连帽衫", "red hoodie", "  spaced\n\tout  ", ""])
    assert not result.errors, result.errors
    sent = [c[0]["text"] for c in sent_contents(server)]
    assert sent == ["红色的连帽衫", "red hoodie", "spaced out", "."]
    assert '"红色的连帽衫"'.encode() in server.requests[0].body  # sent as UTF-8, not \u escapes


def test_long_text_is_truncated_conservatively(server: FakeDashScope, make) -> None:
    chinese = "舒适的纯棉连帽衫带袋鼠口袋" * 200
    english = "comfortable cotton hoodie with a kangaroo pocket " * 200
    mixed = "红色 hoodie 2024 🙂 " * 300
    assert len(truncate_text(chinese)) == 512  # one token per CJK character
    cut = truncate_text(english)
    assert 1000 < len(cut) <= 1600 and english.startswith(cut) and not cut.endswith(" ")
    cut_mixed = truncate_text(mixed)
    assert 480 < sum(_token_cost(ch) for ch in cut_mixed) <= 512 and mixed.startswith(cut_mixed)
    assert truncate_text("short text") == "short text"
    make().embed_texts([chinese, english, mixed])
    sent = [c[0]["text"] for c in sent_contents(server)]
    assert sent == [prepare_text(chinese), prepare_text(english), prepare_text(mixed)]


# -- images


def test_image_over_3mb_is_downscaled_and_accepted(server: FakeDashScope, make) -> None:
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, size=(1800, 2400, 3), dtype=np.uint8), "RGB")
    raw = io.BytesIO()
    big.save(raw, format="JPEG", quality=90)
    assert raw.tell() > 3 * 1024 * 1024  # the test is only meaningful if the plain JPEG is too big
    vector = make().embed_image(big)
    assert np.isfinite(vector).all()
    (request,) = server.requests
    assert request.status == 200
    data = base64.b64decode(request.json["input"]["contents"][0]["image"].split(",", 1)[1])
    assert len(data) <= MAX_IMAGE_BYTES
    with Image.open(io.BytesIO(data)) as sent:
        assert sent.width < 2400 and sent.width / sent.height == pytest.approx(2400 / 1800, rel=0.01)


def test_fake_rejects_over_3mb(server: FakeDashScope) -> None:
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, size=(1500, 2000, 3), dtype=np.uint8), "RGB")
    raw = io.BytesIO()
    big.save(raw, format="PNG")
    body = {
        "model": "multimodal-embedding-v1",
        "parameters": {},
        "input": {"contents": [{"image": "data:image/png;base64," + base64.b64encode(raw.getvalue()).decode()}]},
    }
    response = httpx.post(server.url, json=body, headers={"Authorization": f"Bearer {server.api_key}"})
    assert response.status_code == 400 and "3MB" in response.json()["message"]


def test_same_picture_reencoded_lands_close(make) -> None:
    embedder = make()
    original = photo(5, (400, 300))
    shrunk = original.resize((200, 150))
    assert float(embedder.embed_image(original) @ embedder.embed_image(shrunk)) > 0.99
    assert float(embedder.embed_image(original) @ embedder.embed_image(photo(6, (400, 300)))) < 0.95


def test_encode_image_gives_up_on_hopeless_limit() -> None:
    with pytest.raises(EmbedError, match="3 MB"):
        encode_image(photo(1, (200, 200)), max_bytes=100)


# -- retries and errors


def test_429_with_retry_after_is_honoured(server: FakeDashScope, make) -> None:
    server.queue_fault("throttle", retry_after=1)
    started = time.monotonic()
    make().embed_text("lamp")
    elapsed = time.monotonic() - started
    assert server.statuses() == [429, 200]
    assert 0.9 <= elapsed < 3.0
    gap = server.requests[1].time - server.requests[0].time
    assert gap >= 0.9


def test_429_without_retry_after_uses_backoff(server: FakeDashScope, make) -> None:
    server.queue_fault("throttle", times=2, retry_after=None)
    make().embed_text("lamp")
    assert server.statuses() == [429, 429, 200]


def test_500_is_retried(server: FakeDashScope, make) -> None:
    server.queue_fault("server_error", times=2)
    make(max_retries=2).embed_text("lamp")
    assert server.statuses() == [500, 500, 200]


def test_500_gives_up_after_max_retries(server: FakeDashScope, make) -> None:
    server.queue_fault("server_error", times=5)
    with pytest.raises(EmbedError, match=r"InternalError.*request_id=.*gave up after 3 attempts"):
        make(max_retries=2).embed_text("lamp")
    assert server.statuses() == [500, 500, 500]


def test_malformed_json_is_retried_then_fails_clearly(server: FakeDashScope, make) -> None:
    server.queue_fault("malformed")
    make().embed_text("lamp")
    assert server.statuses() == [200, 200]
    server.reset()
    server.queue_fault("malformed", times=3)
    with pytest.raises(EmbedError, match="malformed response.*gave up after 3 attempts"):
        make(max_retries=2).embed_text("lamp")
    assert len(server.requests) == 3


def test_stall_past_timeout_is_retried(server: FakeDashScope, make) -> None:
    server.queue_fault("stall", stall=3.0)
    started = time.monotonic()
    make(timeout=0.3).embed_text("lamp")
    assert len(server.requests) == 2 and time.monotonic() - started < 2.5


def test_stall_every_time_ends_in_timeout_error(server: FakeDashScope, make) -> None:
    server.queue_fault("stall", times=2, stall=3.0)
    with pytest.raises(EmbedError, match="timed out after 0.3s.*gave up after 2 attempts"):
        make(timeout=0.3, max_retries=1).embed_text("lamp")
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("bad_request", 400, "InvalidParameter"),
        ("data_inspection", 400, "DataInspectionFailed"),
        ("forbidden", 403, "AccessDenied"),
    ],
)
def test_client_errors_are_never_retried(server: FakeDashScope, make, fault: str, status: int, code: str) -> None:
    server.queue_fault(fault, times=5)
    with pytest.raises(EmbedError, match=rf"HTTP {status} {code}: .+ \(request_id=[0-9a-f-]+\)") as info:
        make(max_retries=3).embed_text("lamp")
    assert server.statuses() == [status]
    if status == 403:
        assert "denied access" in str(info.value)


def test_wrong_key_is_reported_once_and_not_retried(server: FakeDashScope, make) -> None:
    wrong = "sk-wrong-0123456789abcdef"
    with pytest.raises(EmbedError, match="rejected the API key.*HTTP 401 InvalidApiKey") as info:
        make(api_key=wrong, max_retries=3).embed_image(photo(1))
    assert server.statuses() == [401]
    assert wrong not in str(info.value) and server.api_key not in str(info.value)


def test_wrong_path_is_not_retried(server: FakeDashScope, make) -> None:
    with pytest.raises(EmbedError, match="HTTP 404"):
        make(base_url=server.base_url + "/nope").embed_text("lamp")
    assert len(server.requests) == 1


def test_unreachable_server_fails_clearly(make) -> None:
    with pytest.raises(EmbedError, match=r"cannot reach DashScope.*gave up after 2 attempts"):
        make(base_url="http://127.0.0.1:9/api/v1", max_retries=1).embed_text("lamp")


def test_failed_item_fails_alone(server: FakeDashScope, make) -> None:
    images = [photo(1), photo(2), photo(3)]
    embedder = make(max_retries=0)
    server.queue_fault("data_inspection", after=1)
    result = embedder.embed_images(images)
    assert set(result.errors) == {1} and "DataInspectionFailed" in result.errors[1]
    assert not result.vectors[1].any()
    np.testing.assert_allclose(result.vectors[0], embedder.embed_image(images[0]), atol=1e-5)
    np.testing.assert_allclose(result.vectors[2], embedder.embed_image(images[2]), atol=1e-5)
    server.reset()
    server.queue_fault("server_error", after=2)
    result = embedder.embed_texts(["a", "b", "c"])
    assert set(result.errors) == {2} and "InternalError" in result.errors[2]


def test_retry_after_header_parsing() -> None:
    assert _retry_after("2") == 2.0 and _retry_after("0.5") == 0.5 and _retry_after("-3") == 0.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


# -- secrecy


def test_key_never_leaks(server: FakeDashScope, make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    embedder = make(max_retries=1)
    texts = [
        repr(embedder),
        str(embedder),
        repr(embedder._client),
        repr(embedder._http),
        repr(embedder._client.config),
        repr(vars(embedder._client.config)),
        repr(embedder._http.headers),
        repr(embedder.__dict__.get("_api_key")),
    ]
    assert not embedder._client.config.api_key  # the SDK's config never holds the key...
    assert "authorization" not in embedder._http.headers  # ...nor does the httpx client
    server.queue_fault("server_error")
    embedder.embed_text("lamp")  # a retry: logs a warning
    server.queue_fault("throttle", times=2, retry_after=0)
    with pytest.raises(EmbedError) as info:
        embedder.embed_text("lamp")
    texts.append(str(info.value))
    server.queue_fault("forbidden")
    texts.append(str(embedder.embed_texts(["x"]).errors))
    wrong = make(api_key="sk-also-secret-42")
    texts.append(str(wrong.embed_texts(["x"]).errors))
    texts.append(repr(wrong))
    texts.extend(r.getMessage() for r in caplog.records)
    texts.append(caplog.text)
    assert any("retry 1/1" in t for t in texts)  # the log really was captured
    for text in texts:
        assert server.api_key not in text and "sk-also-secret-42" not in text, text
    assert "multimodal-embedding-v1" in repr(embedder) and "*" in repr(embedder)


def test_no_key_means_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPLENS_DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    settings = Settings(_env_file=None, embedder="dashscope")
    with pytest.raises(EmbedderUnavailable, match="no DashScope API key"):
        DashScopeEmbedder.from_settings(settings)
    with pytest.raises(EmbedderUnavailable):
        get_embedder(settings)
    with pytest.raises(EmbedderUnavailable):
        DashScopeEmbedder.from_settings(Settings(_env_file=None, dashscope_api_key="  "))


def test_missing_sdk_means_unavailable(server: FakeDashScope, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("dashscope", "dashscope.v2", "dashscope.v2.transport"):
        monkeypatch.setitem(sys.modules, name, None)  # what `import dashscope` does when it is not installed
    settings = Settings(
        _env_file=None, embedder="dashscope", dashscope_api_key=server.api_key, dashscope_base_url=server.base_url
    )
    with pytest.raises(EmbedderUnavailable, match=r"install shoplens\[dashscope\]") as info:
        DashScopeEmbedder.from_settings(settings)
    assert server.api_key not in str(info.value)
    assert DashScopeEmbedder.identity_for(settings).image_dim == 1024  # the identity needs no SDK
    assert server.requests == []


# -- the vector size


def test_dimension_comes_from_settings_and_is_in_the_identity(server: FakeDashScope) -> None:
    default = Settings(_env_file=None, dashscope_api_key=server.api_key, dashscope_base_url=server.base_url)
    other = Settings(
        _env_file=None,
        dashscope_api_key=server.api_key,
        dashscope_base_url=server.base_url,
        dashscope_model="multimodal-embedding-v1",
        dashscope_dimension=768,
    )
    assert default.dashscope_dimension == 1024
    assert DashScopeEmbedder.identity_for(default) == dashscope_identity("multimodal-embedding-v1", 1024)
    predicted = DashScopeEmbedder.identity_for(other)
    assert (predicted.image_dim, predicted.text_dim) == (768, 768)
    assert predicted.key != DashScopeEmbedder.identity_for(default).key  # another size: another collection
    built = DashScopeEmbedder.from_settings(other)
    try:
        assert built.identity == predicted and built.identity.key == predicted.key
    finally:
        built.close()


def test_vectors_of_another_size_fail_clearly(server: FakeDashScope, make) -> None:
    embedder = make(dimension=768)  # the fake (like multimodal-embedding-v1) answers 1024-d
    result = embedder.embed_texts(["lamp"])
    assert not result.vectors.any() and result.vectors.shape == (1, 768)
    assert "SHOPLENS_DASHSCOPE_DIMENSION=1024" in result.errors[0]
    assert server.statuses() == [200]  # a wrong size is not retried


# -- rate limiting


def test_rate_limiter_also_spaces_retries(server: FakeDashScope, make) -> None:
    server.queue_fault("throttle", retry_after=0)  # the server says "now": the limiter still waits
    make(requests_per_minute=300).embed_text("lamp")  # one request every 0.2 s
    assert server.statuses() == [429, 200]
    assert server.requests[1].time - server.requests[0].time >= 0.18


def test_rate_limiter_spaces_requests(server: FakeDashScope, make) -> None:
    embedder = make(requests_per_minute=600)  # one request every 0.1 s
    threads = [threading.Thread(target=embedder.embed_text, args=(f"item {i}",)) for i in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    embedder.embed_text("one more")
    arrivals = sorted(r.time for r in server.requests)
    assert len(arrivals) == 5
    # spaced when sent; arrivals jitter on a busy machine, so each gap is held to most of its 0.1 s
    assert all(b - a >= 0.06 for a, b in zip(arrivals, arrivals[1:], strict=False)), np.diff(arrivals)
    assert arrivals[-1] - arrivals[0] >= 0.36, np.diff(arrivals)
    assert time.monotonic() - started >= 0.38


def test_body_is_json_with_parameters_even_for_images(server: FakeDashScope, make) -> None:
    make().embed_image(photo(3))
    body = json.loads(server.requests[0].body)
    assert list(body) == ["model", "input", "parameters"] and body["parameters"] == {}
