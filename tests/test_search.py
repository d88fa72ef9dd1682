"""Full-text search, on SQLite (FTS5) and PostgreSQL (GIN), over tickets made by intake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy
from servers import Database
from sqlalchemy import Engine
from sqlmodel import Session, select
from support import Box, cli, cli_json, make_mail, write_config

from inboxd.db import insert_ignore, session_scope
from inboxd.errors import ConfigError
from inboxd.mail import compose
from inboxd.models import Message, Ticket, TicketTag
from inboxd.tickets import intake, merge, outbox
from inboxd.tickets.search import (
    MAX_TERMS,
    Filters,
    fts5_expression,
    parse_query,
    search,
    snippet,
)

OWN = frozenset({"support@example.com", "billing@example.com"})
CFG = intake.IntakeConfig(
    secret=b"x",
    own_addresses=OWN,
    default_teams={"support": "frontline", "billing": "billing"},
)
ANY = Filters(statuses=None)


def receive(engine: Engine, mailbox: str = "support", **mail: str) -> intake.Received:
    with session_scope(engine) as s:
        return intake.receive(s, CFG, mailbox=mailbox, data=make_mail(**mail))


def ids(engine: Engine, query: str, filters: Filters | None = None, limit: int = 20) -> list[int]:
    with Session(engine) as s:
        return [d["id"] for d in search(s, query, filters, limit)]


def docs(engine: Engine, query: str, filters: Filters | None = None) -> list[dict[str, object]]:
    with Session(engine) as s:
        return search(s, query, filters)


def update_ticket(engine: Engine, ticket_id: int, **values: object) -> None:
    with session_scope(engine) as s:
        ticket = s.get(Ticket, ticket_id)
        assert ticket is not None
        for k, v in values.items():
            setattr(ticket, k, v)


@pytest.fixture
def tickets(engine: Engine) -> dict[str, int]:
    """Four tickets: a refund, a login outage (with a follow-up), an invoice, a password."""
    refund = receive(
        engine,
        subject="Refund for order 1234",
        sender="Alice Example <alice@client.example>",
        body="I was charged twice for order 1234. Please refund the second charge.",
    )
    login = receive(
        engine,
        subject="Login broken",
        sender="bob@other.example",
        body="The login page says error 500 since this morning. The refund page works.",
        message_id="<login-1@other.example>",
    )
    follow_up = receive(
        engine,
        subject="Re: Login broken",
        sender="bob@other.example",
        body="Still broken: error 500 persists near the login button.\n\n> old quoted text",
        in_reply_to="<login-1@other.example>",
    )
    assert follow_up.outcome == "joined" and follow_up.ticket_id == login.ticket_id
    invoice = receive(
        engine,
        mailbox="billing",
        subject="Invoice question",
        sender="carol@client.example",
        to="billing@example.com",
        body="Where is my invoice for March? Our accountant (Jürgen) needs it.",
    )
    password = receive(
        engine,
        subject="Password reset",
        sender="dave@else.example",
        body="I forgot my password and the reset mail never arrives.",
    )
    out = {
        "refund": refund.ticket_id,
        "login": login.ticket_id,
        "invoice": invoice.ticket_id,
        "password": password.ticket_id,
    }
    assert all(isinstance(v, int) for v in out.values())
    return out  # type: ignore[return-value]


def test_words_rank_subject_above_body_with_snippets(
    engine: Engine, tickets: dict[str, int]
) -> None:
    found = docs(engine, "refund")
    assert [d["id"] for d in found] == [tickets["refund"], tickets["login"]]
    first, second = found
    assert first["subject"] == "Refund for order 1234" and first["status"] == "open"
    assert first["snippet"] == (
        "I was charged twice for order 1234. Please «refund» the second charge."
    )
    assert "The «refund» page works." in str(second["snippet"])
    assert isinstance(first["matched_message"], int)
    # Every word must match, in any order and case.
    assert ids(engine, "ORDER refund 1234") == [tickets["refund"]]
    assert ids(engine, "refund march") == []


def test_phrase_or_and_exclusion(engine: Engine, tickets: dict[str, int]) -> None:
    assert ids(engine, '"error 500"') == [tickets["login"]]
    assert ids(engine, '"500 error"') == []
    assert ids(engine, "refund -login") == [tickets["refund"]]
    assert ids(engine, 'refund -"page works"') == [tickets["refund"]]
    assert sorted(ids(engine, "invoice or password")) == sorted(
        [tickets["invoice"], tickets["password"]]
    )
    # A follow-up counts: its words find the ticket, its snippet is the one shown.
    [hit] = docs(engine, "persists")
    assert hit["id"] == tickets["login"]
    assert hit["snippet"] == (
        "Still broken: error 500 «persists» near the login button. > old quoted text"
    )


def test_prefix_matches_words_it_begins(engine: Engine, tickets: dict[str, int]) -> None:
    assert ids(engine, "refu*") == [tickets["refund"], tickets["login"]]
    assert ids(engine, "invo* -refu*") == [tickets["invoice"]]
    assert ids(engine, "client.exam*") == ids(engine, "client.example")
    [first, _] = docs(engine, "REFU*")
    assert first["snippet"] == (
        "I was charged twice for order 1234. Please «refund» the second charge."
    )
    assert ids(engine, "r*") == ids(engine, "r")  # one letter and a star is just the letter
    assert fts5_expression(parse_query("refu* -spam*")) == '("refu"*) NOT "spam"*'


def test_addresses_names_and_non_ascii(engine: Engine, tickets: dict[str, int]) -> None:
    assert ids(engine, "alice@client.example") == [tickets["refund"]]
    assert sorted(ids(engine, "client.example")) == sorted([tickets["refund"], tickets["invoice"]])
    assert ids(engine, "billing@example.com") == [tickets["invoice"]]
    [by_name] = docs(engine, "alice example")
    assert by_name["id"] == tickets["refund"]
    assert str(by_name["snippet"]).startswith("«Alice» «Example» «alice»@client.«example»")
    assert ids(engine, "jürgen") == [tickets["invoice"]]
    assert ids(engine, "JÜRGEN") == [tickets["invoice"]]


HOSTILE = [
    " ".join(f'"w{i} x{i}"' for i in range(MAX_TERMS)),
    '"unbalanced',
    'a" OR "b',
    "(refund",
    "refund)",
    "NEAR(refund login)",
    "refund NEAR login",
    "refund*",
    "*",
    "-",
    "--",
    "-refund",
    '"',
    '""',
    "AND OR NOT",
    "OR",
    "subject:refund",
    "^refund",
    "'; DROP TABLE ticket; --",
    "\\",
    "%_",
    "🙂",
    "   ",
    "",
    "{refund}",
    "refund:*",
    "!!refund",
    "refund & login | x",
    "<->",
    "refund or",
    "or refund",
    "refund -",
    "\x00refund",
    "a" * 5000,
]


def test_hostile_query_text_never_errors(engine: Engine, tickets: dict[str, int]) -> None:
    for text in HOSTILE:
        for filters in (None, ANY, Filters(team="frontline", tag="vip", assignee="none")):
            result = docs(engine, text, filters)
            assert all(d["id"] in tickets.values() for d in result), text


def test_overlong_query_is_refused(engine: Engine, tickets: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=r"the query has 65 terms \(at most 64"):
        docs(engine, "refund " * (MAX_TERMS + 1))
    with pytest.raises(ConfigError, match="512 words"):
        docs(engine, '"' + "refund " * 600 + '"')


def test_hostile_queries_mean_their_words(engine: Engine, tickets: dict[str, int]) -> None:
    refund = tickets["refund"]
    for text in ("(refund", "refund)", "refund*", "{refund}", "!!refund", "^refund", "refund:*"):
        assert ids(engine, text, Filters(team="frontline"))[0] == refund, text
    for text in ("*", "-", '""', "🙂", "", "-refund", "AND OR NOT" + " -and -or -not"):
        assert ids(engine, text) == [], text
    # Operators are words: NEAR, AND, OR NOT mean nothing special.
    assert ids(engine, "near login") == [tickets["login"]]  # "near the login button"
    assert ids(engine, "subject:refund") == []  # no column filters


def test_filters(engine: Engine, tickets: dict[str, int]) -> None:
    both = "refund or invoice or password or login"
    assert sorted(ids(engine, both)) == sorted(tickets.values())
    assert ids(engine, both, Filters(team="billing")) == [tickets["invoice"]]
    assert ids(engine, both, Filters(mailbox="billing")) == [tickets["invoice"]]

    update_ticket(engine, tickets["login"], assignee="ann@example.com", priority="urgent")
    assert ids(engine, both, Filters(assignee="ann@example.com")) == [tickets["login"]]
    assert ids(engine, both, Filters(assignee="ANN@example.com")) == [tickets["login"]]
    assert tickets["login"] not in ids(engine, both, Filters(assignee="none"))
    assert ids(engine, both, Filters(priority="urgent")) == [tickets["login"]]

    with session_scope(engine) as s:
        insert_ignore(s, TicketTag, [{"ticket_id": tickets["password"], "tag": "vip"}])
    assert ids(engine, both, Filters(tag="vip")) == [tickets["password"]]

    # Resolved tickets leave the default (open, pending) search; --all brings them back.
    update_ticket(engine, tickets["refund"], status="resolved")
    assert ids(engine, "refund") == [tickets["login"]]
    assert ids(engine, "refund", ANY) == [tickets["refund"], tickets["login"]]
    assert ids(engine, "refund", Filters(statuses=("resolved",))) == [tickets["refund"]]
    assert len(ids(engine, both, limit=2)) == 2


def test_same_mail_in_two_mailboxes_matches_either(engine: Engine, tickets: dict[str, int]) -> None:
    data = make_mail(subject="Double delivery", body="Quarterly statement attached")
    with session_scope(engine) as s:
        first = intake.receive(s, CFG, mailbox="support", data=data)
        again = intake.receive(s, CFG, mailbox="billing", data=data)
    assert again.outcome == "duplicate"
    assert ids(engine, "quarterly statement", Filters(mailbox="billing")) == [first.ticket_id]
    assert ids(engine, "quarterly statement", Filters(mailbox="support")) == [first.ticket_id]


def test_index_follows_edits_and_merges(engine: Engine, tickets: dict[str, int]) -> None:
    with session_scope(engine) as s:
        msg = s.exec(select(Message).where(Message.ticket_id == tickets["password"])).one()
        msg.text = "Rewritten after a reparse: the magic link expired."
        msg.to_addrs = [{"addr": "helpdesk@example.com", "name": "Help Desk"}]
    assert ids(engine, "forgot password") == []
    assert ids(engine, "magic link") == [tickets["password"]]
    assert ids(engine, "helpdesk@example.com") == [tickets["password"]]
    assert ids(engine, "support@example.com") != [tickets["password"]]

    with session_scope(engine) as s:
        source, into = s.get(Ticket, tickets["login"]), s.get(Ticket, tickets["refund"])
        assert source is not None and into is not None
        merge.merge(s, source=source, into=into, actor="ann@example.com", at=into.created_at,
                    reason="same customer")  # fmt: skip
    # The merged ticket's mail now finds the ticket it went into, never the merged one.
    assert ids(engine, "error 500", ANY) == [tickets["refund"]]

    with session_scope(engine) as s:
        for m in s.exec(select(Message).where(Message.ticket_id == tickets["invoice"])).all():
            s.delete(m)
    assert ids(engine, "invoice", ANY) == []


def queue_ack_and_reply(engine: Engine, ticket_id: int | None, ack: str, reply: str) -> None:
    """Our acknowledgement (automatic: no author) and an agent's reply on the ticket."""
    with session_scope(engine) as s:
        ticket = s.get(Ticket, ticket_id)
        assert ticket is not None
        for kind, author, text in (("ack", None, ack), ("reply", "ann@example.com", reply)):
            mail = compose.build(
                compose.Outgoing(
                    sender="support@example.com",
                    sender_name="Support",
                    to=[ticket.customer_addr or "customer@client.example"],
                    subject=f"Re: {ticket.subject}",
                    text=text,
                    at=ticket.created_at,
                )
            )
            outbox.enqueue(
                s, kind=kind, message=mail, smtp="default", now=ticket.created_at,
                mailbox="support", ticket=ticket, author=author,
            )  # fmt: skip


