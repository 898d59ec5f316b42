"""`shoplens demo` and `shoplens serve` up to the point where the server starts listening (the
server itself runs as a real process in tests/server and tests/ui)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import main as cli
from cli import serve as demo
from services.settings import get_settings
from tests.cli.test_samples import FakeRegistry, make_tarball


@pytest.fixture
def env(tmp_path: Path, openclip_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    for key, value in {**openclip_env, "SHOPLENS_HOME": str(home)}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """What `serve` was asked to run, with the stores' state at that moment."""
    calls: list[tuple] = []

    def serve(app, listen, schedule=None, open_browser=False):
        calls.append((listen, schedule, open_browser, app.catalog.counts()["products"]))

    monkeypatch.setattr(demo, "serve", serve)
    return calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_fetches_ingests_releases_and_starts_the_storefront(
    env: Path,
    registry: FakeRegistry,
    execs: list[tuple],
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry.serve(make_tarball())
    port = free_port()
    assert cli.main(["demo", "--no-browser", "--port", str(port), "--registry", registry.url]) == 0
    out = capsys.readouterr().out
    assert "2 new" in out
    ((listen, schedule, browser, products),) = execs
    assert listen == demo.Listen("127.0.0.1", 8000, port) and schedule is None and browser is False
    assert products == 2  # the same process serves what it ingested

    # the sample is searchable from the stores the server gets
    from services.context import ShopLens
    from services.images import load_image
    from services.search import SearchRequest
    from services.settings import Settings

    app = ShopLens(Settings())
    try:
        photo = load_image(str(env / "samples" / "vendure-3.7.3" / "assets" / "images" / "chair.jpg"), None, app.limits)
        assert app.search.search(SearchRequest(image=photo, top_k=1)).hits[0].sku == "C1"
    finally:
        app.close()

    # a second demo is cheap: no network, every row unchanged
    requests = len(registry.requests)
    assert cli.main(["demo", "--no-browser", "--port", str(port), "--registry", "http://127.0.0.1:9"]) == 0
    assert "2 unchanged" in capsys.readouterr().out
    assert len(registry.requests) == requests and len(execs) == 2


def test_demo_refuses_a_busy_port_before_downloading(
    env: Path, registry: FakeRegistry, execs: list[tuple], capsys: pytest.CaptureFixture[str]
) -> None:
    registry.serve(make_tarball())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert (
            cli.main(["demo", "--no-browser", "--port", str(port), "--registry", registry.url]) == cli.EXIT_USER_ERROR
        )
    assert "already in use" in capsys.readouterr().err
    assert registry.requests == [] and execs == []


def test_demo_explains_an_unreachable_registry(
    env: Path, execs: list[tuple], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(["demo", "--no-browser", "--port", str(free_port()), "--registry", "http://127.0.0.1:9"])
        == cli.EXIT_USER_ERROR
    )
    assert "cannot reach the npm registry" in capsys.readouterr().err
    assert execs == []


def test_serve_takes_ports_address_and_schedule(
    env: Path, execs: list[tuple], capsys: pytest.CaptureFixture[str]
) -> None:
    port, api = free_port(), free_port()
    assert cli.main(["serve", "--port", str(port), "--api-port", str(api)]) == 0
    assert (
        cli.main(
            [
                "serve",
                "--no-pages",
                "--api-port",
                str(api),
                "--address",
                "0.0.0.0",
                "--schedule",
                "c.csv",
                "--cron",
                "0 * * * *",
            ]
        )
        == 0
    )
    (first, _, _, _), (second, schedule, _, _) = execs
    assert first == demo.Listen("127.0.0.1", api, port) and first.api_url == f"http://127.0.0.1:{api}"
    assert second.pages_port is None and second.address == "0.0.0.0" and second.api_url == f"http://127.0.0.1:{api}"
    assert schedule.describe() == "c.csv (cron 0 * * * *)"
    assert not (env / "samples").exists()  # serve never fetches or ingests
    assert cli.main(["serve", "--schedule", "c.csv", "--every", "soon"]) == cli.EXIT_USER_ERROR
    assert "cannot read the interval" in capsys.readouterr().err


def test_the_pages_and_the_api_need_two_free_ports(
    env: Path, execs: list[tuple], capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    assert cli.main(["serve", "--port", str(port), "--api-port", str(port)]) == cli.EXIT_USER_ERROR
    assert "cannot share port" in capsys.readouterr().err and execs == []


def test_the_pages_hide_streamlits_developer_chrome() -> None:
    """Shoppers see no Deploy button or developer menu and only the app's navigation, whether the
    pages start through `shoplens serve`/`pages` (flags) or `streamlit run ui/storefront.py`
    (ui/.streamlit/config.toml, read beside the entry script); Streamlit's banner stays quiet."""
    import logging
    import tomllib

    def flags(command: list[str]) -> dict[str, str]:
        return {command[i].removeprefix("--"): command[i + 1] for i in range(5, len(command) - 1, 2)}

    command = demo.streamlit_command(8501, "127.0.0.1")
    assert command[3:5] == ["run", str(demo.STOREFRONT)]
    given = flags(command)
    assert given["client.toolbarMode"] == "viewer" and given["client.showSidebarNavigation"] == "false"
    assert given["server.address"] == "127.0.0.1" and given["server.headless"] == "true"
    assert given["logger.hideWelcomeMessage"] == "true"
    config = tomllib.loads((demo.STOREFRONT.parent / ".streamlit" / "config.toml").read_text())
    assert config["client"] == {"toolbarMode": "viewer", "showSidebarNavigation": False}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)  # `shoplens --debug serve`: Streamlit may talk
    try:
        assert flags(demo.streamlit_command())["logger.hideWelcomeMessage"] == "false"
    finally:
        root.setLevel(level)
