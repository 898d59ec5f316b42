"""The ShopLens storefront: find products by photo, by words, or both.

Run: `shoplens serve` (it starts these pages beside the server, with SHOPLENS_SERVER_URL set).
This is the entry file of a two-page app (Shop, Admin): it draws the app's own navigation on
every page, whichever URL a visit starts from. It only displays: every search, product and photo
comes from the server's HTTP API through `ShopLensClient`, so the pages hold no store, no model
and no business rule, and there is one way to search: through the server.

Phone first: a grid shows two cards a row on a phone and four on a wide screen (pairs of columns
that never wrap, in columns that do), and once a photo is chosen the search box shrinks to a
thumbnail, so the first results show without scrolling at 390 × 844.

Both pages speak the visitor's language, English or Chinese (ui/i18n.py: `SHOPLENS_UI_LANGUAGE`,
the browser's language, or `?lang=`): every word they show goes through `_()`, and prices and
counts are written by Babel for that language.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `streamlit run ui/storefront.py` puts only ui/ on the path
    sys.path.insert(0, str(_ROOT))

import streamlit as st

from server import schemas
from server.client import ShopLensClient
from services.images import PHOTO_SUFFIXES
from ui import i18n, state
from ui.i18n import _, ngettext, number

PHOTO_TYPES = sorted(s.lstrip(".") for s in PHOTO_SUFFIXES)
PAGE_SIZE = 12
GRID_COLUMNS = 4  # on a wide screen; two on a phone
PREVIEW_WIDTH = 72  # px: the shopper's photo, shown back as a thumbnail
KEPT_WIDGETS = ("query_text", "text_weight", "use_camera", "f_min_price", "f_max_price", "f_in_stock")
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
    """Keep the shopper's photo beyond its widget, then give the page a fresh, empty picker: the
    photo in use is the thumbnail shown back, never a file left in a picker (the product page
    does not draw the picker, and an emptied picker beside a photo in use would contradict it)."""
    upload = st.session_state.get(widget)
    if upload is None:
        return
    st.session_state["query_photo"] = (upload.name, upload.getvalue())
    st.session_state["photo_generation"] = st.session_state.get("photo_generation", 0) + 1
    _reset_paging()


def _clear_photo() -> None:
    st.session_state["query_photo"] = None
    st.session_state["photo_generation"] = st.session_state.get("photo_generation", 0) + 1  # fresh, empty widgets
    _reset_paging()


def _keep_search_state() -> None:
    """Streamlit forgets a widget's value on a run that does not draw it (the product page);
    writing the values back keeps the shopper's words, weight, camera choice and filters."""
    st.session_state.setdefault("text_weight", 0.5)
    for key in KEPT_WIDGETS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


# -- filters ----------------------------------------------------------------------------------------
def _chose(kind: str, widget: str) -> None:
    """A facet list changed: keep the choice under a key of its own (the list's widget is redrawn
    under a new key whenever its counts change, see `facet_select`)."""
    st.session_state[f"chosen_{kind}"] = list(st.session_state.get(widget) or [])
    _reset_paging()


def _threshold_moved() -> None:
    st.session_state["threshold_moved"] = True
    _reset_paging()


def _clear_filters() -> None:
    for kind in ("categories", "brands"):
        st.session_state[f"chosen_{kind}"] = []
    st.session_state["f_min_price"] = None
    st.session_state["f_max_price"] = None
    st.session_state["f_in_stock"] = False
    st.session_state["filters_generation"] = st.session_state.get("filters_generation", 0) + 1
    _reset_paging()


