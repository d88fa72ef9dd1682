"""Agents as the configuration knows them: who may act, in which teams, leading which.

A light module (no ORM, no SQLAlchemy): `inboxd.tickets.actions` checks permissions with
it and the agent CLI's read commands (`ticket list`, `ticket show`) name the acting agent
with it, without loading what the actions need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from inboxd.errors import NotFound


class _Team(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def lead(self) -> str | None: ...


class Teams(Protocol):
    """Who is in which team: the settings, or the read commands' cached view of them."""

    def agents(self) -> frozenset[str]: ...
    def teams_of(self, agent: str) -> Sequence[_Team]: ...


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent as the configuration knows it: its address, its teams, the teams it leads."""

    address: str
    teams: frozenset[str]
    leads: frozenset[str]

    def in_team(self, team: str | None) -> bool:
        """Member or lead of `team`; a ticket no team holds is anyone's."""
        return team is None or team in self.teams

    def leads_team(self, team: str | None) -> bool:
        return team in self.leads if team is not None else bool(self.leads)


def agent(settings: Teams, address: str) -> Agent:
    """The agent `address` acts as; NotFound when no team has it as member or lead."""
    address = address.strip().lower()
    teams = settings.teams_of(address)
    if not teams:
        known = ", ".join(sorted(settings.agents())) or "none configured"
        raise NotFound(f"unknown agent {address or '(empty)'} (agents: {known})")
    return Agent(
        address=address,
        teams=frozenset(t.name for t in teams),
        leads=frozenset(t.name for t in teams if t.lead == address),
    )
