"""`shoplens demo` and `shoplens serve` up to the point where they exec Streamlit."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import main as cli, serve as demo
from services.settings import get_settings
from tests.cli.test_samples import FakeRegistry, make_tarball, registry  # noqa: F401 - the fixture


@pytest.fixture
def env(tmp_path: Path, openclip_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    for key, value in {**openclip_env, "SHOPLENS_HOME": str(home)}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(demo, "_exec", lambda path, argv: calls.append(argv))
    return calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_fetches_ingests_releases_and_starts_the_storefront(
    env: Path, registry: FakeRegistry, execs: list[list[str]], capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    registry.serve(make_tarball())
    port = free_port()
    assert cli.main(["demo", "--no-browser", "--port", str(port), "--registry", registry.url]) == 0
    out = capsys.readouterr().out
    assert "2 new" in out and f"http://localhost:{port}/" in out
    (command,) = execs
    assert command[1:5] == ["-m", "streamlit", "run", str(demo.STOREFRONT)]
    assert command[command.index("--server.port") + 1] == str(port)
    assert command[command.index("--server.headless") + 1] == "true"
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert Path(command[4]).is_file()

    # the embedded vector store was released: another "process" (a fresh app here) can open and search it
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


def test_demo_refuses_a_busy_port_before_downloading(env: Path, registry: FakeRegistry, execs: list[list[str]], capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    registry.serve(make_tarball())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["demo", "--no-browser", "--port", str(port), "--registry", registry.url]) == cli.EXIT_USER_ERROR
    assert "already in use" in capsys.readouterr().err
    assert registry.requests == [] and execs == []


def test_demo_explains_an_unreachable_registry(env: Path, execs: list[list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--no-browser", "--port", str(free_port()), "--registry", "http://127.0.0.1:9"]) == cli.EXIT_USER_ERROR
    assert "cannot reach the npm registry" in capsys.readouterr().err
    assert execs == []


def test_serve_only_starts_the_storefront(env: Path, execs: list[list[str]]) -> None:
    port = free_port()
    assert cli.main(["serve", "--port", str(port)]) == 0
    (command,) = execs
    assert command[command.index("--server.port") + 1] == str(port)
    assert "--server.address" not in command
    assert not (env / "samples").exists()  # serve never fetches or ingests
