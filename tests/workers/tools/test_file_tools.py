"""CMDC's file tools on both workspace backends: happy paths and the errors the LLM sees."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from workers.tools import ToolContext, Workspace
from workers.tools._files import EditFile, Glob, Grep, ListDir, ReadFile, WriteFile

MakeContext = Callable[..., ToolContext]
NUMBERED = "".join(f"line {i}\n" for i in range(1, 501)).encode()


async def test_read_file_returns_the_whole_text(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("a.txt", b"one\ntwo\n")
    result = await ReadFile().run({"path": "a.txt"}, make_ctx(workspace))
    assert result == result.__class__("one\ntwo\n")


async def test_read_file_pages_with_a_footer_naming_the_next_offset(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("n.txt", NUMBERED)
    result = await ReadFile().run(
        {"path": "n.txt", "offset": 101, "limit": 100}, make_ctx(workspace)
    )
    lines = result.text.split("\n")
    assert lines[0] == "line 101"
    assert lines[99] == "line 200"
    assert lines[100] == "[lines 101-200 of 500; continue with offset=201]"


async def test_read_file_at_the_end_has_no_footer(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("n.txt", NUMBERED)
    result = await ReadFile().run({"path": "n.txt", "offset": 499}, make_ctx(workspace))
    assert result.text == "line 499\nline 500"


async def test_read_file_cuts_a_long_file_to_the_result_budget(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("n.txt", NUMBERED)
    result = await ReadFile().run({"path": "n.txt"}, make_ctx(workspace, tool_result_max_chars=500))
    assert len(result.text) <= 500
    assert result.text.startswith("line 1\n")
    assert result.text.endswith("continue with offset=54]")


async def test_read_file_past_the_end_is_an_error(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("n.txt", NUMBERED)
    result = await ReadFile().run({"path": "n.txt", "offset": 501}, make_ctx(workspace))
    assert result.is_error
    assert "past the end" in result.text


async def test_read_file_refuses_binary_files(workspace: Workspace, make_ctx: MakeContext) -> None:
    await workspace.write("b.bin", b"\x89PNG\xff\x00")
    result = await ReadFile().run({"path": "b.bin"}, make_ctx(workspace))
    assert result.is_error
    assert "binary" in result.text


async def test_read_file_of_a_missing_file_is_an_error(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    result = await ReadFile().run({"path": "nope.txt"}, make_ctx(workspace))
    assert result.is_error
    assert result.text == "nope.txt does not exist"


async def test_write_file_creates_parents_and_reports_the_size(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    result = await WriteFile().run(
        {"path": "d/e/a.txt", "content": "hello world!"}, make_ctx(workspace)
    )
    assert result.text == "wrote 12 bytes to d/e/a.txt"
    assert await workspace.read("d/e/a.txt") == b"hello world!"


async def test_write_file_over_a_directory_is_an_error(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("d/a.txt", b"x")
    result = await WriteFile().run({"path": "d", "content": "y"}, make_ctx(workspace))
    assert result.is_error
    assert "is a directory" in result.text


async def test_edit_file_replaces_the_one_occurrence(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("a.py", b"x = 1\ny = 2\n")
    args = {"path": "a.py", "old_string": "y = 2", "new_string": "y = 3"}
    result = await EditFile().run(args, make_ctx(workspace))
    assert not result.is_error
    assert await workspace.read("a.py") == b"x = 1\ny = 3\n"


async def test_edit_file_without_the_string_is_an_error(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("a.py", b"x = 1\n")
    args = {"path": "a.py", "old_string": "z", "new_string": "w"}
    result = await EditFile().run(args, make_ctx(workspace))
    assert result.is_error
    assert "not found" in result.text


async def test_edit_file_with_an_ambiguous_string_says_how_many(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("a.py", b"x = 1\nx = 1\nx = 1\n")
    args = {"path": "a.py", "old_string": "x = 1", "new_string": "x = 2"}
    result = await EditFile().run(args, make_ctx(workspace))
    assert result.is_error
    assert "3 times" in result.text
    assert await workspace.read("a.py") == b"x = 1\nx = 1\nx = 1\n"


async def test_list_dir_marks_directories(workspace: Workspace, make_ctx: MakeContext) -> None:
    await workspace.write("src/m.py", b"")
    await workspace.write("README", b"")
    assert (await ListDir().run({}, make_ctx(workspace))).text == "README\nsrc/"
    assert (await ListDir().run({"path": "src"}, make_ctx(workspace))).text == "m.py"


async def test_list_dir_of_a_file_is_an_error(workspace: Workspace, make_ctx: MakeContext) -> None:
    await workspace.write("f", b"")
    result = await ListDir().run({"path": "f"}, make_ctx(workspace))
    assert result.is_error
    assert "is a file" in result.text


async def test_glob_matches_across_directories_with_double_star(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    for path in ("a.py", "src/b.py", "src/deep/c.py", "src/d.txt", "src/e.ts"):
        await workspace.write(path, b"")
    ctx = make_ctx(workspace)
    assert (await Glob().run({"pattern": "**/*.py"}, ctx)).text == "a.py\nsrc/b.py\nsrc/deep/c.py"
    assert (await Glob().run({"pattern": "*.py"}, ctx)).text == "a.py"
    result = await Glob().run({"pattern": "*.{txt,ts}", "path": "src"}, ctx)
    assert result.text == "src/d.txt\nsrc/e.ts"


async def test_glob_says_when_it_caps_the_matches(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.restore({f"f/{i:04}.txt": b"" for i in range(1001)})
    result = await Glob().run({"pattern": "f/*"}, make_ctx(workspace))
    lines = result.text.split("\n")
    assert len(lines) == 1001
    assert lines[-1] == "[showing 1,000 of 1,001 matches]"


async def test_grep_reports_path_line_and_text(workspace: Workspace, make_ctx: MakeContext) -> None:
    await workspace.write("a.py", b"import os\nx = os.getcwd()\n")
    await workspace.write("b.txt", b"nothing\n")
    result = await Grep().run({"pattern": r"os\.\w+"}, make_ctx(workspace))
    assert result.text == "a.py:2:x = os.getcwd()"


async def test_grep_shows_context_lines_with_dashes(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("a.txt", b"one\ntwo\nthree\nfour\n")
    result = await Grep().run({"pattern": "three", "context_lines": 1}, make_ctx(workspace))
    assert result.text == "a.txt-2-two\na.txt:3:three\na.txt-4-four"


async def test_grep_filters_by_file_name_and_skips_binary_files(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    await workspace.write("src/a.py", b"needle\n")
    await workspace.write("src/a.txt", b"needle\n")
    await workspace.write("src/a.bin", b"needle\x00\xff")
    result = await Grep().run({"pattern": "needle", "include": "*.py"}, make_ctx(workspace))
    assert result.text == "src/a.py:1:needle"
    result = await Grep().run({"pattern": "needle", "path": "src"}, make_ctx(workspace))
    assert result.text == "src/a.py:1:needle\nsrc/a.txt:1:needle"


async def test_grep_stops_at_max_results(workspace: Workspace, make_ctx: MakeContext) -> None:
    await workspace.write("n.txt", NUMBERED)
    result = await Grep().run({"pattern": "line", "max_results": 3}, make_ctx(workspace))
    assert result.text.split("\n") == [
        "n.txt:1:line 1",
        "n.txt:2:line 2",
        "n.txt:3:line 3",
        "[stopped at 3 matches; narrow the search]",
    ]


async def test_grep_with_an_invalid_regex_is_an_error(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    result = await Grep().run({"pattern": "(unclosed"}, make_ctx(workspace))
    assert result.is_error
    assert "invalid regular expression" in result.text


async def test_grep_without_matches_says_so(workspace: Workspace, make_ctx: MakeContext) -> None:
    await workspace.write("a.txt", b"hay\n")
    result = await Grep().run({"pattern": "needle"}, make_ctx(workspace))
    assert not result.is_error
    assert result.text == "no matches for 'needle'"


async def test_a_pattern_that_backtracks_forever_is_stopped_and_the_worker_goes_on(
    workspace: Workspace, make_ctx: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's `re` would hold the GIL for hours on this one, freezing every session."""
    monkeypatch.setattr("workers.tools._files.GREP_TIME_S", 0.5)
    await workspace.write("a.txt", b"a" * 40 + b"b")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        result = await Grep().run({"pattern": "(a|aa)+$"}, make_ctx(workspace))
    finally:
        ticker.cancel()
    assert result.is_error and "took longer than 0.5 s" in result.text
    assert ticks >= 10, "the event loop kept running meanwhile"


async def test_an_invalid_pattern_is_a_clear_error(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    result = await Grep().run({"pattern": "(unclosed"}, make_ctx(workspace))
    assert result.is_error and result.text.startswith("invalid regular expression '(unclosed'")
