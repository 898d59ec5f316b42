"""Issue 17 items 4, 8 and 9 end to end, on SQLite and PostgreSQL: stray quotes never make `--prune`
delete products that are still in the catalog nor hide the rows they swallow, and prices keep the
minor units of their currency in the store."""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path

import pytest

from cli.main import main
from ingest.pipeline import IngestResult, ingestor_for
from ingest.readers import read_catalog
from server.schedule import CatalogSchedule
from services.context import ShopLens
from tests.support.catalog import product_row, write_catalog, write_rows


def ingest(app: ShopLens, path: Path, **kwargs: bool) -> IngestResult:
    result = ingestor_for(app).ingest(read_catalog(path), **kwargs)
    assert result.status in {"succeeded", "partial"}, result.message
    return result


def skus(app: ShopLens) -> set[str]:
    return set(app.catalog.all_skus())


def rewrite(path: Path, old: str, new: str | None) -> None:
    """Replace text in one line of the catalog (None drops the line), as a hand edit would."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    (index,) = [i for i, line in enumerate(lines) if old in line]
    lines[index : index + 1] = [] if new is None else [lines[index].replace(old, new)]
    path.write_text("".join(lines), encoding="utf-8")


def test_a_row_broken_by_a_stray_quote_is_not_pruned(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 5)
    ingest(app, catalog)
    rewrite(catalog, ",Product 1 bag,", ',"Product 1 "deluxe", bag",')  # one field too many now
    rewrite(catalog, "SKU-0004,", None)  # really gone
    result = ingest(app, catalog, prune=True)
    assert result.counts.pruned == 1 and skus(app) == {f"SKU-{i:04d}" for i in range(4)}
    (problem,) = result.errors
    assert (problem.row, problem.sku, problem.code) == (3, "SKU-0001", "unreadable_row")
    assert "11 fields" in problem.message
    assert app.catalog.get_product("SKU-0001").title == "Product 1 bag"  # the stored copy stays as it was


def test_an_unterminated_quote_loses_no_row(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 5)
    ingest(app, catalog)
    rewrite(catalog, ",Product 1 bag,", ',"Product 1 bag,')  # the quote is never closed
    rows = catalog.read_text().splitlines()
    rows[-1] = rows[-1].replace("Product 4", "Product four")  # a change on a swallowed row still lands
    catalog.write_text("\n".join(rows) + "\n")
    result = ingest(app, catalog, prune=True)
    assert result.status == "partial" and result.counts.pruned == 0 and len(skus(app)) == 5
    assert (result.counts.changed, result.counts.unchanged, result.counts.failed) == (1, 3, 1)
    (problem,) = result.errors
    assert (problem.row, problem.field, problem.sku, problem.code) == (3, "title", "SKU-0001", "unreadable_row")
    assert "lines 4–6" in problem.message
    assert app.catalog.get_product("SKU-0004").title.startswith("Product four")


def test_prune_is_skipped_while_a_rows_sku_is_unknown_unless_forced(app: ShopLens, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 4)
    ingest(app, catalog)
    rewrite(catalog, "SKU-0003,", None)
    with catalog.open("a", encoding="utf-8") as fh:
        fh.write(',"Mystery "thing", x",,Bags,Acme,1.00,EUR,yes,,red\n')  # which product is this?
    skipped = ingest(app, catalog, prune=True)
    assert skipped.counts.pruned == 0 and "SKU-0003" in skus(app)
    assert [e.code for e in skipped.errors] == ["prune_skipped", "unreadable_row"]  # said first
    assert "line 5" in skipped.errors[0].message and "--force-prune" in skipped.errors[0].message
    assert skipped.status == "partial"

    lines: list[str] = []
    schedule = CatalogSchedule(app, str(catalog), prune=True, force_prune=True, echo=lines.append)
    forced = schedule.run_once()
    assert forced is not None and forced.counts.pruned == 1 and skus(app) == {"SKU-0000", "SKU-0001", "SKU-0002"}
    assert [e.code for e in forced.errors] == ["unreadable_row"] and "1 pruned" in lines[0]


def test_numeric_json_skus_are_not_pruned(app: ShopLens, tmp_path: Path) -> None:
    path = write_rows(tmp_path / "shop.jsonl", [{"sku": 1.5, "title": "A"}, {"sku": 7, "title": "B"}], fmt="jsonl")
    ingest(app, path)
    assert ingest(app, path, prune=True).counts.pruned == 0 and skus(app) == {"1.5", "7"}


def test_prices_keep_the_minor_units_of_their_currency(app: ShopLens, tmp_path: Path) -> None:
    prices = {
        "KW-1": ("12.345", "KWD", "12.345"),
        "KW-2": ("0.500", "KWD", "0.500"),
        "BH-1": ("0.005", "BHD", "0.005"),
        "US-1": ("1,299", "USD", "1299.00"),
        "JP-1": ("1,500", "JPY", "1500"),
        "XX-1": ("99999999999.999", "", "99999999999.999"),
    }
    rows = [product_row(i, [], sku=sku, price=p, currency=c) for i, (sku, (p, c, _)) in enumerate(prices.items())]
    rows.append(product_row(90, [], sku="BIG", price="100000000000", currency=""))  # over numeric(14, 3)
    rows.append(product_row(91, [], sku="AMB", price="1,299", currency=""))
    catalog = write_rows(tmp_path / "prices.csv", rows)
    result = ingest(app, catalog)
    assert result.counts.new == len(prices)
    assert {(e.sku, e.field) for e in result.errors} == {("BIG", "price"), ("AMB", "price")}
    for sku, (_, _, stored) in prices.items():
        assert app.catalog.get_product(sku).price == Decimal(stored), sku
    assert ingest(app, catalog).counts.unchanged == len(prices)  # stored and read again, nothing changed


def test_the_command_line_forces_prune_only_when_told(
    database_url: str, openclip_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    for key, value in {
        **openclip_env,
        "SHOPLENS_HOME": str(tmp_path / "home"),
        "SHOPLENS_DATABASE_URL": database_url,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SHOPLENS_SERVER_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    catalog = write_catalog(tmp_path / "shop", 3)

    def shoplens(*args: str) -> dict[str, object]:
        try:
            main(["--local", "ingest", str(catalog), "--json", *args])
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return json.loads(capsys.readouterr().out)

    assert shoplens()["new"] == 3
    rewrite(catalog, "SKU-0002,", None)
    rewrite(catalog, "SKU-0001,", ',"Mystery "thing", x",')
    assert shoplens("--prune")["pruned"] == 0
    assert shoplens("--force-prune")["pruned"] == 2  # SKU-0001's row cannot be read: it goes too
