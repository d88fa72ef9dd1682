"""Who is at the keyboard: `--as AGENT` or `$INBOXD_AGENT`, checked against the teams."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inboxd.cli.common import STATE
from inboxd.errors import ConfigError

if TYPE_CHECKING:
    from inboxd.tickets.agents import Agent


def given() -> str | None:
    """The address given with --as or $INBOXD_AGENT, if any (not checked)."""
    value = (STATE.agent_option or "").strip()
    return value or None


def current() -> Agent | None:
    """The acting agent when one was named; NotFound when the teams do not know it."""
    from inboxd.tickets.agents import agent

    address = given()
    return agent(STATE.read_config, address) if address is not None else None


def whoami() -> Agent:
    """The acting agent; a usage error when none was named (actions need a name)."""
    found = current()
    if found is None:
        raise ConfigError("who is acting? pass --as AGENT (before the command) or set INBOXD_AGENT")
    return found
