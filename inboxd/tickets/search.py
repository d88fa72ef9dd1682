"""Full-text search: the tickets whose messages match a query, best first, with a snippet.

Query language (the same on both databases, close to PostgreSQL's `websearch_to_tsquery`):
words are ANDed; `"a phrase"` must appear as written; `-word` or `-"a phrase"` excludes;
`or` between two terms accepts either; `word*` (two letters or more before the star)
matches every word it begins. Everything else in the user's text is plain text: quotes,
parentheses, `*`, `:`, `NEAR`, `AND` never reach the database as syntax.
A term's words are its runs of letters and digits, as the index splits them, so
`alice@client.example` is the phrase "alice client example" and finds that address.

SQLite matches with FTS5 (`message_fts`, migration 0002) and ranks with bm25;
PostgreSQL with the GIN index over `inboxd_message_document(...)` and `ts_rank`. Both
weigh the subject above the addresses above the body. A ticket ranks by its best
matching message; the snippet is cut from that message in Python, so both databases
show the same text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import column, exists, func, literal_column, or_, table
from sqlmodel import Session, col, select

from inboxd.clock import utcnow
from inboxd.errors import ConfigError
from inboxd.models import OPEN_STATUSES, STATUSES, Delivery, Message, Ticket, TicketTag
from inboxd.tickets.views import TicketDoc, ticket_docs

__all__ = [
    "MAX_LIMIT",
    "MAX_TERMS",
    "Filters",
    "Query",
    "Term",
    "parse_query",
    "search",
    "snippet",
]

MAX_LIMIT = 1000
MAX_TERMS = 64  # a pasted page is no query (and would nest the tsquery too deep)
MAX_WORDS = 512
UNASSIGNED = "none"  # --assignee none: tickets nobody holds
SNIPPET_WIDTH = 160
MARK_START, MARK_END = "«", "»"  # around matched words in a snippet
_WORD = re.compile(r"[^\W_]+")  # letters and digits: what both indexes call a word
_SPACE = re.compile(r"\s+")
_FTS_WEIGHTS = "bm25(5.0, 1.0, 3.0)"  # subject, body, addrs (migration 0002's columns)


# -- the query ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    """Words that must appear in this order (one word is a phrase of one); with
    `prefix`, the last one only has to begin a word."""

    words: tuple[str, ...]
    prefix: bool = False

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass(frozen=True, slots=True)
class Query:
    """All of `must` (each an OR of terms) and none of `must_not`."""

    must: tuple[tuple[Term, ...], ...]
    must_not: tuple[Term, ...] = ()

    @property
    def empty(self) -> bool:
        """No positive term: such a query matches nothing (never "everything")."""
        return not self.must

    @property
    def terms(self) -> tuple[Term, ...]:
        return tuple(t for group in self.must for t in group)


_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')
_PREFIX = re.compile(r"(?<![^\W_])[^\W_]{2,}\*$")  # `refu*`: a word of 2+ characters, a star


def parse_query(text: str) -> Query:
    """Parse user text; never raises. Terms without a letter or digit are dropped."""
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    pending_or = False
    for match in _TOKEN.finditer(text):
        negated, phrase, bare = match.group(1), match.group(2), match.group(3)
        if bare is not None:
            if bare.lower() == "or" and groups:
                pending_or = True
                continue
            negated, phrase = ("-", bare[1:]) if bare.startswith("-") else ("", bare)
        words = tuple(w.lower() for w in _WORD.findall(phrase or ""))
        if not words:
            continue
        term = Term(words, prefix=bool(bare) and _PREFIX.search(bare) is not None)
        if negated:
            excluded.append(term)
            pending_or = False
        elif pending_or:
            groups[-1].append(term)
            pending_or = False
        else:
            groups.append([term])
    return Query(tuple(tuple(g) for g in groups), tuple(excluded))


def fts5_expression(query: Query) -> str:
    """The FTS5 MATCH text: every term a double-quoted string, so nothing is syntax."""

    def quoted(term: Term) -> str:
        return '"' + term.text.replace('"', '""') + '"' + ("*" if term.prefix else "")

    parts = []
    for group in query.must:
        inner = " OR ".join(quoted(t) for t in group)
        parts.append(f"({inner})" if len(group) > 1 else inner)
    expression = " AND ".join(parts)
    for term in query.must_not:
        expression = f"({expression}) NOT {quoted(term)}"
    return expression


def _pg_tsquery(query: Query) -> Any:
    """A tsquery built from bound phrases: user text is only ever a parameter."""

    simple = literal_column("'simple'::regconfig")

    def phrase(term: Term) -> Any:
        if not term.prefix:
            return func.phraseto_tsquery(simple, term.text)
        # The word is letters and digits only (`_WORD`): nothing in it is tsquery syntax.
        last = func.to_tsquery(simple, f"{term.words[-1]}:*")
        if len(term.words) == 1:
            return last
        return func.tsquery_phrase(func.phraseto_tsquery(simple, " ".join(term.words[:-1])), last)

    result: Any = None
    for group in query.must:
        either = phrase(group[0])
        for term in group[1:]:
            either = func.tsquery_or(either, phrase(term))
        result = either if result is None else func.tsquery_and(result, either)
    for term in query.must_not:
        result = func.tsquery_and(result, func.tsquery_not(phrase(term)))
    return result


# -- filters ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """Which tickets may match. `statuses=None` means any status (`--all`)."""

    team: str | None = None
    statuses: tuple[str, ...] | None = OPEN_STATUSES
    assignee: str | None = None  # an agent address, or "none" for unassigned
    priority: str | None = None
    tag: str | None = None
    mailbox: str | None = None

    def clauses(self) -> list[Any]:
        out: list[Any] = []
        if self.team is not None:
            out.append(col(Ticket.team) == self.team)
        if self.statuses is not None:
            unknown = sorted(set(self.statuses) - set(STATUSES))
            if unknown:
                raise ConfigError(
                    f"unknown status {unknown[0]!r} (statuses: {', '.join(STATUSES)})"
                )
            out.append(col(Ticket.status).in_(self.statuses))
        if self.assignee is not None:
            if self.assignee.lower() == UNASSIGNED:
                out.append(col(Ticket.assignee).is_(None))
            else:
                out.append(func.lower(col(Ticket.assignee)) == self.assignee.strip().lower())
        if self.priority is not None:
            out.append(col(Ticket.priority) == self.priority)
        if self.tag is not None:
            out.append(
                exists().where(
                    col(TicketTag.ticket_id) == col(Ticket.id), col(TicketTag.tag) == self.tag
                )
            )
        if self.mailbox is not None:
            other = Message.__table__.alias("in_mailbox")  # type: ignore[attr-defined]
            delivered = (
                exists()
                .where(other.c.ticket_id == col(Ticket.id))
                .where(col(Delivery.message_pk) == other.c.id)
                .where(col(Delivery.mailbox) == self.mailbox)
            )
            out.append(or_(col(Ticket.mailbox) == self.mailbox, delivered))
        return out


# -- search -------------------------------------------------------------------------


def search(
    session: Session,
    query: str,
    filters: Filters | None = None,
    limit: int = 20,
    *,
    now: datetime | None = None,
) -> list[TicketDoc]:
    """Tickets matching `query`, most relevant first, at most `limit`.

    Each is the `ticket list --json` object plus `snippet` (text around the first match
    in the best matching message, matched words between « and ») and `matched_message`
    (that message's row id). A query without a letter or digit matches nothing.
    Raises ConfigError for a limit out of range, an unknown status or an overlong query.
    Reads only.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit {limit} out of range (1 to {MAX_LIMIT})")
    parsed = parse_query(query)
    if parsed.empty:
        return []
    terms = [*parsed.terms, *parsed.must_not]
    if len(terms) > MAX_TERMS or sum(len(t.words) for t in terms) > MAX_WORDS:
        raise ConfigError(
            f"the query has {len(terms)} terms (at most {MAX_TERMS}, and {MAX_WORDS} words: "
            'search for fewer words, or quote a "phrase")'
        )
    # Our automatic mail (acks, surveys: outgoing without an author) says the same words on
    # every ticket; agents' replies and notes are worth finding.
    where = [
        *(filters or Filters()).clauses(),
        or_(col(Message.direction) != "out", col(Message.author).is_not(None)),
    ]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        ranked = _rank_postgresql(session, parsed, where, limit)
    else:
        ranked = _rank_sqlite(session, parsed, where, limit)
    if not ranked:
        return []
    ticket_ids = [t for t, _ in ranked]
    tickets = {
        t.id: t for t in session.exec(select(Ticket).where(col(Ticket.id).in_(ticket_ids))).all()
    }
    messages = {
        m.id: m
        for m in session.exec(
            select(Message).where(col(Message.id).in_([m for _, m in ranked]))
        ).all()
    }
    ordered = [tickets[t] for t in ticket_ids if t in tickets]
    docs = ticket_docs(session, ordered, now=now or utcnow())
    best = dict(ranked)
    for doc in docs:
        msg = messages.get(best[doc["id"]])
        doc["matched_message"] = msg.id if msg else None
        doc["snippet"] = message_snippet(msg, parsed.terms) if msg else ""
    return docs


def _rank_sqlite(
    session: Session, query: Query, where: list[Any], limit: int
) -> list[tuple[int, int]]:
    fts = table("message_fts", column("rowid"), column("rank"), column("message_fts"))
    hits = (
        select(
            col(Message.ticket_id).label("ticket_id"),
            col(Message.id).label("message_pk"),
            fts.c.rank.label("score"),
        )
        .select_from(fts)
        .join(Message, col(Message.id) == fts.c.rowid)
        .join(Ticket, col(Ticket.id) == col(Message.ticket_id))
        .where(fts.c.message_fts.op("MATCH")(fts5_expression(query)))
        .where(fts.c.rank.op("MATCH")(_FTS_WEIGHTS))
        .where(*where)
        .subquery("hits")
    )
    # SQLite: with one min() aggregate, a bare column comes from the row holding the min
    # (lang_select.html, "bare columns"): message_pk is the best matching message.
    best = func.min(hits.c.score)
    rows = session.exec(
        select(hits.c.ticket_id, hits.c.message_pk, best)
        .group_by(hits.c.ticket_id)
        .order_by(best, hits.c.ticket_id.desc())
        .limit(limit)
    ).all()
    return [(int(t), int(m)) for t, m, _ in rows]


def _rank_postgresql(
    session: Session, query: Query, where: list[Any], limit: int
) -> list[tuple[int, int]]:
    # The same call as the GIN index of migration 0002, so the planner uses it.
    document = func.inboxd_message_document(
        col(Message.subject),
        col(Message.text),
        col(Message.from_addr),
        col(Message.from_name),
        col(Message.to_addrs),
        col(Message.cc_addrs),
    )
    tsquery = _pg_tsquery(query)
    score = func.ts_rank(document, tsquery)
    place = func.row_number().over(
        partition_by=col(Message.ticket_id), order_by=(score.desc(), col(Message.id))
    )
    hits = (
        select(
            col(Message.ticket_id).label("ticket_id"),
            col(Message.id).label("message_pk"),
            score.label("score"),
            place.label("place"),
        )
        .join(Ticket, col(Ticket.id) == col(Message.ticket_id))
        .where(document.op("@@")(tsquery))
        .where(*where)
        .subquery("hits")
    )
    rows = session.exec(
        select(hits.c.ticket_id, hits.c.message_pk)
        .where(hits.c.place == 1)  # each ticket's best message
        .order_by(hits.c.score.desc(), hits.c.ticket_id.desc())
        .limit(limit)
    ).all()
    return [(int(t), int(m)) for t, m in rows]


# -- snippets -----------------------------------------------------------------------


def _pattern(terms: Sequence[Term]) -> re.Pattern[str] | None:
    """Any of the terms as written in text: its words separated by non-word characters."""
    alternatives = [
        r"(?<![^\W_])"
        + r"[\W_]+".join(re.escape(w) for w in t.words)
        + (r"[^\W_]*" if t.prefix else r"(?![^\W_])")
        for t in terms
        if t.words
    ]
    if not alternatives:
        return None
    return re.compile("|".join(alternatives), re.IGNORECASE)


def snippet(text: str, terms: Sequence[Term], *, width: int = SNIPPET_WIDTH) -> str | None:
    """About `width` characters of `text` around its first match of any term, on one
    line, matches marked « »; None when no term occurs in it."""
    flat = _SPACE.sub(" ", text).strip()
    pattern = _pattern(terms)
    if pattern is None:
        return None
    first = pattern.search(flat)
    if first is None:
        return None
    start = max(0, first.start() - width // 3)
    if start > 0:  # begin at a word boundary
        space = flat.find(" ", start)
        start = space + 1 if 0 <= space < first.start() else start
    end = min(len(flat), start + width)
    if end < len(flat):
        space = flat.rfind(" ", first.end(), end)
        end = space if space > 0 else end
    window = flat[start:end]
    marked = pattern.sub(lambda m: f"{MARK_START}{m.group(0)}{MARK_END}", window)
    return ("…" if start > 0 else "") + marked + ("…" if end < len(flat) else "")


def message_snippet(msg: Message, terms: Sequence[Term]) -> str:
    """The snippet of the best matching message: from its body, else subject, else the
    addresses; the body's start when the match is in none of them as written."""
    addresses = " ".join(
        filter(
            None,
            [
                msg.from_name,
                msg.from_addr,
                *(a.get("name") or "" for a in [*msg.to_addrs, *msg.cc_addrs]),
                *(a.get("addr") or "" for a in [*msg.to_addrs, *msg.cc_addrs]),
            ],
        )
    )
    for text in (msg.text, msg.subject, addresses):
        found = snippet(text or "", terms)
        if found is not None:
            return found
    flat = _SPACE.sub(" ", msg.text or msg.subject or "").strip()
    return flat[:SNIPPET_WIDTH] + ("…" if len(flat) > SNIPPET_WIDTH else "")
