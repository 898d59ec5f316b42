"""The ShopLens admin page: upload a catalog with its images, follow ingest jobs, delete a product.

The server holds the admin password (SHOPLENS_ADMIN_PASSWORD) and throttles wrong guesses for the
whole process, so this page only forwards what was typed as the API's bearer credential and keeps
it in this browser session. Every operation is an API call; an ingest is a job in the server,
which goes on (and can be followed) after this tab is closed.
"""

from __future__ import annotations

import re
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st
from babel.numbers import format_percent

from server import schemas
from server.client import ApiError, ShopLensClient
from services.images import IMAGE_SUFFIXES
from ui import i18n, state
from ui.i18n import N_, _, ngettext, number

IMAGES_ZIP, IMAGES_FILES = N_("A ZIP file"), N_("Image files")
IMAGES_NONE = N_("None (the catalog links to images by URL)")
# What the file pickers offer (the server decides what it takes; these only spare a round trip).
# The catalog suffixes copy ingest.readers.CATALOG_SUFFIXES: the pages, mere clients, do not import
# ingest; tests/ui/test_admin.py keeps the two equal.
CATALOG_TYPES = ["csv", "gz", "json", "jsonl", "ndjson", "tsv", "txt", "xml"]
IMAGE_TYPES = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)
MAX_CATALOG_MB = 64
RECENT_JOBS = 5
Upload = tuple[tuple[str, bytes], bytes | None, list[tuple[str, bytes]]]  # catalog, ZIP, image files


# -- the credential -------------------------------------------------------------------------------
def admin_client(url: str) -> ShopLensClient | None:
    """This session's client with the admin credential, once the server has accepted it."""
    credential = st.session_state.get("admin_credential")
    if not credential:
        return None
    client = st.session_state.get("admin_client")
    if not isinstance(client, ShopLensClient) or client.base_url != url.rstrip("/"):
        client = ShopLensClient(url, token=credential, session=_session_id())
        st.session_state["admin_client"] = client
    return client


def _session_id() -> str:
    """Names this browser session to the server, which throttles wrong guesses per session."""
    return str(st.session_state.setdefault("admin_session", uuid.uuid4().hex))


def log_out() -> None:
    client = st.session_state.pop("admin_client", None)
    if isinstance(client, ShopLensClient):
        client.close()
    for key in ("admin_credential", "job_id", "upload_preview", "reports"):
        st.session_state.pop(key, None)


def login(url: str) -> ShopLensClient | None:
    """The admin client, or the login form. The typed password is checked by the server with a
    cheap admin call; its refusal (wrong, or too many wrong guesses) is shown as it words it."""
    client = admin_client(url)
    if client is not None:
        return client
    with st.form("login", clear_on_submit=True):
        guess = st.text_input(_("Admin password"), type="password", key="admin_password")
        submitted = st.form_submit_button(_("Log in"), type="primary")
    if not submitted:
        return None
    if not guess:
        st.error(_("Type the admin password."))
        return None
    candidate = ShopLensClient(url, token=guess, session=_session_id())
    try:
        candidate.runs(limit=1)
    except Exception as exc:
        candidate.close()
        st.error(state.friendly_error(exc))
        return None
    st.session_state["admin_credential"] = guess
    st.session_state["admin_client"] = candidate
    st.rerun()
    return None  # unreachable: st.rerun() ends the run


