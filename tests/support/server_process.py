"""A real ShopLens server for tests: `python -m cli.main serve` in its own process on a loopback port.

The pages are clients of this server, so their tests run against the real thing: the same
process boundary, HTTP API, job worker and stores a shop runs. A test module starts one server
(module scope) and, when it needs one, the catalog is ingested through the API like an admin would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from server import schemas
from server.client import ShopLensClient

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
INGEST_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port nobody listens on (it was free a moment ago)."""
    return free_port()


def server_env(
    openclip_env: dict[str, str], home: Path, password: str | None = PASSWORD, **extra: str
) -> dict[str, str]:
    """The server's own SHOPLENS_* settings: the tiny test CLIP, a home of its own, one torch thread."""
    env = {
        **openclip_env,
        "SHOPLENS_HOME": str(home),
        "SHOPLENS_TORCH_THREADS": "1",
        "SHOPLENS_INGEST_BATCH_SIZE": "8",
        "HF_HUB_OFFLINE": "1",
        **extra,
    }
    if password is not None:
        env["SHOPLENS_ADMIN_PASSWORD"] = password
    return env


@dataclass
class ServerProcess:
    """A running `shoplens serve` and what a test needs to talk to it."""

    url: str
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    password: str | None = PASSWORD
    pages_url: str | None = None
    catalog: Path | None = None
    _clients: list[ShopLensClient] = field(default_factory=list, repr=False)

    def client(self, admin: bool = False) -> ShopLensClient:
        """A client of this server; `admin=True` sends the admin password as the credential."""
        client = ShopLensClient(self.url, token=self.password if admin else None)
        self._clients.append(client)
        return client

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def ingest(self, catalog: Path, timeout: float = INGEST_TIMEOUT) -> schemas.Job:
        """Ingest a catalog file on this machine through the API, as `shoplens ingest` would."""
        client = self.client(admin=True)
        job = client.ingest_source(path=catalog)
        return wait_job(client, job.id, timeout)

    def stop(self) -> None:
        """SIGTERM (the server closes its stores and its pages), then a kill after STOP_TIMEOUT."""
        for client in self._clients:
            client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the server and its pages
                self.process.wait()


def wait_job(client: ShopLensClient, job_id: str, timeout: float = INGEST_TIMEOUT, poll: float = 0.2) -> schemas.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = client.job(job_id)
        if job.finished:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not finish within {timeout} s: {job.status} {job.done}/{job.total}")
        time.sleep(poll)


def start_server(
    base: Path,
    env: dict[str, str],
    *,
    pages: bool = False,
    timeout: float = START_TIMEOUT,
    name: str = "server",
) -> ServerProcess:
    """Start `shoplens serve` (API only, or with the Streamlit pages) and wait until it answers."""
    api_port = free_port()
    command = [sys.executable, "-m", "cli.main", "serve", "--api-port", str(api_port), "--address", "127.0.0.1"]
    pages_port = None
    if pages:
        pages_port = free_port()
        command += ["--port", str(pages_port)]
    else:
        command.append("--no-pages")
    # nothing of the test process's own SHOPLENS_* settings leaks in (say, a page test's server URL)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLENS_")}
    base.mkdir(parents=True, exist_ok=True)
    log = base / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env={**inherited, **env},
            cwd=base,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(
        f"http://127.0.0.1:{api_port}",
        Path(env["SHOPLENS_HOME"]),
        env,
        process,
        log,
        env.get("SHOPLENS_ADMIN_PASSWORD"),
        f"http://127.0.0.1:{pages_port}" if pages_port else None,
    )
    try:
        _wait_for(server, f"{server.url}/api/v1/health", None, timeout)
        if server.pages_url:
            _wait_for(server, f"{server.pages_url}/_stcore/health", b"ok", timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for(server: ServerProcess, url: str, body: bytes | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200 and (body is None or response.read().strip() == body):
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s:\n{server.log_tail()}")


@contextmanager
def running_server(
    base: Path,
    openclip_env: dict[str, str],
    *,
    catalog: Path | None = None,
    password: str | None = PASSWORD,
    pages: bool = False,
    **extra: str,
) -> Iterator[ServerProcess]:
    """A server over a fresh home under `base`, with `catalog` ingested through the API when given."""
    server = start_server(base, server_env(openclip_env, base / "home", password, **extra), pages=pages)
    try:
        if catalog is not None:
            job = server.ingest(catalog)
            assert job.status == "succeeded", f"{job.status}: {job.message}\n{server.log_tail()}"
            server.catalog = catalog
        yield server
    finally:
        server.stop()
