"""What the command campaign sends: hostile commands and hostile tool-call arguments, drawn
by hypothesis strategies (its bias to edge cases — empty, huge, odd Unicode, wrong types —
is the point), each labelled with the refusal it must get.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from schemas import COMMAND_OPS, MAX_DEPTH

__all__ = [
    "BUILTIN_TOOLS",
    "Hostile",
    "draw",
    "hostile_commands",
    "hostile_tool_calls",
]

T = TypeVar("T")

BUILTIN_TOOLS = (
    "read_file",
    "write_file",
    "edit_file",
    "grep",
    "list_dir",
    "glob",
    "write_todos",
    "ask_user",
    "compact_conversation",
    "shell",
    "task",
)
DEAD_LETTER = "dead_letter"
"""Must reach the dead-letter stream with a code among `codes`."""
REFUSED_OR_APPLIED = "any"
"""May be applied or refused (an error event): only the fleet's health is judged."""


@dataclass(frozen=True, slots=True)
class Hostile:
    """One hostile command: where it goes, what it is, and what must become of it."""

    kind: str
    tenant: str
    sid: str
    op: str
    data: bytes
    outcome: str
    codes: frozenset[str] = frozenset()
    on_canary: bool = False
    """Sent to a live session of the valid traffic: only commands that must be refused."""


# -- JSON values ------------------------------------------------------------------------------
def _json() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=40)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
        max_leaves=10,
    )


JSON = _json()


_DEEP = f"\u0000deep-{secrets.token_hex(8)}:"
"""Marks a value to be written as that many nested arrays (no writer recurses that deep).
Made at run time: hypothesis mixes the string literals of the code into the text it draws."""


def _nested(depth: int, leaf: Any = "x") -> Any:
    value: Any = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


BAD_TOKENS = st.sampled_from(
    ["bad@sid", "sid#1", "émoji-😀", "x" * 65, "tab\u00a0", "ünïcode", "semi;colon", "$dollar"]
)
"""Subject tokens that break PROTOCOL §1 (a `.`, `*`, `>` or space would change the subject
itself, so NATS delivers them elsewhere: they are not commands)."""


def _valid_fields(op: str) -> st.SearchStrategy[dict[str, Any]]:
    """Plausible bodies per op, to be mutated."""
    text = st.text(min_size=1, max_size=60)
    token = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=20)
    by_op: dict[str, st.SearchStrategy[dict[str, Any]]] = {
        "create": st.fixed_dictionaries({"model": st.just("mock:echo")}),
        "prompt": st.fixed_dictionaries({"text": text}),
        "steer": st.fixed_dictionaries({"text": text}),
        "abort": st.fixed_dictionaries({"reason": text}),
        "approve": st.fixed_dictionaries({"approval_id": token}),
        "reject": st.fixed_dictionaries({"approval_id": token}),
        "respond": st.fixed_dictionaries({"ref": token, "response": JSON}),
        "switch_model": st.fixed_dictionaries({"model": st.just("mock:echo")}),
        "attach_tool": st.fixed_dictionaries({"tool": st.sampled_from(BUILTIN_TOOLS)}),
        "detach_tool": st.fixed_dictionaries({"tool": st.sampled_from(BUILTIN_TOOLS)}),
        "update_plugin_opts": st.fixed_dictionaries({"plugin": token, "opts": st.just({})}),
        "checkpoint": st.fixed_dictionaries({}),
        "hibernate": st.fixed_dictionaries({}),
        "stop": st.fixed_dictionaries({}),
        "subagent_result": st.fixed_dictionaries(
            {
                "ref": token,
                "child_sid": token,
                "status": st.just("ok"),
                "signature": st.text(min_size=1, max_size=64),
            }
        ),
    }
    return by_op[op]


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[str, dict[str, Any], bool]:
    """(op, body, surely invalid): a plausible command, then one mutation."""
    op = draw(st.sampled_from(sorted(COMMAND_OPS)))
    body: dict[str, Any] = {"op": op, **draw(_valid_fields(op))}
    mutation = draw(st.sampled_from(["wrong_type", "unknown_field", "drop", "op", "deep", "id"]))
    if mutation == "unknown_field":
        # names no command has (`plugin` would be update_plugin_opts' own field)
        body[draw(st.sampled_from(["maxTurn", "plugin_name", "x", "Text", "__proto__"]))] = draw(
            JSON
        )
        return op, body, True
    if mutation == "op":
        body["op"] = draw(st.sampled_from([*sorted(COMMAND_OPS - {op}), "explode", ""]))
        return op, body, True
    if mutation == "id":
        body["id"] = draw(st.sampled_from(["", "x" * 129, "tab\tid", 7, None, ["a"]]))
        return op, body, body["id"] is not None
    if mutation == "deep":
        depth = draw(st.integers(min_value=60, max_value=900))
        body[draw(st.sampled_from(["meta", "text", "opts", "response"]))] = f"{_DEEP}{depth}"
        return op, body, depth > MAX_DEPTH
    fields = [k for k in body if k != "op"]
    if not fields:
        body["meta"] = draw(st.sampled_from([1, "m", [], None]))
        return op, body, body["meta"] is not None
    field = draw(st.sampled_from(fields))
    if mutation == "drop":
        del body[field]
        return op, body, False
    body[field] = draw(JSON)
    return op, body, False


