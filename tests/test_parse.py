"""Unit tests for raw bytes -> ParsedMail, Message-ID helpers and body text."""

from __future__ import annotations

import base64
import hashlib
import re
import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from inboxd.mail import msgids
from inboxd.mail.parse import (
    UnparsableMail,
    attachment_payload,
    parse,
    safe_filename,
)
from inboxd.mail.text import html_to_text, reply_text


def mail(text: str, *, crlf: bool = True) -> bytes:
    """A message from an indented literal; CRLF line ends as on the wire."""
    body = textwrap.dedent(text).lstrip("\n")
    if crlf:
        body = body.replace("\n", "\r\n")
    return body.encode("utf-8")


PLAIN = mail(
    """
    From: Alice Example <Alice@Example.COM>
    To: support@ourdesk.example
    Subject: Printer on fire
    Date: Tue, 01 Jul 2025 09:30:00 +0530
    Message-ID: <abc.123@example.com>

    The printer in room 4 is on fire.
    """
)


# -- subject ---------------------------------------------------------------------------------


def test_subject_rfc2047_words_in_two_charsets_are_decoded() -> None:
    raw = mail(
        """
        From: a@example.com
        Subject: =?UTF-8?B?0J/RgNC40LLQtdGC?= =?iso-8859-1?q?_caf=E9?= and more

        x
        """
    )
    assert parse(raw).subject == "Привет café and more"


def test_subject_multibyte_character_split_across_encoded_words() -> None:
    # "日本" in UTF-8 is e6 97 a5 e6 9c ac; a mailer cut the word after 4 bytes.
    raw = mail(
        """
        From: a@example.com
        Subject: =?utf-8?B?5pel5g==?= =?utf-8?B?nKw=?=

        x
        """
    )
    assert parse(raw).subject == "日本"


def test_subject_folding_and_tabs_collapse_to_single_spaces() -> None:
    raw = mail(
        """
        From: a@example.com
        Subject: Refund\trequest
         for order
        \t 42

        x
        """
    )
    assert parse(raw).subject == "Refund request for order 42"


def test_encoded_crlf_in_subject_cannot_become_a_header_line() -> None:
    raw = mail(
        """
        From: a@example.com
        Subject: =?utf-8?q?hello=0D=0ABcc:_victim@example.net?=

        x
        """
    )
    subject = parse(raw).subject
    assert "\r" not in subject
    assert "\n" not in subject
    assert subject == "hello Bcc: victim@example.net"


def test_raw_latin1_subject_is_read_as_windows_1252() -> None:
    raw = b"From: a@example.com\r\nSubject: Caf\xe9 cr\xe8me\r\n\r\nx\r\n"
    assert parse(raw).subject == "Café crème"


def test_raw_utf8_headers_rfc6532() -> None:
    raw = "From: Jöran Müller <jöran@bücher.example>\r\nSubject: Grüße\r\n\r\nx\r\n".encode()
    parsed = parse(raw)
    assert parsed.subject == "Grüße"
    assert parsed.from_ is not None
    assert parsed.from_.name == "Jöran Müller"
    assert parsed.from_.addr == "jöran@bücher.example"


# -- addresses ----------------------------------------------------------------------------------


def test_addresses_decoded_names_and_lowercased_addr() -> None:
    raw = mail(
        """
        From: =?utf-8?q?Ren=C3=A9e_L=C3=A9vesque?= <Renee@Example.COM>
        To: Support <SUPPORT@ourdesk.example>, bob@example.org
        Cc: "Doe, Jane" <jane@example.org>
        Reply-To: replies@example.com
        Subject: hi

        x
        """
    )
    parsed = parse(raw)
    assert parsed.from_ is not None
    assert (parsed.from_.name, parsed.from_.addr) == ("Renée Lévesque", "renee@example.com")
    assert parsed.from_.domain == "example.com"
    assert [a.addr for a in parsed.to] == ["support@ourdesk.example", "bob@example.org"]
    assert [(a.name, a.addr) for a in parsed.cc] == [("Doe, Jane", "jane@example.org")]
    assert [a.addr for a in parsed.reply_to] == ["replies@example.com"]
    assert [a.addr for a in parsed.recipients] == [
        "support@ourdesk.example",
        "bob@example.org",
        "jane@example.org",
    ]


