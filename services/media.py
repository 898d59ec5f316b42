"""Content-addressed copies of product images under the home, so the storefront can show them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from services.files import write_atomic


class MediaStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def relative_path(self, sha256: str, extension: str) -> str:
        return f"{sha256[:2]}/{sha256}{extension}"

    def path(self, relative: str) -> Path:
        return self.root / relative

    def put(self, data: bytes, sha256: str, extension: str) -> str:
        """Store once (atomically: a crash never leaves half a file); return the relative path."""
        relative = self.relative_path(sha256, extension)
        target = self.root / relative
        if target.exists() and target.stat().st_size == len(data):
            return relative
        write_atomic(target, data)
        return relative

    def read(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()

    def exists(self, relative: str) -> bool:
        return (self.root / relative).is_file()

    def remove_unreferenced(self, referenced: Iterable[str]) -> int:
        """Delete media files no product refers to any more; returns how many."""
        keep = set(referenced)
        removed = 0
        if not self.root.exists():
            return 0
        for path in self.root.glob("??/*"):
            if path.is_file() and path.relative_to(self.root).as_posix() not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
