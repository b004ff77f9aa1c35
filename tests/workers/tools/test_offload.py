"""Results over the budget are kept in the workspace and paged through with read_file."""

from __future__ import annotations

from collections.abc import Callable

from workers.tools import ToolContext, Workspace, offload
from workers.tools._files import ReadFile
from workers.tools._offload import result_path

MakeContext = Callable[..., ToolContext]
LONG = "".join(f"row {i}\n" for i in range(1, 2001))


async def test_a_result_within_the_budget_is_unchanged(workspace: Workspace) -> None:
    assert await offload("short", workspace=workspace, call_id="c1", max_chars=10) == "short"
    assert await workspace.snapshot() == {}


async def test_a_long_result_is_saved_and_its_head_names_the_file(workspace: Workspace) -> None:
    text = await offload(LONG, workspace=workspace, call_id="c1", max_chars=1000)
    assert len(text) <= 1000
    assert text.startswith("row 1\nrow 2\n")
    assert ".flotilla/results/c1.txt" in text
    assert f"of {len(LONG):,} characters (2,000 lines)" in text
    assert await workspace.read(".flotilla/results/c1.txt") == LONG.encode()


async def test_read_file_pages_through_an_offloaded_result(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    note = await offload(LONG, workspace=workspace, call_id="c1", max_chars=1000)
    resume = int(note.rsplit("offset=", 1)[1].split(",")[0])
    shown = note.split("\n[output truncated")[0].split("\n")
    assert shown[-1] == f"row {resume - 1}"
    args = {"path": ".flotilla/results/c1.txt", "offset": resume, "limit": 2}
    page = await ReadFile().run(args, make_ctx(workspace))
    assert page.text.startswith(f"row {resume}\nrow {resume + 1}\n[lines {resume}-{resume + 1}")


def test_unsafe_call_ids_become_distinct_safe_file_names() -> None:
    first, second = result_path("../a/b"), result_path("__a_b")
    assert first.startswith(".flotilla/results/")
    assert "/" not in first.removeprefix(".flotilla/results/")
    assert ".." not in first
    assert first != second
    assert result_path("call_9f") == ".flotilla/results/call_9f.txt"


async def test_a_result_too_large_to_save_is_still_cut_with_a_note(
    open_ws: Callable[..., Workspace],
) -> None:
    workspace = open_ws("redis", workspace_max_file_bytes=100)
    text = await offload(LONG, workspace=workspace, call_id="c1", max_chars=1000)
    assert len(text) <= 1000
    assert "could not be saved" in text
    assert await workspace.snapshot() == {}
