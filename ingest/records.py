"""Validation of one catalog row into a ProductRecord, with errors that name the row and field."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.prices import minor_units

KNOWN_FIELDS = ("sku", "title", "description", "category", "brand", "price", "currency", "in_stock", "image")
REQUIRED_FIELDS = ("sku", "title")
# The attribute holding every variant's price (a JSON list, written by ingest/formats/mapping.py):
# the vector payload carries them all, so a price filter matches a product by any variant.
VARIANT_PRICES = "variant_prices"
SKU_MAX_LENGTH = 128
_TRUE = {"true", "1", "yes", "y", "t", "in stock", "instock"}
_FALSE = {"false", "0", "no", "n", "f", "out of stock", "outofstock"}


REPORT_COLUMNS = ("row", "sku", "field", "message", "code")


@dataclass(frozen=True)
class RowError:
    """A problem of one catalog row: the row is skipped, or loads without the part named.

    `code` is stable (what a report reader or an API client matches on); for a ShopLensError that
    caused it, the error's own code (`bad_image`, `fetch_failed`, `embed_failed`, …)."""

    row: int  # line number in the catalog file (header is line 1 for CSV)
    field: str | None
    message: str
    sku: str | None = None
    code: str = "invalid_field"

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "sku": self.sku, "field": self.field, "message": self.message, "code": self.code}

    def __str__(self) -> str:
        where = f"line {self.row}" + (f" (sku {self.sku})" if self.sku else "")
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


