"""The sample catalog: the Vendure demo shop, fetched from the npm registry like a user's machine would.

`@vendure/create` ships 54 product photos and a products.csv. We download its tarball once
(checking npm's sha512 integrity), keep it under `<home>/samples/`, extract only the catalog and
its images (never a path outside the target folder), and convert them to a ShopLens CSV. Later
runs find the converted catalog and touch neither the network nor the files (so a re-ingest sees
unchanged rows and costs nothing).
"""

from __future__ import annotations

import base64
import hashlib
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import httpx

from ingest.bundles import BundleError, safe_relative_path
from ingest.vendure import convert_vendure
from services.errors import Unavailable
from services.fetch import FetchError, fetch_capped
from services.files import ByteBudget, OverLimit, copy_capped, staged_folder, write_atomic
from services.images import is_image_name

REGISTRY_URL = "https://registry.npmjs.org"
PACKAGE = "@vendure/create"
VERSION = "3.7.3"
CATALOG_MEMBER = "package/assets/products.csv"
IMAGES_PREFIX = "package/assets/images/"
MAX_TARBALL_BYTES = 64 * 1024 * 1024
MAX_MEMBER_BYTES = 32 * 1024 * 1024
MAX_EXTRACTED_BYTES = 256 * 1024 * 1024
TIMEOUT = 60.0
_DONE_MARKER = ".complete"

Log = Callable[[str], None]


class SampleError(Unavailable):
    """The sample catalog cannot be fetched or unpacked; the message says why."""

    code = "sample_unavailable"


@dataclass(frozen=True)
class PackageDist:
    tarball: str
    integrity: str


def sample_catalog(
    home: Path, registry: str | None = None, log: Log | None = None, client: httpx.Client | None = None
) -> Path:
    """The Vendure sample as a ShopLens CSV (downloaded and converted on first use); its path."""
    log = log or (lambda _msg: None)
    root = Path(home).expanduser() / "samples"
    folder = root / f"vendure-{VERSION}"
    catalog = folder / "catalog.csv"
    if catalog.is_file() and (folder / _DONE_MARKER).is_file():
        return catalog
    root.mkdir(parents=True, exist_ok=True)
    tarball = cached_tarball(root, registry, log, client)
    log(f"unpacking the sample catalog into {folder}")

    def unpack(staging: Path) -> tuple[int, int]:
        images = extract_assets(tarball, staging / "assets")
        if images == 0:
            raise SampleError(f"{tarball.name} holds no product images under {IMAGES_PREFIX}")
        products = convert_vendure(staging / "assets", staging / "catalog.csv")
        (staging / _DONE_MARKER).write_text(f"{PACKAGE}@{VERSION}: {products} products, {images} images\n")
        return products, images

    products, images = staged_folder(folder, unpack, replace=True)
    log(f"sample catalog: {products} products, {images} images")
    return catalog


def cached_tarball(
    root: Path, registry: str | None = None, log: Log | None = None, client: httpx.Client | None = None
) -> Path:
    """`<root>/<name>-<version>.tgz`, downloaded and verified unless a verified copy is there."""
    log = log or (lambda _msg: None)
    name = PACKAGE.rsplit("/", 1)[-1]
    tarball = root / f"{name}-{VERSION}.tgz"
    sidecar = tarball.with_name(tarball.name + ".integrity")
    if tarball.is_file() and sidecar.is_file():
        if _matches(tarball.read_bytes(), sidecar.read_text().strip()):
            return tarball
        log(f"cached {tarball.name} does not match its recorded hash; downloading it again")
    owned = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=TIMEOUT)
    try:
        dist = package_dist(client, registry or REGISTRY_URL)
        log(f"downloading {PACKAGE}@{VERSION} from {dist.tarball}")
        data = _download(dist.tarball)
    finally:
        if owned:
            client.close()
    if not _matches(data, dist.integrity):
        raise SampleError(
            f"the downloaded {PACKAGE}@{VERSION} tarball does not match the registry's integrity hash; "
            "refusing to use it (try again later, or check the registry URL)"
        )
    write_atomic(tarball, data)
    write_atomic(sidecar, dist.integrity.encode())
    return tarball


