"""Child process of `EdgeBackend.build_index`: optimize a copy of a shard, then close it.

Runs apart from the serving process because the engine holds the GIL while it builds.
"""

from __future__ import annotations

import sys

import qdrant_edge as qe


def main(path: str) -> None:
    shard = qe.EdgeShard.load(path)
    shard.optimize()
    shard.flush()
    shard.close()


if __name__ == "__main__":
    main(sys.argv[1])
