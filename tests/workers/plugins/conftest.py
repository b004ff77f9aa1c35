"""Fixtures of the plugin tests: a session context and scripted plugins."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from workers.plugins import Action, Hook, Plugin, PluginContext

Respond = Callable[[Hook, Mapping[str, Any], dict[str, Any]], Action | None]
MakePlugin = Callable[..., Plugin]


class Scripted(Plugin):
    """A plugin whose answer is a function of (hook, payload, state)."""

    name = "scripted"

    def __init__(self, respond: Respond) -> None:
        super().__init__({})
        self._respond = respond

    def handle(
        self, hook: Hook, payload: Mapping[str, Any], state: dict[str, Any], ctx: PluginContext
    ) -> Action | None:
        return self._respond(hook, payload, state)


class NoIO:
    """A PluginIO for chain tests whose plugins do no I/O: any use is a test failure."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a plugin without I/O called io.{name}")


NO_IO: Any = NoIO()


@pytest.fixture
def ctx() -> PluginContext:
    return PluginContext(session_id="s1", tenant="acme", turn=1, model="mock:a")


@pytest.fixture
def make_plugin() -> MakePlugin:
    """make_plugin(name, answer_or_function, priority=100): a scripted plugin."""

    def make(name: str, answer: Action | Respond | None = None, priority: int = 100) -> Plugin:
        respond: Respond = answer if callable(answer) else (lambda _h, _p, _s: answer)
        cls = type(name, (Scripted,), {"name": name, "priority": priority})
        plugin: Plugin = cls(respond)
        return plugin

    return make