def test_repeated_to_headers_are_merged_and_duplicates_dropped() -> None:
    raw = mail(
        """
        From: a@example.com
        To: one@example.com
        To: two@example.com, ONE@example.com

        x
        """
    )
    assert [a.addr for a in parse(raw).to] == ["one@example.com", "two@example.com"]


def test_from_without_angle_brackets_is_salvaged() -> None:
    raw = mail(
        """
        From: Big Bug bb@bug.com
        Subject: x

        x
        """
    )
    parsed = parse(raw)
    assert parsed.from_ is not None
    assert parsed.from_.addr == "bb@bug.com"
    assert parsed.from_.name == "Big Bug"


def _from(header: str, *more: str) -> tuple[tuple[str, str] | None, list[tuple[str, str]]]:
    """(name, addr) of the sender and the Reply-To list of a mail whose From and
    Reply-To are `header` (`more`: further From headers)."""
    extra = "".join(f"From: {m}\n" for m in more)
    parsed = parse(mail(f"From: {header}\n{extra}Reply-To: {header}\nSubject: x\n\nx\n"))
    sender = (parsed.from_.name, parsed.from_.addr) if parsed.from_ else None
    return sender, [(a.name, a.addr) for a in parsed.reply_to]


def _b64(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("=?utf-8?q?Support=3A_Jane?= <jane@example.com>", "Support: Jane"),
        (_b64("Support: Jane") + " <jane@example.com>", "Support: Jane"),
        (_b64("Doe, Jane") + " <jane@example.com>", "Doe, Jane"),
        (_b64('Jane "JJ" Doe') + " <jane@example.com>", 'Jane "JJ" Doe'),
        (_b64("a; b") + " <jane@example.com>", "a; b"),
        (
            _b64("Évelyne: Support; Ventes, Paris") + " <jane@example.com>",
            "Évelyne: Support; Ventes, Paris",
        ),
        ("Acme =?utf-8?q?Support=3A?= <jane@example.com>", "Acme Support:"),
        # Sloppy encoders leave specials raw inside the encoded word (RFC 2047 5(3)
        # forbids it; PHP mailers do it): still one display name, still the sender.
        ("=?utf-8?q?Support:_Jane?= <jane@example.com>", "Support: Jane"),
        ("=?utf-8?q?Doe,_Jane?= <jane@example.com>", "Doe, Jane"),
        ("=?utf-8?q?a;b?= <jane@example.com>", "a;b"),
        ('=?utf-8?q?Jane_"JJ"?= <jane@example.com>', 'Jane "JJ"'),
        # Quoted, encoded inside the quotes (not allowed, widely sent and read).
        ('"=?utf-8?q?Support=3A_Jane?=" <jane@example.com>', "Support: Jane"),
        # No angle brackets: the name in a comment, or before the address.
        ("jane@example.com (=?utf-8?q?Support=3A_Jane?=)", "Support: Jane"),
        ("=?utf-8?q?Support=3A_Jane?= jane@example.com", "Support: Jane"),
        # Folded between the name and the address.
        ("=?utf-8?q?Support=3A_Jane?=\n <jane@example.com>", "Support: Jane"),
    ],
)
def test_encoded_display_name_with_specials_keeps_the_sender(header: str, name: str) -> None:
    """The header is split into mailboxes first and each name decoded after: a decoded
    ":" "," ";" or quote never splits the sender into a group or two addresses."""
    sender, reply_to = _from(header)
    assert sender == (name, "jane@example.com")
    assert reply_to == [(name, "jane@example.com")]


