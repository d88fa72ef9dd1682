"""classify(): each signal on its own, their order, and the real-world corpora."""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inboxd.mail import msgids
from inboxd.mail.parse import Address, parse
from inboxd.tickets.classify import (
    Classification,
    classify,
    contact_form,
    is_machine_address,
    requester,
)

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")

OURS = frozenset({"support@desk.example", "Billing@Desk.Example"})


@pytest.fixture(autouse=True)
def _quiet_mailparser() -> Iterator[None]:
    logger = logging.getLogger("mailparser")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def mail(headers: str, body: str = "Hello, my invoice is wrong.\n") -> bytes:
    text = textwrap.dedent(headers).strip("\n") + "\n\n" + textwrap.dedent(body).lstrip("\n")
    return text.replace("\n", "\r\n").encode("utf-8")


def run(raw: bytes, **kwargs: Any) -> Classification:
    kwargs.setdefault("own_addresses", OURS)
    return classify(parse(raw), raw, **kwargs)


HUMAN_HEADERS = (
    "From: Carol Customer <carol@example.com>\n"
    "To: support@desk.example\n"
    "Subject: Invoice 1234 is wrong\n"
    "Message-ID: <c1@example.com>"
)


def test_plain_customer_mail_is_human_and_may_be_acknowledged() -> None:
    result = run(mail(HUMAN_HEADERS))
    assert result.kind == "human"
    assert result.may_acknowledge is True
    assert result.bounce is None


# -- own ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender", ["support@desk.example", "BILLING@desk.example", "support+t0k3n@desk.example"]
)
def test_mail_from_our_own_address_is_own(sender: str) -> None:
    result = run(mail(f"From: {sender}\nTo: carol@example.com\nSubject: Re: [#12] hi"))
    assert result.kind == "own"
    assert result.may_acknowledge is False


def test_our_loop_header_marks_own_mail_even_from_another_address() -> None:
    raw = mail("From: relay@example.com\nSubject: x\nX-Inboxd-Loop: desk-1")
    assert run(raw).kind == "own"
    assert run(raw, loop_header="X-Other-Loop").kind == "human"


def test_own_outranks_spam() -> None:
    raw = mail("From: support@desk.example\nSubject: x\nX-Spam-Flag: YES")
    assert run(raw).kind == "own"


# -- spam -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    ["X-Spam-Flag: YES", "X-Spam-Flag: yes", "X-Spam-Status: Yes, score=9.1 required=5.0"],
)
def test_spam_headers(header: str) -> None:
    result = run(mail(f"{HUMAN_HEADERS}\n{header}"))
    assert result.kind == "spam"
    assert result.may_acknowledge is False


def test_spam_status_no_is_not_spam() -> None:
    assert run(mail(f"{HUMAN_HEADERS}\nX-Spam-Status: No, score=0.1")).kind == "human"


@pytest.mark.parametrize(
    ("entry", "blocked"),
    [
        ("carol@example.com", True),
        ("CAROL@EXAMPLE.COM", True),
        ("@example.com", True),
        ("*@example.*", True),
        ("carol@*", True),
        ("@mail.example.com", False),
        ("@other.example", False),
        ("bob@example.com", False),
    ],
)
def test_blocklist_entries(entry: str, blocked: bool) -> None:
    result = run(mail(HUMAN_HEADERS), blocklist=[entry])
    assert (result.kind == "spam") is blocked
    if blocked:
        assert entry in result.reasons[0]


def test_spam_outranks_bounce() -> None:
    raw = mail("From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail\nX-Spam-Flag: YES")
    assert run(raw).kind == "spam"


# -- bounce ---------------------------------------------------------------------------------------

DSN = """
    From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
    To: support@desk.example
    Subject: Undelivered Mail Returned to Sender
    Auto-Submitted: auto-replied
    MIME-Version: 1.0
    Content-Type: multipart/report; report-type=delivery-status; boundary="R"
"""

