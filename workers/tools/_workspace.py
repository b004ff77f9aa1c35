"""A session's files, which follow the session from worker to worker.

Two backends behind one `Workspace` protocol: a Redis hash per session (any worker can serve
any session) and a real directory (one node, or a volume shared by the fleet). Both confine
every path to the workspace with the same `normalize` rules.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import redis.asyncio as aioredis

from flotilla.keys import RedisKeys

if TYPE_CHECKING:
    from flotilla.settings import Settings

__all__ = [
    "DirectoryWorkspace",
    "Entry",
    "RedisWorkspace",
    "Workspace",
    "WorkspaceError",
    "normalize",
    "open_workspace",
]

Kind = Literal["file", "dir"]
_DRIVE = re.compile(r"^[A-Za-z]:")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_PATH = 4096
_HIDDEN = frozenset({"Cf", "Co", "Cs", "Zl", "Zp"})
"""Unicode categories of characters that do not show as themselves: format (bidi, zero
width), private use, surrogates, line and paragraph separators."""
_MAX_NAME = 255


class WorkspaceError(Exception):
    """A refused workspace operation; `code` says why, the message names the path."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a directory listing; `size` is 0 for directories."""

    name: str
    is_dir: bool
    size: int


class Workspace(Protocol):
    """The files of one session; paths are relative POSIX paths checked by `normalize`."""

    async def read(self, path: str) -> bytes: ...
    async def write(self, path: str, data: bytes) -> None: ...
    async def delete(self, path: str) -> None: ...
    async def kind(self, path: str) -> Kind | None: ...
    async def list_dir(self, path: str) -> list[Entry]: ...
    async def walk(self, path: str = ".") -> list[tuple[str, int]]: ...
    async def snapshot(self) -> dict[str, bytes]: ...
    async def restore(self, files: dict[str, bytes]) -> None: ...
    async def clear(self) -> None: ...
    def local_dir(self) -> AbstractAsyncContextManager[Path]: ...


def normalize(path: str) -> str:
    """The canonical relative form of `path` ("" is the root), or WorkspaceError."""
    if not isinstance(path, str):
        raise WorkspaceError("invalid_path", f"path must be a string, not {type(path).__name__}")
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        raise WorkspaceError("invalid_path", f"path {path!r} contains a control character")
    if any(unicodedata.category(c) in _HIDDEN for c in path):
        # bidi overrides and zero-width characters make a path read as another one (in an
        # approval's hint, say): `\u202e../x` shows as something else than it is
        raise WorkspaceError(
            "invalid_path", f"path {path!r} contains an invisible or direction-changing character"
        )
    if "\\" in path:
        raise WorkspaceError("invalid_path", f"path {path!r} contains a backslash; use '/'")
    if _DRIVE.match(path):
        raise WorkspaceError("invalid_path", f"path {path!r} has a drive letter")
    if path.startswith("/"):
        raise WorkspaceError(
            "outside_workspace", f"path {path!r} is absolute; use a path relative to the workspace"
        )
    if len(path) > _MAX_PATH:
        raise WorkspaceError("invalid_path", f"path is longer than {_MAX_PATH} characters")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise WorkspaceError("outside_workspace", f"path {path!r} leaves the workspace")
            parts.pop()
        elif len(part) > _MAX_NAME:
            raise WorkspaceError("invalid_path", f"a name in {path!r} is longer than {_MAX_NAME}")
        else:
            parts.append(part)
    return "/".join(parts)


def _shown(rel: str) -> str:
    return rel or "."


def open_workspace(
    *, settings: Settings, redis: aioredis.Redis, keys: RedisKeys, tenant: str, sid: str
) -> Workspace:
    """The workspace of session `sid` on the backend chosen by `settings.workspace_backend`."""
    if settings.workspace_backend == "dir":
        return DirectoryWorkspace(settings=settings, tenant=tenant, sid=sid)
    return RedisWorkspace(redis=redis, key=keys.workspace(tenant, sid), settings=settings)


# -- Redis -------------------------------------------------------------------------------------

# Checks and writes one file atomically: refuses a path that is a directory, a path below a
# file, and a total above the budget. KEYS[1] hash; ARGV path, data, max total bytes.
_WRITE = """
local path = ARGV[1]
local prefix = path .. '/'
local total = 0
for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
  if k ~= path then
    if string.sub(k, 1, #prefix) == prefix then return 'is_a_directory' end
    if string.sub(prefix, 1, #k + 1) == k .. '/' then return k end
    total = total + redis.call('HSTRLEN', KEYS[1], k)
  end
end
if total + #ARGV[2] > tonumber(ARGV[3]) then return 'too_large' end
redis.call('HSET', KEYS[1], path, ARGV[2])
return 'ok'
"""