def test_an_address_shaped_display_name_is_never_the_sender() -> None:
    """``ceo@firm.example <no-reply@x>``: the mail comes from the address in brackets, the
    name only says otherwise (phishing); encoded or not, quoted or not."""
    for header in (
        "ceo@firm.example <noreply@gov.example>",
        '"ceo@firm.example" <noreply@gov.example>',
        "=?utf-8?q?ceo=40firm=2Eexample?= <noreply@gov.example>",
        _b64("Boss <ceo@firm.example>") + " <noreply@gov.example>",
    ):
        sender, _ = _from(header)
        assert sender is not None and sender[1] == "noreply@gov.example", header


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # Groups: the group's name is nobody; its members are addresses; an empty group
        # (undisclosed-recipients) is none.
        (
            "Team: jane@example.com, Bob <bob@example.com>;",
            [("", "jane@example.com"), ("Bob", "bob@example.com")],
        ),
        (
            "Team: " + _b64("Doe, Jane") + " <jane@example.com>;, carl@example.com",
            [("Doe, Jane", "jane@example.com"), ("", "carl@example.com")],
        ),
        ("undisclosed-recipients:;", []),
        ("=?utf-8?q?Kunden=3A?=:;", []),
        # Missing angle brackets, bare and with a name before.
        ("jane@example.com", [("", "jane@example.com")]),
        ("Big Bug bb@bug.com", [("Big Bug", "bb@bug.com")]),
        # Two mailboxes with no comma between them (enmime's malformed sample).
        (
            "Bob Dunite <bob@extern> Bobby Dunite <bobby@extern>",
            [("Bob Dunite", "bob@extern"), ("Bobby Dunite", "bobby@extern")],
        ),
        # Comments and folding inside the brackets, a source route.
        ("John Doe <jdoe@machine(comment).  example>", [("John Doe", "jdoe@machine.example")]),
        ("<@relay.example,@gw.example:jane@example.com>", [("", "jane@example.com")]),
        ("(Jane Doe) <jane@example.com>", [("Jane Doe", "jane@example.com")]),
        ('"Doe, Jane \\"JJ\\"" <jane@example.com>', [('Doe, Jane "JJ"', "jane@example.com")]),
        ('"system administrator"@example.com', [("", '"system administrator"@example.com')]),
        # Nothing to write to.
        ("<>", []),
        ("foo", []),
        ("@example.com", []),
        ("<postmaster\\@example.com@relay.example>", []),
        # An unclosed bracket or quote: what can be read, without a crash.
        ("Jane <jane@example.com", [("Jane", "jane@example.com")]),
        ('"Jane <jane@example.com>', [("Jane", "jane@example.com")]),
    ],
)
def test_hostile_address_headers(header: str, expected: list[tuple[str, str]]) -> None:
    _, reply_to = _from(header)
    assert reply_to == expected


def test_first_of_several_from_headers_is_the_sender() -> None:
    sender, _ = _from(
        "=?utf-8?q?Support=3A_Jane?= <jane@example.com>",
        "=?utf-8?q?Support=3A_Bob?= <bob@example.com>",
    )
    assert sender == ("Support: Jane", "jane@example.com")


def test_raw_8bit_display_name_is_decoded_after_splitting() -> None:
    """A Latin-1 name sent raw (no RFC 2047), with a comma: one mailbox, readable."""
    raw = (
        b"From: Wilhelmsen, H\xe5vard <hw@nordkapp.example>\r\nSubject: x\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nH\xe5vard\r\n"
    )
    parsed = parse(raw)
    assert parsed.from_ is not None
    assert (parsed.from_.name, parsed.from_.addr) == ("H\u00e5vard", "hw@nordkapp.example")


# -- date -----------------------------------------------------------------------------------------


def test_date_keeps_the_senders_own_offset() -> None:
    parsed = parse(PLAIN)
    assert parsed.date is not None
    assert parsed.date.utcoffset() == timedelta(hours=5, minutes=30)
    assert (parsed.date.hour, parsed.date.minute) == (9, 30)
    assert parsed.date == datetime(2025, 7, 1, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "header",
    ["Tue, 01 Jul 2025 09:30:00 -0000", "Tue, 01 Jul 2025 09:30:00"],
    ids=["minus-zero", "no-zone"],
)
def test_unknown_offset_means_utc(header: str) -> None:
    parsed = parse(mail(f"From: a@example.com\nDate: {header}\n\nx\n"))
    assert parsed.date == datetime(2025, 7, 1, 9, 30, tzinfo=UTC)
    assert parsed.date is not None
    assert parsed.date.utcoffset() == timedelta(0)


