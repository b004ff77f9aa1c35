"""Real providers (`openai:`, `anthropic:`, ...) through litellm, behind the LLM port.

litellm is imported on the first call only, in a thread: a worker that serves `mock:` sessions
never pays its multi-second import, and one that does is not frozen while it loads. Its
exceptions become `LLMError` in `_translate`, the only place that knows litellm's error tree.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib
import importlib.util
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from workers._llm import Chunk, LLMError, LLMRequest, LLMResponse

_PASSED_OPTS = (
    "api_key",
    "temperature",
    "top_p",
    "extra_headers",
    "api_version",
    "organization",
    "reasoning_effort",
    "thinking",
)
"""provider_opts given to litellm as they are; the rest (`script`, `price`, registry
bookkeeping) stays here, so no option meant for Flotilla lands in a provider's request."""
_MAX_MESSAGE_CHARS = 2000
_BY_CLASS = (
    # Most specific first: litellm's context overflow is a BadRequestError, its Timeout an
    # APIConnectionError, and it raises 403 as a BadRequestError (the status decides that one).
    ("ContextWindowExceededError", "context_overflow", False),
    ("RateLimitError", "rate_limit", True),
    ("Timeout", "timeout", True),
    ("AuthenticationError", "auth", False),
    ("PermissionDeniedError", "auth", False),
    ("ServiceUnavailableError", "server", True),
    ("InternalServerError", "server", True),
    ("BadGatewayError", "server", True),
    ("APIConnectionError", "server", True),
)


class LiteLLM:
    """Every `provider:model_id` litellm knows; one instance serves all sessions of a worker."""

    def __init__(self) -> None:
        self._litellm: Any = None
        self._skip_mcp = False

    async def load(self) -> None:
        """Import litellm now, e.g. at worker start, instead of on the first request."""
        if self._litellm is None:
            self._litellm, self._skip_mcp = await asyncio.to_thread(_import_litellm)

    async def knows(self, provider: str) -> bool:
        """Whether `provider` (the part of `provider:model_id` before the colon) is one of
        litellm's providers; imports litellm if that has not happened yet."""
        await self.load()
        return provider in self._litellm.provider_list

    def stream(self, request: LLMRequest, response: LLMResponse) -> AsyncIterator[Chunk]:
        return self._stream(request, response)

    async def _stream(self, request: LLMRequest, response: LLMResponse) -> AsyncIterator[Chunk]:
        provider, _, model_id = request.model.partition(":")
        if not provider or not model_id:
            raise LLMError(
                "invalid_model",
                f"model {request.model!r} is not provider:model_id",
                retryable=False,
            )
        await self.load()
        litellm = self._litellm
        parts = _Parts()
        try:
            kwargs = _call_kwargs(request, f"{provider}/{model_id}")
            if self._skip_mcp and request.tools:
                kwargs["_skip_mcp_handler"] = True
            stream = await litellm.acompletion(**kwargs)
            try:
                async for chunk in stream:
                    for out in parts.feed(chunk):
                        yield out
            finally:
                # An abandoned stream must give its HTTP connection back at once.
                await stream.aclose()
        except Exception as exc:  # every foreign error, translated in one place
            raise _translate(exc, litellm, request.provider_opts) from None
        parts.fill(response, request)
        response.cost_usd = _cost(litellm, provider, model_id, request, response)


