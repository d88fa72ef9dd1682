"""Customer satisfaction: one question when a ticket is resolved, answered by replying.

`maybe_send` queues the survey (template `[survey] template`, default `survey.txt`) when
`[survey] enabled` and a ticket has just become resolved: once per ticket, to its
customer, only when an agent answered on it (a ticket closed without a word gets no
"how did we do?"), never to our own addresses or an agent. It comes from the ticket's
mailbox with the signed reply token in Reply-To and `Auto-Submitted: auto-generated`.

`record_answer` reads a reply on a ticket with an outstanding survey. The answer is the
first word of what the customer wrote (quoted history and signature removed), optionally
after "very": good or bad, a few synonyms in a few languages, or a thumb emoji. "yes"
counts only in a short reply, "no" only on its own: "No, the printer still jams ..." is a
follow-up and "No thanks" declines; when in doubt the mail reopens the ticket, where a
person reads it, rather than vanish into a rating. Anything after the word is kept as
the comment. When it is an answer, intake must not reopen the ticket for that mail; any
other reply is a follow-up and reopens it.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlmodel import Session, col, select

from inboxd.mail import compose
from inboxd.mail.text import reply_text
from inboxd.models import Message, Outbox, Participant, Ticket
from inboxd.tickets import events, outbox, sla, templates
from inboxd.tickets.ack import display_name, ours
from inboxd.tickets.tokens import make_token, reply_address

if TYPE_CHECKING:
    from inboxd.config import Settings
    from inboxd.mail.parse import ParsedMail

log = logging.getLogger("inboxd.survey")

Rating = Literal["good", "bad"]
OPEN_TO_ANSWER = ("resolved", "closed")  # a reopened ticket's survey is no longer asked
MAX_COMMENT = 2000
WEAK_MAX_WORDS = 8  # "yes" counts with at most this many more words, "no" only alone

# First words, casefolded. Kept short on purpose: a false "answer" swallows a follow-up.
GOOD_WORDS = frozenset(
    {
        "good", "great", "excellent", "perfect",  # en
        "gut", "prima",  # de
        "bra",  # sv, nb
        "godt",  # da, nb
        "bien", "bon", "bonne",  # fr, es
        "bueno", "buena", "buono", "buona", "bom", "boa",  # es, it, pt
        "goed",  # nl
        "dobrze",  # pl
        "hyvä",  # fi
    }
)  # fmt: skip
BAD_WORDS = frozenset(
    {
        "bad", "poor", "terrible", "awful",  # en
        "schlecht",  # de
        "dålig", "dåligt", "dårlig", "dårligt",  # sv, nb, da
        "mauvais", "mauvaise",  # fr
        "malo", "mala", "cattivo", "ruim",  # es, it, pt
        "slecht",  # nl
        "źle",  # pl
        "huono",  # fi
    }
)  # fmt: skip
YES_WORDS = frozenset({"yes", "ja", "oui", "sí", "si", "sim", "tak", "kyllä"})
NO_WORDS = frozenset({"no", "nein", "non", "nee", "nej", "nei", "não", "nie", "ei"})
INTENSIFIERS = frozenset({"very", "really", "sehr", "mycket", "veldig", "meget", "très", "muy"})
THUMBS: dict[str, Rating] = {"\U0001f44d": "good", "\U0001f44e": "bad"}  # 👍 👎
_NOISE = r"[\s\"'*_~>•·.,:;!?()\[\]\-\u2013\u2014]+"  # markup and punctuation around the word
_LEAD = re.compile(_NOISE)
_WORD = re.compile(r"[^\W\d_]+")  # letters only
_SKIN_TONES = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f]+")
_AFTER = re.compile(_NOISE)
_SIGNATURE = re.compile(r"^--\s*$", re.MULTILINE)  # RFC 3676 4.3 "-- " line, and "--"


def parse_answer(text: str) -> tuple[Rating, str | None] | None:
    """(rating, comment) when `text` starts with an answer, else None.

    `text` is what the customer wrote, without quoted history (`reply_text`).
    """
    text = _SIGNATURE.split(text, maxsplit=1)[0]
    lead = _LEAD.match(text)
    rest = text[lead.end() :] if lead else text
    rating: Rating | None = None
    weak = False
    for thumb, meaning in THUMBS.items():
        if rest.startswith(thumb):
            rating, rest = meaning, _SKIN_TONES.sub("", rest[len(thumb) :], count=1)
            break
    if rating is None:
        word = _WORD.match(rest)
        if word is not None and word.group().casefold() in INTENSIFIERS:
            after = rest[word.end() :].lstrip()
            following = _WORD.match(after)
            if following is not None and following.group().casefold() in GOOD_WORDS | BAD_WORDS:
                rest, word = after, following
        if word is None:
            return None
        first = word.group().casefold()
        if first in GOOD_WORDS or first in YES_WORDS:
            rating, weak = "good", first in YES_WORDS
        elif first in BAD_WORDS or first in NO_WORDS:
            rating, weak = "bad", first in NO_WORDS
        else:
            return None
        rest = rest[word.end() :]
    after = _AFTER.match(rest)
    comment = (rest[after.end() :] if after else rest).strip()
    if weak and ((rating == "bad" and comment) or len(comment.split()) > WEAK_MAX_WORDS):
        return None  # "No, thanks" declines; "No, it still ..." is a follow-up
    return rating, (comment[:MAX_COMMENT] or None)


# -- sending ------------------------------------------------------------------------


def sent(session: Session, ticket_id: int) -> bool:
    """Whether this ticket was ever sent a survey."""
    row = session.exec(
        select(Outbox.id).where(Outbox.ticket_id == ticket_id, Outbox.kind == "survey")
    ).first()
    return row is not None


def outstanding(session: Session, ticket: Ticket) -> bool:
    """Whether a reply on `ticket` may be a survey answer: surveyed, and still done."""
    return ticket.id is not None and ticket.status in OPEN_TO_ANSWER and sent(session, ticket.id)


def _agent_answered(session: Session, ticket_id: int) -> bool:
    row = session.exec(
        select(Message.id).where(
            Message.ticket_id == ticket_id,
            Message.direction == "out",
            col(Message.author).is_not(None),
        )
    ).first()
    return row is not None


def _reason_to_skip(session: Session, settings: Settings, ticket: Ticket) -> str | None:
    assert ticket.id is not None
    if not settings.survey.enabled:
        return "surveys are off"
    if ticket.status != "resolved":
        return f"the ticket is {ticket.status}, not resolved"
    address = (ticket.customer_addr or "").strip().lower()
    if not address:
        return "the ticket has no customer address"
    staff = ours(settings, address)
    if staff is not None:
        return f"the customer is {staff}"
    if sla.mailbox_of(settings, ticket) is None:
        return f"mailbox {ticket.mailbox!r} is not in the configuration"
    if sent(session, ticket.id):
        return "a survey was sent already"
    if not _agent_answered(session, ticket.id):
        return "no agent replied on the ticket"
    return None


def maybe_send(
    session: Session, *, settings: Settings, ticket: Ticket, secret: bytes, now: datetime
) -> bool:
    """Queue the survey for `ticket`, which has just become resolved; True when queued.

    Call it after the status change, in the same transaction. Safe to call again: a
    ticket is surveyed once, ever. Never raises for a template or address problem (the
    resolve goes through; the event says why no survey went out). Never commits.
    """
    if ticket.id is None:
        return False
    reason = _reason_to_skip(session, settings, ticket)
    if reason is not None:
        log.debug("no survey", extra={"ticket": ticket.id, "reason": reason})
        return False
    mailbox = sla.mailbox_of(settings, ticket)
    assert mailbox is not None and ticket.customer_addr is not None
    try:
        message = _build(session, settings, ticket, secret=secret, now=now)
    except (templates.TemplateProblem, ValueError) as exc:
        log.error("survey not sent", extra={"ticket": ticket.id, "error": str(exc)})
        events.record(
            session,
            ticket_id=ticket.id,
            at=now,
            actor=events.SYSTEM,
            kind="survey-failed",
            reason=str(exc),
        )
        return False
    outbox.queue_for_customer(
        session,
        kind="survey",
        mail=message,
        mailbox=mailbox,
        ticket=ticket,
        now=now,
        event="survey-sent",
    )
    return True


def _build(
    session: Session, settings: Settings, ticket: Ticket, *, secret: bytes, now: datetime
) -> compose.Rendered:

    assert ticket.id is not None and ticket.customer_addr is not None
    mailbox = sla.mailbox_of(settings, ticket)
    assert mailbox is not None
    context = {
        "ticket": {
            "id": ticket.id,
            "reference": settings.inboxd.tag(ticket.id),
            "subject": templates.plain(ticket.subject),
        },
        "customer": {
            "name": templates.plain(ticket.customer_name, limit=100),
            "address": templates.plain(ticket.customer_addr),
        },
        "agent": ticket.assignee or "",
        "mailbox": {
            "name": mailbox.name,
            "address": mailbox.address,
            "display_name": display_name(mailbox),
        },
    }
    body = templates.render(settings.survey.template, context, folder=settings.inboxd.templates)
    last = session.exec(
        select(Message.message_id)
        .where(
            Message.ticket_id == ticket.id,
            col(Message.direction).in_(("in", "out")),
            col(Message.message_id).is_not(None),
        )
        .order_by(col(Message.received_at).desc(), col(Message.id).desc())
    ).first()
    subject = f"{settings.inboxd.tag(ticket.id)} How did we do? {templates.plain(ticket.subject)}"
    return compose.render(
        compose.Outgoing(
            sender=mailbox.address,
            sender_name=display_name(mailbox),
            to=[ticket.customer_addr],
            subject=subject.strip(),
            text=body,
            at=now,
            reply_to=reply_address(mailbox.address, make_token(secret, ticket.id)),
            in_reply_to=last,
            auto_submitted="auto-generated",
        )
    )


def sample_context() -> dict[str, Any]:
    """Values of the survey template's variables, for `templates.check`."""
    return {
        "ticket": {"id": 1234, "reference": "[#1234]", "subject": "Printer on fire"},
        "customer": {"name": "Carla Customer", "address": "customer@example.org"},
        "agent": "ann@example.com",
        "mailbox": {
            "name": "support",
            "address": "support@example.com",
            "display_name": "Support",
        },
    }


