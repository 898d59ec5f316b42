"""What every command shares: exit codes, the user-mistake error, how a run's status exits."""

from __future__ import annotations

import sys

from services.errors import UsageError

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class UserError(UsageError):
    """A mistake the user can fix; printed without a traceback."""


def exit_code(status: str) -> int:
    if status == "interrupted":
        print("shoplens: stopped early by a signal after a whole batch; run it again to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if status in {"succeeded", "partial"} else EXIT_FAILURE
