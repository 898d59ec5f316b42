"""A TCP proxy that a test can cut and restore: a database or server "going away" mid-run.

Besides cutting by hand, a test can tie an action to a protocol step of the client: `on_message`
runs it just before the n-th client message holding some bytes (an SQL statement's text, say)
reaches the server, while that client waits. A cut placed that way lands at the same step of a
run every time, whatever the timing, so fault-injection tests need no sleeps.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Trigger:
    """An action waiting for the n-th client message that holds `pattern`."""

    pattern: bytes
    nth: int
    action: Callable[[], None]
    seen: int = 0
    fired: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def check(self) -> None:
        """Re-raise, in the test's thread, what the action raised in the proxy's (an assertion, say)."""
        if self.error is not None:
            raise self.error


class TcpProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._triggers: list[Trigger] = []
        self._generation = 0  # bumped by every cut: data read before a cut is never forwarded after it
        self._orphans: set[socket.socket] = set()  # server sides a partition left open
        self._upstreams: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def on_message(self, pattern: bytes, action: Callable[[], None], nth: int = 1) -> Trigger:
        """Run `action` (in the proxy) just before the `nth` client→server message holding `pattern`
        is forwarded; the client waits meanwhile. If the action cuts the proxy, that message is lost
        with its connection, as in a real outage."""
        trigger = Trigger(pattern, nth, action)
        with self._lock:
            self._triggers.append(trigger)
        return trigger

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
                self._upstreams.add(upstream)
                generation = self._generation
            threading.Thread(target=self._pipe, args=(client, upstream, generation, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, generation, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, generation: int, from_client: bool) -> None:
        tail = b""  # the end of the previous chunk: a pattern split across two reads is still seen
        try:
            while data := src.recv(65536):
                if from_client:
                    due = self._due(tail, data)
                    tail = (tail + data)[-4096:]
                    for trigger in due:
                        try:
                            trigger.action()
                        except BaseException as exc:  # handed to the test through Trigger.check
                            trigger.error = exc
                        finally:
                            trigger.fired.set()
                    with self._lock:
                        if generation != self._generation:
                            return  # cut meanwhile: this connection is gone, its message lost
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                ends = [s for s in (src, dst) if s not in self._orphans]
            for s in ends:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _due(self, tail: bytes, data: bytes) -> list[Trigger]:
        """The triggers whose n-th message is in `data` (an occurrence may begin in `tail`)."""
        due = []
        with self._lock:
            for trigger in self._triggers:
                keep = len(trigger.pattern) - 1
                window = (tail[-keep:] if keep else b"") + data
                if trigger.fired.is_set() or trigger.pattern not in window:
                    continue
                trigger.seen += window.count(trigger.pattern)
                if trigger.seen >= trigger.nth:
                    due.append(trigger)
            for trigger in due:
                self._triggers.remove(trigger)
        return due

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        self._cut(server_side=True)

    def partition(self) -> None:
        """Like `cut`, but the server never hears of it: the client sides are dropped and the server
        sides left open, as when a network path dies silently. A database keeps those sessions (and
        their locks) until `close`."""
        self._cut(server_side=False)

    def _cut(self, server_side: bool) -> None:
        self._up.clear()
        with self._lock:
            conns, self._conns = self._conns, []
            self._generation += 1
            if not server_side:
                kept = [c for c in conns if c in self._upstreams]
                self._orphans.update(kept)
                conns = [c for c in conns if c not in self._upstreams]
        _drop(conns)

    def restore(self) -> None:
        self._up.set()

    def blip(self) -> None:
        """A short outage: every open connection dropped, new ones accepted again at once."""
        self.cut()
        self.restore()

    def close(self) -> None:
        self.cut()
        with self._lock:
            orphans, self._orphans = list(self._orphans), set()
        _drop(orphans)
        self._server.close()


def _drop(conns: list[socket.socket]) -> None:
    for conn in conns:
        try:
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        except OSError:
            pass