DSN_BODY = """
    --R
    Content-Type: text/plain

    I'm sorry to have to inform you that your message could not be delivered.

    --R
    Content-Type: message/delivery-status

    Reporting-MTA: dns; mx.example.net

    Final-Recipient: rfc822; gone@example.org
    Original-Recipient: rfc822;Gone.Alias@example.org
    Action: failed
    Status: 5.1.1
    Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: Recipient address
        rejected: User unknown

    Final-Recipient: rfc822; slow@example.org
    Action: delayed
    Status: 4.4.1

    Final-Recipient: rfc822; fine@example.org
    Action: delivered
    Status: 2.0.0

    --R
    Content-Type: message/rfc822

    From: support@desk.example
    To: gone@example.org
    Subject: Your ticket [#12]
    Message-ID: <ack-12@desk.example>

    We got your mail.
    --R--
"""


def test_rfc3464_dsn_gives_per_recipient_details() -> None:
    result = run(mail(DSN, DSN_BODY))
    assert result.kind == "bounce"
    assert result.may_acknowledge is False
    assert "multipart/report; report-type=delivery-status" in result.reasons
    assert result.bounce is not None
    assert result.bounce.original_message_id == "ack-12@desk.example"
    gone, slow = result.bounce.recipients
    assert (gone.address, gone.status, gone.temporary) == ("gone.alias@example.org", "5.1.1", False)
    assert gone.diagnostic is not None and "User unknown" in gone.diagnostic
    assert "\n" not in gone.diagnostic
    assert (slow.address, slow.status, slow.temporary) == ("slow@example.org", "4.4.1", True)
    assert result.bounce.temporary is False  # one failure is permanent


def test_delay_only_dsn_is_temporary() -> None:
    body = DSN_BODY.replace("Action: failed", "Action: delayed").replace("5.1.1", "4.2.2")
    result = run(mail(DSN, body))
    assert result.bounce is not None
    assert result.bounce.temporary is True
    assert all(r.temporary for r in result.bounce.recipients)


def test_bounce_outranks_auto_submitted() -> None:
    # The DSN above carries Auto-Submitted: auto-replied; it is still a bounce.
    assert run(mail(DSN, DSN_BODY)).kind == "bounce"


def test_postfix_text_bounce_without_dsn_part() -> None:
    raw = mail(
        """
        From: MAILER-DAEMON@mail.example.net (Mail Delivery System)
        To: support@desk.example
        Subject: Undelivered Mail Returned to Sender
        """,
        """
        This is the Postfix program at host mail.example.net.

        I'm sorry to have to inform you that the message returned
        below could not be delivered to one or more destinations.

        <nobody@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1
            <nobody@example.org>... User unknown

        --- Below this line is a copy of the message.

        From: support@desk.example
        To: nobody@example.org, cc-person@example.org
        Message-ID: <reply-7@desk.example>

        text
        """,
    )
    result = run(raw)
    assert result.kind == "bounce"
    assert result.bounce is not None
    assert [r.address for r in result.bounce.recipients] == ["nobody@example.org"]
    assert result.bounce.recipients[0].status == "5.1.1"
    assert result.bounce.original_message_id == "reply-7@desk.example"


def test_null_return_path_with_returned_message_is_a_bounce() -> None:
    raw = mail(
        """
        Return-Path: <>
        From: gateway@mx.example.net
        To: support@desk.example
        Subject: Notice
        MIME-Version: 1.0
        Content-Type: multipart/mixed; boundary="M"
        """,
        """
        --M
        Content-Type: text/plain

        Your message could not be delivered to the following recipients:

            lost@example.org

        --M
        Content-Type: message/rfc822

        From: support@desk.example
        Message-ID: <n-1@desk.example>

        hi
        --M--
        """,
    )
    result = run(raw)
    assert result.kind == "bounce"
    assert "null Return-Path <>" in result.reasons
    assert result.bounce is not None
    assert [r.address for r in result.bounce.recipients] == ["lost@example.org"]
    assert result.bounce.original_message_id == "n-1@desk.example"


def test_customer_forwarding_a_bounce_is_human() -> None:
    raw = mail(
        """
        From: Carol Customer <carol@example.com>
        To: support@desk.example
        Subject: Fwd: Undelivered Mail Returned to Sender
        MIME-Version: 1.0
        Content-Type: multipart/mixed; boundary="F"
        """,
        """
        --F
        Content-Type: text/plain

        Why did my mail to you bounce?

        --F
        Content-Type: message/rfc822

        From: MAILER-DAEMON@mx.example.com
        Subject: Undelivered Mail Returned to Sender

        could not be delivered
        --F--
        """,
    )
    assert run(raw).kind == "human"