# -- upload -----------------------------------------------------------------------------------------
def upload_tab(client: ShopLensClient) -> None:
    recent = current_jobs(client)
    st.markdown(
        _(
            "Upload a catalog with a `sku` and a `title` column (optional: `description`, `category`, `brand`, "
            "`price`, `currency`, `in_stock`, `image` — several images separated by `|`; any other column becomes a "
            "product detail). Images are named by file name inside the ZIP or the uploaded files, or by http(s) URL."
        )
    )
    st.caption(
        _(
            "Google Merchant Center feeds (XML or tab-separated, gzipped too) and Shopify or WooCommerce product "
            "exports are recognised from their content and read as they are."
        )
    )
    generation = st.session_state.get("upload_generation", 0)  # a new number: new, empty file pickers
    state.uploader_words(f"catalog_file_{generation}", CATALOG_TYPES, MAX_CATALOG_MB)
    catalog_file = st.file_uploader(
        _("Catalog (CSV, JSON lines, or a product feed or export)"),
        type=CATALOG_TYPES,
        key=f"catalog_file_{generation}",
        max_upload_size=MAX_CATALOG_MB,
    )
    mode = st.radio(
        _("Product images"), [IMAGES_ZIP, IMAGES_FILES, IMAGES_NONE], format_func=_, horizontal=True, key="images_mode"
    )
    zip_file, image_files = None, []
    if mode == IMAGES_ZIP:
        zip_limit = max(1, state.current_settings().max_upload_bytes // 2**20)
        state.uploader_words(f"zip_file_{generation}", ["zip"], zip_limit)
        zip_file = st.file_uploader(
            _("Images as one ZIP file"),
            type=["zip"],
            key=f"zip_file_{generation}",
            max_upload_size=zip_limit,
        )
    elif mode == IMAGES_FILES:
        state.uploader_words(f"image_files_{generation}", IMAGE_TYPES)
        image_files = (
            st.file_uploader(
                _(IMAGES_FILES),
                type=IMAGE_TYPES,
                accept_multiple_files=True,
                key=f"image_files_{generation}",
            )
            or []
        )
    if catalog_file is None:
        st.info(_("Choose a catalog file to see a preview. Nothing is saved before you press **Ingest**."))
    else:
        if mode == IMAGES_ZIP and zip_file is None:
            st.caption(_("No ZIP chosen yet: the preview below lists the images the catalog will miss."))
        upload: Upload = (
            (catalog_file.name, catalog_file.getvalue()),
            zip_file.getvalue() if zip_file is not None else None,
            [(f.name, f.getvalue()) for f in image_files],
        )
        key = (
            catalog_file.file_id,
            zip_file.file_id if zip_file else None,
            tuple(f.file_id for f in image_files),
            mode,
        )
        preview_and_submit(client, upload, key, generation)
    st.divider()
    recent_jobs(recent)


def preview_and_submit(client: ShopLensClient, upload: Upload, key: tuple[object, ...], generation: int) -> None:
    """The server's preview of the upload (nothing written), then the button that queues it."""
    cached = st.session_state.get("upload_preview")
    if cached and cached[0] == key:
        preview: schemas.UploadPreview = cached[1]
    else:
        try:
            with st.spinner(_("Checking the upload…")):
                preview = client.preview_upload(*upload)
        except Exception as exc:
            st.session_state.pop("upload_preview", None)
            reason = _sentence(state.friendly_error(exc))
            st.error(_("Upload refused: {reason} Nothing was saved.").format(reason=reason))
            return
        st.session_state["upload_preview"] = (key, preview)
    show_preview(preview)
    prune = st.checkbox(_("Also remove products that are not in this catalog"), key=f"prune_{generation}")
    label = ngettext("Ingest {count} product", "Ingest {count} products", preview.rows_ok).format(
        count=number(preview.rows_ok)
    )
    if not st.button(label, type="primary", disabled=preview.rows_ok == 0, key="ingest"):
        return
    try:
        job = client.ingest_upload(*upload, prune=prune, trigger="admin")
    except Exception as exc:
        st.error(_("Ingest refused: {reason}").format(reason=_sentence(state.friendly_error(exc))))
        return
    # the job is the server's now: follow it, and clear the pickers so it cannot go twice
    st.session_state["job_id"] = job.id
    st.session_state.pop("upload_preview", None)
    st.session_state["upload_generation"] = generation + 1
    st.rerun()


def show_preview(preview: schemas.UploadPreview) -> None:
    st.subheader(_("Preview"))
    a, b, c, d = st.columns(4)
    a.metric(_("Rows"), number(preview.rows_total))
    b.metric(_("Rows OK"), number(preview.rows_ok))
    c.metric(_("Rows with errors"), number(preview.rows_with_errors))
    d.metric(_("Images in upload"), number(preview.images_in_upload))
    if preview.skipped_files:
        names = ", ".join(preview.skipped_files[:8]) + (" …" if len(preview.skipped_files) > 8 else "")
        skipped = len(preview.skipped_files)
        st.caption(
            ngettext(
                "Skipped {count} file that is not an image: {names}",
                "Skipped {count} files that are not images: {names}",
                skipped,
            ).format(count=number(skipped), names=names)
        )
    if preview.problems:
        st.warning(
            ngettext(
                "{count} problem: rows with errors are skipped; rows with a missing image load without it.",
                "{count} problems: rows with errors are skipped; rows with a missing image load without it.",
                len(preview.problems),
            ).format(count=number(len(preview.problems)))
        )
        with st.container(key="problems"):
            st.dataframe(
                preview.problems,
                hide_index=True,
                column_order=["row", "sku", "problem", "field", "message"],
                column_config={
                    "row": _("row"),
                    "sku": _("sku"),
                    "problem": _("problem"),
                    "field": _("field"),
                    "message": _("message"),
                },
                width="stretch",
            )
    else:
        st.success(_("Every row is valid and every image was found."))
    if preview.sample:
        shown = _("First {shown} of {count} valid rows").format(
            shown=number(len(preview.sample)), count=number(preview.rows_ok)
        )
        with st.expander(shown):
            st.dataframe(preview.sample, hide_index=True, width="stretch")


# -- jobs -------------------------------------------------------------------------------------------
def current_jobs(client: ShopLensClient) -> list[schemas.Job]:
    """The end of the job this session started, and the progress of every running job, at the top
    of the page where the merchant looks; returns the server's recent jobs. An ingest goes on in
    the server whether or not a tab watches it, so a fresh visit shows what is running."""
    mine_id: str | None = st.session_state.get("job_id")
    try:
        recent = client.jobs(limit=RECENT_JOBS)
        mine = next((j for j in recent if j.id == mine_id), None)
        if mine_id and mine is None:
            mine = client.job(mine_id)
    except ApiError as exc:
        if mine_id and state.is_not_found(exc):  # the server forgot it (another database)
            st.session_state.pop("job_id", None)
            st.rerun()
        raise  # the page says it (and a refused credential logs the session out)
    if mine is not None and mine.finished:
        show_finished(client, mine)
    running = tuple(j.id for j in ([mine] if mine is not None else []) + recent if not j.finished)
    if running:
        live_progress(tuple(dict.fromkeys(running)))
    return recent


def recent_jobs(recent: list[schemas.Job]) -> None:
    st.subheader(_("Ingest jobs"), anchor=False)
    if recent:
        rows = [
            {
                "started": j.started_at or j.created_at,
                "trigger": word(j.trigger),
                "status": word(j.status),
                "products": done_of_total(j),
                "source": short_source(j.source),
                "result": job_result(j),
            }
            for j in recent
        ]
        st.caption(
            ngettext("The last job on this server", "The last {count} jobs on this server", len(recent)).format(
                count=number(len(recent))
            )
        )
        with st.container(key="jobs"):
            st.dataframe(
                rows,
                hide_index=True,
                width="stretch",
                column_config={
                    "started": st.column_config.DatetimeColumn(_("started"), format="YYYY-MM-DD HH:mm:ss", width=150),
                    "trigger": st.column_config.TextColumn(_("trigger"), width=70),
                    "status": st.column_config.TextColumn(_("status"), width=90),
                    "products": st.column_config.TextColumn(_("products"), width=110),
                    "source": st.column_config.TextColumn(_("source"), width="medium"),
                    "result": st.column_config.TextColumn(_("result"), width="large"),
                },
            )
    else:
        st.caption(_("No ingest jobs yet."))


# a run's counts, in the order a merchant reads them, each in words
COUNTED = {
    "new": N_("{count} new"),
    "changed": N_("{count} changed"),
    "unchanged": N_("{count} unchanged"),
    "pruned": N_("{count} pruned"),
    "failed": N_("{count} failed"),
}
# the server's words for a job's trigger and status (API values, shown in the tables)
WORDS = {
    "api": N_("api"),
    "admin": N_("admin"),
    "cli": N_("cli"),
    "schedule": N_("schedule"),
    "demo": N_("demo"),
    "queued": N_("queued"),
    "running": N_("running"),
    "succeeded": N_("succeeded"),
    "partial": N_("partial"),
    "failed": N_("failed"),
    "interrupted": N_("interrupted"),
}
ENDED = {  # the end of a job without a message of its own
    "succeeded": N_("The ingest succeeded."),
    "partial": N_("The ingest partly succeeded."),
    "failed": N_("The ingest failed."),
    "interrupted": N_("The ingest was interrupted."),
}


def done_of_total(job: schemas.Job) -> str:
    return _("{done} of {total}").format(done=number(job.done), total=number(job.total)) if job.total else ""


def word(value: str) -> str:
    """One of the server's words for a trigger or a status, in the page's language (an unknown
    one as the server says it)."""
    return _(WORDS[value]) if value in WORDS else value


def changes(counts: dict[str, Any]) -> str:
    """A run's counts in a few words, zeros left out: "150 new · 2 failed"."""
    parts = [_(text).format(count=number(int(counts[name]))) for name, text in COUNTED.items() if counts.get(name)]
    return " · ".join(parts) or _("nothing to do")


def job_result(job: schemas.Job) -> str:
    if not job.finished:
        return job.message or ""
    if job.status in ("failed", "interrupted") or not job.counts:
        return job.message or word(job.status)
    problems = ngettext("{count} problem", "{count} problems", job.problem_count).format(
        count=number(job.problem_count)
    )
    return changes(job.counts) + (f" · {problems}" if job.problem_count else "")


def short_source(source: str) -> str:
    """A catalog's name as a merchant knows it: the file name (an upload's without the server's
    timestamp), or a URL's host and file."""
    if source.startswith("upload "):
        name = re.sub(r" \([0-9TZ]+\)$", "", source).removeprefix("upload ")
        return _("upload {name}").format(name=name)
    parts = urlsplit(source)
    if parts.scheme in ("http", "https") and parts.netloc:
        name = parts.path.rstrip("/").rsplit("/", 1)[-1]
        return f"{parts.netloc}/…/{name}" if name else parts.netloc
    return Path(source).name or source


@st.fragment(run_every=1)
def live_progress(job_ids: tuple[str, ...]) -> None:
    """Progress of running jobs, polled every second. When one ends, the whole page runs again:
    its summary, the run history and the catalog counts in the header are new then."""
    client = st.session_state.get("admin_client")
    if not isinstance(client, ShopLensClient):
        return
    for job_id in job_ids:
        try:
            job = client.job(job_id)
        except Exception as exc:
            st.error(state.friendly_error(exc))
            continue
        if job.finished:
            st.rerun()
        progress_bar(job)


def progress_text(job: schemas.Job, now: datetime | None = None) -> tuple[float, str]:
    """How far a running job is, as a fraction and in words: products done of the total, the
    embedding rate and, once it can be told, the time left."""
    if job.status == "queued":
        return 0.0, _("queued, waiting for the job before it")
    if not job.total:
        return 0.0, job.message or _("reading the catalog")
    value = min(job.done / job.total, 1.0)
    text = ngettext(
        "{done} of {total} product ({percent})", "{done} of {total} products ({percent})", job.total
    ).format(done=number(job.done), total=number(job.total), percent=format_percent(value, locale=i18n.babel_locale()))
    if job.images_per_second:
        text += " · " + _("{rate} images/s").format(rate=number(job.images_per_second, 1))
    if job.started_at is not None and 0 < job.done < job.total:
        started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=UTC)
        elapsed = ((now or datetime.now(UTC)) - started).total_seconds()
        if elapsed > 0:
            left = elapsed / job.done * (job.total - job.done)
            text += " · " + _("about {duration} left").format(duration=_duration(left))
    if job.message:
        text += f" · {job.message}"
    return value, text


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    if seconds < 90:
        return _("{count} s").format(count=number(seconds))
    if seconds < 90 * 60:
        return _("{count} min").format(count=number(round(seconds / 60)))
    return _("{count} h").format(count=number(seconds / 3600, 1))


