"""Suite-wide setup: the real-registry fixtures, and an isolated HOME for unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.registry"]

UNIT_DIR = Path(__file__).resolve().parent / "unit"


@pytest.fixture(autouse=True)
def _isolated_home_for_unit_tests(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unit tests never see the developer's ~/.docker/config.json, helm config or caches."""
    if not request.node.path.resolve().is_relative_to(UNIT_DIR):
        return
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    for variable in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "REGISTRY_AUTH_FILE"):
        monkeypatch.delenv(variable, raising=False)