# Every file with its size, without moving the contents: [path1, size1, path2, size2, ...].
_SIZES = """
local out = {}
for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
  out[#out + 1] = k
  out[#out + 1] = redis.call('HSTRLEN', KEYS[1], k)
end
return out
"""


class RedisWorkspace:
    """A workspace in one Redis hash (path → bytes); directories exist implicitly.

    The client must return bytes (`decode_responses=False`), as the worker's client does.
    """

    def __init__(self, *, redis: aioredis.Redis, key: str, settings: Settings) -> None:
        self._redis = redis
        self._key = key
        self._max_file = settings.workspace_max_file_bytes
        self._max_total = settings.workspace_max_bytes
        self._write_script = redis.register_script(_WRITE)
        self._sizes_script = redis.register_script(_SIZES)

    async def _sizes(self) -> dict[str, int]:
        flat = await self._sizes_script(keys=[self._key])
        return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def read(self, path: str) -> bytes:
        rel = normalize(path)
        data = await self._redis.hget(self._key, rel) if rel else None
        if data is None:
            if await self.kind(rel) == "dir":
                raise WorkspaceError("is_a_directory", f"{_shown(rel)} is a directory")
            raise WorkspaceError("not_found", f"{rel} does not exist")
        return _as_bytes(data)

    async def write(self, path: str, data: bytes) -> None:
        rel = normalize(path)
        if not rel:
            raise WorkspaceError("is_a_directory", "the workspace root is a directory")
        _check_file_size(rel, len(data), self._max_file)
        reply = await self._write_script(keys=[self._key], args=[rel, data, self._max_total])
        outcome = reply.decode()
        if outcome == "ok":
            return
        if outcome == "is_a_directory":
            raise WorkspaceError("is_a_directory", f"{rel} is a directory")
        if outcome == "too_large":
            raise WorkspaceError(
                "too_large",
                f"writing {rel} would exceed the workspace limit of {self._max_total:,} bytes",
            )
        raise WorkspaceError("not_a_directory", f"{outcome} is a file, so {rel} cannot be created")

    async def delete(self, path: str) -> None:
        rel = normalize(path)
        if not rel:
            raise WorkspaceError("invalid_path", "the workspace root cannot be deleted")
        if await self._redis.hdel(self._key, rel):
            return
        below = [p for p in await self._sizes() if p.startswith(rel + "/")]
        if not below:
            raise WorkspaceError("not_found", f"{rel} does not exist")
        await self._redis.hdel(self._key, *below)

    async def kind(self, path: str) -> Kind | None:
        rel = normalize(path)
        if not rel:
            return "dir"
        if await self._redis.hexists(self._key, rel):
            return "file"
        return "dir" if any(p.startswith(rel + "/") for p in await self._sizes()) else None

    async def list_dir(self, path: str) -> list[Entry]:
        rel = normalize(path)
        sizes = await self._sizes()
        if rel in sizes:
            raise WorkspaceError("not_a_directory", f"{rel} is a file")
        prefix = rel + "/" if rel else ""
        entries: dict[str, Entry] = {}
        for p, size in sizes.items():
            if p.startswith(prefix):
                name, sep, _ = p[len(prefix) :].partition("/")
                entries[name] = Entry(name, True, 0) if sep else Entry(name, False, size)
        if rel and not entries:
            raise WorkspaceError("not_found", f"{rel} does not exist")
        return [entries[name] for name in sorted(entries)]

    async def walk(self, path: str = ".") -> list[tuple[str, int]]:
        rel = normalize(path)
        sizes = await self._sizes()
        if rel in sizes:
            return [(rel, sizes[rel])]
        prefix = rel + "/" if rel else ""
        found = sorted((p, s) for p, s in sizes.items() if p.startswith(prefix))
        if rel and not found:
            raise WorkspaceError("not_found", f"{rel} does not exist")
        return found

    async def snapshot(self) -> dict[str, bytes]:
        raw = await self._redis.hgetall(self._key)
        return {_as_bytes(k).decode(): _as_bytes(v) for k, v in raw.items()}

    async def restore(self, files: dict[str, bytes]) -> None:
        mapping = _checked_tree(files)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key)
            if mapping:
                pipe.hset(self._key, mapping=mapping)  # type: ignore[arg-type]
            await pipe.execute()

    async def clear(self) -> None:
        await self._redis.delete(self._key)

    @asynccontextmanager
    async def local_dir(self) -> AsyncIterator[Path]:
        """The files in a temporary directory; on a clean exit, changes are written back.

        Only regular files come back: symlinks, devices and names `normalize` refuses are
        ignored. A body that raises (or is cancelled) syncs nothing.
        """
        # Keys written around `normalize` (by hand, by an old version) are left alone, never
        # materialized: a "../x" key must not become a file outside the temporary directory.
        before = {p: d for p, d in (await self.snapshot()).items() if _is_normal(p)}
        tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="flotilla-ws-"))
        try:
            await asyncio.to_thread(_materialize, tmp, before)
            yield tmp
            after = await asyncio.to_thread(_collect, tmp, self._max_file, self._max_total)
            await self._apply(before, after)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def _apply(self, before: dict[str, bytes], after: dict[str, bytes]) -> None:
        changed = {p: d for p, d in after.items() if before.get(p) != d}
        removed = [p for p in before if p not in after]
        if not changed and not removed:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            if removed:
                pipe.hdel(self._key, *removed)
            if changed:
                pipe.hset(self._key, mapping=changed)  # type: ignore[arg-type]
            await pipe.execute()