def facet_select(
    kind: str, label: str, options: list[str], counts: dict[str, int] | None, placeholder: str
) -> list[str]:
    """A multiselect of `options`, each with its product count ("Shoes (12)") when known.

    Streamlit stores a multiselect's choice as the labels shown, so a label whose count changes
    would drop out of the choice. The choice lives under `chosen_<kind>` instead, and the widget's
    key names its labels: new counts make a new widget, preset with the same choice."""
    chosen = [c for c in st.session_state.get(f"chosen_{kind}", []) if c in options]
    st.session_state[f"chosen_{kind}"] = chosen

    def label_of(option: str) -> str:
        return f"{option} ({number(counts.get(option, 0))})" if counts is not None else option  # absent: none left

    labels = "\n".join([str(st.session_state.get("filters_generation", 0)), *map(label_of, options)])
    widget = f"f_{kind}_{hashlib.blake2s(labels.encode(), digest_size=6).hexdigest()}"
    return st.sidebar.multiselect(
        label,
        options,
        default=chosen,
        format_func=label_of,
        key=widget,
        placeholder=placeholder,
        on_change=_chose,
        args=(kind, widget),
    )


def sidebar_filters(client: ShopLensClient, health: schemas.Health) -> tuple[schemas.Filters, float | None]:
    """Category and brand lists whose counts follow each other (the brands offered are those of
    the chosen categories, the categories those of the chosen brands), typed price bounds, stock,
    and the match threshold."""
    sb = st.sidebar
    sb.header(_("Filters"))
    facets = client.facets()
    in_stock = bool(st.session_state.get("f_in_stock", False))
    chosen_categories = [c for c in st.session_state.get("chosen_categories", []) if c in facets.categories]
    chosen_brands = [b for b in st.session_state.get("chosen_brands", []) if b in facets.brands]
    stamp = (health.counts.products, health.counts.images)
    low, high = st.session_state.get("f_min_price"), st.session_state.get("f_max_price")
    if low is not None and high is not None and low > high:
        low, high = high, low
    category_counts, brand_counts = state.facet_counts(
        client,
        stamp,
        schemas.Filters(
            category=chosen_categories, brand=chosen_brands, min_price=low, max_price=high, in_stock=in_stock
        ),
    )
    # only options with products left under the other filters (and those chosen)
    categories_offered = [c for c in facets.categories if category_counts.get(c) or c in chosen_categories]
    categories = facet_select("categories", _("Category"), categories_offered, category_counts, _("All categories"))
    brands_offered = [b for b in facets.brands if brand_counts.get(b) or b in chosen_brands]
    brands = facet_select("brands", _("Brand"), brands_offered, brand_counts, _("All brands"))
    min_price, max_price = price_inputs(facets)
    sb.checkbox(_("In stock only"), key="f_in_stock", on_change=_reset_paging)
    if categories or brands or min_price is not None or max_price is not None or in_stock:
        sb.button(_("Clear filters"), key="clear_filters", on_click=_clear_filters, type="tertiary")
    configured = state.current_settings().min_score  # None: the server's thresholds, calibrated on the catalog
    with sb.expander(_("Match threshold")):
        chosen_score = st.slider(
            _("Minimum match score"),
            0.0,
            1.0,
            float(min(max(configured or 0.0, 0.0), 1.0)),
            0.01,
            key="f_min_score",
            on_change=_threshold_moved,
            help=_("Results scoring below this are hidden. Raise it to see only close matches."),
        )
    min_score = chosen_score if configured is not None or st.session_state.get("threshold_moved") else None
    filters = schemas.Filters(
        category=categories,
        brand=brands,
        min_price=min_price,
        max_price=max_price,
        in_stock=bool(st.session_state.get("f_in_stock", False)),
    )
    return filters, min_score


def _price_box(column: Any, label: str, key: str, bound: int | None) -> float | None:
    """A typed price (empty: no bound), the shop's own bound as the placeholder."""
    with column:
        return st.number_input(
            label,
            min_value=0.0,
            value=None,
            step=1.0,
            format="%.2f",
            key=key,
            placeholder=number(bound) if bound is not None else _("any"),
            on_change=_reset_paging,
        )


