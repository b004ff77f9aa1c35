"""Recipe 6.3, multi-tenant provider profiles: one registry profile per tenant.

Each tenant of a SaaS has its own provider key and base URL. They live in the fleet's provider
registry as profiles (`flotilla registry put`, or `RegistryClient.register` as here), loaded
from the application's database at start; a session names one with the model
`registry:<tenant>-mock:<model_id>` and every LLM request is resolved against it, so no
session carries a key. Here the profiles' provider is the offline `mock`, each with its own
scripted answer.

A session whose profile is not loaded gets `error{code: "registry_profile_missing"}`: that
turn ends (`agent_end{reason: "error"}`) and the session lives on. Reloading the profile from
the database and prompting again is the recipe's `resume_with_retry`. Profile names are
`[A-Za-z0-9_-]` (no `:`); a profile's `tenant` field would restrict it to one fleet tenant's
sessions. Set FLOTILLA_FLEET_KEY so the keys are sealed at rest; `list` shows them as `***`.

    python -m examples.tenant_profiles
"""

from __future__ import annotations

import contextlib
import secrets

from examples._run import ask, run_example
from flotilla import Fleet, FlotillaError, Session
from flotilla.registry import RegistryClient
from schemas import Event, ProviderProfile


def _profile(tenant: str, answer: str) -> ProviderProfile:
    """A tenant's profile as the application's database keeps it (a made-up key)."""
    return ProviderProfile(
        name=f"{tenant}-mock",
        provider="mock",
        opts={
            "api_key": f"sk-{tenant}-not-a-real-key",
            "base_url": f"https://llm.example.com/{tenant}",
            "script": [{"text": answer}],
        },
    )


ANSWERS = {
    "acme": "Acme: your invoice is attached.",
    "globex": "Globex: the export finished.",
    "initech": "Initech: the TPS report is filed.",
}
PROFILE_DB = {f"{tenant}-mock": _profile(tenant, text) for tenant, text in ANSWERS.items()}
"""The application's store of profiles, by name."""
LOADED_AT_START = ("acme-mock", "globex-mock")
"""Initech's profile is left out: its first prompt finds it missing."""


async def main(fleet: Fleet, *, registry: RegistryClient | None = None) -> list[Event]:
    """Profiles loaded for two tenants, a turn each, then a third tenant's missing profile.

    `registry` defaults to the fleet's own registry client. The
    profiles are unregistered at the end, so that a second run starts the same way.
    """
    client = registry or fleet.registry()
    sessions: dict[str, Session] = {}
    events: list[Event] = []
    try:
        for name in LOADED_AT_START:  # the recipe's ProviderProfileStore.init
            await client.register(PROFILE_DB[name])
        for listed in await client.list():  # secrets shown as ***
            if listed.name in PROFILE_DB:
                print(f"{listed.name}: {listed.opts['api_key']} {listed.opts['base_url']}")
        for tenant in ANSWERS:
            name = f"{tenant}-mock"
            sessions[name] = await fleet.create_agent(
                session_id=f"{tenant}-{secrets.token_hex(4)}",
                model=f"registry:{name}:script",
                user_data={"tenant_id": tenant},
            )
            events += await ask(sessions[name], "What's new?")
        missing = [str(e.data["profile"]) for e in events if _is_missing(e)]
        for name in missing:  # reload_profile_from_db, then retry
            await client.register(PROFILE_DB[name])
            events += await ask(sessions[name], "What's new, now?")
        return events
    finally:
        for session in sessions.values():
            await session.stop()
        for name in PROFILE_DB:
            with contextlib.suppress(FlotillaError):  # not_found: never loaded
                await client.unregister(name)


def _is_missing(event: Event) -> bool:
    return event.type == "error" and event.data.get("code") == "registry_profile_missing"


if __name__ == "__main__":
    run_example(main)