def progress_bar(job: schemas.Job) -> None:
    value, text = progress_text(job)
    st.progress(value, text=f"{state.escape(short_source(job.source))}: {state.escape(text)}")


def show_finished(client: ShopLensClient, job: schemas.Job) -> None:
    """The end of this session's job: its summary, its counts and the problem report."""
    box = {"succeeded": st.success, "partial": st.warning, "interrupted": st.warning}.get(job.status, st.error)
    box(job.message or (_(ENDED[job.status]) if job.status in ENDED else word(job.status)))
    counts = job.counts
    if counts:
        columns = st.columns(6)
        for column, (label, name) in zip(
            columns,
            (
                (_("New"), "new"),
                (_("Changed"), "changed"),
                (_("Unchanged"), "unchanged"),
                (_("Pruned"), "pruned"),
                (_("Failed"), "failed"),
                (_("Photos embedded"), "images_embedded"),
            ),
            strict=False,
        ):
            column.metric(label, number(int(counts.get(name, 0))))
    with st.container(horizontal=True, vertical_alignment="center"):
        if job.problem_count and job.run_id is not None:
            data = report_bytes(client, job.run_id)
            if data is not None:
                st.download_button(
                    ngettext(
                        "Download the problem report ({count} problem, CSV)",
                        "Download the problem report ({count} problems, CSV)",
                        job.problem_count,
                    ).format(count=number(job.problem_count)),
                    data,
                    file_name=f"run-{job.run_id}.csv",
                    mime="text/csv",
                    key="report",
                )
        if st.button(_("Dismiss"), key="dismiss_job"):
            st.session_state.pop("job_id", None)
            st.rerun()


