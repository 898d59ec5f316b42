"""The embedder contract every backend implements.

Backends implement two batch methods that may raise; the base class owns what must be the same
everywhere: chunking, isolating the one bad item of a failed batch, L2 normalisation, float32,
and shape checks. That is why a DashScope timeout and a corrupt local image surface the same way.

A photo is embedded in two steps, `prepare_image` (framing, resizing, normalising or encoding,
which needs no model) and the batch itself, so that an ingestion prepares a batch in its decode
threads while the model embeds the one before, as a data loader's workers do.
"""

from __future__ import annotations

import hashlib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from services.errors import ShopLensError, Unavailable

if TYPE_CHECKING:
    from services.settings import Settings

log = logging.getLogger(__name__)


class QueryKind(StrEnum):
    IMAGE_TO_IMAGE = "image->image"
    TEXT_TO_IMAGE = "text->image"
    TEXT_TO_TEXT = "text->text"


class EmbedError(ShopLensError):
    """An item (or a whole call) could not be embedded; the message is safe to show users."""

    code = "embed_failed"
    http_status = 422
    prefix = "The search model could not read this query: "


class EmbedderUnavailable(Unavailable):
    """The backend cannot be built here (no weights, no key, missing package)."""

    code = "model_unavailable"
    prefix = "The search model is not available on this server: "


@dataclass(frozen=True)
class EmbedderIdentity:
    """What makes two vectors comparable. Vectors of different identities never share a collection."""

    backend: str
    model: str
    image_dim: int
    text_dim: int
    cross_modal: bool  # do text and image vectors live in one space?

    @property
    def key(self) -> str:
        raw = f"{self.backend}|{self.model}|{self.image_dim}|{self.text_dim}|{self.cross_modal}"
        digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
        slug = re.sub(r"[^a-z0-9]+", "-", f"{self.backend}-{self.model}".lower()).strip("-")[:40]
        return f"{slug}-{digest}"

    @property
    def photo_model(self) -> str | None:
        """What makes the photo vectors, when it is a model of its own: a backend that pairs a photo
        model with a separate text model names itself "<photo model>+<text model>/<variant>"
        (offline). Two identities with the same photo model hold interchangeable photo vectors,
        so a new text model need not embed the photos again. None when one model makes both."""
        if self.cross_modal or "+" not in self.model:
            return None
        photo, _, rest = self.model.partition("+")
        return f"{self.backend}:{photo}/{rest.rpartition('/')[2]}:{self.image_dim}"

    def describe(self) -> str:
        dims = (
            f"{self.image_dim}-d"
            if self.image_dim == self.text_dim
            else f"image {self.image_dim}-d, text {self.text_dim}-d"
        )
        return f"{self.backend} {self.model} ({dims})"


@dataclass
class Embedded:
    """A batch result: one row per input; rows of failed items are zero and listed in `errors`."""

    vectors: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)

    def ok(self, index: int) -> bool:
        return index not in self.errors


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.all(np.isfinite(matrix)) or np.any(norms == 0):
        raise EmbedError("the model returned a zero or non-finite vector")
    return (matrix / norms).astype(np.float32, copy=False)