def package_dist(client: httpx.Client, registry: str) -> PackageDist:
    url = f"{registry.rstrip('/')}/{quote(PACKAGE, safe='@')}/{VERSION}"
    try:
        response = client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise SampleError(
            f"cannot reach the npm registry at {registry} ({exc.__class__.__name__}); the sample catalog needs it once"
        ) from None
    if response.status_code != 200:
        raise SampleError(f"the npm registry answered HTTP {response.status_code} for {PACKAGE}@{VERSION} ({url})")
    try:
        dist = response.json()["dist"]
        tarball, integrity = str(dist["tarball"]), str(dist["integrity"])
    except (ValueError, KeyError, TypeError):
        raise SampleError(
            f"the npm registry's answer for {PACKAGE}@{VERSION} has no dist.tarball/dist.integrity"
        ) from None
    if not tarball.lower().startswith(("http://", "https://")):
        raise SampleError(f"the registry gave an unusable tarball address: {tarball!r}")
    return PackageDist(tarball, integrity)


def _download(url: str) -> bytes:
    try:
        return fetch_capped(url, MAX_TARBALL_BYTES, TIMEOUT).data
    except FetchError as exc:
        raise SampleError(f"downloading {url}: the server {exc}") from None


def _matches(data: bytes, integrity: str) -> bool:
    """npm's Subresource Integrity string: any sha512 entry of it equals the data's digest."""
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    for entry in integrity.split():
        algorithm, _, value = entry.partition("-")
        if algorithm == "sha512" and value.split("?", 1)[0] == digest:
            return True
    return False


def extract_assets(tarball: Path, target: Path) -> int:
    """Copy products.csv and images/* of the tarball into `target`; returns the image count.

    Member names are checked before anything is written: an absolute name, a `..` part or a
    link anywhere under the assets we want refuses the whole tarball.
    """
    try:
        archive = tarfile.open(tarball, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise SampleError(f"{tarball.name} is not a readable tarball ({exc})") from None
    with archive:
        try:
            members = archive.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise SampleError(f"{tarball.name} is damaged ({exc})") from None
        plan: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
        for member in members:
            relative = _wanted(member)
            if relative is not None:
                plan.append((member, relative))
        if not any(rel.name == "products.csv" for _, rel in plan):
            raise SampleError(f"{tarball.name} has no {CATALOG_MEMBER}")
        target.mkdir(parents=True, exist_ok=True)
        written = ByteBudget(MAX_EXTRACTED_BYTES)
        images = 0
        for member, relative in plan:
            source = archive.extractfile(member)
            if source is None:
                raise SampleError(f"cannot read {member.name} in {tarball.name}")
            destination = target.joinpath(*relative.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with source, destination.open("wb") as out:
                try:
                    copy_capped(source.read, out, ByteBudget(MAX_MEMBER_BYTES), written)
                except OverLimit:
                    raise SampleError(
                        f"{member.name} in {tarball.name} is larger than allowed; refusing the tarball"
                    ) from None
            images += relative.parts[0] == "images"
        return images


def _wanted(member: tarfile.TarInfo) -> PurePosixPath | None:
    """The path under assets/ for a member we extract, None for one we skip; unsafe names raise."""
    try:
        text = safe_relative_path(member.name)
    except BundleError:
        raise SampleError(f"the tarball holds an unsafe path {member.name!r}; refusing it") from None
    under_assets = text == CATALOG_MEMBER or text.startswith(IMAGES_PREFIX)
    if not under_assets:
        return None
    if member.issym() or member.islnk() or not (member.isfile() or member.isdir()):
        raise SampleError(f"the tarball holds a link or special file at {member.name!r}; refusing it")
    if member.isdir():
        return None
    if text == CATALOG_MEMBER:
        return PurePosixPath("products.csv")
    rest = text[len(IMAGES_PREFIX) :]
    if "/" in rest or not rest or rest.startswith(".") or not is_image_name(rest):
        return None
    return PurePosixPath("images", rest)
