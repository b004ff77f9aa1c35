"""Commands of PROTOCOL §3, one model per op, read through one discriminated union."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from schemas._base import WireModel
from schemas._events import Usage
from schemas._ids import CommandId, Token
from schemas._options import CheckpointRef, SessionOptions


class _Command(WireModel):
    id: CommandId | None = None
    ts: int | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class ParentRef(WireModel):
    """Set by the fleet on a sub-agent's `create`: the parent session and the pending ref.

    Fleet-only: the worker checks it against the parent's persisted wait (a `create` naming
    a parent that does not wait for this very session is `forbidden`).
    """

    sid: Token
    ref: Token
    depth: int = Field(default=1, ge=1)
    task: str = Field(min_length=1)
    """The task description: the sub-agent's first prompt."""


class Create(SessionOptions, _Command):
    op: Literal["create"] = "create"
    from_checkpoint: CheckpointRef | None = None
    parent: ParentRef | None = None


class Prompt(_Command):
    op: Literal["prompt"] = "prompt"
    text: str
    strategy: Literal["enqueue", "reject", "interrupt", "rollback"] = "enqueue"


class Steer(_Command):
    op: Literal["steer"] = "steer"
    text: str = Field(min_length=1)
    ref: Token | None = None


class Abort(_Command):
    op: Literal["abort"] = "abort"
    reason: str = "user_cancelled"
    kill_tools: Literal["default", "all", "none"] = "default"
    clear_queue: bool = True


class Approve(_Command):
    op: Literal["approve"] = "approve"
    approval_id: Token
    kind: Literal["once", "always"] = "once"
    auto_resume: bool = True


class Reject(_Command):
    op: Literal["reject"] = "reject"
    approval_id: Token
    reason: str = "rejected"
    auto_resume: bool = False


APPROVAL_TIMEOUT = "approval_timeout"
"""The `reason` of the `reject` that expires an approval."""


def approval_timeout(tenant: str, sid: str, approval_id: str) -> tuple[dict[str, Any], str]:
    """The `reject` that expires an approval, and its `Nats-Msg-Id`. Whoever sends it (the
    owning worker's timer, or the router's sweep for a session no worker holds) sends the
    same message, so JetStream keeps one."""
    body = {
        "op": "reject",
        "id": f"{approval_id}.timeout",
        "approval_id": approval_id,
        "reason": APPROVAL_TIMEOUT,
        "auto_resume": True,
    }
    return body, f"{tenant}.{sid}.{approval_id}.timeout"


class Respond(_Command):
    op: Literal["respond"] = "respond"
    ref: Token
    response: Any


class SubagentResult(_Command):
    """Fleet-only: a sub-agent's end, sent by the child's worker to its parent. `signature`
    is an HMAC made with the parent's secret for this sub-agent, so a client cannot end
    the parent's wait or invent the result (PROTOCOL §6.11)."""

    op: Literal["subagent_result"] = "subagent_result"
    ref: Token
    child_sid: Token
    status: Literal["ok", "error"]
    result: str = ""
    usage: Usage = Field(default_factory=Usage)
    signature: str = Field(min_length=1, max_length=128)


FLEET_ONLY_OPS: frozenset[str] = frozenset({"subagent_result"})
"""Ops only the fleet publishes (ops/README.md shows NATS permissions that keep clients off
them); the worker verifies them whoever sent them."""


class SwitchModel(_Command):
    op: Literal["switch_model"] = "switch_model"
    model: str = Field(min_length=3, max_length=256)
    provider_opts: dict[str, Any] | None = None


class AttachTool(_Command):
    op: Literal["attach_tool"] = "attach_tool"
    tool: str | dict[str, Any]


class DetachTool(_Command):
    op: Literal["detach_tool"] = "detach_tool"
    tool: str


class UpdatePluginOpts(_Command):
    op: Literal["update_plugin_opts"] = "update_plugin_opts"
    plugin: str = Field(min_length=1)
    opts: dict[str, Any]


class Checkpoint(_Command):
    op: Literal["checkpoint"] = "checkpoint"
    label: str | None = Field(default=None, max_length=200)


class Hibernate(_Command):
    op: Literal["hibernate"] = "hibernate"


class Stop(_Command):
    op: Literal["stop"] = "stop"


Command = Annotated[
    Create
    | Prompt
    | Steer
    | Abort
    | Approve
    | Reject
    | Respond
    | SubagentResult
    | SwitchModel
    | AttachTool
    | DetachTool
    | UpdatePluginOpts
    | Checkpoint
    | Hibernate
    | Stop,
    Field(discriminator="op"),
]

COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)

COMMAND_OPS: frozenset[str] = frozenset(
    model.model_fields["op"].default
    for model in (
        Create,
        Prompt,
        Steer,
        Abort,
        Approve,
        Reject,
        Respond,
        SubagentResult,
        SwitchModel,
        AttachTool,
        DetachTool,
        UpdatePluginOpts,
        Checkpoint,
        Hibernate,
        Stop,
    )
)
