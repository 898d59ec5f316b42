"""The catalog audit: near-duplicate listings, category suggestions, and listings whose photo (or
title) contradicts their category, computed from the vectors the store already holds.

Why from stored vectors: an audit must be cheap enough to follow every scheduled ingest, so it
never re-embeds the catalog. It reads the points twice (category sums, then batched top-k
searches on the index, one per stored photo and one per text point, never an all-pairs matrix)
and embeds only a handful of things: a few re-encoded copies of stored photos to calibrate the
duplicate threshold for this embedder (kept with the collection, like the search thresholds),
and the shop's own category names (as shoppers' words, and when photos and words share one space,
as captions).

A product's category is scored by several voters, each leaving the product itself out:
- its nearest other products by photo and by text, votes weighted by a softmax of similarity
  (the nearest neighbour counts most, a far one little);
- the centroids of each category's photos and texts (a product far from every neighbour is
  still closer to its category's centre);
- its words against the category names, as a search for that category would find them (zero-shot);
- with a shared photo–text space, its photos against the category names too.
A plain nearest-neighbour vote of photos alone is what `bench/audit.py` compares against.
"""

from __future__ import annotations

import io
import logging
import math
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageEnhance
from sqlalchemy import func, select, update

from services.catalog.meta import get_meta, set_meta
from services.catalog.models import Product
from services.errors import ShopLensError, UsageError
from services.files import spreadsheet_safe
from services.images import ImageError, decode_for_model
from services.union_find import find_root
from services.vectors import IMAGE, TEXT, PointFilter, VectorStore, image_point_id

if TYPE_CHECKING:
    from services.context import ShopLens

log = logging.getLogger(__name__)

NEIGHBOURS = 10  # products each product is compared with, per kind
SEARCH_BATCH = 64  # searches sent to the engine at once
# Voters and their weights; a voter with nothing to say (no photos, no categorised neighbours)
# is left out and the others share its weight.
WEIGHTS = {
    "image_knn": 1.0,
    "text_knn": 1.0,
    "image_centroid": 1.0,
    "text_centroid": 1.0,
    "zero_shot": 0.5,
    "text_zero_shot": 1.0,
}
# Temperatures, as shares of the spread (standard deviation) of each voter's cosines over the
# catalog: how far apart "near" and "far" lie depends on the model (multilingual-e5's text cosines
# span a third of MobileNet's photo cosines), so a fixed cosine gap would let one model's voters
# shout and another's whisper. A neighbour this share of a spread further away counts e times less.
KNN_TEMPERATURE = 0.25
CENTROID_TEMPERATURE = 0.4
ZERO_SHOT_TEMPERATURE = 0.2
# A listed category is called a mismatch when the vote puts another category this far ahead
MISMATCH_CONFIDENCE = 0.5
MISMATCH_LISTED_AT_MOST = 0.3
# Duplicate calibration: photos copied per calibration, and the share of copies the threshold keeps
CALIBRATION_PHOTOS = 16
COPY_KEEP_QUANTILE = 0.02
DEFAULT_DUPLICATE_THRESHOLD = 0.95  # when no copy can be made (no model, no readable photo)
RECALIBRATE_SHARE = 0.1
REPORT_COLUMNS = ("kind", "sku", "skus", "listed", "suggested", "confidence", "score", "reason")


class AuditError(ShopLensError):
    """The audit cannot answer for this store (its vectors belong to another embedder, …)."""

    code = "audit_unavailable"
    http_status = 409
    prefix = "The catalog audit cannot run: "


# -- the answer -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Duplicate:
    skus: list[str]
    score: float  # the weakest photo similarity that joins the group


@dataclass(frozen=True)
class CategorySuggestion:
    sku: str
    category: str
    confidence: float


@dataclass(frozen=True)
class Mismatch:
    sku: str
    listed: str | None
    suggested: str | None
    confidence: float
    reason: str


