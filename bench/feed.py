"""A product feed whose images are URLs: ingestion against the model alone, and the re-runs a
schedule makes. The images (distinct 400x400 JPEGs) are served by a local HTTP server in its own
process (bench/feed_server.py) with ETag and Last-Modified, as a shop's CDN would serve them.

(a) the model alone embeds the same decoded images and the products' texts in the same batches;
(b) a fresh ingestion of the feed by URL, three times, each into a store of its own and held against
the model-alone passes before and after it (the median run is the result), timed as the server runs
one: its stores already open (server/state.py opens them when it starts), from reading the feed to
the built index and the calibrated thresholds; (c) the same feed again, unchanged, beside (c') its
conditional requests made by a bare urllib3 pool (the baseline of (c)); (d) one image replaced behind
the same URL.

    .venv/bin/python -m bench.feed [--products 5000] [--repeats 3] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import urllib3
from PIL import Image, ImageDraw

from bench.sections import write_section
from ingest.pipeline import IngestResult, ingestor_for
from ingest.remote import known_sources
from ingest.sources import load_catalog
from services.context import ShopLens
from services.images import decode_for_model
from services.settings import Settings
from services.vectors import close_embedded_clients

HEADING = "## Image feeds by URL: downloads, re-runs, changed images"
SIDE = 400


def photo(seed: int) -> bytes:
    """A distinct 400x400 product-like JPEG (its own palette and shapes)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (SIDE, SIDE), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x0, y0 = (int(v) for v in rng.integers(0, SIDE - 60, 2))
        x1, y1 = x0 + int(rng.integers(40, SIDE // 2)), y0 + int(rng.integers(40, SIDE // 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)
    return buf.getvalue()


def build_feed(root: Path, products: int, base_url: str) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    catalog = root / "feed.csv"
    with catalog.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sku", "title", "description", "category", "price", "currency", "image"])
        for i in range(products):
            (root / "img" / f"{i}.jpg").write_bytes(photo(i))
            url = f"{base_url}/img/{i}.jpg"
            writer.writerow([f"F-{i:05d}", f"Feed product {i}", f"Item {i} of the feed", "Feed", "9.90", "EUR", url])
    return catalog


@contextmanager
def image_host(root: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port_file = root / "port"
    proc = subprocess.Popen([sys.executable, "-m", "bench.feed_server", str(root), str(port_file)])
    try:
        for _ in range(100):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text()}", proc
    finally:
        proc.terminate()
        proc.wait(10)


def served(base_url: str) -> dict[str, int]:
    return dict(httpx.get(f"{base_url}/_stats").json())


def model_alone(app: ShopLens, folder: Path, products: int, batch: int) -> tuple[float, float, float, float]:
    """Seconds the embedder takes for every image (decoded beforehand, outside the timing) and for
    every product text (what the pipeline embeds too), in the pipeline's batches; the CPU seconds
    of both (other tenants of a shared machine move wall time, much less CPU time); and the part of
    the images' seconds spent preparing the photos (`embed_images`' first step, which an ingestion
    does in its decode threads)."""
    images_s = texts_s = cpu_s = prepare_s = 0.0
    for start in range(0, products, batch):
        ids = range(start, min(start + batch, products))
        chunk = [decode_for_model((folder / f"{i}.jpg").read_bytes(), app.limits)[0] for i in ids]
        started, cpu = time.perf_counter(), time.process_time()
        prepared = [app.embedder.prepare_image(image) for image in chunk]
        prepare_s += time.perf_counter() - started
        app.embedder.embed_prepared(prepared)
        images_s += time.perf_counter() - started
        started = time.perf_counter()
        app.embedder.embed_texts([f"Feed product {i}. Item {i} of the feed" for i in ids])
        texts_s += time.perf_counter() - started
        cpu_s += time.process_time() - cpu
    return images_s, texts_s, cpu_s, prepare_s


def requests_alone(app: ShopLens, products: int, host: str) -> float:
    """Wall seconds of the unchanged re-run's conditional requests on their own: one urllib3 pool
    (the library services/fetch.py uses), the run's download threads and per-host connections, the
    validators the first run stored.
    The floor of (c) on this machine, measured in the same run as it."""
    urls = [f"{host}/img/{i}.jpg" for i in range(products)]
    known = known_sources(app.catalog, urls)
    settings = app.settings
    per_host = settings.download_per_host
    client = urllib3.PoolManager(maxsize=per_host, block=True)

    def ask(url: str) -> int:
        stored = known[url]
        headers = {"If-None-Match": stored.etag} if stored.etag else {}
        return client.request("GET", url, headers=headers).status

    with ThreadPoolExecutor(settings.ingest_workers) as pool:
        started = time.perf_counter()
        statuses = list(pool.map(ask, urls))
        seconds = time.perf_counter() - started
    client.clear()
    assert statuses == [304] * products, set(statuses)
    return seconds


def timed_ingest(
    app: ShopLens, catalog: Path, host: str
) -> tuple[float, tuple[float, float, float], IngestResult, dict[str, int]]:
    """Wall time of a run; the wall and CPU seconds the search thresholds' calibration took at its
    end, and the CPU seconds of the rest of the run."""
    ingestor = ingestor_for(app)
    calibration = [0.0, 0.0]
    hook = ingestor.calibrate

    def calibrate() -> None:
        started, cpu = time.perf_counter(), time.process_time()
        if hook is not None:
            hook()
        calibration[0] += time.perf_counter() - started
        calibration[1] += time.process_time() - cpu

    ingestor.calibrate = calibrate
    before = served(host)
    started, cpu = time.perf_counter(), time.process_time()
    result = ingestor.ingest(load_catalog(str(catalog)), trigger="bench")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = served(host)
    counted = {k: after.get(k, 0) - before.get(k, 0) for k in ("requests", "bodies", "not_modified")}
    return seconds, (calibration[0], calibration[1], cpu - calibration[1]), result, counted


def run(products: int, repeats: int = 3) -> dict[str, object]:
    """`repeats` fresh ingestions, each into a store of its own, between model-alone passes (one
    before the first, one after each): a shared machine's speed drifts within minutes, so each
    ingestion is held against the two passes around it and the median run is the result."""
    root = Path(tempfile.mkdtemp(prefix="shoplens-feed-"))

    def settings(home: str) -> Settings:
        return Settings(_env_file=None, home=root / home, embedder="offline", torch_threads=2)

    with image_host(root) as (host, _):
        catalog = build_feed(root, products, host)
        model = ShopLens(settings("model"))  # the passes' embedder: the same loaded models as the runs'
        app: ShopLens | None = None
        try:
            batch = model.settings.ingest_batch_size
            model_alone(model, root / "img", min(products, 2 * batch), batch)  # warm-up
            loads = [os.getloadavg()[0]]
            passes = [model_alone(model, root / "img", products, batch)]
            runs: list[dict[str, object]] = []
            for k in range(repeats):
                if app is not None:
                    app.close()
                app = ShopLens(settings(f"home-{k}"))
                app.catalog, app.vectors  # noqa: B018 - open, as the server opens them when it starts
                ingest_s, (calibrate_s, calibrate_cpu, pipeline_cpu), first, first_served = timed_ingest(
                    app, catalog, host
                )
                loads.append(os.getloadavg()[0])
                passes.append(model_alone(model, root / "img", products, batch))
                loads.append(os.getloadavg()[0])
                before, after = passes[-2], passes[-1]
                alone_s = (before[0] + before[1] + after[0] + after[1]) / 2
                runs.append(
                    {
                        "ingest_s": ingest_s,
                        "model_s": alone_s,
                        "ratio": alone_s / ingest_s,
                        "ratio_passes": [(before[0] + before[1]) / ingest_s, (after[0] + after[1]) / ingest_s],
                        "ratio_cpu": (before[2] + after[2]) / 2 / pipeline_cpu,
                        "pipeline_cpu_s": pipeline_cpu,
                        "calibrate_s": calibrate_s,
                        "calibrate_cpu_s": calibrate_cpu,
                        "index_s": first.counts.index_seconds,
                        "first": _counts(first, first_served),
                    }
                )
            assert app is not None
            rerun_s, _, rerun, rerun_served = timed_ingest(app, catalog, host)
            floor_s = requests_alone(app, products, host)
            (root / "img" / "7.jpg").write_bytes(photo(1_000_000 + 7))  # a new photo behind the same URL
            changed_s, _, changed, changed_served = timed_ingest(app, catalog, host)
            embedder = app.embedder.identity.describe()
        finally:
            if app is not None:
                app.close()
            model.close()
            close_embedded_clients()
    median = sorted(runs, key=lambda r: float(r["ratio"]))[len(runs) // 2]  # type: ignore[arg-type]
    images_s = sum(p[0] for p in passes) / len(passes)
    prepare_s = sum(p[3] for p in passes) / len(passes)
    return {
        "products": products,
        "batch": batch,
        "embedder": embedder,
        "workers": app.settings.ingest_workers,
        "per_host": app.settings.download_per_host,
        "passes": passes,  # (images s, texts s, CPU s, preparing s) of each model-alone pass, in order
        "runs": runs,
        "median": median,
        "load_1min": loads,  # before the first pass, then before and after each pass that follows a run
        "model_rate": products / images_s,
        "model_images_s": images_s,
        "model_prepare_s": prepare_s,
        "rerun_s": rerun_s,
        "rerun_requests_alone_s": floor_s,
        "rerun": _counts(rerun, rerun_served),
        "changed_s": changed_s,
        "changed": _counts(changed, changed_served),
    }


def _counts(result: IngestResult, served: dict[str, int]) -> dict[str, object]:
    c = result.counts
    return {
        "status": result.status,
        "new": c.new,
        "changed": c.changed,
        "unchanged": c.unchanged,
        "images_embedded": c.images_embedded,
        "texts_embedded": c.texts_embedded,
        "downloaded": c.images_downloaded,
        "not_modified": c.images_not_modified,
        "problems": len(result.errors),
        "server": served,
    }


def markdown(r: dict) -> str:
    m, again, one = r["median"], r["rerun"], r["changed"]
    loads = ", ".join(f"{x:.1f}" for x in r["load_1min"])
    runs = [
        f"| {k + 1} | {run['model_s']:.1f} s | {run['ingest_s']:.1f} s (index {run['index_s']:.1f} s beside the "
        f"calibration {run['calibrate_s']:.1f} s) | {run['ratio']:.2f} (pass before {run['ratio_passes'][0]:.2f}, "
        f"after {run['ratio_passes'][1]:.2f}) | {run['ratio_cpu']:.2f} |"
        for k, run in enumerate(r["runs"])
    ]
    return "\n".join(
        [
            HEADING,
            "",
            f"A feed of {r['products']:,} products whose images are URLs (distinct {SIDE}x{SIDE} JPEGs) on a local "
            "HTTP/1.1 server in its own process that sends ETag and Last-Modified; embedder "
            f"{r['embedder']}, batch {r['batch']}, {r['workers']} download threads, at most {r['per_host']} "
            f"connections to the host. {len(r['runs'])} fresh ingestions, each into a store of its own (opened "
            "before the timing, as the server opens its stores when it starts), between "
            "model-alone passes in the same process (one before the first, one after each): each ingestion is "
            "held against the mean of the two passes around it, and the median run is the result. "
            "`python -m bench.feed`.",
            "",
            "| measure | result | target |",
            "|---|---|---|",
            f"| (a) model alone: the same decoded images, same batches | {r['model_rate']:.1f} images/s "
            f"({r['model_images_s']:.1f} s, mean of {len(r['passes'])} passes; of which preparing the photos, "
            f"`prepare_image`, {r['model_prepare_s']:.1f} s) | baseline |",
            f"| (a') model alone: those images and the products' texts (what the pipeline embeds), around the "
            f"median run | {r['products'] / m['model_s']:.1f} products/s ({m['model_s']:.1f} s) | |",
            f"| (b) ingestion of the feed by URL, the median run: download, hash, decode, SQL, media, embed images "
            f"and texts, vectors, index, calibration | {r['products'] / m['ingest_s']:.1f} products/s "
            f"({m['ingest_s']:.1f} s); {m['first']['server']['bodies']:,} bodies served | |",
            f"| (b) / (a'), median of {len(r['runs'])} runs | {m['ratio']:.2f} (runs: "
            + ", ".join(f"{run['ratio']:.2f}" for run in r["runs"])
            + ") | ≥ 0.9 |",
            f"| (c) unchanged re-run: wall time | {r['rerun_s']:.1f} s | < 10 s |",
            f"| (c') its {r['products']:,} conditional requests alone (one urllib3 pool, the same threads and "
            f"connections) | {r['rerun_requests_alone_s']:.1f} s: (c) / (c') = "
            f"{r['rerun_s'] / r['rerun_requests_alone_s']:.2f} | baseline |",
            f"| (c) image bodies downloaded | {again['server']['bodies']} ({again['server']['not_modified']:,} "
            "answered 304) | 0 |",
            f"| (c) products embedded | {again['images_embedded']} images, {again['texts_embedded']} texts | 0 |",
            f"| (d) one image replaced behind its URL: products re-embedded | {one['changed']} "
            f"({one['images_embedded']} image, {one['server']['bodies']} body downloaded, {r['changed_s']:.1f} s) "
            "| exactly 1 |",
            "",
            "| run | (a') model alone, mean of the passes around it | (b) ingestion | (b) / (a') | (b) / (a') in "
            "CPU seconds of this process, without the calibration |",
            "|---|---|---|---|---|",
            *runs,
            "",
            f"Machine load (1-minute average) before the first pass, then before and after each later pass: {loads}.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.feed")
    parser.add_argument("--products", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3, help="fresh ingestions, each between model-alone passes")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    results = run(args.products, args.repeats)
    print(json.dumps(results, indent=1), flush=True)
    text = markdown(results)
    print(text, flush=True)
    write_section(text, args.out, HEADING)


if __name__ == "__main__":
    main()