# -- answers ------------------------------------------------------------------------


def record_answer(session: Session, *, ticket: Ticket, mail: ParsedMail, now: datetime) -> bool:
    """Store the rating when `mail` answers `ticket`'s survey; True when it did.

    For intake, when a customer's mail joins a resolved or closed ticket, before it
    reopens it: on True, do not reopen (and do not open a new ticket for a closed one).
    A second answer replaces the first (the events keep both). Never commits.
    """
    if ticket.id is None or not outstanding(session, ticket):
        return False
    sender = (mail.from_.addr if mail.from_ else "").strip().lower()
    if not sender or not _takes_part(session, ticket, sender):
        return False
    answer = parse_answer(reply_text(mail.text or ""))
    if answer is None:
        return False
    rating, comment = answer
    previous = ticket.csat
    ticket.csat, ticket.csat_comment = rating, comment
    events.record(
        session,
        ticket_id=ticket.id,
        at=now,
        actor=sender,
        kind="csat",
        rating=rating,
        comment=comment,
        previous=previous,
        message_id=mail.message_id,
    )
    return True


def _takes_part(session: Session, ticket: Ticket, address: str) -> bool:
    if address == (ticket.customer_addr or "").lower():
        return True
    row = session.exec(
        select(Participant.id).where(
            Participant.ticket_id == ticket.id, Participant.address == address
        )
    ).first()
    return row is not None