def price_inputs(facets: schemas.Facets) -> tuple[float | None, float | None]:
    """Typed lowest and highest prices (empty: no bound), the shop's range as placeholders."""
    sb = st.sidebar
    symbol = state.currency_symbol(state.shop_currency())
    low = math.floor(facets.min_price) if facets.min_price is not None else None
    high = math.ceil(facets.max_price) if facets.max_price is not None else None
    left, right = sb.columns(2, gap="small")
    min_label = _("Min price ({symbol})").format(symbol=symbol) if symbol else _("Min price")
    max_label = _("Max price ({symbol})").format(symbol=symbol) if symbol else _("Max price")
    min_price = _price_box(left, min_label, "f_min_price", low)
    max_price = _price_box(right, max_label, "f_max_price", high)
    if min_price is not None and max_price is not None and min_price > max_price:
        sb.caption(_("The min price was above the max price: searching between the two."))
        min_price, max_price = max_price, min_price
    return min_price, max_price


def filter_summary(filters: schemas.Filters) -> str:
    """The filters in force, in a few words (on a phone the sidebar that holds them is folded)."""
    parts = [*filters.category, *filters.brand]
    currency = state.shop_currency()
    if filters.min_price is not None and filters.max_price is not None:
        parts.append(
            f"{state.format_price(filters.min_price, currency)}–{state.format_price(filters.max_price, currency)}"
        )
    elif filters.min_price is not None:
        parts.append(_("from {price}").format(price=state.format_price(filters.min_price, currency)))
    elif filters.max_price is not None:
        parts.append(_("up to {price}").format(price=state.format_price(filters.max_price, currency)))
    if filters.in_stock:
        parts.append(_("in stock"))
    return " · ".join(state.escape(p) for p in parts)


# -- page parts -----------------------------------------------------------------------------------
def photo_too_large(data: bytes) -> bool:
    """An early, friendly word about an oversize photo, before sending it. Only a courtesy: the
    server is the authority on what it takes (and answers 413 or 422 with its own message)."""
    limit = state.current_settings().max_image_bytes
    if len(data) <= limit:
        return False
    st.error(
        _("This photo is {size} MB; the limit is {limit} MB. Please use a smaller photo.").format(
            size=number(len(data) / 2**20, 1), limit=number(limit / 2**20)
        )
    )
    return True


def product_card(client: ShopLensClient, item: schemas.Hit | schemas.Product, key: str, score: bool = True) -> None:
    """A search hit (with its match score) or a catalog product, as one card of the grid."""
    with st.container(border=True, gap="xsmall", key=f"card-{key}"):
        state.show_product_image(client, item.image_url)
        st.markdown(f"**{state.escape(item.title)}**")
        stock = "" if item.in_stock else " · " + _("out of stock")
        line = f"{state.format_price(item.price, item.currency)}{stock}"
        if score and isinstance(item, schemas.Hit):
            line += "  \n" + _("match {score}").format(score=number(item.score, 2))
        st.caption(line)
        st.button(_("View product"), key=key, on_click=_open_product, args=(item.sku,), width="stretch")


def product_grid(
    client: ShopLensClient, items: list[schemas.Hit] | list[schemas.Product], key_prefix: str, score: bool = True
) -> None:
    """Cards in rows of four: two halves side by side that stack on a phone, each half a pair of
    columns that never wraps, so a phone shows two cards a row."""
    pair = GRID_COLUMNS // 2
    for start in range(0, len(items), GRID_COLUMNS):
        row = items[start : start + GRID_COLUMNS]
        for h, half in enumerate(st.columns(2, gap="small")):
            cards = row[h * pair : (h + 1) * pair]
            if not cards:
                break
            with half:
                for column, item in zip(st.columns(pair, gap="small", wrap=False), cards, strict=False):
                    with column:
                        product_card(client, item, f"{key_prefix}-{item.sku}", score)