def report_bytes(client: ShopLensClient, run_id: int) -> bytes | None:
    """A finished run's problem report (CSV), fetched once per session: it never changes."""
    reports: dict[int, bytes] = st.session_state.setdefault("reports", {})
    if run_id not in reports:
        try:
            reports[run_id] = client.run_report(run_id)
        except Exception as exc:
            st.error(state.friendly_error(exc))
            return None
    return reports[run_id]


# -- history and delete ------------------------------------------------------------------------------
def runs_tab(client: ShopLensClient) -> None:
    runs = client.runs(limit=50)
    if not runs:
        st.info(_("No ingest runs yet."))
        return
    rows = [
        {
            "run": r.id,
            "started": r.started_at,
            "trigger": word(r.trigger),
            "status": word(r.status),
            "source": short_source(r.source),
            "rows": r.rows_total,
            "result": changes(r.model_dump()),
            "problems": r.error_count,
            "took": r.seconds,
        }
        for r in runs
    ]
    with st.container(key="runs"):
        st.dataframe(
            rows,
            hide_index=True,
            width="stretch",
            column_config={
                "run": st.column_config.NumberColumn(_("run"), width=50),
                "started": st.column_config.DatetimeColumn(_("started"), format="YYYY-MM-DD HH:mm:ss", width=150),
                "trigger": st.column_config.TextColumn(_("trigger"), width=70),
                "status": st.column_config.TextColumn(_("status"), width=90),
                "source": st.column_config.TextColumn(_("source"), width="medium"),
                "rows": st.column_config.NumberColumn(_("rows"), format="localized", width=70),
                "result": st.column_config.TextColumn(_("result"), width="medium"),
                "problems": st.column_config.NumberColumn(_("problems"), format="localized", width=75),
                "took": st.column_config.NumberColumn(_("took"), format=_("%.1f s"), width=70),
            },
        )
    embedders = sorted({r.embedder for r in runs})
    st.caption(
        ngettext(
            "Search model of these runs: {models}", "Search models of these runs: {models}", len(embedders)
        ).format(models=", ".join(embedders))
    )
    with_reports = [r.id for r in runs if r.error_count and r.finished_at is not None]
    if with_reports:
        run_id = st.selectbox(_("Problem report of run"), with_reports, key="report_run")
        data = report_bytes(client, run_id)
        if data is not None:
            st.download_button(
                _("Download report (CSV)"), data, file_name=f"run-{run_id}.csv", mime="text/csv", key="run_report"
            )


