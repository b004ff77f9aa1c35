"""Settings: environment in, environment out."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla import Settings


def test_settings_survive_the_trip_through_a_child_environment() -> None:
    settings = Settings(
        prefix="p1",
        shards=8,
        data_dir=Path("/tmp/x"),
        metrics_port=None,
        worker_id="w-9",
        heartbeat_interval_s=0.2,
    )
    assert Settings.from_env(settings.to_env()) == settings


def test_flags_override_the_environment() -> None:
    settings = Settings.from_env({"FLOTILLA_SHARDS": "8"}, shards=16, nats_url=None)
    assert settings.shards == 16 and settings.nats_url == "nats://127.0.0.1:4222"


def test_a_bad_number_names_its_variable() -> None:
    with pytest.raises(ValueError, match="FLOTILLA_SHARDS"):
        Settings.from_env({"FLOTILLA_SHARDS": "many"})
