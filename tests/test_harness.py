"""The test harness itself: each server does what the integration tests rely on."""

from __future__ import annotations

import secrets
import smtplib
import socket
from email.message import EmailMessage

import pytest
import sqlalchemy
from conftest import start_or_skip
from imapclient.exceptions import IMAPClientAbortError, LoginError
from servers import (
    Database,
    Dovecot,
    Postgres,
    ServerFailed,
    ServerUnavailable,
    SmtpSink,
    free_port,
)

RAW = (
    b"From: Ada <ada@example.test>\r\n"
    b"To: support@example.test\r\n"
    b"Subject: harness \xc3\xa9t\xc3\xa9\r\n"  # raw 8-bit header bytes must survive as-is
    b"Message-ID: <harness-1@example.test>\r\n"
    b"\r\n"
    b"Line one\r\n"
    b".leading dot\r\n"
)


def test_a_missing_server_skips_or_fails_under_require(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise ServerUnavailable("frobd not found")

    monkeypatch.delenv("INBOXD_TEST_REQUIRE_SERVERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="frobd not found"):
        start_or_skip(missing)
    monkeypatch.setenv("INBOXD_TEST_REQUIRE_SERVERS", "1")
    with pytest.raises(pytest.fail.Exception, match="frobd not found"):
        start_or_skip(missing)


def test_a_server_that_cannot_start_fails_with_its_log(dovecot: Dovecot) -> None:
    broken = Dovecot(dovecot.binary, dovecot.dir / "broken", dovecot.port)
    broken.dir.mkdir()
    broken.conf_path.write_text("no_such_setting = 1\n")
    with pytest.raises(ServerFailed, match="no_such_setting"):
        broken.start()
    assert not broken.running


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# ---------------------------------------------------------------------------- Dovecot


def test_append_then_fetch_returns_the_same_bytes(
    dovecot: Dovecot, mailbox_user: tuple[str, str]
) -> None:
    user, _ = mailbox_user
    uid = dovecot.append(user, "INBOX", RAW, flags=[b"\\Flagged"])
    imap = dovecot.client(user)
    try:
        imap.select_folder("INBOX", readonly=True)
        data = imap.fetch([uid], ["BODY.PEEK[]", "FLAGS"])
    finally:
        imap.logout()
    assert data[uid].get(b"BODY[]") == RAW
    assert b"\\Flagged" in data[uid][b"FLAGS"]
    assert b"\\Seen" not in data[uid][b"FLAGS"]


def test_users_are_isolated(dovecot: Dovecot, mailbox_user: tuple[str, str]) -> None:
    user, _ = mailbox_user
    other, _ = dovecot.new_user()
    dovecot.append(other, "INBOX", RAW)
    imap = dovecot.client(user)
    try:
        assert imap.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        imap.logout()


def test_folders_and_a_user_added_mid_session(dovecot: Dovecot) -> None:
    user = f"late.joiner-{secrets.token_hex(3)}"
    dovecot.add_user(user, "s3cret")
    dovecot.create_folder(user, "Processed")
    uid = dovecot.append(user, "Processed", RAW)
    imap = dovecot.client(user)
    try:
        assert imap.folder_exists("Processed")
        imap.select_folder("Processed")
        assert imap.search() == [uid]
    finally:
        imap.logout()
    dovecot.delete_folder(user, "Processed")


def test_wrong_password_is_refused(dovecot: Dovecot, mailbox_user: tuple[str, str]) -> None:
    from imapclient import IMAPClient

    imap = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=5)
    with pytest.raises(LoginError):
        imap.login(mailbox_user[0], "wrong")
    imap.shutdown()


def test_idle_sees_an_append_from_another_connection(
    dovecot: Dovecot, mailbox_user: tuple[str, str]
) -> None:
    user, _ = mailbox_user
    imap = dovecot.client(user)
    try:
        imap.select_folder("INBOX")
        imap.idle()
        uid = dovecot.append(user, "INBOX", RAW)
        responses = imap.idle_check(timeout=10)
        imap.idle_done()
    finally:
        imap.logout()
    assert (uid, b"EXISTS") in responses


def test_stop_mid_idle_then_start_on_the_same_port(
    dovecot: Dovecot, mailbox_user: tuple[str, str]
) -> None:
    user, _ = mailbox_user
    port = dovecot.port
    uid = dovecot.append(user, "INBOX", RAW)
    imap = dovecot.client(user)
    imap.select_folder("INBOX")
    imap.idle()
    try:
        dovecot.stop()
        # Dovecot sends "* BYE Server shutting down." and closes. imapclient's idle_check
        # swallows the EOF and returns [] at once, every time; idle_done() raises.
        for _ in range(3):
            imap.idle_check(timeout=1)
        with pytest.raises(IMAPClientAbortError):
            imap.idle_done()
        with pytest.raises(OSError):
            dovecot.client(user, timeout=2)
    finally:
        imap.shutdown()
        dovecot.start()
    assert dovecot.port == port
    again = dovecot.client(user)
    try:
        again.select_folder("INBOX")
        assert again.search() == [uid]  # mail survives a restart
    finally:
        again.logout()


# ---------------------------------------------------------------------------- SMTP


def _mail(subject: str = "hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "inboxd@example.test"
    msg["To"] = "ada@example.test"
    msg["Subject"] = subject
    msg.set_content("body\n")
    return msg


def test_smtp_sink_records_a_message(smtp_sink: SmtpSink) -> None:
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        client.send_message(_mail(), to_addrs=["ada@example.test", "bob@example.test"])
    (got,) = smtp_sink.wait_for(1)
    assert got.mail_from == "inboxd@example.test"
    assert got.rcpt_tos == ("ada@example.test", "bob@example.test")
    assert got.message["Subject"] == "hello"
    assert got.message.get_content() == "body\n"
    assert b"Subject: hello" in got.content


def test_smtp_sink_reply_makes_data_fail(smtp_sink: SmtpSink) -> None:
    smtp_sink.reply = "451 4.3.0 try later"
    with (
        smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client,
        pytest.raises(smtplib.SMTPDataError) as failed,
    ):
        client.send_message(_mail())
    assert failed.value.smtp_code == 451
    assert smtp_sink.messages == []
    assert len(smtp_sink.refused) == 1


def test_smtp_sink_rcpt_reply_refuses_one_recipient(smtp_sink: SmtpSink) -> None:
    smtp_sink.rcpt_reply = lambda addr: "550 5.1.1 no such user" if addr.startswith("bob") else None
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        refused = client.send_message(_mail(), to_addrs=["ada@example.test", "bob@example.test"])
    assert refused == {"bob@example.test": (550, b"5.1.1 no such user")}
    (got,) = smtp_sink.wait_for(1)
    assert got.rcpt_tos == ("ada@example.test",)


def test_smtp_sink_stop_and_start_on_the_same_port(smtp_sink: SmtpSink) -> None:
    smtp_sink.stop()
    try:
        with pytest.raises(OSError):
            smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=2)
    finally:
        smtp_sink.start()
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        client.send_message(_mail("after restart"))
    assert smtp_sink.wait_for(1)[0].message["Subject"] == "after restart"


# ---------------------------------------------------------------------------- PostgreSQL


def test_postgres_create_connect_drop(postgres: Postgres) -> None:
    postgres.create_database("harness_check")
    engine = sqlalchemy.create_engine(postgres.url("harness_check"))
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select 1")).scalar_one() == 1
            assert conn.execute(sqlalchemy.text("select current_database()")).scalar_one() == (
                "harness_check"
            )
    finally:
        engine.dispose()
        postgres.drop_database("harness_check")


# ---------------------------------------------------------------------------- databases


def test_database_is_a_migrated_copy(database: Database) -> None:
    from inboxd.db import current_revision, head_revision, make_engine

    assert current_revision(database.engine) == head_revision()
    assert "template" not in database.url
    second = make_engine(database.url)  # what a subprocess given the URL would open
    try:
        assert current_revision(second) == head_revision()
        assert sqlalchemy.inspect(second).get_table_names()
    finally:
        second.dispose()


def test_sqlite_engine_is_sqlite(sqlite_engine: sqlalchemy.Engine) -> None:
    assert sqlite_engine.dialect.name == "sqlite"
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
