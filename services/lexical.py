"""What the lexical side of search sees of a product and of a query.

Semantic vectors find "a comfy chair" but not "CH00001-12": shoppers and shop staff type
exact codes, brands and model numbers. Each product's text point carries two payload fields the
vector store indexes: `lexical` (a BM25-ranked full-text index over SKU, title, brand, category,
attributes and description) and `codes` (a keyword index of its identifiers, compacted so that
"ch00001 12", "CH0000112" and "ch00001-12" are the same code).

Both backends tokenize `lexical` with their default word tokenizer (lower case, split on
non-word characters), the one tokenization qdrant-client's embedded mode can rank. Chinese and
Japanese have no spaces between words, so runs of CJK characters are written out here as their
single characters and pairs of neighbours, on both sides alike: "沙发套" → "沙 发 套 沙发 发套".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

# Attribute names whose values identify a product (Google Merchant Center's and the platforms' names).
IDENTIFIER_ATTRIBUTES = frozenset(
    {"gtin", "ean", "upc", "isbn", "jan", "mpn", "model", "model_number", "barcode", "item_group_id", "variant_skus"}
)
MAX_LEXICAL_CHARS = 4000  # a long description adds little to BM25 beyond its start
MIN_CODE_CHARS = 3  # shorter "codes" (a size "M", a year) would match too much

# Words too common to say what a shopper wants: left out of lexical queries and of "every word" matches.
STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were will with "
    "i me my we our you your he she they them his her their what which who whom how where when why "
    "do does did not no yes so if than then there these those very can just some any all".split()
)
_WORD = re.compile(r"\w+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
_SEPARATORS = re.compile(r"[\s\-_./\\:,;|#]+")


def compact_code(text: str) -> str:
    """An identifier as a shopper may type it: case, spaces, dashes, dots and slashes do not count."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if ch.isalnum())


def has_cjk(text: str | None) -> bool:
    """Whether a query is written (partly) in Chinese, Japanese or Korean characters."""
    return text is not None and _CJK.search(text) is not None


def cjk_grams(text: str) -> str:
    """`text` with each run of CJK characters written as its characters and neighbour pairs."""

    def grams(match: re.Match[str]) -> str:
        run = match.group(0)
        pairs = [run[i : i + 2] for i in range(len(run) - 1)]
        return " " + " ".join([*run, *pairs]) + " "

    return _CJK.sub(grams, unicodedata.normalize("NFKC", text))


def product_codes(sku: str, attributes: Mapping[str, Any] | None) -> list[str]:
    """The compacted identifiers of a product: its SKU and identifier attributes (GTIN, MPN, …);
    a list attribute (variant SKUs) gives one code per entry."""
    values: list[str] = [sku]
    for key, value in (attributes or {}).items():
        if str(key).strip().lower().replace(" ", "_") in IDENTIFIER_ATTRIBUTES:
            values.extend(_parts(value))
    codes = {compact_code(v) for v in values}
    return sorted(c for c in codes if len(c) >= MIN_CODE_CHARS)


def lexical_text(
    sku: str,
    title: str,
    brand: str | None,
    category: str | None,
    attributes: Mapping[str, Any] | None,
    description: str,
) -> str:
    """The document BM25 ranks: fields a shopper names first, identifiers also in compact form
    (so "ch0000112" finds "CH00001-12" even without the exact-code rule)."""
    fields = [sku, title, brand or "", category or ""]
    fields += [v for value in (attributes or {}).values() for v in _parts(value)]
    fields += product_codes(sku, attributes)
    fields.append(description[:MAX_LEXICAL_CHARS])
    return cjk_grams(" ".join(f for f in fields if f))


def lexical_query(text: str) -> str:
    """The query BM25 ranks with: its words but stopwords, plus the whole query compacted (a code
    typed with spaces: "ch00001 12" → "ch0000112")."""
    words = [w for w in _WORD.findall(cjk_grams(text).casefold()) if w not in STOPWORDS]
    compact = compact_code(text)
    if len(compact) >= MIN_CODE_CHARS and compact not in words and " " in text.strip():
        words.append(compact)
    return " ".join(words)


def query_terms(text: str) -> frozenset[str]:
    """The words a product must all hold to match a query on words alone: its words but
    stopwords, and for Chinese or Japanese the pairs of neighbouring characters (a single
    character where it stands alone)."""
    terms: set[str] = set()
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).casefold()):
        if word in STOPWORDS:
            continue
        runs = _CJK.findall(word)
        rest = _CJK.sub(" ", word).split()
        terms.update(rest)
        for run in runs:
            terms.update([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return frozenset(terms)


def document_words(lexical: str) -> frozenset[str]:
    """The words of a product's `lexical` field, as `query_terms` compares them."""
    return frozenset(_WORD.findall(lexical.casefold()))


def query_codes(text: str) -> list[str]:
    """The codes a query may be: the whole query compacted, and each of its space-separated
    pieces (a shopper pasting "CH00001-12 sofa")."""
    pieces = [text, *_SEPARATORS.split(text.strip())] if " " in text.strip() else [text]
    codes = {compact_code(p) for p in pieces}
    return sorted(c for c in codes if len(c) >= MIN_CODE_CHARS and any(ch.isdigit() for ch in c))


def _parts(value: Any) -> Iterable[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    if value is None:
        return []
    text = str(value)
    if text.startswith("[") and text.endswith("]"):  # a list stored as JSON text by the readers
        import json

        try:
            items = json.loads(text)
        except ValueError:
            return [text]
        if isinstance(items, list):
            return [str(v) for v in items if v is not None and not isinstance(v, (dict, list))]
    return [text]
