"""The service's settings, read from ``LRKEEPER_*`` environment variables.

Settings are an object handed to :func:`service.main.create_app`, never a module
global, so a test (or a second app in one process) can run with its own.
"""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.limits import MAX_JSON_DEPTH_CEILING, CatchUpLimit, PayloadLimits
from service.logs import LogFormat

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
    # The most rows a thinned history (?points=P) may be asked for.
    max_history_points: int = Field(default=10000, ge=2)
    max_preview_steps: int = 100000
    max_catch_up_steps: int = 100000
    # One catch-up holds the run's row (on SQLite, the database's only writer) while it
    # computes and stores every step, so it is bounded by work as well: steps × param
    # groups. 20,000 take ~0.4 s here, well inside DATABASE_WAIT_SECONDS.
    max_catch_up_values: int = Field(default=20000, ge=1)
    # A preview holds no lock, but its CPU and its answer grow as steps × param groups.
    max_preview_values: int = Field(default=1_000_000, ge=1)
    max_param_groups: int = 64
    # A running run with no new step for this long is shown as "stale" (computed when read).
    stale_after: float = Field(default=600.0, gt=0)
    # Connections per database pool, and the cap on threads serving requests at once.
    db_pool_size: int = Field(default=16, ge=1)
    # Request size limits (service.edge, service.limits).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    max_metrics: int = Field(default=PayloadLimits.max_metrics, ge=0)
    max_metric_name_length: int = Field(default=PayloadLimits.max_metric_name_length, ge=1)
    max_metadata_bytes: int = Field(default=PayloadLimits.max_metadata_bytes, ge=2)
    # A PUT of a SequentialLR over Adam groups is 5 levels deep; below 8 the API breaks.
    max_json_depth: int = Field(
        default=PayloadLimits.max_json_depth, ge=8, le=MAX_JSON_DEPTH_CEILING
    )
    # The longest a request may wait for a ranked step's decision (``?wait=S`` is cut to it).
    max_wait_seconds: float = Field(default=60.0, ge=0, le=3600)
    # One JSON object per log line, or text for a terminal (service.logs).
    log_format: LogFormat = "text"

    def catch_up_limit(self) -> CatchUpLimit:
        return CatchUpLimit(steps=self.max_catch_up_steps, values=self.max_catch_up_values)

    def payload_limits(self) -> PayloadLimits:
        return PayloadLimits(
            max_metrics=self.max_metrics,
            max_metric_name_length=self.max_metric_name_length,
            max_metadata_bytes=self.max_metadata_bytes,
            max_param_groups=self.max_param_groups,
            max_json_depth=self.max_json_depth,
        )
