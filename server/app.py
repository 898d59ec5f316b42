"""The HTTP API, `/api/v1`: routes parse the request, call the server's state, and answer.

Every error is JSON `{"error": {"code", "message"}}` with a 4xx status (5xx only when a part of
ShopLens is unavailable); a traceback never leaves the process.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.records import REPORT_COLUMNS
from server import schemas
from server.admin import plan_upload
from server.state import THUMB_SIZES, ServerState
from services.errors import ShopLensError, Throttled, TooLarge, UsageError
from services.files import spreadsheet_safe

log = logging.getLogger(__name__)
API = "/api/v1"
SMALL_BODY = 1024 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
SHA256 = PathParam(pattern=r"^[0-9a-f]{64}$", description="the photo's SHA-256")
JOB_ID = PathParam(pattern=r"^[0-9a-f]{32}$")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorBody, "description": text}
    for code, text in (
        (400, "bad request"),
        (401, "admin credential missing or wrong"),
        (404, "not found"),
        (413, "too large"),
        (422, "invalid input"),
        (429, "too many wrong credentials"),
        (503, "a store or the model is unavailable"),
    )
}


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class BodyLimit:
    """Refuse bodies over the limit while they arrive (413), not after holding them whole."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error(413, TooLarge.code, f"the request body is larger than {limit:,} bytes")(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise TooLarge(f"the request body is larger than {limit:,} bytes")
            return message

        await self.app(scope, counted, send)


