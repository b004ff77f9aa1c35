"""SecurityGuard (CMDC built-in, priority 10): blocks dangerous paths and shell commands.

File tools may not name secrets, absolute paths, `~` or `..`; shell lines may not escalate
privileges, wipe `/` or `~`, format disks, write to devices, pipe downloads into a shell or
power the machine off. Rules look at the programs a line runs, not at substrings, so
`rm -rf build/` passes and `FOO=1 nohup rm -fr ~` does not.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from flotilla.runtime import Deadline, PatternError, PatternTooSlow, UserPattern
from workers.plugins._base import (
    Action,
    BlockTool,
    Hook,
    Plugin,
    PluginContext,
    PluginOptsError,
)
from workers.plugins._opts import known_keys
from workers.plugins._shell import MAX_SHELL_CHARS, shell_segments

_OPTS = frozenset({"blocked_paths", "blocked_commands", "allow_commands"})
PATTERN_TIME_S = 0.25
"""How long one of the session's own patterns may search one argument."""
_FILE_TOOLS = frozenset({"read_file", "write_file", "edit_file", "list_dir", "glob", "grep"})
# grep's `pattern` is a regex over file contents, not a path.
_PATH_ARGS: Mapping[str, tuple[str, ...]] = {"glob": ("path", "pattern")}

_SECRET_DIRS = frozenset({".ssh", ".aws", ".gnupg", ".kube"})
_SECRET_FILES = frozenset({".netrc", ".git-credentials", ".pgpass", ".pypirc"})
_KEY_FILES = ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519")
_ENV_TEMPLATES = frozenset({".env.example", ".env.sample", ".env.template", ".env.dist"})
_SYSTEM_DIRS = frozenset(
    {
        *("/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media"),
        *("/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr"),
        *("/var", "/Applications", "/Library", "/System", "/Users"),
    }
)
_HARMLESS_DEVICES = frozenset(
    f"/dev/{d}" for d in ("null", "zero", "stdout", "stderr", "stdin", "tty", "random", "urandom")
)

