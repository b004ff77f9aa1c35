"""The shell lexer the approval and security plugins share: which programs a shell line
runs (`$(...)` and backticks included), and what an "approve always" covers.

An approximation of the shell grammar on `shlex`, good enough to name the programs a line
runs; a line too long to parse is never allowlisted.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_SUBSTITUTION = re.compile(r"\$\(([^()]*)\)|`([^`]*)`")
_SHELL_PUNCTUATION = frozenset("();<>|&")
_MAX_NESTING = 3
MAX_SHELL_CHARS = 32_768
"""Longer shell lines are not parsed (the parser is pure Python): never allowlisted, blocked."""


@dataclass(frozen=True, slots=True)
class ShellSegment:
    """One simple command of a shell line: its words, how it joins the previous one."""

    words: tuple[str, ...]
    piped: bool = False
    """Reads the previous segment's output (`|` or `|&`)."""
    redirects: tuple[str, ...] = ()
    """Targets of its output redirections (`>`, `>>`, `&>`...)."""

    @property
    def program(self) -> str:
        """The basename of the first word after leading VAR=value assignments; "" if none."""
        for word in self.words:
            if not _ASSIGNMENT.match(word):
                return posixpath.basename(word)
        return ""


def _tokens(command: str) -> list[str]:
    lexer = shlex.shlex(command.replace("\n", " ; "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes: fall back to a rough split
        return re.findall(r"[();<>|&]+|[^\s();<>|&]+", command)


def shell_segments(command: str) -> list[ShellSegment]:
    """Split a shell line into simple commands, including `$(...)` and backtick substitutions.

    An approximation of the shell grammar, good enough to name the programs a line runs.
    """
    return _segments(command, 0)


def _segments(command: str, depth: int) -> list[ShellSegment]:
    segments: list[ShellSegment] = []
    words: list[str] = []
    redirects: list[str] = []
    piped = False
    tokens = _tokens(command)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token and set(token) <= _SHELL_PUNCTUATION:
            if ">" in token and "(" not in token:
                if i + 1 < len(tokens):
                    redirects.append(tokens[i + 1])
                i += 2
                continue
            if "<" in token and "(" not in token:
                i += 2  # input redirection: skip its source
                continue
            if words:
                segments.append(ShellSegment(tuple(words), piped, tuple(redirects)))
            words, redirects = [], []
            piped = token in ("|", "|&")
        else:
            words.append(token)
            if depth < _MAX_NESTING and ("$(" in token or "`" in token):
                for match in _SUBSTITUTION.finditer(token):
                    inner = match.group(1) or match.group(2) or ""
                    segments.extend(_segments(inner, depth + 1))
        i += 1
    if words:
        segments.append(ShellSegment(tuple(words), piped, tuple(redirects)))
    return segments


def command_family(tool: str, args: Mapping[str, Any]) -> str:
    """What "approve always" covers: the program of a `shell` call, "*" for other tools."""
    if tool != "shell":
        return "*"
    command = args.get("command")
    segments = shell_segments(command[:MAX_SHELL_CHARS]) if isinstance(command, str) else []
    return segments[0].program if segments else ""


def command_families(tool: str, args: Mapping[str, Any]) -> frozenset[str]:
    """Every program a call runs (all of a compound shell line); {"*"} for other tools."""
    if tool != "shell":
        return frozenset({"*"})
    command = args.get("command")
    if not isinstance(command, str) or len(command) > MAX_SHELL_CHARS:
        return frozenset({""})  # matches no allowlist entry
    segments = shell_segments(command)
    return frozenset(s.program for s in segments if s.program) or frozenset({""})
