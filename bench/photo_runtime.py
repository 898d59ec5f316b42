"""The offline photo network in ONNX Runtime (what serves it) against eager torch (what trained it).

The same folded MobileNetV2, the same preprocessed batches of 32 photos, the two runtimes taking
turns, each round timed whole. Two conditions: alone, and beside two Python threads that hold the
GIL in slices, as an ingest's download, decode and SQL threads do. Each in two processes: glibc's
default allocator settings (what a user runs) and the malloc tuning the other benchmarks run with
(MALLOC_MMAP_THRESHOLD_ raised, so freed feature maps are not handed back to the system).

    .venv/bin/python -m bench.photo_runtime [--photos 320] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bench.feed import photo
from bench.sections import write_section

HEADING = "## Offline photo network: ONNX Runtime against eager torch"
BATCH, THREADS, ROUNDS = 32, 2, 5
TUNED = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


def batches(photos: int) -> list[np.ndarray]:
    from services.embedders.offline import preprocess

    arrays = [preprocess(Image.open(io.BytesIO(photo(seed))).convert("RGB"), "crop") for seed in range(photos)]
    return [np.stack(arrays[i : i + BATCH]) for i in range(0, photos, BATCH)]


def gil_holders(stop: threading.Event, count: int = 2) -> list[threading.Thread]:
    """Threads running pure Python in slices with short waits between them."""

    def work() -> None:
        while not stop.is_set():
            sum(i * i for i in range(2_000))
            time.sleep(0.0005)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def measure(photos: int) -> dict[str, dict[str, float]]:
    """Seconds per batch (median of the rounds) of each runtime, alone and beside GIL holders."""
    import torch

    from services.embedders.offline import TorchFeatures, load_image_model, trained_model

    torch.set_num_threads(THREADS)
    data = batches(photos)
    runtimes: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "torch": TorchFeatures(trained_model(), "cpu"),
        "onnxruntime": load_image_model("cpu", THREADS),
    }
    for run in runtimes.values():
        run(data[0])  # warm-up
    result: dict[str, dict[str, float]] = {}
    for condition in ("alone", "beside two GIL-holding threads"):
        stop = threading.Event()
        holders = gil_holders(stop) if condition != "alone" else []
        rounds: dict[str, list[float]] = {name: [] for name in runtimes}
        for _ in range(ROUNDS):
            for name, run in runtimes.items():  # the two take turns: a busy moment hits both
                started = time.perf_counter()
                for batch in data:
                    run(batch)
                rounds[name].append((time.perf_counter() - started) / len(data))
        stop.set()
        for thread in holders:
            thread.join()
        result[condition] = {name: statistics.median(values) for name, values in rounds.items()}
    return result


def run(photos: int) -> dict[str, object]:
    """`measure` in a child process per allocator setting (glibc reads them once, at start)."""
    out: dict[str, object] = {"photos": photos, "batch": BATCH, "threads": THREADS, "load": os.getloadavg()[0]}
    for label, extra in (("glibc defaults", {}), ("malloc tuning", TUNED)):
        env = {k: v for k, v in os.environ.items() if k not in TUNED} | extra
        child = subprocess.run(
            [sys.executable, "-m", "bench.photo_runtime", "--child", "--photos", str(photos)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        out[label] = json.loads(child.stdout.strip().splitlines()[-1])
    return out


def markdown(r: dict) -> str:
    lines = [
        HEADING,
        "",
        f"The offline embedder's MobileNetV2 (BatchNorms folded), {r['photos']} synthetic 400x400 product photos "
        f"preprocessed beforehand, batches of {r['batch']}, {r['threads']} threads (ONNX Runtime as the embedder "
        f"serves a batch this large: {r['threads']} single-threaded streams, services/embedders/streams.py); the "
        "two runtimes take turns, "
        f"{ROUNDS} rounds each, median seconds per batch. GIL-holding threads: two Python threads running pure "
        "Python in slices, as an ingest's download, decode and SQL threads do. `python -m bench.photo_runtime`.",
        "",
        "| allocator | condition | eager torch | ONNX Runtime | torch / ONNX Runtime |",
        "|---|---|---|---|---|",
    ]
    for label in ("glibc defaults", "malloc tuning"):
        for condition, seconds in r[label].items():
            t, o = seconds["torch"], seconds["onnxruntime"]
            lines.append(f"| {label} | {condition} | {t:.3f} s | {o:.3f} s | {t / o:.2f} |")
    slow = {label: r[label]["beside two GIL-holding threads"] for label in ("glibc defaults", "malloc tuning")}
    alone = {label: r[label]["alone"] for label in ("glibc defaults", "malloc tuning")}
    tuned_t = slow["malloc tuning"]["torch"] / alone["malloc tuning"]["torch"]
    tuned_o = slow["malloc tuning"]["onnxruntime"] / alone["malloc tuning"]["onnxruntime"]
    lines += [
        "",
        f"Beside the GIL-holding threads (malloc tuning) eager torch took {tuned_t:.2f}x its time alone and "
        f"ONNX Runtime {tuned_o:.2f}x. Machine load (1-minute average) at the start: {r['load']:.1f}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.photo_runtime")
    parser.add_argument("--photos", type=int, default=320)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.photos)))
        return
    text = markdown(run(args.photos))
    print(text)
    write_section(text, args.out, HEADING)


if __name__ == "__main__":
    main()
