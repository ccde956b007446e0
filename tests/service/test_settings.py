"""Settings come from LRKEEPER_* variables or from the caller; an app uses the ones it is given."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import ValidationError

from service.config import DEFAULT_DATABASE_URL, Settings
from service.limits import PayloadLimits
from service.main import create_app
from service.routes.dependencies import get_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LRKEEPER_"):
            monkeypatch.delenv(name)


def test_defaults_give_a_local_sqlite_service_in_protected_mode() -> None:
    settings = Settings()
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite:///./data/lrkeeper.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.tokens == ""
    assert settings.allow_anonymous is False
    assert settings.max_list_limit == 1000
    assert settings.max_history_limit == 10000
    assert settings.max_preview_steps == 100000


def test_environment_variables_with_the_lrkeeper_prefix_override_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LRKEEPER_DATABASE_URL", "postgresql+psycopg://u@db/lrkeeper")
    monkeypatch.setenv("LRKEEPER_PORT", "9001")
    monkeypatch.setenv("LRKEEPER_ALLOW_ANONYMOUS", "true")
    monkeypatch.setenv("LRKEEPER_TOKENS", "read:abc,write:sha256:00ff")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///ignored-without-prefix.db")

    settings = Settings()

    assert settings.database_url == "postgresql+psycopg://u@db/lrkeeper"
    assert settings.port == 9001
    assert settings.allow_anonymous is True
    assert settings.tokens == "read:abc,write:sha256:00ff"


@pytest.mark.parametrize("depth", ["7", "257"])
def test_a_json_depth_setting_the_api_or_the_codec_cannot_live_with_is_refused(
    monkeypatch: pytest.MonkeyPatch, depth: str
) -> None:
    # Below 8 a PUT of a SequentialLR cannot be sent; above 256 the walks after the check
    # (the codec's two frames a level) could reach Python's recursion limit.
    monkeypatch.setenv("LRKEEPER_MAX_JSON_DEPTH", depth)
    with pytest.raises(ValidationError, match="max_json_depth"):
        Settings()


def test_the_json_depth_setting_reaches_the_payload_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRKEEPER_MAX_JSON_DEPTH", "64")
    assert Settings().payload_limits().max_json_depth == 64
    assert PayloadLimits().max_json_depth == 32


def app_reporting_its_settings(settings: Settings | None) -> FastAPI:
    app = create_app(settings)

    @app.get("/test-only/settings")
    def settings_in_use(
        in_use: Annotated[Settings, Depends(get_settings)],
    ) -> dict[str, str | int]:
        return {"database_url": in_use.database_url, "max_list_limit": in_use.max_list_limit}

    return app


def test_app_uses_the_settings_it_is_given_not_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, serve_app: Callable[[FastAPI], str]
) -> None:
    monkeypatch.setenv("LRKEEPER_DATABASE_URL", f"sqlite:///{tmp_path / 'from-env' / 'x.db'}")
    given_url = f"sqlite:///{tmp_path / 'given' / 'x.db'}"

    base_url = serve_app(
        app_reporting_its_settings(Settings(database_url=given_url, max_list_limit=7))
    )

    assert httpx.get(f"{base_url}/test-only/settings").json() == {
        "database_url": given_url,
        "max_list_limit": 7,
    }
    assert (tmp_path / "given").is_dir()
    assert not (tmp_path / "from-env").exists()


def test_building_an_app_touches_no_database_until_it_starts(
    tmp_path: Path, serve_app: Callable[[FastAPI], str]
) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'lazy' / 'x.db'}"))
    assert not (tmp_path / "lazy").exists()
    serve_app(app)
    assert (tmp_path / "lazy").is_dir()


def test_default_database_directory_is_created_on_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, serve_app: Callable[[FastAPI], str]
) -> None:
    monkeypatch.chdir(tmp_path)
    base_url = serve_app(app_reporting_its_settings(None))
    assert httpx.get(f"{base_url}/healthz").status_code == 200
    assert (tmp_path / "data").is_dir()
