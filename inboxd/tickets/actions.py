"""What agents do to tickets: reply, note, claim, assign, transfer, status, priority, tags, merge.

Roles as help desks have them. An agent is a member or the lead of a configured team. It
works its own tickets and the unassigned ones of its teams, and may add an internal note
to any ticket of its teams. A team's lead (supervisor) works any ticket of the team and
may also assign it to someone else, transfer it, reopen it once closed and merge it.
Anything else is `Forbidden`, said in one line. `merged` is final for everyone; `closed`
is final except for a lead reopening it (a note may still be added).

Every change is a ticket event naming the agent. The functions take the session
keyword-first, never commit, and return a small result the CLI prints; the CLI reads
files and editors, this module never does.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col, delete, select

from inboxd.db import insert_ignore
from inboxd.errors import Forbidden, InboxdError, NotFound
from inboxd.mail import compose
from inboxd.models import Message, Participant, Ticket, TicketTag
from inboxd.tickets import assignment, events, notify, sla, survey, tokens
from inboxd.tickets.agents import Agent as Agent  # re-exported: callers know it from here
from inboxd.tickets.agents import agent as agent
from inboxd.tickets.classify import is_machine_address

if TYPE_CHECKING:
    from inboxd.config import Settings

PRIORITIES = ("low", "normal", "high", "urgent")
STATUSES = ("open", "pending", "resolved", "closed")  # what an agent may set
# Where each status may go by an agent's hand; closed -> open is a lead's reopen.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("pending", "resolved", "closed"),
    "pending": ("open", "resolved", "closed"),
    "resolved": ("open", "closed"),
    "closed": ("open",),
    "merged": (),
}
NOBODY = ("nobody", "none", "-")  # spellings of "no assignee"
_TAG = re.compile(r"^[a-z0-9][a-z0-9_.:/-]{0,49}$")
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")
_REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|vs|antw|réf|ref|fwd?|wg)\s*(\[\d+\])?\s*:\s*)+", re.I)


# -- results -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replied:
    ticket_id: int
    message_id: str
    outbox_id: int
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    reply_to: str
    attachments: tuple[str, ...]
    assigned: bool  # the reply claimed an unassigned ticket
    status: str  # the ticket's status afterwards


@dataclass(frozen=True, slots=True)
class Noted:
    ticket_id: int
    message_pk: int


@dataclass(frozen=True, slots=True)
class Changed:
    """One field of a ticket set by an agent; `changed` is False when it already was."""

    ticket_id: int
    field: str  # assignee | team | status | priority | tags
    old: Any
    new: Any
    changed: bool


@dataclass(frozen=True, slots=True)
class Merged:
    source: int
    into: int


# -- permissions -----------------------------------------------------------------------


def load(session: Session, ticket_id: int) -> Ticket:
    """The ticket under a row lock (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises)."""
    ticket = session.get(Ticket, ticket_id, with_for_update=True, populate_existing=True)
    if ticket is None:
        raise NotFound(f"no ticket {ticket_id}")
    return ticket


def _ref(ticket: Ticket) -> str:
    return f"ticket {ticket.id}"


def _not_final(ticket: Ticket, doing: str) -> None:
    if ticket.status == "merged":
        raise Forbidden(
            f"cannot {doing}: {_ref(ticket)} was merged into ticket {ticket.merged_into} "
            f"(merged is final; work on ticket {ticket.merged_into})"
        )
    if ticket.status == "closed":
        raise Forbidden(
            f"cannot {doing}: {_ref(ticket)} is closed "
            f"(closed is final; a lead of {ticket.team or 'its team'} may reopen it)"
        )


def _may_work(who: Agent, ticket: Ticket, doing: str) -> None:
    """Own or unassigned tickets of the agent's teams; any ticket of a team it leads."""
    if who.leads_team(ticket.team):
        return
    if not who.in_team(ticket.team):
        raise Forbidden(
            f"cannot {doing}: {_ref(ticket)} belongs to team {ticket.team} "
            f"and {who.address} is not in it"
        )
    if ticket.assignee not in (None, who.address):
        raise Forbidden(
            f"cannot {doing}: {_ref(ticket)} is assigned to {ticket.assignee} "
            f"(only they or a lead of {ticket.team} may)"
        )