def photo_inputs(generation: int, another: bool) -> None:
    """The photo pickers: a file (a phone offers its camera there too) or the camera widget."""
    settings = state.current_settings()
    if st.toggle(_("Use my camera"), key="use_camera", on_change=_reset_paging):
        st.camera_input(
            _("Take another photo") if another else _("Take a photo"),
            key=f"camera-{generation}",
            on_change=_photo_changed,
            args=(f"camera-{generation}",),
        )
    else:
        limit = max(1, math.ceil(settings.max_image_bytes / 2**20))
        state.uploader_words(f"photo-{generation}", PHOTO_TYPES, limit)
        st.file_uploader(
            (_("Another photo ({formats})") if another else _("Upload a photo ({formats})")).format(
                formats=state.photo_formats()
            ),
            type=PHOTO_TYPES,
            key=f"photo-{generation}",
            on_change=_photo_changed,
            args=(f"photo-{generation}",),
            max_upload_size=limit,
        )


def photo_preview(photo: tuple[str, bytes], usable: bool) -> None:
    """The photo in use, small, with the way to drop it; a photo the server refused is named only."""
    with st.container(horizontal=True, vertical_alignment="center", gap="small", key="preview"):
        if usable:
            st.image(photo[1], width=PREVIEW_WIDTH)
        with st.container(gap="xxsmall", width="content"):
            st.caption((_("Your photo") if usable else _("Not usable")) + f" · {state.escape(photo[0])}")
            st.button(_("Clear photo"), on_click=_clear_photo, key="clear_photo", type="tertiary")


def search_page(client: ShopLensClient, filters: schemas.Filters, min_score: float | None) -> None:
    photo: tuple[str, bytes] | None = st.session_state.get("query_photo")
    text = str(st.session_state.get("query_text", "")).strip()
    if photo is None and not text:
        st.caption(
            _("Snap or upload a photo of something you like and find it in the shop. Add words to steer the search.")
        )
    generation = st.session_state.get("photo_generation", 0)
    chosen = photo
    with st.container(border=True, key="search_box"):
        if photo is None:
            photo_col, text_col = st.columns(2, gap="medium")
            with photo_col:
                photo_inputs(generation, another=False)
        else:
            preview_col, text_col = st.columns([1, 2], gap="medium")
            with preview_col:
                preview = st.container()  # filled once the server has taken the photo, or refused it
                with st.expander(_("Use another photo")):
                    photo_inputs(generation, another=True)
        with text_col:
            text = st.text_input(
                _("Describe it (optional)"),
                key="query_text",
                on_change=_reset_paging,
                placeholder=_("e.g. red running shoes, or with a photo: in blue"),
            ).strip()
        if photo is not None and photo_too_large(photo[1]):
            photo = None
        weight = 0.5
        if photo is not None and text:
            with text_col:
                weight = st.slider(
                    _("Like this photo, but …"),
                    0.0,
                    1.0,
                    step=0.05,
                    key="text_weight",
                    help=_("Left: only the photo counts. Right: only your words count."),
                )
                st.caption(_("← more like the photo · more like the words →"))
    if photo is None and not text:
        if chosen is None:
            st.info(_("Upload a photo (or type a few words) to see matching products."))
        else:  # too large to send
            with preview:
                photo_preview(chosen, usable=False)
        showcase(client)
        return
    top_k = min(st.session_state.get("top_k", PAGE_SIZE), schemas.MAX_TOP_K)
    query = schemas.SearchQuery(
        **filters.model_dump(), text=text or None, weight=weight, top_k=top_k, min_score=min_score
    )
    try:
        with st.spinner(_("Searching…")):
            result = client.search(query, photo[1] if photo else None, photo[0] if photo else "photo.jpg")
    except Exception as exc:
        if chosen is not None:
            with preview:
                photo_preview(chosen, usable=photo is not None and getattr(exc, "code", None) != BAD_IMAGE)
        st.error(_search_error(exc))
        return
    if chosen is not None:
        with preview:
            photo_preview(chosen, usable=photo is not None)
    show_results(client, result, filters, min_score, top_k)


def _search_error(exc: BaseException) -> str:
    message = state.friendly_error(exc)
    if getattr(exc, "code", None) == BAD_IMAGE:
        message += " " + _("Please upload a {formats} photo.").format(formats=state.photo_formats())
    return message


