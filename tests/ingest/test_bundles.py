"""Uploaded image bundles: good ZIPs and loose files land whole; hostile ones are refused with nothing written."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from ingest.bundles import (
    BundleError,
    BundleLimits,
    best_prefix,
    extract_zip,
    inspect_files,
    inspect_zip,
    safe_relative_path,
    save_files,
    upload_folder,
)

JPEG = b"\xff\xd8\xff\xe0" + b"jpeg-ish" * 10  # content is checked later, by ingestion


def zip_of(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


def written(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def test_a_good_zip_lands_whole_and_only_images(tmp_path: Path) -> None:
    data = zip_of(
        {
            "shop/images/a.jpg": JPEG,
            "shop/images/b.PNG": b"png",
            "shop/images/sub/c.webp": b"webp",
            "shop/readme.txt": b"hi",
            "shop/images/.DS_Store": b"",
            "__MACOSX/shop/images/._a.jpg": b"",
            "shop/images/run.sh": b"rm -rf /",
        }
    )
    target = tmp_path / "uploads" / "t1"
    plan = extract_zip(data, target)
    assert sorted(plan.paths) == ["shop/images/a.jpg", "shop/images/b.PNG", "shop/images/sub/c.webp"]
    assert sorted(plan.skipped) == [
        "__MACOSX/shop/images/._a.jpg",
        "shop/images/.DS_Store",
        "shop/images/run.sh",
        "shop/readme.txt",
    ]
    assert written(target) == [
        "shop",
        "shop/images",
        "shop/images/a.jpg",
        "shop/images/b.PNG",
        "shop/images/sub",
        "shop/images/sub/c.webp",
    ]
    assert (target / "shop/images/a.jpg").read_bytes() == JPEG
    assert written(tmp_path / "uploads") == ["t1", *[f"t1/{p}" for p in written(target)]]  # no staging left


def test_inspect_writes_nothing(tmp_path: Path) -> None:
    plan = inspect_zip(zip_of({"a.jpg": JPEG}))
    assert plan.paths == {"a.jpg"} and plan.total_bytes == len(JPEG)
    assert written(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.jpg", "outside the upload folder"),
        ("images/../../evil.jpg", "outside the upload folder"),
        ("..\\..\\evil.jpg", "outside the upload folder"),
        ("/etc/evil.jpg", "absolute path"),
        ("\\\\server\\share\\evil.jpg", "absolute path"),
        ("C:/Windows/evil.jpg", "absolute path"),
        ("images/a:b.jpg", "':'"),
    ],
)
def test_zip_slip_is_refused_and_nothing_is_written(tmp_path: Path, name: str, reason: str) -> None:
    data = zip_of({"images/ok.jpg": JPEG, name: JPEG})
    target = tmp_path / "home" / "uploads" / "t"
    with pytest.raises(BundleError, match=reason):
        extract_zip(data, target)
    assert written(tmp_path) == []


def test_a_traversal_name_in_a_non_image_is_refused_too(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="outside the upload folder"):
        extract_zip(zip_of({"a.jpg": JPEG, "../../.bashrc": b"evil"}), tmp_path / "t")
    assert written(tmp_path) == []


def test_symlinks_are_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("a.jpg", JPEG)
        link = zipfile.ZipInfo("b.jpg")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(BundleError, match="symbolic link"):
        extract_zip(out.getvalue(), tmp_path / "t")
    assert written(tmp_path) == []


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    data = zip_of({f"{n}.txt": b"" for n in range(51)})  # even entries that would be skipped count
    with pytest.raises(BundleError, match="51 entries; the limit is 50"):
        extract_zip(data, tmp_path / "t", BundleLimits(max_entries=50))
    assert written(tmp_path) == []


def test_a_zip_bomb_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    data = zip_of({"bomb.jpg": bytes(64 * 2**20)})  # 64 MiB of zeros, ~64 KiB compressed
    assert len(data) < 200_000
    with pytest.raises(BundleError, match="the limit per image"):
        extract_zip(data, tmp_path / "t", BundleLimits(max_file_bytes=10 * 2**20))
    assert written(tmp_path) == []


def test_many_small_bombs_are_refused_by_their_total(tmp_path: Path) -> None:
    data = zip_of({f"{n}.jpg": bytes(2**20) for n in range(8)})
    with pytest.raises(BundleError, match="add up to more than"):
        extract_zip(data, tmp_path / "t", BundleLimits(max_file_bytes=2**20, max_total_bytes=5 * 2**20))
    assert written(tmp_path) == []


def _lie_about_size(data: bytes, name: bytes, declared: int) -> bytes:
    """Rewrite the uncompressed size of `name` in both the local header and the central directory."""
    buf = bytearray(data)
    local = buf.find(b"PK\x03\x04")
    while local != -1:
        name_len = struct.unpack_from("<H", buf, local + 26)[0]
        if bytes(buf[local + 30 : local + 30 + name_len]) == name:
            struct.pack_into("<I", buf, local + 22, declared)
        local = buf.find(b"PK\x03\x04", local + 4)
    central = buf.find(b"PK\x01\x02")
    while central != -1:
        name_len = struct.unpack_from("<H", buf, central + 28)[0]
        if bytes(buf[central + 46 : central + 46 + name_len]) == name:
            struct.pack_into("<I", buf, central + 24, declared)
        central = buf.find(b"PK\x01\x02", central + 4)
    return bytes(buf)


def test_a_bomb_that_lies_about_its_size_is_caught_while_extracting(tmp_path: Path) -> None:
    honest = zip_of({"a.jpg": JPEG, "liar.jpg": bytes(8 * 2**20)})
    lying = _lie_about_size(honest, b"liar.jpg", 1000)
    plan = inspect_zip(lying, BundleLimits(max_file_bytes=2**20))  # the declared sizes look fine
    assert plan.total_bytes == len(JPEG) + 1000
    with pytest.raises(BundleError, match="liar.jpg"):
        extract_zip(lying, tmp_path / "uploads" / "t", BundleLimits(max_file_bytes=2**20))
    assert written(tmp_path) == []


def test_encrypted_entries_are_refused(tmp_path: Path) -> None:
    data = bytearray(zip_of({"a.jpg": JPEG}, zipfile.ZIP_STORED))
    struct.pack_into("<H", data, data.find(b"PK\x01\x02") + 8, 0x1)  # the encrypted flag
    with pytest.raises(BundleError, match="encrypted"):
        inspect_zip(bytes(data))


def test_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a ZIP file"):
        extract_zip(b"PK but not really", tmp_path / "t")
    assert written(tmp_path) == []


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(BundleError, match="twice"):
        inspect_zip(zip_of({"a.jpg": JPEG, "A.JPG": JPEG}))


def test_the_target_must_be_new(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    with pytest.raises(BundleError, match="exists already"):
        extract_zip(zip_of({"a.jpg": JPEG}), tmp_path / "t")


def test_loose_files_are_saved_by_base_name(tmp_path: Path) -> None:
    files = [("a.jpg", JPEG), ("C:\\Users\\me\\b.png", b"png"), ("../../c.webp", b"webp"), ("notes.txt", b"x")]
    plan = save_files(files, tmp_path / "t")
    assert plan.paths == {"a.jpg", "b.png", "c.webp"} and plan.skipped == ["notes.txt"]
    assert written(tmp_path) == ["t", "t/a.jpg", "t/b.png", "t/c.webp"]


def test_loose_files_limits(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="limit per image"):
        save_files([("a.jpg", bytes(2000))], tmp_path / "t", BundleLimits(max_file_bytes=1000))
    with pytest.raises(BundleError, match="limit is 2"):
        inspect_files([("a.jpg", b"1"), ("b.jpg", b"2"), ("c.jpg", b"3")], BundleLimits(max_entries=2))
    with pytest.raises(BundleError, match="two uploaded files"):
        inspect_files([("x/a.jpg", b"1"), ("y/a.jpg", b"2")])
    assert written(tmp_path) == []


def test_safe_relative_path() -> None:
    assert safe_relative_path("./images//a.jpg") == "images/a.jpg"
    assert safe_relative_path("images\\a.jpg") == "images/a.jpg"
    assert safe_relative_path("~backup/a.jpg") == "~backup/a.jpg"  # an archive's folder may be named so
    with pytest.raises(BundleError, match="NUL byte"):
        safe_relative_path("a\x00.jpg")
    for name, reason in [("~/a.jpg", "home folder"), ("~me/a.jpg", "home folder"), ("\\a.jpg", "absolute")]:
        with pytest.raises(BundleError, match=reason):  # a catalog's image name, read with expanduser
            safe_relative_path(name, home_expands=True)


def test_best_prefix_follows_the_catalog() -> None:
    paths = {"shop/images/a.jpg", "shop/images/b.jpg"}
    assert best_prefix(paths, ["a.jpg", "b.jpg"]) == "shop/images/"
    assert best_prefix(paths, ["images/a.jpg"]) == "shop/"
    assert best_prefix(paths, ["shop/images/a.jpg"]) == ""
    assert best_prefix({"a.jpg", "x/b.jpg"}, ["b.jpg"]) == ""


def test_upload_folders_are_new_each_time(tmp_path: Path) -> None:
    first = upload_folder(tmp_path)
    first.mkdir(parents=True)
    second = upload_folder(tmp_path)
    assert first != second and first.parent == second.parent == tmp_path / "uploads"