def _must_lead(who: Agent, ticket: Ticket, doing: str) -> None:
    if not who.leads_team(ticket.team):
        raise Forbidden(
            f"cannot {doing}: only a lead of team {ticket.team or '(none)'} may "
            f"({who.address} is not)"
        )


def _changed(
    session: Session, ticket: Ticket, *, actor: str, now: datetime, kind: str, **data: Any
) -> None:
    """`actor` changed `ticket`: stamp it updated and record the event that says how."""
    assert ticket.id is not None
    ticket.updated_at = now
    events.record(session, ticket_id=ticket.id, at=now, actor=actor, kind=kind, **data)


# -- reply and note -----------------------------------------------------------------------


def reply(
    session: Session,
    *,
    settings: Settings,
    who: Agent,
    ticket_id: int,
    text: str,
    now: datetime,
    attachments: Sequence[compose.Attachment] = (),
    cc: bool = True,
    status: str | None = None,
) -> Replied:
    """Queue a reply to the customer through the mailbox the ticket came in by.

    Threads under the last inbound mail (In-Reply-To, References), carries the signed
    reply token in Reply-To and the ticket tag in the subject, copies the ticket's other
    participants unless `cc` is False, and meets the SLA response clocks. An unassigned
    ticket becomes the replying agent's. `status` sets the status afterwards ("send and
    set pending"). The outbox row is the only trace of sending; `inboxd.mail.smtp` sends.
    """
    from inboxd.tickets import outbox  # brings threading and the mail parser: replies only

    ticket = load(session, ticket_id)
    _not_final(ticket, "reply")
    _may_work(who, ticket, "reply")
    if status is not None:
        _check_transition(who, ticket, status)
    body = text.strip("\n")
    if not body.strip():
        raise InboxdError("empty reply: nothing to send (give text with -m, --file or stdin)")
    if not ticket.customer_addr:
        raise InboxdError(f"{_ref(ticket)} has no customer address to reply to")
    mailbox = sla.mailbox_of(settings, ticket)
    if mailbox is None:
        raise InboxdError(
            f"{_ref(ticket)} came in through mailbox {ticket.mailbox or '(none)'}, "
            "which the configuration does not have: nothing to reply through"
        )
    size = sum(len(a.data) for a in attachments)
    if size > settings.inboxd.max_message_size:
        raise InboxdError(
            f"attachments are {size} bytes, over max_message_size "
            f"({settings.inboxd.max_message_size})"
        )
    assert ticket.id is not None
    secret = tokens.reply_secret(session, settings.inboxd.secret())
    reply_to = tokens.reply_address(mailbox.address, tokens.make_token(secret, ticket.id))
    parent = _last_inbound(session, ticket.id)
    copies = _cc(session, settings, ticket) if cc else []
    subject = reply_subject(settings, ticket)
    message = compose.build(
        compose.Outgoing(
            sender=mailbox.address,
            sender_name=mailbox.name.replace("-", " ").replace("_", " ").title(),
            to=[ticket.customer_addr],
            cc=copies,
            subject=subject,
            text=body + "\n",
            at=now,
            reply_to=reply_to,
            in_reply_to=parent.message_id if parent is not None else None,
            references=_references(parent),
            attachments=attachments,
        )
    )
    row = outbox.enqueue(
        session,
        kind="reply",
        message=message,
        smtp=mailbox.smtp,
        now=now,
        mailbox=mailbox.name,
        ticket=ticket,
        author=who.address,
    )
    assert row.id is not None
    if attachments:
        _list_attachments(session, row.message_id, attachments)
    claimed = ticket.assignee is None
    if claimed:
        _set_assignee(session, ticket, who.address, actor=who.address, now=now, how="reply")
    _changed(
        session,
        ticket,
        actor=who.address,
        now=now,
        kind="replied",
        message_id=row.message_id,
        outbox=row.id,
        to=[ticket.customer_addr],
        cc=copies,
        attachments=[a.filename for a in attachments],
    )
    sla.on_agent_reply(session, ticket=ticket, settings=settings, now=now)
    if status is not None:
        _change_status(session, settings, who, ticket, status, now=now)
    return Replied(
        ticket_id=ticket.id,
        message_id=row.message_id,
        outbox_id=row.id,
        sender=mailbox.address,
        to=(ticket.customer_addr,),
        cc=tuple(copies),
        subject=subject,
        reply_to=reply_to,
        attachments=tuple(a.filename for a in attachments),
        assigned=claimed,
        status=ticket.status,
    )


