"""load_plugins: names, CMDC aliases, custom and direct import paths, and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import PluginSpec
from workers.plugins import (
    HumanApproval,
    Plugin,
    PluginLoadError,
    SecurityGuard,
    load_plugins,
)


class Greeter(Plugin):
    """A custom plugin loaded by import path."""

    name = "greeter"
    priority = 300


class Unnamed(Plugin):
    pass


class Impostor(Plugin):
    name = "human_approval"


class NotAPlugin:
    name = "impostor"


class BadState(Plugin):
    name = "bad_state"

    def initial_state(self) -> dict[str, Any]:
        return {"x": object()}


HERE = __name__


def test_short_names_load_builtins() -> None:
    plugins = load_plugins(["security_guard", "human_approval"])
    assert [type(p) for p in plugins] == [SecurityGuard, HumanApproval]


def test_cmdc_aliases_load_builtins() -> None:
    plugins = load_plugins(
        ["CMDC.Plugin.Builtin.HumanApproval", "CMDC.Plugin.Builtin.SecurityGuard"]
    )
    assert [p.name for p in plugins] == ["human_approval", "security_guard"]


def test_spec_mapping_passes_opts() -> None:
    (plugin,) = load_plugins([{"name": "human_approval", "opts": {"tools": ["shell"]}}])
    assert isinstance(plugin, HumanApproval) and plugin.tools == {"shell"}


def test_wire_plugin_spec_is_accepted() -> None:
    (plugin,) = load_plugins([PluginSpec(name="human_approval", opts={"default": "deny"})])
    assert isinstance(plugin, HumanApproval) and plugin.default == "deny"


def test_direct_import_path_loads_a_plugin_class() -> None:
    (plugin,) = load_plugins([f"{HERE}:Greeter"])
    assert isinstance(plugin, Greeter)


def test_custom_plugins_register_under_their_name() -> None:
    (plugin,) = load_plugins(["greeter"], extra=[f"{HERE}:Greeter"])
    assert isinstance(plugin, Greeter)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown plugin 'nope'; known: auto_checkpoint, content_policy, "),
        ("no_such_module_xyz:Thing", "cannot import: ModuleNotFoundError"),
        (f"{HERE}:Missing", "cannot import: AttributeError"),
        (f"{HERE}:NotAPlugin", "not a subclass of workers.plugins.Plugin"),
        (f"{HERE}:Unnamed", "sets no `name`"),
        (f"{HERE}:BadState", "failed to start: TypeError"),
        ({"name": "human_approval", "opts": {"default": "maybe"}}, "invalid opts"),
        ({"name": "security_guard", "opts": {"blocked_commands": ["("]}}, "invalid regular"),
        ({"opts": {}}, "name must be a non-empty string"),
        ({"name": "human_approval", "opts": ["tools"]}, "opts must be an object"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_message(spec: Any, message: str) -> None:
    with pytest.raises(PluginLoadError, match=message.replace("(", r"\(")):
        load_plugins([spec])


def test_duplicate_plugins_are_refused() -> None:
    with pytest.raises(PluginLoadError, match="duplicate"):
        load_plugins(["human_approval", "CMDC.Plugin.Builtin.HumanApproval"])


def test_import_paths_can_be_refused() -> None:
    with pytest.raises(PluginLoadError, match="import paths are not allowed"):
        load_plugins([f"{HERE}:Greeter"], import_paths=False)


def test_custom_plugin_may_not_take_a_builtin_name() -> None:
    with pytest.raises(PluginLoadError, match="'human_approval' is already taken"):
        load_plugins([], extra=[f"{HERE}:Impostor"])
