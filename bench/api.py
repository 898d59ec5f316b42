"""The server against the in-process search call, in the same run: API search p50/p99 for photo
and text queries with 1 and 8 concurrent clients, and `shoplens search` wall time against a
running server and without one. Writes its section of BENCHMARKS.md (`bench.run` keeps it).

    .venv/bin/python -m bench.api [--embedder offline] [--rounds 3]

Rounds alternate in-process and server measurements so that drift of this shared machine hits
both alike. The in-process baseline is exactly what the server runs for a request (decode +
`SearchService.search`); the difference is HTTP, JSON and the server's threads.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from bench import sections
from bench.augment import augmented_queries
from bench.run import machine, settings_for, spread
from cli.samples import sample_catalog
from ingest.pipeline import ingestor_for
from ingest.readers import read_catalog
from server import schemas
from server.client import ShopLensClient
from services.context import ShopLens
from services.embedders.registry import clear_cache
from services.images import decode_for_model
from services.search import SearchRequest
from services.vectors import close_embedded_clients

HEADING = "## The server: API search and the CLI as its client"
ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def _env(app: ShopLens) -> dict[str, str]:
    s = app.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLENS_")}
    env.update(
        {
            "SHOPLENS_HOME": str(s.home),
            "SHOPLENS_EMBEDDER": s.embedder,
            "SHOPLENS_TORCH_THREADS": str(s.torch_threads),
            "HF_HUB_OFFLINE": "1",
        }
    )
    if s.embedder == "openclip":
        env["SHOPLENS_OPENCLIP_MODEL"] = s.openclip_model
    return env


def in_process(app: ShopLens, photos: list[bytes], texts: list[str]) -> dict[str, dict[str, float]]:
    """What one API request does, called directly: decode + search."""
    out = {}
    for kind, items in (("photo", photos), ("text", texts)):
        ms = []
        for item in items:
            t = time.perf_counter()
            if kind == "photo":
                app.search.search(SearchRequest(image=decode_for_model(item, app.limits)[0], top_k=10))  # type: ignore[arg-type]
            else:
                app.search.search(SearchRequest(text=item, top_k=10))  # type: ignore[arg-type]
            ms.append((time.perf_counter() - t) * 1000)
        out[kind] = _percentiles(ms)
    return out


def over_http(url: str, photos: list[bytes], texts: list[str], clients: int) -> dict[str, dict[str, float]]:
    """Each of `clients` threads sends the whole list through its own connection."""
    out = {}
    for kind, items in (("photo", photos), ("text", texts)):

        def one_client(_n: int, items: list = items, kind: str = kind) -> list[float]:
            ms = []
            with ShopLensClient(url) as client:
                for item in items:
                    t = time.perf_counter()
                    if kind == "photo":
                        client.search(schemas.SearchQuery(top_k=10), item)
                    else:
                        client.search(schemas.SearchQuery(text=item, top_k=10))
                    ms.append((time.perf_counter() - t) * 1000)
            return ms

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = [ms for part in pool.map(one_client, range(clients)) for ms in part]
        wall = time.perf_counter() - started
        out[kind] = {**_percentiles(results), "per_second": len(results) / wall}
    return out


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--no-pages", "--api-port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    with ShopLensClient(url) as client:
        while time.monotonic() < deadline:
            try:
                if client.health().model_loaded:
                    return process, url
            except Exception:
                time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def cli_wall(env: dict[str, str], photo: Path, runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "cli.main", "search", "--image", str(photo), "--json"],
            env=env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds.append(time.perf_counter() - t)
    return seconds


def run(embedder: str, rounds: int, cache: Path) -> dict[str, object]:
    catalog_path = sample_catalog(cache)
    catalog = read_catalog(catalog_path)
    home = Path(tempfile.mkdtemp(prefix=f"bench-api-{embedder}-"))
    app = ShopLens(settings_for(embedder, home, cache))
    ingestor_for(app).ingest(catalog, trigger="bench")
    photos = []
    for i, record in enumerate(r for r in catalog.records if r.images):
        with Image.open((catalog.base_dir / record.images[0]).resolve()) as img:
            for query in augmented_queries(img, seed=11, index=i, count=1):
                buffer = io.BytesIO()
                query.save(buffer, format="JPEG", quality=90)
                photos.append(buffer.getvalue())
    texts = [r.title for r in catalog.records]
    photo_file = home / "query.jpg"
    photo_file.write_bytes(photos[0])
    env = _env(app)
    describe = app.identity.describe()
    app.search.search(SearchRequest(text="warm up"))  # both models loaded before any timing

    results: dict[str, list] = {
        "in_process": [],
        **{f"api_{c}": [] for c in CONCURRENCY},
        "cli_server": [],
        "cli_local": [],
    }
    for _ in range(rounds):
        results["in_process"].append(in_process(app, photos, texts))
        app.close()
        clear_cache()
        close_embedded_clients()
        results["cli_local"] += cli_wall(env, photo_file, 1)
        server, url = start_server(env)
        try:
            for clients in CONCURRENCY:
                results[f"api_{clients}"].append(over_http(url, photos, texts, clients))
            results["cli_server"] += cli_wall(env, photo_file, 3)
        finally:
            server.terminate()
            server.wait(60)
        app = ShopLens(app.settings)
        app.search.search(SearchRequest(text="warm up"))
    app.close()
    clear_cache()
    close_embedded_clients()
    summary: dict[str, object] = {"embedder": describe, "photos": len(photos), "texts": len(texts), "rounds": rounds}
    for key in ["in_process", *(f"api_{c}" for c in CONCURRENCY)]:
        summary[key] = {
            kind: {stat: spread([r[kind][stat] for r in results[key]]) for stat in results[key][0][kind]}
            for kind in ("photo", "text")
        }
    summary["cli_server"] = spread(results["cli_server"])
    summary["cli_local"] = spread(results["cli_local"])
    return summary


def section(result: dict[str, object], m: dict[str, str]) -> str:
    def f(s: dict[str, float], digits: int = 0) -> str:
        return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"

    base = result["in_process"]
    lines = [
        HEADING,
        "",
        f"`python -m bench.api` on {time.strftime('%Y-%m-%d')}; {m['cpu']}, {m['cores']} cores. Embedder: "
        f"{result['embedder']}.",
        f"The Vendure sample (54 products) in the embedded store; {result['photos']} shopper-style photos (one "
        "augmented",
        f"view per product, JPEG) and {result['texts']} product titles as text queries, top-10 products. In-process "
        "is the",
        "same decode + search call the server makes for a request, in this benchmark's own process. Over HTTP each",
        "client sends every query through its own connection; with 8 clients all 8 run at once on these 2 cores.",
        f"Medians of per-round figures [min–max] over {result['rounds']} rounds, in-process and server alternating.",
        "",
        "| query | in-process p50 / p99 | API 1 client p50 / p99 | API 8 clients p50 / p99 | 8 clients, queries/s | "
        "API 1 client p50 / in-process p50 |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("photo", "text"):
        one, eight = result["api_1"][kind], result["api_8"][kind]  # type: ignore[index]
        ratio = one["p50"]["median"] / base[kind]["p50"]["median"]  # type: ignore[index]
        lines.append(
            f"| {kind} | {f(base[kind]['p50'], 1)} / {f(base[kind]['p99'], 1)} ms | {f(one['p50'], 1)} / "
            f"{f(one['p99'], 1)} ms | "  # type: ignore[index]
            f"{f(eight['p50'], 1)} / {f(eight['p99'], 1)} ms | {f(eight['per_second'], 1)} (1 client: "
            f"{f(one['per_second'], 1)}) | {ratio:.2f} |"
        )
    server, local = result["cli_server"], result["cli_local"]
    lines += [
        "",
        "`shoplens search --image photo.jpg --json`, whole process wall time, with the server running (the CLI sends",
        "the photo to it and imports no model or store) and without one (it opens the stores and loads the model):",
        "",
        "| CLI search | wall seconds | ratio to the local run |",
        "|---|---|---|",
        f"| against the running server | {f(server, 2)} | {server['median'] / local['median']:.2f} |",  # type: ignore[index]
        f"| no server: local stores and model | {f(local, 2)} | 1.00 |",
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str, out: Path) -> None:
    """This benchmark's section of BENCHMARKS.md, replaced (or appended)."""
    sections.write_section(text, out, HEADING)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api")
    parser.add_argument("--embedder", default="offline")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "shoplens-bench")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    result = run(args.embedder, args.rounds, args.cache)
    print(json.dumps(result, indent=1), flush=True)
    write_section(section(result, machine()), args.out)


if __name__ == "__main__":
    main()