@dataclass
class AuditReport:
    duplicates: list[Duplicate] = field(default_factory=list)
    category_suggestions: list[CategorySuggestion] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    products: int = 0
    duplicate_threshold: float | None = None
    notes: list[str] = field(default_factory=list)  # why a part found nothing (empty catalog, …)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The JSON contract scripts read (`shoplens audit --json`, `GET /api/v1/audit`)."""
        return {
            "duplicates": [asdict(d) for d in self.duplicates],
            "category_suggestions": [asdict(s) for s in self.category_suggestions],
            "mismatches": [asdict(m) for m in self.mismatches],
            "products": self.products,
            "duplicate_threshold": self.duplicate_threshold,
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }

    def report_rows(self) -> list[dict[str, object]]:
        return report_rows(self.as_dict())

    def summary(self) -> str:
        lines = [
            f"audited {self.products} products in {self.seconds:.1f} s: {len(self.duplicates)} near-duplicate "
            f"groups, {len(self.category_suggestions)} category suggestions, {len(self.mismatches)} mismatches"
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def report_rows(contract: dict[str, Any]) -> list[dict[str, object]]:
    """One CSV row per finding of an audit's JSON contract, each cell safe for a spreadsheet."""
    rows: list[dict[str, object]] = []
    for d in contract.get("duplicates", []):
        rows.append({"kind": "duplicate", "skus": " ".join(d["skus"]), "score": d["score"]})
    for s in contract.get("category_suggestions", []):
        rows.append(
            {"kind": "category_suggestion", "sku": s["sku"], "suggested": s["category"], "confidence": s["confidence"]}
        )
    for m in contract.get("mismatches", []):
        rows.append({"kind": "mismatch", **{k: m[k] for k in ("sku", "listed", "suggested", "confidence", "reason")}})
    return [spreadsheet_safe({c: row.get(c, "") for c in REPORT_COLUMNS}) for row in rows]


# -- what the stores hold -------------------------------------------------------------------------
@dataclass(frozen=True)
class Listing:
    """A product as SQL lists it (the source of truth for categories)."""

    sku: str
    category: str | None
    title: str
    photos: int


@dataclass
class Evidence:
    """What the index says about one product, its own points left out."""

    image: dict[str, float] = field(default_factory=dict)  # other sku -> best photo-to-photo cosine
    text: dict[str, float] = field(default_factory=dict)  # other sku -> text cosine
    image_centroid: dict[str, float] = field(default_factory=dict)  # category -> mean cosine of its photos
    text_centroid: dict[str, float] = field(default_factory=dict)
    zero_shot: dict[str, float] = field(default_factory=dict)  # category -> photo vs the category's name
    text_zero_shot: dict[str, float] = field(default_factory=dict)  # category -> its name searched, vs the words
    title: float | None = None  # photo vs its own title (shared space only)
    photos: int = 0


@dataclass(frozen=True)
class CategoryNames:
    """The shop's category names embedded twice: as a shopper's query in the text space, and as a
    caption in the photo space when the embedder has one shared space (else None)."""

    names: tuple[str, ...] = ()
    as_queries: np.ndarray | None = None
    as_captions: np.ndarray | None = None


@dataclass
class Gathered:
    evidence: dict[str, Evidence]
    image_points: int
    text_points: int


def listings(app: ShopLens) -> dict[str, Listing]:
    out: dict[str, Listing] = {}
    for batch in app.catalog.iter_products(batch_size=1000):
        for p in batch:
            out[p.sku] = Listing(p.sku, p.category or None, p.title, len(p.images))
    return out


def gather(
    vectors: VectorStore,
    listed: dict[str, Listing],
    category_names: CategoryNames = CategoryNames(),
    k: int = NEIGHBOURS,
) -> Gathered:
    """Read every point twice: sums per category, then batched searches and centroid cosines."""
    categories = sorted({item.category for item in listed.values() if item.category})
    index = {c: i for i, c in enumerate(categories)}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    texts: dict[str, np.ndarray] = {}
    captions, queries, names = category_names.as_captions, category_names.as_queries, category_names.names
    want_texts = captions is not None
    points = {IMAGE: 0, TEXT: 0}
    for kind, sku, vector in _listed_points(vectors, listed):
        points[kind] += 1
        if want_texts and kind == TEXT:
            texts[sku] = vector
        category = listed[sku].category
        if category is None or not categories:
            continue
        if kind not in sums:
            sums[kind] = np.zeros((len(categories), vector.shape[0]), np.float64)
            counts[kind] = np.zeros(len(categories), np.int64)
        sums[kind][index[category]] += vector
        counts[kind][index[category]] += 1
    evidence: dict[str, Evidence] = {}
    pending: dict[str, list[tuple[str, np.ndarray]]] = {IMAGE: [], TEXT: []}

    def flush(kind: str) -> None:
        queue = pending[kind]
        if not queue:
            return
        flts = [PointFilter(kind=kind, exclude_skus=(sku,)) for sku, _ in queue]
        answers = vectors.search_batch([v for _, v in queue], kind, flts, 2 * k if kind == IMAGE else k)
        for (sku, _), hits in zip(queue, answers, strict=True):
            found = evidence[sku].image if kind == IMAGE else evidence[sku].text
            for hit in hits:
                other = str(hit.payload.get("sku", ""))
                if other in listed and other != sku and hit.score > found.get(other, -2.0):
                    found[other] = hit.score
        queue.clear()

    for kind, sku, vector in _listed_points(vectors, listed):
        item = evidence.setdefault(sku, Evidence())
        centroid = _centroid_cosines(vector, sums.get(str(kind)), counts.get(str(kind)), categories, listed[sku])
        if kind == IMAGE:
            item.photos += 1
            _mean_into(item.image_centroid, centroid, item.photos)
            if captions is not None and captions.shape[1] == vector.shape[0]:
                _mean_into(item.zero_shot, dict(zip(names, (captions @ vector).tolist(), strict=True)), item.photos)
            own = texts.get(sku)
            if own is not None and own.shape == vector.shape:
                cosine = float(own @ vector)
                item.title = cosine if item.title is None else max(item.title, cosine)
        else:
            item.text_centroid = centroid
            if queries is not None and queries.shape[1] == vector.shape[0]:
                item.text_zero_shot = dict(zip(names, (queries @ vector).tolist(), strict=True))
        pending[str(kind)].append((sku, vector))
        if len(pending[str(kind)]) >= SEARCH_BATCH:
            flush(str(kind))
    flush(IMAGE)
    flush(TEXT)
    for item in evidence.values():  # keep the k best products per kind
        item.image = dict(sorted(item.image.items(), key=lambda kv: -kv[1])[:k])
        item.text = dict(sorted(item.text.items(), key=lambda kv: -kv[1])[:k])
    return Gathered(evidence, points[IMAGE], points[TEXT])


def _centroid_cosines(
    vector: np.ndarray,
    sums: np.ndarray | None,
    counts: np.ndarray | None,
    categories: list[str],
    item: Listing,
) -> dict[str, float]:
    """Cosine to each category's centre, this point left out of its own category's centre."""
    if sums is None or counts is None:
        return {}
    sums = sums.copy()
    counts = counts.copy()
    if item.category is not None:
        i = categories.index(item.category)
        sums[i] -= vector
        counts[i] -= 1
    out: dict[str, float] = {}
    for i, name in enumerate(categories):
        if counts[i] <= 0:
            continue
        norm = float(np.linalg.norm(sums[i]))
        if norm > 0:
            out[name] = float(sums[i] @ vector / norm)
    return out


def _mean_into(target: dict[str, float], values: dict[str, float], seen: int) -> None:
    for key, value in values.items():
        target[key] = target.get(key, value) + (value - target.get(key, value)) / seen


# -- voting ---------------------------------------------------------------------------------------
def knn_vote(
    neighbours: dict[str, float],
    categories: dict[str, str | None],
    k: int = NEIGHBOURS,
    temperature: float = KNN_TEMPERATURE,
) -> dict[str, float]:
    """Categories of the k nearest categorised products, each vote weighted by exp(cosine / T)."""
    ranked = sorted(((s, c) for sku, s in neighbours.items() if (c := categories.get(sku))), reverse=True)[:k]
    if not ranked:
        return {}
    top = ranked[0][0]
    votes: dict[str, float] = {}
    for score, category in ranked:
        votes[category] = votes.get(category, 0.0) + math.exp((score - top) / temperature)
    total = sum(votes.values())
    return {c: v / total for c, v in votes.items()}


def softmax(scores: dict[str, float], temperature: float) -> dict[str, float]:
    if not scores:
        return {}
    top = max(scores.values())
    weights = {c: math.exp((s - top) / temperature) for c, s in scores.items()}
    total = sum(weights.values())
    return {c: w / total for c, w in weights.items()}


VOTERS = tuple(WEIGHTS)
SHARES = {
    "image_knn": KNN_TEMPERATURE,
    "text_knn": KNN_TEMPERATURE,
    "zero_shot": ZERO_SHOT_TEMPERATURE,
    "text_zero_shot": ZERO_SHOT_TEMPERATURE,
}


def _scores(evidence: Evidence, voter: str) -> dict[str, float]:
    field_name = {"image_knn": "image", "text_knn": "text"}.get(voter, voter)
    scores: dict[str, float] = getattr(evidence, field_name)
    return scores


def temperatures(evidence: Mapping[str, Evidence]) -> dict[str, float]:
    """Each voter's temperature: its share of the spread of that voter's cosines in this catalog."""
    out: dict[str, float] = {}
    for voter in VOTERS:
        values = [s for item in evidence.values() for s in _scores(item, voter).values()]
        spread = float(np.std(values)) if len(values) > 1 else 0.0
        out[voter] = SHARES.get(voter, CENTROID_TEMPERATURE) * max(spread, 1e-3)
    return out


def category_vote(
    evidence: Evidence,
    categories: dict[str, str | None],
    weights: dict[str, float] | None = None,
    temps: dict[str, float] | None = None,
) -> dict[str, float]:
    """Every voter's distribution over categories, mixed by weight: a probability per category.
    `temps` (from `temperatures`) puts each voter on its model's scale; without, its share of a
    spread of 0.1."""
    weights = WEIGHTS if weights is None else weights
    temps = temps or {voter: SHARES.get(voter, CENTROID_TEMPERATURE) * 0.1 for voter in VOTERS}
    voters = {
        voter: knn_vote(_scores(evidence, voter), categories, NEIGHBOURS, temps[voter])
        if voter.endswith("_knn")
        else softmax(_scores(evidence, voter), temps[voter])
        for voter in VOTERS
    }
    mixed: dict[str, float] = {}
    total = 0.0
    for name, distribution in voters.items():
        weight = weights.get(name, 0.0)
        if not distribution or weight <= 0:
            continue
        total += weight
        for category, p in distribution.items():
            mixed[category] = mixed.get(category, 0.0) + weight * p
    return {c: p / total for c, p in mixed.items()} if total else {}


def duplicate_groups(evidence: dict[str, Evidence], threshold: float) -> list[Duplicate]:
    """Products joined by photos at least `threshold` alike (union-find over the strongest pairs
    first; a group's score is the weakest pair that joined it)."""
    pairs: list[tuple[float, str, str]] = sorted(
        {
            (score, min(sku, other), max(sku, other))
            for sku, item in evidence.items()
            for other, score in item.image.items()
            if score >= threshold and other != sku
        },
        reverse=True,
    )
    parent: dict[str, str] = {}

    def root(sku: str) -> str:
        parent.setdefault(sku, sku)
        return find_root(parent, sku)

    weakest: dict[str, float] = {}
    for score, a, b in pairs:
        ra, rb = root(a), root(b)
        if ra == rb:
            continue
        parent[rb] = ra
        weakest[ra] = min(score, weakest.get(ra, 1.0), weakest.get(rb, 1.0))
        weakest.pop(rb, None)
    members: dict[str, list[str]] = {}
    for sku in parent:
        members.setdefault(root(sku), []).append(sku)
    groups = [Duplicate(sorted(skus), round(weakest[r], 4)) for r, skus in members.items() if len(skus) > 1]
    return sorted(groups, key=lambda g: (-g.score, g.skus))


def judge(
    evidence: dict[str, Evidence],
    listed: dict[str, Listing],
    title_threshold: float | None = None,
    weights: dict[str, float] | None = None,
) -> tuple[list[CategorySuggestion], list[Mismatch]]:
    """Suggestions for uncategorised products, mismatches for categorised ones."""
    categories = {sku: item.category for sku, item in listed.items()}
    suggestions: list[CategorySuggestion] = []
    mismatches: list[Mismatch] = []
    temps = temperatures(evidence)
    for sku, item in evidence.items():
        vote = category_vote(item, categories, weights, temps)
        best = max(vote, key=lambda c: vote[c]) if vote else None
        listing = listed[sku]
        if listing.category is None:
            if best is not None:
                suggestions.append(CategorySuggestion(sku, best, round(vote[best], 4)))
            continue
        if best is not None and best != listing.category:
            confidence, listed_share = vote[best], vote.get(listing.category, 0.0)
            if confidence >= MISMATCH_CONFIDENCE and listed_share <= MISMATCH_LISTED_AT_MOST:
                mismatches.append(
                    Mismatch(
                        sku,
                        listing.category,
                        best,
                        round(confidence, 4),
                        f"its photos and words look like {best} ({confidence:.0%} of the vote), "
                        f"not {listing.category} ({listed_share:.0%})",
                    )
                )
                continue
        if title_threshold is not None and item.title is not None and item.title < title_threshold:
            shortfall = (title_threshold - item.title) / max(abs(title_threshold), 1e-6)
            mismatches.append(
                Mismatch(
                    sku,
                    listing.category,
                    best,
                    round(min(1.0, max(0.0, shortfall)), 4),
                    f"its photo does not match its title {listing.title!r} "
                    f"(similarity {item.title:.2f}, a match needs {title_threshold:.2f})",
                )
            )
    suggestions.sort(key=lambda s: (-s.confidence, s.sku))
    mismatches.sort(key=lambda m: (-m.confidence, m.sku))
    return suggestions, mismatches


# -- the duplicate threshold of this embedder --------------------------------------------------
def copies(photo: Image.Image, rng: random.Random) -> list[Image.Image]:
    """A stored photo as a copycat lists it: re-encoded, resized, re-cropped, recoloured."""
    w, h = photo.size

    def jpeg(image: Image.Image, quality: int) -> Image.Image:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=quality)
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    margin = rng.uniform(0.04, 0.1)
    cropped = photo.crop((int(w * margin), int(h * margin), w - int(w * margin), h - int(h * margin)))
    recoloured = ImageEnhance.Color(photo).enhance(rng.uniform(0.6, 1.4))
    recoloured = ImageEnhance.Brightness(recoloured).enhance(rng.uniform(0.85, 1.15))
    scale = rng.uniform(0.35, 0.6)
    return [
        jpeg(photo, rng.randint(35, 60)),
        jpeg(photo.resize((max(1, int(w * scale)), max(1, int(h * scale)))), 85),
        jpeg(cropped, 85),
        jpeg(recoloured, 85),
    ]


