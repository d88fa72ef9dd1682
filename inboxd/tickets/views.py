"""Read models: tickets and messages as plain dicts, the stable `--json` schema.

Timestamps are ISO 8601 with offset; `team` and `mailboxes` are names from the config;
`priority` is never null. Lists are built with a fixed number of queries, not one per row.

Every read is plain SQL text through a `Reader`: a bare `sqlite3` connection for the
agent CLI's read commands (`ticket list` and `ticket show` must start in a fraction of a
second, and importing SQLAlchemy alone costs more than that allows), or a session's
connection for everyone else. One set of queries and one document builder serve both,
so the JSON cannot drift between them. Nothing here imports SQLAlchemy at module level.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

from inboxd.errors import NotFound
from inboxd.tickets.clocks import active_due, sla_state

if TYPE_CHECKING:
    from sqlmodel import Session

    from inboxd.models import Message, Ticket

TicketDoc = dict[str, Any]
IN_CHUNK = 500  # ids per IN (...) list: far below SQLite's bound-variable limit


def iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


# -- readers ---------------------------------------------------------------------------


class Reader(Protocol):
    """Runs a read statement (`:name` parameters) and returns its rows as mappings."""

    dialect: str

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Mapping[str, Any]]:
        """Every row of `sql`; datetimes are bound as the backend stores them."""
        ...


def bind_value(value: Any, dialect: str) -> Any:
    """A parameter as the column holds it: SQLite keeps UTC instants as fixed-format text
    (what `inboxd.db.UTCDateTime` writes), compared as text."""
    if isinstance(value, datetime) and dialect == "sqlite":
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


class SqliteReader:
    """A bare `sqlite3` connection: no SQLAlchemy, for the CLI's read commands."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        self.conn = conn

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Mapping[str, Any]]:
        bound = {k: bind_value(v, "sqlite") for k, v in (params or {}).items()}
        return self.conn.execute(sql, bound).fetchall()


class SessionReader:
    """A session's own connection and transaction (pending ORM changes flushed first)."""

    def __init__(self, session: Session) -> None:
        session.flush()
        self.conn = session.connection()
        self.dialect = self.conn.dialect.name

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Mapping[str, Any]]:
        from sqlalchemy import text

        bound = {k: bind_value(v, self.dialect) for k, v in (params or {}).items()}
        return list(self.conn.execute(text(sql), bound).mappings().all())


def reader(source: Session | Reader) -> Reader:
    """`source` itself when it is a Reader, else a reader over the session."""
    if hasattr(source, "rows"):
        return source  # type: ignore[return-value]
    return SessionReader(source)  # type: ignore[arg-type]


def in_list(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`(:p0, :p1, ...)` and its parameters: both sqlite3 and SQLAlchemy bind them."""
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(f":{name}" for name in params) + ")", params


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


# -- decoding rows -----------------------------------------------------------------------


def _instant(value: Any) -> datetime | None:
    """Aware UTC from a stored instant (text on SQLite, a datetime elsewhere)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)  # type: ignore[no-any-return]


def _json(value: Any) -> Any:
    """A JSON column: text on SQLite through a bare connection, decoded elsewhere."""
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


def _flag(value: Any) -> bool:
    return bool(value)


def _decode(
    cls: type[Any], row: Mapping[str, Any], decoders: Mapping[str, Callable[..., Any]]
) -> Any:
    return cls(**{f.name: decoders.get(f.name, _same)(row[f.name]) for f in fields(cls)})


def _same(value: Any) -> Any:
    return value


@dataclass(slots=True)
class TicketRow:
    """The columns of a ticket the read models use, under the `Ticket` attribute names."""

    id: int
    subject: str
    status: str
    priority: str | None
    team: str | None
    category: str | None
    assignee: str | None
    customer_addr: str | None
    customer_name: str | None
    mailbox: str | None
    message_count: int
    created_at: datetime | None
    updated_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    sla_policy: str | None
    sla_fired: list[str]
    first_response_warn_at: datetime | None
    first_response_due: datetime | None
    next_response_warn_at: datetime | None
    next_response_due: datetime | None
    next_response_cycle: int
    resolution_warn_at: datetime | None
    resolution_due: datetime | None
    resolution_cycle: int
    merged_into: int | None
    previous_ticket: int | None
    csat: str | None


TICKET_COLUMNS = ", ".join(f"ticket.{f.name}" for f in fields(TicketRow))
_TICKET_DECODERS: dict[str, Callable[..., Any]] = {
    f.name: _instant for f in fields(TicketRow) if f.name.endswith(("_at", "_due"))
} | {"sla_fired": _json}