def reply_subject(settings: Settings, ticket: Ticket) -> str:
    """`[#id] subject`: the tag once, no stacked "Re:" (threading rides on the headers)."""
    assert ticket.id is not None
    tag = settings.inboxd.tag(ticket.id)
    base = compose.one_line(ticket.subject or "")
    for _ in range(5):  # "Re: [#4] Re: Fwd: x" peels in a few rounds
        stripped = _REPLY_PREFIX.sub("", base).replace(tag, " ")
        stripped = compose.one_line(settings.inboxd.tag_pattern.sub(" ", stripped))
        if stripped == base:
            break
        base = stripped
    return f"{tag} {base}".strip() if base else tag


def _last_inbound(session: Session, ticket_id: int) -> Message | None:
    """The newest mail from the customer's side: what the reply answers."""
    rows = session.exec(
        select(Message)
        .where(
            Message.ticket_id == ticket_id,
            Message.direction == "in",
            col(Message.message_id).is_not(None),
        )
        .order_by(col(Message.received_at).desc(), col(Message.id).desc())
        .limit(5)
    ).all()
    people = [m for m in rows if m.classification in (None, "human", "bulk")]
    found = people or list(rows)
    return found[0] if found else None


def _references(parent: Message | None) -> list[str]:
    if parent is None:
        return []
    refs = list(parent.references)
    if not refs and parent.in_reply_to:
        refs = list(parent.in_reply_to[:1])
    return refs


def _cc(session: Session, settings: Settings, ticket: Ticket) -> list[str]:
    """The ticket's other participants: never the customer, our own addresses, agents, or
    a machine nobody reads (a contact form's ``noreply@`` sender, a mailer daemon)."""
    assert ticket.id is not None
    ours = set(settings.agents()) | {t.address for t in settings.teams if t.address}
    customer = (ticket.customer_addr or "").lower()
    out: list[str] = []
    for address in session.exec(
        select(Participant.address)
        .where(Participant.ticket_id == ticket.id, Participant.role != "customer")
        .order_by(col(Participant.id))
    ).all():
        addr = address.lower()
        if (
            addr == customer
            or addr in ours
            or settings.mailbox_for(addr) is not None
            or is_machine_address(addr)
        ):
            continue
        try:
            compose.address(addr)
        except ValueError:
            continue
        if addr not in out:
            out.append(addr)
    return out


def _list_attachments(
    session: Session, message_id: str, attachments: Sequence[compose.Attachment]
) -> None:
    """Note the sent files on the stored outbound message, so `ticket show` lists them."""
    msg = session.exec(select(Message).where(Message.message_id == message_id)).first()
    if msg is None:
        return
    msg.attachments = [
        {
            "index": i,
            "filename": compose.one_line(a.filename, limit=200),
            "content_type": a.content_type,
            "size": len(a.data),
            "sha256": hashlib.sha256(a.data).hexdigest(),
        }
        for i, a in enumerate(attachments)
    ]
    session.add(msg)


def note(session: Session, *, who: Agent, ticket_id: int, text: str, now: datetime) -> Noted:
    """An internal note: a message of direction "note", shown to agents, never mailed.

    Any member or lead of the ticket's team may add one, also on a closed ticket.
    """
    ticket = load(session, ticket_id)
    if ticket.status == "merged":
        _not_final(ticket, "add a note")
    if not (who.in_team(ticket.team) or who.leads_team(ticket.team)):
        raise Forbidden(
            f"cannot add a note: {_ref(ticket)} belongs to team {ticket.team} "
            f"and {who.address} is not in it"
        )
    body = text.strip("\n")
    if not body.strip():
        raise InboxdError("empty note: nothing to add (give text with -m, --file or stdin)")
    assert ticket.id is not None
    digest = hashlib.sha256(
        f"note\0{ticket.id}\0{who.address}\0{now.isoformat()}\0{uuid.uuid4()}\0{body}".encode()
    ).hexdigest()
    msg = Message(
        direction="note",
        content_hash=digest,
        ticket_id=ticket.id,
        author=who.address,
        from_addr=who.address,
        subject=ticket.subject,
        date_at=now,
        date_offset_min=0,
        text=body + "\n",
        size=len(body.encode()),
        received_at=now,
    )
    session.add(msg)
    session.flush()
    assert msg.id is not None
    ticket.message_count += 1
    _changed(session, ticket, actor=who.address, now=now, kind="note", message=msg.id)
    return Noted(ticket.id, msg.id)


