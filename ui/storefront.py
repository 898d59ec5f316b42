"""The ShopLens storefront: find products by photo, by words, or both.

Run: `shoplens serve` (it starts these pages beside the server, with SHOPLENS_SERVER_URL set).
This is the entry file of a two-page app (Shop, Admin). It only displays: every search, product
and photo comes from the server's HTTP API through `ShopLensClient`, so the pages hold no store,
no model and no business rule, and there is one way to search: through the server.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `streamlit run ui/storefront.py` puts only ui/ on the path
    sys.path.insert(0, str(_ROOT))

import streamlit as st

from server import schemas
from server.client import ShopLensClient
from services.images import PHOTO_SUFFIXES, format_labels
from ui import state

PHOTO_TYPES = sorted(s.lstrip(".") for s in PHOTO_SUFFIXES)
PAGE_SIZE = 12
GRID_COLUMNS = 4
KEPT_WIDGETS = ("query_text", "text_weight", "use_camera")
BAD_IMAGE = "bad_image"  # the server's code for a photo it cannot use (services.images.ImageError)


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
def sidebar_filters(client: ShopLensClient) -> tuple[schemas.Filters, float]:
    """Filters from the server's facets; the brands offered are those of the chosen categories."""
    facets = client.facets()
    sb = st.sidebar
    sb.header("Filters")
    categories = sb.multiselect(
        "Category", facets.categories, key="f_categories", placeholder="All categories", on_change=_reset_paging
    )
    brands_offered = client.facets(categories).brands if categories else facets.brands
    brands = sb.multiselect("Brand", brands_offered, key="f_brands", placeholder="All brands", on_change=_reset_paging)
    min_price = max_price = None
    if facets.min_price is not None and facets.max_price is not None and facets.max_price > facets.min_price:
        low, high = float(math.floor(facets.min_price)), float(math.ceil(facets.max_price))
        chosen = sb.slider(
            "Price",
            low,
            high,
            (low, high),
            step=1.0 if high - low >= 10 else 0.5,
            key="f_price",
            on_change=_reset_paging,
        )
        if chosen[0] > low:
            min_price = chosen[0]
        if chosen[1] < high:
            max_price = chosen[1]
    in_stock = sb.checkbox("In stock only", key="f_in_stock", on_change=_reset_paging)
    with sb.expander("Match threshold"):
        min_score = st.slider(
            "Minimum match score",
            0.0,
            1.0,
            float(min(max(state.current_settings().min_score, 0.0), 1.0)),
            0.01,
            key="f_min_score",
            help="Results scoring below this are hidden. Raise it to see only close matches.",
        )
    filters = schemas.Filters(
        category=categories, brand=brands, min_price=min_price, max_price=max_price, in_stock=in_stock
    )
    return filters, min_score


def photo_too_large(data: bytes) -> bool:
    """An early, friendly word about an oversize photo, before sending it. Only a courtesy: the
    server is the authority on what it takes (and answers 413 or 422 with its own message)."""
    limit = state.current_settings().max_image_bytes
    if len(data) <= limit:
        return False
    st.error(
        f"This photo is {len(data) / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB. Please use a smaller photo."
    )
    return True


def product_card(client: ShopLensClient, item: schemas.Hit | schemas.Product, key: str, score: bool = True) -> None:
    """A search hit (with its match score) or a catalog product, as one card of the grid."""
    with st.container(border=True):
        state.show_product_image(client, item.image_url)
        st.markdown(f"**{state.escape(item.title)}**")
        stock = "" if item.in_stock else " · out of stock"
        line = f"{state.format_price(item.price, item.currency)}{stock}"
        if score and isinstance(item, schemas.Hit):
            line += f"  \nmatch score {item.score:.2f}"
        st.caption(line)
        st.button("View product", key=key, on_click=_open_product, args=(item.sku,), width="stretch")