def duplicate_threshold(app: ShopLens, products: int, force: bool = False) -> tuple[float, dict[str, Any]]:
    """Where a copy of a photo sits for this embedder: the similarity that keeps 98 % of copies
    of stored photos, measured on a few of them once per collection (again after the catalog
    grew or shrank by 10 %)."""
    key = f"audit:{app.vectors.collection}"
    stored = get_meta(app.catalog, key)
    if stored and not force:
        known = int(stored.get("products", 0))
        if abs(products - known) < max(1, RECALIBRATE_SHARE * known):
            return float(stored["duplicate"]), dict(stored.get("details", {}))
    rng = random.Random(11)
    photos: list[tuple[str, Image.Image]] = []
    with app.catalog.session() as session:
        candidates = list(session.scalars(select(Product).where(Product.images.any()).limit(CALIBRATION_PHOTOS * 4)))
        rng.shuffle(candidates)
        for product in candidates:
            if len(photos) >= CALIBRATION_PHOTOS:
                break
            image = product.images[0]
            try:
                picture, _ = decode_for_model(app.media.read(image.media_path), app.limits)
            except (OSError, ImageError):
                continue
            photos.append((image_point_id(product.sku, image.sha256), picture))
    scores: list[float] = []
    for point_id, picture in photos:
        original = app.vectors.vector(point_id, IMAGE)
        if original is None:
            continue
        made = copies(picture, rng)
        embedded = app.embedder.embed_images(made)
        scores += [float(embedded.vectors[i] @ original) for i in range(len(made)) if embedded.ok(i)]
    if not scores:
        return DEFAULT_DUPLICATE_THRESHOLD, {"copies": 0, "default": True}
    threshold = float(np.quantile(scores, COPY_KEEP_QUANTILE))
    details = {
        "copies": len(scores),
        "copy_min": round(min(scores), 4),
        "copy_median": round(float(np.median(scores)), 4),
    }
    set_meta(app.catalog, key, {"duplicate": threshold, "products": products, "details": details})
    return threshold, details


