"""How a command line finds the server of its home: `<home>/server-<host>.json`, written by the server.

Kept free of heavy imports: the client side reads it on every command.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from services.files import write_atomic


@dataclass
class ServerInfo:
    """What the server file says: where a running server listens, and its local credential."""

    url: str
    pid: int
    token: str
    server_id: str

    @classmethod
    def read(cls, path: Path) -> ServerInfo | None:
        """The running server of this home, or None (no file, or its process is gone)."""
        try:
            data = json.loads(path.read_text())
            info = cls(str(data["url"]), int(data["pid"]), str(data["token"]), str(data["server_id"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            os.kill(info.pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, another user's
            pass
        return info

    def write(self, path: Path) -> None:
        """Readable by this user only: the token is an admin credential."""
        write_atomic(path, json.dumps(self.__dict__).encode(), mode=0o600)