@st.composite
def hostile_commands(
    draw: st.DrawFn, *, canaries: tuple[str, ...], tenant: str, max_bytes: int
) -> Hostile:
    """One hostile command; `canaries` are live sessions of `tenant` that must stay unharmed."""
    kind = draw(
        st.sampled_from(
            [
                "raw_bytes",
                "not_an_object",
                "too_deep",
                "too_large",
                "bad_token",
                "unknown_session",
                "other_tenant",
                "mutated",
                "mutated_on_canary",
                "forged_parent",
            ]
        )
    )
    canary = draw(st.sampled_from(canaries))
    scratch = "fz-" + draw(st.text(alphabet="0123456789abcdef", min_size=8, max_size=8))
    invalid = frozenset({"invalid_command"})
    if kind == "raw_bytes":
        data = draw(st.binary(max_size=512).filter(lambda b: not _is_object(b)))
        op = draw(st.sampled_from(sorted(COMMAND_OPS)))
        return Hostile(kind, tenant, canary, op, data, DEAD_LETTER, invalid, on_canary=True)
    if kind == "not_an_object":
        value = draw(JSON.filter(lambda v: not isinstance(v, dict)))
        data = orjson.dumps(value)
        return Hostile(kind, tenant, canary, "prompt", data, DEAD_LETTER, invalid, on_canary=True)
    if kind == "too_deep":
        depth = draw(st.integers(min_value=1100, max_value=20_000))
        data = b'{"op":"prompt","text":"x","meta":' + b"[" * depth + b"]" * depth + b"}"
        codes = frozenset({"invalid_command", "too_large"})
        return Hostile(kind, tenant, canary, "prompt", data, DEAD_LETTER, codes, on_canary=True)
    if kind == "too_large":
        size = draw(st.integers(min_value=max_bytes + 1, max_value=min(1_000_000, 2 * max_bytes)))
        data = orjson.dumps({"op": "prompt", "text": "x" * size})
        too_large = frozenset({"too_large"})
        return Hostile(kind, tenant, canary, "prompt", data, DEAD_LETTER, too_large, on_canary=True)
    if kind == "bad_token":
        bad = draw(BAD_TOKENS)
        where = draw(st.sampled_from(["tenant", "sid"]))
        data = orjson.dumps({"op": "prompt", "text": "hi"})
        return Hostile(
            kind,
            bad if where == "tenant" else tenant,
            bad if where == "sid" else scratch,
            "prompt",
            data,
            DEAD_LETTER,
            invalid,
        )
    if kind == "unknown_session":
        op = draw(st.sampled_from(sorted(COMMAND_OPS - {"create"})))
        data = orjson.dumps({"op": op, **draw(_valid_fields(op))})
        codes = frozenset({"session_not_found", "invalid_command"})
        return Hostile(kind, tenant, scratch, op, data, DEAD_LETTER, codes)
    if kind == "other_tenant":
        op = draw(st.sampled_from(sorted(COMMAND_OPS - {"create"})))
        data = orjson.dumps({"op": op, **draw(_valid_fields(op))})
        codes = frozenset({"session_not_found", "invalid_command"})
        return Hostile(kind, f"{tenant}-intruder", canary, op, data, DEAD_LETTER, codes)
    if kind == "forged_parent":
        parent = {"sid": canary, "ref": "sa-forged", "task": "lie"}
        data = orjson.dumps({"op": "create", "model": "mock:echo", "parent": parent})
        forbidden = frozenset({"forbidden"})
        return Hostile(kind, tenant, scratch, "create", data, DEAD_LETTER, forbidden)
    op, body, surely_invalid = draw(_mutated())
    data = _dumps(body)
    if kind == "mutated_on_canary":
        if not surely_invalid:  # only commands that cannot apply may touch the valid traffic
            return Hostile("mutated", tenant, scratch, op, data, REFUSED_OR_APPLIED)
        return Hostile(kind, tenant, canary, op, data, DEAD_LETTER, invalid, on_canary=True)
    if surely_invalid:
        return Hostile(kind, tenant, scratch, op, data, DEAD_LETTER, invalid)
    return Hostile(kind, tenant, scratch, op, data, REFUSED_OR_APPLIED)


