"""The catalog: CMDC's built-ins, custom tools by import path, and argument validation."""

from __future__ import annotations

from typing import Any

import pytest

from flotilla import ConfigurationError, Settings
from workers.tools import BUILTIN_TOOL_NAMES, ToolCatalog, ToolContext, ToolResult, ToolSpec
from workers.tools import validate_args as validate
from workers.tools._files import ReadFile


class Shout:
    """A tiny custom tool, loaded by the tests through its import path."""

    spec = ToolSpec(
        name="shout",
        description="Upper-cases a text.",
        parameters={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult(args["text"].upper())


SHOUT = Shout()
NOT_A_TOOL = 42


def broken_factory() -> Shout:
    raise RuntimeError("boom")


def catalog_with(*paths: str) -> ToolCatalog:
    return ToolCatalog(Settings(custom_tools=paths))


def test_the_catalog_offers_the_eleven_builtins() -> None:
    catalog = catalog_with()
    assert catalog.names() == list(BUILTIN_TOOL_NAMES)
    assert len(BUILTIN_TOOL_NAMES) == 11
    assert all(catalog.get(name) is not None for name in BUILTIN_TOOL_NAMES)
    assert catalog.get("nope") is None


def test_cmdc_module_names_are_aliases() -> None:
    catalog = catalog_with()
    tool = catalog.get("CMDC.Tool.ReadFile")
    assert tool is not None and tool.spec.name == "read_file"
    tool = catalog.get("CMDC.Tool.CompactConversation")
    assert tool is not None and tool.spec.name == "compact_conversation"


@pytest.mark.parametrize("attr", ["SHOUT", "Shout"])
async def test_a_custom_tool_loads_from_its_import_path(attr: str) -> None:
    catalog = catalog_with(f"{__name__}:{attr}")
    tool = catalog.get("shout")
    assert tool is not None
    assert catalog.names()[-1] == "shout"
    assert (await tool.run({"text": "hi"}, None)).text == "HI"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("no_colon_here", "package.module:attr"),
        ("no.such.module_xyz:tool", "cannot import"),
        (f"{__name__}:missing", "has no 'missing'"),
        (f"{__name__}:NOT_A_TOOL", "neither a tool nor a factory"),
        (f"{__name__}:broken_factory", "creating it failed: boom"),
        (f"{__name__}:catalog_with", "has no `spec: ToolSpec`"),
    ],
)
def test_a_bad_custom_tool_path_is_a_configuration_error(path: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        catalog_with(path)
    assert says in str(caught.value)
    assert path in str(caught.value)


def test_a_custom_tool_may_not_take_a_builtin_name() -> None:
    with pytest.raises(ConfigurationError) as caught:
        catalog_with(f"{__name__}:ReadFile")
    assert "'read_file'" in str(caught.value)


def test_valid_arguments_pass() -> None:
    assert validate(ReadFile.spec, {"path": "a.txt", "offset": 3}) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "'path' is a required property"),
        ({"path": 3}, "path: 3 is not of type 'string'"),
        ({"path": "a", "offset": 0}, "offset: 0 is less than the minimum of 1"),
        (
            {"path": "a", "mode": "x"},
            "Additional properties are not allowed ('mode' was unexpected)",
        ),
        ([], "[] is not of type 'object'"),
    ],
)
def test_invalid_arguments_give_a_one_line_message(args: object, message: str) -> None:
    assert validate(ReadFile.spec, args) == message


def test_every_builtin_schema_is_a_strict_object_schema() -> None:
    catalog = catalog_with()
    for spec in catalog.specs():
        assert spec.parameters["type"] == "object"
        assert spec.parameters["additionalProperties"] is False
        assert set(spec.parameters["required"]) <= set(spec.parameters["properties"])
        assert spec.for_llm()["function"]["name"] == spec.name
