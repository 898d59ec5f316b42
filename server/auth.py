"""Admin credentials: a constant-time compare, and wrong guesses that cost time.

The throttle counts per client and for the whole process, so guessing from many clients is slow
too; a lockout is short and a correct credential clears it, so an attacker cannot keep the real
admin out for long.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    message: str
    wait_seconds: float = 0.0
    blocked: bool = False  # refused without looking at the guess (still waiting from earlier ones)


@dataclass
class _Strikes:
    failures: int = 0
    blocked_until: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    """Wrong admin passwords cost time: per browser session AND for the whole process.

    Each wrong guess blocks further guesses for 1, 2, 4, 8 s …; the fifth wrong guess in a row
    locks for `lockout_seconds`. The process-wide counter stops an attacker who opens a new
    session per guess. A correct password resets both counters; an hour without failures too.
    """

    GLOBAL = "\x00process"

    def __init__(
        self,
        max_failures: int = 5,
        base_delay: float = 1.0,
        lockout_seconds: float = 300.0,
        forget_after: float = 3600.0,
        process_max_delay: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_failures, self.base_delay, self.lockout_seconds = max_failures, base_delay, lockout_seconds
        self.forget_after, self.clock, self.process_max_delay = forget_after, clock, process_max_delay
        self._strikes: dict[str, _Strikes] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, session: str) -> float:
        with self._lock:
            return self._wait(session, self.clock())

    def attempt(self, secret: str | None, guess: str, session: str) -> LoginResult:
        if not secret:
            return LoginResult(False, "The admin page is disabled: set SHOPLENS_ADMIN_PASSWORD to enable it.")
        now = self.clock()
        with self._lock:
            wait = self._wait(session, now)
            if wait > 0:
                return LoginResult(
                    False, f"Too many wrong passwords. Try again in {math.ceil(wait)} s.", wait, blocked=True
                )
        ok = hmac.compare_digest(guess.encode("utf-8"), secret.encode("utf-8"))
        with self._lock:
            if ok:
                self._strikes.pop(session, None)
                self._strikes.pop(self.GLOBAL, None)
                return LoginResult(True, "Welcome.")
            delays = [self._strike(key, now) for key in (session, self.GLOBAL)]
            self._prune(now)
        delay = max(delays)
        if delay >= self.lockout_seconds:
            return LoginResult(
                False, f"Wrong password. Too many wrong passwords: locked for {math.ceil(delay / 60)} min.", delay
            )
        return LoginResult(False, f"Wrong password. Wait {math.ceil(delay)} s before the next try.", delay)

    def reset(self) -> None:
        with self._lock:
            self._strikes.clear()

    def _wait(self, session: str, now: float) -> float:
        waits = [s.blocked_until - now for key in (session, self.GLOBAL) if (s := self._strikes.get(key))]
        return max([0.0, *waits])

    def _strike(self, key: str, now: float) -> float:
        strikes = self._strikes.setdefault(key, _Strikes())
        if strikes.failures and now - strikes.last_failure > self.forget_after:
            strikes.failures = 0
        strikes.failures += 1
        strikes.last_failure = now
        if strikes.failures >= self.max_failures:
            delay = self.lockout_seconds
        else:
            delay = min(self.base_delay * 2 ** (strikes.failures - 1), self.lockout_seconds)
        if key == self.GLOBAL:  # everyone shares this one: it slows guessing, it never locks out
            delay = min(delay, self.process_max_delay)
        strikes.blocked_until = max(strikes.blocked_until, now + delay)
        return delay

    def _prune(self, now: float) -> None:
        if len(self._strikes) > 10_000:
            stale = [
                k for k, s in self._strikes.items() if k != self.GLOBAL and now - s.last_failure > self.forget_after
            ]
            for key in stale:
                del self._strikes[key]
