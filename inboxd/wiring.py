"""Settings -> the objects the domain needs (routing context, checked rules)."""

from __future__ import annotations

from inboxd.config import Settings
from inboxd.errors import ConfigError
from inboxd.tickets.routing import RoutingContext, RuleSet, load_rules


def routing_context(settings: Settings) -> RoutingContext:
    return RoutingContext(
        teams=frozenset(t.name for t in settings.teams),
        agents=settings.agents(),
        slas=frozenset(settings.sla),
        team_members={t.name: t.agents for t in settings.teams},
        mailboxes=frozenset(mb.name for mb in settings.mailboxes),
    )


def load_checked_rules(settings: Settings) -> RuleSet:
    """The rule set, or ConfigError naming the first problem: never run a failing set."""
    rules, errors = load_rules(
        settings.inboxd.rules, routing_context(settings), display_base=settings.base_dir
    )
    if errors:
        more = f" (+{len(errors) - 1} more; run `inboxd rules check`)" if len(errors) > 1 else ""
        raise ConfigError(f"{errors[0]}{more}")
    return rules
