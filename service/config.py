"""The service's settings, read from ``LRKEEPER_*`` environment variables.

Settings are an object handed to :func:`service.main.create_app`, never a module
global, so a test (or a second app in one process) can run with its own.
"""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./data/lrkeeper.db"


class Settings(BaseSettings):
    """Everything an operator may set; the defaults give a working local service."""

    model_config = SettingsConfigDict(env_prefix="LRKEEPER_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    # Comma-separated ``ROLE:TOKEN`` entries; parsed by service.auth, kept raw here so a
    # malformed entry is reported there with its context instead of as a settings error.
    tokens: str = ""
    allow_anonymous: bool = False
    max_list_limit: int = 1000
    max_history_limit: int = 10000
    max_preview_steps: int = 100000
    max_catch_up_steps: int = 100000
    max_param_groups: int = 64
    # A running run with no new step for this long is shown as "stale" (computed when read).
    stale_after: float = Field(default=600.0, gt=0)
    # Connections per database pool, and the cap on threads serving requests at once.
    db_pool_size: int = Field(default=16, ge=1)