# -- the workflow ---------------------------------------------------------------------------------
def audit(app: ShopLens, force_calibration: bool = False) -> AuditReport:
    """Audit the catalog: read SQL's listings, gather each product's evidence from the index,
    then find duplicates, suggest categories and flag mismatches."""
    started = time.perf_counter()
    report = AuditReport()
    listed = listings(app)
    report.products = len(listed)
    if not listed:
        report.notes.append("the catalog is empty: nothing to audit")
        return _done(report, started)
    categories = sorted({item.category for item in listed.values() if item.category})
    if not categories:
        report.notes.append("no product has a category: there is nothing to learn categories from")
    elif len(categories) == 1:
        report.notes.append(f"the catalog has one category ({categories[0]}): no listing can contradict it")
    try:
        names = category_names(app, categories)
    except ShopLensError as exc:  # the model cannot run here: the stored vectors still vote
        names = CategoryNames()
        report.notes.append(f"category names not compared with the products ({exc.message})")
    gathered = gather(app.vectors, listed, names)
    if not gathered.evidence:
        raise AuditError(
            f"the vector store ({app.vectors.identity.describe()}) holds no vectors for the {len(listed)} products "
            "in SQL: it was built by another embedder, or never written; run `shoplens reindex`"
        )
    missing = len(listed) - len(gathered.evidence)
    if missing:
        report.notes.append(f"{missing} products have no vectors yet (the next ingest writes them) and were skipped")
    without_photos = sum(1 for sku in gathered.evidence if listed[sku].photos == 0)
    if without_photos:
        report.notes.append(f"{without_photos} products have no photo: judged by their words alone, never duplicates")
    if gathered.image_points >= 2:
        threshold, _details = _safe_threshold(app, len(listed), force_calibration, report)
        report.duplicate_threshold = round(threshold, 4)
        report.duplicates = duplicate_groups(gathered.evidence, threshold)
    title_threshold = None
    if names.as_captions is not None:
        thresholds = app.search.thresholds()
        title_threshold = thresholds.text if thresholds is not None else None
    report.category_suggestions, report.mismatches = judge(gathered.evidence, listed, title_threshold)
    if len(categories) == 1:
        report.mismatches = [m for m in report.mismatches if m.suggested is None or m.suggested == m.listed]
    return _done(report, started)


