"""MemoryFlush (CMDC built-in): before a compaction, keep the key facts of what it removes.

At `before_compact` the plugin extracts up to `max_facts_per_flush` facts from the messages
about to be summarised, appends the new ones to `file` (MEMORY.md) as `- fact` lines and emits
`memory_flush {facts, count, file, extractor}`; MemoryLoader reads the file back.

The default extractor is offline and deterministic. It reads user messages only (what the
user said, not what the model guessed), splits them into sentences, and keeps a sentence of
8 to 300 characters, not a question, that states a preference, a decision, a standing rule
or an explicit "remember" (`CUES`: "remember", "I prefer", "we decided", "always", "never",
"my name is", 记住, 我喜欢, 决定, ...). A task ("write a login page") is not a fact. With
`extract_model` an LLM extracts the facts instead; when that call fails or times out the
heuristic runs and the event carries the error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from workers.plugins import _opts
from workers.plugins._base import Action, Emit, Hook, Plugin, PluginContext, PluginIO

NAME = "memory_flush"
CUES = (
    *("remember", "don't forget", "do not forget", "keep in mind", "note that"),
    *("i prefer", "i'd prefer", "i would prefer", "i like", "i love", "i hate", "i don't like"),
    *("i do not like", "always ", "never ", "we decided", "i decided", "decided to"),
    *("let's use", "we use", "we'll use", "we will use", "my name is", "call me"),
    *("记住", "记下", "别忘", "我喜欢", "偏好", "我不喜欢", "讨厌", "总是", "永远", "以后"),
    *("决定", "我们用", "改用", "我叫"),
)
"""Lower-case cues that make a user sentence a fact (the heuristic's whole rule)."""
MIN_FACT, MAX_FACT = 8, 300
_SENTENCES = re.compile(r"(?<=[.!?])\s+|[。\uff01\uff1f\n;\uff1b]+")  # also the full-width !?;
_SPACES = re.compile(r"\s+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_TRANSCRIPT_CHARS = 24_000
_EXTRACT_PROMPT = (
    "You keep the long-term memory of an assistant. From the conversation below, extract at "
    "most {n} durable facts worth remembering in later sessions: the user's preferences, "
    "decisions, constraints, names and standing instructions. Skip small talk and anything "
    "only relevant to this moment. Answer with one fact per line, each starting with '- ', "
    "or with NONE."
)


class MemoryFlush(Plugin):
    """Appends the key facts of compacted messages to a memory file."""

    name = NAME
    priority = 100
    aliases = ("CMDC.Plugin.Builtin.MemoryFlush",)

    file: str
    max_facts: int
    dedupe: bool
    extract_model: str | None
    extract_provider_opts: dict[str, Any]
    timeout_s: float

    def configure(self, opts: Mapping[str, Any]) -> None:
        _opts.known_keys(
            NAME,
            opts,
            (
                *("file", "max_facts_per_flush", "dedupe", "extract_model"),
                *("extract_provider_opts", "timeout_ms"),
            ),
        )
        file = _opts.workspace_path(NAME, "file", _opts.text(NAME, opts, "file", "MEMORY.md") or "")
        max_facts = _opts.positive_int(NAME, opts, "max_facts_per_flush", 10)
        dedupe = _opts.flag(NAME, opts, "dedupe", True)
        extract_model = _opts.text(NAME, opts, "extract_model", None)
        provider_opts = _opts.mapping(NAME, opts, "extract_provider_opts")
        timeout_ms = _opts.positive_int(NAME, opts, "timeout_ms", 15_000)
        self.file, self.max_facts, self.dedupe = file, max_facts, dedupe
        self.extract_model, self.extract_provider_opts = extract_model, provider_opts
        self.timeout_s = timeout_ms / 1000

    async def handle_async(
        self,
        hook: Hook,
        payload: Mapping[str, Any],
        state: dict[str, Any],
        ctx: PluginContext,
        io: PluginIO,
    ) -> Action | None:
        if hook is not Hook.BEFORE_COMPACT:
            return None
        messages = [m for m in payload.get("messages") or [] if isinstance(m, Mapping)]
        facts, extractor, error = await self._extract(messages, io)
        existing = (await io.read_text(self.file)) or ""
        if self.dedupe:
            known = {_key(line) for line in existing.splitlines()}
            facts = [f for f in facts if _key(f) not in known]
        if not facts:
            return None
        heading = "" if existing.strip() else "# Memory\n\n"
        separator = "" if not existing or existing.endswith("\n") else "\n"
        lines = "".join(f"- {fact}\n" for fact in facts)
        await io.write_text(self.file, existing + separator + heading + lines)
        state["flushed"] = int(state.get("flushed", 0)) + len(facts)
        data: dict[str, Any] = {
            "facts": facts,
            "count": len(facts),
            "file": self.file,
            "extractor": extractor,
        }
        if error is not None:
            data["error"] = error
        return Emit("memory_flush", data)

    async def _extract(
        self, messages: Sequence[Mapping[str, Any]], io: PluginIO
    ) -> tuple[list[str], str, str | None]:
        """(facts, which extractor made them, the LLM's error if it fell back)."""
        if self.extract_model is None:
            return extract_facts(messages, self.max_facts), "heuristic", None
        try:
            answer = await io.complete(
                self.extract_model,
                [
                    {"role": "system", "content": _EXTRACT_PROMPT.format(n=self.max_facts)},
                    {"role": "user", "content": _transcript(messages)},
                ],
                provider_opts=self.extract_provider_opts,
                timeout_s=self.timeout_s,
            )
        except Exception as exc:  # any failure of the extractor falls back to the heuristic
            error = f"{type(exc).__name__}: {exc}"[:300]
            return extract_facts(messages, self.max_facts), "heuristic", error
        return parse_facts(answer, self.max_facts), "llm", None


def extract_facts(messages: Sequence[Mapping[str, Any]], limit: int) -> list[str]:
    """The offline heuristic: cue-bearing sentences of user messages, first ones first."""
    facts: list[str] = []
    seen: set[str] = set()
    for message in messages:
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, str):
            continue
        if content.startswith("[Summary of"):  # an earlier compaction's summary
            continue
        for sentence in _SENTENCES.split(content):
            fact = _SPACES.sub(" ", sentence).strip()
            lowered = fact.lower()
            if not MIN_FACT <= len(fact) <= MAX_FACT or fact.endswith("?"):
                continue
            if not any(cue in lowered for cue in CUES):
                continue
            if _key(fact) not in seen:
                seen.add(_key(fact))
                facts.append(fact)
                if len(facts) >= limit:
                    return facts
    return facts


def parse_facts(answer: str, limit: int) -> list[str]:
    """The facts of an extractor's answer: its non-empty lines without bullets, no NONE."""
    facts: list[str] = []
    for line in answer.splitlines():
        fact = _SPACES.sub(" ", _BULLET.sub("", line)).strip()
        if fact and fact.upper() != "NONE" and len(fact) <= MAX_FACT * 2:
            facts.append(fact)
    return facts[:limit]


def _key(line: str) -> str:
    """What two facts must share to be the same one: text without bullet, case or spacing."""
    return _SPACES.sub(" ", _BULLET.sub("", line)).strip().lower().rstrip(".。")


def _transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        f"{m.get('role')}: {m.get('content')}"
        for m in messages
        if isinstance(m.get("content"), str) and m.get("content")
    ]
    return "\n".join(lines)[-_TRANSCRIPT_CHARS:]
