"""Intake: store a mail exactly once, then classify, thread, route and open or join a ticket.

The caller owns the transaction (`session`); `receive` never commits. The raw bytes and
the delivery row are written first; processing runs in a SAVEPOINT, so a mail whose
processing fails is still stored, flagged as quarantined, and the batch goes on.
`store_batch` (the IMAP worker, import) owns one transaction a batch, and first tries it
without those savepoints: they cost a fifth of the time, and a batch seldom needs them.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import bindparam, or_
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from inboxd import records
from inboxd.clock import Clock, utcnow
from inboxd.db import Prepared, insert_ignore, model_defaults, savepoint, session_scope, upsert
from inboxd.mail.parse import Address, Parsed, ParsedMail, parse_for_intake
from inboxd.mail.text import reply_text
from inboxd.models import (
    Delivery,
    Message,
    Participant,
    RawMail,
    ThreadRef,
    Ticket,
    TicketTag,
)
from inboxd.tickets import (
    ack,
    assignment,
    events,
    merge,
    notify,
    searchindex,
    sla,
    survey,
    threading,
)
from inboxd.tickets.classify import Classification, classify, requester, screened

if TYPE_CHECKING:
    from sqlalchemy import Engine

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
    parse_timeout: float | None = None  # seconds; enforced where a parser process runs
    clock: Clock = utcnow
    settings: Settings | None = None  # None: no SLA clocks, no acknowledgements

    def reader(self) -> Callable[[bytes], Parsed]:
        """What the parser process does with each fetched mail for this configuration:
        parse, classify and hash it (`classify.screened`; picklable)."""
        return functools.partial(
            screened,
            max_bytes=self.max_message_bytes,
            own_addresses=self.own_addresses,
            blocklist=self.blocklist,
        )

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
            parse_timeout=settings.inboxd.parse_timeout.total_seconds(),
            clock=clock,
            settings=settings,
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
    parsed: Parsed | None = None,
    isolated: bool = True,
) -> Received:
    """Store `data` as delivered to `mailbox` and process it, unless it is already stored.

    Guarantees: one `message` row per Message-ID (or per content when it has none),
    one `delivery` row per mailbox. `parsed` is the parse of `data` when a parser
    process made it ahead (`mail.parsepool`). `parse_it=False` stores and quarantines
    without parsing (a mail that crashed the process before). Runs on SQLAlchemy Core
    where it can: this is the hot path of every ingested mail.

    `isolated=False` skips the SAVEPOINT around processing: a failure is not quarantined
    but raised, and the caller rolls its whole transaction back and stores the batch
    again isolated (`store_batch`). Nearly every batch then costs two statements a mail
    less, and the rare failing one pays for its mails twice.
    """
    now = cfg.clock()
    digest = (parsed.digest if parsed else None) or content_hash(data)
    mail: ParsedMail | None = None
    problem: str | None = None
    verdict: Classification | None = None
    if not parse_it:
        problem = "crashed the worker repeatedly; stored without parsing"
    else:
        got = parsed or parse_for_intake(data, cfg.max_message_bytes)
        mail, problem = got.mail, got.problem
        if got.screened_as == (cfg.own_addresses, cfg.blocklist):  # not a config ago
            verdict = got.verdict

    message_id = mail.message_id if mail else None
    delivery = _Delivery(mailbox, source, uidvalidity, uid, now)
    existing = find_existing(session, message_id=message_id, digest=digest)
    if existing is not None:
        return _duplicate(session, existing, delivery)
    if mail is not None:
        processing = functools.partial(
            process, session, cfg, mail, raw=data, digest=digest, delivery=delivery, verdict=verdict
        )
        if not isolated:
            return processing()
        try:
            with savepoint(session):
                return processing()
        except _AlreadyStored:
            pass  # another process stored the same mail a moment ago
        except Exception as exc:  # any stage failure quarantines the mail; intake goes on
            problem = f"processing failed: {type(exc).__name__}: {exc}"
            log.exception("processing failed", extra={"mailbox": mailbox, "message_id": message_id})
    if problem is not None:
        pk = _insert_message(
            session,
            _message_values(mail, data=data, digest=digest, mailbox=mailbox, now=now)
            | {"quarantined": True, "quarantine_reason": problem[:500]},
        )
        if pk is not None:
            _store_raw_and_delivery(session, pk, data, delivery)
            log.warning(
                "quarantined", extra={"mailbox": mailbox, "message_pk": pk, "reason": problem}
            )
            return Received(pk, message_id, "quarantined", reason=problem[:500])
    existing = find_existing(session, message_id=message_id, digest=digest)
    assert existing is not None, "a conflicting insert left no row behind"
    return _duplicate(session, existing, delivery)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One mail of a batch: its bytes, its parse (None: parse it here), its IMAP UID."""

    data: bytes
    parsed: Parsed | None = None
    uid: int | None = None