class ProductRecord(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, frozen=True)

    row: int
    sku: str = Field(min_length=1, max_length=SKU_MAX_LENGTH)
    title: str = Field(min_length=1, max_length=500)
    description: str = ""
    category: str | None = Field(default=None, max_length=200)
    brand: str | None = Field(default=None, max_length=200)
    price: Decimal | None = None
    currency: str | None = None
    in_stock: bool = True
    images: tuple[str, ...] = ()
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("description", mode="before")
    @classmethod
    def _none_to_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("category", "brand", "currency", mode="before")
    @classmethod
    def _blank_to_none(cls, value: Any) -> Any:
        return None if value is None or (isinstance(value, str) and not value.strip()) else value

    @model_validator(mode="before")
    @classmethod
    def _price_with_its_currency(cls, data: Any) -> Any:
        """'1,299' is 1299 dollars but perhaps 1.299 dinars: the price cell is read knowing the
        row's currency. It is read in the price's own validator (handed both cells here), so that a
        bad price is reported on its field beside the row's other problems."""
        if isinstance(data, dict) and data.get("price") is not None:
            data = {**data, "price": _PriceCell(data["price"], data.get("currency"))}
        return data

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Decimal | None:
        if isinstance(value, _PriceCell):
            return read_price(value.value, value.currency)
        return read_price(value, None)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) != 3 or not value.isalpha():
            raise ValueError(f"{_shown(value)} is not a 3-letter currency code")
        return value.upper()

    @field_validator("in_stock", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> bool:
        if value is None or (isinstance(value, str) and not value.strip()):
            return True
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{_shown(value)} is not a yes/no value")

    @field_validator("images", mode="before")
    @classmethod
    def _images(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        parts = value if isinstance(value, (list, tuple)) else str(value).split("|")
        seen: dict[str, None] = {}
        for part in parts:
            if not isinstance(part, str):
                raise ValueError("image entries must be strings")
            if part.strip():
                seen.setdefault(part.strip(), None)
        return tuple(seen)

    def fingerprint(self, image_stats: tuple[str, ...] = ()) -> str:
        """Everything that defines the stored product; `image_stats` adds local files' size/mtime."""
        data = self.model_dump(mode="json", exclude={"row"})
        return hashlib.sha256(json.dumps([data, image_stats], sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class _PriceCell:
    """A price cell with its row's currency cell, from the model validator to the price's own."""

    value: Any
    currency: Any


# products.price is Numeric(14, 3): eleven digits before the decimal mark
MAX_PRICE = Decimal("1e11")
# Signs whose currencies all have 0 or 2 minor digits ($: USD, CAD, MXN, CLP …; ¥: JPY, CNY): enough
# to read '$1,299' as 1299. The rial sign (﷼) is not here: the Omani rial has three.
_TWO_DIGIT_SIGNS = frozenset("$€£¥₹₩₽₺₪₫₱₴₦฿")
_PLAIN = re.compile(r"[+-]?[\d.,]*\d[\d.,]*")
_GROUPED = re.compile(r"\d{1,3}(?:X\d{3})*|\d{1,2}(?:X\d{2})*X\d{3}")  # 1,299,000 and 12,34,567 (lakh)


def read_price(value: Any, currency: Any = None) -> Decimal | None:
    """A price cell as a Decimal quantized to the currency's minor units (ISO 4217 via babel).

    Which separator is the decimal mark depends on the currency: '1,299' is 1299 US dollars, '0.500'
    is half a dinar, '12.500' is 12.5 Kuwaiti dinars (three minor digits) but 12500 euros. What no
    rule can settle ('1,299' without a known currency) is refused with how to write it, never
    guessed; so are more decimals than the currency has ('0.005' US dollars), never rounded away."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError("must be a number")
    code = currency.strip().upper() if isinstance(currency, str) else None
    code = code if code and len(code) == 3 and code.isascii() and code.isalpha() else None
    if isinstance(value, (int, float, Decimal)):
        price = _decimal(str(value), value)
    elif isinstance(value, str):
        if len(value) > 64:  # no price is this long: read no further
            raise ValueError(f"{_shown(value)} is not a decimal number")
        number, written_code, sign = _price_text(value)
        if written_code and code and written_code != code:
            raise ValueError(f"{_shown(value)} is in {written_code} but the row's currency is {code}")
        code = code or written_code
        minor = minor_units(code)
        price = _decimal(_plain_number(number, value, minor, code, sign), value)
    else:
        raise ValueError(f"must be a number, not {type(value).__name__}")
    if not price.is_finite():
        raise ValueError(f"{_shown(value)} is not a finite number")
    if price < 0:
        raise ValueError(f"{_shown(value)} is negative")
    if price >= MAX_PRICE:
        raise ValueError(f"{_shown(value)} is too large (at most 99,999,999,999.999)")
    return _quantize(price.copy_abs() if price == 0 else price, value, code)


def _shown(value: Any) -> str:
    """A cell in a problem message: a 70,000-character cell is named, not copied into the report."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}… ({len(str(value))} characters)"


@lru_cache(maxsize=512)
def _price_text(text: str) -> tuple[str, str | None, bool]:
    """(digits and separators, an ISO code written in the cell, whether a sign such as $ or € with
    0 or 2 minor digits was): '1 299,00 €' → ('1299,00', None, True); 'KWD 12.500' → ('12.500', 'KWD', False)."""
    if _PLAIN.fullmatch(text.strip()):  # most cells: digits and separators only
        return text.strip(), None, False
    code = None
    letters = re.findall(r"[^\W\d_]+", text)
    if (
        len(letters) == 1
        and len(letters[0]) == 3
        and letters[0].isascii()
        and minor_units(letters[0].upper()) is not None
    ):
        code = letters[0].upper()
        text = text.replace(letters[0], "", 1)
    two_digit_sign = any(ch in _TWO_DIGIT_SIGNS for ch in text)
    kept = "".join(
        ch for ch in text if not (ch.isspace() or ch in "'’" or unicodedata.category(ch) == "Sc")
    )  # spaces and apostrophes group thousands (1 299,00; 1'299.00): they are never the decimal mark
    return kept, code, two_digit_sign


def _plain_number(number: str, value: str, minor: int | None, code: str | None, two_digit_sign: bool) -> str:
    """The number with a point as its decimal mark and no thousands separators."""
    if not _PLAIN.fullmatch(number):
        raise ValueError(f"{_shown(value)} is not a decimal number")
    sign, digits = (number[0], number[1:]) if number[0] in "+-" else ("", number)
    dots, commas = digits.count("."), digits.count(",")
    if not dots and not commas:
        return sign + digits
    if dots and commas:  # the last one is the decimal mark: 1,299.00 and 1.299,00
        mark = "." if digits.rfind(".") > digits.rfind(",") else ","
        group = "," if mark == "." else "."
        whole, _, fraction = digits.rpartition(mark)
        if mark in whole or not _grouped(whole, group):
            raise ValueError(f"{_shown(value)} is not a decimal number (misplaced separators)")
        return f"{sign}{whole.replace(group, '')}.{fraction}"
    mark = "." if dots else ","
    if digits.count(mark) > 1:  # repeated: thousands (1.299.000)
        if not _grouped(digits, mark):
            raise ValueError(f"{_shown(value)} is not a decimal number (misplaced separators)")
        return sign + digits.replace(mark, "")
    whole, _, fraction = digits.partition(mark)
    as_decimal, as_thousands = f"{sign}{whole or '0'}.{fraction}", sign + whole + fraction
    if len(fraction) != 3 or not whole.strip("0") or not _grouped(whole + mark + fraction, mark):
        return as_decimal  # 12,50 · 7.5 · 0.500 · 0.005 · 1234.567: only one reading
    if minor is not None and minor >= 3:
        if mark == ".":
            return as_decimal  # 12.500 KWD
        raise ValueError(
            f"{_shown(value)} is ambiguous in {code}, which has {minor} decimals: {as_thousands} or {as_decimal}? "
            f"write {as_thousands} or {as_decimal} (a point as the decimal mark, no thousands separator)"
        )
    if minor is not None or two_digit_sign:
        return as_thousands  # 1,299 USD · 1.299 € · 12.500 EUR
    without = f"with {code}, which is no ISO 4217 currency" if code else "without a currency"
    raise ValueError(
        f"{_shown(value)} is ambiguous {without}: {as_thousands} or {as_decimal}? write {as_thousands} or "
        f"{as_decimal} (a point as the decimal mark, no thousands separator), or give the row its currency"
    )


def _grouped(digits: str, separator: str) -> bool:
    return _GROUPED.fullmatch(digits.replace(separator, "X")) is not None


def _decimal(text: str, value: Any) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{_shown(value)} is not a decimal number") from None


def _quantize(price: Decimal, value: Any, code: str | None) -> Decimal:
    """To the currency's minor units; without a known currency to 2 decimals, or 3 when written."""
    minor = minor_units(code)
    written = max(0, -int(price.as_tuple().exponent))
    places = minor if minor is not None else min(3, max(2, written))
    quantum = Decimal(1).scaleb(-places)
    exact = price.quantize(quantum)
    if exact != price:
        if minor is None:
            raise ValueError(f"{_shown(value)} has more than 3 decimals: give the row its currency, or round it")
        has = f"{minor} decimal{'s' if minor != 1 else ''}" if minor else "no decimals"
        raise ValueError(f"{_shown(value)} has more decimals than {code} has ({has}): round it, or check the currency")
    return exact


TEXT_FIELDS = ("sku", "title", "description", "category", "brand", "currency")


def scalar_text(value: Any) -> str | None:
    """A cell as text: strings stripped, JSON numbers as written (`1.5` → "1.5"); None for what is
    no text at all (missing, a list, an object, true/false), so every check sees the same SKU."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return str(value)


def _unusable_cells(row_number: int, raw: dict[str, Any], sku: str | None) -> list[RowError]:
    """NUL bytes (no database or file system takes them) and lists or objects where text belongs."""
    errors = []
    for key, value in raw.items():
        parts = value if isinstance(value, list) else [value]
        if any(isinstance(p, str) and "\x00" in p for p in parts) or (isinstance(key, str) and "\x00" in key):
            field = "image" if key == "images" else str(key).replace("\x00", "")
            errors.append(RowError(row_number, field, "contains a NUL byte (\\0); row skipped", sku, "invalid_field"))
        elif key in TEXT_FIELDS and value is not None and scalar_text(value) is None:
            errors.append(RowError(row_number, key, f"must be text, not {type(value).__name__}; row skipped", sku))
    return errors


def validate_row(row_number: int, raw: dict[str, Any]) -> ProductRecord | list[RowError]:
    """A valid record, or every problem of the row (not just the first)."""
    sku = scalar_text(raw.get("sku"))
    unusable = _unusable_cells(row_number, raw, sku or None)
    if unusable:
        return unusable
    extra = {
        str(k): ("" if v is None else (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)))
        for k, v in raw.items()
        if k not in KNOWN_FIELDS and k not in {"images", "attributes"}
    }
    if isinstance(raw.get("attributes"), dict):
        extra.update({str(k): str(v) for k, v in raw["attributes"].items()})
    data = {k: raw.get(k) for k in KNOWN_FIELDS if k != "image"}
    data["images"] = raw.get("image", raw.get("images"))
    data["attributes"] = {k: v.strip() for k, v in extra.items() if v.strip()}
    for key in TEXT_FIELDS:  # text as every check reads it (str.strip also drops \x1c-\x1f, pydantic's strip not)
        if data.get(key) is not None:
            data[key] = scalar_text(data[key])
    try:
        return ProductRecord(row=row_number, **data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else None
            if field == "images":
                field = "image"
            message = err["msg"].removeprefix("Value error, ")
            code = "invalid_field"
            if err["type"] in {"missing", "string_too_short"} and field in REQUIRED_FIELDS:
                message, code = "is required", "missing_field"
            errors.append(RowError(row_number, field, message, sku or None, code))
        return errors
