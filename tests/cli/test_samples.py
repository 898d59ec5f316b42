"""The sample catalog download, offline: a local HTTP server plays the npm registry."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cli import samples
from cli.samples import SampleError, sample_catalog
from tests.support.catalog import product_photo

VENDURE_HEADER = [
    "name",
    "slug",
    "description",
    "assets",
    "facets",
    "optionGroups",
    "optionValues",
    "sku",
    "price",
    "taxCategory",
    "stockOnHand",
    "trackInventory",
    "variantAssets",
    "variantFacets",
]


def jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    product_photo(seed, (160, 120)).save(out, "JPEG")
    return out.getvalue()


def vendure_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([f"{h}   " for h in VENDURE_HEADER])  # Vendure pads its header
    writer.writerow(
        [
            "Laptop",
            "laptop",
            "A laptop.",
            "laptop.jpg",
            "category:Electronics|category:Computers|brand:Apple",
            "",
            "",
            "L1",
            "1299.00",
            "standard",
            "100",
            "",
            "",
            "",
        ]
    )
    writer.writerow(["", "", "", "", "", "", "15 inch", "L2", "1399.00", "standard", "100", "", "", ""])
    writer.writerow(
        [
            "Chair",
            "chair",
            "A chair.",
            "chair.jpg",
            "category:Furniture|color:red",
            "",
            "",
            "C1",
            "99.00",
            "standard",
            "0",
            "",
            "",
            "",
        ]
    )
    return out.getvalue().encode()


def make_tarball(
    extra: dict[str, bytes] | None = None, links: dict[str, str] | None = None, with_catalog: bool = True
) -> bytes:
    files = {
        "package/package.json": b'{"name": "@vendure/create"}',
        "package/assets/index.hbs": b"{{template}}",
        "package/assets/images/laptop.jpg": jpeg(1),
        "package/assets/images/chair.jpg": jpeg(2),
        "package/assets/images/notes.txt": b"not an image",
        **({"package/assets/products.csv": vendure_csv()} if with_catalog else {}),
        **(extra or {}),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return out.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@dataclass
class FakeRegistry:
    url: str
    tarball: bytes = b""
    integrity: str = ""
    requests: list[str] = field(default_factory=list)

    def serve(self, tarball: bytes, claimed: str | None = None) -> None:
        self.tarball, self.integrity = tarball, claimed or integrity(tarball)


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    state = FakeRegistry(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path in ("/@vendure%2fcreate/3.7.3", "/@vendure%2Fcreate/3.7.3"):
                body = json.dumps(
                    {
                        "name": "@vendure/create",
                        "version": "3.7.3",
                        "dist": {
                            "tarball": f"{state.url}/@vendure/create/-/create-3.7.3.tgz",
                            "integrity": state.integrity,
                        },
                    }
                ).encode()
            elif self.path == "/@vendure/create/-/create-3.7.3.tgz":
                body = state.tarball
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_downloads_verifies_extracts_and_converts(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.serve(make_tarball())
    catalog = sample_catalog(tmp_path / "home", registry=registry.url)
    assert catalog == tmp_path / "home" / "samples" / "vendure-3.7.3" / "catalog.csv"
    rows = list(csv.DictReader(catalog.open()))
    assert [(r["sku"], r["title"], r["category"], r["brand"], r["in_stock"], r["variants"]) for r in rows] == [
        ("L1", "Laptop", "Computers", "Apple", "yes", "2"),
        ("C1", "Chair", "Furniture", "", "no", "1"),
    ]
    assert (catalog.parent / rows[0]["image"]).read_bytes() == jpeg(1)
    extracted = sorted(p.relative_to(catalog.parent).as_posix() for p in catalog.parent.rglob("*") if p.is_file())
    assert extracted == [
        ".complete",
        "assets/images/chair.jpg",
        "assets/images/laptop.jpg",
        "assets/products.csv",
        "catalog.csv",
    ]
    assert (tmp_path / "home" / "samples" / "create-3.7.3.tgz").read_bytes() == registry.tarball
    assert len(registry.requests) == 2


def test_second_run_uses_the_cache_without_network(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.serve(make_tarball())
    first = sample_catalog(tmp_path, registry=registry.url)
    stamp = (first.parent / "assets" / "images" / "laptop.jpg").stat().st_mtime_ns
    requests = len(registry.requests)
    again = sample_catalog(tmp_path, registry="http://127.0.0.1:9")  # nothing listens there
    assert again == first and len(registry.requests) == requests
    # the files are not rewritten, so a re-ingest sees unchanged rows
    assert (first.parent / "assets" / "images" / "laptop.jpg").stat().st_mtime_ns == stamp


def test_cached_tarball_is_reused_when_the_unpacked_copy_is_gone(registry: FakeRegistry, tmp_path: Path) -> None:
    import shutil

    registry.serve(make_tarball())
    first = sample_catalog(tmp_path, registry=registry.url)
    shutil.rmtree(first.parent)
    again = sample_catalog(tmp_path, registry="http://127.0.0.1:9")
    assert again.is_file() and len(registry.requests) == 2


def test_integrity_mismatch_is_refused_and_nothing_is_kept(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.serve(make_tarball(), claimed=integrity(b"something else"))
    with pytest.raises(SampleError, match="does not match the registry's integrity hash"):
        sample_catalog(tmp_path, registry=registry.url)
    assert not any(p.is_file() for p in (tmp_path / "samples").rglob("*"))


def test_a_tampered_cache_is_downloaded_again(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.serve(make_tarball())
    catalog = sample_catalog(tmp_path, registry=registry.url)
    import shutil

    shutil.rmtree(catalog.parent)
    (tmp_path / "samples" / "create-3.7.3.tgz").write_bytes(b"tampered")
    assert sample_catalog(tmp_path, registry=registry.url).is_file()
    assert len(registry.requests) == 4
    assert (tmp_path / "samples" / "create-3.7.3.tgz").read_bytes() == registry.tarball


@pytest.mark.parametrize(
    "tarball",
    [
        make_tarball({"package/assets/images/../../../../escaped.jpg": jpeg(3)}),
        make_tarball({"/tmp/absolute-escape.jpg": jpeg(3)}),
        make_tarball({"package/../../escaped.txt": b"x"}),
        make_tarball(links={"package/assets/images/link.jpg": "/etc/passwd"}),
    ],
    ids=["dotdot-in-images", "absolute", "dotdot-elsewhere", "symlink"],
)
def test_unsafe_paths_are_refused(registry: FakeRegistry, tmp_path: Path, tarball: bytes) -> None:
    registry.serve(tarball)  # correctly signed: the registry itself serves a hostile package
    home = tmp_path / "deep" / "er" / "home"
    with pytest.raises(SampleError, match="unsafe path|link or special file"):
        sample_catalog(home, registry=registry.url)
    assert not (home / "samples" / "vendure-3.7.3").exists()
    assert not list(tmp_path.rglob("escaped*")) and not Path("/tmp/absolute-escape.jpg").exists()
    assert not [p for p in (home / "samples").iterdir() if p.name.startswith(".")]  # no staging left


def test_a_tarball_without_the_catalog_is_refused(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.serve(make_tarball(with_catalog=False))
    with pytest.raises(SampleError, match="has no package/assets/products.csv"):
        sample_catalog(tmp_path, registry=registry.url)


def test_registry_errors_are_explained(registry: FakeRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samples, "VERSION", "0.0.0-missing")
    with pytest.raises(SampleError, match="HTTP 404"):
        sample_catalog(tmp_path, registry=registry.url)
    with pytest.raises(SampleError, match="cannot reach the npm registry"):
        sample_catalog(tmp_path, registry="http://127.0.0.1:9")


def test_default_registry_is_npm() -> None:
    assert samples.REGISTRY_URL == "https://registry.npmjs.org"
    assert (samples.PACKAGE, samples.VERSION) == ("@vendure/create", "3.7.3")
