"""Search results print prices in their currency's minor units (issue 17 item 8)."""

from __future__ import annotations

import argparse

import pytest

from cli.common import print_hits
from server import schemas


@pytest.mark.parametrize(
    "price, currency, shown",
    [
        (12.345, "KWD", "12.345 KWD"),
        (0.005, "BHD", "0.005 BHD"),
        (0.5, "OMR", "0.500 OMR"),
        (1500.0, "JPY", "1500 JPY"),
        (1299.0, "USD", "1299.00 USD"),
        (0.005, None, "0.005"),
        (7.5, None, "7.50"),
        (None, "EUR", "-"),
    ],
)
def test_search_hits_print_prices_in_their_minor_units(
    price: float | None, currency: str | None, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hit = schemas.Hit(
        sku="A",
        title="T",
        price=price,
        currency=currency,
        category=None,
        brand=None,
        in_stock=True,
        score=0.9,
        image_url=None,
    )
    print_hits(schemas.SearchResult(hits=[hit], took_ms=1.0), argparse.Namespace(json=False, offset=0))
    line = capsys.readouterr().out.splitlines()[0]
    assert line.split("T", 1)[1].strip().startswith(shown), line
