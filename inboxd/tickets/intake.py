"""Intake: store a mail exactly once, then classify, thread, route and open or join a ticket.

The caller owns the transaction (`session`); `receive` never commits. The raw bytes and
the delivery row are written first; processing runs in a SAVEPOINT, so a mail whose
processing fails is still stored, flagged as quarantined, and the batch goes on.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from inboxd.clock import Clock, utcnow
from inboxd.db import insert_ignore
from inboxd.mail.parse import Address, ParsedMail, UnparsableMail, parse
from inboxd.models import (
    Delivery,
    Message,
    Participant,
    RawMail,
    ThreadRef,
    Ticket,
    TicketTag,
)
from inboxd.tickets import assignment, events, merge, threading
from inboxd.tickets.classify import Classification, classify

if TYPE_CHECKING:
    from inboxd.config import Settings
    from inboxd.tickets.routing import Decision, RuleSet

log = logging.getLogger("inboxd.intake")

Outcome = Literal["new-ticket", "joined", "no-ticket", "duplicate", "quarantined"]
Source = Literal["imap", "pipe", "import"]
DEFAULT_MAX_BYTES = 25 * 1024 * 1024
# Kinds that never open a ticket of their own: they join one when they thread, else stay apart.
DEFAULT_TAG = threading.subject_tag_pattern("[#{id}]")
NO_NEW_TICKET = frozenset({"auto-reply", "bounce", "spam", "own"})


@dataclass(frozen=True)
class IntakeConfig:
    """What intake needs from the configuration, resolved once per daemon (or CLI run)."""

    secret: bytes
    own_addresses: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    default_teams: Mapping[str, str] = field(default_factory=dict)
    teams: Mapping[str, assignment.TeamSpec] = field(default_factory=dict)
    blocklist: tuple[str, ...] = ()
    subject_tag: re.Pattern[str] = DEFAULT_TAG
    rules: RuleSet | None = None
    max_message_bytes: int = DEFAULT_MAX_BYTES
    clock: Clock = utcnow

    @classmethod
    def from_settings(
        cls, settings: Settings, *, secret: bytes, rules: RuleSet | None, clock: Clock = utcnow
    ) -> IntakeConfig:
        return cls(
            secret=secret,
            own_addresses=settings.own_addresses(),
            agents=settings.agents(),
            default_teams={mb.name: mb.default_team for mb in settings.mailboxes},
            teams={
                t.name: assignment.TeamSpec(t.name, tuple(t.members), t.assignment)
                for t in settings.teams
            },
            blocklist=tuple(settings.inboxd.sender_blocklist),
            subject_tag=threading.subject_tag_pattern(settings.inboxd.subject_tag),
            rules=rules,
            max_message_bytes=settings.inboxd.max_message_size,
            clock=clock,
        )


@dataclass(frozen=True, slots=True)
class Received:
    """What became of one incoming mail."""

    message_pk: int
    message_id: str | None
    outcome: Outcome
    ticket_id: int | None = None
    classification: str | None = None
    reason: str | None = None  # quarantine reason


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def receive(
    session: Session,
    cfg: IntakeConfig,
    *,
    mailbox: str,
    data: bytes,
    source: Source = "imap",
    uidvalidity: int | None = None,
    uid: int | None = None,
    parse_it: bool = True,
) -> Received:
    """Store `data` as delivered to `mailbox` and process it, unless it is already stored.

    Guarantees: one `message` row per Message-ID (or per content when it has none),
    one `delivery` row per mailbox. `parse_it=False` stores and quarantines without
    parsing (a mail that crashed the process before).
    """
    now = cfg.clock()
    digest = content_hash(data)
    mail: ParsedMail | None = None
    problem: str | None = None
    if not parse_it:
        problem = "crashed the worker repeatedly; stored without parsing"
    elif len(data) > cfg.max_message_bytes:
        problem = f"oversize: {len(data)} bytes > limit {cfg.max_message_bytes}"
    else:
        try:
            mail = parse(data)
        except UnparsableMail as exc:
            problem = f"unparsable: {exc}"
        except Exception as exc:  # noqa: BLE001 - a parser bug quarantines, never stops intake
            problem = f"parser error: {type(exc).__name__}: {exc}"

    message_id = mail.message_id if mail else None
    existing = find_existing(session, message_id=message_id, digest=digest)
    if existing is None:
        try:
            with session.begin_nested():
                msg = _new_message(
                    session, mail, data=data, digest=digest, mailbox=mailbox, now=now
                )
        except IntegrityError:  # another process stored the same mail a moment ago
            existing = find_existing(session, message_id=message_id, digest=digest)
            if existing is None:
                raise
    if existing is not None:
        _add_delivery(session, existing, mailbox, source, uidvalidity, uid, now)
        return Received(
            existing.id or 0,
            existing.message_id,
            "duplicate",
            existing.ticket_id,
            existing.classification,
        )

    _add_delivery(session, msg, mailbox, source, uidvalidity, uid, now)
    assert msg.id is not None
    if mail is None:
        quarantine(msg, problem or "unparsable")
        log.warning("quarantined", extra={"mailbox": mailbox, "message": msg.id, "reason": problem})
        return Received(msg.id, None, "quarantined", reason=msg.quarantine_reason)
    try:
        with session.begin_nested():
            return process(session, cfg, msg, mail, raw=data, mailbox=mailbox)
    except Exception as exc:
        reason = f"processing failed: {type(exc).__name__}: {exc}"
        log.exception("processing failed", extra={"mailbox": mailbox, "message": msg.id})
        session.expire(msg)
        quarantine(msg, reason)
        return Received(msg.id, msg.message_id, "quarantined", reason=reason)


def find_existing(session: Session, *, message_id: str | None, digest: str) -> Message | None:
    if message_id:
        found = session.exec(select(Message).where(Message.message_id == message_id)).first()
        if found is not None:
            return found
    return session.exec(select(Message).where(Message.content_hash == digest)).first()


def quarantine(msg: Message, reason: str) -> None:
    msg.quarantined = True
    msg.quarantine_reason = reason[:500]


def _addresses(addrs: tuple[Address, ...]) -> list[dict[str, str]]:
    return [{"addr": a.addr, "name": a.name} for a in addrs]


def _new_message(
    session: Session,
    mail: ParsedMail | None,
    *,
    data: bytes,
    digest: str,
    mailbox: str,
    now: datetime,
) -> Message:
    msg = Message(content_hash=digest, mailbox=mailbox, size=len(data), received_at=now)
    if mail is not None:
        msg.message_id = mail.message_id
        msg.from_addr = mail.from_.addr if mail.from_ else None
        msg.from_name = mail.from_.name if mail.from_ else None
        msg.to_addrs = _addresses(mail.to)
        msg.cc_addrs = _addresses(mail.cc)
        msg.reply_to = _addresses(mail.reply_to)
        msg.subject = mail.subject
        if mail.date is not None:
            offset = mail.date.utcoffset()
            msg.date_at = mail.date.astimezone(UTC)
            msg.date_offset_min = int(offset.total_seconds() // 60) if offset is not None else 0
        msg.in_reply_to = list(mail.in_reply_to)
        msg.references = list(mail.references)
        msg.text = mail.text
        msg.attachments = [
            {
                "index": a.index,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in mail.attachments
        ]
    session.add(msg)
    session.flush()
    assert msg.id is not None
    session.add(RawMail(message_pk=msg.id, data=data))
    session.flush()
    return msg


def _add_delivery(
    session: Session,
    msg: Message,
    mailbox: str,
    source: Source,
    uidvalidity: int | None,
    uid: int | None,
    now: datetime,
) -> None:
    insert_ignore(
        session,
        Delivery,
        [
            {
                "message_pk": msg.id,
                "mailbox": mailbox,
                "source": source,
                "uidvalidity": uidvalidity,
                "uid": uid,
                "delivered_at": now,
            }
        ],
    )


# -- processing ---------------------------------------------------------------------


def process(
    session: Session,
    cfg: IntakeConfig,
    msg: Message,
    mail: ParsedMail,
    *,
    raw: bytes,
    mailbox: str,
) -> Received:
    """Classify, thread and open or join a ticket for a freshly stored inbound mail."""
    assert msg.id is not None
    verdict = classify(mail, raw, own_addresses=cfg.own_addresses, blocklist=cfg.blocklist)
    msg.classification = verdict.kind
    msg.reasons = list(verdict.reasons)

    if verdict.kind == "bounce":
        return _attach_bounce(session, cfg, msg, verdict)

    match = threading.find_ticket(
        session,
        mail,
        secret=cfg.secret,
        own_addresses=cfg.own_addresses,
        subject_tag=cfg.subject_tag,
    )
    if match.ticket_id is not None:
        ticket = threading.follow_merges(session, match.ticket_id)
        for other in match.linked:
            ticket = _join_conversations(session, cfg, ticket, other)
        if ticket.status != "closed" or verdict.kind in NO_NEW_TICKET:
            _join(session, cfg, ticket, msg, mail, verdict)
            return Received(msg.id, msg.message_id, "joined", ticket.id, verdict.kind)
        previous: int | None = ticket.id  # a reply to a closed ticket opens a new, linked one
    else:
        previous = None

    if verdict.kind in NO_NEW_TICKET:
        return Received(msg.id, msg.message_id, "no-ticket", None, verdict.kind)
    ticket = _open_ticket(
        session,
        cfg,
        msg,
        mail,
        mailbox=mailbox,
        previous=previous,
        subject_ref=match.subject_ref,
        how=match.how,
    )
    return Received(msg.id, msg.message_id, "new-ticket", ticket.id, verdict.kind)


def _join_conversations(session: Session, cfg: IntakeConfig, parent: Ticket, linked: int) -> Ticket:
    """This mail's ids point at `parent` and at another ticket (its replies came first, or
    its References span both): one conversation.

    The younger ticket merges into the older one, unless an agent already answered there
    or either is closed; then both stay, linked by events.
    """
    other = threading.follow_merges(session, linked)
    if other.id == parent.id:
        return parent
    older, younger = sorted((parent, other), key=lambda t: t.id or 0)
    assert older.id is not None and younger.id is not None
    now = cfg.clock()
    if "closed" in (older.status, younger.status) or merge.has_outbound(session, younger.id):
        for a, b in ((older, younger), (younger, older)):
            events.record(
                session,
                ticket_id=a.id or 0,
                at=now,
                actor=events.SYSTEM,
                kind="related",
                ticket=b.id,
                reason="one mail links both",
            )
        return parent
    merge.merge(
        session,
        source=younger,
        into=older,
        actor=events.SYSTEM,
        at=now,
        reason="a late parent linked both conversations",
    )
    return older


def _join(
    session: Session,
    cfg: IntakeConfig,
    ticket: Ticket,
    msg: Message,
    mail: ParsedMail,
    verdict: Classification,
) -> None:
    assert ticket.id is not None
    now = cfg.clock()
    msg.ticket_id = ticket.id
    ticket.message_count += 1
    ticket.updated_at = now
    threading.remember_ids(
        session, ticket.id, [mail.message_id, *mail.in_reply_to, *mail.references]
    )
    if verdict.kind not in ("human", "bulk"):
        return
    sender = mail.from_.addr if mail.from_ else None
    from_customer = sender is not None and sender not in cfg.agents
    if from_customer:
        ticket.last_customer_at = now
        _add_participants(session, cfg, ticket.id, mail, customer=None)
    if ticket.status == "resolved" and from_customer:
        ticket.status = "open"
        ticket.resolved_at = None
        ticket.reopened += 1
        events.record(
            session,
            ticket_id=ticket.id,
            at=now,
            actor=events.SYSTEM,
            kind="reopened",
            reason="customer replied",
            message_id=mail.message_id,
        )
    elif ticket.status == "pending" and from_customer:
        ticket.status = "open"
        events.record(
            session,
            ticket_id=ticket.id,
            at=now,
            actor=events.SYSTEM,
            kind="status",
            old="pending",
            new="open",
            reason="customer replied",
        )


def _open_ticket(
    session: Session,
    cfg: IntakeConfig,
    msg: Message,
    mail: ParsedMail,
    *,
    mailbox: str,
    previous: int | None,
    subject_ref: int | None,
    how: str,
) -> Ticket:
    now = cfg.clock()
    customer = mail.from_
    ticket = Ticket(
        subject=mail.subject,
        customer_addr=customer.addr if customer else None,
        customer_name=(customer.name or None) if customer else None,
        mailbox=mailbox,
        created_at=now,
        updated_at=now,
        last_customer_at=now,
        previous_ticket=previous,
        subject_ref=subject_ref,
        message_count=1,
    )
    session.add(ticket)
    session.flush()
    assert ticket.id is not None
    msg.ticket_id = ticket.id
    threading.remember_ids(
        session, ticket.id, [mail.message_id, *mail.in_reply_to, *mail.references]
    )
    _add_participants(session, cfg, ticket.id, mail, customer=customer)
    events.record(
        session,
        ticket_id=ticket.id,
        at=now,
        actor=events.SYSTEM,
        kind="created",
        mailbox=mailbox,
        message_id=mail.message_id,
        previous_ticket=previous,
        subject_ref=subject_ref,
    )
    decision = _route(cfg, mail, mailbox)
    apply_decision(session, cfg, ticket, decision, now=now)
    return ticket


def _route(cfg: IntakeConfig, mail: ParsedMail, mailbox: str) -> Decision:
    from inboxd.tickets.routing import Decision, route

    default_team = cfg.default_teams.get(mailbox, "")
    if cfg.rules is None:
        return Decision(
            team=default_team,
            category=None,
            priority="normal",
            tags=(),
            sla=None,
            assign=None,
            matched=(),
            set_by={"team": "default"},
        )
    return route(cfg.rules, mail, mailbox=mailbox, default_team=default_team)


def apply_decision(
    session: Session, cfg: IntakeConfig, ticket: Ticket, decision: Decision, *, now: datetime
) -> None:
    """Set team, category, priority, tags and SLA policy; assign; record why."""
    assert ticket.id is not None
    ticket.team = decision.team or None
    ticket.category = decision.category
    ticket.priority = decision.priority
    ticket.sla_policy = decision.sla
    insert_ignore(session, TicketTag, [{"ticket_id": ticket.id, "tag": t} for t in decision.tags])
    events.record(
        session,
        ticket_id=ticket.id,
        at=now,
        actor=events.SYSTEM,
        kind="routed",
        team=ticket.team,
        category=decision.category,
        priority=decision.priority,
        tags=list(decision.tags),
        sla=decision.sla,
        rules=list(decision.matched),
        set_by=dict(decision.set_by),
    )
    team = cfg.teams.get(ticket.team or "")
    if team is None:
        return
    agent = assignment.choose(session, team, strategy=decision.assign)
    if agent is not None:
        ticket.assignee = agent
        events.record(
            session,
            ticket_id=ticket.id,
            at=now,
            actor=events.SYSTEM,
            kind="assigned",
            assignee=agent,
            strategy=decision.assign or team.strategy,
            rule=decision.set_by.get("assign"),
        )


def _add_participants(
    session: Session,
    cfg: IntakeConfig,
    ticket_id: int,
    mail: ParsedMail,
    *,
    customer: Address | None,
) -> None:
    rows: list[dict[str, object]] = []
    if customer is not None:
        rows.append(
            {
                "ticket_id": ticket_id,
                "address": customer.addr,
                "name": customer.name or None,
                "role": "customer",
            }
        )
    others = [*mail.reply_to, *([mail.from_] if mail.from_ else []), *mail.to, *mail.cc]
    for a in others:
        if a.addr and a.addr not in cfg.own_addresses and a.addr not in cfg.agents:
            rows.append(
                {"ticket_id": ticket_id, "address": a.addr, "name": a.name or None, "role": "cc"}
            )
    insert_ignore(session, Participant, rows)


def _attach_bounce(
    session: Session, cfg: IntakeConfig, msg: Message, verdict: Classification
) -> Received:
    """A bounce joins the ticket of the mail that bounced, as a delivery failure."""
    assert msg.id is not None
    info = verdict.bounce
    failed = [
        {
            "address": r.address,
            "status": r.status,
            "temporary": r.temporary,
            "diagnostic": r.diagnostic,
        }
        for r in (info.recipients if info else ())
    ]
    original = info.original_message_id if info else None
    msg.bounce = {
        "original_message_id": original,
        "recipients": failed,
        "temporary": bool(info and info.temporary),
    }
    ticket_id = None
    if original:  # every id we sent or received is in thread_ref
        ticket_id = session.exec(
            select(ThreadRef.ticket_id).where(ThreadRef.message_id == original)
        ).first()
    if ticket_id is None:
        return Received(msg.id, msg.message_id, "no-ticket", None, "bounce")
    ticket = threading.follow_merges(session, ticket_id)
    assert ticket.id is not None
    msg.ticket_id = ticket.id
    ticket.message_count += 1
    events.record(
        session,
        ticket_id=ticket.id,
        at=cfg.clock(),
        actor=events.SYSTEM,
        kind="delivery-failure",
        original_message_id=original,
        recipients=failed,
        message=msg.id,
    )
    return Received(msg.id, msg.message_id, "joined", ticket.id, "bounce")