def _as_bytes(value: bytes | str) -> bytes:
    """redis-py types replies as str or bytes; the workspace client always returns bytes."""
    return value.encode() if isinstance(value, str) else value


def _check_file_size(rel: str, size: int, limit: int) -> None:
    if size > limit:
        raise WorkspaceError(
            "too_large", f"{rel} has {size:,} bytes; the limit per file is {limit:,} bytes"
        )


def _is_normal(rel: str) -> bool:
    try:
        return bool(rel) and normalize(rel) == rel
    except WorkspaceError:
        return False


def _checked_tree(files: dict[str, bytes]) -> dict[str, bytes]:
    """`files` with normalized paths, refusing a file that another file needs as a directory."""
    mapping = {normalize(p): data for p, data in files.items()}
    if "" in mapping:
        raise WorkspaceError("is_a_directory", "the workspace root is a directory")
    for rel in mapping:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in mapping:
                raise WorkspaceError("not_a_directory", f"{'/'.join(parts[:i])} is a file")
    return mapping


def _materialize(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _collect(root: Path, max_file: int, max_total: int) -> dict[str, bytes]:
    """Regular files below `root`, read through directory fds so no symlink is ever followed."""
    files: dict[str, bytes] = {}
    total = 0
    for dirpath, _, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if not _is_normal(rel):
                continue
            data = _read_regular(name, dir_fd, rel, max_file)
            if data is None:
                continue
            total += len(data)
            if total > max_total:
                raise WorkspaceError(
                    "too_large", f"the workspace would exceed its limit of {max_total:,} bytes"
                )
            files[rel] = data
    return files


def _read_regular(name: str, dir_fd: int, rel: str, max_file: int) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None  # a symlink (ELOOP), or gone
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        _check_file_size(rel, info.st_size, max_file)
        data = file.read(max_file + 1)
    _check_file_size(rel, len(data), max_file)
    return data


# -- directory ---------------------------------------------------------------------------------


class DirectoryWorkspace:
    """A workspace in a real directory; resolved paths (symlinks included) stay inside."""

    def __init__(self, *, settings: Settings, tenant: str, sid: str) -> None:
        for label, value in (("tenant", tenant), ("session id", sid)):
            if not _TOKEN.match(value):
                raise WorkspaceError("invalid_path", f"{label} {value!r} is not a safe name")
        self._root = settings.data_dir / "workspaces" / tenant / sid
        self._max_file = settings.workspace_max_file_bytes
        self._max_total = settings.workspace_max_bytes

    def _real_root(self) -> Path:
        self._root.mkdir(parents=True, exist_ok=True)
        return self._root.resolve()

    def _resolve(self, path: str) -> tuple[str, Path, Path]:
        """(normalized path, real root, resolved target), refusing targets outside the root."""
        rel = normalize(path)
        root = self._real_root()
        target = (root / rel).resolve() if rel else root
        if target != root and not target.is_relative_to(root):
            raise WorkspaceError("outside_workspace", f"{rel} resolves outside the workspace")
        return rel, root, target

    async def read(self, path: str) -> bytes:
        return await asyncio.to_thread(self._read, path)

    def _read(self, path: str) -> bytes:
        rel, _, target = self._resolve(path)
        if target.is_dir():
            raise WorkspaceError("is_a_directory", f"{_shown(rel)} is a directory")
        if not target.is_file():
            raise WorkspaceError("not_found", f"{rel} does not exist")
        return target.read_bytes()

    async def write(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, path, data)

    def _write(self, path: str, data: bytes) -> None:
        rel, root, target = self._resolve(path)
        if target.is_dir():
            raise WorkspaceError("is_a_directory", f"{_shown(rel)} is a directory")
        _check_file_size(rel, len(data), self._max_file)
        old = target.stat().st_size if target.is_file() else 0
        if _tree_size(root) - old + len(data) > self._max_total:
            raise WorkspaceError(
                "too_large",
                f"writing {rel} would exceed the workspace limit of {self._max_total:,} bytes",
            )
        for parent in reversed(target.relative_to(root).parents):
            if (root / parent).is_file():
                raise WorkspaceError(
                    "not_a_directory", f"{parent} is a file, so {rel} cannot be created"
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    async def delete(self, path: str) -> None:
        await asyncio.to_thread(self._delete, path)

    def _delete(self, path: str) -> None:
        rel = normalize(path)
        if not rel:
            raise WorkspaceError("invalid_path", "the workspace root cannot be deleted")
        parent, name = rel.rpartition("/")[::2]
        _, _, real_parent = self._resolve(parent)
        if (real_parent / name).is_symlink():
            (real_parent / name).unlink()  # the link itself, wherever it points
            return
        _, _, target = self._resolve(rel)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.is_file():
            target.unlink()
        else:
            raise WorkspaceError("not_found", f"{rel} does not exist")

    async def kind(self, path: str) -> Kind | None:
        return await asyncio.to_thread(self._kind, path)

    def _kind(self, path: str) -> Kind | None:
        _, _, target = self._resolve(path)
        if target.is_dir():
            return "dir"
        return "file" if target.is_file() else None

    async def list_dir(self, path: str) -> list[Entry]:
        return await asyncio.to_thread(self._list_dir, path)

    def _list_dir(self, path: str) -> list[Entry]:
        rel, root, target = self._resolve(path)
        if target.is_file():
            raise WorkspaceError("not_a_directory", f"{rel} is a file")
        if not target.is_dir():
            raise WorkspaceError("not_found", f"{rel} does not exist")
        entries = []
        for child in target.iterdir():
            real = child.resolve()
            if real != root and not real.is_relative_to(root):
                continue  # a symlink out of the workspace is not part of it
            if real.is_dir():
                entries.append(Entry(child.name, True, 0))
            elif real.is_file():
                entries.append(Entry(child.name, False, real.stat().st_size))
        return sorted(entries, key=lambda e: e.name)

    async def walk(self, path: str = ".") -> list[tuple[str, int]]:
        return await asyncio.to_thread(self._walk, path)

    def _walk(self, path: str) -> list[tuple[str, int]]:
        rel, root, target = self._resolve(path)
        if target.is_file():
            return [(target.relative_to(root).as_posix(), target.stat().st_size)]
        if not target.is_dir():
            raise WorkspaceError("not_found", f"{rel} does not exist")
        return sorted(_regular_files(root, target))

    async def snapshot(self) -> dict[str, bytes]:
        return await asyncio.to_thread(self._snapshot)

    def _snapshot(self) -> dict[str, bytes]:
        root = self._real_root()
        return {rel: (root / rel).read_bytes() for rel, _ in _regular_files(root, root)}

    async def restore(self, files: dict[str, bytes]) -> None:
        mapping = _checked_tree(files)
        await asyncio.to_thread(self._restore, mapping)

    def _restore(self, files: dict[str, bytes]) -> None:
        self._clear()
        _materialize(self._real_root(), files)

    async def clear(self) -> None:
        await asyncio.to_thread(self._clear)

    def _clear(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)

    @asynccontextmanager
    async def local_dir(self) -> AsyncIterator[Path]:
        """The workspace directory itself: changes land directly."""
        yield await asyncio.to_thread(self._real_root)


def _regular_files(root: Path, top: Path) -> list[tuple[str, int]]:
    found = []
    for dirpath, _, filenames in os.walk(top, followlinks=False):
        for name in filenames:
            info = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(info.st_mode):
                rel = Path(dirpath, name).relative_to(root).as_posix()
                found.append((rel, info.st_size))
    return found


def _tree_size(root: Path) -> int:
    return sum(size for _, size in _regular_files(root, root))