def create_app(state: ServerState) -> FastAPI:
    """The API over an opened server state (`cli.serve` opens it before listening and closes it after)."""
    settings = state.settings

    app = FastAPI(
        title="ShopLens",
        version=state.version,
        description="Photo-to-product search for online shops. Read endpoints are public; write and admin "
        "endpoints need `Authorization: Bearer <admin credential>`.",
    )
    photo_limit = int(settings.max_image_bytes * 4 / 3) + 64 * 1024  # base64 in JSON, or multipart overhead

    def limit_for(path: str) -> int:
        if path.startswith(f"{API}/ingest"):
            return settings.max_upload_bytes
        if path.startswith(f"{API}/search"):
            return photo_limit
        return SMALL_BODY

    app.add_middleware(BodyLimit, limit_for=limit_for)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    _handlers(app)

    def admin(request: Request) -> None:
        # the pages reach the server from one address for all their visitors: each browser session
        # names itself, so one person's wrong guesses slow that session, not every admin
        client = request.client.host if request.client else "unknown"
        session = request.headers.get("x-shoplens-session", "")[:64]
        state.check_admin(request.headers.get("authorization"), f"{client}/{session}")

    public = APIRouter(prefix=API, responses=ERRORS)
    private = APIRouter(prefix=API, responses=ERRORS, dependencies=[Depends(admin)])

    @public.get("/health", response_model=schemas.Health, tags=["status"])
    def health() -> schemas.Health:
        """Liveness and readiness: the stores are open; `model_loaded` once the search model is in memory."""
        return state.health()

    @public.post(
        "/search",
        response_model=schemas.SearchResult,
        tags=["search"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/SearchQuery"}},
                    "multipart/form-data": {"schema": _multipart_schema()},
                },
            }
        },
    )
    async def search(request: Request) -> schemas.SearchResult:
        """Products like a photo, like some words, or both, best first (one hit per product).

        Send JSON (`text`, `image_base64`, filters) or a multipart form (an `image` file and the
        same fields; repeat `category` and `brand` for several)."""
        query, photo = await _search_body(request)
        return await run_in_threadpool(state.search, query, photo)

    @public.get("/products", response_model=schemas.ProductPage, tags=["products"])
    def products(
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=100)] = 24,
        category: Annotated[list[str] | None, Query()] = None,
        brand: Annotated[list[str] | None, Query()] = None,
        in_stock: bool = False,
    ) -> schemas.ProductPage:
        """The catalog, a page at a time, in catalog order."""
        return state.products(
            offset, limit, schemas.Filters(category=category or [], brand=brand or [], in_stock=in_stock)
        )

    @public.get("/products/{sku}", response_model=schemas.Product, tags=["products"])
    def product(sku: str) -> schemas.Product:
        return state.product(sku)

    @public.get("/products/{sku}/similar", response_model=schemas.SearchResult, tags=["search"])
    def similar(
        sku: str,
        top_k: Annotated[int, Query(ge=1, le=schemas.MAX_TOP_K)] = 8,
        category: Annotated[list[str] | None, Query()] = None,
        brand: Annotated[list[str] | None, Query()] = None,
        in_stock: bool = False,
    ) -> schemas.SearchResult:
        """Products whose photos look like this product's first photo."""
        return state.similar(sku, top_k, schemas.Filters(category=category or [], brand=brand or [], in_stock=in_stock))

    @public.get("/facets", response_model=schemas.Facets, tags=["products"])
    def facets(
        category: Annotated[list[str] | None, Query()] = None,
        brand: Annotated[list[str] | None, Query()] = None,
        min_price: float | None = None,
        max_price: float | None = None,
        in_stock: bool = False,
    ) -> schemas.Facets:
        """Categories, brands (of the given categories, when any) and the price range, for filters;
        with counts per category and per brand from the vector engine, each under the other filters."""
        filters = schemas.Filters(
            category=category or [], brand=brand or [], min_price=min_price, max_price=max_price, in_stock=in_stock
        )
        return state.facets(filters)

    @public.get(
        "/images/{sha256}",
        tags=["products"],
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
    )
    def image(
        request: Request,
        sha256: Annotated[str, SHA256],
        size: int | None = Query(None, description=f"a square thumbnail: one of {THUMB_SIZES}"),
    ) -> Response:
        """A product photo by its content hash; never changes, so it is cached for a year."""
        etag = f'"{sha256}-{size or 0}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag, "Cache-Control": IMMUTABLE})
        data, media_type = state.image(sha256, size)
        return Response(data, media_type=media_type, headers={"ETag": etag, "Cache-Control": IMMUTABLE})

    @private.get("/stats", response_model=schemas.Stats, tags=["admin"])
    def stats() -> schemas.Stats:
        """Do SQL and the vector store agree? (Counts only; no model is needed.)"""
        return state.stats()

    @private.get("/audit", response_model=schemas.Audit, tags=["admin"])
    def audit(fresh: bool = False) -> schemas.Audit:
        """Near-duplicate listings, category suggestions and mismatches, from the stored vectors.
        The last audit is answered again while the catalog is unchanged; `fresh` audits anew."""
        return state.audit(fresh)

    @private.post("/audit/accept", response_model=schemas.AuditAccepted, tags=["admin"])
    def audit_accept(body: schemas.AuditAccept) -> schemas.AuditAccepted:
        """Write suggested categories (the named SKUs, or all at or above `min_confidence`) to SQL
        and to the products' vector payloads; nothing is re-embedded."""
        return state.accept_audit(body)

    @private.delete("/products/{sku}", tags=["admin"])
    def delete(sku: str) -> dict[str, str]:
        """Remove a product: its SQL rows, its vectors, and photos no other product uses."""
        state.delete(sku)
        return {"deleted": sku}

    @private.post(
        "/ingest",
        status_code=202,
        response_model=schemas.Job,
        tags=["admin"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/IngestUrl"}},
                    "multipart/form-data": {"schema": _upload_schema()},
                },
            }
        },
    )
    async def ingest(request: Request) -> schemas.Job:
        """Queue an ingest: a catalog URL or server path (JSON), or an uploaded catalog with an
        optional ZIP of its images (multipart). Answers at once with the job to follow."""
        trigger = request.headers.get("x-shoplens-trigger", "api")
        trigger = trigger if trigger in ("api", "admin", "cli", "schedule") else "api"
        if _is_multipart(request):
            plan, prune, force_prune = await _upload(request, state)
            return await run_in_threadpool(state.ingest_upload, plan, prune, trigger, force_prune)
        body = schemas.IngestUrl.model_validate_json(await request.body())
        return await run_in_threadpool(state.ingest_source, body, trigger)

    @private.post(
        "/ingest/preview",
        response_model=schemas.UploadPreview,
        tags=["admin"],
        openapi_extra={
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _upload_schema()}}}
        },
    )
    async def preview(request: Request) -> schemas.UploadPreview:
        """Check an upload without writing anything: rows, problems, images found."""
        if not _is_multipart(request):
            raise UsageError("send the catalog as a multipart form (field 'catalog')")
        plan, _, _ = await _upload(request, state)
        return state.preview(plan)

    @private.post("/reindex", status_code=202, response_model=schemas.Job, tags=["admin"])
    def reindex() -> schemas.Job:
        """Queue a rebuild of every vector from SQL and the stored photos (after a model change)."""
        return state.reindex("api")

    @private.post("/reconcile", tags=["admin"])
    def reconcile(dry_run: bool = True) -> dict[str, Any]:
        """Find drift between SQL and the vector store; with `dry_run=false`, repair it."""
        return state.reconcile(dry_run)

    @private.get("/jobs", response_model=list[schemas.Job], tags=["admin"])
    def jobs(limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[schemas.Job]:
        return state.jobs.list(limit)

    @private.get("/jobs/{job_id}", response_model=schemas.Job, tags=["admin"])
    def job(job_id: Annotated[str, JOB_ID]) -> schemas.Job:
        """A job's status and progress (products done of total, images per second), then its counts and problems."""
        return state.job(job_id)

    @private.get("/runs", response_model=list[schemas.Run], tags=["admin"])
    def runs(limit: Annotated[int, Query(ge=1, le=500)] = 20) -> list[schemas.Run]:
        """Ingest history, newest first."""
        return state.runs(limit)

    @private.get(
        "/runs/{run_id}/report", tags=["admin"], response_class=Response, responses={200: {"content": {"text/csv": {}}}}
    )
    def report(run_id: int) -> Response:
        """The problems a run found, one CSV line each (row, sku, field, message)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(REPORT_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(spreadsheet_safe(row) for row in state.run_report(run_id))
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="run-{run_id}.csv"'},
        )

    app.include_router(public)
    app.include_router(private)
    _document_bodies(app, schemas.SearchQuery, schemas.IngestUrl)
    return app


def _document_bodies(app: FastAPI, *models: type[BaseModel]) -> None:
    """Bodies read by hand (JSON or multipart) are named in /docs through these schemas."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = plain()
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# -- request bodies ------------------------------------------------------------------------------
def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def _form(request: Request, max_files: int) -> FormData:
    try:
        return await request.form(max_files=max_files, max_fields=100)
    except TooLarge:
        raise
    except Exception as exc:  # a malformed multipart body is the client's mistake
        raise UsageError(f"cannot read the multipart form: {exc}") from None


async def _search_body(request: Request) -> tuple[schemas.SearchQuery, bytes | None]:
    if _is_multipart(request):
        form = await _form(request, max_files=1)
        fields: dict[str, Any] = {
            k: v for k, v in form.items() if not isinstance(v, UploadFile) and k not in ("category", "brand")
        }
        fields["category"] = [str(v) for v in form.getlist("category") if str(v)]
        fields["brand"] = [str(v) for v in form.getlist("brand") if str(v)]
        for flag in ("in_stock", "facets"):
            if flag in fields:
                fields[flag] = str(fields[flag]).lower() in ("1", "true", "yes", "on")
        fields = {k: v for k, v in fields.items() if v != ""}
        query = schemas.SearchQuery.model_validate(fields)
        upload = form.get("image")
        photo = await upload.read() if isinstance(upload, UploadFile) else None
        return query, photo
    content_type = request.headers.get("content-type", "application/json").lower()
    if not content_type.startswith("application/json"):
        raise UsageError("send JSON (application/json) or a multipart form (multipart/form-data)")
    query = schemas.SearchQuery.model_validate_json(await request.body() or b"{}")
    photo = None
    if query.image_base64:
        try:
            photo = base64.b64decode(query.image_base64, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError("image_base64 is not valid base64") from None
    return query, photo


async def _upload(request: Request, state: ServerState) -> tuple[Any, bool, bool]:
    form = await _form(request, max_files=10_001)
    catalog = form.get("catalog")
    if not isinstance(catalog, UploadFile):
        raise UsageError("the form needs a 'catalog' file (CSV or JSON lines)")
    images = form.get("images")
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    catalog_bytes = await catalog.read()
    zip_bytes = await images.read() if isinstance(images, UploadFile) else None
    pairs = [(f.filename or "image", await f.read()) for f in files]
    flags = {key: str(form.get(key, "")).lower() in ("1", "true", "yes", "on") for key in ("prune", "force_prune")}
    plan = await run_in_threadpool(plan_upload, catalog.filename or "catalog.csv", catalog_bytes, zip_bytes, pairs)
    return plan, flags["prune"], flags["force_prune"]


def _multipart_schema() -> dict[str, Any]:
    fields: dict[str, Any] = {
        name: {"type": "string"}
        for name in ("text", "weight", "top_k", "offset", "min_price", "max_price", "min_score", "in_stock", "facets")
    }
    fields["category"] = fields["brand"] = {"type": "array", "items": {"type": "string"}}
    return {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}, **fields}}


