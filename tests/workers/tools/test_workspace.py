"""The workspace contract, run on both backends: files, implicit directories, limits, snapshots."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from workers.tools import Entry, Workspace, WorkspaceError, normalize

OpenWorkspace = Callable[..., Workspace]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", ""), (".", ""), ("./a/./b", "a/b"), ("a//b/", "a/b"), ("a/../b", "b"), ("a/b/..", "a")],
)
def test_normalize_collapses_paths_that_stay_inside(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("../x", "outside_workspace"),
        ("a/../../x", "outside_workspace"),
        ("/etc/passwd", "outside_workspace"),
        ("C:/x", "invalid_path"),
        ("a\\b", "invalid_path"),
        ("a\x00b", "invalid_path"),
    ],
)
def test_normalize_refuses_paths_that_escape_or_are_malformed(raw: str, code: str) -> None:
    with pytest.raises(WorkspaceError) as caught:
        normalize(raw)
    assert caught.value.code == code


async def test_a_written_file_reads_back(workspace: Workspace) -> None:
    await workspace.write("a/b/c.bin", b"\x00\xffdata")
    assert await workspace.read("./a/b/c.bin") == b"\x00\xffdata"


async def test_directories_exist_through_the_files_below_them(workspace: Workspace) -> None:
    await workspace.write("src/pkg/m.py", b"x")
    assert await workspace.kind("src") == "dir"
    assert await workspace.kind("src/pkg/m.py") == "file"
    assert await workspace.kind("nope") is None
    assert await workspace.kind(".") == "dir"


async def test_list_dir_is_sorted_and_marks_directories(workspace: Workspace) -> None:
    for path in ("b.txt", "a/x.txt", "c/d/e.txt"):
        await workspace.write(path, b"12345")
    assert await workspace.list_dir(".") == [
        Entry("a", True, 0),
        Entry("b.txt", False, 5),
        Entry("c", True, 0),
    ]


async def test_walk_lists_every_file_below_a_path_with_its_size(workspace: Workspace) -> None:
    for path, data in (("z.txt", b"1"), ("d/b.txt", b"22"), ("d/a/c.txt", b"333")):
        await workspace.write(path, data)
    assert await workspace.walk("d") == [("d/a/c.txt", 3), ("d/b.txt", 2)]
    assert [p for p, _ in await workspace.walk()] == ["d/a/c.txt", "d/b.txt", "z.txt"]


@pytest.mark.parametrize("call", ["read", "list_dir", "walk", "delete"])
async def test_a_missing_path_is_not_found(workspace: Workspace, call: str) -> None:
    with pytest.raises(WorkspaceError) as caught:
        await getattr(workspace, call)("missing/x")
    assert caught.value.code == "not_found"
    assert "missing/x" in str(caught.value)


async def test_reading_a_directory_is_refused(workspace: Workspace) -> None:
    await workspace.write("d/f", b"x")
    with pytest.raises(WorkspaceError) as caught:
        await workspace.read("d")
    assert caught.value.code == "is_a_directory"


async def test_writing_over_a_directory_is_refused(workspace: Workspace) -> None:
    await workspace.write("d/f", b"x")
    with pytest.raises(WorkspaceError) as caught:
        await workspace.write("d", b"y")
    assert caught.value.code == "is_a_directory"


async def test_writing_below_a_file_is_refused(workspace: Workspace) -> None:
    await workspace.write("f", b"x")
    with pytest.raises(WorkspaceError) as caught:
        await workspace.write("f/g", b"y")
    assert caught.value.code == "not_a_directory"
    assert await workspace.read("f") == b"x"


async def test_listing_a_file_is_refused(workspace: Workspace) -> None:
    await workspace.write("f", b"x")
    with pytest.raises(WorkspaceError) as caught:
        await workspace.list_dir("f")
    assert caught.value.code == "not_a_directory"


async def test_delete_removes_a_file_or_a_whole_directory(workspace: Workspace) -> None:
    for path in ("keep.txt", "d/a", "d/e/b"):
        await workspace.write(path, b"x")
    await workspace.delete("keep.txt")
    await workspace.delete("d")
    assert await workspace.walk() == []


@pytest.mark.parametrize("backend", ["redis", "dir"])
async def test_a_file_above_the_per_file_limit_is_refused(
    open_ws: OpenWorkspace, backend: str
) -> None:
    workspace = open_ws(backend, workspace_max_file_bytes=10)
    with pytest.raises(WorkspaceError) as caught:
        await workspace.write("big", b"x" * 11)
    assert caught.value.code == "too_large"
    assert await workspace.kind("big") is None


@pytest.mark.parametrize("backend", ["redis", "dir"])
async def test_the_total_limit_counts_every_file_but_the_one_replaced(
    open_ws: OpenWorkspace, backend: str
) -> None:
    workspace = open_ws(backend, workspace_max_bytes=10)
    await workspace.write("a", b"x" * 6)
    await workspace.write("a", b"y" * 8)  # replacing: 8 in total
    with pytest.raises(WorkspaceError) as caught:
        await workspace.write("b", b"z" * 3)
    assert caught.value.code == "too_large"


async def test_restore_replaces_everything_with_a_snapshot(workspace: Workspace) -> None:
    await workspace.write("a/one", b"1")
    saved = await workspace.snapshot()
    await workspace.write("two", b"2")
    await workspace.write("a/one", b"changed")
    await workspace.restore(saved)
    assert await workspace.snapshot() == {"a/one": b"1"}


async def test_restore_refuses_a_file_that_another_needs_as_a_directory(
    workspace: Workspace,
) -> None:
    with pytest.raises(WorkspaceError) as caught:
        await workspace.restore({"a": b"1", "a/b": b"2"})
    assert caught.value.code == "not_a_directory"


async def test_clear_deletes_every_file(workspace: Workspace) -> None:
    await workspace.write("a/b", b"1")
    await workspace.clear()
    assert await workspace.snapshot() == {}
    assert await workspace.kind("a") is None