def show_results(
    client: ShopLensClient,
    result: schemas.SearchResult,
    filters: schemas.Filters,
    min_score: float | None,
    top_k: int,
) -> None:
    with st.container(key="results", gap="small"):
        if "text->text" in result.kinds and "text->image" not in result.kinds:
            # the page's own words for the server's note (the API's `notes` are English), from what
            # the score is made of: words were matched against product texts only
            st.caption(
                _(
                    "Note: this search model has no shared photo–text space, so words are matched against "
                    "product titles and descriptions, not against photos."
                )
            )
        narrowed = filter_summary(filters)
        if not result.hits:
            if min_score is not None:
                nothing = _(
                    "**No good match.** Nothing in the shop scores above the match threshold ({threshold}) for this "
                    "search."
                ).format(threshold=number(min_score, 2))
            else:
                nothing = _(
                    "**No good match.** Nothing in the shop scores above the shop's match threshold for this search."
                )
            if narrowed:
                hint = _("Try another photo, remove some filters, or lower the threshold in the sidebar.")
            else:
                hint = _("Try another photo, or lower the threshold in the sidebar.")
            st.warning(f"{nothing} {hint}")
            if result.closest:  # shown apart, as what they are: the nearest, not matches
                st.subheader(_("Closest in the shop (not good matches)"), anchor=False)
                product_grid(client, result.closest, "closest")
            return
        count = len(result.hits)
        with st.container(horizontal=True, vertical_alignment="bottom", gap="small", key="results_head"):
            st.subheader(
                ngettext("{count} matching product", "{count} matching products", count).format(count=number(count)),
                anchor=False,
                width="content",
            )
            took = _("in {ms} ms").format(ms=number(result.took_ms))
            st.caption(took + (f" · {narrowed}" if narrowed else ""), width="content")
        product_grid(client, result.hits, "hit")
        if count >= top_k and top_k < schemas.MAX_TOP_K:
            st.button(_("Show more"), on_click=_more, key="more")


def showcase(client: ShopLensClient) -> None:
    """A first look at the shop before any search: the first products of the catalog."""
    try:
        page = client.products(limit=GRID_COLUMNS * 2)
    except Exception as exc:
        st.error(state.friendly_error(exc))
        return
    if page.products:
        st.subheader(_("In the shop"), anchor=False)
        product_grid(client, page.products, "show", score=False)


def product_page(client: ShopLensClient, sku: str) -> None:
    st.button(_("← Back to results"), on_click=_close_product, key="back", type="tertiary")
    product = state.product_or_explain(
        client, sku, st.warning, _("There is no product with SKU {sku} in the shop (any more).").format(sku=repr(sku))
    )
    if product is None:
        return
    images = [i.url for i in product.images]
    left, right = st.columns([3, 2], gap="large")
    with left:
        state.show_product_image(client, images[0] if images else None, 720)
        if len(images) > 1:
            for column, url in zip(st.columns(min(len(images) - 1, 4), wrap=False), images[1:5], strict=False):
                with column:
                    state.show_product_image(client, url, 240)
            for url in images[5:]:
                state.show_product_image(client, url, 240)
    with right:
        st.title(product.title, anchor=False)
        st.subheader(state.format_price(product.price, product.currency), anchor=False)
        st.markdown(":green[" + _("In stock") + "]" if product.in_stock else ":red[" + _("Out of stock") + "]")
        facts = [
            f
            for f in (
                product.category and _("Category: **{category}**").format(category=state.escape(product.category)),
                product.brand and _("Brand: **{brand}**").format(brand=state.escape(product.brand)),
            )
            if f
        ]
        if facts:
            st.markdown(" · ".join(facts))
        if product.description:
            st.write(product.description)
        attributes = {k: v for k, v in product.attributes.items() if str(v).strip()}
        st.caption(_("SKU {sku}").format(sku=product.sku))
        if attributes:
            lines = [
                f"- {state.escape(k.replace('_', ' ').capitalize())}: **{state.escape(str(v))}**"
                for k, v in attributes.items()
            ]
            st.markdown("**" + _("Details") + "**\n\n" + "\n".join(lines))
    st.subheader(_("More like this"), anchor=False)
    try:
        similar = client.similar(sku, top_k=GRID_COLUMNS * 2)
    except Exception as exc:
        st.error(state.friendly_error(exc))
        return
    if similar.hits:
        product_grid(client, similar.hits, "similar")
    else:
        st.caption(_("Nothing similar found."))


