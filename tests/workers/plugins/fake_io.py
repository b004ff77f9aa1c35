"""An in-memory PluginIO for plugin unit tests: a dict workspace, a list history."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class FakeIO:
    """Implements `PluginIO` over `files` and `messages`; records what plugins set."""

    def __init__(
        self,
        files: Mapping[str, str] | None = None,
        messages: list[dict[str, Any]] | None = None,
    ) -> None:
        self.files = dict(files or {})
        self.messages = list(messages or [])
        self.system_context: dict[str, str] = {}
        self.request_options: dict[str, Any] = {}

    async def read_text(self, path: str) -> str | None:
        return self.files.get(path)

    async def write_text(self, path: str, text: str, *, append: bool = False) -> None:
        self.files[path] = (self.files.get(path, "") if append else "") + text

    async def find_files(self, directory: str, name: str) -> list[str]:
        prefix = directory.rstrip("/") + "/"
        return sorted(p for p in self.files if p.startswith(prefix) and p.endswith("/" + name))

    async def checkpoint(self, label: str, metadata: Mapping[str, Any]) -> str:
        return f"cp-{label}"

    async def complete(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        provider_opts: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
    ) -> str:
        raise AssertionError("these plugins never call an LLM themselves")

    def set_system_context(self, key: str, text: str | None) -> None:
        if text is None:
            self.system_context.pop(key, None)
        else:
            self.system_context[key] = text

    def history(self) -> list[dict[str, Any]]:
        return list(self.messages)

    def set_request_option(self, key: str, value: Any) -> None:
        self.request_options[key] = value

    def patch_history(self, results: list[dict[str, Any]]) -> None:
        for result in results:
            at = next(
                i
                for i, m in enumerate(self.messages)
                if any(c.get("call_id") == result["call_id"] for c in m.get("tool_calls") or [])
            )
            at += 1
            while at < len(self.messages) and self.messages[at].get("role") == "tool_result":
                at += 1
            self.messages.insert(at, dict(result))
