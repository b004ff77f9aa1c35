"""Reflection (CMDC built-in, priority 400): the model reviews its answer before a turn ends.

A producer-reviewer loop run in the same session: when the model is about to finish,
`before_finish` intervenes with the reviewer prompt and the criteria, asking it to reply with
`pass_signal` if the answer passes and with the problems and a revised answer if not. Each
reply (`after_response`) is checked for the signal; a passing one ends the review with a
`reflection_approved` plugin event `{critique, iteration, forced: false}`. A revised answer
is reviewed again, up to `max_reviews` reviews; then the turn ends anyway (`forced: true`).

    idle --before_finish--> reviewing --after_response (pass)--> done
                              '--max_reviews reached (forced)--> done

The state goes back to idle after each turn. `reviewer_model` and `reviewer_subagent` (a
separate reviewer, in CMDC) are accepted and not used: the review runs in this session,
with its model. `pass_signal` is a string (found anywhere in the reply) or `{"regex": ...}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flotilla.runtime import Deadline, PatternError, PatternTooSlow, UserPattern
from workers.plugins._base import (
    Action,
    Emit,
    Hook,
    Intervene,
    Plugin,
    PluginContext,
    PluginOptsError,
)
from workers.plugins._opts import known_keys

_OPTS = frozenset(
    {
        "reviewer_prompt",
        "reviewer_model",
        "reviewer_subagent",
        "criteria",
        "max_reviews",
        "max_iterations",
        "pass_signal",
    }
)
DEFAULT_REVIEWER_PROMPT = (
    "You are a strict quality reviewer. Review your previous answer before it is delivered."
)
DEFAULT_PASS_SIGNAL = "APPROVED"
PATTERN_TIME_S = 0.25
"""How long a `{"regex": ...}` pass signal may search one reply."""
DEFAULT_MAX_REVIEWS = 3


class Reflection(Plugin):
    """Reviews the model's final answer in up to `max_reviews` rounds."""

    name = "reflection"
    priority = 400
    aliases = ("CMDC.Plugin.Builtin.Reflection",)

    reviewer_prompt: str
    criteria: tuple[str, ...]
    max_reviews: int
    pass_signal: str | UserPattern

    def configure(self, opts: Mapping[str, Any]) -> None:
        known_keys("reflection", opts, _OPTS)
        prompt = opts.get("reviewer_prompt", DEFAULT_REVIEWER_PROMPT)
        if not isinstance(prompt, str) or not prompt.strip():
            raise PluginOptsError("reflection: reviewer_prompt must be a non-empty string")
        model = opts.get("reviewer_model")
        if model is not None and not isinstance(model, str):
            raise PluginOptsError("reflection: reviewer_model must be a string or null")
        if not isinstance(opts.get("reviewer_subagent", False), bool):
            raise PluginOptsError("reflection: reviewer_subagent must be a boolean")
        criteria = opts.get("criteria", [])
        if not isinstance(criteria, list | tuple) or not all(isinstance(c, str) for c in criteria):
            raise PluginOptsError("reflection: criteria must be a list of strings")
        max_reviews = opts.get("max_reviews", opts.get("max_iterations", DEFAULT_MAX_REVIEWS))
        if isinstance(max_reviews, bool) or not isinstance(max_reviews, int) or max_reviews < 1:
            raise PluginOptsError("reflection: max_reviews must be an integer >= 1")
        self.reviewer_prompt = prompt
        self.criteria = tuple(criteria)
        self.max_reviews = max_reviews
        self.pass_signal = _signal(opts.get("pass_signal", DEFAULT_PASS_SIGNAL))

    def initial_state(self) -> dict[str, Any]:
        return {"phase": "idle", "iteration": 0}

    def review_prompt(self) -> str:
        """What the model is asked at each review."""
        parts = [self.reviewer_prompt]
        if self.criteria:
            parts.append("Criteria:\n" + "\n".join(f"- {c}" for c in self.criteria))
        if isinstance(self.pass_signal, str):
            verdict = f"reply with {self.pass_signal}"
        else:
            verdict = f"reply with a verdict matching /{self.pass_signal.source}/"
        parts.append(
            f"If the answer meets every criterion, {verdict} and repeat the answer. Otherwise "
            "list the problems, then give the revised answer in full."
        )
        return "\n\n".join(parts)

    def passes(self, text: str) -> bool:
        """Whether a reply carries the pass signal."""
        if isinstance(self.pass_signal, str):
            return self.pass_signal in text
        try:
            return self.pass_signal.search(text, Deadline(PATTERN_TIME_S))
        except PatternTooSlow:
            return False  # a signal that cannot be found in time is not given

    def handle(
        self, hook: Hook, payload: Mapping[str, Any], state: dict[str, Any], ctx: PluginContext
    ) -> Action | None:
        phase = state.get("phase", "idle")
        if hook is Hook.AFTER_TURN:
            state.update(self.initial_state())
            return None
        if hook is Hook.AFTER_RESPONSE and phase == "reviewing":
            message = payload.get("message")
            text = str(message.get("content") or "") if isinstance(message, Mapping) else ""
            if self.passes(text):
                state["phase"] = "done"
                return _approved(text, state, forced=False)
            state["last_reply"] = text
            return None
        if hook is not Hook.BEFORE_FINISH or phase == "done":
            return None
        iteration = int(state.get("iteration", 0))
        if phase == "reviewing" and iteration >= self.max_reviews:
            state["phase"] = "done"
            return _approved(str(state.get("last_reply", "")), state, forced=True)
        state["phase"] = "reviewing"
        state["iteration"] = iteration + 1
        return Intervene(self.review_prompt())


def _approved(critique: str, state: dict[str, Any], *, forced: bool) -> Emit:
    state.pop("last_reply", None)
    return Emit(
        "reflection_approved",
        {"critique": critique, "iteration": int(state.get("iteration", 0)), "forced": forced},
    )


def _signal(value: object) -> str | UserPattern:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping) and set(value) == {"regex"} and isinstance(value["regex"], str):
        try:
            return UserPattern(value["regex"])
        except PatternError as exc:
            raise PluginOptsError(f"reflection: pass_signal: {exc}") from None
    raise PluginOptsError('reflection: pass_signal must be a string or {"regex": "..."}')
