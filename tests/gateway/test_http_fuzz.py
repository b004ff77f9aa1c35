"""The short form of the HTTP campaign (`python -m ops.fuzz http` is the long one):
schemathesis against the gateway's OpenAPI document, every check it ships."""

from __future__ import annotations

from pathlib import Path

from ops.fuzz._http import run_http
from tests.gateway.conftest import GatewayUnderTest


async def test_no_request_gets_a_5xx_and_every_error_is_documented(
    gateway: GatewayUnderTest, tmp_path: Path
) -> None:
    assert gateway.fleet.fleet is not None
    figures = await run_http(
        gateway.url,
        key="k-admin",
        fleet=gateway.fleet.fleet,
        max_examples=5,
        seed=7,
        report_dir=tmp_path,
    )
    log = (tmp_path / "schemathesis.log").read_text()
    assert figures.operations >= 20 and figures.cases > 300, log
    assert figures.server_errors == 0 and figures.failures == 0 and figures.errors == 0, log
    assert figures.clean, log
