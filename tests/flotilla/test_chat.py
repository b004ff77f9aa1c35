"""`flotilla chat` driven by scripted input against a live fleet."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from flotilla._chat import ChatOptions, TerminalChat, chat_options, run_chat
from tests.conftest import Harness, eventually

WRITE_A = {"name": "write_file", "arguments": {"path": "a.txt", "content": "x"}}
WRITE_B = {"name": "write_file", "arguments": {"path": "b.txt", "content": "y"}}
APPROVE_WRITES = ({"name": "human_approval", "opts": {"tools": ["write_file"]}},)


class Terminal:
    """Scripted input lines (None: Ctrl-D) and everything written, prompts included."""

    def __init__(self, *lines: str | None) -> None:
        self.lines = list(lines)
        self.prompts: list[str] = []
        self.writes: list[str] = []

    async def read_line(self, prompt: str) -> str | None:
        self.prompts.append(prompt)
        self.writes.append(prompt)
        return self.lines.pop(0) if self.lines else None

    def write(self, text: str) -> None:
        self.writes.append(text)

    @property
    def text(self) -> str:
        return "".join(self.writes)


def _script(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"script": list(steps)}


async def _chat(harness: Harness, terminal: Terminal, **options: Any) -> str:
    assert harness.fleet is not None
    async with asyncio.timeout(20):
        return await run_chat(
            harness.fleet,
            options=ChatOptions(**options),
            read_line=terminal.read_line,
            write=terminal.write,
        )


async def test_a_reply_is_streamed_as_it_arrives(fleet: Harness) -> None:
    reply = "Hello there, streamed in pieces."
    terminal = Terminal("hi", "/quit")
    steps = _script({"thinking": "a greeting", "text": reply})
    await _chat(fleet, terminal, model="mock:script", provider_opts=steps)
    assert f"(thinking) a greeting\n{reply}\n" in terminal.text
    assert sum(1 for w in terminal.writes if w and w in reply) > 1  # several deltas
    assert terminal.prompts == ["you> ", "you> "]


async def test_approve_always_is_not_asked_again_for_the_same_tool_family(
    fleet: Harness,
) -> None:
    terminal = Terminal("go", "a", "/quit")
    steps = _script({"tool_calls": [WRITE_A]}, {"tool_calls": [WRITE_B]}, {"text": "both done"})
    await _chat(
        fleet,
        terminal,
        model="mock:script",
        tools=("write_file",),
        plugins=APPROVE_WRITES,
        provider_opts=steps,
    )
    asked = [p for p in terminal.prompts if p.startswith("approve ")]
    assert asked == [
        'approve write_file {"path":"a.txt","content":"x"}? [y]es once / [a]lways / [r]eject '
    ]
    assert "approved (always)" in terminal.text
    assert terminal.text.count("< write_file ok: wrote 1 bytes") == 2
    assert "both done\n" in terminal.text


async def test_the_end_of_input_during_an_approval_rejects_it_and_ends_the_chat(
    fleet: Harness,
) -> None:
    terminal = Terminal("go")
    steps = _script({"tool_calls": [WRITE_A]}, {"text": "never"})
    await _chat(
        fleet,
        terminal,
        model="mock:script",
        tools=("write_file",),
        plugins=APPROVE_WRITES,
        provider_opts=steps,
    )
    assert "(turn ended: rejected)" in terminal.text
    assert terminal.prompts[-1].startswith("approve write_file")


async def test_ask_user_is_answered_by_option_number(fleet: Harness) -> None:
    terminal = Terminal("go", "2", "/quit")
    ask = {
        "name": "ask_user",
        "arguments": {"question": "which color?", "options": ["red", "blue"]},
    }
    sid = await _chat(
        fleet,
        terminal,
        model="mock:script",
        tools=("ask_user",),
        provider_opts=_script({"tool_calls": [ask]}, {"text": "blue it is"}),
        keep=True,
    )
    assert "? which color?\n  1. red\n  2. blue\n" in terminal.text
    results = [m for m in await fleet.history(sid) if m["role"] == "tool_result"]
    assert "blue" in results[0]["content"]
    assert "blue it is\n" in terminal.text


async def test_ctrl_c_during_a_turn_aborts_it_and_the_chat_goes_on(fleet: Harness) -> None:
    assert fleet.fleet is not None
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    out: list[str] = []

    async def read_line(prompt: str) -> str | None:
        return await lines.get()

    slow = {"text": "a very long answer that takes its time", "chunk_delay_ms": 300}
    chat = TerminalChat(
        fleet.fleet,
        options=ChatOptions(model="mock:script", provider_opts=_script(slow)),
        read_line=read_line,
        write=out.append,
    )
    async with asyncio.timeout(20), asyncio.TaskGroup() as tasks:
        run = tasks.create_task(chat.run())
        lines.put_nowait("go")
        await eventually(lambda: "a very l" in "".join(out), what="the first deltas")
        chat.interrupt()
        await eventually(lambda: "(aborted: " in "".join(out), what="agent_abort")
        lines.put_nowait("/quit")
    assert "takes its time" not in "".join(out)
    assert run.result()


async def test_an_existing_session_is_attached_to_and_left_running(fleet: Harness) -> None:
    assert fleet.fleet is not None
    existing = await fleet.fleet.create_agent(session_id="chat-attach", model="mock:echo")
    terminal = Terminal("hello", "/quit")
    sid = await _chat(fleet, terminal, session_id="chat-attach", model="mock:echo")
    assert sid == "chat-attach"
    assert "echo: hello\n" in terminal.text
    assert "session chat-attach left running" in terminal.text
    await existing.prompt("still here")
    assert await existing.collect_reply(timeout=5) == "echo: still here"


def test_flags_build_the_session_options(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_bytes(orjson.dumps([{"text": "hi"}]))
    options = chat_options(
        tools="write_file, shell",
        plugins="security_guard,human_approval",
        approve_tools="shell",
        script=script,
    )
    assert options.model == "mock:script"
    assert options.provider_opts == {"script": [{"text": "hi"}]}
    assert options.create_options()["tools"] == ["write_file", "shell"]
    assert options.plugins == (
        "security_guard",
        {"name": "human_approval", "opts": {"tools": ["shell"]}},
    )
    assert chat_options().model == "mock:echo"


async def test_the_chat_command_reads_stdin_and_writes_the_reply(
    fleet: Harness, tmp_path: Path
) -> None:
    script = tmp_path / "script.json"
    script.write_bytes(orjson.dumps({"script": [{"text": "scripted answer"}]}))
    env = dict(os.environ, **fleet.settings.to_env())
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "flotilla", "chat", "--tenant", "acme", "--script", str(script)],
        input="question\n",
        env=env,
        text=True,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "scripted answer\n" in result.stdout
