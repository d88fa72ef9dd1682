"""Threading and dedupe through the real intake, against notmuch's ground truth."""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from support import CORPUS, make_mail

from inboxd.db import session_scope
from inboxd.models import Message, Ticket
from inboxd.tickets import intake
from inboxd.tickets.tokens import make_token, reply_address

GROUND_TRUTH = CORPUS / "threads_ground_truth.json"
SECRET = b"test-secret"
OWN = frozenset({"support@example.com", "billing@example.com"})
pytestmark = pytest.mark.skipif(not GROUND_TRUTH.exists(), reason="../shared/corpus is absent")


def config() -> intake.IntakeConfig:
    return intake.IntakeConfig(
        secret=SECRET,
        own_addresses=OWN,
        agents=frozenset({"ann@example.com"}),
        default_teams={"support": "frontline", "billing": "billing"},
    )


def receive(engine: Engine, data: bytes, mailbox: str = "support") -> intake.Received:
    with session_scope(engine) as s:
        return intake.receive(s, config(), mailbox=mailbox, data=data)


def pairwise(groups: dict[str, str | int | None]) -> set[tuple[str, str]]:
    """Unordered pairs of files that share a group (None is a group of its own)."""
    by: dict[object, list[str]] = defaultdict(list)
    for f, g in groups.items():
        by[g if g is not None else ("alone", f)].append(f)
    return {tuple(sorted(p)) for files in by.values() for p in itertools.combinations(files, 2)}  # type: ignore[misc]


def truth() -> dict[str, dict[str, str]]:
    """Per corpus, file -> thread as notmuch groups them; empty without ../shared/corpus."""
    if not GROUND_TRUTH.is_file():
        return {}
    doc = json.loads(GROUND_TRUTH.read_text())
    return {name: c["file_to_thread"] for name, c in doc["corpora"].items()}


@pytest.mark.parametrize("order", ["file", "shuffled"])
@pytest.mark.parametrize("corpus", sorted(truth()))
def test_corpus_threads_match_notmuch(corpus: str, order: str, sqlite_engine: Engine) -> None:
    expected = truth()[corpus]
    files = sorted(expected)
    if order == "shuffled":
        random.Random(42).shuffle(files)
    stored: dict[str, int] = {}
    for f in files:
        r = receive(sqlite_engine, (CORPUS / f).read_bytes())
        assert r.outcome != "quarantined", (f, r.reason)
        stored[f] = r.message_pk
    with Session(sqlite_engine) as s:  # where each mail is now, after any merges
        final = dict(s.exec(select(Message.id, Message.ticket_id)).all())
    got: dict[str, str | int | None] = {f: final[pk] for f, pk in stored.items()}
    want_pairs = pairwise(dict(expected))
    got_pairs = pairwise(got)
    precision = len(want_pairs & got_pairs) / len(got_pairs) if got_pairs else 1.0
    recall = len(want_pairs & got_pairs) / len(want_pairs) if want_pairs else 1.0
    print(f"{corpus} ({order}): pairwise precision {precision:.3f}, recall {recall:.3f}")  # noqa: T201
    assert got_pairs == want_pairs, {
        "missing": sorted(want_pairs - got_pairs)[:5],
        "extra": sorted(got_pairs - want_pairs)[:5],
    }


def test_header_edge_cases_from_notmuch(sqlite_engine: Engine) -> None:
    cases = json.loads(GROUND_TRUTH.read_text())["header_edge_cases_from_notmuch_T510"]["cases"]
    for case in cases:
        tickets: dict[str, int | None] = {}
        for headers in case["messages"]:
            lines = [f"{k}: {v}" for k, v in headers.items()]
            raw = "\r\n".join(
                ["From: someone@client.example", "To: support@example.com", *lines, "", "body", ""]
            )
            tickets[headers["Message-ID"]] = receive(sqlite_engine, raw.encode()).ticket_id
        for child, parent in case["expected_parent"].items():
            assert tickets[child] == tickets[parent], case["name"]
        for separate in case.get("expected_separate_thread", []):
            others = {t for mid, t in tickets.items() if mid != separate}
            assert tickets[separate] not in others, case["name"]


def test_stranger_with_a_ticket_tag_gets_a_new_ticket(sqlite_engine: Engine) -> None:
    first = receive(
        sqlite_engine, make_mail(subject="My order is late", sender="alice@client.example")
    )
    tag = f"[#{first.ticket_id}]"
    stranger = receive(
        sqlite_engine,
        make_mail(subject=f"Re: {tag} My order is late", sender="mallory@evil.example"),
    )
    assert stranger.outcome == "new-ticket"
    assert stranger.ticket_id != first.ticket_id
    with Session(sqlite_engine) as s:
        ticket = s.get(Ticket, stranger.ticket_id)
        assert ticket is not None and ticket.subject_ref == first.ticket_id
    # The customer herself may use the tag without any references: it joins.
    own = receive(
        sqlite_engine,
        make_mail(subject=f"Re: {tag} My order is late", sender="Alice@Client.example"),
    )
    assert (own.outcome, own.ticket_id) == ("joined", first.ticket_id)


