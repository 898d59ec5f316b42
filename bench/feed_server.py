"""A shop's image host for bench/feed.py, in its own process (so its work does not share the
benchmark's interpreter lock): serves a folder over HTTP/1.1 keep-alive with ETag and
Last-Modified, answers conditional requests with 304, and reports what it served at /_stats.

    python -m bench.feed_server FOLDER PORT_FILE
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def serve(root: Path, port_file: Path) -> None:
    stats: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # A CDN's server sends a small response without waiting (nginx's tcp_nodelay): with Nagle's
        # algorithm on, the body written after the headers waited for the client's delayed ACK,
        # ~40 ms per image on a keep-alive connection, which made the benchmark download-bound.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path == "/_stats":
                with lock:
                    return self._send(200, json.dumps(stats).encode(), {"Content-Type": "application/json"})
            path = root / self.path.lstrip("/").split("?")[0]
            try:
                st = path.stat()
            except OSError:
                return self._send(404, b"not found")
            etag, modified = f'"{st.st_size:x}-{st.st_mtime_ns:x}"', formatdate(st.st_mtime, usegmt=True)
            validators = {"ETag": etag, "Last-Modified": modified}
            with lock:
                stats["requests"] += 1
            if self._still_valid(etag, st.st_mtime):
                with lock:
                    stats["not_modified"] += 1
                return self._send(304, b"", validators)
            body = path.read_bytes()
            with lock:
                stats["bodies"] += 1
                stats["bytes"] += len(body)
            self._send(200, body, {"Content-Type": "image/jpeg", **validators})

        def _still_valid(self, etag: str, mtime: float) -> bool:
            match = self.headers.get("If-None-Match")
            if match is not None:
                return match == etag
            since = self.headers.get("If-Modified-Since")
            try:
                return since is not None and int(mtime) <= parsedate_to_datetime(since).timestamp()
            except (TypeError, ValueError):
                return False

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]))