def _import_litellm() -> tuple[Any, bool]:
    """litellm, configured, and whether requests with tools must skip its MCP gateway."""
    # litellm downloads its price map from GitHub at import unless told to use the copy it
    # ships; a worker must start without that network call, offline or not.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        litellm: Any = importlib.import_module("litellm")
    except ImportError:
        raise LLMError(
            "unsupported_provider",
            "litellm is not installed on this worker (pip install 'flotilla[llm]')",
            retryable=False,
        ) from None
    # The "Give Feedback / Get Help" banner goes to stdout on every error.
    litellm.suppress_debug_info = True
    # Prompts and replies stay out of litellm's own logging and callbacks.
    litellm.turn_off_message_logging = True
    # Releases that still have telemetry send model names and errors to BerriAI unless told.
    litellm.telemetry = False
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Recent litellm sends every request with tools through its MCP gateway module, which
    # imports the optional `mcp` package: without it each such call fails as a connection
    # error. Flotilla's tools are plain functions, so that path is skipped when it would break.
    gateway = "litellm.responses.mcp.chat_completions_handler"
    skip_mcp = importlib.util.find_spec("mcp") is None and _has_module(gateway)
    return litellm, skip_mcp


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def _call_kwargs(request: LLMRequest, model: str) -> dict[str, Any]:
    opts = request.provider_opts
    system = [{"role": "system", "content": request.system_prompt}] if request.system_prompt else []
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": system + [_to_openai(m) for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        # Retries belong to the turn engine, which emits a `retry` event for each: none in
        # litellm's own loop, none in the provider SDK's (openai retries twice by default).
        "num_retries": 0,
        "max_retries": 0,
    }
    if request.tools:
        kwargs["tools"] = request.tools
    if request.max_tokens:
        kwargs["max_tokens"] = request.max_tokens
    kwargs.update({name: opts[name] for name in _PASSED_OPTS if opts.get(name) is not None})
    if opts.get("base_url"):
        kwargs["api_base"] = opts["base_url"]
    if opts.get("timeout_ms"):
        kwargs["timeout"] = float(opts["timeout_ms"]) / 1000
    kwargs.update(request.options)  # set by plugins for this request (prompt caching...)
    return kwargs


def _to_openai(message: dict[str, Any]) -> dict[str, Any]:
    """A history message (PROTOCOL §5 `messages`) in OpenAI chat format."""
    role = message.get("role")
    content = message.get("content") or ""
    if role == "tool_result":
        if not isinstance(content, str):
            content = json.dumps(content)
        return {"role": "tool", "tool_call_id": message.get("call_id") or "", "content": content}
    if role != "assistant":
        return {"role": role, "content": content}
    # `thinking` is not sent back: OpenAI's format has no place for it and some providers
    # (DeepSeek) refuse reasoning in their input.
    calls = message.get("tool_calls") or []
    if not calls:
        return {"role": "assistant", "content": content}
    return {
        "role": "assistant",
        "content": content or None,
        "tool_calls": [
            {
                "id": call.get("call_id") or "",
                "type": "function",
                "function": {
                    "name": call.get("name") or "",
                    "arguments": _encode_arguments(call.get("arguments")),
                },
            }
            for call in calls
        ],
    }


def _encode_arguments(arguments: Any) -> str:
    if isinstance(arguments, dict) and set(arguments) == {"_raw"}:
        return str(arguments["_raw"])  # what the model sent, undecodable, goes back as it was
    return json.dumps(arguments if arguments is not None else {})


def _decode_arguments(raw: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested past what Python reads
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


@dataclass(slots=True)
class _ToolCallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Parts:
    """What the stream has delivered so far: text, reasoning, tool calls by index, usage."""

    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    calls: dict[int, _ToolCallParts] = field(default_factory=dict)
    usage: Any = None

    def feed(self, chunk: Any) -> Iterable[Chunk]:
        if getattr(chunk, "usage", None):
            self.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or []:
            delta = getattr(choice, "delta", None)
            if delta is None:
                continue
            thinking = _reasoning_of(delta)
            if thinking:
                self.thinking.append(thinking)
                yield Chunk("thinking", thinking)
            text = getattr(delta, "content", None)
            if isinstance(text, str) and text:
                self.text.append(text)
                yield Chunk("text", text)
            for call in getattr(delta, "tool_calls", None) or []:
                self._add_call(call)

    def _add_call(self, delta: Any) -> None:
        index = getattr(delta, "index", None)
        if not isinstance(index, int):
            index = len(self.calls)
        parts = self.calls.setdefault(index, _ToolCallParts())
        parts.id = getattr(delta, "id", None) or parts.id
        function = getattr(delta, "function", None)
        if function is not None:
            parts.name = getattr(function, "name", None) or parts.name
            parts.arguments.append(getattr(function, "arguments", None) or "")

    def fill(self, response: LLMResponse, request: LLMRequest) -> None:
        response.text = "".join(self.text)
        response.thinking = "".join(self.thinking)
        response.tool_calls = [
            {"call_id": p.id, "name": p.name, "arguments": _decode_arguments("".join(p.arguments))}
            for _, p in sorted(self.calls.items())
        ]
        usage = self.usage
        if usage is None:
            # Like the mock: a provider that reports nothing is counted at 4 chars a token.
            chars = request.prompt_chars + len(request.system_prompt)
            response.prompt_tokens = math.ceil(chars / 4)
            response.completion_tokens = math.ceil(
                (len(response.text) + len(response.thinking)) / 4
            )
            return
        response.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        response.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None) or getattr(
            usage, "cache_read_input_tokens", None
        )
        response.cached_tokens = int(cached or 0)


