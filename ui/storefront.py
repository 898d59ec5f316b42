"""The ShopLens storefront: find products by photo, by words, or both.

Run: `shoplens serve` (or `python -m streamlit run ui/storefront.py`). This is the entry file of a
two-page app (Shop, Admin). It only displays: searching is `services.search`, the catalog is
`services.catalog`. A storefront never ingests at start-up.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `streamlit run ui/storefront.py` puts only ui/ on the path
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from services.context import ShopLens  # noqa: E402
from services.images import ImageError, decode_for_model, probe_format  # noqa: E402
from services.search import SearchFilters, SearchHit, SearchRequest, SearchResponse  # noqa: E402
from ui import state  # noqa: E402

PHOTO_TYPES = ["jpg", "jpeg", "png", "webp"]
PHOTO_FORMATS = {"JPEG", "MPO", "PNG", "WEBP"}
PAGE_SIZE = 12
GRID_COLUMNS = 4
KEPT_WIDGETS = ("query_text", "text_weight", "use_camera")


# -- navigation helpers (callbacks run before the next page run) ----------------------------------
def _open_product(sku: str) -> None:
    st.query_params["sku"] = sku


def _close_product() -> None:
    st.query_params.pop("sku", None)


def _more() -> None:
    st.session_state["top_k"] = st.session_state.get("top_k", PAGE_SIZE) + PAGE_SIZE


def _reset_paging() -> None:
    st.session_state["top_k"] = PAGE_SIZE


def _photo_changed(widget: str) -> None:
    """Keep the shopper's photo beyond its widget: the product page does not draw the uploader."""
    upload = st.session_state.get(widget)
    st.session_state["query_photo"] = (upload.name, upload.getvalue()) if upload is not None else None
    _reset_paging()


def _clear_photo() -> None:
    st.session_state["query_photo"] = None
    st.session_state["photo_generation"] = st.session_state.get("photo_generation", 0) + 1  # fresh, empty widgets
    _reset_paging()


def _keep_search_state() -> None:
    """Streamlit forgets a widget's value on a run that does not draw it (the product page);
    writing the values back keeps the shopper's words, weight and camera choice."""
    st.session_state.setdefault("text_weight", 0.5)
    for key in KEPT_WIDGETS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


# -- page parts -----------------------------------------------------------------------------------
def sidebar_filters(app: ShopLens) -> tuple[SearchFilters, float]:
    facets = app.catalog.facets()
    sb = st.sidebar
    sb.header("Filters")
    categories = sb.multiselect("Category", facets.categories, key="f_categories", placeholder="All categories", on_change=_reset_paging)
    brands = sb.multiselect("Brand", facets.brands, key="f_brands", placeholder="All brands", on_change=_reset_paging)
    min_price = max_price = None
    if facets.min_price is not None and facets.max_price is not None and facets.max_price > facets.min_price:
        low, high = float(math.floor(facets.min_price)), float(math.ceil(facets.max_price))
        chosen = sb.slider("Price", low, high, (low, high), step=1.0 if high - low >= 10 else 0.5, key="f_price", on_change=_reset_paging)
        if chosen[0] > low:
            min_price = chosen[0]
        if chosen[1] < high:
            max_price = chosen[1]
    in_stock = sb.checkbox("In stock only", key="f_in_stock", on_change=_reset_paging)
    with sb.expander("Match threshold"):
        min_score = st.slider(
            "Minimum match score", 0.0, 1.0, float(min(max(app.settings.min_score, 0.0), 1.0)), 0.01, key="f_min_score",
            help="Results scoring below this are hidden. Raise it to see only close matches.",
        )
    return SearchFilters(tuple(categories), tuple(brands), min_price, max_price, in_stock), min_score


def read_photo(app: ShopLens, name: str, data: bytes) -> object | None:
    """The decoded photo, or None after showing a friendly message."""
    limit = app.settings.max_image_bytes
    if len(data) > limit:
        st.error(f"This photo is {len(data) / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB. Please use a smaller photo.")
        return None
    try:
        fmt, _, _ = probe_format(data, app.limits)
        if fmt not in PHOTO_FORMATS:
            raise ImageError(f"{fmt} photos are not supported here (use JPEG, PNG or WebP)")
        return decode_for_model(data, app.limits)[0]
    except ImageError as exc:
        st.error(f"We couldn't use **{_escape(name)}**: {exc}. Please upload a JPEG, PNG or WebP photo.")
        return None


def product_card(hit: SearchHit, key: str) -> None:
    with st.container(border=True):
        state.show_product_image(hit.image)
        st.markdown(f"**{_escape(hit.title)}**")
        stock = "" if hit.in_stock else " · out of stock"
        st.caption(f"{state.format_price(hit.price, hit.currency)}{stock}  \nmatch score {hit.score:.2f}")
        st.button("View product", key=key, on_click=_open_product, args=(hit.sku,), width="stretch")


