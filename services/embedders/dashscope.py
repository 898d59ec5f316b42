"""Alibaba Cloud Model Studio (DashScope) `multimodal-embedding-v1`: photos and text in one 1024-d space.

Why plain httpx rather than the `dashscope` SDK: the HTTP protocol is one small JSON POST, so
talking to it directly lets `SHOPLENS_DASHSCOPE_BASE_URL` point at any server (a regional
endpoint, a proxy, the local fake the tests run), never triggers the SDK's habit of uploading
local file paths to a cloud bucket (we only ever send base64 data URIs), and adds no dependency.

Protocol (one call):

    POST {base}/services/embeddings/multimodal-embedding/multimodal-embedding
    Authorization: Bearer <key>
    {"model": "multimodal-embedding-v1",
     "input": {"contents": [{"text": "..."} | {"image": "data:image/jpeg;base64,..."}]},
     "parameters": {}}
    -> 200 {"output": {"embeddings": [{"index", "embedding", "type"}]}, "usage": {...}, "request_id"}
    -> 4xx/5xx {"request_id", "code", "message"}

Documented limits that shape this module: images JPG/PNG/BMP up to 3 MB (we always send a JPEG
data URI, downscaling until it fits), text up to 512 tokens (longer text is cut by the service; we
cut it ourselves, conservatively, see `truncate_text`), 120 requests per minute (a client-side
limiter spaces calls), and the docs describe one text / one image per call, so
`SHOPLENS_DASHSCOPE_IMAGES_PER_CALL` (default 1) is used as the contents-per-call limit for both.

Retries (tenacity, exponential backoff with jitter, `Retry-After` honoured): 429, 408, 5xx,
timeouts, connection errors and malformed 200 bodies. Never retried: other 4xx (400
InvalidParameter / DataInspectionFailed, 401 InvalidApiKey, 403 AccessDenied...).

The API key stays a `SecretStr` until the Authorization header of a request is built; it is never
put on the httpx client, and every message this module produces is scrubbed of it.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
from PIL import Image
from pydantic import SecretStr
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from services.embedders.base import Embedder, EmbedderIdentity, EmbedderUnavailable, EmbedError
from services.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com/api/v1"
DEFAULT_MODEL = "multimodal-embedding-v1"
ENDPOINT = "/services/embeddings/multimodal-embedding/multimodal-embedding"
DIM = 1024
MAX_IMAGE_BYTES = 3_000_000  # the service says 3 MB; decimal MB keeps us under either reading
MAX_TEXT_TOKENS = 512
MIN_IMAGE_SIDE = 16  # give up downscaling below this
EMPTY_TEXT = "."  # blank text is sent as this placeholder (see `prepare_text`)


# --------------------------------------------------------------------------------------------
# Inputs


def _token_cost(ch: str) -> float:
    """Upper-bound estimate of the tokens one character costs (see `truncate_text`)."""
    code = ord(ch)
    if code < 128:
        if ch.isalpha():
            return 0.34  # English words: ~4 chars a token in practice; count 1 per 3
        if ch.isspace():
            return 0.25
        return 1.0  # digits (often split one per token) and ASCII punctuation
    if code > 0xFFFF:
        return 2.0  # emoji and other astral characters can take several byte-level tokens
    return 1.0  # CJK, kana, hangul, Cyrillic, accented Latin...: one token each at most


def truncate_text(text: str, max_tokens: int = MAX_TEXT_TOKENS) -> str:
    """Cut `text` so that it surely fits the service's 512-token window.

    DashScope publishes no tokenizer for this model, so the count is a conservative estimate that
    over-counts for both Chinese and English: every CJK (or other non-ASCII BMP) character costs
    one token, an astral character (emoji) two, an ASCII digit or punctuation mark one, an ASCII
    letter a third of a token and whitespace a quarter. Text is cut at the first character whose
    running cost would pass `max_tokens`, backing off to the last space within 32 characters so
    a word is not split. The service would truncate longer text itself; cutting here keeps
    payloads small and the sent text predictable.
    """
    total = 0.0
    for i, ch in enumerate(text):
        total += _token_cost(ch)
        if total > max_tokens:
            cut = text[:i]
            space = cut.rfind(" ", max(0, i - 32))
            return (cut[:space] if space > 0 else cut).rstrip()
    return text


def prepare_text(text: str) -> str:
    """Whitespace collapsed, truncated (`truncate_text`); blank text becomes `EMPTY_TEXT`, a fixed
    placeholder, because the service is not documented to accept empty text."""
    collapsed = " ".join(text.split())
    return truncate_text(collapsed) or EMPTY_TEXT


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        image.load()
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_image(image: Image.Image, max_bytes: int = MAX_IMAGE_BYTES) -> str:
    """A `data:image/jpeg;base64,...` URI of the image (RGB, alpha flattened onto white); when the
    JPEG is over `max_bytes`, the image is downscaled and re-encoded until it fits."""
    try:
        rgb = _to_rgb(image)
        data = _jpeg(rgb)
        while len(data) > max_bytes:
            scale = min(0.9, math.sqrt(max_bytes / len(data)) * 0.95)
            size = (int(rgb.width * scale), int(rgb.height * scale))
            if min(size) < MIN_IMAGE_SIDE:
                raise EmbedError("image cannot be shrunk under the 3 MB limit")
            log.debug("image JPEG is %d bytes; downscaling %s -> %s", len(data), rgb.size, size)
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
            data = _jpeg(rgb)
    except EmbedError:
        raise
    except Exception as exc:
        raise EmbedError(f"cannot read image: {exc.__class__.__name__}: {exc}") from exc
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------------
# Rate limiting and errors


class RateLimiter:
    """Thread-safe minimum interval between requests: at most `per_minute` calls a minute."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval = 60.0 / per_minute
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:  # reserve a slot, then sleep outside the lock
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)