def test_mdn_that_says_deleted_is_a_bounce_read_receipt_is_auto_reply() -> None:
    headers = """
        From: Mail Delivery Subsystem <admin@mx.example.net>
        To: support@desk.example
        Subject: {subject}
        MIME-Version: 1.0
        Content-Type: multipart/report; report-type=disposition-notification; boundary="D"
    """
    body = """
        --D
        Content-Type: text/plain

        {text}
        --D
        Content-Type: message/disposition-notification

        Reporting-UA: mail; Dovecot
        Final-Recipient: rfc822; full@example.org
        Original-Message-ID: <sent-3@desk.example>
        Disposition: automatic-action/MDN-sent-automatically; {disposition}
        --D--
    """
    rejected = run(
        mail(
            headers.format(subject="Automatically rejected mail"),
            body.format(text="Your message was rejected: Quota exceeded", disposition="deleted"),
        )
    )
    assert rejected.kind == "bounce"
    assert rejected.bounce is not None
    assert [r.address for r in rejected.bounce.recipients] == ["full@example.org"]
    assert rejected.bounce.original_message_id == "sent-3@desk.example"

    receipt = run(
        mail(
            headers.format(subject="Read: Your ticket"),
            body.format(text="Your message was displayed.", disposition="displayed"),
        )
    )
    assert receipt.kind == "auto-reply"
    assert receipt.reasons == ("read receipt (MDN: displayed)",)


# -- auto-reply -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated",
        "Auto-Submitted: auto-notified; owner-email=a@b.example",
        "X-Autoreply: yes",
        "X-Autorespond: Thanks for your mail",
        "Precedence: auto_reply",
        "X-Autogenerated: Reply",
    ],
)
def test_auto_reply_headers(header: str) -> None:
    result = run(mail(f"{HUMAN_HEADERS}\n{header}"))
    assert result.kind == "auto-reply"
    assert result.may_acknowledge is False
    assert result.reasons


def test_auto_response_suppress_is_a_request_not_a_signal() -> None:
    assert run(mail(f"{HUMAN_HEADERS}\nX-Auto-Response-Suppress: All")).kind == "human"


def test_auto_submitted_no_is_human() -> None:
    assert run(mail(f"{HUMAN_HEADERS}\nAuto-Submitted: no")).kind == "human"


def test_auto_reply_outranks_bulk() -> None:
    raw = mail(f"{HUMAN_HEADERS}\nAuto-Submitted: auto-replied\nList-Id: <l.example.com>")
    assert run(raw).kind == "auto-reply"


# -- bulk -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Precedence: bulk",
        "Precedence: junk",
        "Precedence: list",
        "List-Id: Users <users.lists.example.com>",
        "List-Unsubscribe: <mailto:leave@lists.example.com>",
    ],
)
def test_bulk_headers(header: str) -> None:
    result = run(mail(f"{HUMAN_HEADERS}\n{header}"))
    assert result.kind == "bulk"
    assert result.may_acknowledge is False


# -- weak signals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "Auto reply: Invoice",
        "Automatic reply: Invoice 1234",
        "Autoreply",
        "Out of Office: Invoice",
        "Out of the office until Monday",
        "Abwesenheitsnotiz: Rechnung",
        "Réponse automatique : facture",
        "Respuesta automática: factura",
        "Risposta automatica: fattura",
        "Automatisch antwoord: factuur",
        "Fuera de la oficina",
        "Frånvaro: faktura",
        "Fravær",
        "[support #33575] AutoReply: printer",
    ],
)
def test_vacation_subject_alone_is_auto_reply(subject: str) -> None:
    raw = mail(f"From: carol@example.com\nTo: support@desk.example\nSubject: {subject}")
    result = run(raw)
    assert result.kind == "auto-reply"
    assert "(weak)" in result.reasons[0]


def test_vacation_subject_vetoed_by_auto_submitted_no() -> None:
    raw = mail("From: carol@example.com\nSubject: Out of office\nAuto-Submitted: no")
    assert run(raw).kind == "human"


def test_person_asking_about_office_hours_is_human() -> None:
    raw = mail(
        "From: carol@example.com\nSubject: Re: are you out of office on Friday?\n"
        "In-Reply-To: <x@desk.example>"
    )
    assert run(raw).kind == "human"