def product_grid(
    client: ShopLensClient, items: list[schemas.Hit] | list[schemas.Product], key_prefix: str, score: bool = True
) -> None:
    for start in range(0, len(items), GRID_COLUMNS):
        columns = st.columns(GRID_COLUMNS, gap="medium")
        for column, item in zip(columns, items[start : start + GRID_COLUMNS], strict=False):
            with column:
                product_card(client, item, f"{key_prefix}-{item.sku}", score)


def search_page(client: ShopLensClient, filters: schemas.Filters, min_score: float) -> None:
    st.title("ShopLens")
    st.caption("Snap or upload a photo of something you like and find it in the shop. Add words to steer the search.")
    settings = state.current_settings()
    with st.container(border=True):
        photo_col, text_col, preview_col = st.columns([3, 3, 1.4], gap="large")
        generation = st.session_state.get("photo_generation", 0)
        with photo_col:
            if st.toggle("Use my camera", key="use_camera", on_change=_reset_paging):
                st.camera_input(
                    "Take a photo", key=f"camera-{generation}", on_change=_photo_changed, args=(f"camera-{generation}",)
                )
            else:
                st.file_uploader(
                    f"Upload a photo ({format_labels(photo=True)})",
                    type=PHOTO_TYPES,
                    key=f"photo-{generation}",
                    on_change=_photo_changed,
                    args=(f"photo-{generation}",),
                    max_upload_size=max(1, math.ceil(settings.max_image_bytes / 2**20)),
                )
        with text_col:
            text = st.text_input(
                "Describe it (optional)",
                key="query_text",
                on_change=_reset_paging,
                placeholder="e.g. red running shoes, or with a photo: in blue",
            ).strip()
        photo: tuple[str, bytes] | None = st.session_state.get("query_photo")
        if photo is not None and photo_too_large(photo[1]):
            photo = None
        weight = 0.5
        if photo is not None and text:
            with text_col:
                weight = st.slider(
                    "Like this photo, but …",
                    0.0,
                    1.0,
                    step=0.05,
                    key="text_weight",
                    help="Left: only the photo counts. Right: only your words count.",
                )
                st.caption("← more like the photo · more like the words →")
    if photo is None and not text:
        if st.session_state.get("query_photo") is None:
            st.info("Upload a photo (or type a few words) to see matching products.")
        showcase(client)
        return
    top_k = min(st.session_state.get("top_k", PAGE_SIZE), schemas.MAX_TOP_K)
    query = schemas.SearchQuery(
        **filters.model_dump(), text=text or None, weight=weight, top_k=top_k, min_score=min_score
    )
    try:
        with st.spinner("Searching…"):
            result = client.search(query, photo[1] if photo else None, photo[0] if photo else "photo.jpg")
    except Exception as exc:
        st.error(_search_error(exc))
        return
    if photo is not None:  # shown back once the server has accepted it as a photo
        with preview_col:
            st.image(photo[1], caption="Your photo", width="stretch")
            st.button("Clear photo", on_click=_clear_photo, key="clear_photo", type="tertiary")
    show_results(client, result, filters, min_score, top_k)


def _search_error(exc: BaseException) -> str:
    message = state.friendly_error(exc)
    if getattr(exc, "code", None) == BAD_IMAGE:
        message += f" Please upload a {format_labels(photo=True)} photo."
    return message


def show_results(
    client: ShopLensClient, result: schemas.SearchResult, filters: schemas.Filters, min_score: float, top_k: int
) -> None:
    with st.container(key="results"):
        for note in result.notes:
            st.caption(f"Note: {note}")
        if not result.hits:
            narrowed = (
                filters.category
                or filters.brand
                or filters.min_price is not None
                or filters.max_price is not None
                or filters.in_stock
            )
            hint = "remove some filters, " if narrowed else ""
            st.warning(
                f"**No good match.** Nothing in the shop scores above the match threshold ({min_score:.2f}) for "
                "this search. "
                f"Try another photo, {hint}or lower the threshold in the sidebar."
            )
            return
        st.subheader(f"{len(result.hits)} matching product{'s' if len(result.hits) != 1 else ''}")
        st.caption(f"Found in {result.took_ms:.0f} ms (reading your query: {result.embed_ms:.0f} ms)")
        product_grid(client, result.hits, "hit")
        if len(result.hits) >= top_k and top_k < schemas.MAX_TOP_K:
            st.button("Show more", on_click=_more, key="more")