def test_reply_token_threads_and_forged_token_does_not(sqlite_engine: Engine) -> None:
    first = receive(sqlite_engine, make_mail(subject="Cannot log in"))
    assert first.ticket_id is not None
    address = reply_address("support@example.com", make_token(SECRET, first.ticket_id))
    reply = receive(sqlite_engine, make_mail(subject="new subject, no references", to=address))
    assert (reply.outcome, reply.ticket_id) == ("joined", first.ticket_id)
    forged = reply_address("support@example.com", make_token(b"other-secret", first.ticket_id))
    other = receive(sqlite_engine, make_mail(subject="guessing", to=forged))
    assert other.outcome == "new-ticket"


def test_reply_reopens_resolved_and_closed_opens_linked_ticket(sqlite_engine: Engine) -> None:
    first_id = make_msgid(domain="client.example")
    first = receive(sqlite_engine, make_mail(subject="Broken", message_id=first_id))
    with session_scope(sqlite_engine) as s:
        t = s.get(Ticket, first.ticket_id)
        assert t is not None
        t.status = "resolved"
    second_id = make_msgid(domain="client.example")
    again = receive(
        sqlite_engine, make_mail(subject="Re: Broken", message_id=second_id, in_reply_to=first_id)
    )
    assert (again.outcome, again.ticket_id) == ("joined", first.ticket_id)
    with session_scope(sqlite_engine) as s:
        t = s.get(Ticket, first.ticket_id)
        assert t is not None and t.status == "open" and t.reopened == 1
        t.status = "closed"
    late = receive(sqlite_engine, make_mail(subject="Re: Broken", in_reply_to=second_id))
    assert late.outcome == "new-ticket"
    with Session(sqlite_engine) as s:
        new = s.get(Ticket, late.ticket_id)
        assert new is not None and new.previous_ticket == first.ticket_id


def test_same_message_id_in_two_mailboxes_is_one_message(sqlite_engine: Engine) -> None:
    mail = make_mail(subject="CC to both", to="support@example.com, billing@example.com")
    a = receive(sqlite_engine, mail, "support")
    b = receive(sqlite_engine, mail, "billing")
    assert a.outcome == "new-ticket" and b.outcome == "duplicate"
    assert a.ticket_id == b.ticket_id and a.message_pk == b.message_pk


def test_mail_without_message_id_is_deduped_by_content(sqlite_engine: Engine) -> None:
    raw = b"From: x@client.example\r\nTo: support@example.com\r\nSubject: no id\r\n\r\nhello\r\n"
    assert receive(sqlite_engine, raw).outcome == "new-ticket"
    assert receive(sqlite_engine, raw).outcome == "duplicate"
    with Session(sqlite_engine) as s:
        assert len(s.exec(select(Message)).all()) == 1


def test_auto_reply_without_ticket_is_stored_on_no_ticket(sqlite_engine: Engine) -> None:
    r = receive(
        sqlite_engine,
        make_mail(subject="Out of office", headers={"Auto-Submitted": "auto-replied"}),
    )
    assert r.outcome == "no-ticket" and r.classification == "auto-reply"
    with Session(sqlite_engine) as s:
        assert s.exec(select(Ticket)).all() == []


def test_mailing_list_mail_is_bulk_and_still_makes_a_ticket(sqlite_engine: Engine) -> None:
    r = receive(
        sqlite_engine, make_mail(subject="list post", headers={"List-Id": "<dev.lists.example>"})
    )
    assert r.outcome == "new-ticket" and r.classification == "bulk"


def _bounces() -> list[Path]:
    folder = CORPUS / "flufl-bounce" / "data"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_bounces_attach_to_the_ticket_of_the_mail_that_bounced(sqlite_engine: Engine) -> None:
    """Every flufl-bounce DSN naming its original lands on the ticket that holds that id."""
    from inboxd.mail.parse import UnparsableMail, parse
    from inboxd.tickets.classify import classify

    attached = named = 0
    for path in _bounces():
        raw = path.read_bytes()
        try:
            verdict = classify(parse(raw), raw, own_addresses=OWN)
        except UnparsableMail:
            continue
        original = verdict.bounce.original_message_id if verdict.bounce else None
        if verdict.kind != "bounce" or not original:
            continue
        named += 1
        seed = receive(
            sqlite_engine, make_mail(subject=f"original of {path.name}", message_id=f"<{original}>")
        )
        if seed.outcome == "duplicate":  # two bounces of one original
            seed = receive(sqlite_engine, make_mail(subject="again", message_id=f"<{original}>"))
        r = receive(sqlite_engine, raw)
        assert r.classification == "bounce", path.name
        if r.outcome == "duplicate":
            continue
        assert r.ticket_id == seed.ticket_id, path.name
        attached += 1
    assert named > 0
    print(f"bounces naming their original: {named}, attached: {attached}")  # noqa: T201