# -- assignment ----------------------------------------------------------------------------


def _set_assignee(
    session: Session,
    ticket: Ticket,
    assignee: str | None,
    *,
    actor: str,
    now: datetime,
    how: str,
) -> None:
    """Give `ticket` to `assignee` (None: the team queue); the event names both."""
    previous = ticket.assignee
    ticket.assignee = assignee
    _changed(
        session,
        ticket,
        actor=actor,
        now=now,
        kind="assigned",
        assignee=assignee,
        previous=previous,
        strategy=how,
    )


def claim(session: Session, *, who: Agent, ticket_id: int, now: datetime) -> Changed:
    """Take an unassigned ticket of one's team (a lead may take any of its team's)."""
    ticket = load(session, ticket_id)
    _not_final(ticket, "claim it")
    assert ticket.id is not None
    if ticket.assignee == who.address:
        return Changed(ticket.id, "assignee", who.address, who.address, False)
    _may_work(who, ticket, "claim it")
    old = ticket.assignee
    _set_assignee(session, ticket, who.address, actor=who.address, now=now, how="claim")
    return Changed(ticket.id, "assignee", old, who.address, True)


def assign(
    session: Session,
    *,
    settings: Settings,
    who: Agent,
    ticket_id: int,
    assignee: str | None,
    now: datetime,
) -> Changed:
    """Give the ticket to `assignee` (None: back to the team queue).

    An agent may take it or release its own; giving it to someone else is a lead's
    job, and only to an agent of the ticket's team.
    """
    ticket = load(session, ticket_id)
    _not_final(ticket, "assign it")
    assert ticket.id is not None
    target = assignee.strip().lower() if assignee else None
    if target == ticket.assignee:
        return Changed(ticket.id, "assignee", target, target, False)
    if target is not None and target != who.address:
        _must_lead(who, ticket, f"assign {_ref(ticket)} to {target}")
        other = agent(settings, target)
        if not other.in_team(ticket.team):
            raise Forbidden(
                f"cannot assign {_ref(ticket)} to {target}: not in team {ticket.team} "
                "(transfer the ticket to a team of theirs first)"
            )
    else:
        _may_work(who, ticket, "assign it")
    old = ticket.assignee
    _set_assignee(session, ticket, target, actor=who.address, now=now, how="manual")
    if target is not None:
        notify.assigned(
            session, settings=settings, ticket=ticket, agent=target, actor=who.address, now=now
        )
    return Changed(ticket.id, "assignee", old, target, True)


def transfer(
    session: Session,
    *,
    settings: Settings,
    who: Agent,
    ticket_id: int,
    team: str,
    now: datetime,
) -> Changed:
    """Move the ticket to another team's queue; that team's assignment strategy applies.

    Its lead may transfer any ticket of the team, a member its own or unassigned ones.
    """
    ticket = load(session, ticket_id)
    _not_final(ticket, "transfer it")
    assert ticket.id is not None
    names = [t.name for t in settings.teams]
    if team not in names:
        raise NotFound(f"no team {team} (teams: {', '.join(names)})")
    if team == ticket.team:
        return Changed(ticket.id, "team", team, team, False)
    _may_work(who, ticket, f"transfer it to {team}")
    old = ticket.team
    ticket.team = team
    spec = settings.team(team)
    previous = ticket.assignee
    chosen = assignment.choose(
        session, assignment.TeamSpec(spec.name, tuple(spec.members), spec.assignment)
    )
    ticket.assignee = None
    _changed(
        session,
        ticket,
        actor=who.address,
        now=now,
        kind="transferred",
        old=old,
        new=team,
        previous_assignee=previous,
    )
    if chosen is not None:
        _set_assignee(session, ticket, chosen, actor=events.SYSTEM, now=now, how=spec.assignment)
        notify.assigned(
            session, settings=settings, ticket=ticket, agent=chosen, actor=who.address, now=now
        )
    return Changed(ticket.id, "team", old, team, True)