def test_agent_replies_are_found_automatic_mail_is_not(
    engine: Engine, tickets: dict[str, int]
) -> None:
    queue_ack_and_reply(
        engine,
        tickets["password"],
        "Thank you for your message: we received it.",
        "Please look in your spam folder.",
    )
    assert ids(engine, "received") == []  # every ticket's ack says it
    [hit] = docs(engine, "spam folder")
    assert hit["id"] == tickets["password"]
    assert hit["snippet"] == "Please look in your «spam» «folder»."
    if engine.dialect.name == "sqlite":  # nor does the ack cost a full-text row
        assert _fts_rows(engine, "received") == 0
        assert _fts_rows(engine, "spam") == 1


def test_upgrade_to_0006_drops_automatic_mail_from_the_sqlite_index(
    sqlite_database: Database,
) -> None:
    from alembic import command

    from inboxd.db import _alembic_config, upgrade

    engine = sqlite_database.engine
    command.downgrade(_alembic_config(sqlite_database.url), "0005")
    refund = receive(engine, subject="Refund please", body="charged twice")
    queue_ack_and_reply(
        engine, refund.ticket_id, "We received your message.", "The refund is on its way."
    )
    assert _fts_rows(engine, "received") == 1  # 0002 indexed every row

    upgrade(sqlite_database.url)

    assert _fts_rows(engine, "received") == 0
    assert _fts_rows(engine, "refund") == 2  # the customer's mail and the agent's reply
    assert ids(engine, "refund way") == [refund.ticket_id]
    # The new triggers keep it so: a later message of people is indexed, and deleting
    # rows (indexed or not) leaves a consistent index.
    later = receive(engine, subject="Another question", body="about invoices")
    assert ids(engine, "invoices") == [later.ticket_id]
    with session_scope(engine) as s:
        s.execute(sqlalchemy.text("DELETE FROM raw_mail"))
        s.execute(sqlalchemy.text("DELETE FROM delivery"))
        s.execute(sqlalchemy.text("DELETE FROM message WHERE direction = 'out'"))
    assert _fts_rows(engine, "refund") == 1
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("INSERT INTO message_fts(message_fts) VALUES ('integrity-check')")
        )


