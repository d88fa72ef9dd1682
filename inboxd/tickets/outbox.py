"""The outbox, domain side: every outgoing mail is a row first, in the caller's transaction.

`enqueue` fixes the Message-ID when the row is written, so a rare resend after a crash
is recognisable downstream, and records it for threading: a reply to anything inboxd
sent lands on its ticket. Customer-facing mail (acks, replies, surveys) is also kept as
an outbound message of the ticket, so the conversation shows it. Delivery is
`inboxd.mail.smtp`'s job.
"""

from __future__ import annotations

import email.policy
import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import and_, bindparam, func, or_, type_coerce, update
from sqlalchemy import insert as sa_insert
from sqlalchemy.orm import defer
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from inboxd.db import Prepared, UTCDateTime, model_defaults
from inboxd.errors import InboxdError, NotFound
from inboxd.mail.compose import Rendered, message_id_of
from inboxd.models import Daemon, Message, Outbox, RawMail, Ticket
from inboxd.tickets import events, threading
from inboxd.tickets.views import iso

if TYPE_CHECKING:
    from inboxd.config import Mailbox

CUSTOMER_KINDS = frozenset({"ack", "reply", "survey"})  # part of the conversation
KINDS = CUSTOMER_KINDS | {"notify", "escalation", "alert"}


@dataclass(frozen=True, slots=True)
class Queued:
    """The outbox row `enqueue` wrote."""

    id: int
    message_id: str
    rcpt_key: str
    recipients: tuple[str, ...]
    data: bytes


