"""Custom tools and a blueprint for engine tests, registered by import path like an operator's.

`flaky` fails until its call counter (a workspace file, so it holds whichever worker runs the
call) reaches `succeed_on`; `wait` sleeps, so a test can act while a call runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from workers.tools import ToolContext, ToolResult, ToolSpec, WorkspaceError


class Flaky:
    spec = ToolSpec(
        name="flaky",
        description="Fails until it has been called `succeed_on` times.",
        parameters={
            "type": "object",
            "properties": {"succeed_on": {"type": "integer", "minimum": 1}},
            "required": ["succeed_on"],
        },
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        try:
            calls = int(await ctx.workspace.read("flaky.count")) + 1
        except WorkspaceError:  # no file yet
            calls = 1
        await ctx.workspace.write("flaky.count", str(calls).encode())
        if calls < args["succeed_on"]:
            return ToolResult.error(f"attempt {calls} failed")
        return ToolResult(f"succeeded on attempt {calls}")


class Wait:
    spec = ToolSpec(
        name="wait",
        description="Sleeps `ms` milliseconds.",
        parameters={
            "type": "object",
            "properties": {"ms": {"type": "integer", "minimum": 0}},
            "required": ["ms"],
        },
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        await asyncio.sleep(args["ms"] / 1000)
        return ToolResult(f"waited {args['ms']} ms")


REVIEWER = {
    "system_prompt": "You review code.",
    "tools": ["read_file", "wait"],
    "max_turns": 7,
    "user_data": {"team": "review"},
}

CUSTOM_TOOLS = ("tests.workers.engine_tools:Flaky", "tests.workers.engine_tools:Wait")
