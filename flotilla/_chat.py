"""`flotilla chat`: an interactive session on a running fleet, in the terminal (seeds/000 recipe 2).

Each line read is a prompt; the turn's events are rendered as they arrive: the reply streamed,
thinking dimmed, one line per tool call, a question for each approval and `ask_user`. Input
and output are callables, so a test drives the same loop with a script.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from flotilla._sdk import Fleet, Session
from flotilla.errors import CommandError, ConfigurationError, FlotillaError, ReplyTimeout
from flotilla.settings import Settings
from schemas import Event

__all__ = ["ChatOptions", "TerminalChat", "chat_command", "chat_options", "run_chat"]

ReadLine = Callable[[str], Awaitable[str | None]]
"""Shows a prompt and returns the line typed, or None at the end of input (Ctrl-D)."""
Write = Callable[[str], None]

QUIT = frozenset({"/quit", "/exit"})
SILENCE_S = 600.0
"""After this long without an event the chat says it is still waiting (and goes on)."""
_END = frozenset({"agent_end", "agent_abort"})
_REFUSED = frozenset({"prompt_rejected", "prompt_dropped"})
_ONCE, _ALWAYS, _REJECT = ("y", "yes", "o", "once"), ("a", "always"), ("r", "reject", "n", "no")
_DIM, _CYAN, _YELLOW, _RED, _RESET = "\033[2m", "\033[36m", "\033[33m", "\033[31m", "\033[0m"
_SHOWN_CHARS = 160


@dataclass(frozen=True, kw_only=True)
class ChatOptions:
    """The session a chat creates (or attaches to with `session_id`) and what happens at exit."""

    model: str = "mock:echo"
    tools: tuple[str, ...] = ()
    plugins: tuple[str | dict[str, Any], ...] = ()
    provider_opts: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    keep: bool = False
    """Leave the session running at exit instead of stopping it."""

    def create_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"model": self.model, "tools": list(self.tools)}
        options["plugins"] = list(self.plugins)
        if self.provider_opts:
            options["provider_opts"] = self.provider_opts
        return options


def chat_options(
    *,
    model: str | None = None,
    tools: str | None = None,
    plugins: str | None = None,
    approve_tools: str | None = None,
    script: Path | None = None,
    session_id: str | None = None,
    keep: bool = False,
) -> ChatOptions:
    """ChatOptions from command-line flags: comma-separated lists and a JSON mock script."""
    provider_opts: dict[str, Any] = {}
    if script is not None:
        try:
            loaded = orjson.loads(script.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigurationError(f"--script {script}: {exc}") from None
        provider_opts = {"script": loaded} if isinstance(loaded, list) else loaded
        if not isinstance(provider_opts, dict) or not isinstance(provider_opts.get("script"), list):
            raise ConfigurationError(
                f"--script {script}: not a list of steps nor {{script: [...]}}"
            )
    names = _names(plugins)
    chosen: list[str | dict[str, Any]] = [n for n in names if n != "human_approval"]
    if approve_tools:
        opts = {"tools": _names(approve_tools)}
        chosen.append({"name": "human_approval", "opts": opts})
    elif "human_approval" in names:
        chosen.append("human_approval")
    return ChatOptions(
        model=model or ("mock:script" if script is not None else "mock:echo"),
        tools=tuple(_names(tools)),
        plugins=tuple(chosen),
        provider_opts=provider_opts,
        session_id=session_id,
        keep=keep,
    )


def _names(flag: str | None) -> list[str]:
    return [part.strip() for part in (flag or "").split(",") if part.strip()]


class _Screen:
    """Output with a memory of where the cursor is: streamed text, then whole lines."""

    def __init__(self, write: Write, *, color: bool) -> None:
        self._write = write
        self._color = color
        self._stream: Literal["text", "thinking"] | None = None
        self._at_line_start = True

    def raw(self, text: str) -> None:
        if text:
            self._write(text)
            self._at_line_start = text.endswith("\n")

    def _styled(self, text: str, style: str) -> str:
        return f"{style}{text}{_RESET}" if self._color and style else text

    def stream(self, kind: Literal["text", "thinking"], delta: str) -> None:
        if self._stream != kind:
            self.end_line()
            if kind == "thinking":
                self.raw(self._styled("(thinking) ", _DIM))
            self._stream = kind
        self.raw(self._styled(delta, _DIM) if kind == "thinking" else delta)

    def end_line(self) -> None:
        """Finish a streamed line, so that what follows starts on a line of its own."""
        if not self._at_line_start:
            self.raw("\n")
        self._stream = None

    def line(self, text: str, style: str = "") -> None:
        self.end_line()
        self.raw(self._styled(text, style) + "\n")

    def typed(self) -> None:
        """The user ended a line of input: the cursor is at the start of the next line."""
        self._at_line_start = True


class TerminalChat:
    """The chat loop: each line read is a prompt, its turn rendered until it ends."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        options: ChatOptions,
        read_line: ReadLine,
        write: Write,
        color: bool = False,
    ) -> None:
        self._fleet = fleet
        self._options = options
        self._read_line = read_line
        self._screen = _Screen(write, color=color)
        self._interrupted = asyncio.Event()
        self._interrupts = 0
        self._in_turn = False
        self._reading: str | None = None
        """The prompt on screen while a line is being read."""

    def interrupt(self) -> None:
        """Ctrl-C: abort the running turn; a second one stops waiting for it."""
        if self._in_turn:
            self._interrupts += 1
            self._interrupted.set()
        elif self._reading is not None:  # the prompt is on screen, input() still waits
            self._screen.raw(f"\n(Ctrl-D or /quit to leave)\n{self._reading}")
        else:
            self._screen.line("(Ctrl-D or /quit to leave)")

    async def run(self) -> str:
        """Chat until /quit or the end of input; returns the session id."""
        session, owned = await self._open()
        self._screen.line(f"session {session.sid} ({self._options.model}); /quit or Ctrl-D ends")
        try:
            while True:
                line = await self._read("you> ")
                if line is None or line.strip() in QUIT:
                    break
                if line.strip() and not await self._turn(session, line.strip()):
                    break  # the input ended while the turn asked a question
        finally:
            await self._close(session, owned=owned)
        return session.sid

    async def _open(self) -> tuple[Session, bool]:
        """The session, and whether this chat created it (and so may stop it)."""
        options = self._options
        try:
            session = await self._fleet.create_agent(
                session_id=options.session_id, **options.create_options()
            )
        except CommandError as exc:
            if exc.code != "already_exists" or options.session_id is None:
                raise
            return await self._fleet.session(options.session_id), False
        return session, True

    async def _close(self, session: Session, *, owned: bool) -> None:
        self._screen.end_line()
        if not owned or self._options.keep:
            self._screen.line(f"session {session.sid} left running")
            await session.close()
            return
        try:
            await session.stop()
        except FlotillaError as exc:
            self._screen.line(f"could not stop session {session.sid}: {exc}", _RED)

    async def _read(self, prompt: str) -> str | None:
        self._screen.end_line()
        self._reading = prompt
        try:
            line = await self._read_line(prompt)
        finally:
            self._reading = None
        self._screen.raw("\n" if line is None else "")  # Ctrl-D leaves the cursor on the prompt
        self._screen.typed()
        return line

    async def _turn(self, session: Session, text: str) -> bool:
        """Run one prompt's turn; False if the input ended during it."""
        prompt_id = await session.prompt(text)
        self._in_turn, self._interrupts = True, 0
        self._interrupted.clear()
        started: int | None = None
        input_open = True
        try:
            while True:
                event = await self._next(session)
                if event is None:
                    if self._interrupts > 1:
                        self._screen.line("(stopped waiting for the turn)", _YELLOW)
                        return input_open
                    await session.abort(reason="interrupted in flotilla chat")
                    continue
                if event.type == "agent_start" and event.request_id == prompt_id:
                    started = event.turn
                ours = event.request_id == prompt_id
                if event.type in _END and not (
                    ours or (started is not None and event.turn >= started)
                ):
                    continue  # the end of an earlier turn, not of this prompt's
                input_open = await self._show(session, event) and input_open
                if event.type in _END or (ours and started is None and event.type in _REFUSED):
                    return input_open
                if ours and started is None and event.type == "error":
                    return input_open
        finally:
            self._in_turn = False

    async def _next(self, session: Session) -> Event | None:
        """The session's next event, or None when Ctrl-C came first."""
        while not self._interrupted.is_set():
            get = asyncio.ensure_future(session.next_event(timeout=SILENCE_S))
            interrupted = asyncio.ensure_future(self._interrupted.wait())
            try:
                await asyncio.wait({get, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                interrupted.cancel()
                get.cancel()  # a no-op once it is done; else the event stays queued
                await asyncio.gather(get, interrupted, return_exceptions=True)
            if get.done() and not get.cancelled():
                try:
                    return get.result()
                except ReplyTimeout:
                    self._screen.line("(no news from the fleet; still waiting, Ctrl-C aborts)")
        self._interrupted.clear()
        return None

    async def _show(self, session: Session, event: Event) -> bool:
        """Render one event, asking when it needs an answer; False if the input ended."""
        data, screen = event.data, self._screen
        kind = event.type
        if kind == "message_delta":
            screen.stream("text", str(data.get("delta", "")))
        elif kind == "thinking_delta":
            screen.stream("thinking", str(data.get("delta", "")))
        elif kind == "tool_execution_start":
            screen.line(f"  > {data.get('name')} {_short(data.get('args'))}", _CYAN)
        elif kind == "tool_execution_end":
            status = data.get("status")
            result = _short(str(data.get("result", "")).split("\n", 1)[0])
            style = _CYAN if status == "ok" else _RED
            screen.line(f"  < {data.get('name')} {status}: {result}", style)
        elif kind in ("tool_blocked", "tool_killed", "tool_call_unknown"):
            screen.line(
                f"  ! {data.get('name')} {kind.removeprefix('tool_')}: {data.get('reason')}", _RED
            )
        elif kind == "approval_required":
            return await self._approve(session, data)
        elif kind == "approval_resolved":
            screen.line(f"  {data.get('status')} ({data.get('kind') or 'once'})", _YELLOW)
        elif kind == "ask_user":
            return await self._answer(session, data)
        elif kind == "subagent_start":
            screen.line(
                f"  > sub-agent {data.get('child_sid')}: {_short(data.get('description'))}", _CYAN
            )
        elif kind == "subagent_end":
            screen.line(
                f"  < sub-agent {data.get('child_sid')}: {_short(data.get('result'))}", _CYAN
            )
        elif kind == "todo_change":
            todos = data.get("todos") or []
            screen.line("  todos: " + "; ".join(_short(t, 60) for t in todos), _CYAN)
        elif kind == "prompt_queued":
            screen.line("(queued behind the running turn)", _YELLOW)
        elif kind in _REFUSED:
            screen.line(f"(prompt {kind.removeprefix('prompt_')}: {data.get('reason', '')})", _RED)
        elif kind == "retry":
            screen.line(f"(retrying, attempt {data.get('attempt')}: {data.get('reason')})", _DIM)
        elif kind == "error":
            screen.line(f"error [{data.get('code')}]: {data.get('message')}", _RED)
        elif kind == "agent_abort":
            screen.line(f"(aborted: {data.get('reason')})", _YELLOW)
        elif kind == "agent_end":
            screen.end_line()
            if data.get("reason") != "finished":
                error = data.get("error") or {}
                detail = f": {error.get('message')}" if error else ""
                screen.line(f"(turn ended: {data.get('reason')}{detail})", _YELLOW)
        return True

    async def _approve(self, session: Session, data: dict[str, Any]) -> bool:
        approval_id = str(data["approval_id"])
        question = (
            f"approve {data.get('tool')} {_short(data.get('args'))}? "
            "[y]es once / [a]lways / [r]eject "
        )
        while True:
            answer = await self._read(question)
            if answer is None:
                await session.reject(approval_id, reason="input closed")
                return False
            choice = answer.strip().lower()
            if choice in _ONCE or choice in _ALWAYS:
                kind = "always" if choice in _ALWAYS else "once"
                await session.approve(approval_id, kind=kind)
                return True
            if choice in _REJECT:
                await session.reject(approval_id, reason="rejected in flotilla chat")
                return True

    async def _answer(self, session: Session, data: dict[str, Any]) -> bool:
        options = [str(option) for option in data.get("options") or []]
        self._screen.line(f"? {data.get('question')}", _YELLOW)
        for number, option in enumerate(options, 1):
            self._screen.line(f"  {number}. {option}")
        answer = await self._read("answer> ")
        if answer is None:
            await session.abort(reason="input closed")
            return False
        text = answer.strip()
        if text.isdigit() and 1 <= int(text) <= len(options):
            text = options[int(text) - 1]
        await session.respond(str(data["ref"]), text)
        return True


def _short(value: object, limit: int = _SHOWN_CHARS) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def run_chat(
    fleet: Fleet,
    *,
    options: ChatOptions,
    read_line: ReadLine,
    write: Write,
    color: bool = False,
) -> str:
    """Chat on `fleet` until /quit or the end of input; returns the session id."""
    chat = TerminalChat(fleet, options=options, read_line=read_line, write=write, color=color)
    return await chat.run()


async def _read_stdin(prompt: str) -> str | None:
    try:
        return await asyncio.to_thread(input, prompt)
    except EOFError:
        return None


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def chat_command(settings: Settings, *, tenant: str, options: ChatOptions) -> None:
    """`flotilla chat` on stdin and stdout; Ctrl-C aborts the running turn."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - line editing and history for input()
    fleet = await Fleet.connect(settings=settings, tenant=tenant)
    chat = TerminalChat(
        fleet,
        options=options,
        read_line=_read_stdin,
        write=_write_stdout,
        color=sys.stdout.isatty(),
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, chat.interrupt)
    try:
        await chat.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await fleet.close()