def category_names(app: ShopLens, categories: Sequence[str]) -> CategoryNames:
    """The shop's category names as vectors (zero-shot): a handful of texts, the audit's only
    embedding besides the duplicate calibration."""
    if not categories:
        return CategoryNames()
    queries = app.embedder.embed_texts(list(categories), queries=True)
    captions = (
        app.embedder.embed_texts([f"a photo of {c}" for c in categories]) if app.vectors.identity.cross_modal else None
    )
    keep = [i for i in range(len(categories)) if queries.ok(i) and (captions is None or captions.ok(i))]
    if not keep:
        return CategoryNames()
    return CategoryNames(
        tuple(categories[i] for i in keep),
        queries.vectors[keep],
        captions.vectors[keep] if captions is not None else None,
    )


def _safe_threshold(app: ShopLens, products: int, force: bool, report: AuditReport) -> tuple[float, dict[str, Any]]:
    try:
        return duplicate_threshold(app, products, force)
    except ShopLensError as exc:  # the model cannot run here: the default still finds exact copies
        report.notes.append(f"duplicate threshold not calibrated ({exc.message}); using {DEFAULT_DUPLICATE_THRESHOLD}")
        return DEFAULT_DUPLICATE_THRESHOLD, {"default": True}


def _done(report: AuditReport, started: float) -> AuditReport:
    report.seconds = time.perf_counter() - started
    return report


