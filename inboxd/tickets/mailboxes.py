"""Per-mailbox sync state: the IMAP cursor and the health an admin reads in `inboxd status`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from inboxd import records
from inboxd.db import insert_ignore
from inboxd.models import MailboxState

# A mail that killed the worker this often is stored without parsing. Not fewer: an
# operator or the OOM killer may stop a worker while any mail is in flight, and a
# restart resumes at that same mail, so a few deaths there are not yet its fault.
POISON_LIMIT = 5


@dataclass(frozen=True, slots=True)
class Cursor:
    uidvalidity: int | None
    last_uid: int


def state(session: Session, mailbox: str, *, lock: bool = False) -> MailboxState:
    """The mailbox's state row, created on first use.

    Read twice a batch by the worker that holds the mailbox: a row this session has not
    loaded yet (the usual case) is read with `records.get`; one it holds is read again,
    as is a row to be locked.
    """
    if not lock and not records.held(session, MailboxState, mailbox):
        found = records.get(session, MailboxState, mailbox)
        if found is not None:
            return found
    insert_ignore(
        session,
        MailboxState,
        [{"name": mailbox, "last_uid": 0, "pending": 0, "idle": False, "inflight_count": 0}],
    )
    row = session.get(MailboxState, mailbox, with_for_update=lock, populate_existing=True)
    assert row is not None
    return row


def cursor(session: Session, mailbox: str) -> Cursor:
    row = state(session, mailbox)
    return Cursor(row.uidvalidity, row.last_uid)


def reset_for_uidvalidity(session: Session, mailbox: str, uidvalidity: int) -> int | None:
    """The server renumbered the folder: start over from UID 1 (dedupe keeps it exact).

    Returns the old UIDVALIDITY when it changed, else None.
    """
    row = state(session, mailbox, lock=True)
    if row.uidvalidity == uidvalidity:
        return None
    old = row.uidvalidity
    row.uidvalidity = uidvalidity
    row.last_uid = 0
    row.inflight_uid = None
    row.inflight_count = 0
    return old


def advance(session: Session, mailbox: str, *, uidvalidity: int, uid: int) -> None:
    """Move the cursor past `uid`, in the transaction that stored the mail."""
    row = state(session, mailbox)
    if row.uidvalidity != uidvalidity:
        raise RuntimeError(f"mailbox {mailbox}: UIDVALIDITY changed under the cursor")
    if uid > row.last_uid:
        row.last_uid = uid
    row.inflight_uid = None
    row.inflight_count = 0


def mark_inflight(session: Session, mailbox: str, uid: int) -> int:
    """Note that `uid` is being processed; returns how often it was tried before.

    Committed on its own before processing: a mail that kills the process leaves the
    note behind, and the next start sees the count grow.
    """
    row = state(session, mailbox)
    if row.inflight_uid == uid:
        row.inflight_count += 1
    else:
        row.inflight_uid = uid
        row.inflight_count = 1
    return row.inflight_count - 1


def record_sync(
    session: Session, mailbox: str, *, at: datetime, pending: int, owner: str | None
) -> None:
    """A sync reached the end of the folder: the mailbox is healthy now."""
    row = state(session, mailbox)
    row.last_sync_at = at
    row.pending = pending
    row.owner = owner
    row.last_error = None
    row.error_kind = None
    row.alerted_at = None


def record_error(session: Session, mailbox: str, *, at: datetime, kind: str, error: str) -> bool:
    """Store the last error; returns True when the condition is new (log it once)."""
    row = state(session, mailbox)
    changed = (row.error_kind, row.last_error) != (kind, error)
    row.last_error = error[:500]
    row.last_error_at = at
    row.error_kind = kind
    return changed


def record_idle(session: Session, mailbox: str, *, idle: bool, owner: str | None) -> None:
    row = state(session, mailbox)
    row.idle = idle
    row.owner = owner