def test_garbage_date_is_none_and_reported_as_defect() -> None:
    parsed = parse(mail("From: a@example.com\nDate: the day after tomorrow\n\nx\n"))
    assert parsed.date is None
    assert any("Date header unreadable" in d for d in parsed.defects)


# -- body -----------------------------------------------------------------------------------------

HTML_ONLY = mail(
    """
    From: a@example.com
    Subject: html
    MIME-Version: 1.0
    Content-Type: text/html; charset=utf-8

    <html><head><title>ignored</title><style>p { color: red }</style></head>
    <body><script>alert("x")</script>
    <p>Hello &amp; welcome,<br>second line</p>
    <ul><li>first item</li><li>second item</li></ul>
    <p>See <a href="https://help.example.com/a">the guide</a> &ndash; thanks.</p>
    </body></html>
    """
)


def test_html_only_mail_gets_readable_text() -> None:
    parsed = parse(HTML_ONLY)
    assert parsed.text == (
        "Hello & welcome,\nsecond line\n\n"
        "- first item\n- second item\n\n"
        "See the guide (https://help.example.com/a) \u2013 thanks."
    )
    assert parsed.html is not None
    assert "<script>" in parsed.html


def test_plain_part_wins_over_html_alternative() -> None:
    raw = mail(
        """
        From: a@example.com
        MIME-Version: 1.0
        Content-Type: multipart/alternative; boundary="b"

        --b
        Content-Type: text/plain; charset=iso-8859-1
        Content-Transfer-Encoding: quoted-printable

        Gr=FC=DFe aus K=F6ln
        --b
        Content-Type: text/html

        <p>HTML version</p>
        --b--
        """
    )
    parsed = parse(raw)
    assert parsed.text == "Grüße aus Köln"
    assert parsed.html == "<p>HTML version</p>"
    assert parsed.attachments == ()
    assert parsed.content_type == "multipart/alternative"


# -- attachments ----------------------------------------------------------------------------------

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 3


def _with_attachments() -> bytes:
    encoded = base64.encodebytes(PDF).decode("ascii").rstrip("\n")
    head = mail(
        """
        From: a@example.com
        To: b@example.com
        Subject: files
        MIME-Version: 1.0
        Content-Type: multipart/mixed; boundary="XX"

        --XX
        Content-Type: text/plain

        see attached
        --XX
        Content-Type: application/pdf
        Content-Disposition: attachment; filename*=utf-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf
        Content-Transfer-Encoding: base64

        """
    )
    tail = mail(
        """
        --XX
        Content-Type: text/plain; name="=?utf-8?q?notes_=C3=A9t=C3=A9.txt?="
        Content-Disposition: attachment

        plain notes
        --XX
        Content-Type: image/png
        Content-Disposition: attachment; filename="../../etc/passwd"
        Content-Transfer-Encoding: base64

        iVBORw0KGgo=
        --XX--
        """
    )
    return head + encoded.replace("\n", "\r\n").encode("ascii") + b"\r\n" + tail


def test_attachment_metadata_from_decoded_payload() -> None:
    parsed = parse(_with_attachments())
    assert parsed.text == "see attached"
    first, second, third = parsed.attachments
    assert (first.index, first.filename, first.content_type) == (
        0,
        "naïve résumé.pdf",
        "application/pdf",
    )
    assert first.size == len(PDF)
    assert first.sha256 == hashlib.sha256(PDF).hexdigest()
    assert (second.filename, second.content_type) == ("notes été.txt", "text/plain")
    assert second.size == len(b"plain notes")
    # The sender's name is kept as text; it is only ever a path through safe_filename.
    assert third.filename == "../../etc/passwd"
    assert safe_filename(third.filename, third.index) == "passwd"


def test_attachment_payload_returns_the_same_attachment_and_its_bytes() -> None:
    raw = _with_attachments()
    meta, data = attachment_payload(raw, 0)
    assert meta == parse(raw).attachments[0]
    assert data == PDF
    with pytest.raises(IndexError):
        attachment_payload(raw, 3)


