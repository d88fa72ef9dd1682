"""SQLModel tables. Times are aware UTC (`UTCDateTime`); raw mail is the source of truth.

Naming: `*_at` are instants, `*_due` deadlines, `message_id` is the RFC 5322 header
value (without angle brackets) and `id` the row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from inboxd.db import UTCDateTime

STATUSES = ("open", "pending", "resolved", "closed", "merged")
OPEN_STATUSES = ("open", "pending")
DIRECTIONS = ("in", "out", "note")


def _at(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def _json(default: Any) -> Any:
    return Field(default_factory=lambda: type(default)(), sa_type=JSON, nullable=False)


class MailboxState(SQLModel, table=True):
    """Per-mailbox sync cursor and health, written by the worker that owns the mailbox."""

    __tablename__ = "mailbox_state"

    name: str = Field(primary_key=True)
    # IMAP UIDs and UIDVALIDITY are unsigned 32-bit (RFC 3501 2.3.1.1): BIGINT on PostgreSQL.
    uidvalidity: int | None = Field(default=None, sa_type=BigInteger)
    last_uid: int = Field(default=0, sa_type=BigInteger)
    inflight_uid: int | None = Field(default=None, sa_type=BigInteger)  # poison-mail guard
    inflight_count: int = Field(default=0)
    last_sync_at: datetime | None = _at()  # last sync that reached the end of the folder
    last_error: str | None = None
    last_error_at: datetime | None = _at()
    error_kind: str | None = None  # auth | connect | protocol | config
    pending: int = Field(default=0)  # messages above the cursor at the last look
    owner: str | None = None  # daemon id working this mailbox now
    idle: bool = Field(default=False)
    alerted_at: datetime | None = _at()  # admins were mailed about the current problem


class Message(SQLModel, table=True):
    """One mail, inbound, outbound or an internal note, however many mailboxes it reached."""

    __tablename__ = "message"
    __table_args__ = (Index("ix_message_ticket_received", "ticket_id", "received_at"),)

    id: int | None = Field(default=None, primary_key=True)
    message_id: str | None = Field(default=None, unique=True)
    content_hash: str = Field(unique=True)  # sha256 of the raw bytes
    direction: str = Field(default="in")  # in | out | note
    ticket_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("ticket.id"), nullable=True)
    )
    mailbox: str | None = None  # first mailbox it arrived in / was sent from
    author: str | None = None  # agent for out and note
    classification: str | None = None  # human | auto-reply | bounce | bulk | spam | own
    reasons: list[str] = _json([])
    from_addr: str | None = Field(default=None, index=True)
    from_name: str | None = None
    to_addrs: list[dict[str, str]] = _json([])
    cc_addrs: list[dict[str, str]] = _json([])
    reply_to: list[dict[str, str]] = _json([])
    subject: str = ""
    date_at: datetime | None = _at()  # the Date header in UTC
    date_offset_min: int | None = None  # the sender's UTC offset, minutes east
    in_reply_to: list[str] = _json([])
    references: list[str] = _json([])
    text: str = ""
    attachments: list[dict[str, Any]] = _json([])
    size: int = 0
    bounce: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    received_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    quarantined: bool = Field(default=False, index=True)
    quarantine_reason: str | None = None
    attempts: int = Field(default=0)  # processing attempts, to stop a poison mail


class RawMail(SQLModel, table=True):
    """The raw RFC 822 bytes, apart so listings never read them."""

    __tablename__ = "raw_mail"

    message_pk: int = Field(
        sa_column=Column(Integer, ForeignKey("message.id", ondelete="CASCADE"), primary_key=True)
    )
    data: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    purged_at: datetime | None = _at()


class Delivery(SQLModel, table=True):
    """A message as it reached one mailbox: where it was on the server, and how."""

    __tablename__ = "delivery"
    __table_args__ = (UniqueConstraint("message_pk", "mailbox"),)

    id: int | None = Field(default=None, primary_key=True)
    message_pk: int = Field(
        sa_column=Column(
            Integer, ForeignKey("message.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    mailbox: str = Field(index=True)
    source: str = "imap"  # imap | pipe | import
    uidvalidity: int | None = Field(default=None, sa_type=BigInteger)
    uid: int | None = Field(default=None, sa_type=BigInteger)
    delivered_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class ThreadRef(SQLModel, table=True):
    """Every Message-ID a ticket's mail carries or references -> that ticket (threading)."""

    __tablename__ = "thread_ref"

    message_id: str = Field(primary_key=True)
    ticket_id: int = Field(
        sa_column=Column(Integer, ForeignKey("ticket.id"), nullable=False, index=True)
    )


