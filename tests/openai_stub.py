"""An OpenAI-compatible chat server on loopback, so real provider adapters run offline.

It plays scripted replies (text, reasoning, tool calls, usage, HTTP errors) over real SSE,
records every request, and echoes the last user message once its script runs out:

    async with OpenAIStub() as stub:
        stub.script(Reply(text="hi"), Reply(status=429, retry_after=2))
        opts = {"base_url": stub.base_url, "api_key": "sk-test"}
        ...
        assert stub.requests[0].body["messages"][-1]["content"] == "hello"
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.loopback_http import LoopbackServer

__all__ = ["OpenAIStub", "RecordedRequest", "Reply", "ToolCall"]

_ERRORS = {
    400: ("invalid_request_error", "bad request"),
    401: ("invalid_request_error", "Incorrect API key provided."),
    403: ("invalid_request_error", "You are not allowed to use this model."),
    429: ("rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", "The server had an error while processing your request."),
    503: ("server_error", "The engine is currently overloaded."),
}
CONTEXT_OVERFLOW = (
    "This model's maximum context length is 128000 tokens. However, your messages "
    "resulted in 130000 tokens. Please reduce the length of the messages."
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] | str
    """A dict is JSON-encoded; a string is sent as is (to test undecodable arguments)."""
    id: str = ""


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer; `status` other than 200 makes it an OpenAI-style error."""

    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: dict[str, int] | None = None
    """`{prompt_tokens, completion_tokens, cached_tokens}`; missing keys are counted."""
    send_usage: bool = True
    """False leaves out the usage chunk even when the client asks for it."""
    chunk_chars: int = 4
    status: int = 200
    message: str = ""
    """The error message (a default per status when empty)."""
    code: str | None = None
    retry_after: float | None = None
    delay_s: float = 0.0
    """Wait before answering (cut short when the stub closes), to provoke client timeouts."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    """Lower-cased header names."""
    body: dict[str, Any]


@dataclass(slots=True)
class _Answer:
    text: str
    reasoning: str
    tool_calls: list[dict[str, Any]]
    usage: dict[str, Any] | None
    chunk_chars: int
    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{time.monotonic_ns()}")


def _pieces(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), max(size, 1)):
        yield text[start : start + size]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


class OpenAIStub:
    """An OpenAI chat-completions server on 127.0.0.1, started in the running event loop."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._closing = asyncio.Event()
        routes = [
            Route(path, self._completions, methods=["POST"])
            for path in ("/v1/chat/completions", "/chat/completions")
        ]
        self.app = Starlette(routes=routes)
        self._http = LoopbackServer(self.app)

    @property
    def url(self) -> str:
        """The server root, `http://127.0.0.1:<port>`."""
        assert self._http.port, "the stub is not started"
        return f"http://127.0.0.1:{self._http.port}"

    @property
    def base_url(self) -> str:
        """What a client takes as `base_url` / `api_base`: the root plus `/v1`."""
        return f"{self.url}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies, played one per request; an empty queue echoes the last user text."""
        self._queue.extend(replies)

    async def start(self) -> None:
        await self._http.start()

    async def close(self) -> None:
        """Stop serving: delayed replies end at once, open connections are closed."""
        self._closing.set()
        await self._http.stop()

    async def __aenter__(self) -> OpenAIStub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _completions(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append(RecordedRequest(request.url.path, dict(request.headers), body))
        reply = self._queue.popleft() if self._queue else None
        if reply is None:
            reply = Reply(text="echo: " + _last_user_text(body.get("messages") or []))
        if reply.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay_s)
        if reply.status != 200:
            return _error(reply)
        answer = _answer(reply, body)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            if not include_usage:
                answer.usage = None
            return StreamingResponse(_sse(answer), media_type="text/event-stream")
        return JSONResponse(_completion(answer))


def _error(reply: Reply) -> Response:
    kind, default = _ERRORS.get(reply.status, ("api_error", f"error {reply.status}"))
    error = {"message": reply.message or default, "type": kind, "param": None, "code": reply.code}
    headers = {}
    if reply.retry_after is not None:
        headers["retry-after"] = f"{reply.retry_after:g}"
    return JSONResponse({"error": error}, status_code=reply.status, headers=headers)


def _answer(reply: Reply, body: dict[str, Any]) -> _Answer:
    calls = []
    for n, call in enumerate(reply.tool_calls):
        arguments = call.arguments
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        calls.append({"id": call.id or f"call_{n}", "name": call.name, "arguments": arguments})
    usage: dict[str, Any] | None = None
    if reply.send_usage:
        given = reply.usage or {}
        prompt_chars = sum(len(_text_of(m.get("content"))) for m in body.get("messages") or [])
        out_chars = len(reply.text) + len(reply.reasoning) + sum(len(c["arguments"]) for c in calls)
        prompt = given.get("prompt_tokens", math.ceil(prompt_chars / 4))
        completion = given.get("completion_tokens", math.ceil(out_chars / 4))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": given.get("cached_tokens", 0)},
        }
    return _Answer(
        reply.text, reply.reasoning, calls, usage, reply.chunk_chars, str(body.get("model", ""))
    )


def _chunk(answer: _Answer, delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return _event(
        {
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": answer.model,
            "choices": [choice],
        }
    )


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def _sse(answer: _Answer) -> AsyncIterator[bytes]:
    """Chunks the way OpenAI sends them: role, reasoning, text, tool calls, finish, usage."""
    size = answer.chunk_chars
    yield _chunk(answer, {"role": "assistant", "content": ""})
    for piece in _pieces(answer.reasoning, size):
        yield _chunk(answer, {"reasoning_content": piece})
    for piece in _pieces(answer.text, size):
        yield _chunk(answer, {"content": piece})
    for index, call in enumerate(answer.tool_calls):
        head = {"id": call["id"], "type": "function", "function": {"name": call["name"]}}
        head["function"]["arguments"] = ""
        yield _chunk(answer, {"tool_calls": [{"index": index, **head}]})
        for piece in _pieces(call["arguments"], size):
            delta = {"index": index, "function": {"arguments": piece}}
            yield _chunk(answer, {"tool_calls": [delta]})
    yield _chunk(answer, {}, "tool_calls" if answer.tool_calls else "stop")
    if answer.usage is not None:
        yield _event(
            {
                "id": answer.id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": answer.model,
                "choices": [],
                "usage": answer.usage,
            }
        )
    yield b"data: [DONE]\n\n"


def _completion(answer: _Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in answer.tool_calls
        ]
    finish = "tool_calls" if answer.tool_calls else "stop"
    return {
        "id": answer.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": answer.usage,
    }