def test_legacy_precedence_junk_vacation_reply_is_auto_reply_not_bulk() -> None:
    raw = mail("From: carol@example.com\nSubject: Out of Office: x\nPrecedence: junk")
    assert run(raw).kind == "auto-reply"


def test_list_mail_with_vacation_words_stays_bulk() -> None:
    raw = mail("From: carol@example.com\nSubject: Out of office tools\nList-Id: <l.example>")
    assert run(raw).kind == "bulk"


@pytest.mark.parametrize(
    ("local", "kind"),
    [
        ("mailer-daemon", "bounce"),
        ("postmaster", "bounce"),
        ("post_master", "bounce"),
        ("bounces", "bounce"),
        ("noreply", "auto-reply"),
        ("no-reply", "auto-reply"),
        ("do-not-reply", "auto-reply"),
        ("donotreply", "auto-reply"),
    ],
)
def test_machine_sender_local_part_alone(local: str, kind: str) -> None:
    raw = mail(f"From: {local}@service.example\nSubject: Your account\nTo: support@desk.example")
    result = run(raw)
    assert result.kind == kind
    assert result.reasons[0].endswith("(weak)")
    assert run(mail(f"From: {local}@service.example\nSubject: hi\nAuto-Submitted: no")).kind == (
        "human"
    )


# -- web contact forms ----------------------------------------------------------------------------


def form(
    sender: str, reply_to: str, extra: str = "", subject: str = "New message from site"
) -> bytes:
    headers = f"From: {sender}\nTo: support@desk.example\nSubject: {subject}\nReply-To: {reply_to}"
    return mail(
        headers + (f"\n{extra}" if extra else ""), "Name: Jane\nMessage: my order is late\n"
    )


@pytest.mark.parametrize(
    "sender",
    [
        "My Shop <wordpress@myshop.example>",  # Contact Form 7's default sender
        "Typeform <no-reply@typeform.example>",
        "Shopify <mailer@shopify.example>",
        "noreply@forms.example",
        "do-not-reply@site.example",
    ],
)
def test_contact_form_is_human_and_the_customer_is_the_reply_to(sender: str) -> None:
    raw = form(sender, "Jane Doe <Jane@Customer.example>")
    result = run(raw)
    assert result.kind == "human"
    assert result.may_acknowledge is True
    parsed = parse(raw)
    assert requester(parsed, own_addresses=OURS) == Address("jane@customer.example", "Jane Doe")
    assert contact_form(parsed, own_addresses=OURS) == Address("jane@customer.example", "Jane Doe")


def test_contact_form_reason_names_the_customer() -> None:
    result = run(form("noreply@forms.example", "jane@customer.example"))
    assert result.reasons == (
        "contact form: sender noreply@forms.example, customer jane@customer.example in Reply-To",
    )


def test_plain_mail_keeps_from_as_requester_even_with_a_reply_to() -> None:
    """A person's own Reply-To (a private address) does not make a contact form."""
    raw = mail(HUMAN_HEADERS + "\nReply-To: carol.private@home.example")
    assert run(raw).kind == "human"
    parsed = parse(raw)
    assert contact_form(parsed) is None
    assert requester(parsed) == parsed.from_
    no_reply_to = parse(mail("From: noreply@forms.example\nSubject: hi"))
    assert requester(no_reply_to) == no_reply_to.from_


