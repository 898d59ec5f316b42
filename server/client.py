"""A typed client of the ShopLens API, for the pages, the command line and other Python programs.

It imports httpx and pydantic only (no model, no store), so a client starts in a fraction of a
second. Errors come back as the same ShopLensError family the server raised: `ApiError` carries
the server's code, status and message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from server import schemas
from server.discovery import ServerInfo
from services.errors import ShopLensError, Unavailable
from services.settings import Settings


class ApiError(ShopLensError):
    """An error answer from the server, as it gave it."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.error_code = status, code

    @property
    def code(self) -> str:  # type: ignore[override]
        return self.error_code

    @property
    def http_status(self) -> int:  # type: ignore[override]
        return self.status

    @property
    def user_message(self) -> str:
        """Worded as the server's own error class would word it (imported where it is known)."""
        known = ShopLensError.by_code.get(self.error_code)
        text = self.message
        return f"{known.prefix}{text}" if known is not None and known.prefix else text[:1].upper() + text[1:]


class ServerUnavailable(Unavailable):
    code = "server_unavailable"
    prefix = "The ShopLens server is not reachable: "


def find_server(settings: Settings) -> tuple[str, str | None] | None:
    """The server to talk to and a credential: `SHOPLENS_SERVER_URL`, else the one this home's
    running server announced in `<home>/server-<host>.json` (with its local token)."""
    if settings.server_url:
        token = settings.admin_password.get_secret_value() if settings.admin_password else None
        return settings.server_url, token
    info = ServerInfo.read(settings.server_file)
    if info is None:
        return None
    return info.url, info.token


class ShopLensClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        session: str | None = None,
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ServerUnavailable(f"not an http(s) server URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if session:  # a page's browser session: wrong guesses are throttled per session
            headers["X-ShopLens-Session"] = session
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ShopLensClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- shoppers ---------------------------------------------------------------------------
    def health(self) -> schemas.Health:
        return schemas.Health.model_validate(self._call("GET", "/api/v1/health"))

    def wait_ready(self, timeout: float = 60.0) -> schemas.Health:
        """Poll /health until the server answers (it may still be starting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.health()
            except ServerUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def search(
        self, query: schemas.SearchQuery, photo: bytes | None = None, photo_name: str = "photo.jpg"
    ) -> schemas.SearchResult:
        """A photo goes as a multipart file (no base64 inflation); words alone as JSON."""
        if photo is None:
            body = query.model_dump(exclude_none=True, exclude={"image_base64"})
            return schemas.SearchResult.model_validate(self._call("POST", "/api/v1/search", json=body))
        fields: dict[str, str | list[str]] = {}
        for key, value in query.model_dump(exclude_none=True, exclude={"image_base64"}).items():
            if isinstance(value, list):
                if value:
                    fields[key] = [str(v) for v in value]
            else:
                fields[key] = str(value).lower() if isinstance(value, bool) else str(value)
        data = self._call("POST", "/api/v1/search", data=fields, files={"image": (photo_name, photo)})
        return schemas.SearchResult.model_validate(data)

    def products(self, offset: int = 0, limit: int = 24, filters: schemas.Filters | None = None) -> schemas.ProductPage:
        params = self._filter_params(filters) + [("offset", str(offset)), ("limit", str(limit))]
        return schemas.ProductPage.model_validate(self._call("GET", "/api/v1/products", params=params))

    def product(self, sku: str) -> schemas.Product:
        return schemas.Product.model_validate(self._call("GET", f"/api/v1/products/{_quote(sku)}"))

    def similar(self, sku: str, top_k: int = 8, filters: schemas.Filters | None = None) -> schemas.SearchResult:
        params = self._filter_params(filters) + [("top_k", str(top_k))]
        return schemas.SearchResult.model_validate(
            self._call("GET", f"/api/v1/products/{_quote(sku)}/similar", params=params)
        )

    def facets(self, categories: Sequence[str] = (), filters: schemas.Filters | None = None) -> schemas.Facets:
        """Filter options and their counts; `filters` (whose categories are added to `categories`)
        narrows the counts."""
        filters = filters or schemas.Filters()
        params: list[tuple[str, str]] = [("category", c) for c in dict.fromkeys([*categories, *filters.category])]
        params += [("brand", b) for b in filters.brand]
        params += [
            (k, str(v))
            for k, v in (("min_price", filters.min_price), ("max_price", filters.max_price))
            if v is not None
        ]
        if filters.in_stock:
            params.append(("in_stock", "true"))
        return schemas.Facets.model_validate(self._call("GET", "/api/v1/facets", params=params))

    def image(self, url: str, size: int | None = None) -> bytes:
        """A product photo by the `image_url` a hit or product gave (a square thumbnail with `size`)."""
        response = self._send("GET", url, params={"size": size} if size else None)
        return response.content

    # -- admin ------------------------------------------------------------------------------
    def stats(self) -> schemas.Stats:
        return schemas.Stats.model_validate(self._call("GET", "/api/v1/stats"))

    def audit(self, fresh: bool = False) -> schemas.Audit:
        params = {"fresh": "true"} if fresh else None
        return schemas.Audit.model_validate(self._call("GET", "/api/v1/audit", params=params, timeout=None))

    def accept_audit(
        self, skus: Sequence[str] | None = None, min_confidence: float | None = None
    ) -> schemas.AuditAccepted:
        body = schemas.AuditAccept(skus=list(skus) if skus is not None else None, min_confidence=min_confidence)
        data = self._call("POST", "/api/v1/audit/accept", json=body.model_dump(exclude_none=True), timeout=None)
        return schemas.AuditAccepted.model_validate(data)

    def ingest_source(
        self,
        url: str | None = None,
        path: str | Path | None = None,
        prune: bool = False,
        trigger: str = "api",
        force_prune: bool = False,
    ) -> schemas.Job:
        path_text = str(path) if path is not None else None
        body = schemas.IngestUrl(url=url, path=path_text, prune=prune, force_prune=force_prune)
        data = self._call(
            "POST", "/api/v1/ingest", json=body.model_dump(exclude_none=True), headers={"X-ShopLens-Trigger": trigger}
        )
        return schemas.Job.model_validate(data)

    def ingest_upload(
        self,
        catalog: tuple[str, bytes],
        images_zip: bytes | None = None,
        files: Sequence[tuple[str, bytes]] = (),
        prune: bool = False,
        trigger: str = "api",
        force_prune: bool = False,
    ) -> schemas.Job:
        data = self._call(
            "POST",
            "/api/v1/ingest",
            data={"prune": str(prune).lower(), "force_prune": str(force_prune).lower()},
            files=self._upload_files(catalog, images_zip, files),
            headers={"X-ShopLens-Trigger": trigger},
        )
        return schemas.Job.model_validate(data)

    def preview_upload(
        self, catalog: tuple[str, bytes], images_zip: bytes | None = None, files: Sequence[tuple[str, bytes]] = ()
    ) -> schemas.UploadPreview:
        data = self._call("POST", "/api/v1/ingest/preview", files=self._upload_files(catalog, images_zip, files))
        return schemas.UploadPreview.model_validate(data)

    def reindex(self) -> schemas.Job:
        return schemas.Job.model_validate(self._call("POST", "/api/v1/reindex"))

    def reconcile(self, dry_run: bool = True) -> dict[str, Any]:
        return dict(self._call("POST", "/api/v1/reconcile", params={"dry_run": str(dry_run).lower()}))

    def job(self, job_id: str) -> schemas.Job:
        return schemas.Job.model_validate(self._call("GET", f"/api/v1/jobs/{job_id}"))

    def jobs(self, limit: int = 20) -> list[schemas.Job]:
        return [schemas.Job.model_validate(j) for j in self._call("GET", "/api/v1/jobs", params={"limit": limit})]

    def wait_job(self, job_id: str, poll: float = 0.5, on_progress: Any = None) -> schemas.Job:
        """Follow a job to its end; `on_progress(job)` after every poll."""
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.finished:
                return job
            time.sleep(poll)

    def runs(self, limit: int = 20) -> list[schemas.Run]:
        return [schemas.Run.model_validate(r) for r in self._call("GET", "/api/v1/runs", params={"limit": limit})]

    def run_report(self, run_id: int) -> bytes:
        return self._send("GET", f"/api/v1/runs/{run_id}/report").content

    def delete_product(self, sku: str) -> None:
        self._call("DELETE", f"/api/v1/products/{_quote(sku)}")

    # -- transport --------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ServerUnavailable(f"{self.base_url} did not answer in time") from None
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"cannot reach {self.base_url} ({exc.__class__.__name__})") from None
        if response.is_success:
            return response
        try:
            detail = response.json()["error"]
            code, message = str(detail["code"]), str(detail["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "http_error", f"{self.base_url} answered HTTP {response.status_code}"
        raise ApiError(response.status_code, code, message)

    @staticmethod
    def _filter_params(filters: schemas.Filters | None) -> list[tuple[str, str]]:
        if filters is None:
            return []
        params = [("category", c) for c in filters.category] + [("brand", b) for b in filters.brand]
        if filters.in_stock:
            params.append(("in_stock", "true"))
        return params

    @staticmethod
    def _upload_files(
        catalog: tuple[str, bytes], images_zip: bytes | None, files: Sequence[tuple[str, bytes]]
    ) -> list[tuple[str, tuple[str, bytes]]]:
        parts = [("catalog", catalog)]
        if images_zip is not None:
            parts.append(("images", ("images.zip", images_zip)))
        parts += [("files", f) for f in files]
        return parts


def _quote(sku: str) -> str:
    from urllib.parse import quote

    return quote(sku, safe="")
