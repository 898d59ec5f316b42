"""BENCHMARKS.md is written by several benchmarks, each owning one section (a `## ` heading)."""

from __future__ import annotations

from pathlib import Path


def write_section(text: str, out: Path, heading: str) -> None:
    """Replace the section that starts with `heading` (or append it), leaving the others."""
    current = out.read_text(encoding="utf-8") if out.exists() else "# ShopLens benchmarks\n"
    if heading in current:
        start = current.index(heading)
        end = current.find("\n## ", start + 1)
        current = current[:start] + text.rstrip("\n") + "\n" + (current[end:] if end != -1 else "")
    else:
        current = current.rstrip() + "\n\n" + text
    out.write_text(current, encoding="utf-8")