@pytest.mark.parametrize(
    ("sender", "reply_to", "extra", "subject", "kind"),
    [
        # RFC 3834 and friends: a strong signal wins whatever Reply-To says.
        (
            "noreply@shop.example",
            "jane@customer.example",
            "Auto-Submitted: auto-replied",
            None,
            "auto-reply",
        ),
        ("noreply@shop.example", "jane@customer.example", "X-Autoreply: yes", None, "auto-reply"),
        # A vacation message from a no-reply robot is still one.
        (
            "noreply@shop.example",
            "jane@customer.example",
            "",
            "Out of office: back Monday",
            "auto-reply",
        ),
        # Bounces, however they are addressed.
        (
            "MAILER-DAEMON@mx.example",
            "jane@customer.example",
            "",
            "Undelivered Mail Returned to Sender",
            "bounce",
        ),
        ("mailer-daemon@mx.example", "jane@customer.example", "", None, "bounce"),
        # The shop's own machine mail answering through its own support desk.
        ("no-reply@mail.shop.example", "support@shop.example", "", None, "auto-reply"),
        # Reply-To is another robot, or us.
        ("no-reply@shop.example", "noreply@other.example", "", None, "auto-reply"),
        ("no-reply@shop.example", "support@desk.example", "", None, "auto-reply"),
        # Newsletters and old vacation programs.
        (
            "noreply@shop.example",
            "jane@customer.example",
            "List-Unsubscribe: <mailto:u@x>",
            None,
            "bulk",
        ),
        ("noreply@shop.example", "jane@customer.example", "Precedence: bulk", None, "auto-reply"),
        # A display name that is an address other than Reply-To: phishing, not a form
        # (mail-parser corpus mail_test_15 is one).
        (
            '"ceo@firm.example" <do-not-reply@gov.example>',
            "ceo@flrm.example",
            "",
            None,
            "auto-reply",
        ),
    ],
)
def test_machine_mail_with_a_reply_to_keeps_its_kind(
    sender: str, reply_to: str, extra: str, subject: str | None, kind: str
) -> None:
    raw = form(sender, reply_to, extra, subject or "Your order")
    assert run(raw).kind == kind


def test_contact_form_with_the_customer_named_in_the_display_name() -> None:
    """Some forms send as "jane@customer.example <wordpress@site>": the same person."""
    raw = form('"jane@customer.example" <wordpress@site.example>', "jane@customer.example")
    assert run(raw).kind == "human"
    assert requester(parse(raw)) == Address("jane@customer.example")


def test_machine_addresses() -> None:
    for addr in (
        "noreply@x.example",
        "No-Reply+7@x.example",
        "wordpress@x.example",
        "mailer-daemon@x.example",
        "postmaster@x.example",
    ):
        assert is_machine_address(addr), addr
    for addr in ("jane@x.example", "support@x.example", "noreply.jane@x.example"):
        assert not is_machine_address(addr), addr


@needs_corpus
def test_corpus_contact_form_is_human_and_for_the_visitor() -> None:
    """A TYPO3 contact form from a French town hall's site (imap_tools corpus)."""
    raw = (CORPUS / "imap_tools" / "messages" / "text_with_content_id.eml").read_bytes()
    assert run(raw, own_addresses=frozenset()).kind == "human"
    assert requester(parse(raw)) == Address("emmanuellehelou@orange.fr", "HELOU")


@needs_corpus
def test_corpus_phishing_dressed_as_a_form_stays_auto_reply() -> None:
    raw = (CORPUS / "mail-parser" / "mails" / "mail_test_15").read_bytes()
    assert run(raw, own_addresses=frozenset()).kind == "auto-reply"
    assert contact_form(parse(raw)) is None


# -- flufl.bounce corpus --------------------------------------------------------------------------

FLUFL = CORPUS / "flufl-bounce"
# Detected by flufl.bounce only with site knowledge we do not encode.
FLUFL_XFAIL = {
    "yale_01.txt": "Yale's phquery reply names a bare 'userx'; flufl expands it to the "
    "cs.yale.edu and yale.edu addresses by a Yale-specific rule",
}


def _flufl_cases() -> list[Any]:
    path = FLUFL / "expected_detectors.json"
    if not path.is_file():
        return []
    expected: dict[str, list[dict[str, Any]]] = json.loads(path.read_text())["expected"]
    cases = []
    for name, entries in sorted(expected.items()):
        marks = (
            [pytest.mark.xfail(reason=FLUFL_XFAIL[name], strict=True)]
            if (name in FLUFL_XFAIL)
            else []
        )
        cases.append(pytest.param(name, entries, marks=marks, id=name))
    return cases


@needs_corpus
@pytest.mark.parametrize(("name", "entries"), _flufl_cases())
def test_flufl_bounce_corpus(name: str, entries: list[dict[str, Any]]) -> None:
    raw = (FLUFL / "data" / name).read_bytes()
    result = run(raw, own_addresses=frozenset())
    wanted = {a.lower() for entry in entries for a in entry["addresses"]}
    found = {r.address for r in result.bounce.recipients} if result.bounce else set()
    if not wanted:
        # flufl finds no address: a non-bounce, or a bounce that names none.
        assert found == set()
        return
    assert result.kind == "bounce"
    assert result.may_acknowledge is False
    assert found == wanted
    temporary = any(e["temporary"] for e in entries if e["addresses"])
    assert result.bounce is not None
    assert result.bounce.temporary is temporary