def store_batch(
    engine: Engine,
    cfg: IntakeConfig,
    mails: Iterable[Incoming],
    *,
    mailbox: str,
    source: Source,
    uidvalidity: int | None = None,
    finish: Callable[[Session], None] | None = None,
) -> list[Received]:
    """Store a batch of mail in one transaction, `finish` (the mailbox cursor) last in it.

    First without a SAVEPOINT per mail: should any mail fail, the transaction is rolled
    back whole and the batch stored again with each mail in a savepoint of its own, so
    the one that fails is quarantined and the others stored, as `receive` does. A failure
    of the transaction itself (the database) is raised, and so is one of `mails` (a
    parse that went missing): nothing is committed then. The full-text index is written
    once, for the whole batch (`searchindex.deferred`).
    """
    seen: list[Incoming] = []
    rest = iter(mails)

    def attempt(batch: Iterable[Incoming], *, isolated: bool) -> list[Received]:
        with session_scope(engine) as s, searchindex.deferred(s):
            results = [
                receive(
                    s,
                    cfg,
                    mailbox=mailbox,
                    data=m.data,
                    source=source,
                    uidvalidity=uidvalidity,
                    uid=m.uid,
                    parsed=m.parsed,
                    isolated=isolated,
                )
                for m in batch
            ]
            if finish is not None:
                finish(s)
        return results

    def remembered() -> Iterator[Incoming]:
        while True:
            try:
                m = next(rest)
            except StopIteration:
                return
            except Exception as exc:
                raise _SourceFailed(exc) from exc
            seen.append(m)
            yield m

    try:
        return attempt(remembered(), isolated=False)
    except _SourceFailed as failed:
        raise failed.original from None
    except Exception as exc:  # noqa: BLE001 - stored again mail by mail, which quarantines
        log.warning(
            "a mail of the batch failed; storing the batch again, each mail on its own",
            extra={"mailbox": mailbox, "error": f"{type(exc).__name__}: {exc}"[:300]},
        )
    return attempt(itertools.chain(seen, rest), isolated=True)