def _delete(client: ShopLensClient, sku: str) -> None:
    """Runs before the next page run, so the form can be emptied for the next product."""
    try:
        client.delete_product(sku)
    except Exception as exc:
        st.session_state["delete_error"] = (
            _("No product with SKU {sku}.").format(sku=repr(sku))
            if state.is_not_found(exc)
            else state.friendly_error(exc)
        )
        return
    st.session_state["deleted"] = sku
    st.session_state["delete_sku"] = ""
    st.session_state["delete_confirm"] = False


def delete_tab(client: ShopLensClient) -> None:
    deleted = st.session_state.pop("deleted", None)
    if deleted:
        st.success(_("Deleted {sku}.").format(sku=deleted))
    failed = st.session_state.pop("delete_error", None)
    if failed:
        st.error(failed)
    sku = st.text_input(_("SKU of the product to delete"), key="delete_sku").strip()
    if not sku:
        return
    product = state.product_or_explain(client, sku, st.info, _("No product with SKU {sku}.").format(sku=repr(sku)))
    if product is None:
        return
    left, right = st.columns([1, 4])
    with left:
        state.show_product_image(client, product.image_url, 240)
    with right:
        st.markdown(f"**{state.escape(product.title)}** · {state.format_price(product.price, product.currency)}")
        confirm = st.checkbox(
            _("Yes, delete {sku} from the shop (its photos and search vectors too)").format(sku=sku),
            key="delete_confirm",
        )
        st.button(
            _("Delete product"),
            type="primary",
            disabled=not confirm,
            key="delete",
            on_click=_delete,
            args=(client, sku),
        )