def _dumps(body: dict[str, Any]) -> bytes:
    data = orjson.dumps(body)
    marker = orjson.dumps(_DEEP)[:-1]  # the quoted marker without its closing quote
    start = data.find(marker)
    if start < 0:
        return data
    end = data.index(b'"', start + len(marker))
    depth = int(data[start + len(marker) : end])
    return data[:start] + b"[" * depth + b"]" * depth + data[end + 1 :]


def _is_object(data: bytes) -> bool:
    try:
        return isinstance(orjson.loads(data), dict)
    except orjson.JSONDecodeError:
        return False


@st.composite
def hostile_tool_calls(draw: st.DrawFn) -> dict[str, Any]:
    """A tool call as an LLM might write it badly: any tool, arguments of any shape, hostile
    paths and patterns that backtrack forever among them (nested as deep as a command may
    carry them)."""
    name = draw(st.sampled_from([*BUILTIN_TOOLS, "no_such_tool", ""]))
    path = st.sampled_from(
        [
            "../../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "a\x00b",
            "x" * 5000,
            "ünï/cødé.txt",
            "\u202etxt.exe",
            "con",
            "./",
            "",
            ".flotilla/../../x",
            "a//b",
            "~/x",
        ]
    )
    patterns = st.sampled_from(["(a|aa)+$", "(x+x+)+y", "(", "[", "\\", "(?P<x", "a{99999}"])
    arguments = draw(
        st.one_of(
            st.dictionaries(
                st.sampled_from(
                    ["path", "content", "old_string", "new_string", "pattern", "offset", "limit"]
                ),
                st.one_of(path, patterns, JSON),
                max_size=4,
            ),
            JSON,
            st.integers(min_value=20, max_value=50).map(_nested),
        )
    )
    return {"name": name, "arguments": arguments}


def draw(strategy: st.SearchStrategy[T], count: int, *, seed_value: int) -> list[T]:
    """`count` values of `strategy` (fewer if it has fewer), reproducible from the seed."""
    drawn: list[T] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(seed_value)
    @given(strategy)
    def collect(value: T) -> None:
        drawn.append(value)

    run: Callable[[], None] = collect
    run()
    return drawn
