"""A local HTTP server that speaks DashScope's multimodal-embedding protocol, and its pytest fixture.

It is a real server (stdlib `ThreadingHTTPServer` on 127.0.0.1, a free port, a background thread)
so the embedder under test goes through httpx, sockets, timeouts and all. It checks what the real
service checks (Bearer key, path, body shape, image format and size, contents per call), answers
deterministic 1024-d vectors, records every request, and can be told to misbehave for the next
requests (429 with Retry-After, 500, malformed 200, a stall past the client's timeout, 400/403).

Image vectors are a smooth function of the picture (8x8 grey thumbnail + 4x4 colour thumbnail +
channel means, through a fixed random projection and tanh), so the same picture re-encoded or
mildly resized lands close; text vectors come from a RNG seeded by the text's sha256.

Assumption modelled here but not confirmed against the real service: blank text is rejected with
400 InvalidParameter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from PIL import Image

PATH = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"
MODEL = "multimodal-embedding-v1"
DIM = 1024
MAX_IMAGE_BYTES = 3 * 1024 * 1024
DATA_URI = re.compile(r"^data:image/(jpeg|jpg|png|bmp);base64,(.*)$", re.DOTALL)
FAULTS = {"throttle", "server_error", "malformed", "stall", "bad_request", "data_inspection", "forbidden"}

_FEATURES = 64 + 48 + 3
_rng = np.random.default_rng(20240611)
_PROJECTION = _rng.standard_normal((_FEATURES, DIM)).astype(np.float64) * 2.0
_BIAS = _rng.standard_normal(DIM).astype(np.float64) * 0.5


def image_vector(image: Image.Image) -> list[float]:
    """Deterministic and smooth in the pixels: re-encoding or mild resizing moves it only a little."""
    rgb = image.convert("RGB")
    grey = np.asarray(rgb.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=np.float64).ravel() / 255.0
    colour = np.asarray(rgb.resize((4, 4), Image.Resampling.BOX), dtype=np.float64).ravel() / 255.0
    means = np.asarray(rgb, dtype=np.float64).reshape(-1, 3).mean(axis=0) / 255.0
    features = np.concatenate([grey, colour, means]) - 0.5
    return np.tanh(features @ _PROJECTION / np.sqrt(_FEATURES) + _BIAS).tolist()


def text_vector(text: str) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return np.random.default_rng(seed).standard_normal(DIM).tolist()


def url_vector(url: str) -> list[float]:
    return text_vector("url:" + url)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int = 0
    time: float = field(default_factory=time.monotonic)


@dataclass
class _Fault:
    kind: str
    retry_after: str | None = None
    stall: float = 0.0


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FakeDashScope:
    """The server plus its knobs; use as the `fake_dashscope` fixture or standalone (start/stop)."""

    def __init__(self, api_key: str | None = None, model: str = MODEL):
        self.api_key = api_key or "sk-fake-" + secrets.token_hex(12)
        self.model = model
        self.requests: list[RecordedRequest] = []
        self.max_images_per_call = 1
        self.max_texts_per_call = 1
        self.shuffle_response = False  # answer embeddings in reverse order (clients must use `index`)
        self._script: deque[_Fault | None] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def start(self) -> FakeDashScope:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._stop.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-dashscope", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- knobs

    def reset(self) -> None:
        """Forget recorded requests and queued faults; restore default limits."""
        self._stop.set()  # release any stalled handler before clearing
        with self._lock:
            self.requests.clear()
            self._script.clear()
            self.max_images_per_call = 1
            self.max_texts_per_call = 1
            self.shuffle_response = False
        self._stop.clear()

    def queue_fault(
        self, kind: str, times: int = 1, *, after: int = 0, retry_after: float | str | None = 1, stall: float = 5.0
    ) -> None:
        """Let `after` requests through, then answer the next `times` requests with `kind`:
        throttle (429 Throttling.RateQuota + Retry-After; None for no header), server_error (500
        InternalError), malformed (200, broken JSON), stall (wait `stall` seconds, then answer
        normally), bad_request (400 InvalidParameter), data_inspection (400 DataInspectionFailed),
        forbidden (403 AccessDenied)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULTS)}")
        fault = _Fault(kind, None if retry_after is None else str(retry_after), stall)
        with self._lock:
            self._script.extend([None] * after)
            self._script.extend([fault] * times)

    def statuses(self) -> list[int]:
        with self._lock:
            return [r.status for r in self.requests]

    def _next_fault(self) -> _Fault | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # -- the protocol

    def check(self, request: RecordedRequest) -> list[dict[str, Any]]:
        """Validate one request like the service would; return its embeddings or raise _Reject."""
        if request.path != PATH:
            raise _Reject(404, "NotFound", f"no such path: {request.path}")
        if request.method != "POST":
            raise _Reject(405, "MethodNotAllowed", "use POST")
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            raise _Reject(401, "InvalidApiKey", "Invalid API-key provided.")
        if "application/json" not in request.headers.get("content-type", ""):
            raise _Reject(400, "InvalidParameter", "Content-Type must be application/json")
        body = request.json
        if not isinstance(body, dict) or set(body) != {"model", "input", "parameters"}:
            raise _Reject(400, "InvalidParameter", "body must have exactly model, input and parameters")
        if body["model"] != self.model:
            raise _Reject(400, "InvalidParameter", f"Model not exist: {body['model']!r}")
        if not isinstance(body["parameters"], dict):
            raise _Reject(400, "InvalidParameter", "parameters must be an object")
        if not isinstance(body["input"], dict) or set(body["input"]) != {"contents"}:
            raise _Reject(400, "InvalidParameter", 'input must be {"contents": [...]}')
        contents = body["input"]["contents"]
        if not isinstance(contents, list) or not contents:
            raise _Reject(400, "InvalidParameter", "input.contents must be a non-empty list")
        kinds = []
        for item in contents:
            if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in ("text", "image"):
                raise _Reject(400, "InvalidParameter", 'each content must be {"text": ...} or {"image": ...}')
            kinds.append(next(iter(item)))
        if kinds.count("image") > self.max_images_per_call:
            raise _Reject(400, "InvalidParameter", f"at most {self.max_images_per_call} image(s) per call")
        if kinds.count("text") > self.max_texts_per_call:
            raise _Reject(400, "InvalidParameter", f"at most {self.max_texts_per_call} text(s) per call")
        out = []
        for index, item in enumerate(contents):
            if "text" in item:
                out.append({"index": index, "embedding": self._text(item["text"]), "type": "text"})
            else:
                out.append({"index": index, "embedding": self._image(item["image"]), "type": "image"})
        return out

    @staticmethod
    def _text(value: Any) -> list[float]:
        if not isinstance(value, str) or not value.strip():
            raise _Reject(400, "InvalidParameter", "text must be a non-empty string")
        return text_vector(value)

    @staticmethod
    def _image(value: Any) -> list[float]:
        if not isinstance(value, str):
            raise _Reject(400, "InvalidParameter", "image must be a string")
        if value.startswith(("http://", "https://")):
            return url_vector(value)
        match = DATA_URI.match(value)
        if not match:
            raise _Reject(
                400,
                "InvalidParameter",
                "The provided URL does not appear to be valid: image must be "
                "a data:image/(jpeg|png|bmp);base64 URI or an http(s) URL",
            )
        try:
            raw = base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise _Reject(400, "InvalidParameter", "image is not valid base64") from None
        if len(raw) > MAX_IMAGE_BYTES:
            raise _Reject(400, "InvalidParameter", f"image is {len(raw)} bytes; the limit is 3MB")
        try:
            with Image.open(io.BytesIO(raw)) as image:
                fmt = (image.format or "").lower()
                if fmt not in ("jpeg", "png", "bmp"):
                    raise _Reject(400, "InvalidParameter", f"unsupported image format {fmt!r}")
                return image_vector(image)
        except _Reject:
            raise
        except Exception as exc:
            raise _Reject(400, "InvalidParameter", f"cannot decode image: {exc}") from None


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeDashScope
    protocol_version = "HTTP/1.1"
    # headers and body go out as two writes: without this, each answer on a kept-alive connection
    # waits out the client's delayed ACK (tens of ms), which DashScope's own servers do not do
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        self._handle("POST")

    def do_GET(self) -> None:
        self._handle("GET")

    def _handle(self, method: str) -> None:
        fake = self.server_fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            parsed = None
        request = RecordedRequest(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body, parsed)
        fake._record(request)
        request_id = str(uuid.uuid4())
        fault = fake._next_fault() if self.path == PATH else None
        try:
            if fault is not None and fault.kind == "stall":
                fake._stop.wait(fault.stall)
            if fault is not None and fault.kind == "throttle":
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                raise _RejectWithHeaders(
                    429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.", headers
                )
            if fault is not None and fault.kind == "server_error":
                raise _Reject(500, "InternalError", "An internal error has occured, please try again later.")
            if fault is not None and fault.kind == "forbidden":
                raise _Reject(403, "AccessDenied", "Access denied.")
            if fault is not None and fault.kind == "bad_request":
                raise _Reject(400, "InvalidParameter", "queued fault: invalid parameter")
            if body and parsed is None:
                raise _Reject(400, "InvalidParameter", "request body is not valid JSON")
            embeddings = fake.check(request)
            if fault is not None and fault.kind == "data_inspection":
                raise _Reject(400, "DataInspectionFailed", "Input data may contain inappropriate content.")
            if fault is not None and fault.kind == "malformed":
                self._send(request, 200, b'{"output": {"embeddings": [{"index": 0, "embe', {})
                return
            if fake.shuffle_response:
                embeddings = embeddings[::-1]
            usage: dict[str, int] = {}
            texts = [e for e in embeddings if e["type"] == "text"]
            images = [e for e in embeddings if e["type"] == "image"]
            if texts:
                usage["input_tokens"] = sum(len(c.get("text", "")) for c in request.json["input"]["contents"])
            if images:
                usage["image_count"] = len(images)
            payload = {"output": {"embeddings": embeddings}, "usage": usage, "request_id": request_id}
            self._send(request, 200, json.dumps(payload).encode(), {})
        except _Reject as reject:
            headers = getattr(reject, "headers", {})
            payload = {"request_id": request_id, "code": reject.code, "message": reject.message}
            self._send(request, reject.status, json.dumps(payload).encode(), headers)

    def _send(self, request: RecordedRequest, status: int, data: bytes, headers: dict[str, str]) -> None:
        request.status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); nothing to answer


class _RejectWithHeaders(_Reject):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str]):
        super().__init__(status, code, message)
        self.headers = headers


@pytest.fixture(scope="session")
def fake_dashscope():
    """A running FakeDashScope for the whole session; tests that queue faults call `reset()`."""
    server = FakeDashScope().start()
    try:
        yield server
    finally:
        server.stop()
