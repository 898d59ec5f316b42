"""The pages' languages: the gettext catalogs kept with Babel, the choice of a language, and
prices and numbers written as each language writes them. No server: these run in a moment, and
a string added to the pages without its Chinese translation fails here first."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import ROOT

UI = ROOT / "ui"
LOCALES = UI / "locales"
TRANSLATED = ["zh"]  # every language with a catalog of its own (English is the message ids)
GETTEXT = {"_", "N_", "ngettext"}  # the names the pages call gettext by
PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrs%]")


def extracted() -> dict[str, tuple[str, ...]]:
    """The messages of ui/ as `pybabel extract -F ui/babel.cfg` finds them: id -> all its forms."""
    found: dict[str, tuple[str, ...]] = {}
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(UI), method_map=[("**.py", "python")], keywords=DEFAULT_KEYWORDS
    ):
        forms = message if isinstance(message, tuple) else (message,)
        found[forms[0]] = forms
    return found


def catalog(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as fh:
        return read_po(fh, locale=locale)


def messages(cat: Catalog) -> dict[str, Message]:
    return {(m.id[0] if isinstance(m.id, tuple) else m.id): m for m in cat if m.id}


def placeholders(text: str) -> set[str]:
    """The named `{…}` fields and the printf directives of a message."""
    fields = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    return fields | {d for d in PRINTF.findall(text) if d != "%%"}


def test_every_gettext_call_in_the_pages_is_extracted() -> None:
    """pybabel's extractor skips calls it cannot read (one inside an f-string, say): every `_()`,
    `ngettext()` and `N_()` with a literal message must reach the template."""
    ids = set(extracted())
    calls = []
    for path in sorted(UI.glob("**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            first = node.args[0] if node.args else None
            if node.func.id in GETTEXT and isinstance(first, ast.Constant) and isinstance(first.value, str):
                calls.append((f"{path.name}:{node.lineno}", first.value))
    assert len(calls) > 150, calls  # the walk found the pages' messages
    assert [c for c in calls if c[1] not in ids] == []


def test_the_template_lists_the_messages_of_the_pages() -> None:
    """ui/locales/messages.pot is regenerated (`pybabel extract`) whenever the pages' words change."""
    template = messages(catalog(LOCALES / "messages.pot"))
    assert sorted(template) == sorted(extracted())


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_has_a_translation_with_the_same_placeholders(language: str) -> None:
    found = extracted()
    cat = catalog(LOCALES / language / "LC_MESSAGES" / "messages.po", locale=language)
    translated = messages(cat)
    missing = sorted(set(found) - set(translated))
    assert missing == [], f"run `pybabel update` and translate: {missing}"
    problems = []
    for msgid, forms in found.items():
        message = translated[msgid]
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.fuzzy or not all(s.strip() for s in strings):
            problems.append(f"untranslated or fuzzy: {msgid!r}")
            continue
        # one form in Chinese, standing for any count: it has the plural's fields
        expected = placeholders(forms[-1]) | (placeholders(forms[0]) if len(forms) == 1 else set())
        for text in strings:
            if placeholders(text) != expected:
                problems.append(f"{msgid!r}: {sorted(placeholders(text))} != {sorted(expected)}")
            elif "{" in forms[-1] or "{" in text:
                text.format(**dict.fromkeys(expected, "x"))  # no stray brace: .format() takes it
    assert problems == []
    assert [str(e) for _m, errors in cat.check() for e in errors] == []  # Babel's own checks


def test_pick_language() -> None:
    from ui.i18n import pick_language

    assert pick_language("auto", "zh-CN") == "zh"
    assert pick_language("auto", "zh-TW") == "zh"  # Chinese script, if not the regional one
    assert pick_language("auto", "zh") == "zh"
    assert pick_language("auto", "en-US") == "en"
    assert pick_language("auto", "fr-FR") == "en"  # no French: English
    assert pick_language("auto", None) == "en"  # no browser (tests, scripts)
    assert pick_language("en", "zh-CN") == "en"  # the setting wins over the browser
    assert pick_language("zh", "en-US") == "zh"
    assert pick_language("en", "en-US", requested="zh") == "zh"  # a `?lang=` link wins over both
    assert pick_language("zh", None, requested="de") == "zh"  # an unknown request is ignored


def test_prices_in_chinese_and_english() -> None:
    """Babel's rules for each locale: a Chinese shopper reads "¥" as yuan and sees "US$" for dollars."""
    from ui.state import format_price

    assert [format_price(18.99, c, locale="zh_CN") for c in ("CNY", "USD", "EUR")] == ["¥18.99", "US$18.99", "€18.99"]
    assert [format_price(18.99, c, locale="en_US") for c in ("CNY", "USD", "EUR")] == ["CN¥18.99", "$18.99", "€18.99"]
    assert format_price(18.99, "EUR", locale="de_DE") == "18,99\xa0€"
    assert format_price(1299, "CNY", locale="zh_CN") == "¥1,299.00"


def test_translator_compiles_the_catalog_once() -> None:
    from ui.i18n import translations, translator

    assert translator("zh")("Shop") == "商店"
    assert translator("en")("Shop") == "Shop"
    assert translations("zh") is translations("zh")  # compiled once per process
    assert translations("zh").ngettext("{count} photo", "{count} photos", 1).format(count=1) == "1 张照片"


def _language_page() -> None:
    """A page run: the language it picks, then a price, a count and a message as it shows them."""
    import streamlit as st

    from ui import i18n, state

    language = i18n.use_language("en")  # the setting says English; the URL may say otherwise
    st.text(language)
    st.text(state.format_price(18.99, "CNY"))
    st.text(i18n.number(12345))
    st.text(i18n._("Show more"))


@pytest.mark.parametrize(
    ("lang", "shown"),
    [
        (None, ["en", "CN¥18.99", "12,345", "Show more"]),
        ("zh", ["zh", "¥18.99", "12,345", "显示更多"]),
        ("auto", ["en", "CN¥18.99", "12,345", "Show more"]),  # no browser language here: the setting's
    ],
)
def test_a_page_run_follows_the_lang_query_parameter(lang: str | None, shown: list[str]) -> None:
    at = AppTest.from_function(_language_page)
    if lang is not None:
        at.query_params["lang"] = lang
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.text] == shown
