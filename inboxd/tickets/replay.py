"""Replay a rule set over stored tickets: what would route differently, without writing.

An admin reviews a rule change like a diff: `replay` re-routes the first inbound mail of
every ticket created since an instant with the new rules and counts, per field, each
`old -> new` change against the decision the ticket got *when it was created* (its first
`routed` event), not against its current fields: agents transfer and re-prioritise
tickets, and that is no rule's doing.

The mail is parsed again from `raw_mail.data`: the raw bytes are the truth, parsed
columns may come from an older parser. Rows are streamed (`yield_per`), one ticket at a
time is held in memory, so a large database costs time, not memory. Reads only; the
caller gives a session it rolls back (the CLI opens it read-only).
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from inboxd.mail.parse import parse
from inboxd.models import Message, RawMail, Ticket, TicketEvent
from inboxd.tickets.routing import RuleSet, route

FIELDS = ("team", "category", "priority")
SAMPLE = 10  # ticket numbers kept per change, to look at with `inboxd ticket show`
BATCH = 100  # rows per fetch: each holds a raw mail (up to max_message_size)

# Why a ticket was not replayed (the keys of ReplayResult.skipped).
SKIP_MERGED = "merged into another ticket"
SKIP_NO_MAIL = "no inbound message"
SKIP_PURGED = "raw mail purged"
SKIP_UNPARSABLE = "first message unparsable"
SKIP_NOT_ROUTED = "no routing record"


@dataclass(frozen=True, slots=True)
class Change:
    """`count` tickets whose `field` would go from `old` to `new`.

    `rules` counts which rule of the new set decided the new value ("default" for the
    mailbox's default team, "" when no rule set the field); `tickets` holds the first
    SAMPLE ticket numbers, lowest first.
    """

    field: str
    old: str | None
    new: str | None
    count: int
    rules: tuple[tuple[str, int], ...]
    tickets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a rule set would change over the tickets created since `since`.

    `tickets` counts every ticket created since then; `replayed` those whose first mail
    was routed again; `changed` those with at least one field different; `skipped`
    counts the rest by reason.
    """

    since: datetime
    tickets: int
    replayed: int
    changed: int
    changes: tuple[Change, ...]  # in `fields` order, then most frequent first
    skipped: Mapping[str, int]
    fields: tuple[str, ...] = FIELDS

    @property
    def unchanged(self) -> int:
        return self.replayed - self.changed


@dataclass
class _Tally:
    count: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    tickets: list[int] = field(default_factory=list)


def count_tickets(session: Session, *, since: datetime) -> int:
    """How many tickets were created since `since` (a progress bar's total)."""
    stmt = select(func.count()).select_from(Ticket).where(col(Ticket.created_at) >= since)
    return int(session.exec(stmt).one())


def replay(
    session: Session,
    rules: RuleSet,
    *,
    since: datetime,
    default_teams: Mapping[str, str],
    fields: tuple[str, ...] = FIELDS,
    progress: Callable[[], None] | None = None,
) -> ReplayResult:
    """Route the first inbound mail of each ticket created since `since` with `rules`.

    `default_teams` maps mailbox names to their default team (from the config): a
    ticket whose mailbox is no longer configured is skipped. `progress` is called once
    per ticket. Reads only; never flushes or commits.
    """
    tallies: dict[tuple[str, str | None, str | None], _Tally] = {}
    skipped: Counter[str] = Counter()
    tickets = replayed = changed = 0
    for ticket_id, mailbox, status, routed, message_pk, data in session.exec(
        _first_mails(since).execution_options(yield_per=BATCH)
    ):
        tickets += 1
        if progress is not None:
            progress()
        reason = _skip_reason(status, routed, message_pk, data, mailbox, default_teams)
        if reason is not None:
            skipped[reason] += 1
            continue
        try:
            mail = parse(data)
        except Exception:  # noqa: BLE001 - UnparsableMail or a parser bug: skip, never stop
            skipped[SKIP_UNPARSABLE] += 1
            continue
        decision = route(rules, mail, mailbox=mailbox, default_team=default_teams[mailbox])
        replayed += 1
        old = _as_dict(routed)
        new = {
            "team": decision.team or None,
            "category": decision.category,
            "priority": decision.priority,
            "sla": decision.sla,
        }
        differs = False
        for name in fields:
            before, after = old.get(name), new.get(name)
            if before == after:
                continue
            differs = True
            tally = tallies.setdefault((name, before, after), _Tally())
            tally.count += 1
            tally.rules[decision.set_by.get(name, "")] += 1
            _keep_lowest(tally.tickets, ticket_id)
        changed += differs
    changes = sorted(
        (
            Change(
                field=name,
                old=before,
                new=after,
                count=t.count,
                rules=tuple(t.rules.most_common()),
                tickets=tuple(t.tickets),
            )
            for (name, before, after), t in tallies.items()
        ),
        key=lambda c: (fields.index(c.field), -c.count, c.old or "", c.new or ""),
    )
    return ReplayResult(
        since=since,
        tickets=tickets,
        replayed=replayed,
        changed=changed,
        changes=tuple(changes),
        skipped=dict(skipped.most_common()),
        fields=fields,
    )


def _first_mails(since: datetime) -> Any:
    """(ticket id, mailbox, status, first routed event's data, first inbound message's
    row id, its raw bytes) per ticket created since `since`, in no particular order.

    Correlated subqueries, each one index lookup per ticket: the oldest inbound message
    (ix_message_ticket_received), the first `routed` event (by ticket_id), and the raw
    bytes (by primary key). No join and no ORDER BY on purpose: PostgreSQL would
    hash-join the whole raw_mail table and sort the raw bytes (spilling to disk) before
    the first row; this way rows stream from the first one, in constant memory.
    """
    first_in = (
        select(Message.id)
        .where(col(Message.ticket_id) == col(Ticket.id), col(Message.direction) == "in")
        .order_by(col(Message.received_at), col(Message.id))
        .limit(1)
        .correlate(Ticket)
        .scalar_subquery()
    )
    routed = (
        select(TicketEvent.data)
        .where(col(TicketEvent.ticket_id) == col(Ticket.id), col(TicketEvent.kind) == "routed")
        .order_by(col(TicketEvent.id))
        .limit(1)
        .correlate(Ticket)
        .scalar_subquery()
    )
    tickets = (
        select(
            col(Ticket.id).label("id"),
            col(Ticket.mailbox).label("mailbox"),
            col(Ticket.status).label("status"),
            routed.label("routed"),
            first_in.label("message_pk"),
        )
        .where(col(Ticket.created_at) >= since)
        .subquery("t")
    )
    raw = (
        select(RawMail.data)
        .where(col(RawMail.message_pk) == tickets.c.message_pk)
        .correlate(tickets)
        .scalar_subquery()
    )
    return select(
        tickets.c.id,
        tickets.c.mailbox,
        tickets.c.status,
        tickets.c.routed,
        tickets.c.message_pk,
        raw.label("data"),
    )


def _keep_lowest(sample: list[int], ticket_id: int) -> None:
    """Keep the SAMPLE lowest ticket numbers, sorted (rows come in no set order)."""
    if len(sample) < SAMPLE or ticket_id < sample[-1]:
        bisect.insort(sample, ticket_id)
        del sample[SAMPLE:]


def _skip_reason(
    status: str,
    routed: object,
    message_pk: int | None,
    data: bytes | None,
    mailbox: str | None,
    default_teams: Mapping[str, str],
) -> str | None:
    if status == "merged":
        return SKIP_MERGED  # its messages moved to the ticket it was merged into
    if message_pk is None:
        return SKIP_NO_MAIL
    if data is None:
        return SKIP_PURGED
    if routed is None:
        return SKIP_NOT_ROUTED
    if mailbox is None or mailbox not in default_teams:
        return f'mailbox "{mailbox}" is no longer in the config'
    return None


def _as_dict(value: object) -> dict[str, Any]:
    """The routed event's data: a dict (JSON column), or text on a driver that gives it."""
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}
