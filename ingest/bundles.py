"""Image bundles uploaded by an admin: a ZIP, or many loose files, checked before a byte is written.

A bundle is first *inspected* (names, kinds, counts, declared sizes) without writing anything, so
a preview can list what it holds; it is then *extracted* into a fresh folder that appears only
when everything went well (a hidden staging folder is renamed at the end, removed on any error).
Refused: absolute names, `..` parts, drive letters, symlinks, encrypted entries, too many entries,
files or totals over the limits (declared sizes are checked first, and real bytes are counted while
extracting, so a ZIP that lies about its sizes is caught too). Only image files are extracted;
anything else is listed as skipped.
"""

from __future__ import annotations

import io
import shutil
import stat
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from services.errors import ShopLensError
from services.files import ByteBudget, OverLimit, copy_capped, staged_folder
from services.images import is_image_name

_JUNK_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}


class BundleError(ShopLensError):
    """The bundle is refused as a whole; nothing was written. The message says why."""

    code = "bad_bundle"
    http_status = 422


@dataclass(frozen=True)
class BundleLimits:
    max_entries: int = 10_000
    max_file_bytes: int = 20 * 1024 * 1024
    max_total_bytes: int = 2 * 1024 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings) -> BundleLimits:
        return cls(max_file_bytes=settings.max_image_bytes)


@dataclass
class BundleEntry:
    path: str  # safe relative POSIX path inside the bundle folder
    size: int  # declared (ZIP) or actual (loose file) size in bytes
    source: str  # the name as given in the upload


@dataclass
class BundlePlan:
    """What a bundle holds and what extracting it would write."""

    kind: str  # "zip" | "files"
    entries: list[BundleEntry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not images (or OS junk): never written

    @property
    def paths(self) -> set[str]:
        return {e.path for e in self.entries}

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)


def upload_folder(home: Path) -> Path:
    """A new, not yet existing `<home>/uploads/<UTC timestamp>` folder name."""
    root = Path(home) / "uploads"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    candidate, n = root / stamp, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{stamp}-{n}"
    return candidate


def remove_upload(folder: Path, home: Path) -> bool:
    """Delete an upload's staging folder once its run has ended: its images are in the media
    store by then, and a restarted server cannot resume an upload anyway. Only folders under
    `<home>/uploads` are touched, whatever a job's parameters say."""
    root = (Path(home) / "uploads").resolve()
    target = Path(folder).resolve()
    if target.parent != root or not target.is_dir():
        return False
    shutil.rmtree(target, ignore_errors=True)
    return True


def sweep_uploads(home: Path, max_age: float = 24 * 3600.0) -> int:
    """Staging folders left behind by a server stopped before their job ran; only those older
    than `max_age` seconds, since replicas sharing the home may be filling newer ones."""
    root = Path(home) / "uploads"
    if not root.is_dir():
        return 0
    cutoff = time.time() - max_age
    stale = [p for p in root.iterdir() if p.is_dir() and p.stat().st_mtime < cutoff]
    return sum(remove_upload(p, home) for p in stale)


# -- ZIP ---------------------------------------------------------------------------------------
def inspect_zip(data: bytes | BinaryIO, limits: BundleLimits | None = None) -> BundlePlan:
    """Check a ZIP without writing anything; raises BundleError."""
    limits = limits or BundleLimits()
    with _open_zip(data) as archive:
        return _plan_zip(archive, limits)


def extract_zip(data: bytes | BinaryIO, target: Path, limits: BundleLimits | None = None) -> BundlePlan:
    """Extract the ZIP's images into `target` (which must not exist yet); all or nothing."""
    limits = limits or BundleLimits()
    with _open_zip(data) as archive:
        plan = _plan_zip(archive, limits)
        by_name = {info.filename: info for info in archive.infolist()}

        def write(staging: Path) -> None:
            total = ByteBudget(limits.max_total_bytes)
            for entry in plan.entries:
                info = by_name[entry.source]
                with archive.open(info) as source:
                    file_limit = min(info.file_size, limits.max_file_bytes)
                    _copy_counted(source, staging / entry.path, entry.source, file_limit, total)

        _staged(target, write)
    return plan