class DashScopeError(EmbedError):
    """A failed call; `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 code: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.code = code
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# --------------------------------------------------------------------------------------------
# The embedder


def dashscope_identity(model: str) -> EmbedderIdentity:
    return EmbedderIdentity(backend="dashscope", model=model, image_dim=DIM, text_dim=DIM, cross_modal=True)


class DashScopeEmbedder(Embedder):
    """DashScope multimodal embeddings over HTTP; see the module docstring for the protocol."""

    def __init__(
        self,
        api_key: SecretStr | str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        contents_per_call: int = 1,
        requests_per_minute: float = 120,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        retry_after_max: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        if not self._api_key.get_secret_value().strip():
            raise EmbedderUnavailable("no DashScope API key: set SHOPLENS_DASHSCOPE_API_KEY or DASHSCOPE_API_KEY")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + ENDPOINT
        self.model = model
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.timeout = timeout
        self._sleep = sleep
        self.image_batch_size = contents_per_call
        self.text_batch_size = contents_per_call
        self._limiter = RateLimiter(requests_per_minute, sleep=sleep)
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False)
        self.identity = dashscope_identity(model)

    @classmethod
    def identity_for(cls, settings: Settings) -> EmbedderIdentity:
        """The model name is a setting and the service's vector size is fixed: nothing to ask the server."""
        return dashscope_identity(settings.dashscope_model)

    @classmethod
    def from_settings(cls, settings: Settings) -> DashScopeEmbedder:
        key = settings.dashscope_api_key
        if key is None or not key.get_secret_value().strip():
            raise EmbedderUnavailable("no DashScope API key: set SHOPLENS_DASHSCOPE_API_KEY or DASHSCOPE_API_KEY")
        return cls(
            key,
            base_url=settings.dashscope_base_url,
            model=settings.dashscope_model,
            contents_per_call=settings.dashscope_images_per_call,
            requests_per_minute=settings.dashscope_requests_per_minute,
            timeout=settings.dashscope_timeout,
            max_retries=settings.dashscope_max_retries,
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(model={self.model!r}, base_url={_redact_url(self.base_url)!r}, "
            f"api_key='**********')"
        )

    __str__ = __repr__

    def close(self) -> None:
        self._client.close()

    # -- the two batch methods the base class calls

    def _embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._call([{"image": encode_image(image)} for image in images])

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._call([{"text": prepare_text(text)} for text in texts])

    # -- HTTP

    def _call(self, contents: list[dict[str, str]]) -> np.ndarray:
        body = {"model": self.model, "input": {"contents": contents}, "parameters": {}}
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        attempts = self.max_retries + 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, DashScopeError) and exc.retryable),
            before_sleep=self._log_retry,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._post, payload, len(contents))
        except DashScopeError as exc:
            if exc.retryable and attempts > 1:
                raise EmbedError(self._scrub(f"{exc} (gave up after {attempts} attempts)")) from None
            raise

    def _post(self, payload: bytes, expected: int) -> np.ndarray:
        self._limiter.acquire()
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        try:
            response = self._client.post(self.url, content=payload, headers=headers)
        except httpx.TimeoutException as exc:
            raise DashScopeError(
                f"DashScope request timed out after {self.timeout:g}s ({exc.__class__.__name__})", retryable=True
            ) from None
        except httpx.TransportError as exc:
            raise DashScopeError(
                self._scrub(f"cannot reach DashScope at {_redact_url(self.base_url)}: {exc.__class__.__name__}: {exc}"),
                retryable=True,
            ) from None
        if response.status_code == 200:
            return self._parse(response, expected)
        raise self._http_error(response)

    def _parse(self, response: httpx.Response, expected: int) -> np.ndarray:
        request_id = response.headers.get("x-request-id") or "?"
        try:
            data = response.json()
            request_id = data.get("request_id") or request_id
            items = data["output"]["embeddings"]
            if not isinstance(items, list):
                raise TypeError("embeddings is not a list")
            rows = sorted(items, key=lambda item: int(item["index"]))
            if [int(item["index"]) for item in rows] != list(range(expected)):
                raise ValueError(f"expected indices 0..{expected - 1}, got {[item['index'] for item in rows]}")
            matrix = np.asarray([item["embedding"] for item in rows], dtype=np.float32)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DashScopeError(
                self._scrub(f"DashScope returned a malformed response ({exc.__class__.__name__}: {exc}; "
                            f"request_id={request_id})"),
                retryable=True,
            ) from None
        if matrix.shape != (expected, DIM):
            raise DashScopeError(
                f"DashScope returned vectors of shape {matrix.shape}, expected {(expected, DIM)} "
                f"(model {self.model!r}; request_id={request_id})",
                retryable=False,
            )
        return matrix

    def _http_error(self, response: httpx.Response) -> DashScopeError:
        status = response.status_code
        code, message, request_id = "", "", ""
        try:
            data = response.json()
            if isinstance(data, dict):
                code = str(data.get("code") or "")
                message = str(data.get("message") or "")
                request_id = str(data.get("request_id") or "")
        except ValueError:
            message = response.text[:200].strip()
        request_id = request_id or response.headers.get("x-request-id") or "?"
        detail = f"HTTP {status} {code or response.reason_phrase}: {message or 'no message'} (request_id={request_id})"
        retryable = status in (408, 429) or status >= 500
        if status == 401:
            text = f"DashScope rejected the API key — check SHOPLENS_DASHSCOPE_API_KEY: {detail}"
        elif status == 403:
            text = f"DashScope denied access (account, workspace or model not enabled for this key): {detail}"
        elif status == 429:
            text = f"DashScope throttled the request: {detail}"
        else:
            text = f"DashScope request failed: {detail}"
        return DashScopeError(
            self._scrub(text), retryable=retryable, status=status, code=code or None,
            retry_after=_retry_after(response.headers.get("retry-after")) if retryable else None,
        )

    # -- retry helpers

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(retry_after, self.retry_after_max) + random.uniform(0, self.backoff_base / 4)
        exponential = self.backoff_base * 2 ** (state.attempt_number - 1)
        return min(self.backoff_max, exponential + random.uniform(0, self.backoff_base))

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "DashScope call failed (%s); retry %d/%d in %.2fs",
            exc, state.attempt_number, self.max_retries, delay,
        )

    def _scrub(self, text: str) -> str:
        secret = self._api_key.get_secret_value()
        return text.replace(secret, "**********") if secret else text