def _fts_rows(engine: Engine, word: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sqlalchemy.text("SELECT count(*) FROM message_fts WHERE message_fts MATCH :w"),
                {"w": word},
            ).scalar_one()
        )


def test_query_parsing_quotes_every_term() -> None:
    rendered = fts5_expression(parse_query('refund "error 500" -spam x or NEAR('))
    assert rendered == '("refund" AND "error 500" AND ("x" OR "near")) NOT "spam"'
    assert parse_query('* - "" ()').empty
    assert fts5_expression(parse_query('"a""b"')) == '"a" AND "b"'


def test_snippet_marks_phrases_across_punctuation() -> None:
    terms = parse_query("client.example").terms
    text = "Reply to alice@client.example please; client example again."
    assert snippet(text, terms) == "Reply to alice@«client.example» please; «client example» again."
    long = "word " * 100 + "needle " + "tail " * 100
    cut = snippet(long, parse_query("needle").terms)
    assert cut is not None and cut.startswith("…") and cut.endswith("…")
    assert "«needle»" in cut and len(cut) <= 170
    assert snippet("no match here", parse_query("absent").terms) is None


# -- the command line -----------------------------------------------------------------


def test_cli_search(database: Database, tmp_path: Path, tickets: dict[str, int]) -> None:
    config = write_config(
        tmp_path / "conf",
        database=database.url,
        boxes=[
            Box("support", "support@example.com"),
            Box("billing", "billing@example.com", team="billing"),
        ],
    )
    found = cli_json(config, "ticket", "search", "refund")
    assert [d["id"] for d in found] == [tickets["refund"], tickets["login"]]
    assert found[0]["snippet"].endswith("Please «refund» the second charge.")
    assert {"id", "subject", "status", "team", "tags", "csat", "snippet"} <= set(found[0])

    update_ticket(database.engine, tickets["refund"], status="closed")
    assert [d["id"] for d in cli_json(config, "ticket", "search", "charged")] == []
    closed = cli_json(config, "ticket", "search", "charged", "--all", "--team", "frontline")
    assert [d["id"] for d in closed] == [tickets["refund"]]

    proc = cli(config, "ticket", "search", "--json", "--", '-"(NEAR* refund) OR (', check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []  # only an exclusion: nothing, not everything

    text = cli(config, "ticket", "search", "error 500").stdout.decode()
    assert "Login broken" in text and "error 500" in text

    bad = cli(config, "ticket", "search", "x", "--status", "opn", check=False)
    assert bad.returncode == 2
    assert bad.stderr.decode().strip().splitlines() == [
        "inboxd: error: unknown status 'opn' (statuses: open, pending, resolved, closed, merged)"
    ]
    bad = cli(config, "ticket", "search", "x", "--limit", "0", check=False)
    assert bad.returncode == 2 and "limit 0 out of range" in bad.stderr.decode()


def test_the_daily_index_merge_runs_at_night_and_keeps_every_hit(
    engine: Engine, tickets: dict[str, int]
) -> None:
    """SQLite merges its full-text index once a day, in the quiet hour of inboxd's time
    zone (writers wait for it); PostgreSQL has nothing to do. The same tickets match
    before and after, and mail stored afterwards is found too."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from inboxd.tickets import searchindex

    queries = ["refund", '"error 500"', "invoice or password", "login -refund", "pass*"]
    before = {q: ids(engine, q, ANY) for q in queries}
    assert before["refund"] and before["pass*"] == [tickets["password"]]
    sqlite = engine.dialect.name == "sqlite"
    oslo = ZoneInfo("Europe/Oslo")  # UTC+1 in November

    def merged(at: datetime) -> bool:
        return searchindex.optimize_if_due(engine, at, zone=oslo, hour=3)

    night = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 03:00 in Oslo
    assert merged(night) is False  # the first check starts the clock
    assert merged(night + timedelta(hours=24)) is sqlite  # the next quiet hour
    assert merged(night + timedelta(hours=24, minutes=59)) is False  # once per night
    assert merged(night + timedelta(hours=25)) is False  # 04:00: not quiet
    assert {q: ids(engine, q, ANY) for q in queries} == before
    late = receive(engine, subject="Refund again", body="smoke from the fuser")
    # A daemon that is never up at 03:00 still merges, once the last merge is two days old.
    assert merged(night + timedelta(hours=24 + 47)) is False  # 02:00
    assert merged(night + timedelta(hours=24 + 49)) is sqlite  # 04:00, but overdue
    assert ids(engine, "fuser smoke", ANY) == [late.ticket_id]
    assert set(ids(engine, "refund", ANY)) == {late.ticket_id, *before["refund"]}


def test_a_batch_is_indexed_when_it_ends_as_its_mail_then_is(
    engine: Engine, tickets: dict[str, int]
) -> None:
    """A mailbox worker's batch (`searchindex.deferred`): the mail it stores is found once
    the batch ends, as edited or deleted within it, and older mail edited in it too."""
    from inboxd.tickets import searchindex

    with session_scope(engine) as s, searchindex.deferred(s):
        kept = intake.receive(
            s, CFG, mailbox="support", data=make_mail(subject="Toner empty", body="cyan")
        )
        edited = intake.receive(
            s, CFG, mailbox="support", data=make_mail(subject="Scanner jam", body="magenta")
        )
        gone = intake.receive(
            s, CFG, mailbox="support", data=make_mail(subject="Fax noise", body="yellow")
        )
        s.flush()
        new_msg = s.get(Message, edited.message_pk)
        old_msg = s.exec(select(Message).where(Message.ticket_id == tickets["password"])).one()
        assert new_msg is not None
        new_msg.text = "black, after a reparse"
        old_msg.text = "The reset link now works, thanks."
        s.delete(s.get(Message, gone.message_pk))
    assert ids(engine, "cyan") == [kept.ticket_id]
    assert ids(engine, "magenta") == [] and ids(engine, "black reparse") == [edited.ticket_id]
    assert ids(engine, "yellow", ANY) == [] and ids(engine, "fax", ANY) == []
    assert ids(engine, "forgot password") == [] and ids(engine, "reset link") == [
        tickets["password"]
    ]
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            assert conn.execute(sqlalchemy.text("SELECT count(*) FROM fts_deferred")).scalar() == 0
            conn.execute(
                sqlalchemy.text("INSERT INTO message_fts(message_fts) VALUES ('integrity-check')")
            )


def test_a_deferral_mark_left_behind_is_taken_over(sqlite_database: Database) -> None:
    """Should a mark ever be committed, mail stored under it is indexed by the next batch."""
    from inboxd.tickets import searchindex

    engine = sqlite_database.engine
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("INSERT INTO fts_deferred (above) VALUES (0)"))
    lost = receive(engine, subject="Stapler missing", body="somebody took it")
    assert ids(engine, "stapler") == []
    with session_scope(engine) as s, searchindex.deferred(s):
        pass
    assert ids(engine, "stapler") == [lost.ticket_id]
    assert ids(engine, "refund") == [] and receive(engine, subject="refund").ticket_id
    assert len(ids(engine, "refund")) == 1  # marks are gone: the triggers index again