@needs_corpus
@pytest.mark.parametrize(
    ("name", "kind"),
    [("qmail_08.txt", "auto-reply"), ("groupwise_03.txt", "human"), ("simple_43.txt", "bounce")],
)
def test_flufl_files_without_addresses(name: str, kind: str) -> None:
    """The corpus' no-address entries: an autoresponder, a person's reply, a bounce
    that names no recipient."""
    raw = (FLUFL / "data" / name).read_bytes()
    assert run(raw, own_addresses=frozenset()).kind == kind


@needs_corpus
def test_flufl_original_message_id_is_the_returned_mails() -> None:
    raw = (FLUFL / "data" / "dsn_10.txt").read_bytes()
    result = run(raw, own_addresses=frozenset())
    assert result.bounce is not None
    # Not the bounce's own Message-ID (<20021021152058.7A58560E24@brainy...>).
    assert result.bounce.original_message_id == "200210211625.12753.b.a.dude@example.com"


@needs_corpus
def test_imap_tools_multi_address_bounce() -> None:
    path = CORPUS / "imap_tools/messages/multipart_report_emails/multi_address_bounce1.eml"
    result = run(path.read_bytes(), own_addresses=frozenset())
    assert result.kind == "bounce"
    assert result.bounce is not None
    assert len(result.bounce.recipients) == 5
    assert all(r.address.endswith("@gmail.com") for r in result.bounce.recipients)


# -- notmuch: list mail and people ----------------------------------------------------------------


def _has_list_id(path: Path) -> bool:
    head = path.read_bytes().split(b"\n\n", 1)[0]
    return any(line.lower().startswith(b"list-id:") for line in head.split(b"\n"))


def _notmuch_default() -> list[Any]:
    folder = CORPUS / "notmuch" / "corpora" / "default"
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return [pytest.param(p, id=p.relative_to(folder).as_posix()) for p in files]


@needs_corpus
@pytest.mark.parametrize("path", _notmuch_default())
def test_notmuch_default_list_mail_is_bulk_and_the_rest_human(path: Path) -> None:
    """Mailing-list posts: bulk when delivered with List-Id (9 of 53 files), else
    the person who wrote them."""
    result = run(path.read_bytes(), own_addresses=frozenset())
    assert result.kind == ("bulk" if _has_list_id(path) else "human")


# -- Message-ID header edge cases (notmuch T510) --------------------------------------------------


def _t510_cases() -> list[Any]:
    path = CORPUS / "threads_ground_truth.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())["header_edge_cases_from_notmuch_T510"]["cases"]
    return [pytest.param(case, id=case["name"]) for case in data]


@needs_corpus
@pytest.mark.parametrize("case", _t510_cases())
def test_t510_parent_is_the_first_known_candidate(case: dict[str, Any]) -> None:
    known = {msgids.normalize_id(m["Message-ID"]) for m in case["messages"]}
    for message in case["messages"]:
        child = message["Message-ID"]
        candidates = msgids.parent_candidates(
            message.get("In-Reply-To"), message.get("References"), message_id=child
        )
        parent = next((c for c in candidates if c in known), None)
        expected = case["expected_parent"].get(child)
        assert parent == msgids.normalize_id(expected), child
    for separate in case.get("expected_separate_thread", []):
        for message in case["messages"]:
            candidates = msgids.parent_candidates(
                message.get("In-Reply-To"), message.get("References")
            )
            assert msgids.normalize_id(separate) not in candidates


def test_dodgy_in_reply_to_ranks_after_references() -> None:
    assert msgids.parent_candidates(
        "Your message of December 31 1999 <bar@baz.com>", "<foo@two.com>"
    ) == ("foo@two.com", "bar@baz.com")
    assert msgids.parent_candidates("<a@x>", "<r@x> <b@x>") == ("a@x", "b@x", "r@x")
    assert msgids.parent_candidates("mumble", None) == ()