def enqueue(
    session: Session,
    *,
    kind: str,
    message: EmailMessage | Rendered,
    smtp: str,
    now: datetime,
    mailbox: str | None = None,
    ticket: Ticket | None = None,
    author: str | None = None,
    not_before: datetime | None = None,
    remember: bool = True,
    counted: bool = False,
) -> Queued:
    """Queue `message` (which carries its Message-ID) for the SMTP endpoint `smtp`.

    Core INSERTs on the session's connection: every acknowledgement passes here on the
    intake path. A `Rendered` mail (`compose.render`) is recorded from what was composed;
    an `EmailMessage` is read back from its headers. `remember=False` leaves recording
    the Message-ID for threading to the caller (with the ticket's other ids);
    `counted=True`: the ticket's `message_count` already counts this mail (a new
    ticket's acknowledgement, written with the ticket).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown outbox kind {kind!r}")
    mail = message if isinstance(message, Rendered) else _rendered_from(message)
    recipients = mail.recipients
    if not recipients:
        raise ValueError("an outgoing mail needs a recipient")
    row_id = _INSERT_OUTBOX.scalar(
        session,
        model_defaults(Outbox)
        | {
            "message_id": mail.message_id,
            "ticket_id": ticket.id if ticket else None,
            "kind": kind,
            "mailbox": mailbox,
            "smtp": smtp,
            "mail_from": mail.mail_from,
            "recipients": recipients,
            "rcpt_key": recipients[0],
            "data": mail.data,
            "next_attempt_at": not_before or now,
            "not_before": not_before,
            "created_at": now,
        },
    )
    if ticket is not None and ticket.id is not None:
        if remember:
            threading.remember_ids(session, ticket.id, [mail.message_id])
        if kind in CUSTOMER_KINDS:
            _record_outbound(session, ticket, mail, mailbox, author, now, counted=counted)
    return Queued(row_id, mail.message_id, recipients[0], tuple(recipients), mail.data)


def queue_for_customer(
    session: Session,
    *,
    kind: str,
    mail: Rendered,
    mailbox: Mailbox,
    ticket: Ticket,
    now: datetime,
    event: str | None,
    remember: bool = True,
    counted: bool = False,
) -> Queued:
    """Queue an automatic mail to the ticket's customer and record `event` on the ticket
    (None: the caller records it, with others of the same change; so with `remember`)."""
    assert ticket.id is not None
    row = enqueue(
        session,
        kind=kind,
        message=mail,
        smtp=mailbox.smtp,
        now=now,
        mailbox=mailbox.name,
        ticket=ticket,
        remember=remember,
        counted=counted,
    )
    if event is not None:
        events.record(
            session,
            ticket_id=ticket.id,
            at=now,
            actor=events.SYSTEM,
            kind=event,
            to=row.rcpt_key,
            message_id=row.message_id,
        )
    return row


def _rendered_from(message: EmailMessage) -> Rendered:
    """The facts of a composed `EmailMessage`; a Bcc header becomes envelope only."""
    bcc = getaddresses([str(v) for v in message.get_all("Bcc", [])])
    if bcc:
        del message["Bcc"]  # envelope only, never a header
    sender = getaddresses([str(message["From"])])[0]
    body = message.get_body(preferencelist=("plain",))
    return Rendered(
        message_id=message_id_of(message),
        mail_from=sender[1],
        sender_name=sender[0],
        to=tuple(a for _, a in getaddresses([str(v) for v in message.get_all("To", [])]) if a),
        cc=tuple(a for _, a in getaddresses([str(v) for v in message.get_all("Cc", [])]) if a),
        subject=str(message["Subject"] or ""),
        text=body.get_content() if body is not None else "",
        data=message.as_bytes(),
        bcc=tuple(a for _, a in bcc if a),
    )


def _record_outbound(
    session: Session,
    ticket: Ticket,
    mail: Rendered,
    mailbox: str | None,
    author: str | None,
    now: datetime,
    *,
    counted: bool = False,
) -> None:
    """The mail as an outbound message of the ticket: the conversation shows it."""
    assert ticket.id is not None
    pk = _INSERT_MESSAGE.scalar(
        session,
        model_defaults(Message)
        | {
            "message_id": mail.message_id,
            "content_hash": hashlib.sha256(mail.data).hexdigest(),
            "direction": "out",
            "ticket_id": ticket.id,
            "mailbox": mailbox,
            "author": author,
            "from_addr": mail.mail_from.lower(),
            "from_name": mail.sender_name or None,
            "to_addrs": [{"addr": a.lower(), "name": ""} for a in mail.to],
            "cc_addrs": [{"addr": a.lower(), "name": ""} for a in mail.cc],
            "subject": mail.subject,
            "date_at": now,
            "date_offset_min": 0,
            "text": mail.text,
            "size": len(mail.data),
            "received_at": now,
            "classification": "own",
        },
    )
    _INSERT_RAW.rows(session, {"message_pk": pk, "data": mail.data, "purged_at": None})
    if not counted:
        _count(session, ticket, _COUNT_UP, now)


def count_down(session: Session, ticket: Ticket) -> None:
    """A mail counted in the ticket's `message_count` ahead was not written after all."""
    _count(session, ticket, _COUNT_DOWN, ticket.updated_at)


def _count(session: Session, ticket: Ticket, statement: Prepared, at: datetime) -> None:
    if session.is_modified(ticket):  # a pending change would be lost to the line below
        session.flush()
    count = statement.scalar(session, {"ticket_pk": ticket.id, "at": at})
    # The ticket object stays true to the row without becoming dirty.
    set_committed_value(ticket, "message_count", count)
    set_committed_value(ticket, "updated_at", at)


_INSERT_OUTBOX = Prepared(sa_insert(Outbox.__table__).returning(Outbox.__table__.c.id))  # type: ignore[attr-defined]
_INSERT_MESSAGE = Prepared(sa_insert(Message.__table__).returning(Message.__table__.c.id))  # type: ignore[attr-defined]
_INSERT_RAW = Prepared(sa_insert(RawMail.__table__))  # type: ignore[attr-defined]


def _count_by(step: int) -> Prepared:
    ticket = Ticket.__table__  # type: ignore[attr-defined]
    return Prepared(
        update(ticket)
        .where(ticket.c.id == bindparam("ticket_pk"))
        .values(message_count=ticket.c.message_count + step, updated_at=bindparam("at"))
        .returning(ticket.c.message_count)
    )


_COUNT_UP, _COUNT_DOWN = _count_by(1), _count_by(-1)


