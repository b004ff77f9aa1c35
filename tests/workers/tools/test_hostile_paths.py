"""Paths that try to leave the workspace are refused, and nothing outside it is touched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workers.tools import ToolContext, Workspace
from workers.tools._files import EditFile, Glob, Grep, ListDir, ReadFile, WriteFile
from workers.tools._shell import Shell

MakeContext = Callable[..., ToolContext]
OpenWorkspace = Callable[..., Workspace]
HOSTILE = ["../x", "/etc/passwd", "a/../../x", "a\x00b", "..", "C:/x", "a\\..\\..\\x"]


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


@pytest.mark.parametrize("path", HOSTILE)
async def test_hostile_paths_are_refused_for_writing(
    workspace: Workspace, make_ctx: MakeContext, tmp_path: Path, path: str
) -> None:
    before = tree(tmp_path)
    result = await WriteFile().run({"path": path, "content": "pwned"}, make_ctx(workspace))
    assert result.is_error
    assert any(word in result.text for word in ("leaves", "absolute", "control", "drive", "back"))
    assert tree(tmp_path) == before
    assert await workspace.snapshot() == {}


@pytest.mark.parametrize("path", HOSTILE)
async def test_hostile_paths_are_refused_for_reading(
    workspace: Workspace, make_ctx: MakeContext, path: str
) -> None:
    result = await ReadFile().run({"path": path}, make_ctx(workspace))
    assert result.is_error
    assert "root:" not in result.text


@pytest.fixture
async def escape(open_ws: OpenWorkspace, tmp_path: Path) -> tuple[Workspace, Path]:
    """A directory workspace holding `link` → a file outside and `dirlink` → a dir outside."""
    workspace = open_ws("dir")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    async with workspace.local_dir() as root:
        (root / "link").symlink_to(outside / "secret.txt")
        (root / "dirlink").symlink_to(outside)
    return workspace, outside


async def test_a_symlink_out_of_a_directory_workspace_is_not_read(
    escape: tuple[Workspace, Path], make_ctx: MakeContext
) -> None:
    workspace, _ = escape
    for path in ("link", "dirlink/secret.txt"):
        result = await ReadFile().run({"path": path}, make_ctx(workspace))
        assert result.is_error
        assert "outside the workspace" in result.text
        assert "top secret" not in result.text


async def test_a_symlink_out_of_a_directory_workspace_is_not_written_through(
    escape: tuple[Workspace, Path], make_ctx: MakeContext
) -> None:
    workspace, outside = escape
    for path in ("link", "dirlink/new.txt"):
        result = await WriteFile().run({"path": path, "content": "x"}, make_ctx(workspace))
        assert result.is_error
    assert tree(outside) == {"secret.txt": b"top secret"}


async def test_listing_and_searching_skip_symlinks_out_of_the_workspace(
    escape: tuple[Workspace, Path], make_ctx: MakeContext
) -> None:
    workspace, _ = escape
    await workspace.write("mine.txt", b"secret of mine")
    ctx = make_ctx(workspace)
    assert (await ListDir().run({}, ctx)).text == "mine.txt"
    assert (await Grep().run({"pattern": "secret"}, ctx)).text == "mine.txt:1:secret of mine"


async def test_symlinks_made_by_shell_are_not_synced_to_redis(
    open_ws: OpenWorkspace, make_ctx: MakeContext
) -> None:
    workspace = open_ws("redis")
    command = "ln -s /etc/passwd passwd; ln -s /etc etc; mkdir d; ln -s /etc d/e; echo ok > f"
    result = await Shell(max_timeout_s=10).run(
        {"command": command}, make_ctx(workspace, shell_enabled=True)
    )
    assert not result.is_error, result.text
    assert await workspace.snapshot() == {"f": b"ok\n"}


async def test_a_symlink_made_by_shell_in_a_directory_workspace_is_refused(
    open_ws: OpenWorkspace, make_ctx: MakeContext
) -> None:
    workspace = open_ws("dir")
    ctx = make_ctx(workspace, shell_enabled=True)
    await Shell(max_timeout_s=10).run({"command": "ln -s /etc/passwd p"}, ctx)
    result = await ReadFile().run({"path": "p"}, ctx)
    assert result.is_error
    assert "outside the workspace" in result.text
    async with workspace.local_dir() as root:
        assert is_symlink(root / "p")  # still there, just unusable


def is_symlink(path: Path) -> bool:
    return path.is_symlink()


async def test_a_redis_key_that_escapes_is_never_materialized_for_shell(
    open_ws: OpenWorkspace, make_ctx: MakeContext, redis_client: Any, tmp_path: Path
) -> None:
    workspace = open_ws("redis")
    await workspace.write("ok.txt", b"fine")
    key = workspace._key  # type: ignore[attr-defined]
    await redis_client.hset(key, f"../../../../..{tmp_path}/planted", b"x")
    ctx = make_ctx(workspace, shell_enabled=True)
    result = await Shell(max_timeout_s=10).run({"command": "cat ok.txt"}, ctx)
    assert result.text == "fine\n[exit code 0]"
    assert not (tmp_path / "planted").exists()


ESCAPING = [
    "../x",
    "/etc/passwd",
    "a/../../x",
    "./../x",
    "a/b/../../../x",
    "..",
    "a\x00b",
    "\x00",
    "C:/x",
    "a\\..\\..\\x",
    "x" * 300,
    "/".join(["d"] * 2100),
    "\u202e../x",
    "\u202etxt.exe",
    "a\u200bb",
    "\ufeffx",
]
"""Paths that leave the workspace or break its rules: refused by every file tool."""
WEIRD_BUT_INSIDE = ["\uff0e\uff0e/x", "ü/ñ/ï.txt", "a//b", "./a/./b", "con", " ", "~", "..a"]
"""Odd names that stay inside the workspace: allowed, and kept inside it."""


def _calls(path: str) -> dict[str, tuple[Any, dict[str, Any]]]:
    return {
        "read_file": (ReadFile(), {"path": path}),
        "write_file": (WriteFile(), {"path": path, "content": "pwned"}),
        "edit_file": (EditFile(), {"path": path, "old_string": "a", "new_string": "pwned"}),
        "list_dir": (ListDir(), {"path": path}),
        "glob": (Glob(), {"pattern": "*", "path": path}),
        "grep": (Grep(), {"pattern": "root|pwned", "path": path}),
    }


def _outside(tmp_path: Path) -> dict[str, bytes]:
    """Every file under the test's directory but the workspaces."""
    return {k: v for k, v in tree(tmp_path).items() if not k.startswith("data/")}


