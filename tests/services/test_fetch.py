"""services/fetch.py against real sockets: a proxy named in the environment, a body cut off
mid-transfer, a compressed body, a URL that is not one, and connections kept across requests."""

from __future__ import annotations

import gzip
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from services.fetch import FetchClient, FetchError, fetch_capped
from tests.support.http_server import LoopbackServer

BODY = bytes(range(256)) * 64


class Origin(LoopbackServer):
    """/whole: BODY; /cut: declares BODY's length, sends half and hangs up; /gzip: BODY gzipped."""

    def __init__(self) -> None:
        self.connections = 0
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                origin.connections += 1

            def do_GET(self) -> None:
                body, encoding = BODY, None
                if self.path == "/gzip" and "gzip" in self.headers.get("Accept-Encoding", ""):
                    body, encoding = gzip.compress(BODY), "gzip"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                self.end_headers()
                if self.path == "/cut":
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


class ForwardProxy(LoopbackServer):
    """A plain-HTTP forward proxy: records the absolute URLs asked of it and relays them."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        proxy = self
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.asked.append(self.path)
                with direct.open(self.path) as upstream:
                    body = upstream.read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_a_proxy_in_the_environment_carries_the_downloads_unless_no_proxy_names_the_host(
    origin: Origin, no_proxy_env: pytest.MonkeyPatch
) -> None:
    proxy = ForwardProxy()
    try:
        no_proxy_env.setenv("HTTP_PROXY", proxy.url)
        assert fetch_capped(f"{origin.url}/whole", len(BODY), 5.0).data == BODY
        assert proxy.asked == [f"{origin.url}/whole"]
        no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
        assert fetch_capped(f"{origin.url}/whole", len(BODY), 5.0).data == BODY
        assert proxy.asked == [f"{origin.url}/whole"]  # straight to the origin this time
    finally:
        proxy.close()


def test_a_body_cut_off_is_a_retryable_error_and_the_client_goes_on(origin: Origin, no_proxy_env) -> None:
    with FetchClient(2) as client:
        with pytest.raises(FetchError, match="the connection broke off") as caught:
            fetch_capped(f"{origin.url}/cut", len(BODY), 5.0, client)
        assert caught.value.retryable
        assert fetch_capped(f"{origin.url}/whole", len(BODY), 5.0, client).data == BODY


def test_kept_connections_serve_one_request_after_another(origin: Origin, no_proxy_env) -> None:
    with FetchClient(1) as client:
        for _ in range(5):
            assert fetch_capped(f"{origin.url}/whole", len(BODY), 5.0, client).data == BODY
    assert origin.connections == 1


def test_a_compressed_body_arrives_decoded_and_its_decoded_size_is_capped(origin: Origin, no_proxy_env) -> None:
    assert fetch_capped(f"{origin.url}/gzip", len(BODY), 5.0).data == BODY
    with pytest.raises(FetchError, match="is too large"):  # gzip shrinks it below the cap; decoded it is over
        fetch_capped(f"{origin.url}/gzip", len(BODY) - 1, 5.0)


def test_a_malformed_url_is_one_clear_error_not_a_retry(no_proxy_env) -> None:
    with pytest.raises(FetchError, match="is not a valid URL") as caught:
        fetch_capped("http://[::1/broken.jpg", 1000, 1.0)
    assert not caught.value.retryable
