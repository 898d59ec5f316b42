"""One exception family: every error ShopLens raises on purpose is a ShopLensError.

Each class carries a stable `code` (what API clients and report readers match on), the HTTP status
the API answers with, and how a person is told (`user_message`), so the CLI, the pages and the
HTTP API all speak from this one place instead of keeping their own lists.
"""

from __future__ import annotations

from typing import ClassVar


class ShopLensError(Exception):
    """An error with a message safe to show: no secrets, no traceback."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 400
    prefix: ClassVar[str] = ""  # how the pages introduce the message
    by_code: ClassVar[dict[str, type[ShopLensError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(cls.__dict__.get("code"), str):
            ShopLensError.by_code.setdefault(cls.__dict__["code"], cls)

    @property
    def message(self) -> str:
        """The message on one line."""
        return " ".join(str(self).split()) or self.__class__.__name__

    @property
    def user_message(self) -> str:
        text = self.message
        return f"{self.prefix}{text}" if self.prefix else text[:1].upper() + text[1:]

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class UsageError(ShopLensError):
    """A request or command that cannot be carried out as given."""

    code = "bad_request"


class NotFound(ShopLensError):
    code = "not_found"
    http_status = 404


class Unauthorized(ShopLensError):
    code = "unauthorized"
    http_status = 401


class Throttled(ShopLensError):
    code = "too_many_attempts"
    http_status = 429

    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after


class TooLarge(ShopLensError):
    code = "too_large"
    http_status = 413


class Unavailable(ShopLensError):
    """A part ShopLens needs (database, vector store, model, server) cannot be reached now."""

    code = "unavailable"
    http_status = 503