@pytest.mark.parametrize("tool", list(_calls("x")))
@pytest.mark.parametrize("path", ESCAPING, ids=range(len(ESCAPING)))
async def test_every_file_tool_refuses_an_escaping_path(
    workspace: Workspace, make_ctx: MakeContext, tmp_path: Path, tool: str, path: str
) -> None:
    await workspace.write("a.txt", b"a")
    before = _outside(tmp_path)
    implementation, args = _calls(path)[tool]
    result = await implementation.run(args, make_ctx(workspace))
    assert result.is_error, result.text
    reasons = ("leaves", "absolute", "control", "drive", "backslash", "longer than", "invisible")
    assert any(reason in result.text for reason in reasons), result.text
    assert "pwned" not in result.text and "root:" not in result.text
    assert _outside(tmp_path) == before
    assert await workspace.snapshot() == {"a.txt": b"a"}


@pytest.mark.parametrize("path", WEIRD_BUT_INSIDE, ids=range(len(WEIRD_BUT_INSIDE)))
async def test_odd_names_stay_inside_the_workspace(
    workspace: Workspace, make_ctx: MakeContext, tmp_path: Path, path: str
) -> None:
    before = _outside(tmp_path)
    result = await WriteFile().run({"path": path, "content": "ok"}, make_ctx(workspace))
    assert not result.is_error, result.text
    assert list((await workspace.snapshot()).values()) == [b"ok"]
    assert _outside(tmp_path) == before
    read = await ReadFile().run({"path": path}, make_ctx(workspace))
    assert read.text.startswith("ok")


async def test_glob_and_grep_patterns_do_not_reach_outside(
    escape: tuple[Workspace, Path], make_ctx: MakeContext
) -> None:
    workspace, _ = escape
    await workspace.write("mine.txt", b"mine")
    ctx = make_ctx(workspace)
    for pattern in ("../*", "../**/*", "/etc/*", "**/../../*", "dirlink/*"):
        result = await Glob().run({"pattern": pattern}, ctx)
        assert "secret" not in result.text, (pattern, result.text)
    found = await Grep().run({"pattern": "top se.ret", "include": "*"}, ctx)
    assert found.text == "no matches for 'top se.ret'"