class Embedder(ABC):
    """A model that turns images and texts into unit vectors."""

    identity: EmbedderIdentity
    fallback_reason: str | None = None  # set when `auto` had to skip a preferred backend
    image_batch_size: int = 32
    text_batch_size: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        """Build the backend the settings describe; raise EmbedderUnavailable when it cannot run here."""
        raise NotImplementedError

    @classmethod
    def identity_for(cls, settings: Settings) -> EmbedderIdentity | None:
        """The identity `from_settings(settings)` would report, from settings and small files alone.

        Why: counting, listing runs or opening the vector collection needs only the identity, and
        building a model to learn it costs seconds. Implementations must not import torch or read
        weights, and must equal the built embedder's `identity` exactly; None means "cannot know
        without loading" (the caller then loads, or uses the identity recorded by an earlier build).
        """
        return None

    @property
    def supported_queries(self) -> frozenset[QueryKind]:
        kinds = {QueryKind.IMAGE_TO_IMAGE, QueryKind.TEXT_TO_TEXT}
        if self.identity.cross_modal:
            kinds.add(QueryKind.TEXT_TO_IMAGE)
        return frozenset(kinds)

    def prepare_image(self, image: Image.Image) -> Any:
        """The photo as this embedder's batch step takes it; safe to call in any thread.

        Why apart: it is per-photo work a whole core can do beside the model, which is the
        bottleneck of an ingestion. What it returns goes to `embed_prepared` of this embedder
        only. The default hands the photo on unchanged."""
        return image

    @abstractmethod
    def _embed_prepared(self, batch: Sequence[Any]) -> np.ndarray:
        """Embed one batch of prepared photos; raise on any failure."""

    def _embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._embed_prepared([self.prepare_image(image) for image in images])

    @abstractmethod
    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed one batch of catalog texts (passages); raise on any failure."""

    def _embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed one batch of shoppers' queries. Models trained asymmetrically (E5's "query: " and
        "passage: ") embed the two sides differently; the others embed both the same way."""
        return self._embed_texts(texts)

    def embed_images(self, images: Sequence[Image.Image]) -> Embedded:
        return self._run(list(images), self._embed_images, self.identity.image_dim, self.image_batch_size)

    def embed_prepared(self, prepared: Sequence[Any]) -> Embedded:
        """Photos already passed through `prepare_image` (by another thread, ahead of time)."""
        return self._run(list(prepared), self._embed_prepared, self.identity.image_dim, self.image_batch_size)

    def embed_texts(self, texts: Sequence[str], *, queries: bool = False) -> Embedded:
        """Catalog texts, or with `queries` the texts shoppers typed."""
        items = [t if isinstance(t, str) else "" for t in texts]
        fn = self._embed_queries if queries else self._embed_texts
        return self._run(items, fn, self.identity.text_dim, self.text_batch_size)

    def embed_image(self, image: Image.Image) -> np.ndarray:
        """One query image; raises EmbedError."""
        result = self.embed_images([image])
        if result.errors:
            raise EmbedError(result.errors[0])
        return result.vectors[0]

    def embed_text(self, text: str, *, query: bool = False) -> np.ndarray:
        """One catalog text, or with `query` a shopper's query; raises EmbedError."""
        result = self.embed_texts([text], queries=query)
        if result.errors:
            raise EmbedError(result.errors[0])
        return result.vectors[0]

    def close(self) -> None:  # noqa: B027 - an optional hook: most embedders hold nothing to release
        """Release network clients or memory; the default holds nothing to release."""

    def _run(self, items: list, fn, dim: int, batch_size: int) -> Embedded:
        out = np.zeros((len(items), dim), dtype=np.float32)
        errors: dict[int, str] = {}
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            try:
                out[start : start + len(chunk)] = self._checked(fn(chunk), len(chunk), dim)
                continue
            except EmbedderUnavailable:  # a model that cannot load fails the call, not each item
                raise
            except Exception as exc:  # isolate the bad item(s) below
                if len(chunk) == 1:
                    errors[start] = _message(exc)
                    continue
                log.debug("batch of %d failed (%s); retrying one by one", len(chunk), exc)
            for offset, item in enumerate(chunk):
                try:
                    out[start + offset] = self._checked(fn([item]), 1, dim)[0]
                except Exception as exc:
                    errors[start + offset] = _message(exc)
        return Embedded(out, errors)

    @staticmethod
    def _checked(matrix: np.ndarray, rows: int, dim: int) -> np.ndarray:
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.shape != (rows, dim):
            raise EmbedError(f"expected vectors of shape {(rows, dim)}, got {matrix.shape}")
        return l2_normalise(matrix)


def _message(exc: Exception) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text if isinstance(exc, EmbedError) else f"{exc.__class__.__name__}: {text}"
