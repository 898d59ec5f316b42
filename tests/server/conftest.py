"""A real `shoplens serve` process on a loopback port, with a small catalog ingested through its API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.client import ShopLensClient
from server.discovery import ServerInfo
from tests.support.catalog import write_catalog

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
PRODUCTS = 8


def server_file(home: Path) -> Path:
    """Where a server of this home announces itself (services.settings.Settings.server_file)."""
    from services.settings import Settings

    return Settings(_env_file=None, home=home).server_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    home: Path
    catalog: Path
    env: dict[str, str]
    process: subprocess.Popen[str]
    log: Path
    extra: list[str] = field(default_factory=list)

    def client(self, token: str | None = PASSWORD) -> ShopLensClient:
        return ShopLensClient(self.url, token)

    @property
    def token(self) -> str:
        info = ServerInfo.read(server_file(self.home))
        assert info is not None, self.log.read_text()
        return info.token

    def photo(self, i: int) -> bytes:
        return (self.catalog.parent / "images" / f"p{i}-0.jpg").read_bytes()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def server_env(openclip_env: dict[str, str], home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLENS_")}
    env.update(openclip_env)
    env.update(
        {
            "SHOPLENS_HOME": str(home),
            "SHOPLENS_ADMIN_PASSWORD": PASSWORD,
            "SHOPLENS_TORCH_THREADS": "1",
            "SHOPLENS_INGEST_BATCH_SIZE": "4",
            "HF_HUB_OFFLINE": "1",
            **extra,
        }
    )
    return env


def start_server(home: Path, catalog: Path, env: dict[str, str], *args: str) -> Server:
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home.parent / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--no-pages", "--api-port", str(port), *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(f"http://127.0.0.1:{port}", home, catalog, env, process, log, list(args))
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with ShopLensClient(server.url) as client:
                if client.health().model_loaded:
                    return server
        except Exception:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"the server did not come up:\n{log.read_text()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, openclip_env: dict[str, str]) -> Iterator[Server]:
    """A server whose catalog holds PRODUCTS products, ingested as an API job."""
    base = tmp_path_factory.mktemp("api")
    catalog = write_catalog(base / "catalog", PRODUCTS)
    running = start_server(base / "home", catalog, server_env(openclip_env, base / "home"))
    try:
        with running.client() as client:
            job = client.wait_job(client.ingest_source(path=catalog).id, poll=0.1)
            assert job.status == "succeeded", job
        yield running
    finally:
        running.stop()