def _open_zip(data: bytes | BinaryIO) -> zipfile.ZipFile:
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        return zipfile.ZipFile(stream)
    except zipfile.BadZipFile:
        raise BundleError("this is not a ZIP file (or it is damaged)") from None
    except (OSError, ValueError, EOFError) as exc:
        raise BundleError(f"the ZIP file cannot be read ({exc})") from None


def _plan_zip(archive: zipfile.ZipFile, limits: BundleLimits) -> BundlePlan:
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise BundleError(f"the ZIP holds {len(infos):,} entries; the limit is {limits.max_entries:,}")
    plan = BundlePlan("zip")
    seen: dict[str, str] = {}
    declared_total = 0
    for info in infos:
        path = safe_relative_path(info.filename)  # raises on traversal, for every entry
        mode = (info.external_attr >> 16) & 0xFFFF
        if stat.S_ISLNK(mode):
            raise BundleError(f"the ZIP holds a symbolic link ({info.filename!r}); links are not allowed")
        if info.is_dir():
            continue
        if mode and not stat.S_ISREG(mode) and stat.S_IFMT(mode):
            raise BundleError(f"the ZIP holds a special file ({info.filename!r}); only plain files are allowed")
        if info.flag_bits & 0x1:
            raise BundleError(f"the ZIP entry {info.filename!r} is encrypted; upload an unencrypted ZIP")
        if _is_junk(path) or not is_image_name(path):
            plan.skipped.append(info.filename)
            continue
        if info.file_size > limits.max_file_bytes:
            raise BundleError(
                f"{info.filename!r} is {info.file_size:,} bytes uncompressed; the limit per image is "
                f"{limits.max_file_bytes:,}"
            )
        declared_total += info.file_size
        if declared_total > limits.max_total_bytes:
            raise BundleError(f"the ZIP's images add up to more than {limits.max_total_bytes:,} bytes uncompressed")
        key = path.lower()
        if key in seen:
            raise BundleError(f"the ZIP holds {info.filename!r} twice (also as {seen[key]!r})")
        seen[key] = info.filename
        plan.entries.append(BundleEntry(path, info.file_size, info.filename))
    _check_file_dir_clash(plan)
    return plan


# -- loose files -------------------------------------------------------------------------------
def inspect_files(files: Sequence[tuple[str, bytes]], limits: BundleLimits | None = None) -> BundlePlan:
    """Check uploaded (name, bytes) pairs; names are reduced to their base name."""
    limits = limits or BundleLimits()
    if len(files) > limits.max_entries:
        raise BundleError(f"{len(files):,} files were uploaded; the limit is {limits.max_entries:,}")
    plan = BundlePlan("files")
    seen: set[str] = set()
    total = 0
    for name, data in files:
        base = PurePosixPath(name.replace("\\", "/")).name
        if not base or base in {".", ".."}:
            raise BundleError(f"unusable file name {name!r}")
        if not base.isprintable():  # a NUL (or another control character) no file system takes
            raise BundleError(f"the file name {name!r} contains a control character; rename the file")
        if _is_junk(base) or not is_image_name(base):
            plan.skipped.append(name)
            continue
        if len(data) > limits.max_file_bytes:
            raise BundleError(f"{base!r} is {len(data):,} bytes; the limit per image is {limits.max_file_bytes:,}")
        total += len(data)
        if total > limits.max_total_bytes:
            raise BundleError(f"the uploaded images add up to more than {limits.max_total_bytes:,} bytes")
        if base.lower() in seen:
            raise BundleError(f"two uploaded files are named {base!r}")
        seen.add(base.lower())
        plan.entries.append(BundleEntry(base, len(data), name))
    return plan


