"""The one union-find lookup: duplicate groups in the catalog audit, blobs in photo localisation."""

from __future__ import annotations

from typing import Protocol, TypeVar

T = TypeVar("T")


class Parents(Protocol[T]):
    """Each element's parent: a dict of SKUs, or a list of run numbers."""

    def __getitem__(self, key: T, /) -> T: ...

    def __setitem__(self, key: T, value: T, /) -> None: ...


def find_root(parent: Parents[T], item: T) -> T:
    """The root of `item`'s set (the element that is its own parent), halving the path on the way
    so that later lookups in the same set are shorter."""
    while parent[item] != item:
        parent[item] = parent[parent[item]]
        item = parent[item]
    return item
