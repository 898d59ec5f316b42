"""Validation of one catalog row into a ProductRecord, with errors that name the row and field."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

KNOWN_FIELDS = ("sku", "title", "description", "category", "brand", "price", "currency", "in_stock", "image")
REQUIRED_FIELDS = ("sku", "title")
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
    sku: str = Field(min_length=1, max_length=128)
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

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Decimal | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, bool):
            raise ValueError("must be a number")
        text = _normalise_number(value) if isinstance(value, str) else value
        try:
            price = Decimal(str(text))
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
        if not price.is_finite():
            raise ValueError(f"{value!r} is not a finite number")
        if price < 0:
            raise ValueError(f"{value!r} is negative")
        if price >= Decimal("1e12"):
            raise ValueError(f"{value!r} is too large")
        return price.quantize(Decimal("0.01"))

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) != 3 or not value.isalpha():
            raise ValueError(f"{value!r} is not a 3-letter currency code")
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
        raise ValueError(f"{value!r} is not a yes/no value")

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


def _normalise_number(text: str) -> str:
    """'1,299.00' and '1.299,00' style thousands; '12,50' is a decimal comma. Currency signs go."""
    text = re.sub(r"[\s$€£¥]|EUR|USD|GBP", "", text.strip())
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", text):
        return text.replace(",", "")
    if re.fullmatch(r"\d{1,3}(\.\d{3})+(,\d+)?", text):
        return text.replace(".", "").replace(",", ".")
    if re.fullmatch(r"\d+,\d{1,2}", text):
        return text.replace(",", ".")
    return text


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
    for key in TEXT_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], str):
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
