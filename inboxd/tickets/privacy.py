"""Customer data: export everything about one address, erase it, purge old raw mail.

Export and erase share one notion of "that person's data", so what an export shows is
what an erasure removes:

* their messages: every message they sent, received (To, Cc, Reply-To) or that bounced
  on their address;
* their tickets: tickets where they are the customer or a participant, and the tickets
  of their messages.

Erasure keeps the ticket rows (times, team, priority, status, SLA fields) and the event
kinds, so reports still count them; the address becomes a stable token `erased-<hash8>`
(a keyed hash: the same person gets the same token, nobody can recompute it without the
installation's secret). Everything here works over the caller's session and never
commits, except `run_purge`, the scheduler's entry point.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, LargeBinary, String, Text, cast, delete, func, inspect, or_, update
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel, col, select

from inboxd.models import Message, Outbox, Participant, RawMail, Ticket
from inboxd.tickets import events, views

if TYPE_CHECKING:
    from sqlalchemy import Column, Engine, Table

    from inboxd.config import Settings

ERASED_SUBJECT = "(erased)"
ERASED_KIND = "erased"
_CHUNK = 500  # ids per IN (...) list, well under every backend's parameter limit
# Characters that may precede or follow an address inside a longer one: "ann@x.com" must
# not match inside "joann@x.com", "ann@x.com.au" or "bob+ann@x.com".
_BEFORE = r"(?<![A-Za-z0-9.!#$%&'*+/=?^_`{|}~-])"
_AFTER = r"(?![A-Za-z0-9-]|\.[A-Za-z0-9])"


def normalise(address: str) -> str:
    """Addresses are stored lowercased (parse.Address); so are the ones we look for."""
    return address.strip().lower()


def anonymous_token(secret: bytes, address: str) -> str:
    """`erased-<8 hex>`: stable per address, not recomputable without `secret`."""
    mac = hmac.new(secret, b"erase:" + normalise(address).encode(), hashlib.sha256)
    return f"erased-{mac.hexdigest()[:8]}"


# -- finding a person's data ---------------------------------------------------------


def _like_needle(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _json_needle(address: str) -> str:
    """The address as it appears inside serialised JSON (non-ASCII is \\u-escaped)."""
    return json.dumps(address)[1:-1].lower()


def _text_contains(column: Any, address: str) -> ColumnElement[bool]:
    """A cheap superset filter (case-insensitive for ASCII); Python checks exactly after."""
    as_text = func.lower(cast(column, Text))
    needles = {address, _json_needle(address)}
    return or_(*(as_text.like(_like_needle(n), escape="\\") for n in sorted(needles)))


def _has(entries: Iterable[dict[str, Any]] | None, key: str, address: str) -> bool:
    return any(str(e.get(key) or "").lower() == address for e in entries or ())


def involves(msg: Message, address: str) -> bool:
    """Whether `address` sent, received, or bounced on, this message."""
    if (msg.from_addr or "").lower() == address:
        return True
    if any(_has(lst, "addr", address) for lst in (msg.to_addrs, msg.cc_addrs, msg.reply_to)):
        return True
    return _has((msg.bounce or {}).get("recipients"), "address", address)


def their_messages(session: Session, *, address: str) -> list[Message]:
    """Messages `address` sent or received (or that bounced on it), oldest first."""
    address = normalise(address)
    candidates = session.exec(
        select(Message)
        .where(
            or_(
                col(Message.from_addr) == address,
                *(
                    _text_contains(c, address)
                    for c in (Message.to_addrs, Message.cc_addrs, Message.reply_to, Message.bounce)
                ),
            )
        )
        .order_by(col(Message.received_at), col(Message.id))
    ).all()
    return [m for m in candidates if involves(m, address)]


def their_tickets(
    session: Session, *, address: str, messages: Sequence[Message] = ()
) -> tuple[set[int], set[int]]:
    """(tickets where they are the customer, every ticket of theirs: participant, messages)."""
    address = normalise(address)
    customer = set(
        session.exec(select(Ticket.id).where(col(Ticket.customer_addr) == address)).all()
    )
    participant = set(
        session.exec(select(Participant.ticket_id).where(col(Participant.address) == address)).all()
    )
    of_messages = {m.ticket_id for m in messages if m.ticket_id is not None}
    every = {t for t in customer | participant | of_messages if t is not None}
    return {t for t in customer if t is not None}, every


# -- export ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportedMessage:
    """One message of the export; `data` None when its raw bytes were purged."""

    path: str  # relative to the export folder, made of ids only: never a name from mail
    message: int
    message_id: str | None
    ticket: int | None
    direction: str
    data: bytes | None


@dataclass(frozen=True)
class CustomerExport:
    """Everything stored about one address, ready to be written out."""

    address: str
    exported_at: datetime
    tickets: list[views.TicketDoc]
    messages: list[ExportedMessage]

    def manifest(self) -> dict[str, Any]:
        files = [(m, m.data) for m in self.messages if m.data is not None]
        return {
            "address": self.address,
            "exported_at": views.iso(self.exported_at),
            "counts": {
                "tickets": len(self.tickets),
                "messages": len(self.messages),
                "files": len(files),
                "raw_purged": len(self.messages) - len(files),
            },
            "tickets": [t["id"] for t in self.tickets],
            "files": [
                {
                    "path": m.path,
                    "message": m.message,
                    "message_id": m.message_id,
                    "ticket": m.ticket,
                    "direction": m.direction,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
                for m, data in files
            ],
            "raw_purged": [
                {"message": m.message, "message_id": m.message_id, "ticket": m.ticket}
                for m in self.messages
                if m.data is None
            ],
        }


def message_path(msg: Message) -> str:
    """`ticket-12/0003-in.eml`: the row id and direction, nothing the sender chose."""
    folder = f"ticket-{int(msg.ticket_id)}" if msg.ticket_id is not None else "no-ticket"
    direction = re.sub(r"[^a-z]", "", msg.direction or "") or "msg"
    return f"{folder}/{int(msg.id or 0):04d}-{direction}.eml"


def export(session: Session, *, address: str, now: datetime) -> CustomerExport:
    """Their messages (raw bytes) and tickets (`ticket show --json` documents)."""
    address = normalise(address)
    messages = their_messages(session, address=address)
    _, ticket_ids = their_tickets(session, address=address, messages=messages)
    raw = _raw_by_message(session, [m.id for m in messages if m.id is not None])
    exported = [
        ExportedMessage(
            path=message_path(m),
            message=m.id or 0,
            message_id=m.message_id,
            ticket=m.ticket_id,
            direction=m.direction,
            data=raw.get(m.id or 0),
        )
        for m in messages
    ]
    tickets = [views.ticket_detail(session, t, now=now) for t in sorted(ticket_ids)]
    return CustomerExport(address=address, exported_at=now, tickets=tickets, messages=exported)


def _raw_by_message(session: Session, ids: Sequence[int]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for chunk in _chunks(ids):
        for pk, data in session.exec(
            select(RawMail.message_pk, RawMail.data).where(col(RawMail.message_pk).in_(chunk))
        ).all():
            if data is not None:
                out[pk] = bytes(data)
    return out


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


# -- erase -----------------------------------------------------------------------------


@dataclass
class Erasure:
    """What an erasure changed; all zero when there was nothing (left) to erase."""

    token: str
    messages: int = 0  # messages whose content, addresses and raw bytes were removed
    customer_tickets: int = 0  # tickets whose customer fields became the token
    tickets: int = 0  # tickets that got an `erased` event
    participants: int = 0  # participant rows deleted
    outbox: int = 0  # outgoing mail to them dropped (queued ones are not sent)
    mentions: dict[str, int] = field(default_factory=dict)  # "table.column" -> rows rewritten

    @property
    def changed(self) -> bool:
        return bool(
            self.messages
            or self.customer_tickets
            or self.participants
            or self.outbox
            or any(self.mentions.values())
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "messages": self.messages,
            "customer_tickets": self.customer_tickets,
            "tickets": self.tickets,
            "participants": self.participants,
            "outbox": self.outbox,
            "mentions": dict(self.mentions),
        }


def erase(
    session: Session, *, address: str, secret: bytes, now: datetime, actor: str = events.SYSTEM
) -> Erasure:
    """Remove `address` and its personal data; keep anonymised ticket metrics. Idempotent.

    Their messages lose raw bytes, text, subject, addresses and attachment metadata (their
    own address becomes the token); notes on tickets where they are the customer lose
    their text; their participant rows go; their customer tickets get the token as
    customer, no name, subject "(erased)" and no CSAT comment; queued mail to them is
    failed, never sent. Last, every remaining literal occurrence of the address in any
    text, JSON or binary column is replaced by the token. Each touched ticket gets an
    `erased` event naming the token, not the address. Never commits.
    """
    address = normalise(address)
    token = anonymous_token(secret, address)
    result = Erasure(token=token)
    messages = their_messages(session, address=address)
    customer, tickets = their_tickets(session, address=address, messages=messages)
    if customer:
        messages += _notes_of(session, customer, exclude={m.id for m in messages})
    per_ticket: dict[int, int] = {}
    for msg in messages:
        _erase_message(msg, address, token)
        if msg.ticket_id is not None:
            per_ticket[msg.ticket_id] = per_ticket.get(msg.ticket_id, 0) + 1
    result.messages = len(messages)
    for chunk in _chunks([m.id for m in messages if m.id is not None]):
        session.exec(
            update(RawMail)
            .where(col(RawMail.message_pk).in_(chunk), col(RawMail.data).is_not(None))
            .values(data=None, purged_at=now)
        )
    for ticket_id in sorted(customer):
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            continue
        ticket.customer_addr = token
        ticket.customer_name = None
        ticket.subject = ERASED_SUBJECT
        ticket.csat_comment = None
        session.add(ticket)
    result.customer_tickets = len(customer)
    gone = session.exec(delete(Participant).where(col(Participant.address) == address))
    result.participants = int(gone.rowcount or 0)
    result.outbox = _erase_outbox(session, address, token)
    session.flush()
    result.mentions = scrub_mentions(session, address=address, token=token)
    if result.changed:
        for ticket_id in sorted(tickets | set(per_ticket)):
            events.record(
                session,
                ticket_id=ticket_id,
                at=now,
                actor=actor,
                kind=ERASED_KIND,
                token=token,
                messages=per_ticket.get(ticket_id, 0),
                customer=ticket_id in customer,
            )
        result.tickets = len(tickets | set(per_ticket))
    session.flush()
    _compact_search_index(session)
    return result


def _notes_of(session: Session, ticket_ids: set[int], *, exclude: set[int | None]) -> list[Message]:
    notes: list[Message] = []
    for chunk in _chunks(sorted(ticket_ids)):
        notes += session.exec(
            select(Message).where(col(Message.ticket_id).in_(chunk), Message.direction == "note")
        ).all()
    return [n for n in notes if n.id not in exclude]


def _erase_message(msg: Message, address: str, token: str) -> None:
    """Content and addresses go; row, ticket, direction, times and size stay (metrics)."""

    def keep_theirs(entries: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{"addr": token, "name": ""} for e in entries if e.get("addr") == address][:1]

    sender_is_them = (msg.from_addr or "").lower() == address
    msg.from_addr = token if sender_is_them else msg.from_addr
    msg.from_name = None if sender_is_them else msg.from_name
    msg.to_addrs = keep_theirs(msg.to_addrs)
    msg.cc_addrs = keep_theirs(msg.cc_addrs)
    msg.reply_to = keep_theirs(msg.reply_to)
    msg.subject = ""
    msg.text = ""
    msg.attachments = []
    msg.bounce = None
    msg.quarantine_reason = None if msg.quarantine_reason is None else "erased"


def _erase_outbox(session: Session, address: str, token: str) -> int:
    rows = session.exec(
        select(Outbox).where(
            or_(col(Outbox.rcpt_key) == address, _text_contains(Outbox.recipients, address))
        )
    ).all()
    count = 0
    for row in rows:
        if address not in [r.lower() for r in row.recipients] and row.rcpt_key != address:
            continue
        row.recipients = [token if r.lower() == address else r for r in row.recipients]
        row.rcpt_key = token if row.rcpt_key == address else row.rcpt_key
        row.data = b""
        if row.status in ("queued", "sending"):
            row.status = "failed"
            row.last_error = "recipient erased"
        session.add(row)
        count += 1
    return count


# -- the safety net: the address anywhere else -------------------------------------------


def _column_kind(column: Column[Any]) -> str | None:
    kind = column.type
    if isinstance(kind, TypeDecorator):  # SQLModel's AutoString wraps String
        kind = kind.impl_instance
    if isinstance(kind, JSON):
        return "json"
    if isinstance(kind, LargeBinary):
        return "bytes"
    if isinstance(kind, String):
        return "text"
    return None


def _bytes_contains(column: Any, address: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":  # bytea -> text with non-ASCII bytes escaped as \nnn
        as_text = func.lower(func.encode(column, "escape"))
    else:
        as_text = func.lower(cast(column, Text))
    return as_text.like(_like_needle(address), escape="\\")


def _replace_json(value: Any, pattern: re.Pattern[str], token: str) -> Any:
    if isinstance(value, str):
        return pattern.sub(token, value)
    if isinstance(value, list):
        return [_replace_json(v, pattern, token) for v in value]
    if isinstance(value, dict):
        return {pattern.sub(token, k): _replace_json(v, pattern, token) for k, v in value.items()}
    return value


def scrub_mentions(session: Session, *, address: str, token: str) -> dict[str, int]:
    """Replace `address` wherever it is still written, in every table inboxd defines.

    Covers what no rule above names: another customer's mail that quotes the address,
    event data, thread references, error texts, tables added later. Binary columns (raw
    mail) are rewritten in place; an encoded occurrence (base64, RFC 2047) is not seen.
    """
    address = normalise(address)
    text_re = re.compile(_BEFORE + re.escape(address) + _AFTER, re.IGNORECASE)
    bytes_re = re.compile(
        _BEFORE.encode() + re.escape(address.encode()) + _AFTER.encode(), re.IGNORECASE
    )
    conn = session.connection()
    dialect = conn.dialect.name
    counts: dict[str, int] = {}
    for table in SQLModel.metadata.sorted_tables:
        keys = list(table.primary_key.columns)
        if not keys:
            continue
        for column in table.columns:
            kind = _column_kind(column)
            if kind is None:
                continue
            where = (
                _bytes_contains(column, address, dialect)
                if kind == "bytes"
                else _text_contains(column, address)
            )
            rows = conn.execute(table.select().with_only_columns(*keys, column).where(where))
            changed = 0
            for row in rows.all():
                value = row[-1]
                new: Any
                if kind == "bytes":
                    new = bytes_re.sub(token.encode(), bytes(value))
                elif kind == "json":
                    new = _replace_json(value, text_re, token)
                else:
                    new = text_re.sub(token, value)
                if new == value:
                    continue
                match = [k == row[i] for i, k in enumerate(keys)]
                conn.execute(_update(table, match).values({column.name: new}))
                changed += 1
            if changed:
                counts[f"{table.name}.{column.name}"] = changed
    session.expire_all()  # the ORM's copies of rewritten rows are stale now
    return counts


def _update(table: Table, match: list[ColumnElement[bool]]) -> Any:
    return table.update().where(*match)


def _compact_search_index(session: Session) -> None:
    """SQLite FTS5 keeps deleted terms in old segments until a merge: merge them now."""
    conn = session.connection()
    if conn.dialect.name != "sqlite" or not inspect(conn).has_table("message_fts"):
        return
    conn.exec_driver_sql("INSERT INTO message_fts(message_fts) VALUES ('optimize')")


# -- retention -------------------------------------------------------------------------


def _closed_before(cutoff: datetime) -> Any:
    return (
        select(Message.id)
        .join(Ticket, col(Ticket.id) == col(Message.ticket_id))
        .where(Ticket.status == "closed", col(Ticket.closed_at) <= cutoff)
    )


@dataclass(frozen=True, slots=True)
class Purgeable:
    raw_mails: int
    tickets: int
    cutoff: datetime


def count_purgeable(session: Session, *, older_than: timedelta, now: datetime) -> Purgeable:
    """What `purge_closed` would purge now (for `inboxd db purge --dry-run`)."""
    cutoff = now - older_than
    raw = session.exec(
        select(func.count())
        .select_from(RawMail)
        .where(
            col(RawMail.message_pk).in_(_closed_before(cutoff)),
            col(RawMail.data).is_not(None),
        )
    ).one()
    tickets = session.exec(
        select(func.count(func.distinct(Message.ticket_id)))
        .join(RawMail, col(RawMail.message_pk) == col(Message.id))
        .where(col(Message.id).in_(_closed_before(cutoff)), col(RawMail.data).is_not(None))
    ).one()
    return Purgeable(raw_mails=int(raw), tickets=int(tickets), cutoff=cutoff)


def purge_closed(session: Session, *, older_than: timedelta, now: datetime) -> int:
    """Drop the raw bytes of mail on tickets closed at least `older_than` ago.

    Parsed fields (text, addresses) stay, so the tickets still read; raw_mail rows keep
    `purged_at`. Sent outgoing mail of those tickets loses its bytes too. Returns how many
    raw mails were purged; running it again purges nothing more. Never commits.
    """
    cutoff = now - older_than
    purged = session.exec(
        update(RawMail)
        .where(
            col(RawMail.message_pk).in_(_closed_before(cutoff)),
            col(RawMail.data).is_not(None),
        )
        .values(data=None, purged_at=now)
    )
    closed = select(Ticket.id).where(Ticket.status == "closed", col(Ticket.closed_at) <= cutoff)
    session.exec(
        update(Outbox)
        .where(
            col(Outbox.ticket_id).in_(closed),
            col(Outbox.status).in_(("sent", "failed")),
            func.length(Outbox.data) > 0,
        )
        .values(data=b"")
    )
    return int(purged.rowcount or 0)


def run_purge(engine: Engine, settings: Settings, now: datetime) -> int:
    """The scheduler's retention job: one transaction; 0 when `retention` is not set.

    Safe on several hosts at once: a second run finds nothing left to purge.
    """
    from inboxd.db import session_scope

    retention = settings.inboxd.retention
    if retention is None:
        return 0
    with session_scope(engine) as session:
        return purge_closed(session, older_than=retention, now=now)
