"""The `mock:` provider (PROTOCOL §5): offline and deterministic, same engine as real ones."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

from workers._llm import Chunk, LLMError, LLMRequest, LLMResponse

CHUNK_CHARS = 8
_RETRYABLE = {
    "rate_limit": True,
    "timeout": True,
    "server": True,
    "auth": False,
    "context_overflow": False,
}


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


class MockLLM:
    """`mock:echo` and `mock:script`; the script position comes from the request."""

    def stream(self, request: LLMRequest, response: LLMResponse) -> AsyncIterator[Chunk]:
        return self._stream(request, response)

    async def _stream(self, request: LLMRequest, response: LLMResponse) -> AsyncIterator[Chunk]:
        name = request.model.partition(":")[2]
        script = request.provider_opts.get("script") or []
        step: dict[str, Any] = {}
        response.script_step = name == "script"
        if name == "script" and request.script_cursor < len(script):
            step = dict(script[request.script_cursor])
        elif name not in ("echo", "script"):
            raise LLMError(
                "invalid_model", f"unknown mock model {request.model!r}", retryable=False
            )
        if not step:
            step = {"text": "echo: " + _last_user_text(request.messages)}
        if step.get("delay_ms"):
            await asyncio.sleep(step["delay_ms"] / 1000)
        error = step.get("error")
        if error:
            raise LLMError(
                str(error),
                f"mock provider error: {error}",
                retryable=_RETRYABLE.get(str(error), False),
            )
        chunk_delay = (step.get("chunk_delay_ms") or 0) / 1000
        for kind, text in (
            ("thinking", step.get("thinking") or ""),
            ("text", step.get("text") or ""),
        ):
            for start in range(0, len(text), CHUNK_CHARS):
                if chunk_delay and start:
                    await asyncio.sleep(chunk_delay)
                yield Chunk(kind, text[start : start + CHUNK_CHARS])  # type: ignore[arg-type]
        response.text = step.get("text") or ""
        response.thinking = step.get("thinking") or ""
        response.tool_calls = list(step.get("tool_calls") or [])
        usage = step.get("usage") or {}
        prompt_chars = request.prompt_chars + len(request.system_prompt)
        response.prompt_tokens = int(usage.get("prompt_tokens", _tokens(prompt_chars)))
        response.completion_tokens = int(
            usage.get("completion_tokens", _tokens(len(response.text) + len(response.thinking)))
        )
        response.cached_tokens = int(usage.get("cached_tokens", 0))
        price = request.provider_opts.get("price") or {}
        response.cost_usd = (
            response.prompt_tokens * float(price.get("input_per_mtok", 0.0))
            + response.completion_tokens * float(price.get("output_per_mtok", 0.0))
        ) / 1_000_000
