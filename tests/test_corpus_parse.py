"""parse() against real-world mail in ../shared/corpus (see its README).

Every file must either parse or raise UnparsableMail; only the files that are
not mail at all may be quarantined. imap_tools' expectations are compared field
by field; where we differ on purpose the case is listed in DEVIATIONS with the
reason and the value we produce instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from inboxd.mail.parse import ParsedMail, UnparsableMail, one_line, parse
from inboxd.mail.text import reply_text

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")


@pytest.fixture(autouse=True)
def _quiet_mailparser() -> Iterator[None]:
    """mail-parser logs a warning per unhandled part type; noise here."""
    logger = logging.getLogger("mailparser")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def _is_data(path: Path) -> bool:
    name = path.name.lower()
    if name.startswith(("license", "readme", "copying")) or "copyright" in name:
        return False
    return path.suffix != ".json"


def _corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and _is_data(p))


def _rel(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


# Files in the corpus that are not RFC 822 messages: quarantining them is right.
NOT_MAIL = {
    "cpython-test_email/msg_19.txt": "a digest body fragment, no header lines",
    "enmime/testdata/attach/fake.png": "a text file named .png",
    "enmime/testdata/encode/part-content-only.golden": "a MIME part body, no headers",
    "enmime/testdata/encode/part-empty.golden": "empty file",
    "enmime/testdata/mail/erroneous.raw": "'// Not an RFC-822 Document'",
    "mail-parser/mails/mail_outlook_1": "Outlook .msg (OLE2) binary",
    "rt/emails/lorem-ipsum": "plain prose, no headers",
}


def _expected_quarantine(rel: str) -> bool:
    if rel in NOT_MAIL:
        return True
    if not rel.startswith("talon/"):
        return False
    # talon's fixtures beside its .eml files are bare HTML bodies, signature
    # extraction inputs/outputs and expected reply texts, not mails.
    # (P/102682_R_S and P/unicode_msg start with a From: line and are read as mails.)
    return rel.endswith((".html", "_reply_text", "_body", "_sender")) or rel.startswith(
        "talon/signature/emails/stripped/"
    )


def _invariants(mail: ParsedMail, raw: bytes) -> None:
    """What every consumer of ParsedMail relies on, whatever the input was."""
    assert mail.size == len(raw)
    assert "\r" not in mail.subject and "\n" not in mail.subject
    assert mail.subject == mail.subject.strip()
    assert mail.date is None or mail.date.tzinfo is not None
    for address in (mail.from_, *mail.to, *mail.cc, *mail.reply_to):
        if address is None:
            continue
        assert address.addr == address.addr.lower()
        assert "\n" not in address.name and "\r" not in address.name
    for index, attachment in enumerate(mail.attachments):
        assert attachment.index == index
        assert attachment.size >= 0
        assert len(attachment.sha256) == 64
        assert "\n" not in attachment.filename
    for name, values in mail.headers.items():
        assert name == name.lower()
        assert all("\n" not in v and "\r" not in v for v in values)
    # Everything must be storable as UTF-8 text (no lone surrogates).
    texts = [mail.subject, mail.text, mail.html or "", *mail.defects]
    texts += [v for values in mail.headers.values() for v in values]
    texts += [a.filename for a in mail.attachments]
    for text in texts:
        text.encode("utf-8")


@pytest.mark.parametrize("path", _corpus_files(), ids=_rel)
def test_every_corpus_file_parses_or_is_quarantined(path: Path) -> None:
    raw = path.read_bytes()
    rel = _rel(path)
    if _expected_quarantine(rel):
        with pytest.raises(UnparsableMail):
            parse(raw)
        return
    _invariants(parse(raw), raw)  # raises (and fails) if a real mail were quarantined


# -- imap_tools expectations --------------------------------------------------------------------

IMAP_TOOLS = CORPUS / "imap_tools"
FIELDS = ("subject", "from", "to", "cc", "date", "attachments")

# (message, field) -> (what we produce, why imap_tools' value is not what we want)
DEVIATIONS: dict[tuple[str, str], tuple[Any, str]] = {
    ("rfc2822/example14.eml", "subject"): (
        "Re: TEST テストテスト",
        "RFC 2047 6.2: the folding space between plain text and an encoded word is "
        "text; only whitespace between two encoded words is dropped",
    ),
    ("error_emails/invalid_subject_characters.eml", "subject"): (
        "Formação FrenetikPolis: Mega Campanha Final Verão | Cursos de Setembro",
        "raw 8-bit subject: we read it as windows-1252, imap_tools drops the bytes",
    ),
    ("rfc2822/example13.eml", "from"): (
        "jdoe@machine.example",
        "RFC 5322 4.5 obsolete syntax (space before the colon) is accepted; "
        "imap_tools sees no headers at all",
    ),
    ("plain_emails/mix_caps_content_type.eml", "from"): (
        "bb@bug.com",
        "'From: Big Bug bb@bug.com' has no angle brackets; the address is the "
        "addr-spec, 'Big Bug' the name",
    ),
    ("plain_emails/raw_email_with_at_display_name.eml", "to"): (
        ["smith@gmail.com", "raasdnil@gmail.com", "tom@gmail.com"],
        "'Mikel@Lindsaar <raasdnil@gmail.com>' is one mailbox whose display name "
        "contains @, not two addresses",
    ),
    ("attachment_emails/attachment_pdf.eml", "to"): (
        ["xxxx@xxxx.com"],
        "the same mailbox listed twice is one recipient",
    ),
    ("attachment_emails/attachment_pdf_lf.eml", "to"): (
        ["xxxx@xxxx.com"],
        "the same mailbox listed twice is one recipient",
    ),
    ("error_emails/missing_body.eml", "to"): (
        [],
        "'<Undisclosed-Recipient:@mailman.enron.com;>' contains no mailbox",
    ),
    ("mime_emails/raw_email11.eml", "to"): (
        [],
        "'\"xxxxx@xxxxx\" <matmail>' has no usable address (no domain)",
    ),
    ("attachment_7bit.eml", "attachments"): (
        [("Contract 25 04 2020.docx", "message/rfc822", 4047)],
        "an attached message keeps its header folding as received; imap_tools "
        "re-folds it through email.generator",
    ),
    ("attachment_emails/attachment_message_rfc822.eml", "attachments"): (
        [("ForwardedMessage.eml", "message/rfc822", 3702)],
        "an attached message is one attachment (its own broken.pdf stays inside "
        "it) and keeps its header folding as received",
    ),
    ("error_emails/missing_content_disposition.eml", "attachments"): (
        [("", "image/jpg", 1311)],
        "a nameless image is still content the sender sent; nothing is invisible",
    ),
    ("mime_emails/raw_email_with_mimepart_without_content_type.eml", "attachments"): (
        [("", "message/delivery-status", 314), ("", "message/rfc822", 1531)],
        "DSN parts are attachments too; attached message keeps original folding",
    ),
    ("multipart_report_emails/multi_address_bounce1.eml", "attachments"): (
        [("", "message/delivery-status", 2742), ("", "message/rfc822", 1365)],
        "DSN parts are attachments too; attached message keeps original folding",
    ),
    ("multipart_report_emails/multi_address_bounce2.eml", "attachments"): (
        [("", "message/delivery-status", 2742), ("", "message/rfc822", 1365)],
        "DSN parts are attachments too; attached message keeps original folding",
    ),
    ("multipart_report_emails/multipart_report_multiple_status.eml", "attachments"): (
        [
            ("", "message/delivery-status", 180),
            ("", "message/delivery-status", 255),
            ("", "message/rfc822", 2647),
        ],
        "DSN parts are attachments; the returned mail is one attachment, its "
        "Content-ID'd body parts stay inside it",
    ),
    ("multipart_report_emails/report_422.eml", "attachments"): (
        [("", "message/delivery-status", 329), ("", "text/rfc822-headers", 686)],
        "DSN parts are attachments too",
    ),
    ("multipart_report_emails/report_530.eml", "attachments"): (
        [("", "message/delivery-status", 378), ("", "text/rfc822-headers", 1663)],
        "DSN parts are attachments too",
    ),
    ("text_with_content_id.eml", "attachments"): (
        [],
        "a single text/plain body with a Content-ID is the body, not an attachment",
    ),
}


def _imap_tools_cases() -> list[tuple[str, dict[str, Any]]]:
    expected = IMAP_TOOLS / "expected.json"
    if not expected.is_file():
        return []
    data: dict[str, dict[str, Any]] = json.loads(expected.read_text())["expected"]
    return sorted(data.items())


def _theirs(entry: dict[str, Any], field: str) -> Any:
    """imap_tools' value, normalised for differences of convention, not of result:
    subjects are one stripped line here; addresses are lowercased; their
    1900-01-01 means "no date"; a date without zone is UTC here."""
    if field == "subject":
        return one_line(entry["subject"])
    if field == "from":
        return entry["from_"].lower()
    if field in ("to", "cc"):
        return [a.lower() for a in entry[field]]
    if field == "date":
        value = entry["date"]
        if value.startswith("1900-01-01"):
            return None
        return value if len(value) > 19 else value + "+00:00"
    return [
        (a["filename"], a["content_type"], a["payload"]["size"], a["payload"]["sha256"])
        for a in entry["attachments"]
    ]


def _ours(mail: ParsedMail, field: str, *, with_hash: bool) -> Any:
    if field == "subject":
        return mail.subject
    if field == "from":
        return mail.from_.addr if mail.from_ else ""
    if field in ("to", "cc"):
        return [a.addr for a in getattr(mail, field)]
    if field == "date":
        return mail.date.isoformat() if isinstance(mail.date, datetime) else None
    return [
        (a.filename, a.content_type, a.size, *((a.sha256,) if with_hash else ()))
        for a in mail.attachments
    ]


@pytest.mark.parametrize(("rel", "entry"), _imap_tools_cases(), ids=lambda v: str(v)[:60])
def test_imap_tools_expectations(rel: str, entry: dict[str, Any]) -> None:
    mail = parse((IMAP_TOOLS / rel).read_bytes())
    case = rel.removeprefix("messages/")
    for field in FIELDS:
        deviation = DEVIATIONS.get((case, field))
        if deviation is not None:
            ours, _reason = deviation
            assert _ours(mail, field, with_hash=False) == ours, field
            assert ours != _theirs(entry, field), f"{field}: deviation no longer needed"
        else:
            assert _ours(mail, field, with_hash=True) == _theirs(entry, field), field


def test_imap_tools_agreement_figure() -> None:
    """At least 95% of (message, field) pairs agree exactly with imap_tools."""
    cases = _imap_tools_cases()
    if not cases:
        pytest.skip("imap_tools expected.json missing")
    total = len(cases) * len(FIELDS)
    assert len(DEVIATIONS) / total < 0.05


# -- threading headers against notmuch ------------------------------------------------------------


def _ground_truth() -> dict[str, Any]:
    path = CORPUS / "threads_ground_truth.json"
    return json.loads(path.read_text()) if path.is_file() else {"corpora": {}}


def _thread_cases() -> list[tuple[str, str, str | None, frozenset[str]]]:
    cases = []
    for corpus in _ground_truth()["corpora"].values():
        messages = [m for t in corpus["threads"] for m in t["messages"]]
        known = frozenset(m["message_id"] for m in messages)
        for message in messages:
            if "/loop/" in message["files"][0]:
                continue  # a cross-message loop: the thread builder must break it
            cases.append(
                (message["files"][0], message["message_id"], message["parent_message_id"], known)
            )
    return cases


@pytest.mark.parametrize(
    ("file", "message_id", "parent", "known"),
    _thread_cases(),
    ids=lambda v: str(v)[:50] if isinstance(v, str) else "",
)
def test_first_known_parent_candidate_matches_notmuch(
    file: str, message_id: str, parent: str | None, known: frozenset[str]
) -> None:
    mail = parse((CORPUS / file).read_bytes())
    assert mail.message_id == message_id
    first_known = next((c for c in mail.parent_ids if c in known), None)
    assert first_known == parent


def test_reference_loop_never_names_the_message_itself() -> None:
    for name in ("loop-12", "loop-21"):
        mail = parse((CORPUS / "notmuch/corpora/broken/loop" / name).read_bytes())
        assert mail.message_id not in mail.parent_ids
        assert len(mail.parent_ids) == 1


# -- talon reply texts ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["iphone", "sparrow"])
def test_talon_reply_text(name: str) -> None:
    folder = CORPUS / "talon" / "standard_replies"
    mail = parse((folder / f"{name}.eml").read_bytes())
    expected = (folder / f"{name}_reply_text").read_text(encoding="utf-8")
    assert reply_text(mail.text) == expected.rstrip("\n")


@pytest.mark.parametrize(
    "name",
    [
        "android",
        "aol",
        "apple_mail",
        "apple_mail_2",
        "gmail",
        "hotmail",
        "outlook",
        "thunderbird",
        "yahoo",
    ],
)
def test_talon_replies_collapse_to_hello(name: str) -> None:
    mail = parse((CORPUS / "talon" / "standard_replies" / f"{name}.eml").read_bytes())
    assert reply_text(mail.text).strip() == "Hello"
