"""One `embedder` fixture per backend, so the contract suite runs on each of them."""

from __future__ import annotations

import pytest

from services.embedders import Embedder
from services.embedders.registry import get_embedder
from services.settings import Settings

BACKENDS = ["openclip", "offline", "dashscope"]


@pytest.fixture(scope="session")
def backend_env(request: pytest.FixtureRequest, openclip_env: dict[str, str]):
    """Builds the environment (settings as env vars) for one backend by name."""

    def make(name: str) -> dict[str, str]:
        if name == "openclip":
            return dict(openclip_env)
        if name == "offline":
            return {"SHOPLENS_EMBEDDER": "offline"}
        if name == "dashscope":
            server = request.getfixturevalue("fake_dashscope")
            return {
                "SHOPLENS_EMBEDDER": "dashscope",
                "SHOPLENS_DASHSCOPE_BASE_URL": server.base_url,
                "SHOPLENS_DASHSCOPE_API_KEY": server.api_key,
                "SHOPLENS_DASHSCOPE_REQUESTS_PER_MINUTE": "100000",
            }
        raise ValueError(name)

    return make


@pytest.fixture(scope="session", params=BACKENDS)
def embedder_env(request: pytest.FixtureRequest, backend_env) -> dict[str, str]:
    return backend_env(request.param)


@pytest.fixture(scope="session")
def embedder(embedder_env: dict[str, str]) -> Embedder:
    keys = {k.removeprefix("SHOPLENS_").lower(): v for k, v in embedder_env.items()}
    return get_embedder(Settings(**keys))
