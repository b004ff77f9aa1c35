"""Fixtures of the worker tests: the real litellm, allowed to reach loopback servers only."""

from __future__ import annotations

import importlib
import socket
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@pytest.fixture(scope="session")
def _litellm_module() -> ModuleType:
    """litellm imported once per run (it takes seconds), then blocked again for other tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        patch.delitem(sys.modules, "litellm", raising=False)
        module = importlib.import_module("litellm")
    # Leaving the context put back the block (or nothing, before the first test): either way
    # `import litellm` fails again outside `litellm_loopback`.
    sys.modules["litellm"] = None  # type: ignore[assignment]
    return module


@pytest.fixture
def litellm_loopback(
    monkeypatch: pytest.MonkeyPatch, _litellm_module: ModuleType
) -> Iterator[list[str]]:
    """Lift the `_no_real_llm` block for this test; any host but loopback is refused.

    Yields the refused host names, and fails the test if there is any.
    """
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setitem(sys.modules, "litellm", _litellm_module)
    refused: list[str] = []
    resolve = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOOPBACK:
            refused.append(name)
            raise OSError(f"litellm_loopback: {name!r} is not a loopback host")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    # litellm uses pydantic APIs deprecated since 2.11; `filterwarnings = error` would turn
    # them into failed calls. Only warnings raised from litellm's own modules are let through.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"litellm\.")
        yield refused
    assert not refused, f"litellm tried to reach {refused}"
