"""Alibaba Cloud Model Studio (DashScope) multimodal embeddings, photos and text in one space,
called through the official `dashscope` SDK (its v2 client; the optional extra `shoplens[dashscope]`).

The call (what the SDK's `client.multimodal.embeddings.create` sends):

    POST {base}/services/embeddings/multimodal-embedding/multimodal-embedding
    Authorization: Bearer <key>
    {"model": "multimodal-embedding-v1",
     "input": {"contents": [{"text": "..."} | {"image": "data:image/jpeg;base64,..."}]},
     "parameters": {}}
    -> 200 {"output": {"embeddings": [{"index", "embedding", "type"}]}, "usage": {...}, "request_id"}
    -> 4xx/5xx {"request_id", "code", "message"}

What the SDK does here: the endpoint, the request body, the Authorization and SDK headers, the
HTTP call, the response model and the mapping of failures onto its error classes (which this
module maps onto `EmbedError` / `EmbedderUnavailable` with safe, key-free messages). The SDK's
client gets `base_url` (so `SHOPLENS_DASHSCOPE_BASE_URL` can name a regional endpoint, a proxy
or the local fake the tests run) and an httpx client this module owns (timeouts, the rate
limiter as a request hook, no key on it).

What ShopLens keeps, because the SDK lacks it:
- the client-side rate limit (120 requests a minute by default), applied to every HTTP request;
- image shaping: always a JPEG data URI under the 3 MB limit (downscaled until it fits), so the
  SDK never sees a local path (it would upload one to a cloud bucket);
- text cut to the 512-token window (`truncate_text`), blank text sent as a placeholder;
- the retry policy. The SDK's own retries are off (`max_retries=0`) because, measured against
  the fake server, its loop caps Retry-After at 8 s (a 429 asking for 20 s was retried after
  8.0 s), does not retry a malformed 200 (the JSONDecodeError surfaces), retries 409 and any
  response carrying `x-should-retry: true` (ShopLens never retries other 4xx: 400
  InvalidParameter / DataInspectionFailed, 401 InvalidApiKey, 403 AccessDenied...), and
  sleeps a fixed 0.5 s -> 8 s backoff that can neither be tuned nor report how many attempts
  were made. Here (tenacity): 429, 408, 5xx, timeouts, connection errors and malformed 200
  bodies are retried with exponential backoff and jitter, `Retry-After` honoured up to 60 s;
- the key's secrecy: it stays a `SecretStr` until the SDK builds one request's Authorization
  header (it is passed per call; the SDK client is built with an empty key, so its config,
  which prints its fields, never holds it), and every message this module produces is scrubbed;
- per-item error isolation (the base class) and the vector size check.

The vector size is `SHOPLENS_DASHSCOPE_DIMENSION` (1024, multimodal-embedding-v1's): it is part
of the identity, and a model answering another size fails with a message naming the setting.
It is not sent to the service: it declares what the configured model returns.

Documented limits that shape this module: images JPG/PNG/BMP up to 3 MB, text up to 512 tokens,
120 requests per minute, and the docs describe one text / one image per call, so
`SHOPLENS_DASHSCOPE_IMAGES_PER_CALL` (default 1) is used as the contents-per-call limit for both.
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
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
from PIL import Image
from pydantic import SecretStr, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from services.embedders.base import Embedder, EmbedderIdentity, EmbedderUnavailable, EmbedError
from services.images import to_rgb
from services.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com/api/v1"
DEFAULT_MODEL = "multimodal-embedding-v1"
DEFAULT_DIMENSION = 1024  # multimodal-embedding-v1's vector size
ENDPOINT = "/services/embeddings/multimodal-embedding/multimodal-embedding"  # the SDK's path, for reference
MAX_IMAGE_BYTES = 3_000_000  # the service says 3 MB; decimal MB keeps us under either reading
MAX_TEXT_TOKENS = 512
MIN_IMAGE_SIDE = 16  # give up downscaling below this
EMPTY_TEXT = "."  # blank text is sent as this placeholder (see `prepare_text`)
INSTALL_HINT = "install shoplens[dashscope] (pip install 'shoplens[dashscope]', which brings dashscope>=2.0.2)"
_REDACTED = "**********"


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


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_image(image: Image.Image, max_bytes: int = MAX_IMAGE_BYTES) -> str:
    """A `data:image/jpeg;base64,...` URI of the image (RGB, alpha flattened onto white); when the
    JPEG is over `max_bytes`, the image is downscaled and re-encoded until it fits."""
    try:
        rgb = to_rgb(image)
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
# The SDK, rate limiting and errors


def load_sdk() -> SimpleNamespace:
    """The parts of the `dashscope` SDK this module uses; EmbedderUnavailable when it is missing
    (or is a 1.x release without the v2 client)."""
    try:
        from dashscope.v2 import Client, errors
        from dashscope.v2.transport import default_user_agent
    except ImportError as exc:
        raise EmbedderUnavailable(
            f"the DashScope SDK cannot be imported ({exc.__class__.__name__}: {exc}): {INSTALL_HINT}"
        ) from None
    return SimpleNamespace(Client=Client, errors=errors, user_agent=default_user_agent())


class RateLimiter:
    """Thread-safe minimum interval between requests: at most `per_minute` calls a minute."""

    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
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

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.service_code = code  # the service's own error code (`code` is ShopLens' stable one)
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


def _one_line(text: object, limit: int = 300) -> str:
    return " ".join(str(text or "").split())[:limit]


# --------------------------------------------------------------------------------------------
# The embedder


def dashscope_identity(model: str, dimension: int = DEFAULT_DIMENSION) -> EmbedderIdentity:
    return EmbedderIdentity(backend="dashscope", model=model, image_dim=dimension, text_dim=dimension, cross_modal=True)


class DashScopeEmbedder(Embedder):
    """DashScope multimodal embeddings through the SDK; see the module docstring."""

    def __init__(
        self,
        api_key: SecretStr | str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        dimension: int = DEFAULT_DIMENSION,
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
        sdk = load_sdk()
        self._errors = sdk.errors
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + ENDPOINT
        self.model = model
        self.dimension = dimension
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.timeout = timeout
        self._sleep = sleep
        self.image_batch_size = contents_per_call
        self.text_batch_size = contents_per_call
        self._limiter = RateLimiter(requests_per_minute, sleep=sleep)
        # Ours, handed to the SDK: no key on it, one timeout for every phase, no redirects, and
        # the rate limiter in front of every request it sends.
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": f"shoplens {sdk.user_agent}"},
            event_hooks={"request": [self._before_request]},
        )
        try:
            # api_key="" keeps the SDK from resolving a key from the environment or its key files
            # into its config; the real key goes with each call (`_post`).
            self._client = sdk.Client(
                api_key="", base_url=self.base_url, timeout=timeout, max_retries=0, http_client=self._http
            )
        except Exception as exc:  # e.g. an unreadable ~/.dashscope/config.toml or DASHSCOPE_* variable
            self._http.close()
            raise EmbedderUnavailable(self._scrub(f"cannot configure the DashScope SDK: {exc}")) from None
        self.identity = dashscope_identity(model, dimension)

    @classmethod
    def identity_for(cls, settings: Settings) -> EmbedderIdentity:
        """Model and vector size are settings: nothing to ask the server, nothing to import."""
        return dashscope_identity(settings.dashscope_model, settings.dashscope_dimension)

    @classmethod
    def from_settings(cls, settings: Settings) -> DashScopeEmbedder:
        key = settings.dashscope_api_key
        if key is None or not key.get_secret_value().strip():
            raise EmbedderUnavailable("no DashScope API key: set SHOPLENS_DASHSCOPE_API_KEY or DASHSCOPE_API_KEY")
        return cls(
            key,
            base_url=settings.dashscope_base_url,
            model=settings.dashscope_model,
            dimension=settings.dashscope_dimension,
            contents_per_call=settings.dashscope_images_per_call,
            requests_per_minute=settings.dashscope_requests_per_minute,
            timeout=settings.dashscope_timeout,
            max_retries=settings.dashscope_max_retries,
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(model={self.model!r}, dimension={self.dimension}, "
            f"base_url={_redact_url(self.base_url)!r}, api_key='{_REDACTED}')"
        )

    __str__ = __repr__

    def close(self) -> None:
        self._client.close()  # the SDK leaves a client it was given open...
        self._http.close()  # ...so close ours

    # -- what the base class calls

    def prepare_image(self, image: Image.Image) -> str:
        """The photo as the API takes it: a JPEG data URI under the size limit."""
        return encode_image(image)

    def _embed_prepared(self, batch: Sequence[Any]) -> np.ndarray:
        return self._call([{"image": uri} for uri in batch])

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._call([{"text": prepare_text(text)} for text in texts])

    # -- one call: retries around one SDK request

    def _call(self, contents: list[dict[str, str]]) -> np.ndarray:
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
            return retrying(self._post, contents, len(contents))
        except DashScopeError as exc:
            if exc.retryable and attempts > 1:
                raise EmbedError(self._scrub(f"{exc} (gave up after {attempts} attempts)")) from None
            raise

    def _before_request(self, request: httpx.Request) -> None:
        self._limiter.acquire()

    def _post(self, contents: list[dict[str, str]], expected: int) -> np.ndarray:
        errors = self._errors
        try:
            response = self._client.multimodal.embeddings.create(
                model=self.model,
                input=contents,
                api_key=self._api_key.get_secret_value(),
            )
        except errors.APITimeoutError:
            raise DashScopeError(
                f"DashScope request timed out after {self.timeout:g}s (APITimeoutError)", retryable=True
            ) from None
        except errors.APIConnectionError as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise DashScopeError(
                self._scrub(
                    f"cannot reach DashScope at {_redact_url(self.base_url)}: "
                    f"{cause.__class__.__name__}: {_one_line(cause)}"
                ),
                retryable=True,
            ) from None
        except errors.DashScopeError as exc:
            raise self._sdk_error(exc) from None
        except (json.JSONDecodeError, ValidationError, AttributeError) as exc:
            # a 200 whose body is not the documented JSON (not JSON, not an object, wrong shapes):
            # the SDK's parsing gave up on it
            raise DashScopeError(
                self._scrub(
                    f"DashScope returned a malformed response ({exc.__class__.__name__}: "
                    f"{_one_line(exc, 200)}; request_id=?)"
                ),
                retryable=True,
            ) from None
        except Exception as exc:  # anything else the SDK raises: not worth another attempt
            raise DashScopeError(
                self._scrub(f"DashScope SDK error: {exc.__class__.__name__}: {_one_line(exc)}"), retryable=False
            ) from None
        return self._parse(response, expected)

    def _parse(self, response: Any, expected: int) -> np.ndarray:
        request_id = response.request_id or (response.headers or {}).get("x-request-id") or "?"
        try:
            rows = sorted(response.embeddings, key=lambda item: int(item.index))
            indices = [int(item.index) for item in rows]
            if indices != list(range(expected)):
                raise ValueError(f"expected indices 0..{expected - 1}, got {indices}")
            matrix = np.asarray([item.embedding for item in rows], dtype=np.float32)
        except (ValueError, TypeError, AttributeError) as exc:
            raise DashScopeError(
                self._scrub(
                    f"DashScope returned a malformed response ({exc.__class__.__name__}: "
                    f"{_one_line(exc, 200)}; request_id={request_id})"
                ),
                retryable=True,
            ) from None
        if matrix.shape != (expected, self.dimension):
            hint = ""
            if matrix.ndim == 2 and matrix.shape[0] == expected:
                hint = (
                    f"; model {self.model!r} returns {matrix.shape[1]}-d vectors: "
                    f"set SHOPLENS_DASHSCOPE_DIMENSION={matrix.shape[1]}"
                )
            raise DashScopeError(
                f"DashScope returned vectors of shape {matrix.shape}, expected {(expected, self.dimension)}"
                f"{hint} (request_id={request_id})",
                retryable=False,
            )
        return matrix

    def _sdk_error(self, exc: Any) -> DashScopeError:
        """One of the SDK's errors (a non-2xx status, or a business error code in a 200 body) as a
        safe DashScopeError; retryable when the status (or the error class) says it is transient."""
        errors = self._errors
        status = exc.status_code
        code = _one_line(exc.code, 80)
        message = _one_line(getattr(exc, "message", "") or "", 200) or "no message"
        request_id = exc.request_id or "?"
        if status is not None and status >= 400:
            retryable = status in (408, 429) or status >= 500
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = ""
            detail = f"HTTP {status} {code or phrase}: {message} (request_id={request_id})"
        else:  # HTTP 200 carrying an error code, or a failure on the SDK's side
            transient = (
                errors.RateLimitError,
                errors.InternalServerError,
                errors.ServiceUnavailableError,
                errors.GatewayTimeoutError,
            )
            retryable = isinstance(exc, transient)
            detail = f"error {code or exc.__class__.__name__}: {message} (request_id={request_id})"
        if status == 401 or isinstance(exc, errors.AuthenticationError):
            text = f"DashScope rejected the API key — check SHOPLENS_DASHSCOPE_API_KEY: {detail}"
        elif status == 403 or isinstance(exc, errors.PermissionDeniedError):
            text = f"DashScope denied access (account, workspace or model not enabled for this key): {detail}"
        elif status == 429 or isinstance(exc, errors.RateLimitError):
            text = f"DashScope throttled the request: {detail}"
        else:
            text = f"DashScope request failed: {detail}"
        headers = exc.headers or {}
        return DashScopeError(
            self._scrub(text),
            retryable=retryable,
            status=status,
            code=code or None,
            retry_after=_retry_after(headers.get("retry-after")) if retryable else None,
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
            exc,
            state.attempt_number,
            self.max_retries,
            delay,
        )

    def _scrub(self, text: str) -> str:
        secret = self._api_key.get_secret_value()
        return text.replace(secret, _REDACTED) if secret else text
