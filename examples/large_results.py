"""Recipe 8, large tool results cost no context: they are offloaded, and paged on demand.

A tool result longer than the worker's `tool_result_max_chars` (FLOTILLA_TOOL_RESULT_MAX_CHARS,
16,000 by default) is saved in the session's workspace under `.flotilla/results/<call_id>.txt`;
the LLM gets its head and a note naming that file, and pages through it with
`read_file(path, offset, limit)`. Here a grep for 5xx errors in an access log (written by the
first step, standing in for a real one) returns far more than that.

    python -m examples.large_results
"""

from __future__ import annotations

from typing import Any

from examples._run import run_example, turn_events
from flotilla import Fleet
from schemas import Event

GREP_CALL = "grep-5xx"
RESULT_PATH = f".flotilla/results/{GREP_CALL}.txt"
"""Where the worker keeps the grep's full output (named after the call id)."""
PAGE = 20


def access_log(lines: int) -> str:
    """A synthetic nginx access log; every third request failed with a 5xx status."""
    paths = ("/api/orders", "/api/users", "/login", "/static/app.js")
    rows = []
    for i in range(lines):
        status = (500, 502, 503)[i // 3 % 3] if i % 3 == 0 else 200
        rows.append(
            f"10.0.{i // 250}.{i % 250} - - [12/Mar/2025:10:{i % 60:02d}:00 +0000] "
            f'"GET {paths[i % 4]} HTTP/1.1" {status} 512'
        )
    return "\n".join(rows) + "\n"


def _call(name: str, call_id: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "call_id": call_id, "arguments": arguments}


def script(lines: int) -> dict[str, Any]:
    """The mock LLM's steps: write the log, grep it, read two pages of the offloaded result."""
    return {
        "script": [
            {
                "tool_calls": [
                    _call("write_file", "log", path="access.log", content=access_log(lines))
                ]
            },
            {"tool_calls": [_call("grep", GREP_CALL, pattern='" 5\\d\\d ', max_results=1000)]},
            {"tool_calls": [_call("read_file", "page-1", path=RESULT_PATH, offset=1, limit=PAGE)]},
            {
                "tool_calls": [
                    _call("read_file", "page-2", path=RESULT_PATH, offset=PAGE + 1, limit=PAGE)
                ]
            },
            {"text": "The 5xx errors are spread evenly over /api/orders, /api/users, /login."},
        ]
    }


async def main(fleet: Fleet, *, log_lines: int = 3000, stop: bool = True) -> list[Event]:
    """Grep a big log, page through the offloaded result; returns the turn's events.

    With `stop=False` the session stays, to read its history afterwards.
    """
    session = await fleet.create_agent(
        model="mock:script",
        tools=["write_file", "grep", "read_file"],
        provider_opts=script(log_lines),
    )

    async def show(event: Event) -> None:
        if event.type == "tool_execution_end":
            result = str(event.data["result"])
            print(f"{event.data['call_id']}: {len(result):,} characters reach the LLM")
            if event.data["call_id"] == GREP_CALL:
                print(result.rsplit("\n", 1)[-1])  # the note naming the offloaded file

    try:
        await session.prompt("Find the distribution of 5xx errors by path in access.log.")
        return await turn_events(session, on_event=show)
    finally:
        if stop:
            await session.stop()


if __name__ == "__main__":
    run_example(main)