_ESCALATION = frozenset({"sudo", "su", "doas", "pkexec"})
_POWER = frozenset({"shutdown", "reboot", "halt", "poweroff"})
_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "fish", "ash"})
_INTERPRETERS = _SHELLS | {"python", "python3", "perl", "ruby", "node", "php"}
_DOWNLOADERS = frozenset({"curl", "wget", "fetch"})
_WRAPPERS = frozenset({"env", "nohup", "time", "nice", "ionice", "command", "exec", "timeout"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_WRAPPER_ARG = re.compile(r"-.*|\d+(\.\d+)?[smhd]?")
# Bounded names and no `.*`: a long line must not make these regexes quadratic.
_FORK_BOMB = re.compile(r"(?:^|[\s;&|])([\w:.-]{1,64})\s*\(\)\s*\{[^}]{0,64}?\1\s*\|\s*\1\s*&")
_DOWNLOAD_SUBSTITUTION = re.compile(r"(?:\$\(|<\(|`)\s*(?:curl|wget)\b")
_RUNS_TEXT = re.compile(
    r"(?:^|[\s;&|(/])(?:(?:ba|z|da|k|fi)?sh|eval|source|\.|python3?|perl|ruby|node)\s"
)
_MAX_DEPTH = 3


class SecurityGuard(Plugin):
    """Blocks dangerous file paths and shell commands at `before_tool`."""

    name = "security_guard"
    priority = 10
    aliases = ("CMDC.Plugin.Builtin.SecurityGuard",)

    blocked_paths: tuple[UserPattern, ...]
    blocked_commands: tuple[UserPattern, ...]
    allow_commands: tuple[UserPattern, ...]
    """A command matching one of these (re.search) skips every command rule."""

    def configure(self, opts: Mapping[str, Any]) -> None:
        known_keys("security_guard", opts, _OPTS)
        blocked_paths = _regexes(opts.get("blocked_paths", []), "blocked_paths")
        blocked_commands = _regexes(opts.get("blocked_commands", []), "blocked_commands")
        allow_commands = _regexes(opts.get("allow_commands", []), "allow_commands")
        self.blocked_paths = blocked_paths
        self.blocked_commands = blocked_commands
        self.allow_commands = allow_commands

    def handle(
        self, hook: Hook, payload: Mapping[str, Any], state: dict[str, Any], ctx: PluginContext
    ) -> Action | None:
        if hook is not Hook.BEFORE_TOOL:
            return None
        name = payload.get("name")
        args = payload.get("args")
        if not isinstance(args, Mapping):
            return None
        if name == "shell":
            command = args.get("command")
            reason = self.command_danger(command) if isinstance(command, str) else None
            return BlockTool(f"blocked command: {reason}") if reason else None
        if name in _FILE_TOOLS:
            for key in _PATH_ARGS.get(name, ("path",)):
                value = args.get(key)
                reason = self.path_danger(value) if isinstance(value, str) else None
                if reason:
                    return BlockTool(f"blocked path {value!r}: {reason}")
        return None

    def path_danger(self, path: str) -> str | None:
        """Why a file tool may not use `path`, or None."""
        reason = _secret(path) or _pattern(path, self.blocked_paths, "blocked path pattern")
        if reason:
            return reason
        normalized = path.strip().replace("\\", "/")
        parts = [p for p in normalized.split("/") if p]
        if normalized.startswith("~"):
            return "home directory (~)"
        if ".." in parts:
            return "parent directory (..)"
        if normalized.startswith("/") or re.match(r"[A-Za-z]:/", normalized):
            top = "/" + parts[0] if parts else "/"
            return f"system directory ({top})" if top in _SYSTEM_DIRS else "absolute path"
        return None

    def command_danger(self, command: str) -> str | None:
        """Why `shell` may not run `command`, or None."""
        if any(_matches(rx, command) for rx in self.allow_commands):
            return None
        if len(command) > MAX_SHELL_CHARS:
            return f"too long to inspect ({len(command)} characters > {MAX_SHELL_CHARS})"
        reason = _pattern(command, self.blocked_commands, "blocked command pattern")
        return reason or self._line_danger(command, 0)

    def _line_danger(self, command: str, depth: int) -> str | None:
        if _FORK_BOMB.search(command):
            return "fork bomb"
        download = _DOWNLOAD_SUBSTITUTION.search(command)
        if download and _RUNS_TEXT.search(command, 0, download.start()):
            return "executing a download"
        downloading = False
        for segment in shell_segments(command):
            argv = _effective_argv(segment.words)
            program = posixpath.basename(argv[0]) if argv else ""
            downloading = downloading and segment.piped
            if downloading and program in _INTERPRETERS:
                return f"piping a download into {program}"
            downloading = downloading or program in _DOWNLOADERS
            reason = self._argv_danger(program, argv[1:], depth)
            for target in segment.redirects:
                reason = reason or (f"redirect to {target}" if _is_device(target) else None)
            for word in (*argv[1:], *segment.redirects):
                reason = (
                    reason
                    or _secret(word)
                    or _pattern(word, self.blocked_paths, "blocked path pattern")
                )
            if reason:
                return reason
        return None

    def _argv_danger(self, program: str, args: Sequence[str], depth: int) -> str | None:
        if program in _ESCALATION:
            return f"privilege escalation ({program})"
        if program in _POWER or (program == "init" and args[:1] in (["0"], ["6"])):
            return f"power control ({program})"
        if program == "systemctl" and _POWER & set(args):
            return "power control (systemctl)"
        if program.startswith("mkfs") or program in ("wipefs", "fdisk", "sfdisk", "parted"):
            return f"disk formatting ({program})"
        if program == "dd":
            for arg in args:
                if arg.startswith("of=") and _is_device(arg[3:]):
                    return f"dd writing to {arg[3:]}"
        if program == "rm" or program in ("chmod", "chown", "chgrp"):
            flags = "rR" if program == "rm" else "R"
            recursive = any(_has_flag(a, flags, "--recursive") for a in args)
            if "--no-preserve-root" in args:
                return f"{program} --no-preserve-root"
            for arg in args:
                if recursive and not arg.startswith("-") and _sweeping(arg):
                    return f"recursive {program} of {arg}"
        script = _script(args) if program in _SHELLS else None
        if depth < _MAX_DEPTH and script is not None:
            return self._line_danger(script, depth + 1)
        if depth < _MAX_DEPTH and program == "eval":
            return self._line_danger(" ".join(args), depth + 1)
        return None


def _effective_argv(words: Sequence[str]) -> list[str]:
    """The command a segment really runs: without VAR=value and wrappers like nohup or env."""
    argv = list(words)
    while argv and _ASSIGNMENT.match(argv[0]):
        argv.pop(0)
    while argv and posixpath.basename(argv[0]) in _WRAPPERS:
        argv.pop(0)
        while argv and (_WRAPPER_ARG.fullmatch(argv[0]) or _ASSIGNMENT.match(argv[0])):
            argv.pop(0)
    return argv


def _script(args: Sequence[str]) -> str | None:
    """The script of `sh -c SCRIPT` (also `bash -lc SCRIPT`)."""
    for i, arg in enumerate(args[:-1]):
        if arg.startswith("-") and not arg.startswith("--") and "c" in arg:
            return args[i + 1]
    return None


def _has_flag(arg: str, letters: str, long: str) -> bool:
    if arg == long:
        return True
    return arg.startswith("-") and not arg.startswith("--") and any(c in arg for c in letters)


def _sweeping(arg: str) -> bool:
    """A target whose recursive removal wipes the system, a home or what lies outside."""
    target = re.sub(r"^\$\{?HOME\}?", "~", arg)
    if target.startswith("~"):
        return target[1:].strip("/*") == ""
    if target.startswith("/"):
        norm = posixpath.normpath(target.rstrip("*"))
        return norm in ("/", "//") or norm in _SYSTEM_DIRS
    norm = posixpath.normpath(target)
    return norm == ".." or norm.startswith("../")


def _is_device(path: str) -> bool:
    return (
        path.startswith("/dev/")
        and path not in _HARMLESS_DEVICES
        and not path.startswith("/dev/fd/")
    )


def _secret(path: str) -> str | None:
    for part in re.split(r"[/\\=:]", path):
        if part in _SECRET_DIRS or part in _SECRET_FILES:
            return f"secret location ({part})"
        if part.startswith(_KEY_FILES):
            return f"private key ({part})"
        if part == ".env" or (part.startswith(".env.") and part not in _ENV_TEMPLATES):
            return f"secret file ({part})"
    return None


def _pattern(text: str, patterns: Sequence[UserPattern], what: str) -> str | None:
    """Why `text` is refused by one of `patterns`; a pattern that cannot decide in time
    refuses it too (a guard that could not check does not let the call through)."""
    for rx in patterns:
        try:
            if rx.search(text, Deadline(PATTERN_TIME_S)):
                return f"matches {what} {rx.source!r}"
        except PatternTooSlow:
            return f"could not be checked against {what} {rx.source!r} in time"
    return None


def _matches(rx: UserPattern, text: str) -> bool:
    try:
        return rx.search(text, Deadline(PATTERN_TIME_S))
    except PatternTooSlow:
        return False  # an allow rule that cannot decide in time allows nothing


def _regexes(value: object, field: str) -> tuple[UserPattern, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise PluginOptsError(f"security_guard: {field} must be a list of regular expressions")
    compiled = []
    for source in value:
        try:
            compiled.append(UserPattern(source))
        except PatternError as exc:
            raise PluginOptsError(f"security_guard: {field}: {exc}") from None
    return tuple(compiled)