def test_forwarded_message_is_an_attachment_not_body() -> None:
    raw = mail(
        """
        From: a@example.com
        MIME-Version: 1.0
        Content-Type: multipart/mixed; boundary="o"

        --o
        Content-Type: text/plain

        FYI, see below.
        --o
        Content-Type: message/rfc822

        From: someone@else.example
        Subject: the original
        Message-ID: <orig@else.example>

        original body
        --o--
        """
    )
    parsed = parse(raw)
    assert parsed.text == "FYI, see below."
    (forwarded,) = parsed.attachments
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.filename == ""
    _meta, data = attachment_payload(raw, 0)
    assert b"Subject: the original" in data
    assert data.rstrip().endswith(b"original body")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/absolute/path/report.pdf", "report.pdf"),
        ("..", "attachment-7"),
        ("", "attachment-7"),
        ("   ", "attachment-7"),
        (".bashrc", "bashrc"),
        ("invoice\r\n.pdf", "invoice .pdf"),
        ("gpj\u202e.exe", "gpj .exe"),
        ("a..b...c.txt", "a.b.c.txt"),
        ("CON", "_CON"),
        ('what?<is>"this"|*.txt', "what__is__this___.txt"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name, 7) == expected


def test_safe_filename_truncates_and_keeps_extension() -> None:
    result = safe_filename("x" * 300 + ".docx", 1)
    assert len(result) <= 120
    assert result.endswith(".docx")
    assert "/" not in result and "\\" not in result


# -- ids, headers, misc ---------------------------------------------------------------------------


def test_threading_headers_and_header_map() -> None:
    raw = mail(
        """
        Received: from a by b; Tue, 01 Jul 2025 09:30:00 +0000
        Received: from c by d; Tue, 01 Jul 2025 09:29:00 +0000
        From: a@example.com
        Message-ID: <me@example.com>
        In-Reply-To: <parent@example.com>
        References: <root@example.com>
         <parent@example.com> <me@example.com>
        X-Custom: =?utf-8?q?caf=C3=A9?=

        x
        """
    )
    parsed = parse(raw)
    assert parsed.message_id == "me@example.com"
    assert parsed.in_reply_to == ("parent@example.com",)
    assert parsed.references == ("root@example.com", "parent@example.com", "me@example.com")
    assert parsed.parent_ids == ("parent@example.com", "root@example.com")
    assert len(parsed.headers["received"]) == 2
    assert parsed.header("X-CUSTOM") == "café"
    assert parsed.header("missing") is None
    assert parsed.size == len(raw)


def test_mbox_separator_line_is_not_a_header() -> None:
    raw = b"From alice@example.com Tue Jul  1 09:30:00 2025\n" + PLAIN
    parsed = parse(raw)
    assert parsed.subject == "Printer on fire"
    assert parsed.from_ is not None
    assert parsed.from_.addr == "alice@example.com"


def test_obsolete_space_before_colon_is_accepted() -> None:
    raw = mail("From  : John <jdoe@example.com>\nSubject     : Saying Hello\n\nhi\n")
    parsed = parse(raw)
    assert parsed.subject == "Saying Hello"
    assert parsed.from_ is not None
    assert parsed.from_.addr == "jdoe@example.com"


# -- not a mail -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"   \r\n\r\n", "empty"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, "Outlook"),
        (b"Subject: x\x00\x01\x02\r\n\r\nbody", "NUL"),
        (b"Lorem ipsum dolor sit amet.\nNo headers here.\n", "header line"),
        (b"<html><body>hi</body></html>", "header line"),
    ],
    ids=["empty", "blank", "ole2", "nul", "prose", "html"],
)
def test_non_rfc822_input_raises_unparsable(raw: bytes, reason: str) -> None:
    with pytest.raises(UnparsableMail, match=reason):
        parse(raw)


