"""Find and repair drift between SQL (the truth) and Qdrant: missing points, orphans, stale payloads.

Finding drift and counting need the vector collection, not the model: they use `app.identity`
(known without loading) and never touch `app.embedder`; only a repair embeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import update

from ingest.pipeline import IngestCounts, Ingestor, IngestResult, ingestor_for
from ingest.sync import expected_points
from services.catalog.models import Product
from services.catalog.store import CatalogStore
from services.context import ShopLens
from services.vectors import IMAGE, TEXT, VectorStore


@dataclass
class ReconcileReport:
    products: int = 0
    points: int = 0
    missing: int = 0
    orphans: int = 0
    stale_payloads: int = 0
    pending_products: list[str] = field(default_factory=list)
    awaiting_images: list[str] = field(default_factory=list)  # a failed image download, retried by ingest
    repaired: bool = False
    images_embedded: int = 0
    texts_embedded: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.orphans or self.stale_payloads or self.pending_products)

    def summary(self) -> str:
        state = "in sync" if self.clean else ("repaired" if self.repaired else "drift found (dry run: nothing changed)")
        return (
            f"{self.products} products, {self.points} points: {self.missing} missing, {self.orphans} orphan, "
            f"{self.stale_payloads} stale payload(s), {len(self.pending_products)} product(s) to re-sync — {state}"
            + (f"; embedded {self.images_embedded} images, {self.texts_embedded} texts" if self.repaired else "")
            + (
                f"; {len(self.awaiting_images)} product(s) lack an image whose download failed "
                f"(the next ingest run fetches it again): {', '.join(self.awaiting_images[:5])}"
                + (" …" if len(self.awaiting_images) > 5 else "")
                if self.awaiting_images
                else ""
            )
        )


def collect_stats(app: ShopLens) -> dict[str, object]:
    """Counts in SQL and Qdrant and whether they agree: the cheap check; reconcile is the thorough one."""
    sql = app.catalog.counts()
    vectors = {"image_points": app.vectors.count(IMAGE), "text_points": app.vectors.count(TEXT)}
    consistent = (
        sql["unsynced"] == 0 and vectors["image_points"] == sql["images"] and vectors["text_points"] == sql["products"]
    )
    return {
        "embedder": app.identity.describe(),
        "collection": app.vectors.collection,
        "sql": sql,
        "qdrant": vectors,
        "consistent": consistent,
    }


@dataclass
class Drift:
    report: ReconcileReport
    orphans: list[str]
    stale: dict[str, dict]


def find_drift(catalog: CatalogStore, vectors: VectorStore) -> Drift:
    """Compare the points SQL implies with the points the collection holds; changes nothing."""
    report = ReconcileReport()
    actual = dict(vectors.all_points())
    expected: dict[str, dict] = {}
    owner: dict[str, str] = {}
    for batch in catalog.iter_products():
        for product in batch:
            report.products += 1
            for pid, payload in expected_points(product).items():
                expected[pid], owner[pid] = payload, product.sku
    report.points = len(actual)
    missing = expected.keys() - actual.keys()
    orphans = sorted(actual.keys() - expected.keys())
    stale = {pid: expected[pid] for pid in expected.keys() & actual.keys() if actual[pid] != expected[pid]}
    report.missing, report.orphans, report.stale_payloads = len(missing), len(orphans), len(stale)
    report.pending_products = sorted({owner[pid] for pid in missing})
    report.awaiting_images = catalog.awaiting_images()
    return Drift(report, orphans, stale)


def reconcile_app(app: ShopLens, dry_run: bool = False) -> ReconcileReport:
    """`reconcile` for an app: a dry run never builds the embedder (`ingestor_for` would).

    A repair builds it first, so that drift is measured in the collection of the model as
    loaded (which may correct the identity known beforehand).
    """
    if dry_run:
        return find_drift(app.catalog, app.vectors).report
    report = reconcile(ingestor_for(app))
    app.search.calibrate()  # a store from before the thresholds existed gets them (cheap when it has them)
    return report


def reconcile(ingestor: Ingestor, dry_run: bool = False) -> ReconcileReport:
    drift = find_drift(ingestor.catalog, ingestor.vectors)
    if dry_run or drift.report.clean:
        return drift.report
    return _repair(ingestor, drift)


def _repair(ingestor: Ingestor, drift: Drift) -> ReconcileReport:
    report, orphans, stale = drift.report, drift.orphans, drift.stale
    ingestor.vectors.delete_ids(orphans)
    ingestor.vectors.set_payloads(stale)
    if report.pending_products:
        with ingestor.catalog.session() as session:
            session.execute(update(Product).where(Product.sku.in_(report.pending_products)).values(synced_state=None))
    result = IngestResult(0, "running", IngestCounts())  # counts only: reconcile is not an ingest run
    ingestor.sync_pending(result)
    report.images_embedded, report.texts_embedded = result.counts.images_embedded, result.counts.texts_embedded
    report.errors = [str(e) for e in result.errors]
    report.repaired = True
    return report
