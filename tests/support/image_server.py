"""A real image host on 127.0.0.1 that behaves like a shop's CDN: HTTP/1.1 keep-alive, ETag and
Last-Modified with 304 answers, redirects, failures on demand, and a delay per request. It counts
what the tests need to prove: requests and bodies per path, the most requests and connections it
served at once, and the connections it accepted."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ImageServer:
    def __init__(self, delay: float = 0.0, validators: bool = True) -> None:
        self.delay, self.validators = delay, validators
        self.images: dict[str, bytes] = {}
        self.modified: dict[str, str] = {}
        self.redirects: dict[str, str] = {}  # path -> Location
        self.failures: dict[str, tuple[int, dict[str, str]]] = {}  # path -> status, headers (until removed)
        self.requests: Counter[str] = Counter()
        self.bodies: Counter[str] = Counter()  # 200 answers with the image
        self.not_modified: Counter[str] = Counter()
        self.user_agents: set[str] = set()
        self.active = self.max_active = self.connections = self.max_connections = 0
        self.opened = 0  # connections accepted in all
        self._clock = 1_700_000_000  # Last-Modified moves a second per change: never the same for two bodies
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def put(self, path: str, data: bytes) -> str:
        """Serve `data` at `path` (a new body gets a new ETag and Last-Modified); returns its URL."""
        with self._lock:
            self._clock += 1
            self.images[path] = data
            self.modified[path] = formatdate(self._clock, usegmt=True)
        return f"{self.url}{path}"

    def etag(self, path: str) -> str:
        return f'"{hashlib.sha256(self.images[path]).hexdigest()[:16]}"'

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _enter(self, connection: bool) -> None:
        with self._lock:
            if connection:
                self.connections += 1
                self.opened += 1
                self.max_connections = max(self.max_connections, self.connections)
            else:
                self.active += 1
                self.max_active = max(self.max_active, self.active)

    def _leave(self, connection: bool) -> None:
        with self._lock:
            if connection:
                self.connections -= 1
            else:
                self.active -= 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the client reuses connections
            disable_nagle_algorithm = True  # else each body, a second write, waits for a delayed ACK

            def setup(self) -> None:
                super().setup()
                server._enter(connection=True)

            def finish(self) -> None:
                server._leave(connection=True)
                super().finish()

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                server._enter(connection=False)
                try:
                    with server._lock:
                        server.requests[path] += 1
                        server.user_agents.add(self.headers.get("User-Agent", ""))
                    time.sleep(server.delay)
                    self._answer(path)
                finally:
                    server._leave(connection=False)

            def _answer(self, path: str) -> None:
                if path in server.failures:
                    status, headers = server.failures[path]
                    return self._send(status, b"failed on purpose", headers)
                if path in server.redirects:
                    return self._send(302, b"", {"Location": server.redirects[path]})
                if path not in server.images:
                    return self._send(404, b"not found")
                validators = (
                    {"ETag": server.etag(path), "Last-Modified": server.modified[path]} if server.validators else {}
                )
                if server.validators and self._still_valid(path):
                    server.not_modified[path] += 1
                    return self._send(304, b"", validators)
                server.bodies[path] += 1
                self._send(200, server.images[path], {"Content-Type": "image/jpeg", **validators})

            def _still_valid(self, path: str) -> bool:
                match = self.headers.get("If-None-Match")
                if match is not None:  # RFC 9110: If-Modified-Since is ignored beside If-None-Match
                    return match == server.etag(path)
                return self.headers.get("If-Modified-Since") == server.modified[path]

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if status != 304:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        return Handler