@dataclass(frozen=True, slots=True)
class Backlog:
    """Outgoing mail not sent yet. A row held by `not_before` (an escalation waiting for
    business hours) is held, not waiting: its wait starts when the hold ends."""

    queued: int
    held: int  # of the queued, not due yet
    sending: int
    failed: int
    oldest_due_at: datetime | None  # since when the longest-waiting due mail waits


def backlog(session: Session, now: datetime) -> Backlog:
    """What `inboxd status` and the metrics report about the outbox."""
    counts = {"queued": 0, "sending": 0, "failed": 0}
    counts |= dict(
        session.exec(
            select(Outbox.status, func.count())
            .where(col(Outbox.status).in_(list(counts)))
            .group_by(col(Outbox.status))
        ).all()
    )
    held = session.exec(
        select(func.count()).where(col(Outbox.status) == "queued", col(Outbox.not_before) > now)
    ).one()
    waiting_since = func.coalesce(col(Outbox.not_before), col(Outbox.created_at))
    oldest = session.exec(
        select(type_coerce(func.min(waiting_since), UTCDateTime())).where(
            col(Outbox.status).in_(("queued", "sending")),
            or_(col(Outbox.not_before).is_(None), col(Outbox.not_before) <= now),
        )
    ).one()
    return Backlog(
        int(counts["queued"]), int(held), int(counts["sending"]), int(counts["failed"]), oldest
    )


# -- delivery bookkeeping --------------------------------------------------------------
#
# The sender (`inboxd.mail.smtp`) claims rows in one short transaction, sends outside any
# transaction, and records each attempt in another. These functions decide what the
# row becomes; they never open a socket and never commit.

