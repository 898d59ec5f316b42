"""The `shoplens` command as a user runs it: exit codes, stdout, stderr.

Most tests run the command inside the test process (tests/support/cli.py); the one-line errors a
shell sees keep a real subprocess, since how the process ends is what they are about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.catalog import product_photo, variant, write_catalog
from tests.support.cli import shoplens as shoplens_in_process


@pytest.fixture
def cli_env(tmp_path: Path, openclip_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **openclip_env, "SHOPLENS_HOME": str(tmp_path / "home"), "SHOPLENS_INGEST_BATCH_SIZE": "4"}
    env.pop("SHOPLENS_DATABASE_URL", None)
    env.pop("SHOPLENS_QDRANT_URL", None)
    return env


@pytest.fixture
def run(tmp_path: Path, cli_env: dict[str, str]):
    def shoplens(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = shoplens_in_process(*args, env=cli_env, cwd=tmp_path)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    return shoplens


@pytest.fixture
def run_process(tmp_path: Path, cli_env: dict[str, str]):
    def shoplens(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )

    return shoplens


def test_ingest_search_stats_reindex(run, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 6)
    out = run("ingest", str(catalog), "--json")
    summary = json.loads(out.stdout)
    assert summary["new"] == 6 and summary["images_embedded"] == 6 and Path(summary["report"]).is_file()
    assert "embedder: openclip" in out.stderr

    query = tmp_path / "query.jpg"
    variant(product_photo(4000), 1).save(query)
    hits = json.loads(run("search", "--image", str(query), "--json", "--top-k", "3").stdout)
    assert hits[0]["sku"] == "SKU-0004"
    assert {"sku", "title", "score", "price", "category", "image_url"} <= set(hits[0])
    assert hits[0]["image_url"].startswith("/api/v1/images/")  # the same hit bodies as the API

    filtered = json.loads(run("search", "--image", str(query), "--json", "--category", "Bags", "--in-stock").stdout)
    assert filtered and all(h["category"] == "Bags" and h["in_stock"] for h in filtered)

    phone = tmp_path / "IMG_0042.jpg"  # a 48-megapixel phone photo: decoded at a reduced scale, not refused
    product_photo(4000).resize((8064, 6048)).save(phone, "JPEG", quality=70)
    assert json.loads(run("search", "--image", str(phone), "--json", "--top-k", "1").stdout)[0]["sku"] == "SKU-0004"

    stats = json.loads(run("stats", "--json").stdout)
    assert stats["consistent"] and stats["sql"]["products"] == 6 and stats["qdrant"]["image_points"] == 6

    again = json.loads(run("ingest", str(catalog), "--json").stdout)
    assert again["unchanged"] == 6 and again["images_embedded"] == 0

    assert "succeeded" in run("reindex").stdout
    assert json.loads(run("stats", "--json").stdout)["consistent"]
    text = run("search", "--text", "Product 2", "--top-k", "2")
    assert "SKU-" in text.stdout and "result(s) in" in text.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["ingest", "missing.csv"], "catalog file not found: missing.csv"),
        (["search"], "give --image PATH, --text TEXT, or both"),
        (["search", "--image", "nope.jpg"], "image file not found: nope.jpg"),
        (["search", "--image", "bad.jpg"], "not a recognised image format"),
        (["ingest", "latin1.csv"], "not valid UTF-8"),
    ],
)
def test_user_mistakes_are_one_clear_line(run_process, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    (tmp_path / "latin1.csv").write_bytes("sku,title\nA,Caf\u00e9\n".encode("latin-1"))
    proc = run_process(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("shoplens: error: ") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_embedder_name_is_a_user_error(run, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "stats"],
        env={
            **os.environ,
            "SHOPLENS_HOME": str(tmp_path),
            "SHOPLENS_EMBEDDER": "openclip",
            "SHOPLENS_OPENCLIP_MODEL": "ViT-B-32",
            "SHOPLENS_OPENCLIP_PRETRAINED": str(tmp_path / "missing.pt"),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "open_clip checkpoint not found" in proc.stderr and "Traceback" not in proc.stderr


def test_import_vendure(run, tmp_path: Path) -> None:
    assets = tmp_path / "vendure" / "assets"
    (assets / "images").mkdir(parents=True)
    product_photo(1).save(assets / "images" / "a.jpg")
    (assets / "products.csv").write_text(
        "name ,slug ,description ,assets ,facets ,optionGroups,optionValues,sku ,price "
        ",taxCategory,stockOnHand,trackInventory,variantAssets,variantFacets\n"
        "Laptop ,laptop ,Fast. ,a.jpg ,category:Electronics|category:Computers|brand:Apple ,,,L1 "
        ",1299.00,standard,100,,,\n"
        " , , , , ,,,L2 ,1399.00,standard,100,,,\n",
        encoding="utf-8",
    )
    out = tmp_path / "catalog.csv"
    assert "wrote 1 products" in run("import-vendure", str(assets), "--out", str(out)).stdout
    summary = json.loads(run("ingest", str(out), "--json").stdout)
    assert summary["new"] == 1 and summary["errors"] == 0
    hit = json.loads(run("search", "--image", str(assets / "images" / "a.jpg"), "--json").stdout)[0]
    assert (hit["sku"], hit["category"], hit["price"]) == ("L1", "Computers", 1299.0)


def test_eval_reports_recall_and_mrr(run, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "shop", 6)
    run("ingest", str(catalog))
    queries = tmp_path / "queries" / "q.csv"
    (tmp_path / "queries").mkdir()
    for i in range(6):
        variant(product_photo(1000 * i), i).save(tmp_path / "queries" / f"q{i}.jpg")
    rows = [f"q{i}.jpg,,SKU-{i:04d}" for i in range(6)] + [
        ",Product 3 chair. A distinctive item number 3 with pattern 8.,SKU-0003",
        "q0.jpg,,SKU-0005",
    ]
    queries.write_text("image,text,expected_sku\n" + "\n".join(rows) + "\n")
    out = json.loads(run("eval", str(queries), "--json", "--report", str(tmp_path / "misses.csv")).stdout)
    assert out["queries"] == 8
    assert out["recall@1"] == pytest.approx(7 / 8) and out["recall@10"] == 1.0  # the mislabelled query ranks lower
    assert 7 / 8 < out["mrr"] < 1.0
    misses = (tmp_path / "misses.csv").read_text().splitlines()
    assert len(misses) == 2 and "SKU-0005" in misses[1]


def test_unreachable_qdrant_server_is_one_clear_line(run, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "stats"],
        env={
            **os.environ,
            "SHOPLENS_HOME": str(tmp_path),
            "SHOPLENS_EMBEDDER": "offline",
            "SHOPLENS_QDRANT_URL": f"http://127.0.0.1:{port}",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "shoplens: error: Qdrant is unreachable" in proc.stderr and "Traceback" not in proc.stderr
