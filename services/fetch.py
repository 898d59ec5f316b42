"""http(s) references: telling them from file paths, and a size-capped download."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from services.errors import ShopLensError


def is_url(ref: str) -> bool:
    return ref.lower().startswith(("http://", "https://"))


class FetchError(ShopLensError):
    """The download failed; the message reads after the thing fetched ("answered HTTP 404")."""

    code = "fetch_failed"
    http_status = 422


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str


def fetch_capped(
    url: str, max_bytes: int, timeout: float, client: httpx.Client | None = None, deadline: float | None = None
) -> Fetched:
    """GET `url`, refusing bodies over `max_bytes` (declared or streamed) and slow servers.

    `timeout` bounds each connect and read; `deadline` (default 8 x timeout) bounds the whole
    transfer, so a server that drips a byte now and then cannot hold a run (and its lock) forever.
    """
    deadline = 8 * timeout if deadline is None else deadline
    started = time.monotonic()
    owned = client is None
    client = client or httpx.Client(follow_redirects=True)
    try:
        with client.stream("GET", url, timeout=timeout) as response:
            if response.status_code != 200:
                raise FetchError(f"answered HTTP {response.status_code}")
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
            return Fetched(b"".join(chunks), response.headers.get("content-type", "").lower())
    except httpx.TimeoutException:
        raise FetchError(f"timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"is unreachable ({exc.__class__.__name__})") from None
    finally:
        if owned:
            client.close()