# -- accepting suggestions ----------------------------------------------------------------------
@dataclass
class Accepted:
    changed: dict[str, str]  # sku -> category written
    skipped: dict[str, str]  # sku -> why not

    def as_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "skipped": self.skipped}


def choose(
    report: AuditReport, skus: Iterable[str] | None = None, min_confidence: float | None = None
) -> dict[str, str]:
    """The suggestions to accept: the named SKUs, or all at or above a confidence."""
    if skus is None and min_confidence is None:
        raise UsageError("name the SKUs to accept, or a minimum confidence")
    wanted = set(skus or ())
    return {
        s.sku: s.category
        for s in report.category_suggestions
        if s.sku in wanted or (min_confidence is not None and s.confidence >= min_confidence)
    }


def accept_suggestions(app: ShopLens, chosen: dict[str, str], requested: Iterable[str] = ()) -> Accepted:
    """Write accepted categories: SQL first (the source of truth), then the payloads of the
    product's existing points, then its synced state. Nothing is embedded: a category lives only
    in payloads. A run killed midway leaves the product pending, and the next ingest finishes it.
    Holds the ingest lock so a run cannot write the old payload back meanwhile."""
    from ingest.locking import ingest_lock
    from ingest.sync import desired_state, expected_points

    result = Accepted({}, {sku: "no category suggestion for it" for sku in requested if sku not in chosen})
    if not chosen:
        return result
    key = app.vectors.sync_key
    with ingest_lock(app.catalog, app.settings.home, wait=10):
        with app.catalog.session() as session:
            products = app.catalog.products_by_sku(session, chosen)
            was_synced: dict[str, bool] = {}
            for sku, category in chosen.items():
                product = products.get(sku)
                if product is None:
                    result.skipped[sku] = "no such product"
                    continue
                if product.category:
                    result.skipped[sku] = f"already in {product.category}"
                    continue
                was_synced[sku] = product.synced_state == desired_state(product, key)
                product.category = category
                result.changed[sku] = category
            session.flush()
            wanted = {sku: expected_points(products[sku]) for sku in result.changed}
            states = {sku: desired_state(products[sku], key) for sku in result.changed}
            ids = {sku: list(points) for sku, points in wanted.items()}
        all_ids = [pid for points in ids.values() for pid in points]
        present = app.vectors.existing_ids(all_ids)
        app.vectors.set_payloads(
            {pid: payload for points in wanted.values() for pid, payload in points.items() if pid in present}
        )
        with app.catalog.session() as session:
            for sku in result.changed:
                if was_synced.get(sku) and all(pid in present for pid in ids[sku]):
                    session.execute(update(Product).where(Product.sku == sku).values(synced_state=states[sku]))
    return result