def _reasoning_of(delta: Any) -> str:
    """Reasoning text of a delta; litellm puts Anthropic's in both fields, so one is read."""
    reasoning = getattr(delta, "reasoning_content", None)
    if isinstance(reasoning, str) and reasoning:
        return reasoning
    blocks = getattr(delta, "thinking_blocks", None) or []
    return "".join(
        str(b.get("thinking") or "") for b in blocks if isinstance(b, dict) and "thinking" in b
    )


def _cost(
    litellm: Any, provider: str, model_id: str, request: LLMRequest, response: LLMResponse
) -> float:
    price = request.provider_opts.get("price")
    if isinstance(price, dict):
        return (
            response.prompt_tokens * float(price.get("input_per_mtok", 0.0))
            + response.completion_tokens * float(price.get("output_per_mtok", 0.0))
        ) / 1_000_000
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=f"{provider}/{model_id}",
            custom_llm_provider=provider,
            prompt_tokens=response.prompt_tokens,
            completion_tokens=response.completion_tokens,
            cache_read_input_tokens=response.cached_tokens,
        )
    except Exception:  # an unpriced model (a local server's, say) costs nothing
        return 0.0
    return float(prompt_cost) + float(completion_cost)


def _translate(exc: Exception, litellm: Any, opts: dict[str, Any]) -> LLMError:
    """The one place a litellm, provider SDK or transport error becomes an LLMError."""
    message = _scrub(str(exc) or type(exc).__name__, opts)
    status = getattr(exc, "status_code", None)
    for name, code, retryable in _BY_CLASS:
        cls = getattr(litellm, name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            retry_after = _retry_after(exc) if code == "rate_limit" else None
            return LLMError(code, message, retryable=retryable, retry_after=retry_after)
    if isinstance(exc, TimeoutError) or status == 408:
        return LLMError("timeout", message, retryable=True)
    if status == 429:
        return LLMError("rate_limit", message, retryable=True, retry_after=_retry_after(exc))
    if status in (401, 403):
        return LLMError("auth", message, retryable=False)
    if (isinstance(status, int) and status >= 500) or isinstance(exc, OSError):
        return LLMError("server", message, retryable=True)
    bad_request = getattr(litellm, "BadRequestError", None)
    if (isinstance(status, int) and 400 <= status < 500) or (
        isinstance(bad_request, type) and isinstance(exc, bad_request)
    ):
        return LLMError("bad_request", message, retryable=False)
    return LLMError("provider_error", message, retryable=False)


def _scrub(message: str, opts: dict[str, Any]) -> str:
    """The message without any secret of the session's opts (PROTOCOL §4: never in events)."""
    secrets = [str(value) for name, value in opts.items() if _is_secret(name) and value]
    headers = opts.get("extra_headers")
    if isinstance(headers, dict):
        secrets += [str(v) for k, v in headers.items() if _is_secret(str(k).lower()) and v]
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            message = message.replace(secret, "***")
    return message[:_MAX_MESSAGE_CHARS]


def _is_secret(name: str) -> bool:
    return name in ("api_key", "authorization", "x-api-key", "api-key") or name.endswith(
        ("_key", "_secret", "_token", "-key", "-token")
    )


def _retry_after(exc: Exception) -> float | None:
    """Seconds the provider asked to wait (`retry-after-ms`, `retry-after`), if it said."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "litellm_response_headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(float(headers["retry-after-ms"]) / 1000, 0.0)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)  # the HTTP-date form
            return max(when.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None