# -- the catalog audit -------------------------------------------------------------------------------
def _accept(client: ShopLensClient, skus: list[str] | None, min_confidence: float | None = None) -> None:
    """Runs before the next page run, which then shows the audit without the accepted rows."""
    try:
        accepted = client.accept_audit(skus, min_confidence)
    except Exception as exc:
        st.session_state["audit_error"] = state.friendly_error(exc)
        return
    st.session_state["audit_accepted"] = accepted.changed


def audit_tab(client: ShopLensClient) -> None:
    accepted = st.session_state.pop("audit_accepted", None)
    if accepted is not None:
        st.success(
            ngettext(
                "Accepted {count} category suggestion.", "Accepted {count} category suggestions.", len(accepted)
            ).format(count=number(len(accepted)))
        )
    failed = st.session_state.pop("audit_error", None)
    if failed:
        st.error(failed)
    fresh = st.button(_("Audit again"), key="audit_fresh")
    audit = client.audit(fresh=fresh)
    how = ngettext(
        "{count} product audited in {seconds} s from the stored vectors",
        "{count} products audited in {seconds} s from the stored vectors",
        audit.products,
    ).format(count=number(audit.products), seconds=number(audit.seconds, 1))
    if audit.duplicate_threshold is not None:
        how += " · " + _("duplicate threshold {threshold}").format(threshold=number(audit.duplicate_threshold, 3))
    st.caption(how)
    for note in audit.notes:
        st.info(_sentence(note[:1].upper() + note[1:]))
    st.subheader(_("Near-duplicate listings ({count})").format(count=number(len(audit.duplicates))), anchor=False)
    if audit.duplicates:
        st.dataframe(
            [{"products": ", ".join(d.skus), "photo similarity": d.score} for d in audit.duplicates],
            hide_index=True,
            width="stretch",
            column_config={"products": _("products"), "photo similarity": _("photo similarity")},
        )
    st.subheader(
        _("Category suggestions ({count})").format(count=number(len(audit.category_suggestions))), anchor=False
    )
    if audit.category_suggestions:
        with st.container(horizontal=True, vertical_alignment="bottom", key="audit_accept_all"):
            floor = st.number_input(_("Confidence at least"), 0.0, 1.0, 0.8, 0.05, key="audit_floor", width=180)
            st.button(
                _("Accept all above"),
                key="audit_accept_above",
                on_click=_accept,
                args=(client, None, floor),
            )
        for s in audit.category_suggestions[:200]:
            left, right = st.columns([4, 1], vertical_alignment="center")
            left.markdown(
                f"`{state.escape(s.sku)}` → **{state.escape(s.category)}** · "
                + _("confidence {confidence}").format(confidence=number(s.confidence, 2))
            )
            right.button(_("Accept"), key=f"audit_accept_{s.sku}", on_click=_accept, args=(client, [s.sku]))
        if len(audit.category_suggestions) > 200:
            st.caption(
                _("… and {count} more (accept them above a confidence).").format(
                    count=number(len(audit.category_suggestions) - 200)
                )
            )
    st.subheader(
        _("Listings whose photo contradicts them ({count})").format(count=number(len(audit.mismatches))), anchor=False
    )
    if audit.mismatches:
        st.dataframe(
            [
                {
                    "sku": m.sku,
                    "listed": m.listed,
                    "looks like": m.suggested,
                    "confidence": m.confidence,
                    "why": m.reason,
                }
                for m in audit.mismatches
            ],
            hide_index=True,
            width="stretch",
            column_config={
                "sku": _("sku"),
                "listed": _("listed"),
                "looks like": _("looks like"),
                "confidence": _("confidence"),
                "why": _("why"),
            },
        )