def save_files(files: Sequence[tuple[str, bytes]], target: Path, limits: BundleLimits | None = None) -> BundlePlan:
    """Write the uploaded images into `target` (which must not exist yet); all or nothing."""
    limits = limits or BundleLimits()
    plan = inspect_files(files, limits)
    data_by_source = {name: data for name, data in files}

    def write(staging: Path) -> None:
        total = ByteBudget(limits.max_total_bytes)
        for entry in plan.entries:
            source = io.BytesIO(data_by_source[entry.source])
            _copy_counted(source, staging / entry.path, entry.source, limits.max_file_bytes, total)

    _staged(target, write)
    return plan


# -- shared ------------------------------------------------------------------------------------
def safe_relative_path(name: str, *, home_expands: bool = False) -> str:
    """A name from outside (an archive member, a catalog's image name) as a relative POSIX path that
    stays inside its folder, `.` and empty parts dropped; else BundleError saying why.

    Refused: NUL bytes, absolute paths (`/x`, `\\x`, `//server`, `C:`), `..` parts and `:` in any
    part; with `home_expands` (the name is read with `Path.expanduser`) also a leading `~`.
    """
    if "\x00" in name:
        raise BundleError(f"the entry name {name!r} contains a NUL byte")
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) >= 2 and text[1] == ":") or text.startswith("//"):
        raise BundleError(f"the entry {name!r} has an absolute path; paths must be relative")
    if home_expands and text.startswith("~"):
        raise BundleError(f"the entry {name!r} names a home folder ('~'); paths must be relative")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise BundleError(f"the entry {name!r} points outside the upload folder ('..')")
    if any(":" in p for p in parts):
        raise BundleError(f"the entry {name!r} has a ':' in its path")
    return "/".join(parts)


def best_prefix(paths: Iterable[str], references: Iterable[str]) -> str:
    """The folder prefix inside a bundle against which the catalog's image names resolve best.

    Merchants zip a folder (`images/a.jpg`) and write `a.jpg` in the catalog, or zip the files
    themselves; both work: "" or a chain of single top folders ("images/") is chosen.
    """
    paths = set(paths)
    refs = [r for r in references if r]
    candidates = [""]
    prefix = ""
    while True:  # descend through single-child top folders: top/, top/images/, …
        below = [p[len(prefix) :] for p in paths if p.startswith(prefix)]
        tops = {rest.split("/", 1)[0] for rest in below if "/" in rest}
        if len(tops) != 1 or any("/" not in rest for rest in below):
            break
        prefix += next(iter(tops)) + "/"
        candidates.append(prefix)
    return max(candidates, key=lambda c: (sum(1 for r in refs if c + r in paths), -len(c)))


def _is_junk(path: str) -> bool:
    parts = path.split("/")
    return any(p in _JUNK_PARTS for p in parts) or parts[-1].startswith("._")


def _check_file_dir_clash(plan: BundlePlan) -> None:
    files = {e.path.lower() for e in plan.entries}
    for entry in plan.entries:
        parts = entry.path.lower().split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise BundleError(f"the ZIP uses {'/'.join(parts[:i])!r} both as a file and as a folder")


def _copy_counted(source: BinaryIO, destination: Path, name: str, file_limit: int, total: ByteBudget) -> None:
    """Copy, counting real bytes against the per-file limit and the bundle's total."""

    def read(size: int) -> bytes:
        try:
            return source.read(size)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise BundleError(f"{name!r} in the ZIP is damaged ({exc})") from None

    destination.parent.mkdir(parents=True, exist_ok=True)
    this_file = ByteBudget(file_limit)
    with destination.open("xb") as out:
        try:
            copy_capped(read, out, this_file, total)
        except OverLimit as exc:
            if exc.budget is this_file:
                raise BundleError(
                    f"{name!r} unpacks to more than {file_limit:,} bytes (more than the ZIP declares or the limit "
                    "allows)"
                ) from None
            raise BundleError(f"the images unpack to more than {total.limit:,} bytes in total") from None


def _staged(target: Path, write: Callable[[Path], None]) -> None:
    """`staged_folder` for a new upload folder: `target` must not exist yet."""
    if Path(target).exists():
        raise BundleError(f"the upload folder {target} exists already")
    staged_folder(target, write)