STATUSES = ("queued", "sending", "sent", "failed")
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(days=3)  # of transient failures, counted from when it was due
GIVE_UP_MIN_ATTEMPTS = 5  # a row due long ago (daemon was down) still gets a fair try
OWNER_DEAD_AFTER = timedelta(seconds=60)  # heartbeat age of a claimer we call dead
CLAIM_TIMEOUT = timedelta(minutes=10)  # a claim by an owner without a daemon row
MAX_ERROR = 1000
_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class Claim:
    """A row this process now sends: everything but the bytes (fetched per send)."""

    id: int
    message_id: str
    kind: str
    ticket_id: int | None
    smtp: str
    mail_from: str
    recipients: tuple[str, ...]
    attempts: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt achieved, as the SMTP client saw it.

    `error` is a whole-message failure (connect, MAIL FROM, DATA, a timeout), permanent
    when the server answered 5xx. Otherwise the server took the message for `accepted`
    and answered RCPT for the others: 4xx in `deferred` (tried again), 5xx in `refused`.
    """

    accepted: tuple[str, ...] = ()
    deferred: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    permanent: bool = False


Result = Literal["sent", "deferred", "failed", "skipped"]


def retry_delay(attempts: int) -> timedelta:
    """Capped exponential backoff with jitter: ~30 s, 1 min, 2 min ... 1 h (half random)."""
    step = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempts - 1))
    return step / 2 + step * (random.random() / 2)


def _due(now: datetime) -> Any:
    not_before = col(Outbox.not_before)
    return and_(
        col(Outbox.status) == "queued",
        or_(not_before.is_(None), not_before <= now),
    )


def claim_due(
    session: Session,
    *,
    owner: str,
    now: datetime,
    limit: int,
    ids: Sequence[int] | None = None,
) -> list[Claim]:
    """Mark up to `limit` due rows `sending` for `owner` and return them, oldest due first.

    With `ids`, those queued rows are claimed whatever their backoff (`flush`). Rows
    another transaction holds are skipped (PostgreSQL SKIP LOCKED; SQLite's BEGIN
    IMMEDIATE serialises claimers), so no row is handed to two senders.
    """
    where = _due(now)
    if ids is None:
        where = and_(where, col(Outbox.next_attempt_at) <= now)
    else:
        where = and_(where, col(Outbox.id).in_(list(ids)))
    rows = session.exec(
        select(Outbox)
        .options(defer(Outbox.data))  # type: ignore[arg-type]  # bytes come per send
        .where(where)
        .order_by(col(Outbox.next_attempt_at), col(Outbox.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    claims: list[Claim] = []
    for row in rows:
        row.status, row.claimed_by, row.claimed_at = "sending", owner, now
        session.add(row)
        assert row.id is not None
        claims.append(
            Claim(
                id=row.id,
                message_id=row.message_id,
                kind=row.kind,
                ticket_id=row.ticket_id,
                smtp=row.smtp,
                mail_from=row.mail_from,
                recipients=tuple(row.recipients),
                attempts=row.attempts,
            )
        )
    session.flush()
    return claims


def queued_ids(session: Session, *, now: datetime) -> list[int]:
    """Every queued row not held by `not_before`, whatever its backoff (for `flush`)."""
    return [
        i
        for i in session.exec(
            select(Outbox.id).where(_due(now)).order_by(col(Outbox.next_attempt_at))
        ).all()
        if i is not None
    ]


def next_due(session: Session) -> datetime | None:
    """When the earliest queued row falls due (its backoff or its hold, the later)."""
    rows = session.exec(
        select(Outbox.next_attempt_at, Outbox.not_before)
        .where(col(Outbox.status) == "queued")
        .order_by(col(Outbox.next_attempt_at))
        .limit(1)
    ).all()
    if not rows:
        return None
    at, not_before = rows[0]
    return max(at, not_before) if not_before is not None else at


def start_send(session: Session, *, row_id: int, owner: str, now: datetime) -> bytes | None:
    """The bytes to send, refreshing the claim; None when the row is no longer ours.

    A claim may have been taken back (this process looked dead): then it is not sent.
    """
    data = session.exec(
        update(Outbox)
        .where(_held_by(row_id, owner))
        .values(claimed_at=now)
        .returning(col(Outbox.data))
    ).first()
    return None if data is None else bytes(data[0])


def _held_by(row_id: int, owner: str) -> Any:
    return and_(
        col(Outbox.id) == row_id,
        col(Outbox.status) == "sending",
        col(Outbox.claimed_by) == owner,
    )


def requeue_stale(
    session: Session,
    *,
    now: datetime,
    dead_after: timedelta = OWNER_DEAD_AFTER,
    claim_timeout: timedelta = CLAIM_TIMEOUT,
) -> list[int]:
    """Put back rows whose claimer died mid-send; returns their ids.

    A claimer is dead when its daemon row stopped or its heartbeat is older than
    `dead_after`; a claimer without a daemon row (a test, a tool) when its claim is
    older than `claim_timeout`. The row may have reached the server already: the
    Message-ID fixed at enqueue makes that duplicate recognisable.
    """
    rows = session.exec(
        select(Outbox)
        .options(defer(Outbox.data))  # type: ignore[arg-type]
        .where(col(Outbox.status) == "sending")
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    owners = {r.claimed_by for r in rows if r.claimed_by}
    daemons = {
        d.id: d for d in session.exec(select(Daemon).where(col(Daemon.id).in_(owners))).all()
    }
    stale: list[int] = []
    for row in rows:
        d = daemons.get(row.claimed_by or "")
        if d is not None:
            dead = d.stopped_at is not None or now - d.heartbeat_at > dead_after
        else:
            dead = row.claimed_at is None or now - row.claimed_at > claim_timeout
        if not dead:
            continue
        row.last_error = _clip(
            f"requeued: {row.claimed_by or 'a sender'} stopped while sending it "
            "(the server may have it already)"
        )
        _requeue(row, now)
        session.add(row)
        assert row.id is not None
        stale.append(row.id)
    session.flush()
    return stale


def release(session: Session, *, owner: str, now: datetime) -> list[int]:
    """Put back every row `owner` still holds (a graceful stop); returns their ids."""
    rows = session.exec(
        select(Outbox)
        .options(defer(Outbox.data))  # type: ignore[arg-type]
        .where(col(Outbox.status) == "sending", col(Outbox.claimed_by) == owner)
    ).all()
    for row in rows:
        _requeue(row, now)
        session.add(row)
    session.flush()
    return [r.id for r in rows if r.id is not None]


def _requeue(row: Outbox, now: datetime) -> None:
    row.status, row.claimed_by, row.claimed_at = "queued", None, None
    row.next_attempt_at = max(now, row.not_before) if row.not_before else now


def record_attempt(
    session: Session, *, row_id: int, owner: str, now: datetime, attempt: Attempt
) -> Result:
    """Turn one attempt into the row's next state; a final failure becomes a ticket event.

    sent: the server took it for every remaining recipient (5xx refusals of some are
    noted). deferred: a transient failure, or 4xx for some recipients, which stay the
    row's recipients; after GIVE_UP_AFTER it is failed instead. failed: 5xx for the
    message or every recipient. "skipped": the row is not ours any more (nothing
    changed, unless it was delivered and lies queued: then it is marked sent).
    """
    if attempt.accepted and not (attempt.error or attempt.deferred or attempt.refused):
        # The common case in one statement: sent to every recipient, by its holder.
        done = session.exec(
            update(Outbox)
            .where(_held_by(row_id, owner))
            .values(
                status="sent",
                sent_at=now,
                attempts=col(Outbox.attempts) + 1,
                claimed_by=None,
                claimed_at=None,
                last_error=None,
            )
            .returning(col(Outbox.id))
        ).first()
        if done is not None:
            return "sent"
    row = session.get(Outbox, row_id)
    if row is None:
        return "skipped"
    delivered = bool(attempt.accepted)
    if row.status != "sending" or row.claimed_by != owner:
        if delivered and row.status == "queued":  # taken back from us, yet it went out
            note = _refusals(attempt) if attempt.refused or attempt.deferred else None
            _mark_sent(row, now, note)
            session.add(row)
            return "sent"
        return "skipped"
    row.attempts += 1
    row.claimed_by, row.claimed_at = None, None
    result: Result
    if attempt.error is not None:
        if attempt.permanent:
            _mark_failed(session, row, now, attempt.error, list(row.recipients))
            result = "failed"
        else:
            result = _defer(session, row, now, attempt.error)
    else:
        if attempt.refused:
            _failure_event(
                session,
                row,
                now,
                _refusals(attempt, only_refused=True),
                attempt.refused,
                partial=delivered or bool(attempt.deferred),
            )
        if attempt.deferred:
            row.recipients = list(attempt.deferred)
            if delivered:
                row.sent_at = row.sent_at or now  # first copies went out now
            result = _defer(session, row, now, _refusals(attempt))
        elif delivered:
            _mark_sent(row, now, _refusals(attempt) if attempt.refused else None)
            result = "sent"
        else:  # every recipient refused for good; the event above names them
            row.status, row.last_error = "failed", _clip(_refusals(attempt))
            result = "failed"
    session.add(row)
    session.flush()
    return result


def _mark_sent(row: Outbox, now: datetime, note: str | None) -> None:
    row.status, row.sent_at = "sent", now
    row.claimed_by, row.claimed_at = None, None
    row.last_error = _clip(note) if note else None


def _defer(session: Session, row: Outbox, now: datetime, error: str) -> Result:
    since = row.not_before or row.created_at
    if now - since >= GIVE_UP_AFTER and row.attempts >= GIVE_UP_MIN_ATTEMPTS:
        reason = f"gave up after {row.attempts} attempts: {error}"
        _mark_failed(session, row, now, reason, list(row.recipients), temporary=True)
        return "failed"
    row.status, row.last_error = "queued", _clip(error)
    row.next_attempt_at = now + retry_delay(row.attempts)
    return "deferred"


def _mark_failed(
    session: Session,
    row: Outbox,
    now: datetime,
    reason: str,
    recipients: list[str],
    *,
    temporary: bool = False,
) -> None:
    row.status, row.last_error = "failed", _clip(reason)
    _failure_event(
        session, row, now, reason, dict.fromkeys(recipients, reason), temporary=temporary
    )


def _failure_event(
    session: Session,
    row: Outbox,
    now: datetime,
    reason: str,
    recipients: dict[str, str],
    *,
    partial: bool = False,
    temporary: bool = False,
) -> None:
    """A `delivery-failure` event on the row's ticket (followed through merges), if any."""
    if row.ticket_id is None:
        return
    ticket = threading.follow_merges(session, row.ticket_id)
    assert ticket.id is not None
    events.record(
        session,
        ticket_id=ticket.id,
        at=now,
        actor=events.SYSTEM,
        kind="delivery-failure",
        mail_kind=row.kind,  # `kind` names the event itself
        outbox=row.id,
        original_message_id=row.message_id,
        reason=_clip(reason),
        partial=partial,
        recipients=[
            {
                "address": addr,
                "status": _enhanced(why),
                "temporary": temporary,
                "diagnostic": _clip(why),
            }
            for addr, why in recipients.items()
        ],
    )


