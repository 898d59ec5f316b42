"""Image downloads as a polite crawler makes them: one keep-alive client per run, a few connections
per host, conditional requests, and retries that back off (and wait as long as a server asks)."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential

from services.fetch import FetchClient, Fetched, FetchError, fetch_capped
from services.images import ImageLimits

log = logging.getLogger(__name__)
MAX_RETRY_AFTER = 60.0  # a server asking for longer gets a "try later" from this run instead


@dataclass(frozen=True)
class Validators:
    """What the server said about the body we hold: sent back so it can answer 304."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        out = {}
        if self.etag:
            out["If-None-Match"] = self.etag
        if self.last_modified:
            out["If-Modified-Since"] = self.last_modified
        return out


class ImageDownloader:
    """Shared by a run's download threads (their number is the global limit); thread-safe.

    `per_host` bounds the connections to one host (scheme, name and port), so a shop's own server
    is not flooded by a large catalog; each attempt holds a slot, a backoff wait does not.
    """

    def __init__(self, limits: ImageLimits, workers: int, per_host: int = 4, retries: int = 2) -> None:
        self.limits, self.per_host, self.retries = limits, max(1, per_host), retries
        self.client = FetchClient(max(workers, self.per_host))
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()  # bodies, not_modified, failed, retried (what this run cost)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ImageDownloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, url: str, validators: Validators | None = None) -> Fetched:
        """The body (status 200) or a 304 when `validators` still hold; FetchError when it cannot be had."""
        headers = validators.headers() if validators else {}
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, FetchError) and exc.retryable),
            stop=stop_after_attempt(self.retries + 1) | stop_after_delay(self.limits.url_deadline),
            wait=_server_or_exponential,
            reraise=True,
            before_sleep=lambda state: self._count("retried"),
        )
        try:
            fetched = retrying(self._attempt, url, headers or None)
        except FetchError:
            self._count("failed")
            raise
        self._count("bodies" if fetched.status == 200 else "not_modified")
        return fetched

    def _attempt(self, url: str, headers: dict[str, str] | None) -> Fetched:
        with self._host_slot(url):
            return fetch_capped(
                url, self.limits.max_bytes, self.limits.url_timeout, self.client, self.limits.url_deadline, headers
            )

    def _host_slot(self, url: str) -> threading.BoundedSemaphore:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"
        with self._lock:
            slot = self._hosts.get(key)
            if slot is None:
                slot = self._hosts[key] = threading.BoundedSemaphore(self.per_host)
        return slot

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1


_exponential = wait_exponential(multiplier=0.5, max=8)


def _server_or_exponential(state: RetryCallState) -> float:
    """Twice as long after each failure, or what the server's Retry-After asks when it asks more."""
    waited = _exponential(state)
    exc = state.outcome.exception() if state.outcome is not None else None
    if isinstance(exc, FetchError) and exc.retry_after is not None:
        if exc.retry_after > MAX_RETRY_AFTER:
            raise exc  # not worth holding the run for: a later run tries again
        waited = max(waited, exc.retry_after)
    log.debug("image download failed (%s); retrying in %.1f s", exc, waited)
    return waited