def test_mail_parser_crash_falls_back_to_stdlib() -> None:
    # mail-parser 4.8 raises AttributeError on a DSN whose top-level epilogue is
    # missing while a nested part lacks its start boundary (corpus README).
    raw = mail(
        """
        From: Mail Delivery System <MAILER-DAEMON@mx.example>
        To: support@ourdesk.example
        Subject: Undelivered Mail Returned to Sender
        MIME-Version: 1.0
        Content-Type: multipart/report; report-type=delivery-status; boundary="BB"
        Content-Transfer-Encoding: binary

        --BB
        Content-Type: text/plain

        failed
        --BB
        Content-Type: message/rfc822

        From: support@ourdesk.example
        Message-ID: <orig@ourdesk.example>
        Content-Type: multipart/mixed; boundary="CC"

        truncated
        """
    )
    parsed = parse(raw)
    assert parsed.from_ is not None
    assert parsed.from_.addr == "mailer-daemon@mx.example"
    assert parsed.text == "failed"
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]
    assert any("mail-parser failed (AttributeError" in d for d in parsed.defects)


# -- msgids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@b>", ("a@b",)),
        ("<a@b> <c@d>\r\n\t<e@f>", ("a@b", "c@d", "e@f")),
        ("Your message of December 31 1999 <bar@baz.com>", ("bar@baz.com",)),
        ("<foo@five.com> (garbage)", ("foo@five.com",)),
        ("<x@y> (comment with <fake@id>)", ("x@y",)),
        ("<a@b> <a@b> <c@d>", ("a@b", "c@d")),
        ("someone@yahoo.com", ("someone@yahoo.com",)),
        ("mumble", ()),
        ("two words@host", ()),
        ("<baz@bar.net>, <invalid.", ("baz@bar.net",)),
        ("<5fa9c763>", ("5fa9c763",)),
        ("", ()),
        (None, ()),
    ],
)
def test_extract_ids(value: str | None, expected: tuple[str, ...]) -> None:
    assert msgids.extract_ids(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(" <a@b> ", "a@b"), ("a@b", "a@b"), ("<>", None), ("  ", None), (None, None)],
)
def test_normalize_id(value: str | None, expected: str | None) -> None:
    assert msgids.normalize_id(value) == expected


def test_parent_candidates_drop_self_references_and_repeats() -> None:
    candidates = msgids.parent_candidates(
        "<me@x>", "<root@x> <me@x> <mid@x> <root@x>", message_id="<me@x>"
    )
    assert candidates == ("mid@x", "root@x")


def test_make_message_id_is_unique_and_well_formed() -> None:
    now = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)
    first = msgids.make_message_id("Desk.Example.com", now=now)
    second = msgids.make_message_id("desk.example.com", now=now)
    assert first != second
    assert re.fullmatch(r"[0-9a-f]{32}\.1751371200000@desk\.example\.com", first)
    assert msgids.extract_ids(f"<{first}>") == (first,)
    with pytest.raises(ValueError):
        msgids.make_message_id("bad domain@x")


# -- text -----------------------------------------------------------------------------------------


def test_html_to_text_blockquote_lists_and_links() -> None:
    html = (
        "<div>Top</div><blockquote>quoted<br>more</blockquote>"
        "<ol><li>one</li><li>two</li></ol>"
        '<a href="mailto:help@example.com">help@example.com</a> '
        '<a href="#anchor">jump</a> <a href="javascript:x()">js</a>'
    )
    assert (
        html_to_text(html)
        == "Top\n\n> quoted\n> more\n\n1. one\n2. two\n\nhelp@example.com jump js"
    )


def test_html_to_text_survives_broken_markup() -> None:
    assert html_to_text("<p>unclosed <b>bold <i>and <a href='https://x.example'>link") == (
        "unclosed bold and link"
    )


def test_reply_text_drops_attribution_and_quotes() -> None:
    text = (
        "Thanks, that fixed it.\n\n"
        "On Mon, 2 Jun 2025, Support <s@x> wrote:\n> Try this\n> and that\n"
    )
    assert reply_text(text) == "Thanks, that fixed it."


def test_reply_text_cuts_outlook_history() -> None:
    text = (
        "Works now.\r\n\r\n________________________________\r\n"
        "From: Support <s@x>\r\nSent: Monday, June 2, 2025 10:00\r\nTo: me\r\n"
        "Subject: RE: ticket\r\n\r\nold text\r\n"
    )
    assert reply_text(text) == "Works now."


def test_reply_text_keeps_everything_when_all_is_quoted() -> None:
    assert reply_text("> only a quote") == "> only a quote"