class _SourceFailed(Exception):
    """The batch's own iterator raised (not a mail's processing): never stored again."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


class _AlreadyStored(Exception):
    """The INSERT met a row another transaction committed since we looked."""


@dataclass(frozen=True, slots=True)
class _Delivery:
    mailbox: str
    source: Source
    uidvalidity: int | None
    uid: int | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Existing:
    id: int
    message_id: str | None
    ticket_id: int | None
    classification: str | None


def find_existing(session: Session, *, message_id: str | None, digest: str) -> Existing | None:
    """The stored message with this Message-ID, else with these exact bytes."""
    if not message_id:
        rows = _BY_HASH.rows(session, {"digest": digest})
        return Existing(*rows[0]) if rows else None
    # One statement for both (SQLite and PostgreSQL use both indexes for the OR).
    rows = _BY_MESSAGE_ID_OR_HASH.rows(session, {"mid": message_id, "digest": digest})
    by_id = [r for r in rows if r[1] == message_id]
    return Existing(*(by_id or rows)[0]) if rows else None


_M = Message.__table__.c  # type: ignore[attr-defined]
_EXISTING = sa_select(_M.id, _M.message_id, _M.ticket_id, _M.classification)
# Built once: constructing a statement per mail costs more than running it.
_BY_MESSAGE_ID_OR_HASH = Prepared(
    _EXISTING.where(or_(_M.message_id == bindparam("mid"), _M.content_hash == bindparam("digest")))
)
_BY_HASH = Prepared(_EXISTING.where(_M.content_hash == bindparam("digest")))


def _duplicate(session: Session, existing: Existing, delivery: _Delivery) -> Received:
    _add_delivery(session, existing.id, delivery)
    return Received(
        existing.id, existing.message_id, "duplicate", existing.ticket_id, existing.classification
    )


def _addresses(addrs: tuple[Address, ...]) -> list[dict[str, str]]:
    return [{"addr": a.addr, "name": a.name} for a in addrs]


def _message_values(
    mail: ParsedMail | None, *, data: bytes, digest: str, mailbox: str, now: datetime
) -> dict[str, Any]:
    """Column values of a new inbound `message` row (defaults filled: Core skips the model)."""
    values: dict[str, Any] = {
        "message_id": None,
        "content_hash": digest,
        "direction": "in",
        "ticket_id": None,
        "mailbox": mailbox,
        "author": None,
        "classification": None,
        "reasons": [],
        "from_addr": None,
        "from_name": None,
        "to_addrs": [],
        "cc_addrs": [],
        "reply_to": [],
        "subject": "",
        "date_at": None,
        "date_offset_min": None,
        "in_reply_to": [],
        "references": [],
        "text": "",
        "attachments": [],
        "size": len(data),
        "bounce": None,
        "received_at": now,
        "quarantined": False,
        "quarantine_reason": None,
        "attempts": 0,
    }
    if mail is None:
        return values
    values.update(
        message_id=mail.message_id,
        from_addr=mail.from_.addr if mail.from_ else None,
        from_name=mail.from_.name if mail.from_ else None,
        to_addrs=_addresses(mail.to),
        cc_addrs=_addresses(mail.cc),
        reply_to=_addresses(mail.reply_to),
        subject=mail.subject,
        in_reply_to=list(mail.in_reply_to),
        references=list(mail.references),
        text=mail.text,
        attachments=[
            {
                "index": a.index,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in mail.attachments
        ],
    )
    if mail.date is not None:
        offset = mail.date.utcoffset()
        values["date_at"] = mail.date.astimezone(UTC)
        values["date_offset_min"] = int(offset.total_seconds() // 60) if offset is not None else 0
    return values


def _insert_message(session: Session, values: dict[str, Any]) -> int | None:
    """INSERT the row; None when a unique key (Message-ID, content hash) already holds one."""
    pk: int | None = _INSERT_MESSAGE.scalar(session, values)
    return pk


_INSERT_MESSAGE = Prepared(
    lambda dialect: (
        upsert(dialect, Message.__table__)  # type: ignore[attr-defined]
        .on_conflict_do_nothing()
        .returning(Message.__table__.c.id)
    )  # type: ignore[attr-defined]
)


def _store_raw_and_delivery(session: Session, pk: int, data: bytes, delivery: _Delivery) -> None:
    _INSERT_RAW.rows(session, {"message_pk": pk, "data": data, "purged_at": None})
    _add_delivery(session, pk, delivery)


_INSERT_RAW = Prepared(sa_insert(RawMail.__table__))  # type: ignore[attr-defined]


def _add_delivery(session: Session, pk: int, d: _Delivery) -> None:
    insert_ignore(
        session,
        Delivery,
        [
            {
                "message_pk": pk,
                "mailbox": d.mailbox,
                "source": d.source,
                "uidvalidity": d.uidvalidity,
                "uid": d.uid,
                "delivered_at": d.at,
            }
        ],
    )


# -- processing ---------------------------------------------------------------------


def process(
    session: Session,
    cfg: IntakeConfig,
    mail: ParsedMail,
    *,
    raw: bytes,
    digest: str,
    delivery: _Delivery,
    verdict: Classification | None = None,
) -> Received:
    """Classify (unless `verdict` came with the parse), store, thread and open or join a
    ticket for a mail new to the database.

    Raises `_AlreadyStored` when a concurrent writer won the INSERT (the caller's
    savepoint then undoes whatever this call did).
    """
    now = delivery.at
    mailbox = delivery.mailbox
    if verdict is None:
        verdict = classify(mail, raw, own_addresses=cfg.own_addresses, blocklist=cfg.blocklist)
    values = _message_values(mail, data=raw, digest=digest, mailbox=mailbox, now=now)
    values.update(classification=verdict.kind, reasons=list(verdict.reasons))

    def store(ticket_id: int | None, **extra: Any) -> int:
        pk = _insert_message(session, values | {"ticket_id": ticket_id, **extra})
        if pk is None:
            raise _AlreadyStored
        _store_raw_and_delivery(session, pk, raw, delivery)
        return pk

    if verdict.kind == "bounce":
        return _attach_bounce(session, cfg, mail, verdict, store)

    match = threading.find_ticket(
        session,
        mail,
        secret=cfg.secret,
        own_addresses=cfg.own_addresses,
        subject_tag=cfg.subject_tag,
    )
    previous: int | None = None
    if match.ticket_id is not None:
        ticket = threading.follow_merges(session, match.ticket_id)
        for other in match.linked:
            ticket = _join_conversations(session, cfg, ticket, other)
        if (
            ticket.status != "closed"
            or verdict.kind in NO_NEW_TICKET
            or (verdict.kind == "human" and _answers_survey(session, ticket, mail))
        ):
            assert ticket.id is not None
            pk = store(ticket.id)
            _join(session, cfg, ticket, mail, verdict)
            records.write_back(session, ticket)
            return Received(pk, mail.message_id, "joined", ticket.id, verdict.kind)
        previous = ticket.id  # a reply to a closed ticket opens a new, linked one

    if verdict.kind in NO_NEW_TICKET:
        pk = store(None)
        return Received(pk, mail.message_id, "no-ticket", None, verdict.kind)
    ticket, opening, opened_at = _open_ticket(
        session,
        cfg,
        mail,
        mailbox=mailbox,
        previous=previous,
        subject_ref=match.subject_ref,
        kind=verdict.kind,
        imported=delivery.source == "import",
    )
    assert ticket.id is not None
    pk = store(ticket.id)
    if cfg.settings is not None:  # after the mail is stored: the conversation shows it first
        ack.acknowledge(
            session,
            settings=cfg.settings,
            ticket=ticket,
            mail=mail,
            secret=cfg.secret,
            now=now,
            opening=opening,
        )
    # The new ticket's ids and events, the acknowledgement's among them, a statement each.
    threading.remember_ids(session, ticket.id, opening.ids)
    events.record_all(
        session, ticket_id=ticket.id, at=opened_at, actor=events.SYSTEM, kinds=opening.events
    )
    if cfg.settings is not None:
        notify.new_ticket(session, settings=cfg.settings, ticket=ticket, now=now)
    return Received(pk, mail.message_id, "new-ticket", ticket.id, verdict.kind)


def _answers_survey(session: Session, ticket: Ticket, mail: ParsedMail) -> bool:
    """A rating for this closed ticket's survey joins it; anything else opens a new one."""
    return survey.outstanding(session, ticket) and (
        survey.parse_answer(reply_text(mail.text or "")) is not None
    )


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
    mail: ParsedMail,
    verdict: Classification,
) -> None:
    """A stored mail joined `ticket`: count it, learn its ids, reopen or resume as due."""
    assert ticket.id is not None
    now = cfg.clock()
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
    if (
        from_customer
        and verdict.kind == "human"
        and ticket.status in ("resolved", "closed")
        and survey.record_answer(session, ticket=ticket, mail=mail, now=now)
    ):
        return  # an answer to the satisfaction survey: recorded, nothing reopens
    if cfg.settings is not None and from_customer and verdict.kind == "human":
        notify.customer_reply(session, settings=cfg.settings, ticket=ticket, message=mail, now=now)
    old_status = ticket.status
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
    if cfg.settings is not None and from_customer:  # SLA: resume, restart, next response
        if ticket.status != old_status:
            sla.on_status_change(
                session,
                ticket=ticket,
                settings=cfg.settings,
                old=old_status,
                new=ticket.status,
                now=now,
            )
        if verdict.kind == "human":
            sla.on_customer_reply(session, ticket=ticket, settings=cfg.settings, now=now)


