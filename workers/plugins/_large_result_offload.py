"""LargeResultOffload (CMDC built-in): a per-session budget for tool results, in tokens.

The engine always offloads a tool result longer than the fleet's `tool_result_max_chars`
to `.flotilla/results/<call_id>.txt` and gives the LLM its head and a `read_file` note
(seeds/000 recipe 8). With this plugin the session's budget is the smaller of that setting
and `tool_token_limit_before_evict` tokens, counted as 4 characters each
(`SessionHooks.offload_limit`). The plugin answers no hook; a hot update changes the budget
from the next tool result on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.plugins import _opts
from workers.plugins._base import Plugin

NAME = "large_result_offload"
CHARS_PER_TOKEN = 4
MIN_TOKENS = 200
"""Below this the LLM would see little more than the offload note."""


class LargeResultOffload(Plugin):
    """Lowers the session's tool result budget to `tool_token_limit_before_evict` tokens."""

    name = NAME
    priority = 100
    aliases = ("CMDC.Plugin.Builtin.LargeResultOffload",)

    token_limit: int

    def configure(self, opts: Mapping[str, Any]) -> None:
        _opts.known_keys(NAME, opts, ("tool_token_limit_before_evict",))
        limit = _opts.positive_int(
            NAME, opts, "tool_token_limit_before_evict", 20_000, minimum=MIN_TOKENS
        )
        self.token_limit = limit

    @property
    def max_chars(self) -> int:
        """The budget in characters."""
        return self.token_limit * CHARS_PER_TOKEN
