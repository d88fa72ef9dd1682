"""Who is at the keyboard: `--as AGENT` or `$INBOXD_AGENT`, checked against the teams."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from inboxd.cli.common import STATE
from inboxd.errors import ConfigError, NotFound

if TYPE_CHECKING:
    from inboxd.tickets.actions import Agent


@dataclass(frozen=True, slots=True)
class Who:
    """The acting agent as the read commands need it (no `tickets.actions` import)."""

    address: str
    teams: frozenset[str]
    leads: frozenset[str]


def given() -> str | None:
    """The address given with --as or $INBOXD_AGENT, if any (not checked)."""
    value = (STATE.agent_option or "").strip()
    return value or None


def who() -> Who | None:
    """The acting agent when one was named; NotFound when the teams do not know it.

    The same check and message as `inboxd.tickets.actions.agent`, which brings the whole
    ORM: `ticket list` and `ticket show` only need the agent's teams.
    """
    address = given()
    if address is None:
        return None
    settings = STATE.settings
    address = address.strip().lower()
    teams = settings.teams_of(address)
    if not teams:
        known = ", ".join(sorted(settings.agents())) or "none configured"
        raise NotFound(f"unknown agent {address or '(empty)'} (agents: {known})")
    return Who(
        address=address,
        teams=frozenset(t.name for t in teams),
        leads=frozenset(t.name for t in teams if t.lead == address),
    )


def current() -> Agent | None:
    """The acting agent when one was named; NotFound when the teams do not know it."""
    from inboxd.tickets.actions import agent

    address = given()
    return agent(STATE.settings, address) if address is not None else None


def whoami() -> Agent:
    """The acting agent; a usage error when none was named (actions need a name)."""
    found = current()
    if found is None:
        raise ConfigError("who is acting? pass --as AGENT (before the command) or set INBOXD_AGENT")
    return found
