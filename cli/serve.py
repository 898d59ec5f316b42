"""`shoplens demo` and `shoplens serve`: the sample shop, and the storefront as a process.

The demo fetches the Vendure sample catalog (npm registry, cached under `<home>/samples/`),
ingests it (a re-run finds every row unchanged and costs seconds), releases the database and the
embedded Qdrant folder, then replaces this process with `python -m streamlit run` on the
storefront: the storefront process must own the embedded vector store, and it never ingests.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ingest.pipeline import IngestResult, ingestor_for
from ingest.readers import read_catalog
from cli.samples import sample_catalog
from services.context import ShopLens
from services.errors import ShopLensError

STOREFRONT = Path(__file__).resolve().parents[1] / "ui" / "storefront.py"
DEFAULT_PORT = 8501

# Replaced in tests; os.execv never returns.
_exec: Callable[[str, list[str]], None] = os.execv

_OPENER = """
import sys, time, urllib.request, webbrowser
url = sys.argv[1]
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url + "_stcore/health", timeout=2) as r:
            if r.read().strip() == b"ok":
                webbrowser.open(url)
                break
    except Exception:
        time.sleep(0.5)
"""


class PortInUse(ShopLensError):
    """The chosen port is taken; the message says which and what to do."""

    code = "port_in_use"


def prepare_demo(app: ShopLens, registry: str | None = None, log: Callable[[str], None] = print) -> IngestResult:
    """Fetch (first time only) and ingest the sample catalog into the app's home."""
    catalog = read_catalog(sample_catalog(app.settings.home, registry=registry or app.settings.npm_registry, log=log))
    return ingestor_for(app).ingest(catalog, trigger="demo")


def streamlit_command(port: int = DEFAULT_PORT, address: str | None = None) -> list[str]:
    command = [
        sys.executable, "-m", "streamlit", "run", str(STOREFRONT),
        "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",  # shoppers get no developer menu
    ]
    if address:
        command += ["--server.address", address]
    return command


def check_port(port: int, address: str | None) -> None:
    host = address or "0.0.0.0"
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"port {port} is already in use; stop the other server or choose another with --port") from None
            raise PortInUse(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def run_storefront(port: int = DEFAULT_PORT, address: str | None = None, open_browser: bool = False) -> None:
    """Replace this process with the Streamlit storefront (returns only in tests)."""
    check_port(port, address)
    url = f"http://{'localhost' if address in (None, '0.0.0.0', '127.0.0.1', '::') else address}:{port}/"
    print(f"storefront: {url}  (admin page: {url}admin; stop with Ctrl+C)", flush=True)
    if open_browser:
        subprocess.Popen(  # noqa: S603 - our own interpreter and a fixed script
            [sys.executable, "-c", _OPENER, url], start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    command = streamlit_command(port, address)
    _exec(command[0], command)