def _refusals(attempt: Attempt, *, only_refused: bool = False) -> str:
    parts = [f"{a}: {why}" for a, why in attempt.refused.items()]
    if not only_refused:
        parts += [f"{a}: {why} (will retry)" for a, why in attempt.deferred.items()]
    head = "recipient refused" if len(parts) == 1 else "recipients refused"
    return f"{head}: " + "; ".join(parts)


def _enhanced(reply: str) -> str | None:
    """The RFC 3463 status in a reply text (`550 5.1.1 ...` -> `5.1.1`), if it has one."""
    match = _ENHANCED.match(reply.partition(" ")[2] if reply[:3].isdigit() else reply)
    return match.group(1) if match else None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


# -- what admins see and do ---------------------------------------------------------------

HEADER_PREFIX = 32_768  # bytes read for the subject: listings never load whole messages


def listing(
    session: Session, *, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Outbox rows, newest first, with the subject from the stored headers (`outbox list`)."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown outbox status {status!r}")
    head = func.substr(col(Outbox.data), 1, HEADER_PREFIX)
    query = select(Outbox, head).order_by(col(Outbox.id).desc()).limit(limit)
    if status is not None:
        query = query.where(col(Outbox.status) == status)
    out: list[dict[str, Any]] = []
    for row, prefix in session.exec(query.options(defer(Outbox.data))).all():  # type: ignore[arg-type]
        due = None
        if row.status == "queued":
            due = max(row.next_attempt_at, row.not_before or row.next_attempt_at)
        out.append(
            {
                "id": row.id,
                "kind": row.kind,
                "ticket": row.ticket_id,
                "to": list(row.recipients),
                "subject": subject_of(bytes(prefix or b"")),
                "status": row.status,
                "attempts": row.attempts,
                "next_attempt_at": iso(due),
                "last_error": row.last_error,
                "created_at": iso(row.created_at),
                "sent_at": iso(row.sent_at),
                "message_id": row.message_id,
                "smtp": row.smtp,
                "claimed_by": row.claimed_by,
            }
        )
    return out


