"""The pages' language, English or Simplified Chinese, from gettext catalogs kept with Babel.

gettext, because translators then work with the tools of their trade (`pybabel update`, Poedit,
Weblate) and the English text in the code stays the message id, so the code reads as before.
A catalog is compiled from its .po file the first time a process needs it (milliseconds), so no
generated .mo file sits in the repository, where it could go stale.

A shopper's language is decided at the start of every page run (`use_language`), for that browser
session only: a `?lang=` in the URL (a shared link), else `SHOPLENS_UI_LANGUAGE`, whose `auto`
follows the browser. Every `_()` then reads it from the session, since Streamlit serves many
sessions, each in its own thread, from one process.
"""

from __future__ import annotations

import gettext
import io
import logging
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Literal, cast, get_args

import streamlit as st
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations
from streamlit.runtime.scriptrunner import get_script_run_ctx

from services.settings import Settings

log = logging.getLogger("shoplens.ui")
Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = get_args(Language)
SOURCE_LANGUAGE: Language = "en"  # the message ids are English: English needs no catalog
LOCALES = Path(__file__).resolve().parent / "locales"
DOMAIN = "messages"
# the Babel locale of each language: how its prices and numbers are written
BABEL_LOCALES: dict[Language, str] = {"en": "en_US", "zh": "zh_CN"}
SESSION_KEY = "ui_language"  # this session's language, set at the start of each run
REQUESTED_KEY = "ui_language_requested"  # a `?lang=` seen once, kept when a link drops it
QUERY_PARAM = "lang"


def pick_language(setting: str, browser_locale: str | None, requested: str | None = None) -> Language:
    """The language to show: one asked for in the URL, else the setting, and for `auto` the
    browser's (Chinese for any `zh…` locale, English otherwise: the one language every shopper
    of an English-first shop can be assumed to read)."""
    for choice in (requested, setting):
        if choice in LANGUAGES:
            return cast(Language, choice)
    return "zh" if (browser_locale or "").strip().lower().startswith("zh") else "en"


@cache
def translations(language: Language) -> gettext.NullTranslations:
    """The language's catalog, compiled once per process from its .po file (about 2 ms; fuzzy
    entries are left out: a guessed translation shows the English until a translator confirms it)."""
    if language == SOURCE_LANGUAGE:
        return gettext.NullTranslations()
    path = LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    try:
        with path.open("rb") as fh:
            catalog = read_po(fh, locale=language, domain=DOMAIN)
    except OSError as exc:  # an install without the catalogs (a wheel without package data): English
        log.warning("no %s catalog (%s): the pages show English", language, exc)
        return gettext.NullTranslations()
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def translator(language: Language) -> Callable[[str], str]:
    """The gettext function of a language, for code that knows the language it wants."""
    return translations(language).gettext


def current_language() -> Language:
    """This session's language; English outside a page run (the pages' helpers called by tests
    or scripts), where there is no session to ask."""
    if get_script_run_ctx(suppress_warning=True) is None:
        return SOURCE_LANGUAGE
    language = st.session_state.get(SESSION_KEY)
    return cast(Language, language) if language in LANGUAGES else SOURCE_LANGUAGE


def use_language(setting: str | None = None) -> Language:
    """Decide this run's language (the first thing every page does): `?lang=zh` or `?lang=en`
    wins and is remembered for the session (`?lang=auto` forgets it), then `setting` (default:
    `SHOPLENS_UI_LANGUAGE`), then the browser's language."""
    asked = st.query_params.get(QUERY_PARAM)
    if asked in LANGUAGES:
        st.session_state[REQUESTED_KEY] = asked
    elif asked == "auto":
        st.session_state.pop(REQUESTED_KEY, None)
    language = pick_language(setting or Settings().ui_language, browser_locale(), st.session_state.get(REQUESTED_KEY))
    st.session_state[SESSION_KEY] = language
    return language


def browser_locale() -> str | None:
    """The browser's language (`navigator.language`, e.g. "zh-CN"); None where there is no
    browser (Streamlit's AppTest)."""
    try:
        return st.context.locale
    except Exception:  # no browser context to read it from
        return None


def babel_locale() -> str:
    """The Babel locale this session's prices and numbers are written in."""
    return BABEL_LOCALES[current_language()]


def _(message: str) -> str:
    """`message` (English, the message id) in this session's language."""
    return translations(current_language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural message for `n`, in this session's language (Chinese has one form)."""
    return translations(current_language()).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks a message kept in a constant for extraction; `_()` translates it where it is shown."""
    return message


def number(value: float, decimals: int = 0) -> str:
    """A count or measure with the locale's digit grouping and decimal sign ("1,234", "2.5")."""
    pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
    return format_decimal(value, format=pattern, locale=babel_locale())