def product_grid(hits: list[SearchHit], key_prefix: str) -> None:
    for start in range(0, len(hits), GRID_COLUMNS):
        columns = st.columns(GRID_COLUMNS, gap="medium")
        for column, hit in zip(columns, hits[start : start + GRID_COLUMNS]):
            with column:
                product_card(hit, f"{key_prefix}-{hit.sku}")


def search_page(app: ShopLens, filters: SearchFilters, min_score: float) -> None:
    st.title("ShopLens")
    st.caption("Snap or upload a photo of something you like and find it in the shop. Add words to steer the search.")
    with st.container(border=True):
        photo_col, text_col, preview_col = st.columns([3, 3, 1.4], gap="large")
        generation = st.session_state.get("photo_generation", 0)
        with photo_col:
            if st.toggle("Use my camera", key="use_camera", on_change=_reset_paging):
                st.camera_input("Take a photo", key=f"camera-{generation}", on_change=_photo_changed, args=(f"camera-{generation}",))
            else:
                st.file_uploader(
                    "Upload a photo (JPEG, PNG or WebP)", type=PHOTO_TYPES, key=f"photo-{generation}",
                    on_change=_photo_changed, args=(f"photo-{generation}",),
                    max_upload_size=max(1, math.ceil(app.settings.max_image_bytes / 2**20)),
                )
        with text_col:
            text = st.text_input(
                "Describe it (optional)", key="query_text", on_change=_reset_paging,
                placeholder="e.g. red running shoes, or with a photo: in blue",
            )
        photo = st.session_state.get("query_photo")
        data = photo[1] if photo else None
        image = read_photo(app, *photo) if photo else None
        weight = 0.5
        if image is not None and text.strip():
            with text_col:
                weight = st.slider(
                    "Like this photo, but …", 0.0, 1.0, step=0.05, key="text_weight",
                    help="Left: only the photo counts. Right: only your words count.",
                )
                st.caption("← more like the photo · more like the words →")
        with preview_col:
            if data is not None and image is not None:
                st.image(data, caption="Your photo", width="stretch")
                st.button("Clear photo", on_click=_clear_photo, key="clear_photo", type="tertiary")
    if image is None and not text.strip():
        if data is None:
            st.info("Upload a photo (or type a few words) to see matching products.")
        showcase(app)
        return
    top_k = st.session_state.get("top_k", PAGE_SIZE)
    request = SearchRequest(image=image, text=text.strip() or None, text_weight=weight, filters=filters, top_k=top_k, min_score=min_score)
    try:
        with st.spinner("Searching…"):
            response = app.search.search(request)
    except Exception as exc:
        st.error(state.friendly_error(exc))
        return
    show_results(response, filters, min_score, top_k)


def show_results(response: SearchResponse, filters: SearchFilters, min_score: float, top_k: int) -> None:
    with st.container(key="results"):
        for note in response.notes:
            st.caption(f"Note: {note}")
        if not response.hits:
            narrowed = filters.categories or filters.brands or filters.min_price is not None or filters.max_price is not None or filters.in_stock_only
            hint = "remove some filters, " if narrowed else ""
            st.warning(
                f"**No good match.** Nothing in the shop scores above the match threshold ({min_score:.2f}) for this search. "
                f"Try another photo, {hint}or lower the threshold in the sidebar."
            )
            return
        st.subheader(f"{len(response.hits)} matching product{'s' if len(response.hits) != 1 else ''}")
        st.caption(f"Found in {response.took_ms:.0f} ms (reading your query: {response.embed_ms:.0f} ms)")
        product_grid(response.hits, "hit")
        if len(response.hits) >= top_k:
            st.button("Show more", on_click=_more, key="more")


def showcase(app: ShopLens) -> None:
    """A first look at the shop before any search: the first products of the catalog."""
    products = next(app.catalog.iter_products(batch_size=GRID_COLUMNS * 2), [])
    if not products:
        return
    st.subheader("In the shop")
    hits = [
        SearchHit(
            sku=p.sku, title=p.title, score=0.0, price=None if p.price is None else float(p.price), currency=p.currency,
            category=p.category, brand=p.brand, in_stock=p.in_stock, description=p.description,
            image=app.media.path(p.images[0].media_path) if p.images else None, image_source=None, attributes={},
        )
        for p in products
    ]
    for start in range(0, len(hits), GRID_COLUMNS):
        columns = st.columns(GRID_COLUMNS, gap="medium")
        for column, hit in zip(columns, hits[start : start + GRID_COLUMNS]):
            with column, st.container(border=True):
                state.show_product_image(hit.image)
                st.markdown(f"**{_escape(hit.title)}**")
                st.caption(state.format_price(hit.price, hit.currency))
                st.button("View product", key=f"show-{hit.sku}", on_click=_open_product, args=(hit.sku,), width="stretch")