def catalog_version(app: ShopLens) -> tuple[object, ...]:
    """Changes whenever a product is added, changed, synced or removed (cheap: one query)."""
    with app.catalog.session() as session:
        count, newest = session.execute(select(func.count(Product.id), func.max(Product.updated_at))).one()
    return (app.vectors.collection, int(count or 0), str(newest))


class Auditor:
    """Keeps the last report while the catalog is unchanged, so a page that asks again (every
    Streamlit rerun) or accepts one suggestion at a time does not audit the whole catalog again."""

    def __init__(self, app: ShopLens):
        self.app = app
        self._lock = threading.Lock()
        self._last: tuple[tuple[object, ...], AuditReport] | None = None

    def report(self, fresh: bool = False) -> AuditReport:
        with self._lock:
            version = catalog_version(self.app)
            if fresh or self._last is None or self._last[0] != version:
                self._last = (version, audit(self.app))
            return self._last[1]

    def accept(self, skus: Sequence[str] | None = None, min_confidence: float | None = None) -> Accepted:
        report = self.report()
        chosen = choose(report, skus, min_confidence)
        with self._lock:
            result = accept_suggestions(self.app, chosen, skus or ())
            if self._last is not None and self._last[1] is report:
                report.category_suggestions = [s for s in report.category_suggestions if s.sku not in result.changed]
                self._last = (catalog_version(self.app), report)
        return result


def _listed_points(vectors: VectorStore, listed: Mapping[str, Any]) -> Iterator[tuple[str, str, np.ndarray]]:
    """(kind, sku, vector) of every stored point of a product SQL lists."""
    for batch in vectors.backend.scroll(None, True):
        for record in batch:
            kind, sku = record.payload.get("kind"), str(record.payload.get("sku", ""))
            vector = record.vectors.get(kind) if kind in (IMAGE, TEXT) else None
            if vector is not None and sku in listed:
                yield str(kind), sku, vector
