"""The HTTP API of a real server process: the contract, bad input, and the admin credential."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from server import schemas
from server.client import ApiError
from tests.server.conftest import PASSWORD, PRODUCTS, Server, server_file
from tests.support.catalog import product_photo, variant


def jpeg(img: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "Traceback" not in response.text
    return body["error"]


def test_health_says_what_serves(server: Server) -> None:
    health = httpx.get(f"{server.url}/api/v1/health").json()
    assert health["ready"] and health["model_loaded"] and health["status"] == "ok"
    assert health["counts"] == {"products": PRODUCTS, "images": PRODUCTS, "unsynced": 0}
    assert health["vectors"] == 2 * PRODUCTS and health["embedder"].startswith("openclip")


def test_search_by_photo_multipart_and_json(server: Server) -> None:
    shopper = jpeg(variant(product_photo(5000), 1), quality=60)  # product 5's photo as a shopper took it
    multipart = httpx.post(f"{server.url}/api/v1/search", files={"image": ("me.jpg", shopper)}, data={"top_k": "3"})
    assert multipart.status_code == 200, multipart.text
    hits = multipart.json()["hits"]
    assert hits[0]["sku"] == "SKU-0005" and len(hits) == 3
    assert set(hits[0]) >= {"sku", "title", "price", "currency", "category", "brand", "in_stock", "score", "image_url"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    exact = base64.b64encode(server.photo(2)).decode()
    body = httpx.post(f"{server.url}/api/v1/search", json={"image_base64": exact, "top_k": 2}).json()
    assert body["hits"][0]["sku"] == "SKU-0002" and body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert body["took_ms"] > 0 and body["kinds"] == ["image->image"]


def test_filters_are_pushed_down_and_validated(server: Server) -> None:
    with server.client(None) as client:
        query = schemas.SearchQuery(text="Product", category=["Bags"], in_stock=True, top_k=10)
        hits = client.search(query).hits
        assert hits and all(h.category == "Bags" and h.in_stock for h in hits)
        photo_hits = client.search(
            schemas.SearchQuery(category=["Chairs", "Lamps"], max_price=40, top_k=10), server.photo(1)
        ).hits
        assert photo_hits and all(h.category in ("Chairs", "Lamps") and h.price <= 40 for h in photo_hits)
    for bad in (
        {"text": "x", "top_k": 0},
        {"text": "x", "top_k": 101},
        {"text": "x", "min_price": 9, "max_price": 1},
        {"text": "x", "weight": 2},
        {"text": "x", "surprise": 1},
        {"text": "x", "category": "Bags"},
    ):
        response = httpx.post(f"{server.url}/api/v1/search", json=bad)
        assert response.status_code == 422 and error_of(response)["code"] == "invalid_request", bad


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        ({"json": {}}, 400, "bad_query"),
        ({"json": {"image_base64": "not base64!"}}, 400, "bad_request"),
        ({"files": {"image": ("x.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 64)}}, 422, "bad_image"),
        ({"files": {"image": ("x.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")}}, 422, "bad_image"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "invalid_request"),
        ({"content": b"text=x", "headers": {"content-type": "text/plain"}}, 400, "bad_request"),
        (
            {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}},
            400,
            "bad_query",
        ),
    ],
)
def test_bad_search_requests_are_4xx_json(server: Server, kwargs: dict, status: int, code: str) -> None:
    response = httpx.post(f"{server.url}/api/v1/search", **kwargs)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code


def test_an_oversized_body_is_refused_while_it_arrives(server: Server) -> None:
    huge = b"\xff\xd8" + b"\0" * (30 * 1024 * 1024)
    response = httpx.post(f"{server.url}/api/v1/search", files={"image": ("big.jpg", huge)})
    assert response.status_code == 413 and error_of(response)["code"] == "too_large"


def test_a_48_megapixel_phone_photo_is_searched_not_refused(server: Server) -> None:
    big = Image.open(io.BytesIO(server.photo(4))).resize((8064, 6048))
    response = httpx.post(f"{server.url}/api/v1/search", files={"image": ("phone.jpg", jpeg(big, 70))}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["hits"][0]["sku"] == "SKU-0004"


def test_products_pages_detail_similar_and_facets(server: Server) -> None:
    with server.client(None) as client:
        first, second = client.products(0, 5), client.products(5, 5)
        assert first.total == PRODUCTS and len(first.products) == 5 and len(second.products) == PRODUCTS - 5
        assert {p.sku for p in first.products}.isdisjoint({p.sku for p in second.products})
        bags = client.products(0, 50, schemas.Filters(category=["Bags"]))
        assert bags.total == len(bags.products) > 0 and all(p.category == "Bags" for p in bags.products)
        product = client.product("SKU-0003")
        assert product.title.startswith("Product 3") and product.images and product.attributes["color"] == "red"
        similar = client.similar("SKU-0003", top_k=3)
        assert similar.hits and "SKU-0003" not in [h.sku for h in similar.hits]
        facets = client.facets()
        assert facets.categories == ["Bags", "Chairs", "Lamps", "Shoes"] and facets.min_price == 10.0
        bag_brands = client.facets(["Bags"]).brands
        assert set(bag_brands) == {p.brand for p in bags.products} and set(bag_brands) < set(facets.brands)
        with pytest.raises(ApiError) as missing:
            client.product("NOPE")
        assert missing.value.http_status == 404 and missing.value.code == "not_found"


def test_images_are_served_by_hash_with_cache_headers(server: Server) -> None:
    with server.client(None) as client:
        url = client.product("SKU-0001").image_url
    assert url is not None
    full = httpx.get(server.url + url)
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
    assert "immutable" in full.headers["cache-control"] and full.content == server.photo(1)
    thumb = httpx.get(server.url + url, params={"size": 240})
    assert Image.open(io.BytesIO(thumb.content)).size == (240, 240)
    again = httpx.get(server.url + url, params={"size": 240}, headers={"If-None-Match": thumb.headers["etag"]})
    assert again.status_code == 304
    assert error_of(httpx.get(server.url + url, params={"size": 7}))["code"] == "bad_request"
    assert httpx.get(f"{server.url}/api/v1/images/{'0' * 64}").status_code == 404
    assert httpx.get(f"{server.url}/api/v1/images/../../etc/passwd").status_code == 404
    assert error_of(httpx.get(f"{server.url}/api/v1/images/zz"))["code"] == "invalid_request"


def test_unknown_routes_and_methods_answer_json(server: Server) -> None:
    assert error_of(httpx.get(f"{server.url}/api/v1/nothing"))["code"] == "not_found"
    assert error_of(httpx.put(f"{server.url}/api/v1/search"))["code"] == "method_not_allowed"


ADMIN_CALLS = [
    ("GET", "/api/v1/runs"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/stats"),
    ("POST", "/api/v1/reindex"),
    ("DELETE", "/api/v1/products/SKU-0001"),
    ("POST", "/api/v1/ingest"),
    ("POST", "/api/v1/reconcile"),
]


@pytest.mark.parametrize("method, path", ADMIN_CALLS)
def test_admin_endpoints_refuse_without_the_credential(server: Server, method: str, path: str) -> None:
    response = httpx.request(method, server.url + path)
    assert response.status_code == 401 and error_of(response)["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_wrong_credentials_are_throttled_and_the_local_token_works(server: Server) -> None:
    headers = {"Authorization": "Bearer wrong"}
    first = httpx.get(f"{server.url}/api/v1/runs", headers=headers)
    assert first.status_code == 401 and "Wrong" in error_of(first)["message"]
    second = httpx.get(f"{server.url}/api/v1/runs", headers=headers)
    assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
    # the server's own token (server.json, readable by its user only) is never throttled
    assert (
        httpx.get(f"{server.url}/api/v1/runs", headers={"Authorization": f"Bearer {server.token}"}).status_code == 200
    )
    assert oct((server_file(server.home)).stat().st_mode & 0o777) == "0o600"


def test_no_secret_in_docs_or_answers(server: Server) -> None:
    docs = httpx.get(f"{server.url}/docs")
    spec = httpx.get(f"{server.url}/openapi.json")
    assert docs.status_code == 200 and spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/api/v1/search", "/api/v1/ingest", "/api/v1/jobs/{job_id}", "/api/v1/products/{sku}/similar"} <= set(paths)
    assert "multipart/form-data" in paths["/api/v1/search"]["post"]["requestBody"]["content"]
    for text in (docs.text, spec.text, httpx.get(f"{server.url}/api/v1/health").text):
        assert PASSWORD not in text and server.token not in text
    assert PASSWORD not in server.log.read_text() and server.token not in server.log.read_text()