def showcase(client: ShopLensClient) -> None:
    """A first look at the shop before any search: the first products of the catalog."""
    try:
        page = client.products(limit=GRID_COLUMNS * 2)
    except Exception as exc:
        st.error(state.friendly_error(exc))
        return
    if page.products:
        st.subheader("In the shop")
        product_grid(client, page.products, "show", score=False)


def product_page(client: ShopLensClient, sku: str) -> None:
    st.button("← Back to results", on_click=_close_product, key="back")
    product = state.product_or_explain(
        client, sku, st.warning, f"There is no product with SKU {sku!r} in the shop (any more)."
    )
    if product is None:
        return
    images = [i.url for i in product.images]
    left, right = st.columns([3, 2], gap="large")
    with left:
        state.show_product_image(client, images[0] if images else None, 720)
        if len(images) > 1:
            for column, url in zip(st.columns(min(len(images) - 1, 4)), images[1:5], strict=False):
                with column:
                    state.show_product_image(client, url, 240)
            for url in images[5:]:
                state.show_product_image(client, url, 240)
    with right:
        st.title(product.title)
        st.subheader(state.format_price(product.price, product.currency))
        st.markdown(":green[In stock]" if product.in_stock else ":red[Out of stock]")
        facts = [
            f
            for f in (
                product.category and f"Category: **{state.escape(product.category)}**",
                product.brand and f"Brand: **{state.escape(product.brand)}**",
            )
            if f
        ]
        if facts:
            st.markdown(" · ".join(facts))
        if product.description:
            st.write(product.description)
        attributes = {k: v for k, v in product.attributes.items() if str(v).strip()}
        st.caption(f"SKU {product.sku}")
        if attributes:
            lines = [
                f"- {state.escape(k.replace('_', ' ').capitalize())}: **{state.escape(str(v))}**"
                for k, v in attributes.items()
            ]
            st.markdown("**Details**\n\n" + "\n".join(lines))
    st.subheader("More like this")
    try:
        similar = client.similar(sku, top_k=GRID_COLUMNS * 2)
    except Exception as exc:
        st.error(state.friendly_error(exc))
        return
    if similar.hits:
        product_grid(client, similar.hits, "similar")
    else:
        st.caption("Nothing similar found.")


def footer(health: schemas.Health) -> None:
    """The search model and the catalog's size, as the server reports them."""
    st.divider()
    how = ""
    if not health.model_loaded:
        how = " (loading…)"
    elif health.fallback_reason:
        how = " (a fallback)"
    why = f"Preferred models could not be loaded: {health.fallback_reason}" if health.fallback_reason else None
    counts = health.counts
    st.caption(
        f"Search model: {health.embedder}{how} · Catalog: {counts.products:,} products, {counts.images:,} photos",
        help=why,
    )


def shop_page() -> None:
    _keep_search_state()
    client, health = state.server_or_stop()
    try:
        if health.counts.products == 0:
            st.title("ShopLens")
            st.info(
                "The shop's catalog is empty, so there is nothing to search yet. An admin can upload a catalog on the "
                "**Admin** page, or load the demo shop with `shoplens demo`."
            )
            footer(health)
            return
        if health.vectors == 0:
            st.warning(
                f"The search index holds nothing for the current search model ({health.embedder}), so searches find "
                "nothing. The model was probably changed after the catalog was loaded: an admin should run "
                "`shoplens reindex`."
            )
        filters, min_score = sidebar_filters(client)
        sku = st.query_params.get("sku")
        if sku:
            product_page(client, sku)
        else:
            search_page(client, filters, min_score)
        footer(health)
    except Exception as exc:  # never a traceback in front of a shopper
        st.error(state.friendly_error(exc))


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
