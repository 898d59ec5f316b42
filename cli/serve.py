"""`shoplens serve` and `shoplens demo`: the ShopLens server with the storefront pages beside it.

The server process owns the stores and the models and answers the HTTP API; the Streamlit pages
run as a child process and are clients of that API, like the command line in another shell. The
demo first fetches the Vendure sample catalog (npm registry, cached under `<home>/samples/`) and
ingests it in this process (a re-run finds every row unchanged and costs seconds).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cli.samples import sample_catalog
from ingest.pipeline import IngestResult, ingestor_for
from ingest.readers import read_catalog
from server.schedule import ServerSchedule
from services.context import ShopLens
from services.errors import ShopLensError

STOREFRONT = Path(__file__).resolve().parents[1] / "ui" / "storefront.py"
DEFAULT_PORT = 8501
DEFAULT_API_PORT = 8000

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


@dataclass(frozen=True)
class Listen:
    """Where the server and the pages listen."""

    address: str = "127.0.0.1"
    api_port: int = DEFAULT_API_PORT
    pages_port: int | None = DEFAULT_PORT  # None: the API alone

    @property
    def api_url(self) -> str:
        return f"http://{_connect_host(self.address)}:{self.api_port}"

    @property
    def pages_url(self) -> str | None:
        return (
            f"http://{'localhost' if _connect_host(self.address) == '127.0.0.1' else self.address}:{self.pages_port}/"
            if self.pages_port
            else None
        )

    def check(self) -> None:
        if self.pages_port is not None and self.pages_port == self.api_port:
            raise PortInUse(
                f"the pages and the API cannot share port {self.api_port}: choose another --port or --api-port"
            )
        for port, option in ((self.api_port, "--api-port"), (self.pages_port, "--port")):
            if port is not None:
                check_port(port, self.address, option)


def prepare_demo(app: ShopLens, registry: str | None = None, log: Callable[[str], None] = print) -> IngestResult:
    """Fetch (first time only) and ingest the sample catalog into the app's home."""
    catalog = read_catalog(sample_catalog(app.settings.home, registry=registry or app.settings.npm_registry, log=log))
    return ingestor_for(app).ingest(catalog, trigger="demo")


def streamlit_command(port: int = DEFAULT_PORT, address: str | None = None) -> list[str]:
    """The Streamlit pages as shoppers and merchants see them: no Deploy button or developer menu,
    the app's own navigation only, and (without --debug) none of Streamlit's own chatter. The same
    settings are in ui/.streamlit/config.toml for `streamlit run ui/storefront.py`; these flags also
    serve an installed (non-editable) copy, which has no such file."""
    quiet = not logging.getLogger().isEnabledFor(logging.DEBUG)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(STOREFRONT),
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",  # shoppers get no Deploy button and no developer menu
        "--client.showSidebarNavigation",
        "false",  # the pages draw their own navigation
        "--logger.hideWelcomeMessage",
        str(quiet).lower(),  # ShopLens prints the storefront's address itself
        "--logger.level",
        "warning" if quiet else "debug",
    ]
    if address:
        command += ["--server.address", address]
    return command


def check_port(port: int, address: str | None, option: str = "--port") -> None:
    host = address or "0.0.0.0"
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {port} is already in use; stop the other server or choose another with {option}"
                ) from None
            raise PortInUse(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def run_pages(port: int, address: str, server_url: str) -> None:
    """Replace this process with the Streamlit pages, a client of `server_url` (a container's
    command: the pages scale apart from the server)."""
    command = streamlit_command(port, address)
    sys.stdout.flush()
    os.execve(command[0], command, {**os.environ, "SHOPLENS_SERVER_URL": server_url})


def serve(app: ShopLens, listen: Listen, schedule: ServerSchedule | None = None, open_browser: bool = False) -> None:
    """Open the stores, start the pages, answer the API until SIGINT/SIGTERM, then close cleanly:
    a running ingest finishes its batch and is recorded as interrupted. The caller has checked
    the ports (`Listen.check`), before any slow work."""
    import uvicorn

    from server.app import create_app
    from server.state import ServerState

    state = ServerState(app, listen.api_url, schedule)
    state.open()  # a store in use or unreachable fails here, with its own message
    pages = None
    try:
        if listen.pages_port is not None:
            pages = subprocess.Popen(
                streamlit_command(listen.pages_port, listen.address),
                env={**os.environ, "SHOPLENS_SERVER_URL": listen.api_url},
                stdin=subprocess.DEVNULL,
            )
            print(f"storefront: {listen.pages_url}  (admin page: {listen.pages_url}admin)", flush=True)
            if open_browser:
                subprocess.Popen(
                    [sys.executable, "-c", _OPENER, str(listen.pages_url)],
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        print(f"API: {listen.api_url}/api/v1  (interactive docs: {listen.api_url}/docs); stop with Ctrl+C", flush=True)
        if schedule is not None:
            print(f"schedule: {schedule.describe()}", flush=True)
        config = uvicorn.Config(
            create_app(state),
            host=listen.address,
            port=listen.api_port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
            server_header=False,
        )
        previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            # uvicorn shuts down gracefully on these signals, then raises them again with our
            # handlers back in place: that ends up here, not in a killed process
            uvicorn.Server(config).run()
        except _Stopped:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        if pages is not None:
            pages.terminate()
            try:
                pages.wait(10)
            except subprocess.TimeoutExpired:
                pages.kill()
        state.close()


class _Stopped(Exception):
    """SIGINT or SIGTERM after uvicorn's graceful shutdown."""


def _stopped(_signum: int, _frame: object) -> None:
    raise _Stopped


def _connect_host(address: str) -> str:
    return "127.0.0.1" if address in ("", "0.0.0.0", "::", "localhost") else address