def _open_ticket(
    session: Session,
    cfg: IntakeConfig,
    mail: ParsedMail,
    *,
    mailbox: str,
    previous: int | None,
    subject_ref: int | None,
    kind: str,
    imported: bool,
) -> tuple[Ticket, ack.Opening, datetime]:
    """A new ticket, routed and assigned in the same INSERT, its acknowledgement decided
    (and counted among its messages when one is due); the events that say why and the
    mail's ids, for the caller to write with the acknowledgement's, and their time."""
    now = cfg.clock()
    customer = requester(mail, own_addresses=cfg.own_addresses)
    skip = (
        ack.plan(
            session,
            settings=cfg.settings,
            customer_addr=customer.addr if customer else None,
            mailbox=mailbox,
            kind=kind,
            now=now,
            agents=cfg.agents,
            imported=imported,
        )
        if cfg.settings is not None
        else "no configuration"
    )
    decision = _route(cfg, mail, mailbox)
    team = cfg.teams.get(decision.team or "")
    agent = assignment.choose(session, team, strategy=decision.assign) if team else None
    values = model_defaults(Ticket) | {
        "subject": mail.subject,
        "customer_addr": customer.addr if customer else None,
        "customer_name": (customer.name or None) if customer else None,
        "mailbox": mailbox,
        "created_at": now,
        "updated_at": now,
        "last_customer_at": now,
        "previous_ticket": previous,
        "subject_ref": subject_ref,
        "message_count": 1 if skip is not None else 2,  # and the ack, written after the mail
        "team": decision.team or None,
        "category": decision.category,
        "priority": decision.priority,
        "sla_policy": decision.sla,
        "assignee": agent,
    }
    # Built before the INSERT so the clocks go into the same row (no UPDATE after it).
    ticket = records.build(Ticket, values)
    clocks = sla.set_clocks(ticket, cfg.settings) if cfg.settings is not None else None
    ticket_id = _INSERT_TICKET.scalar(session, {name: getattr(ticket, name) for name in values})
    ticket.id = ticket_id
    records.attach(session, ticket)  # persistent without a SELECT: the row is `ticket`
    _add_participants(session, cfg, ticket_id, mail, customer=customer)
    insert_ignore(session, TicketTag, [{"ticket_id": ticket_id, "tag": t} for t in decision.tags])
    written: list[tuple[str, dict[str, Any]]] = [
        (
            "created",
            {
                "mailbox": mailbox,
                "message_id": mail.message_id,
                "previous_ticket": previous,
                "subject_ref": subject_ref,
            },
        ),
        (
            "routed",
            {
                "team": decision.team or None,
                "category": decision.category,
                "priority": decision.priority,
                "tags": list(decision.tags),
                "sla": decision.sla,
                "rules": list(decision.matched),
                "set_by": dict(decision.set_by),
            },
        ),
    ]
    if agent is not None:
        assert team is not None
        written.append(
            (
                "assigned",
                {
                    "assignee": agent,
                    "strategy": decision.assign or team.strategy,
                    "rule": decision.set_by.get("assign"),
                },
            )
        )
    if clocks is not None:
        written.append(("sla", dict(clocks)))
    ids = [mail.message_id, *mail.in_reply_to, *mail.references]
    return ticket, ack.Opening(skip, written, ids), now


_INSERT_TICKET = Prepared(sa_insert(Ticket.__table__).returning(Ticket.__table__.c.id))  # type: ignore[attr-defined]


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
    session: Session,
    cfg: IntakeConfig,
    mail: ParsedMail,
    verdict: Classification,
    store: Callable[..., int],
) -> Received:
    """A bounce joins the ticket of the mail that bounced, as a delivery failure."""
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
    bounce = {
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
        pk = store(None, bounce=bounce)
        return Received(pk, mail.message_id, "no-ticket", None, "bounce")
    ticket = threading.follow_merges(session, ticket_id)
    assert ticket.id is not None
    pk = store(ticket.id, bounce=bounce)
    ticket.message_count += 1
    events.record(
        session,
        ticket_id=ticket.id,
        at=cfg.clock(),
        actor=events.SYSTEM,
        kind="delivery-failure",
        original_message_id=original,
        recipients=failed,
        message=pk,
    )
    return Received(pk, mail.message_id, "joined", ticket.id, "bounce")
