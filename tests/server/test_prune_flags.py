"""`prune` and `force_prune` through a real server: the JSON API, an upload, and the CLI as its
client (issue 17 item 4)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.server.conftest import PASSWORD, PRODUCTS, ROOT, Server
from tests.support.catalog import read_rows, write_rows

UNREADABLE = ',"Mystery "thing", x",,Bags,Acme,1.00,EUR,yes,,red\n'  # a row whose SKU cannot be read


def feed(server: Server, products: int) -> Path:
    """The server's catalog with its first `products` rows and a row that cannot be read, beside
    the catalog's images."""
    path = write_rows(server.catalog.parent / f"feed-{products}.csv", read_rows(server.catalog)[:products])
    with path.open("a", encoding="utf-8") as fh:
        fh.write(UNREADABLE)
    return path


def photos(server: Server) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for image in (server.catalog.parent / "images").iterdir():
            zf.write(image, f"images/{image.name}")
    return out.getvalue()


def test_prune_waits_for_rows_it_cannot_read_unless_forced(server: Server) -> None:
    catalog = feed(server, PRODUCTS - 1)
    with server.client() as admin:
        job = admin.wait_job(admin.ingest_source(path=catalog, prune=True).id, poll=0.05)
        assert job.status == "partial" and job.counts["pruned"] == 0
        assert [p["code"] for p in job.problems] == ["prune_skipped", "unreadable_row"]
        assert admin.health().counts.products == PRODUCTS

        upload = admin.ingest_upload((catalog.name, catalog.read_bytes()), photos(server), force_prune=True)
        job = admin.wait_job(upload.id, poll=0.05)
        assert job.counts["pruned"] == 1 and [p["code"] for p in job.problems] == ["unreadable_row"]

    env = {**server.env, "SHOPLENS_SERVER_URL": server.url, "SHOPLENS_ADMIN_PASSWORD": PASSWORD}
    proc = subprocess.run(  # the CLI, a client of the server, sends it the path: the JSON API
        [sys.executable, "-m", "cli.main", "ingest", str(feed(server, PRODUCTS - 2)), "--force-prune", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pruned"] == 1
    with server.client() as admin:
        assert admin.health().counts.products == PRODUCTS - 2