def _upload_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["catalog"],
        "properties": {
            "catalog": {"type": "string", "format": "binary", "description": "CSV or JSON lines"},
            "images": {"type": "string", "format": "binary", "description": "a ZIP of the catalog's images"},
            "files": {
                "type": "array",
                "items": {"type": "string", "format": "binary"},
                "description": "or the image files themselves",
            },
            "prune": {"type": "boolean", "description": "remove products that are not in this catalog"},
            "force_prune": {
                "type": "boolean",
                "description": "prune even when rows could not be read and their SKUs are unknown (implies prune)",
            },
        },
    }


# -- errors ---------------------------------------------------------------------------------------
def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ShopLensError)
    async def shoplens_error(_request: Request, exc: ShopLensError) -> JSONResponse:
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if isinstance(exc, Throttled) else None
        if exc.http_status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return error(exc.http_status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "invalid_request", _validation_message(exc.errors()))

    @app.exception_handler(ValidationError)
    async def invalid_body(_request: Request, exc: ValidationError) -> JSONResponse:
        return error(422, "invalid_request", _validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return error(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), getattr(exc, "headers", None)
        )

    @app.exception_handler(ClientDisconnect)
    async def gone(_request: Request, _exc: ClientDisconnect) -> Response:
        return Response(status_code=400)  # nobody is left to read it

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def database_down(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return error(503, "database_unavailable", "the product database is not reachable; try again shortly")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return error(500, "internal_error", f"unexpected error ({exc.__class__.__name__}); it was logged on the server")


def _validation_message(errors: Any) -> str:
    parts = []
    for e in list(errors)[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"
