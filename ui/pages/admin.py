"""The ShopLens admin page: upload a catalog with its images, watch ingest runs, delete a product.

Locked by SHOPLENS_ADMIN_PASSWORD (the page refuses to open without one); wrong passwords are
throttled per session and for the whole process. The work itself is in `server.admin`.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from server import admin as admin_ops  # noqa: E402
from ingest.bundles import IMAGE_SUFFIXES, BundleLimits  # noqa: E402
from services.context import ShopLens  # noqa: E402
from ui import state  # noqa: E402

IMAGES_ZIP, IMAGES_FILES, IMAGES_NONE = "A ZIP file", "Image files", "None (the catalog links to images by URL)"


def login() -> bool:
    """True once this session has given the right password; otherwise shows the form."""
    settings = state.current_settings()
    secret = settings.admin_password.get_secret_value() if settings.admin_password else ""
    if not secret:
        st.error("The admin page is disabled. Set the SHOPLENS_ADMIN_PASSWORD environment variable and restart the server to enable it.")
        return False
    if st.session_state.get("admin_ok"):
        return True
    session = st.session_state.setdefault("admin_session", uuid.uuid4().hex)
    throttle = state.login_throttle()
    with st.form("login", clear_on_submit=True):
        guess = st.text_input("Admin password", type="password", key="admin_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        result = throttle.attempt(secret, guess or "", session)
        if result.ok:
            st.session_state["admin_ok"] = True
            st.rerun()
        st.error(result.message)
    else:
        wait = throttle.wait_seconds(session)
        if wait > 0:
            st.warning(f"Too many wrong passwords. Try again in {wait:.0f} s.")
    return False


def upload_tab(app: ShopLens) -> None:
    st.markdown(
        "Upload a catalog with a `sku` and a `title` column (optional: `description`, `category`, `brand`, `price`, "
        "`currency`, `in_stock`, `image` — several images separated by `|`; any other column becomes a product detail). "
        "Images are named by file name inside the ZIP or the uploaded files, or by http(s) URL."
    )
    catalog_file = st.file_uploader(
        "Catalog (CSV or JSON lines)", type=admin_ops.CATALOG_TYPES, key="catalog_file",
        max_upload_size=admin_ops.MAX_UPLOAD_CATALOG_BYTES // 2**20,
    )
    mode = st.radio("Product images", [IMAGES_ZIP, IMAGES_FILES, IMAGES_NONE], horizontal=True, key="images_mode")
    zip_file, image_files = None, []
    if mode == IMAGES_ZIP:
        zip_file = st.file_uploader("Images as one ZIP file", type=["zip"], key="zip_file")
    elif mode == IMAGES_FILES:
        image_files = st.file_uploader(
            "Image files", type=sorted(s.lstrip(".") for s in IMAGE_SUFFIXES), accept_multiple_files=True, key="image_files",
        ) or []
    if catalog_file is None:
        st.info("Choose a catalog file to see a preview. Nothing is saved before you press **Ingest**.")
        return
    if mode == IMAGES_ZIP and zip_file is None:
        st.caption("No ZIP chosen yet: the preview below lists the images the catalog will miss.")
    limits = BundleLimits.from_settings(app.settings)
    key = (catalog_file.file_id, zip_file.file_id if zip_file else None, tuple(f.file_id for f in image_files), mode)
    cached = st.session_state.get("upload_plan")
    if cached and cached[0] == key:
        plan = cached[1]
    else:
        try:
            plan = admin_ops.plan_upload(
                catalog_file.name, catalog_file.getvalue(),
                zip_bytes=zip_file.getvalue() if zip_file else None,
                files=[(f.name, f.getvalue()) for f in image_files], limits=limits,
            )
        except Exception as exc:
            st.session_state.pop("upload_plan", None)
            st.error(f"Upload refused: {state.friendly_error(exc)} Nothing was saved.")
            return
        st.session_state["upload_plan"] = (key, plan)
    show_preview(plan)
    prune = st.checkbox("Also remove products that are not in this catalog", key="prune")
    label = f"Ingest {plan.rows_ok} product{'s' if plan.rows_ok != 1 else ''}"
    if st.button(label, type="primary", disabled=plan.rows_ok == 0, key="ingest"):
        bar = st.progress(0.0, text="Starting…")

        def progress(done: int, total: int) -> None:
            bar.progress(min(done / total, 1.0) if total else 1.0, text=f"{done} of {total} products")

        try:
            with st.spinner("Ingesting…"):
                result, report = admin_ops.ingest_upload(app, plan, prune=prune, progress=progress)
        except Exception as exc:
            st.error(f"Ingest failed: {state.friendly_error(exc)}")
            return
        bar.progress(1.0, text="Done")
        st.session_state["last_ingest"] = {
            "status": result.status, "summary": result.summary(), "problems": len(result.errors),
            "report": report.read_bytes(), "report_name": report.name,
        }
        st.session_state.pop("upload_plan", None)
    last = st.session_state.get("last_ingest")
    if last:
        (st.success if last["status"] == "succeeded" else st.warning)(last["summary"])
        if last["problems"]:
            st.download_button("Download the problem report (CSV)", last["report"], file_name=last["report_name"], mime="text/csv", key="report")


def show_preview(plan: admin_ops.UploadPlan) -> None:
    st.subheader("Preview")
    a, b, c, d = st.columns(4)
    a.metric("Rows", plan.rows_total)
    b.metric("Rows OK", plan.rows_ok)
    c.metric("Rows with errors", plan.rows_with_errors)
    d.metric("Images in upload", len(plan.bundle.entries) if plan.bundle else 0)
    if plan.bundle and plan.bundle.skipped:
        names = ", ".join(plan.bundle.skipped[:8]) + (" …" if len(plan.bundle.skipped) > 8 else "")
        st.caption(f"Skipped {len(plan.bundle.skipped)} file(s) that are not images: {names}")
    problems = plan.problems()
    if problems:
        st.warning(f"{len(problems)} problem(s): rows with errors are skipped; rows with a missing image load without it.")
        st.dataframe(problems, hide_index=True, column_order=["row", "sku", "problem", "field", "message"], key="problems")
    else:
        st.success("Every row is valid and every image was found.")
    sample = [
        {"sku": r.sku, "title": r.title, "category": r.category, "brand": r.brand,
         "price": None if r.price is None else float(r.price), "images": len(r.images)}
        for r in plan.catalog.records[:20]
    ]
    if sample:
        with st.expander(f"First {len(sample)} of {plan.rows_ok} valid rows"):
            st.dataframe(sample, hide_index=True)


def runs_tab(app: ShopLens) -> None:
    rows = admin_ops.run_rows(app)
    if not rows:
        st.info("No ingest runs yet.")
        return
    st.dataframe(rows, hide_index=True, key="runs")
    reports = {r["run"]: app.settings.home / "reports" / f"run-{r['run']}.csv" for r in rows if r["problems"]}
    reports = {run: path for run, path in reports.items() if path.is_file()}
    if reports:
        run = st.selectbox("Problem report of run", list(reports), key="report_run")
        st.download_button("Download report (CSV)", reports[run].read_bytes(), file_name=reports[run].name, mime="text/csv", key="run_report")


def delete_tab(app: ShopLens) -> None:
    sku = st.text_input("SKU of the product to delete", key="delete_sku").strip()
    if not sku:
        return
    product = app.catalog.get_product(sku)
    if product is None:
        st.info(f"No product with SKU {sku!r}.")
        return
    left, right = st.columns([1, 4])
    with left:
        state.show_product_image(app.media.path(product.images[0].media_path) if product.images else None, 240)
    with right:
        st.markdown(f"**{product.title}** · {state.format_price(None if product.price is None else float(product.price), product.currency)}")
        confirm = st.checkbox(f"Yes, delete {sku} from the shop (its photos and search vectors too)", key="delete_confirm")
        if st.button("Delete product", type="primary", disabled=not confirm, key="delete"):
            try:
                deleted = admin_ops.delete_product(app, sku)
            except Exception as exc:
                st.error(state.friendly_error(exc))
                return
            st.session_state["deleted"] = sku if deleted else None
            st.rerun()


def main() -> None:
    st.set_page_config(page_title="ShopLens admin", page_icon="🔒", layout="wide")
    st.title("Admin")
    if not login():
        return
    app = state.app_or_stop()
    top = st.columns([6, 1])
    with top[1]:
        if st.button("Log out", key="logout"):
            st.session_state.pop("admin_ok", None)
            st.rerun()
    deleted = st.session_state.pop("deleted", None)
    if deleted:
        st.success(f"Deleted {deleted}.")
    try:
        counts = app.catalog.counts()
        top[0].caption(f"Catalog: {counts['products']:,} products, {counts['images']:,} photos · data folder {app.settings.home}")
        upload, runs, delete = st.tabs(["Upload a catalog", "Ingest runs", "Delete a product"])
        with upload:
            upload_tab(app)
        with runs:
            runs_tab(app)
        with delete:
            delete_tab(app)
    except Exception as exc:
        st.error(state.friendly_error(exc))


main()
