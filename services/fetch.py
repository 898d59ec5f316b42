"""http(s) references: telling them from file paths, and a size-capped download."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import lru_cache
from importlib import metadata

import httpx

from services.errors import ShopLensError

MAX_REDIRECTS = 5  # a shop's CDN may redirect once or twice; a loop is an error, not a hang
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_url(ref: str) -> bool:
    return ref.lower().startswith(("http://", "https://"))


@lru_cache(maxsize=1)
def user_agent() -> str:
    """Who is asking, so a shop's server admin can tell our crawler apart and find who runs it."""
    try:
        version = metadata.version("shoplens")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"ShopLens/{version} (product image fetcher; python-httpx)"


def new_client(connections: int = 10) -> httpx.Client:
    """A keep-alive client that names ShopLens and follows a bounded number of redirects."""
    return httpx.Client(
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        headers={"User-Agent": user_agent()},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


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
    client: httpx.Client | None = None,
    deadline: float | None = None,
    headers: dict[str, str] | None = None,
) -> Fetched:
    """GET `url`, refusing bodies over `max_bytes` (declared or streamed) and slow servers.

    `timeout` bounds each connect and read; `deadline` (default 8 x timeout) bounds the whole
    transfer, so a server that drips a byte now and then cannot hold a run (and its lock) forever.
    With conditional `headers` (If-None-Match, If-Modified-Since) a 304 is an answer, not an error.
    """
    deadline = 8 * timeout if deadline is None else deadline
    started = time.monotonic()
    owned = client is None
    client = client or new_client()
    try:
        with client.stream("GET", url, timeout=timeout, headers=headers) as response:
            etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
            ctype = response.headers.get("content-type", "").lower()
            if response.status_code == 304 and headers:
                # A 304 has no body, but the client reuses the connection only once the response is
                # read to its end: unread, every conditional request of a scheduled run opened (and,
                # on HTTPS, negotiated) a connection of its own.
                response.read()
                return Fetched(b"", ctype, 304, etag, modified)
            if response.status_code != 200:
                status = response.status_code
                raise FetchError(f"answered HTTP {status}", status in RETRYABLE_STATUS, _retry_after(response.headers))
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"is too large ({int(declared):,} bytes, limit {max_bytes:,})")
            chunks, total = [], 0
            for chunk in response.iter_bytes():
                if time.monotonic() - started > deadline:
                    raise FetchError(f"took longer than {deadline:g} s (the server sends too slowly)")
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError(f"is too large (over the limit of {max_bytes:,} bytes)")
                chunks.append(chunk)
            return Fetched(b"".join(chunks), ctype, 200, etag, modified)
    except httpx.TimeoutException:
        raise FetchError(f"timed out after {timeout:g} s", retryable=True) from None
    except httpx.TooManyRedirects:
        raise FetchError(f"redirected more than {MAX_REDIRECTS} times") from None
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise FetchError(f"is unreachable ({exc.__class__.__name__})", retryable=True) from None
    except httpx.HTTPError as exc:
        raise FetchError(f"is unreachable ({exc.__class__.__name__})") from None
    finally:
        if owned:
            client.close()


def _retry_after(headers: httpx.Headers) -> float | None:
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
