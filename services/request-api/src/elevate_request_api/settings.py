"""request-api's own settings (on top of the shared ones)."""

from __future__ import annotations

from elevate_core.settings import Settings
from pydantic import Field


class RequestApiSettings(Settings):
    # How far in the past "now" may be (how far ahead: the shared request_horizon_days).
    start_tolerance_seconds: int = Field(default=300, ge=0)
    # JWT checks.
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_min_refresh_seconds: float = Field(default=10.0, ge=0)
    # A replica may serve the API without projecting the read model (then another does).
    read_model_consumer: bool = True