def product_page(app: ShopLens, sku: str) -> None:
    st.button("← Back to results", on_click=_close_product, key="back")
    product = app.catalog.get_product(sku)
    if product is None:
        st.warning(f"There is no product with SKU {sku!r} in the shop (any more).")
        return
    images = [app.media.path(i.media_path) for i in product.images]
    left, right = st.columns([3, 2], gap="large")
    with left:
        if images:
            state.show_product_image(images[0], 720)
            if len(images) > 1:
                for column, path in zip(st.columns(min(len(images) - 1, 4)), images[1:5]):
                    with column:
                        state.show_product_image(path, 240)
                for path in images[5:]:
                    state.show_product_image(path, 240)
        else:
            state.show_product_image(None)
    with right:
        st.title(product.title)
        price = state.format_price(None if product.price is None else float(product.price), product.currency)
        st.subheader(price)
        st.markdown(":green[In stock]" if product.in_stock else ":red[Out of stock]")
        facts = [f for f in (product.category and f"Category: **{_escape(product.category)}**", product.brand and f"Brand: **{_escape(product.brand)}**") if f]
        if facts:
            st.markdown(" · ".join(facts))
        if product.description:
            st.write(product.description)
        attributes = {k: v for k, v in (product.attributes or {}).items() if str(v).strip()}
        st.caption(f"SKU {product.sku}")
        if attributes:
            lines = [f"- {_escape(k.replace('_', ' ').capitalize())}: **{_escape(str(v))}**" for k, v in attributes.items()]
            st.markdown("**Details**\n\n" + "\n".join(lines))
    st.subheader("More like this")
    try:
        similar = app.search.more_like_this(sku, top_k=GRID_COLUMNS * 2)
    except Exception as exc:
        st.error(state.friendly_error(exc))
        return
    if similar.hits:
        product_grid(similar.hits, "similar")
    else:
        st.caption("Nothing similar found.")


def footer(app: ShopLens, counts: dict[str, int]) -> None:
    st.divider()
    why = None
    try:
        embedder = app.embedder
        how = "chosen automatically" if app.settings.embedder == "auto" else "configured"
        if embedder.fallback_reason:
            how += ", as a fallback"
            why = f"Preferred models could not be loaded: {embedder.fallback_reason}"
        model = f"Search model: {embedder.identity.describe()} ({how})"
    except Exception as exc:
        model = "Search model unavailable"
        why = state.friendly_error(exc)
    st.caption(f"{model} · Catalog: {counts['products']:,} products, {counts['images']:,} photos", help=why)


def shop_page() -> None:
    _keep_search_state()
    app = state.app_or_stop()
    try:
        counts = app.catalog.counts()
        if counts["products"] == 0:
            st.title("ShopLens")
            st.info(
                "The shop's catalog is empty, so there is nothing to search yet. An admin can upload a catalog on the "
                "**Admin** page, or load the demo shop with `shoplens demo`."
            )
            footer(app, counts)
            return
        notice = st.container()  # filled last: the page shows before the search model has loaded
        filters, min_score = sidebar_filters(app)
        sku = st.query_params.get("sku")
        if sku:
            product_page(app, sku)
        else:
            search_page(app, filters, min_score)
        try:
            with st.spinner("Loading the search model (first visit only)…"):
                indexed = app.vectors.count()
        except Exception as exc:
            notice.error(state.friendly_error(exc))
            indexed = None
        footer(app, counts)
        if indexed == 0:
            notice.warning(
                f"The search index holds nothing for the current search model ({app.embedder.identity.describe()}), "
                "so searches find nothing. The model was probably changed after the catalog was loaded: an admin "
                "should run `shoplens reindex`."
            )
    except Exception as exc:  # never a traceback in front of a shopper
        st.error(state.friendly_error(exc))


def _escape(text: str) -> str:
    """Catalog text shown as Markdown: neutralise the characters Markdown would interpret."""
    for ch in "\\`*_{}[]<>#|~$":
        text = text.replace(ch, "\\" + ch)
    return text


STYLE = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 3rem; }
</style>"""


def main() -> None:
    st.set_page_config(page_title="ShopLens", page_icon="🔎", layout="wide")
    st.html(STYLE)
    pages = [
        st.Page(shop_page, title="Shop", icon=":material/storefront:", default=True),
        st.Page(Path(__file__).parent / "pages" / "admin.py", title="Admin", icon=":material/lock:", url_path="admin"),
    ]
    st.navigation(pages, position="top").run()


main()
