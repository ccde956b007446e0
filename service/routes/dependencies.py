"""The FastAPI dependencies the routes share: what the app's lifespan and factory built.

They live with the routes, not in service.db or service.config, so neither of those
imports the web framework.
"""

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.db import Database


def get_database(request: Request) -> Database:
    """The Database the app's lifespan opened."""
    database: Database = request.app.state.database
    return database


def get_settings(request: Request) -> Settings:
    """The Settings the app was created with (limits, tokens)."""
    settings: Settings = request.app.state.settings
    return settings


DatabaseDependency = Annotated[Database, Depends(get_database)]
SettingsDependency = Annotated[Settings, Depends(get_settings)]