def ticket_row(row: Mapping[str, Any]) -> TicketRow:
    """A `TicketRow` from a row selected with `TICKET_COLUMNS`."""
    return _decode(TicketRow, row, _TICKET_DECODERS)  # type: ignore[no-any-return]


@dataclass(slots=True)
class MessageRow:
    """The columns of a message the read models use, under the `Message` attribute names."""

    id: int
    message_id: str | None
    direction: str
    from_addr: str | None
    from_name: str | None
    to_addrs: list[dict[str, str]]
    cc_addrs: list[dict[str, str]]
    subject: str
    date_at: datetime | None
    date_offset_min: int | None
    received_at: datetime | None
    classification: str | None
    reasons: list[str]
    ticket_id: int | None
    quarantined: bool
    quarantine_reason: str | None
    author: str | None
    bounce: dict[str, Any] | None
    text: str
    attachments: list[dict[str, Any]]


MESSAGE_COLUMNS = ", ".join(f"message.{f.name}" for f in fields(MessageRow))
_MESSAGE_DECODERS: dict[str, Callable[..., Any]] = {
    "date_at": _instant,
    "received_at": _instant,
    "quarantined": _flag,
} | {name: _json for name in ("to_addrs", "cc_addrs", "reasons", "bounce", "attachments")}


def message_row(row: Mapping[str, Any]) -> MessageRow:
    return _decode(MessageRow, row, _MESSAGE_DECODERS)  # type: ignore[no-any-return]


# -- tickets -----------------------------------------------------------------------------