def subject_of(data: bytes) -> str:
    """The decoded Subject of a stored message, reading its headers only."""
    end = data.find(b"\n\n")
    head = data if end < 0 else data[: end + 1]
    try:
        parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(head)
        return str(parsed.get("Subject", "") or "")
    except Exception:  # noqa: BLE001 - a listing shows what it can of a broken header
        return ""


def retry(session: Session, *, row_id: int, now: datetime) -> str:
    """Make a queued or failed row due now (`outbox retry`); returns the status it had.

    Raises NotFound for an unknown id, InboxdError for a sent row or one being sent.

    `not_before` becomes now: a hold is lifted, and the give-up clock starts again.
    """
    row = session.get(Outbox, row_id)
    if row is None:
        raise NotFound(f"no outbox row {row_id} (see `inboxd outbox list`)")
    if row.status == "sent":
        raise InboxdError(
            f"outbox row {row_id} was sent at {iso(row.sent_at)}; it is not sent again"
        )
    if row.status == "sending":
        raise InboxdError(
            f"outbox row {row_id} is being sent by {row.claimed_by} "
            "(it is requeued by itself if that process died)"
        )
    was = row.status
    row.status, row.not_before, row.next_attempt_at = "queued", now, now
    session.add(row)
    session.flush()
    return was
