"""A real HTTP server on 127.0.0.1 serving a route table: status, content type, body, delay."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

Route = tuple[int, str, bytes, float]  # status, content type, body, seconds before answering


class LoopbackServer:
    """`handler` served on 127.0.0.1 (a free port) from a daemon thread, one thread a connection."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class RouteServer(LoopbackServer):
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.drips: dict[str, float] = {}  # path -> seconds between bytes of the body (a slow server)
        self.hits: dict[str, int] = {}  # path -> requests answered
        routes, drips, hits = self.routes, self.drips, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                hits[path] = hits.get(path, 0) + 1
                status, ctype, body, delay = routes.get(path, (404, "text/plain", b"not found", 0.0))
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    gap = drips.get(self.path.split("?")[0])
                    if gap is None:
                        self.wfile.write(body)
                    for byte in body if gap is not None else b"":
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(gap)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


@pytest.fixture
def route_server() -> Iterator[RouteServer]:
    server = RouteServer()
    yield server
    server.close()