# -- status, priority, tags ----------------------------------------------------------------


def _check_transition(who: Agent, ticket: Ticket, new: str) -> None:
    if new not in STATUSES:
        raise InboxdError(f"unknown status {new!r} (expected {', '.join(STATUSES)})")
    old = ticket.status
    if old == new:
        return
    if old == "merged":
        _not_final(ticket, f"set it {new}")
    if old == "closed":
        if new != "open":
            _not_final(ticket, f"set it {new}")
        _must_lead(who, ticket, f"reopen closed {_ref(ticket)}")
        return
    if new not in TRANSITIONS[old]:
        raise Forbidden(
            f"cannot set {_ref(ticket)} from {old} to {new} "
            f"(from {old}: {', '.join(TRANSITIONS[old])})"
        )


def _change_status(
    session: Session, settings: Settings, who: Agent, ticket: Ticket, new: str, *, now: datetime
) -> None:
    old = ticket.status
    if old == new:
        return
    assert ticket.id is not None
    sla.on_status_change(session, ticket=ticket, settings=settings, old=old, new=new, now=now)
    ticket.status = new
    if new == "resolved" and ticket.resolved_at is None:
        ticket.resolved_at = now
    if new == "closed":
        ticket.closed_at = now
    if old in ("resolved", "closed") and new in ("open", "pending"):
        ticket.resolved_at = None
        ticket.closed_at = None
        ticket.reopened += 1
    _changed(session, ticket, actor=who.address, now=now, kind="status", old=old, new=new)
    if new == "resolved":
        secret = tokens.reply_secret(session, settings.inboxd.secret())
        survey.maybe_send(session, settings=settings, ticket=ticket, secret=secret, now=now)


def set_status(
    session: Session,
    *,
    settings: Settings,
    who: Agent,
    ticket_id: int,
    status: str,
    now: datetime,
) -> Changed:
    """Move the ticket along: open, pending (clocks paused), resolved, closed (final).

    A closed ticket is reopened by a lead only; a merged one never changes.
    """
    ticket = load(session, ticket_id)
    assert ticket.id is not None
    _check_transition(who, ticket, status)
    if ticket.status == status:
        return Changed(ticket.id, "status", status, status, False)
    if ticket.status != "closed":
        _may_work(who, ticket, f"set it {status}")
    old = ticket.status
    _change_status(session, settings, who, ticket, status, now=now)
    return Changed(ticket.id, "status", old, status, True)


def set_priority(
    session: Session, *, who: Agent, ticket_id: int, priority: str, now: datetime
) -> Changed:
    priority = priority.strip().lower()
    if priority not in PRIORITIES:
        raise InboxdError(f"unknown priority {priority!r} (expected {', '.join(PRIORITIES)})")
    ticket = load(session, ticket_id)
    _not_final(ticket, "change its priority")
    assert ticket.id is not None
    old = ticket.priority
    if old == priority:
        return Changed(ticket.id, "priority", old, priority, False)
    _may_work(who, ticket, "change its priority")
    ticket.priority = priority
    _changed(session, ticket, actor=who.address, now=now, kind="priority", old=old, new=priority)
    return Changed(ticket.id, "priority", old, priority, True)


def parse_tag_changes(args: Iterable[str]) -> tuple[list[str], list[str]]:
    """`+a -b c` -> (["a", "c"], ["b"]); tags are lowercased and must look like tags."""
    add: list[str] = []
    remove: list[str] = []
    for arg in args:
        sign, name = (arg[0], arg[1:]) if arg[:1] in "+-" else ("+", arg)
        tag = name.strip().lower()
        if not _TAG.match(tag):
            raise InboxdError(
                f"not a tag: {arg!r} (letters, digits and _ . : / -, up to 50, as +tag or -tag)"
            )
        (add if sign == "+" else remove).append(tag)
    both = set(add) & set(remove)
    if both:
        raise InboxdError(f"tag both added and removed: {', '.join(sorted(both))}")
    return list(dict.fromkeys(add)), list(dict.fromkeys(remove))