# -- the page ----------------------------------------------------------------------------------------
def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def main() -> None:
    i18n.use_language()
    st.set_page_config(page_title=_("ShopLens admin"), page_icon="🔒", layout="wide")
    state.streamlit_words()
    st.title(_("Admin"), anchor=False)
    public, health = state.server_or_stop()
    client = login(public.base_url)
    if client is None:
        return
    counts = health.counts  # fetched on this run: current after every ingest and delete (both end in a new run)
    with st.container(horizontal=True, vertical_alignment="center", horizontal_alignment="distribute", key="head"):
        st.caption(state.catalog_size(counts) + " · " + _("server {url}").format(url=client.base_url), width="content")
        st.button(_("Log out"), key="logout", on_click=log_out)
    try:
        names = [_("Upload a catalog"), _("Ingest runs"), _("Delete a product"), _("Audit")]
        upload, runs, delete, audit = st.tabs(names)
        with upload:
            upload_tab(client)
        with runs:
            runs_tab(client)
        with delete:
            delete_tab(client)
        with audit:
            audit_tab(client)
    except ApiError as exc:
        if exc.status == 401:  # the server no longer takes this session's password
            log_out()
            st.error(_("{reason} Please log in again.").format(reason=_sentence(exc.user_message)))
        else:
            st.error(state.friendly_error(exc))
    except Exception as exc:
        st.error(state.friendly_error(exc))


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
