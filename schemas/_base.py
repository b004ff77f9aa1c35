"""Base model of the wire contract: unknown fields ignored on read, frozen values."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 1


class WireModel(BaseModel):
    """A JSON object of the contract; unknown fields are ignored so old readers stay valid."""

    model_config = ConfigDict(extra="ignore", frozen=True)