def _mailboxes_by_ticket(r: Reader, ticket_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(ticket_ids):
        ids, params = in_list("t", chunk)
        for row in r.rows(
            "SELECT DISTINCT message.ticket_id, delivery.mailbox FROM message "  # noqa: S608
            f"JOIN delivery ON delivery.message_pk = message.id WHERE message.ticket_id IN {ids}",
            params,
        ):
            ticket_id, mailbox = row["ticket_id"], row["mailbox"]
            if ticket_id is not None and mailbox not in out[ticket_id]:
                out[ticket_id].append(mailbox)
    for names in out.values():
        names.sort()
    return out


def _tags_by_ticket(r: Reader, ticket_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(ticket_ids):
        ids, params = in_list("t", chunk)
        sql = f"SELECT ticket_id, tag FROM ticket_tag WHERE ticket_id IN {ids} ORDER BY tag"  # noqa: S608
        for row in r.rows(sql, params):
            out[row["ticket_id"]].append(row["tag"])
    return out


def ticket_docs(
    source: Session | Reader, tickets: Sequence[Ticket | TicketRow], *, now: datetime
) -> list[TicketDoc]:
    """The documents of `tickets` (ORM tickets or rows), in their order."""
    r = reader(source)
    ids = [t.id for t in tickets if t.id is not None]
    mailboxes = _mailboxes_by_ticket(r, ids)
    tags = _tags_by_ticket(r, ids)
    return [
        _ticket_doc(t, mailboxes.get(t.id or 0, []), tags.get(t.id or 0, []), now) for t in tickets
    ]


def _ticket_doc(
    t: Ticket | TicketRow, mailboxes: list[str], tags: list[str], now: datetime
) -> TicketDoc:
    return {
        "id": t.id,
        "subject": t.subject,
        "status": t.status,
        "priority": t.priority or "normal",
        "team": t.team,
        "category": t.category,
        "assignee": t.assignee,
        "customer": t.customer_addr,
        "customer_name": t.customer_name,
        "mailbox": t.mailbox,
        "mailboxes": mailboxes,
        "tags": tags,
        "message_count": t.message_count,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "first_response_at": iso(t.first_response_at),
        "first_response_due": iso(t.first_response_due),
        "next_response_due": iso(t.next_response_due),
        "resolution_due": iso(t.resolution_due),
        "sla_policy": t.sla_policy,
        "sla_state": sla_state(t, now),
        "merged_into": t.merged_into,
        "previous_ticket": t.previous_ticket,
        "resolved_at": iso(t.resolved_at),
        "closed_at": iso(t.closed_at),
        "csat": t.csat,
        "sla_due": iso(active_due(t)),  # the nearest due still racing: the queue's order
    }


def list_all(session: Session, *, now: datetime) -> list[TicketDoc]:
    """Every ticket, any status and team, oldest first (`ticket list --all --json`)."""
    r = reader(session)
    rows = r.rows(f"SELECT {TICKET_COLUMNS} FROM ticket ORDER BY ticket.id")  # noqa: S608
    return ticket_docs(r, [ticket_row(row) for row in rows], now=now)


def get_ticket(session: Session, ticket_id: int) -> Ticket:
    from inboxd.models import Ticket

    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"no ticket {ticket_id}")
    return ticket


def get_ticket_row(source: Session | Reader, ticket_id: int) -> TicketRow:
    """The ticket `ticket_id` as a row; NotFound when there is none."""
    sql = f"SELECT {TICKET_COLUMNS} FROM ticket WHERE id = :id"  # noqa: S608 - fixed SQL
    rows = reader(source).rows(sql, {"id": ticket_id})
    if not rows:
        raise NotFound(f"no ticket {ticket_id}")
    return ticket_row(rows[0])


# -- messages ----------------------------------------------------------------------------


def sender_date(msg: Message | MessageRow) -> datetime | None:
    """The Date header in the sender's own UTC offset."""
    if msg.date_at is None:
        return None
    return msg.date_at.astimezone(timezone(timedelta(minutes=msg.date_offset_min or 0)))


def message_docs(
    source: Session | Reader, messages: Sequence[Message | MessageRow]
) -> list[dict[str, Any]]:
    r = reader(source)
    ids = [m.id for m in messages if m.id is not None]
    boxes: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for chunk in _chunks(ids):
        pks, params = in_list("m", chunk)
        sql = f"SELECT id, message_pk, mailbox FROM delivery WHERE message_pk IN {pks}"  # noqa: S608
        for row in r.rows(sql, params):
            boxes[row["message_pk"]].append((row["id"], row["mailbox"]))
    return [
        _message_doc(m, [name for _, name in sorted(boxes.get(m.id or 0, []))]) for m in messages
    ]


def _message_doc(m: Message | MessageRow, mailboxes: list[str]) -> dict[str, Any]:
    return {
        "id": m.id,
        "message_id": m.message_id,
        "direction": m.direction,
        "from": m.from_addr,
        "from_name": m.from_name,
        "to": [a["addr"] for a in m.to_addrs],
        "cc": [a["addr"] for a in m.cc_addrs],
        "subject": m.subject,
        "date": iso(sender_date(m)),
        "received_at": iso(m.received_at),
        "mailboxes": mailboxes,
        "classification": m.classification,
        "reasons": list(m.reasons),
        "ticket": m.ticket_id,
        "quarantined": m.quarantined,
        "quarantine_reason": m.quarantine_reason,
        "author": m.author,
        "bounce": m.bounce,
        "text": m.text,
        "attachments": [dict(a) for a in m.attachments],
    }


def ticket_detail(source: Session | Reader, ticket_id: int, *, now: datetime) -> TicketDoc:
    """One ticket with its messages (oldest first) and events (`ticket show --json`).

    Raises NotFound when there is no such ticket; reads only, in the caller's transaction.
    """
    r = reader(source)
    doc = ticket_docs(r, [get_ticket_row(r, ticket_id)], now=now)[0]
    messages = [
        message_row(row)
        for row in r.rows(
            f"SELECT {MESSAGE_COLUMNS} FROM message WHERE message.ticket_id = :id "  # noqa: S608
            "ORDER BY message.received_at, message.id",
            {"id": ticket_id},
        )
    ]
    doc["messages"] = message_docs(r, messages)
    number = 0
    for m in doc["messages"]:  # one numbering over the thread: `ticket attachment ID N`
        for a in m["attachments"]:
            number += 1
            a["number"] = number
    doc["participants"] = [
        {"address": p["address"], "name": p["name"], "role": p["role"]}
        for p in r.rows(
            "SELECT address, name, role FROM participant WHERE ticket_id = :id ORDER BY id",
            {"id": ticket_id},
        )
    ]
    doc["events"] = [
        {
            "at": iso(_instant(e["at"])),
            "actor": e["actor"],
            "kind": e["kind"],
            "data": _json(e["data"]),
        }
        for e in r.rows(
            "SELECT at, actor, kind, data FROM ticket_event WHERE ticket_id = :id ORDER BY id",
            {"id": ticket_id},
        )
    ]
    return doc


def find_messages(session: Session, key: str) -> list[Message]:
    """Messages by Message-ID (angle brackets optional) or by row id (`#12` or `12`)."""
    from sqlmodel import select

    from inboxd.models import Message

    key = key.strip()
    if key.lstrip("#").isdigit():
        msg = session.get(Message, int(key.lstrip("#")))
        if msg is not None:
            return [msg]
    mid = key.strip("<>")
    found = session.exec(select(Message).where(Message.message_id == mid)).all()
    if not found:
        raise NotFound(f"no stored message {key}")
    return list(found)


def message_detail(session: Session, key: str) -> dict[str, Any]:
    msg = find_messages(session, key)[0]
    return message_docs(session, [msg])[0]