class Ticket(SQLModel, table=True):
    """One conversation."""

    __tablename__ = "ticket"
    __table_args__ = (
        Index("ix_ticket_queue", "status", "team", "first_response_due"),
        Index("ix_ticket_sla_check", "sla_check_at"),
        Index("ix_ticket_customer", "customer_addr"),
        # Least-loaded assignment counts each member's open tickets on every new ticket:
        # with status in the index it reads only those, not the member's whole history.
        Index("ix_ticket_assignee_status", "assignee", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subject: str = ""
    status: str = Field(default="open")
    priority: str = Field(default="normal")
    team: str | None = None
    category: str | None = None
    assignee: str | None = None  # indexed by ix_ticket_assignee_status
    customer_addr: str | None = None
    customer_name: str | None = None
    mailbox: str | None = None  # where it came in; replies go out through it
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    last_customer_at: datetime | None = _at()
    first_response_at: datetime | None = _at()
    resolved_at: datetime | None = _at()
    closed_at: datetime | None = _at()
    # SLA: due instants in UTC, the policy that set them, pause bookkeeping and the next
    # instant the sweep must look at this ticket (one indexed query finds them all).
    sla_policy: str | None = None
    first_response_due: datetime | None = _at()
    next_response_due: datetime | None = _at()
    resolution_due: datetime | None = _at()
    paused_at: datetime | None = _at()
    sla_check_at: datetime | None = _at()
    sla_fired: list[str] = _json([])  # thresholds already fired, e.g. "first_response:warning:0"
    # When each clock's warning is due (warn_at of its target used), and the clock cycles:
    # next_response restarts at each customer follow-up, resolution at each reopen.
    first_response_warn_at: datetime | None = _at()
    next_response_warn_at: datetime | None = _at()
    resolution_warn_at: datetime | None = _at()
    next_response_cycle: int = Field(default=0)
    resolution_cycle: int = Field(default=0)
    merged_into: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("ticket.id"), nullable=True)
    )
    previous_ticket: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("ticket.id"), nullable=True)
    )
    subject_ref: int | None = None  # a ticket tag seen in the subject from a non-participant
    reopened: int = Field(default=0)
    csat: str | None = None  # good | bad
    csat_comment: str | None = None
    message_count: int = Field(default=0)


class Participant(SQLModel, table=True):
    """An address that took part in a ticket (customer, Cc'd people)."""

    __tablename__ = "participant"
    __table_args__ = (UniqueConstraint("ticket_id", "address"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(
        sa_column=Column(Integer, ForeignKey("ticket.id"), nullable=False, index=True)
    )
    address: str = Field(index=True)
    name: str | None = None
    role: str = "cc"  # customer | cc


class TicketTag(SQLModel, table=True):
    __tablename__ = "ticket_tag"

    ticket_id: int = Field(sa_column=Column(Integer, ForeignKey("ticket.id"), primary_key=True))
    tag: str = Field(primary_key=True, index=True)


class TicketEvent(SQLModel, table=True):
    """The audit trail: everything that happened to a ticket, and who or what did it."""

    __tablename__ = "ticket_event"
    # Counting events of one kind (SLA breaches for metrics and reports) reads only the index.
    __table_args__ = (Index("ix_ticket_event_kind", "kind", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(
        sa_column=Column(Integer, ForeignKey("ticket.id"), nullable=False, index=True)
    )
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    actor: str  # "system", an agent address, "rule:<name>"
    kind: str  # created, message, routed, assigned, status, ...
    data: dict[str, Any] = _json({})


class Outbox(SQLModel, table=True):
    """Every outgoing mail is a row first; the sender claims, sends and marks it."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_rate", "kind", "rcpt_key", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(unique=True)  # fixed when written: a resend is recognisable
    ticket_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("ticket.id"), nullable=True, index=True)
    )
    kind: str  # ack | reply | notify | escalation | survey | alert
    mailbox: str | None = None
    smtp: str  # endpoint name from the config
    mail_from: str  # envelope sender
    recipients: list[str] = _json([])
    rcpt_key: str = ""  # primary recipient, lowercased: the ack rate limit counts by it
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: str = Field(default="queued")  # queued | sending | sent | failed
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    not_before: datetime | None = _at()  # e.g. escalations held until business hours
    claimed_by: str | None = None
    claimed_at: datetime | None = _at()
    last_error: str | None = None
    sent_at: datetime | None = _at()
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class Team(SQLModel, table=True):
    """Teams as the config names them, with the durable round-robin position."""

    __tablename__ = "team"

    name: str = Field(primary_key=True)
    active: bool = True
    rr_last: str | None = None  # the agent who got the last round-robin ticket


class Agent(SQLModel, table=True):
    """Agents as the config names them (members and leads)."""

    __tablename__ = "agent"

    address: str = Field(primary_key=True)
    active: bool = True


class Daemon(SQLModel, table=True):
    """A running (or dead) `inboxd run` process and its heartbeat."""

    __tablename__ = "daemon"

    id: str = Field(primary_key=True)
    host: str
    pid: int
    started_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    heartbeat_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    stopped_at: datetime | None = _at()
    mailboxes: list[str] = _json([])


class Incident(SQLModel, table=True):
    """A problem the admins were mailed about (a mailbox failing or stale), and its end.

    `open_key` equals `key` while the incident is open and is NULL once resolved: the
    unique index lets one daemon among many open (and mail) an incident, once.
    """

    __tablename__ = "incident"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True)  # what it is about, e.g. "mailbox:support"
    open_key: str | None = Field(default=None, unique=True)
    kind: str  # auth | config | stale
    detail: str = ""
    opened_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    opened_by: str | None = None  # daemon id
    alert_message_id: str | None = None  # the outbox mail that told the admins
    resolved_at: datetime | None = _at()
    recovery_message_id: str | None = None


class Setting(SQLModel, table=True):
    """Small durable values (the reply-token secret when the config gives none)."""

    __tablename__ = "setting"

    key: str = Field(primary_key=True)
    value: str
