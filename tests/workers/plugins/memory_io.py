"""MemoryIO: an in-memory PluginIO for the tests of plugins that do I/O (our own port)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Judge = Callable[[str, list[dict[str, Any]]], str]
"""(model, messages) -> the answer, or raise to fail the call."""


@dataclass
class MemoryIO:
    """Files in a dict, checkpoints and LLM calls recorded, answers from `judge`."""

    files: dict[str, str] = field(default_factory=dict)
    judge: Judge = lambda _model, _messages: "ALLOW"
    checkpoints: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    completions: list[dict[str, Any]] = field(default_factory=list)
    system_context: dict[str, str] = field(default_factory=dict)
    request_options: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    reads: int = 0

    def __post_init__(self) -> None:
        self.files, self.messages = dict(self.files), list(self.messages)  # the caller's stay

    async def read_text(self, path: str) -> str | None:
        self.reads += 1
        return self.files.get(path)

    async def write_text(self, path: str, text: str, *, append: bool = False) -> None:
        self.files[path] = (self.files.get(path, "") if append else "") + text

    async def find_files(self, directory: str, name: str) -> list[str]:
        prefix = "" if directory in ("", ".") else directory.rstrip("/") + "/"
        return sorted(
            p for p in self.files if p.startswith(prefix) and p.rpartition("/")[2] == name
        )

    async def checkpoint(
        self,
        label: str,
        metadata: Mapping[str, Any],
        *,
        keep: int | None = None,
        ttl_s: int | None = None,
    ) -> str:
        self.checkpoints.append((label, dict(metadata)))
        return f"ck-{len(self.checkpoints)}"

    async def complete(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        provider_opts: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
    ) -> str:
        self.completions.append(
            {
                "model": model,
                "messages": messages,
                "provider_opts": dict(provider_opts or {}),
                "timeout_s": timeout_s,
            }
        )
        return self.judge(model, messages)

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
        """Each result after the assistant message that made its call (as the engine does)."""
        for result in results:
            at = 1 + next(
                i
                for i, m in enumerate(self.messages)
                if any(c.get("call_id") == result["call_id"] for c in m.get("tool_calls") or [])
            )
            while at < len(self.messages) and self.messages[at].get("role") == "tool_result":
                at += 1
            self.messages.insert(at, dict(result))
