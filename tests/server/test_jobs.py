"""Ingest jobs through a real server: uploads while shoppers search, the CLI as a client, the
schedule inside the server, and a server stopped mid-job."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from server import schemas
from server.client import ShopLensClient
from tests.server.conftest import PASSWORD, PRODUCTS, ROOT, Server, server_env, server_file, start_server
from tests.support.catalog import product_photo, product_row, write_catalog, write_rows


def new_products(folder: Path, first: int, count: int) -> tuple[Path, bytes]:
    """A catalog of products first..first+count-1 and a ZIP of their photos (names as in the CSV)."""
    rows, archive = [], io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(first, first + count):
            out = io.BytesIO()
            product_photo(1000 * i).save(out, "JPEG", quality=90)
            zf.writestr(f"photos/p{i}.jpg", out.getvalue())
            rows.append(product_row(i, [f"p{i}.jpg"]))
    return write_rows(folder / "more.csv", rows), archive.getvalue()


def test_an_upload_job_runs_while_eight_shoppers_search(server: Server, tmp_path: Path) -> None:
    catalog, images = new_products(tmp_path, 100, 24)
    errors: list[str] = []
    answered = [0]
    done = threading.Event()

    def shopper(n: int) -> None:
        sku = n % PRODUCTS
        with ShopLensClient(server.url) as client:
            while not done.is_set():
                try:
                    hits = client.search(schemas.SearchQuery(top_k=3), server.photo(sku)).hits
                    if not hits or hits[0].sku != f"SKU-{sku:04d}":
                        errors.append(f"photo of {sku} found {[h.sku for h in hits]}")
                    answered[0] += 1
                except Exception as exc:  # every answer must be a good one
                    errors.append(repr(exc))

    threads = [threading.Thread(target=shopper, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    seen: list[schemas.Job] = []
    try:
        with server.client() as admin:
            preview = admin.preview_upload((catalog.name, catalog.read_bytes()), images)
            assert preview.rows_ok == 24 and preview.images_in_upload == 24 and not preview.problems
            job = admin.ingest_upload((catalog.name, catalog.read_bytes()), images, trigger="admin")
            assert job.status == "queued" and not job.finished
            final = admin.wait_job(job.id, poll=0.05, on_progress=seen.append)
    finally:
        done.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:5]
    assert answered[0] >= 8
    assert final.status == "succeeded", final
    assert final.counts["new"] == 24 and final.counts["images_embedded"] == 24 and final.run_id
    assert final.done == final.total == 24 and final.images_per_second and final.images_per_second > 0
    assert any(0 < j.done < j.total for j in seen) or any(j.status == "running" for j in seen)
    assert list((server.home / "uploads").iterdir()) == []  # the upload's staging copy went with the job
    with server.client(None) as client:
        assert client.search(schemas.SearchQuery(top_k=1), _jpeg(product_photo(1000 * 110))).hits[0].sku == "SKU-0110"
        assert client.health().counts.products == PRODUCTS + 24
    with server.client() as admin:
        runs = admin.runs(5)
        assert runs[0].id == final.run_id and runs[0].trigger == "admin" and runs[0].new == 24
        admin.delete_product("SKU-0110")
        with pytest.raises(Exception, match="no product"):
            admin.delete_product("SKU-0110")


def test_bad_rows_are_reported_on_the_job_and_the_rest_lands(server: Server, tmp_path: Path) -> None:
    rows = [product_row(200, []), product_row(201, [], price="ten"), product_row(202, [], sku="")]
    catalog = write_rows(tmp_path / "bad.csv", rows)
    with server.client() as admin:
        job = admin.wait_job(admin.ingest_upload((catalog.name, catalog.read_bytes())).id, poll=0.05)
        assert job.status == "partial" and job.counts["new"] == 1 and job.problem_count == 2
        assert {p["field"] for p in job.problems} == {"price", "sku"}
        assert {p["code"] for p in job.problems} == {"invalid_field", "missing_field"}
        report = admin.run_report(job.run_id).decode()
        assert report.startswith("row,sku,field,message,code") and "invalid_field" in report
        with pytest.raises(Exception, match="UTF-8"):
            admin.ingest_upload(("latin.csv", "sku,title\nA,Caf\u00e9\n".encode("latin-1")))
        with pytest.raises(Exception, match="catalog file not found"):
            admin.ingest_source(path=tmp_path / "missing.csv")


def _jpeg(img) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def _cli(server: Server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys, json; from cli.main import main; rc = main(sys.argv[1:]); "
        "heavy = [m for m in ('torch', 'open_clip', 'qdrant_client', 'qdrant_edge', 'sqlalchemy') if m in "
        "sys.modules]; "
        "print('MODULES ' + json.dumps(heavy), file=sys.stderr); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=server.env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_the_cli_is_a_client_of_the_running_server(server: Server, tmp_path: Path) -> None:
    """With the server holding the embedded store, the CLI in another process still works, through it."""
    catalog = write_catalog(tmp_path / "shop", PRODUCTS + 2)  # two more products than the server's
    out = _cli(server, "ingest", str(catalog), "--json")
    summary = json.loads(out.stdout)
    assert (
        summary["status"] == "succeeded"
        and summary["new"] == 2
        and summary["changed"] + summary["unchanged"] == PRODUCTS
    )

    search = _cli(server, "search", "--image", str(tmp_path / "shop" / "images" / "p9-0.jpg"), "--json", "--top-k", "2")
    assert json.loads(search.stdout)[0]["sku"] == "SKU-0009"
    assert "MODULES []" in search.stderr  # no model, no store: only an HTTP call

    stats = _cli(server, "stats", "--json")
    assert json.loads(stats.stdout)["consistent"] and "MODULES []" in stats.stderr
    runs = json.loads(_cli(server, "runs", "--json").stdout)
    assert runs[0]["trigger"] == "cli" and runs[0]["new"] == 2

    missing = _cli(server, "ingest", str(tmp_path / "nope.csv"), check=False)
    assert missing.returncode == 2 and "catalog file not found" in missing.stderr
    nothing = _cli(server, "search", check=False)
    assert nothing.returncode == 2 and "give --image PATH, --text TEXT, or both" in nothing.stderr


def test_schedule_in_the_server_and_a_stop_mid_job(tmp_path: Path, openclip_env: dict[str, str], route_server) -> None:
    """The schedule's first run starts with the server; SIGTERM lets its batch finish, records the
    job and the run as interrupted, and removes server.json; the next run completes the work."""
    rows = []
    for i in range(12):
        route_server.routes[f"/p{i}.jpg"] = (200, "image/jpeg", _jpeg(product_photo(1000 * i)), 0.3)
        rows.append(product_row(i, [f"{route_server.url}/p{i}.jpg"]))
    catalog = write_rows(tmp_path / "catalog.csv", rows)
    env = server_env(
        openclip_env,
        tmp_path / "home",
        SHOPLENS_INGEST_BATCH_SIZE="2",
        SHOPLENS_INGEST_WORKERS="1",
        SHOPLENS_CORS_ORIGINS="https://shop.example",
    )
    running = start_server(tmp_path / "home", catalog, env, "--schedule", str(catalog), "--every", "1h")
    try:
        # the shop's own web pages may call the API from the browser; other origins may not
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        allowed = httpx.options(f"{running.url}/api/v1/search", headers={"Origin": "https://shop.example", **preflight})
        assert allowed.headers.get("access-control-allow-origin") == "https://shop.example"
        other = httpx.options(f"{running.url}/api/v1/search", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers
        with ShopLensClient(running.url, running.token) as admin:
            assert "every 1h" in (admin.health().schedule or "")
            deadline = time.monotonic() + 60
            while not (jobs := admin.jobs()) or jobs[0].done < 2:
                assert time.monotonic() < deadline, jobs
                time.sleep(0.05)
            job = jobs[0]
            assert job.trigger == "schedule" and job.status == "running" and job.total == 12
        assert running.stop(signal.SIGTERM) == 0
        assert not (server_file(running.home)).exists()
    finally:
        running.stop(signal.SIGKILL)
    for path, (status, kind, body, _) in list(route_server.routes.items()):
        route_server.routes[path] = (status, kind, body, 0.0)  # slow images only kept that run going
    restarted = start_server(tmp_path / "home", catalog, env)
    try:
        with ShopLensClient(restarted.url, restarted.token) as admin:
            stopped = admin.job(job.id)
            assert stopped.status == "interrupted" and stopped.finished and 2 <= stopped.counts["new"] < 12, stopped
            assert admin.runs(1)[0].status == "interrupted"
            again = admin.wait_job(admin.ingest_source(path=catalog).id, poll=0.1)
            assert again.status == "succeeded" and again.counts["new"] + again.counts["unchanged"] == 12
            assert admin.stats().consistent and admin.health().counts.products == 12
    finally:
        restarted.stop()


def test_a_second_server_on_the_same_home_is_refused(server: Server) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "--no-pages", "--api-port", "0"],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "in use" in proc.stderr and "Traceback" not in proc.stderr
    assert httpx.get(f"{server.url}/api/v1/health").status_code == 200
    assert PASSWORD not in proc.stderr
