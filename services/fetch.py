"""http(s) references: telling them from file paths, and a size-capped download.

Downloads go through urllib3 rather than httpx (which the API client and the DashScope embedder
use): a conditional request answered 304 costs about 0.33 ms of CPU through urllib3 against
0.72 ms through httpx, and a scheduled re-run of a large feed is thousands of them on the cores the
models share (BENCHMARKS.md, "Image feeds by URL")."""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import lru_cache
from importlib import metadata
from types import TracebackType
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import (
    HTTPError,
    LocationValueError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ResponseError,
    SSLError,
    TimeoutError,
)

from services.errors import ShopLensError

MAX_REDIRECTS = 5  # a shop's CDN may redirect once or twice; a loop is an error, not a hang
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
HOSTS_KEPT = 32  # hosts whose keep-alive connections a client holds at once
CHUNK = 64 * 1024
# Redirects are followed here; every other retry is the caller's (ingest/downloads.py backs off
# between attempts and counts them), so an error surfaces at once.
_REDIRECTS_ONLY = urllib3.Retry(
    total=None, connect=False, read=False, status=False, other=False, redirect=MAX_REDIRECTS
)


def is_url(ref: str) -> bool:
    return ref.lower().startswith(("http://", "https://"))


@lru_cache(maxsize=1)
def user_agent() -> str:
    """Who is asking, so a shop's server admin can tell our crawler apart and find who runs it."""
    try:
        version = metadata.version("shoplens")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"ShopLens/{version} (product image fetcher; python-urllib3)"


class FetchClient:
    """Keep-alive connections per host (scheme, name and port), shared by a run's threads.

    `connections` is how many idle connections each host keeps. A proxy in the environment
    (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, as curl and httpx read them) is honoured.
    """

    def __init__(self, connections: int = 10) -> None:
        self.connections = connections
        self._direct = urllib3.PoolManager(num_pools=HOSTS_KEPT, maxsize=connections)
        self._proxies = {k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")}
        self._via: dict[str, urllib3.ProxyManager] = {}
        self._lock = threading.Lock()
        self.headers = {"User-Agent": user_agent(), **urllib3.make_headers(accept_encoding=True)}

    def manager(self, url: str) -> urllib3.PoolManager:
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError:
            raise FetchError("is not a valid URL") from None
        proxy = self._proxies.get(parts.scheme.lower())
        if proxy is None or urllib.request.proxy_bypass(host):
            return self._direct
        with self._lock:
            via = self._via.get(proxy)
            if via is None:
                via = self._via[proxy] = urllib3.ProxyManager(proxy, num_pools=HOSTS_KEPT, maxsize=self.connections)
        return via

    def close(self) -> None:
        self._direct.clear()
        for via in self._via.values():
            via.clear()

    def __enter__(self) -> FetchClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class FetchError(ShopLensError):
    """The download failed; the message reads after the thing fetched ("answered HTTP 404").

    `retryable`: trying again later may work (a timeout, a refused connection, 429 or 5xx);
    `retry_after`: the seconds the server asked us to wait (its Retry-After header), if any."""

    code = "fetch_failed"
    http_status = 422

    def __init__(self, message: str, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable, self.retry_after = retryable, retry_after


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str
    status: int = 200  # 304: not modified since the validators sent (`data` is empty)
    etag: str | None = None
    last_modified: str | None = None


def fetch_capped(
    url: str,
    max_bytes: int,
    timeout: float,
    client: FetchClient | None = None,
    deadline: float | None = None,
    headers: dict[str, str] | None = None,
) -> Fetched:
    """GET `url`, refusing bodies over `max_bytes` (declared or streamed) and slow servers.

    `timeout` bounds each connect and read; `deadline` (default 8 x timeout) bounds the whole
    transfer, so a server that drips a byte now and then cannot hold a run (and its lock) forever.
    With conditional `headers` (If-None-Match, If-Modified-Since) a 304 is an answer, not an error.
    """
    deadline = 8 * timeout if deadline is None else deadline
    owned = client is None
    client = client or FetchClient(1)
    try:
        return _get(client, url, max_bytes, timeout, deadline, headers)
    except MaxRetryError as exc:
        raise _failure(exc.reason or exc, timeout) from None
    except (HTTPError, LocationValueError) as exc:
        raise _failure(exc, timeout) from None
    finally:
        if owned:
            client.close()


def _get(
    client: FetchClient,
    url: str,
    max_bytes: int,
    timeout: float,
    deadline: float,
    headers: dict[str, str] | None,
) -> Fetched:
    ends = time.monotonic() + deadline
    response = client.manager(url).request(
        "GET",
        url,
        headers={**client.headers, **(headers or {})},
        preload_content=False,
        retries=_REDIRECTS_ONLY,
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
    )
    whole = False
    try:
        etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
        ctype = response.headers.get("content-type", "").lower()
        if response.status == 304 and headers:
            # Read to its (empty) end, so the connection goes back to the pool for the next request.
            response.read()
            whole = True
            return Fetched(b"", ctype, 304, etag, modified)
        if response.status != 200:
            status = response.status
            raise FetchError(f"answered HTTP {status}", status in RETRYABLE_STATUS, _retry_after(response.headers))
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"is too large ({int(declared):,} bytes, limit {max_bytes:,})")
        chunks, total = [], 0
        # read1: what has arrived, so a server that drips bytes meets the deadline between reads
        while chunk := response.read1(CHUNK):
            if time.monotonic() > ends:
                raise FetchError(f"took longer than {deadline:g} s (the server sends too slowly)")
            total += len(chunk)
            if total > max_bytes:
                raise FetchError(f"is too large (over the limit of {max_bytes:,} bytes)")
            chunks.append(chunk)
        whole = True
        return Fetched(b"".join(chunks), ctype, 200, etag, modified)
    finally:
        if not whole:
            response.close()  # a body left unread: the connection cannot serve another request
        response.release_conn()


def _failure(exc: BaseException, timeout: float) -> FetchError:
    """urllib3's error as a line a merchant can act on, and whether a later attempt may succeed."""
    if isinstance(exc, NameResolutionError):
        return FetchError("is unreachable (its host name does not resolve)", retryable=True)
    if isinstance(exc, NewConnectionError):  # before TimeoutError: urllib3 derives it from a timeout
        cause = exc.__cause__
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else "connection failed"
        return FetchError(f"is unreachable (cannot connect: {why})", retryable=True)
    if isinstance(exc, TimeoutError):
        return FetchError(f"timed out after {timeout:g} s", retryable=True)
    if isinstance(exc, ResponseError) and "redirect" in str(exc):
        return FetchError(f"redirected more than {MAX_REDIRECTS} times")
    if isinstance(exc, ProxyError):
        return FetchError("is unreachable (the proxy refused or failed)", retryable=True)
    if isinstance(exc, SSLError):
        return FetchError("is unreachable (the TLS handshake or certificate failed)")
    if isinstance(exc, ProtocolError):
        return FetchError("is unreachable (the connection broke off)", retryable=True)
    if isinstance(exc, LocationValueError):
        return FetchError("is not a valid URL")
    return FetchError(f"is unreachable ({exc.__class__.__name__})")


def _retry_after(headers: urllib3.HTTPHeaderDict) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
