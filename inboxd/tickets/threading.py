"""Which ticket a mail belongs to: reply token, known Message-IDs, then a subject tag.

Every Message-ID a ticket's mail carries or references is kept in `thread_ref`, so one
indexed query answers for any reply, including one whose direct parent we never saw
but whose References share an id with the ticket (a ghost parent). Lookup cost does not
grow with history: it is a primary-key probe per candidate id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Literal

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from inboxd import records
from inboxd.db import Prepared, insert_ignore
from inboxd.mail.parse import ParsedMail
from inboxd.models import Participant, ThreadRef, Ticket
from inboxd.tickets.tokens import find_ticket_token

How = Literal["token", "reference", "subject", "none"]
# Headers where an MTA records the address a mail was delivered to (subaddress kept).
ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-delivered-to")
MAX_MERGE_HOPS = 32
_REF = ThreadRef.__table__.c  # type: ignore[attr-defined]
# Built once: constructing a statement per mail costs more than running it.
_LOOKUP_CHUNK = 32


@cache
def _known_ids(count: int) -> Prepared:
    """`SELECT ... WHERE message_id IN (?, ...)` with `count` placeholders, prepared once."""
    return Prepared(
        sa_select(_REF.message_id, _REF.ticket_id).where(
            _REF.message_id.in_([bindparam(f"m{i}") for i in range(count)])
        )
    )


def known_tickets(session: Session, ids: list[str]) -> dict[str, int]:
    """Which of `ids` (Message-IDs) map to a ticket, and to which."""
    known: dict[str, int] = {}
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        params = {f"m{i}": mid for i, mid in enumerate(chunk)}
        known.update(_known_ids(len(chunk)).rows(session, params))
    return known


@dataclass(frozen=True, slots=True)
class ThreadMatch:
    ticket_id: int | None
    how: How
    subject_ref: int | None = None  # a tag in the subject that did not count (stranger)
    # Other tickets this mail's ids point at (its replies arrived first, or its References
    # span two threads): all one conversation with `ticket_id`.
    linked: tuple[int, ...] = ()


def subject_tag_pattern(fmt: str) -> re.Pattern[str]:
    """`"[#{id}]"` -> a regex capturing the id wherever the tag stands in a subject."""
    before, _, after = fmt.partition("{id}")
    return re.compile(re.escape(before) + r"(\d{1,12})" + re.escape(after))


def all_ids(mail: ParsedMail) -> list[str]:
    """Candidate parent ids, best first: notmuch's parent priority, then every other id."""
    ranked = list(mail.parent_ids)
    seen = set(ranked)
    for mid in (*reversed(mail.references), *mail.in_reply_to):
        if mid not in seen and mid != mail.message_id:
            ranked.append(mid)
            seen.add(mid)
    return ranked


def token_addresses(mail: ParsedMail) -> list[str]:
    addresses = [a.addr for a in mail.recipients]
    for name in ENVELOPE_HEADERS:
        for value in mail.headers.get(name, ()):
            addresses.extend(v.strip(" <>").lower() for v in value.split(","))
    return addresses


def find_ticket(
    session: Session,
    mail: ParsedMail,
    *,
    secret: bytes,
    own_addresses: frozenset[str],
    subject_tag: re.Pattern[str],
) -> ThreadMatch:
    """The ticket this mail continues, by token, then references, then a trusted subject tag."""
    token_ticket = find_ticket_token(secret, token_addresses(mail), own_addresses)
    if token_ticket is not None and records.get(session, Ticket, token_ticket) is not None:
        return ThreadMatch(token_ticket, "token")

    ids = all_ids(mail)
    lookup = [*ids, mail.message_id] if mail.message_id else ids
    if lookup:
        known = known_tickets(session, lookup)
        found = [known[mid] for mid in lookup if mid in known]
        if found:
            others = tuple(dict.fromkeys(t for t in found if t != found[0]))
            return ThreadMatch(found[0], "reference", linked=others)

    m = subject_tag.search(mail.subject)
    if m is not None:
        tagged = int(m.group(1))
        sender = mail.from_.addr if mail.from_ else None
        if sender and is_participant(session, tagged, sender):
            return ThreadMatch(tagged, "subject")
        if records.get(session, Ticket, tagged) is not None:
            return ThreadMatch(None, "none", subject_ref=tagged)
    return ThreadMatch(None, "none")


def is_participant(session: Session, ticket_id: int, address: str) -> bool:
    row = session.exec(
        select(Participant.id).where(
            Participant.ticket_id == ticket_id, Participant.address == address.lower()
        )
    ).first()
    return row is not None


def follow_merges(session: Session, ticket_id: int) -> Ticket:
    """The ticket that now holds `ticket_id`'s conversation (merges may chain)."""
    ticket = records.get(session, Ticket, ticket_id)
    assert ticket is not None, f"ticket {ticket_id} vanished"
    for _ in range(MAX_MERGE_HOPS):
        if ticket.merged_into is None:
            return ticket
        nxt = records.get(session, Ticket, ticket.merged_into)
        assert nxt is not None
        ticket = nxt
    return ticket


def remember_ids(session: Session, ticket_id: int, ids: Iterable[str | None]) -> None:
    """Map ids to the ticket; an id another ticket already owns stays with it."""
    rows = [{"message_id": mid, "ticket_id": ticket_id} for mid in dict.fromkeys(ids) if mid]
    insert_ignore(session, ThreadRef, rows)