def tag(
    session: Session,
    *,
    who: Agent,
    ticket_id: int,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    now: datetime,
) -> Changed:
    """Add and remove tags; an event lists what really changed."""
    ticket = load(session, ticket_id)
    _not_final(ticket, "tag it")
    assert ticket.id is not None
    before = set(session.exec(select(TicketTag.tag).where(TicketTag.ticket_id == ticket.id)).all())
    added = [t for t in add if t not in before]
    removed = [t for t in remove if t in before]
    after = (before | set(added)) - set(removed)
    if not added and not removed:
        return Changed(ticket.id, "tags", sorted(before), sorted(after), False)
    _may_work(who, ticket, "tag it")
    insert_ignore(session, TicketTag, [{"ticket_id": ticket.id, "tag": t} for t in added])
    if removed:
        session.exec(
            delete(TicketTag).where(
                col(TicketTag.ticket_id) == ticket.id, col(TicketTag.tag).in_(removed)
            )
        )
    _changed(session, ticket, actor=who.address, now=now, kind="tags", added=added, removed=removed)
    return Changed(ticket.id, "tags", sorted(before), sorted(after), True)


# -- merge ---------------------------------------------------------------------------------


def merge(
    session: Session,
    *,
    settings: Settings,
    who: Agent,
    source_id: int,
    into_id: int,
    now: datetime,
    reason: str | None = None,
) -> Merged:
    """Merge ticket `source_id` into `into_id` (a lead of both tickets' teams).

    The source keeps its number and events and points at the target; its messages,
    Message-IDs, participants and tags move, so replies to it thread into the target.
    """
    from inboxd.tickets import merge as merging

    if source_id == into_id:
        raise InboxdError(f"cannot merge ticket {source_id} into itself")
    first, second = sorted((source_id, into_id))  # lock in one order: no deadlock
    locked = {first: load(session, first), second: load(session, second)}
    source, into = locked[source_id], locked[into_id]
    if source.status == "merged":
        _not_final(source, f"merge it into ticket {into_id}")
    if into.status in ("merged", "closed"):
        _not_final(into, f"merge ticket {source_id} into it")
    _must_lead(who, source, f"merge {_ref(source)}")
    _must_lead(who, into, f"merge into {_ref(into)}")
    old = source.status
    merging.merge(
        session,
        source=source,
        into=into,
        actor=who.address,
        at=now,
        reason=reason or f"merged by {who.address}",
    )
    sla.on_status_change(session, ticket=source, settings=settings, old=old, new="merged", now=now)
    source.status = "merged"
    assert source.id is not None and into.id is not None
    return Merged(source.id, into.id)


# -- canned responses ----------------------------------------------------------------------


def canned(settings: Settings, name: str, *, session: Session, ticket_id: int, who: Agent) -> str:
    """Render canned response `name` (`<templates>/canned/NAME.txt`) for a ticket.

    Variables: `ticket` (id, reference, subject, status, priority, team, category,
    assignee), `customer` (address, name), `agent` (address, name). Sandboxed and
    strict: a misspelt variable is an error, never an empty gap in a customer's mail.
    """
    from inboxd.tickets import templates

    if not _TEMPLATE_NAME.match(name) or ".." in name:
        raise InboxdError(f"not a template name: {name!r} (letters, digits, _ . -)")
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"no ticket {ticket_id}")
    assert ticket.id is not None
    stem = name[:-4] if name.endswith(".txt") else name
    local = who.address.partition("@")[0]
    context = {
        "ticket": {
            "id": ticket.id,
            "reference": settings.inboxd.tag(ticket.id),
            "subject": templates.plain(ticket.subject),
            "status": ticket.status,
            "priority": ticket.priority,
            "team": ticket.team or "",
            "category": ticket.category or "",
            "assignee": ticket.assignee or "",
        },
        "customer": {
            "address": ticket.customer_addr or "",
            "name": templates.plain(ticket.customer_name or ""),
        },
        "agent": {
            "address": who.address,
            "name": re.sub(r"[._-]+", " ", local).title(),
        },
    }
    folder = settings.inboxd.templates
    if folder is None or not (folder / "canned" / f"{stem}.txt").is_file():
        known = sorted(p.stem for p in (folder / "canned").glob("*.txt")) if folder else []
        where = f"{folder}/canned" if folder else "no [inboxd].templates folder configured"
        raise NotFound(
            f"no canned response {stem!r} ({where}; known: {', '.join(known) or 'none'})"
        )
    return templates.render(f"canned/{stem}.txt", context, folder=folder)