def footer(health: schemas.Health) -> None:
    """The search model and the catalog's size, as the server reports them."""
    st.divider()
    model = health.embedder
    if not health.model_loaded:
        model = _("{model} (loading…)").format(model=model)
    elif health.fallback_reason:
        model = _("{model} (a fallback)").format(model=model)
    why = None
    if health.fallback_reason:
        why = _("Preferred models could not be loaded: {reason}").format(reason=health.fallback_reason)
    st.caption(_("Search model: {model}").format(model=model) + " · " + state.catalog_size(health.counts), help=why)


def shop_page() -> None:
    _keep_search_state()
    client, health = state.server_or_stop()
    try:
        if health.counts.products == 0:
            st.info(
                _(
                    "The shop's catalog is empty, so there is nothing to search yet. An admin can upload a catalog "
                    "on the **Admin** page, or load the demo shop with `shoplens demo`."
                )
            )
            footer(health)
            return
        if health.vectors == 0:
            st.warning(
                _(
                    "The search index holds nothing for the current search model ({model}), so searches find "
                    "nothing. The model was probably changed after the catalog was loaded: an admin should run "
                    "`shoplens reindex`."
                ).format(model=health.embedder)
            )
        filters, min_score = sidebar_filters(client, health)
        sku = st.query_params.get("sku")
        if sku:
            product_page(client, sku)
        else:
            search_page(client, filters, min_score)
        footer(health)
    except Exception as exc:  # never a traceback in front of a shopper
        st.error(state.friendly_error(exc))


# The content starts below Streamlit's 60 px header bar; phones get narrower margins and tighter
# cards; the price boxes in the sidebar are typed into, so they lose their +/- steppers (and fit
# side by side).
STYLE = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 4rem; }
.st-key-brand p { font-size: 1.5rem; font-weight: 700; margin: 0; line-height: 2.25rem; white-space: nowrap; }
[data-testid="stSidebar"] [data-testid="stNumberInputStepDown"],
[data-testid="stSidebar"] [data-testid="stNumberInputStepUp"] { display: none; }
@media (max-width: 640px) {
  [data-testid="stMainBlockContainer"] { padding-left: 0.75rem; padding-right: 0.75rem; }
  [class*="st-key-card-"] { padding: 0.5rem; }
  [class*="st-key-card-"] [data-testid="stMarkdownContainer"] p { font-size: 0.875rem; }
  .st-key-brand p { font-size: 1.25rem; line-height: 2rem; }
  [data-testid="stMainBlockContainer"] h1 { font-size: 1.875rem; }
}
</style>"""


def top_bar(pages: list[st.Page]) -> None:
    """The app's own navigation, the same on every page and every width (Streamlit's folds into
    the sidebar on a phone): the shop's name, then a link to each page."""
    with st.container(horizontal=True, vertical_alignment="center", horizontal_alignment="distribute", key="topbar"):
        with st.container(width="content", key="brand"):
            st.markdown(":material/image_search: ShopLens")
        with st.container(horizontal=True, width="content", gap="xsmall", key="nav"):
            for page in pages:
                st.page_link(page)


def main() -> None:
    i18n.use_language()
    st.set_page_config(page_title="ShopLens", page_icon="🔎", layout="wide")
    st.html(STYLE)
    state.streamlit_words()
    pages = [
        st.Page(shop_page, title=_("Shop"), icon=":material/storefront:", default=True),
        st.Page(Path(__file__).parent / "admin.py", title=_("Admin"), icon=":material/lock:", url_path="admin"),
    ]
    current = st.navigation(pages, position="hidden")
    top_bar(pages)
    current.run()


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
