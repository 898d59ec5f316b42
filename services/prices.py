"""How many decimals a price has: one rule for reading catalogs and for showing prices.

A currency's minor units come from ISO 4217 as CLDR (Babel) knows them: 2 for EUR, 3 for KWD,
0 for JPY. Ingest keeps a price without a currency to 2 decimals, or 3 when it was written so;
the CLI and the pages show it the same way, so 0.005 is never shown as 0.01.
"""

from __future__ import annotations

from babel.numbers import get_currency_precision, is_currency


def minor_units(code: str | None) -> int | None:
    """The currency's minor digits; None for no or an unknown code."""
    if not code or not is_currency(code.upper()):
        return None
    return int(get_currency_precision(code.upper()))


def price_decimals(price: float, currency: str | None) -> int:
    """How many decimals to show: the currency's minor units, else as ingest keeps the price."""
    digits = minor_units(currency)
    if digits is not None:
        return digits
    return 3 if round(price * 100, 6) != round(price * 100) else 2
