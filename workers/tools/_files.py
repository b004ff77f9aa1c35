"""CMDC's file tools on the session workspace: read, write, edit, list, glob and grep.

Arguments arrive checked against each spec's schema (`validate_args`); a failure the model
can fix (a missing file, a path outside the workspace, a bad regex) is an error result.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from flotilla.runtime import Deadline, PatternError, PatternTooSlow, UserPattern
from workers.tools._base import ToolContext, ToolResult, ToolSpec
from workers.tools._workspace import WorkspaceError, normalize

__all__ = ["EditFile", "Glob", "Grep", "ListDir", "ReadFile", "WriteFile"]

MAX_LISTED = 1_000
"""Most entries `list_dir` and `glob` return; they say so when they stop there."""
_MAX_LINE = 500
GREP_TIME_S = 5.0
"""What one grep may spend matching, all files together (flotilla/_patterns.py says why)."""
_INTERNAL = ".flotilla/"


def _schema(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _path_property(what: str) -> dict[str, Any]:
    return {"type": "string", "description": f"{what}, relative to the workspace root"}


def _failed(exc: WorkspaceError) -> ToolResult:
    return ToolResult.error(exc.message)


def _decode(data: bytes) -> str | None:
    """The text of a UTF-8 file, or None for a binary one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


class ReadFile:
    """Reads a text file, whole or by line range, always fitting the result budget."""

    spec = ToolSpec(
        name="read_file",
        description=(
            "Read a UTF-8 text file from the workspace. Without offset/limit it returns the "
            "whole file when it fits; otherwise it returns a range of lines and a footer "
            "telling the next offset. Use offset and limit to page through long files."
        ),
        parameters=_schema(
            ["path"],
            path=_path_property("The file to read"),
            offset={"type": "integer", "minimum": 1, "description": "First line (1-based)"},
            limit={"type": "integer", "minimum": 1, "description": "Number of lines"},
        ),
        idempotent=True,
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        path: str = args["path"]
        offset: int | None = args.get("offset")
        limit: int | None = args.get("limit")
        try:
            data = await ctx.workspace.read(path)
        except WorkspaceError as exc:
            return _failed(exc)
        text = _decode(data)
        if text is None:
            return ToolResult.error(
                f"{path} is a binary file ({len(data):,} bytes); read_file reads text only"
            )
        budget = ctx.settings.tool_result_max_chars
        if offset is None and limit is None and len(text) <= budget:
            return ToolResult(text)
        lines = _lines(text)
        first = offset or 1
        if first > max(len(lines), 1):
            return ToolResult.error(
                f"offset {first} is past the end of {path} ({len(lines):,} lines)"
            )
        last = len(lines) if limit is None else min(len(lines), first - 1 + limit)
        return ToolResult(_page(lines, first, last, budget))


def _page(lines: list[str], first: int, last: int, budget: int) -> str:
    """Lines first..last (1-based), cut short to fit `budget` characters with the footer."""
    total = len(lines)
    room = budget - 80  # the footer
    shown: list[str] = []
    used = 0
    for number in range(first, last + 1):
        line = lines[number - 1]
        if used + len(line) + 1 > room:
            if not shown:
                cut = max(room, 0)
                return (
                    f"{line[:cut]}\n[line {number} of {total:,} has {len(line):,} characters; "
                    f"showed the first {cut:,}; continue with offset={number + 1}]"
                )
            break
        shown.append(line)
        used += len(line) + 1
    end = first + len(shown) - 1
    body = "\n".join(shown)
    if end < total:
        body += f"\n[lines {first}-{end} of {total:,}; continue with offset={end + 1}]"
    return body


class WriteFile:
    """Creates or replaces a file; parent directories come into being implicitly."""

    spec = ToolSpec(
        name="write_file",
        description=(
            "Create or overwrite a text file in the workspace with the given content. "
            "Parent directories are created as needed."
        ),
        parameters=_schema(
            ["path", "content"],
            path=_path_property("The file to write"),
            content={"type": "string", "description": "The complete new content"},
        ),
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        data = args["content"].encode("utf-8")
        try:
            rel = normalize(args["path"])
            await ctx.workspace.write(rel, data)
        except WorkspaceError as exc:
            return _failed(exc)
        return ToolResult(f"wrote {len(data):,} bytes to {rel}")


class EditFile:
    """Replaces exactly one occurrence of a string, so an edit never lands in the wrong place."""

    spec = ToolSpec(
        name="edit_file",
        description=(
            "Replace one exact occurrence of old_string with new_string in a text file. "
            "old_string must occur exactly once: include enough surrounding lines to make "
            "it unique."
        ),
        parameters=_schema(
            ["path", "old_string", "new_string"],
            path=_path_property("The file to edit"),
            old_string={"type": "string", "minLength": 1, "description": "Exact text to replace"},
            new_string={"type": "string", "description": "The replacement text"},
        ),
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        path: str = args["path"]
        old: str = args["old_string"]
        new: str = args["new_string"]
        if old == new:
            return ToolResult.error("old_string and new_string are identical; nothing to edit")
        try:
            data = await ctx.workspace.read(path)
        except WorkspaceError as exc:
            return _failed(exc)
        text = _decode(data)
        if text is None:
            return ToolResult.error(f"{path} is a binary file; edit_file edits text only")
        count = text.count(old)
        if count == 0:
            return ToolResult.error(f"old_string was not found in {path}")
        if count > 1:
            return ToolResult.error(
                f"old_string occurs {count} times in {path}; include more surrounding "
                "context so that it occurs exactly once"
            )
        try:
            await ctx.workspace.write(path, text.replace(old, new, 1).encode("utf-8"))
        except WorkspaceError as exc:
            return _failed(exc)
        return ToolResult(f"edited {path}: replaced 1 occurrence")


class ListDir:
    """Lists one directory, directories marked with a trailing slash."""

    spec = ToolSpec(
        name="list_dir",
        description=(
            "List the entries of a workspace directory (default: the root), one per line; "
            "directories end with '/'."
        ),
        parameters=_schema([], path=_path_property("The directory to list (default: root)")),
        idempotent=True,
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        path: str = args.get("path", ".")
        try:
            entries = await ctx.workspace.list_dir(path)
        except WorkspaceError as exc:
            return _failed(exc)
        if not entries:
            return ToolResult("(empty directory)")
        lines = [e.name + "/" if e.is_dir else e.name for e in entries[:MAX_LISTED]]
        if len(entries) > MAX_LISTED:
            lines.append(f"[showing {MAX_LISTED:,} of {len(entries):,} entries]")
        return ToolResult("\n".join(lines))


class Glob:
    """Finds files by name pattern, `**` crossing directories."""

    spec = ToolSpec(
        name="glob",
        description=(
            "Find workspace files whose path matches a glob pattern, relative to `path` "
            "(default: root). '*' and '?' stay within one directory, '**' spans "
            "directories, '{a,b}' gives alternatives: '**/*.py', 'src/*.{ts,tsx}'. "
            "Returns matching file paths (relative to the workspace root), sorted."
        ),
        parameters=_schema(
            ["pattern"],
            pattern={"type": "string", "minLength": 1, "description": "The glob pattern"},
            path=_path_property("The directory to search in (default: root)"),
        ),
        idempotent=True,
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        pattern: str = args["pattern"]
        try:
            base = normalize(args.get("path", "."))
            if await ctx.workspace.kind(base) == "file":
                return ToolResult.error(f"{base} is a file; glob searches a directory")
            files = await ctx.workspace.walk(base)
        except WorkspaceError as exc:
            return _failed(exc)
        regexes = glob_regexes(pattern.removeprefix("./"))
        found = [
            p for p, _ in _searchable(files, base) if any(r.match(_below(p, base)) for r in regexes)
        ]
        if not found:
            return ToolResult(f"no files match {pattern!r}")
        lines = found[:MAX_LISTED]
        if len(found) > MAX_LISTED:
            lines.append(f"[showing {MAX_LISTED:,} of {len(found):,} matches]")
        return ToolResult("\n".join(lines))


class Grep:
    """Searches file contents with a regular expression, grep-style output."""

    spec = ToolSpec(
        name="grep",
        description=(
            "Search the text files of the workspace for a Python regular expression. "
            "Output lines are 'path:line:text' for matches and 'path-line-text' for context "
            "lines; binary files are skipped. Narrow with `path` (a file or directory) and "
            "`include` (a glob on file names such as '*.py')."
        ),
        parameters=_schema(
            ["pattern"],
            pattern={"type": "string", "minLength": 1, "description": "A regular expression"},
            path=_path_property("The file or directory to search (default: root)"),
            include={"type": "string", "description": "Only files whose name matches this glob"},
            context_lines={"type": "integer", "minimum": 0, "maximum": 20},
            max_results={"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        ),
        idempotent=True,
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        pattern: str = args["pattern"]
        try:
            regex = UserPattern(pattern)
        except PatternError as exc:
            return ToolResult.error(str(exc))
        include: str | None = args.get("include")
        try:
            base = normalize(args.get("path", "."))
            files = _searchable(await ctx.workspace.walk(base), base)
            if include:
                files = [(p, s) for p, s in files if _included(p, base, include)]
            texts = [(p, await ctx.workspace.read(p)) for p, _ in files]
        except WorkspaceError as exc:
            return _failed(exc)
        try:
            lines, capped = await asyncio.to_thread(
                _search,
                texts,
                regex,
                args.get("context_lines", 0),
                args.get("max_results", 100),
            )
        except PatternTooSlow:
            return ToolResult.error(
                f"the pattern {pattern!r} took longer than {GREP_TIME_S:g} s (it backtracks "
                "too much); use a simpler one"
            )
        if not lines:
            return ToolResult(f"no matches for {pattern!r}")
        if capped:
            lines.append(f"[stopped at {args.get('max_results', 100)} matches; narrow the search]")
        return ToolResult("\n".join(lines))


def _below(path: str, base: str) -> str:
    return path[len(base) + 1 :] if base else path


def _searchable(files: list[tuple[str, int]], base: str) -> list[tuple[str, int]]:
    """Offloaded results stay out of searches, unless the search is inside `.flotilla/`."""
    if (base + "/").startswith(_INTERNAL):
        return files
    return [(p, s) for p, s in files if not p.startswith(_INTERNAL)]


def _included(path: str, base: str, include: str) -> bool:
    target = _below(path, base) if "/" in include else path.rpartition("/")[2]
    return any(r.match(target) for r in glob_regexes(include))


def _search(
    files: list[tuple[str, bytes]], regex: UserPattern, context: int, limit: int
) -> tuple[list[str], bool]:
    """Grep-style lines for up to `limit` matching lines; (lines, whether it stopped early).

    Every search shares one deadline (PatternTooSlow past it); the matching lets other
    threads, and so the worker's event loop, run meanwhile."""
    deadline = Deadline(GREP_TIME_S)
    out: list[str] = []
    matches = 0
    for path, data in files:
        text = _decode(data)
        if text is None:
            continue
        lines = _lines(text)
        hits = [i for i, line in enumerate(lines) if regex.search(line, deadline)]
        hits = hits[: limit - matches]
        hit_set = set(hits)
        if not hits:
            continue
        matches += len(hits)
        shown = sorted({j for i in hits for j in range(i - context, i + context + 1)})
        previous = None
        for j in (j for j in shown if 0 <= j < len(lines)):
            if context and out and previous != j - 1:
                out.append("--")
            sep = ":" if j in hit_set else "-"
            line = lines[j] if len(lines[j]) <= _MAX_LINE else lines[j][:_MAX_LINE] + "…"
            out.append(f"{path}{sep}{j + 1}{sep}{line}")
            previous = j
        if matches >= limit:
            return out, True
    return out, False


def glob_regexes(pattern: str) -> list[re.Pattern[str]]:
    """Compiled regexes for a glob with `*`, `?`, `[...]`, `**` and `{a,b}` alternatives."""
    return [re.compile(_translate(p), re.DOTALL) for p in _expand_braces(pattern)]


def _expand_braces(pattern: str) -> list[str]:
    match = re.search(r"\{([^{}]*,[^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [x for alt in match.group(1).split(",") for x in _expand_braces(head + alt + tail)]


def _translate(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body[:1] in ("!", "^")
            body = re.sub(r"([\\\]\[^])", r"\\\1", body[1:] if negate else body)
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out) + r"\Z"
