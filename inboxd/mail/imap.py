"""The mailbox worker: connect, fetch `UID > cursor` in batches, IDLE or poll, back off.

One thread per mailbox, each with its own `IMAPClient` (not thread-safe) and its own
database sessions. Exactly once: a batch's raw mail, delivery rows and the cursor are
committed together; the server copy is flagged, moved or deleted only afterwards.
Flags are never used to decide what was fetched.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from inboxd.balance import Balancer, HandOver
from inboxd.clock import Clock, utcnow
from inboxd.db import session_scope
from inboxd.errors import ConfigError
from inboxd.leases import MailboxLease
from inboxd.mail.parse import Parsed
from inboxd.mail.sources import batched
from inboxd.tickets import intake, mailboxes

if TYPE_CHECKING:
    from inboxd.config import Mailbox
    from inboxd.mail.parsepool import ParsePool

log = logging.getLogger("inboxd.imap")
logging.getLogger("imapclient").setLevel(logging.WARNING)  # its DEBUG trace carries bodies

IDLE_SLICE_S = 1.0  # idle_check timeout: SIGTERM is honoured within about a second
IDLE_RENEW_S = 300.0  # re-issue IDLE (and re-sync) well inside RFC 2177's 29 minutes
SEARCH_WINDOW = 10_000  # UIDs per SEARCH: no whole-mailbox lists in memory
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
AUTH_BACKOFF_ATTEMPT = 6  # a server that refuses the login is not hammered
# A batch is one transaction: 200 mails (`batch_size`) share its fixed costs (the
# in-flight note, BEGIN, COMMIT, the FETCH, the full-text segment) at about a quarter
# second of SQLite's write lock; 50 made a backfill about 13% slower.
# A batch closes at `batch_size` mails or at this many bytes (RFC822.SIZE), so a folder of
# large attachments never fills memory; a single larger mail is a batch of its own, stored
# before the next FETCH.
BATCH_MAX_BYTES = 32 * 1024 * 1024
SIZES_PER_FETCH = 1000
LEASE_RETRY_S = 3.0  # a standby daemon takes a dead owner's mailbox within seconds


class ConnectionLost(IMAPClientError):
    """The server said BYE or the connection dropped while we waited."""


def backoff(attempt: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Capped exponential backoff with jitter (half fixed, half random)."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass
class WorkerContext:
    """What a mailbox worker shares with the daemon: the stop flag and a nudge."""

    engine: Engine
    intake_config: Callable[[], intake.IntakeConfig]  # re-read after a reload (SIGHUP)
    halt: threading.Event
    nudge: Callable[[], None] = lambda: None  # wakes the outbox after a commit
    on_error: Callable[[str, str, str], None] = lambda mailbox, kind, error: None  # alerts
    owner: str | None = None
    clock: Clock = utcnow
    balancer: Balancer | None = None  # PostgreSQL daemons: how many mailboxes to hold
    parse_pool: ParsePool | None = None  # parses a batch ahead of its storing


def connect(mb: Mailbox) -> IMAPClient:
    """A logged-in client with certificate verification on (security none is loopback only)."""
    imap = mb.imap
    assert imap is not None
    timeout = SocketTimeout(connect=15, read=imap.timeout.total_seconds())
    context = ssl.create_default_context(cafile=str(imap.ca_file) if imap.ca_file else None)
    client = IMAPClient(
        imap.host,
        port=imap.port,
        ssl=imap.security == "tls",
        ssl_context=context,
        timeout=timeout,
    )
    client.normalise_times = False
    try:
        if imap.security == "starttls":
            client.starttls(context)
        if imap.auth == "oauth2":
            client.oauth2_login(imap.username, imap.token())
        else:
            password = imap.password()
            if password is None:
                raise ConfigError(
                    f"mailbox {mb.name}: no IMAP password (set password_env or password_file)"
                )
            client.login(imap.username, password)
    except BaseException:
        _close(client)
        raise
    return client


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the connection may already be gone
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001
            pass


@dataclass(frozen=True, slots=True)
class _Fetched:
    """A batch fetched from the server, its parse under way, not yet stored."""

    first: int  # the batch's UIDs, whether or not the server still had them
    last: int
    bodies: list[tuple[int, bytes]]
    parses: Iterator[Parsed]
    size: int  # bytes held


class MailboxWorker:
    """Keeps one mailbox in sync until `ctx.halt` is set."""

    def __init__(self, mb: Mailbox, ctx: WorkerContext) -> None:
        assert mb.imap is not None, "a worker needs an [mailbox.imap] table"
        self.mb = mb
        self.imap = mb.imap
        self.ctx = ctx
        self.attempt = 0
        self._rechecked = False  # the last wait() returned at once for announced mail

    # -- the loop --------------------------------------------------------------------

    def run(self) -> None:
        """Own the mailbox, then connect, sync, wait; on any failure back off and reconnect."""
        lease = MailboxLease(self.ctx.engine, self.mb.name)
        try:
            while not self.ctx.halt.is_set():
                if not self._acquire(lease):
                    self.ctx.halt.wait(LEASE_RETRY_S)
                    continue
                self._work(lease)
                if not self.ctx.halt.is_set():
                    self._let_go(lease)  # handed over or lost; the balancer says when to retry
        finally:
            self._let_go(lease)

    def _acquire(self, lease: MailboxLease) -> bool:
        """Take the lock when the balancer (if any) allows this daemon one more mailbox."""
        balancer = self.ctx.balancer
        try:
            if balancer is None:
                return lease.acquire()
            got = balancer.acquire(self.mb.name, lease.acquire, free=lease.is_free)
        except Exception as exc:  # noqa: BLE001 - database unreachable: recorded, retried
            self._failed(exc, sleep=False)
            return False
        if got:
            log.info("mailbox taken", extra={"mailbox": self.mb.name, "share": balancer.share})
        return got

    def _let_go(self, lease: MailboxLease) -> None:
        """Clear the owner while the lock is still ours (a successor may be writing it
        next), then drop the lock."""
        if lease.held:
            self._record(lambda s: mailboxes.record_idle(s, self.mb.name, idle=False, owner=None))
        lease.release()
        if self.ctx.balancer is not None:
            self.ctx.balancer.release(self.mb.name)

    def _work(self, lease: MailboxLease) -> None:
        """Until shutdown, until the lease is lost (another daemon takes over then), or until
        the balancer hands the mailbox to another daemon: the batch in hand is committed,
        IDLE is left and the client logs out, exactly as on shutdown."""
        daemon_ctx = self.ctx
        balancer = daemon_ctx.balancer
        handover: HandOver | None = None
        if balancer is not None:
            name = self.mb.name
            handover = HandOver(daemon_ctx.halt, lambda: balancer.should_yield(name))
            self.ctx = replace(daemon_ctx, halt=handover)
        try:
            self._work_loop(lease)
        finally:
            self.ctx = daemon_ctx
        if balancer and handover and handover.is_set() and not daemon_ctx.halt.is_set():
            log.info(
                "mailbox handed over", extra={"mailbox": self.mb.name, "share": balancer.share}
            )

    def _work_loop(self, lease: MailboxLease) -> None:
        while not self.ctx.halt.is_set() and lease.alive():
            try:
                client = connect(self.mb)
            except Exception as exc:  # noqa: BLE001 - classified and recorded, never fatal
                self._failed(exc)
                continue
            try:
                self.attempt = 0
                log.info("connected", extra={"mailbox": self.mb.name, "host": self.imap.host})
                while not self.ctx.halt.is_set() and lease.alive():
                    self.sync(client)
                    self.wait(client)
            except Exception as exc:  # noqa: BLE001 - classified and recorded, never fatal
                self._failed(exc)
            finally:
                _close(client)

    def run_once(self) -> int | None:
        """One connect + full sync (`inboxd run --once`): messages stored, None on failure
        or when another daemon owns the mailbox."""
        lease = MailboxLease(self.ctx.engine, self.mb.name)
        if not self._acquire(lease):
            log.info("owned elsewhere", extra={"mailbox": self.mb.name})
            return None
        try:
            client = connect(self.mb)
        except Exception as exc:  # noqa: BLE001 - recorded; `run --once` goes on with others
            self._failed(exc, sleep=False)
            return None
        try:
            return self.sync(client)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, sleep=False)
            return None
        finally:
            _close(client)
            lease.release()

    def _failed(self, exc: BaseException, *, sleep: bool = True) -> None:
        kind, text = describe_error(exc)
        if kind == "auth":
            self.attempt = max(self.attempt, AUTH_BACKOFF_ATTEMPT)
        self.attempt += 1
        now = self.ctx.clock()
        try:
            with session_scope(self.ctx.engine) as s:
                changed = mailboxes.record_error(s, self.mb.name, at=now, kind=kind, error=text)
        except SQLAlchemyError:
            changed = True
        extra = {"mailbox": self.mb.name, "kind": kind, "error": text, "attempt": self.attempt}
        if kind == "bug":
            log.error("worker error", exc_info=exc, extra=extra)
        elif changed:
            log.warning("mailbox failing", extra=extra)
        self.ctx.on_error(self.mb.name, kind, text)  # recorded first: the hook may read it
        if sleep:
            self.ctx.halt.wait(backoff(self.attempt))

    def _record(self, fn: Callable[[Any], None]) -> None:
        try:
            with session_scope(self.ctx.engine) as s:
                fn(s)
        except SQLAlchemyError as exc:
            log.warning("state not recorded", extra={"mailbox": self.mb.name, "error": str(exc)})

    # -- sync ------------------------------------------------------------------------

    def sync(self, client: IMAPClient) -> int:
        """Store every message above the cursor; returns how many were new to this mailbox."""
        client.noop()  # Dovecot's SEARCH misses another connection's fresh APPEND until a NOOP
        info = client.select_folder(self.imap.folder, readonly=self.mb.disposition[0] == "keep")
        client._imap.untagged_responses.pop("EXISTS", None)  # SELECT's own count: not news
        uidvalidity = int(info[b"UIDVALIDITY"])
        uidnext = int(info.get(b"UIDNEXT", 0) or 0)
        with session_scope(self.ctx.engine) as s:
            old = mailboxes.reset_for_uidvalidity(s, self.mb.name, uidvalidity)
            cur = mailboxes.cursor(s, self.mb.name)
        if old is not None:
            log.warning(
                "uidvalidity changed",
                extra={"mailbox": self.mb.name, "old": old, "new": uidvalidity},
            )
        stored = 0
        last = cur.last_uid
        self._dispose_leftovers(client, last)
        # One batch ahead: the next batch is fetched and handed to the parser before the
        # one in hand is stored. Only a committed batch moves the cursor; a fetched one
        # that is never stored is fetched again by the next sync.
        in_hand: _Fetched | None = None
        batches = self._fetch_batches(client, last, uidnext)
        while True:
            if in_hand is not None and in_hand.size > BATCH_MAX_BYTES:
                stored += self._store(client, uidvalidity, in_hand)
                in_hand = None
            try:
                fetched = next(batches, None)  # SEARCH and FETCH
            except Exception:
                if in_hand is not None:  # the connection broke: keep what is in hand
                    stored += self._store(None, uidvalidity, in_hand)
                raise
            if in_hand is not None:  # on shutdown too: the batch in hand is committed
                stored += self._store(client, uidvalidity, in_hand)
            if fetched is None:
                break
            in_hand = fetched
        if self.ctx.halt.is_set():
            return stored
        with session_scope(self.ctx.engine) as s:
            mailboxes.record_sync(
                s, self.mb.name, at=self.ctx.clock(), pending=0, owner=self.ctx.owner
            )
        return stored

    def _fetch_batches(self, client: IMAPClient, last: int, uidnext: int) -> Iterator[_Fetched]:
        """Every batch above `last`, fetched, until there are no more or shutdown."""
        for uids in self._new_uids(client, last, uidnext):
            sizes = _sizes(client, uids)
            for batch in batched(
                uids,
                count=self.imap.batch_size,
                max_bytes=BATCH_MAX_BYTES,
                size=sizes.__getitem__,
            ):
                if self.ctx.halt.is_set():
                    return
                yield self._fetch(client, batch)

    def _new_uids(self, client: IMAPClient, last: int, uidnext: int) -> Iterator[list[int]]:
        """UIDs above `last`, a window at a time, then whatever arrived meanwhile."""
        lo = last + 1
        while uidnext and lo < uidnext:
            hi = min(uidnext - 1, lo + SEARCH_WINDOW - 1)
            found = sorted(u for u in client.search(["UID", f"{lo}:{hi}"]) if u >= lo)
            if found:
                yield found
                last = found[-1]
            lo = hi + 1
        while True:
            # UID n:* always includes the highest UID, even below n (RFC 3501 6.4.8): filter.
            found = sorted(u for u in client.search(["UID", f"{max(lo, last + 1)}:*"]) if u > last)
            if not found:
                return
            found = found[:SEARCH_WINDOW]
            yield found
            last = found[-1]

    def _fetch(self, client: IMAPClient, batch: Sequence[int]) -> _Fetched:
        """FETCH the batch's bodies and start their parse (in the parser process)."""
        fetched = client.fetch(list(batch), ["BODY.PEEK[]"])
        bodies: list[tuple[int, bytes]] = []
        for uid in batch:
            item = fetched.get(uid) or {}
            data = item.get(b"BODY[]")
            if isinstance(data, bytes):
                bodies.append((uid, data))
        # A UID the FETCH did not answer for was expunged meanwhile: the cursor passes it.
        cfg = self.ctx.intake_config()
        parses = self._parses(cfg, [data for _, data in bodies])
        return _Fetched(batch[0], batch[-1], bodies, parses, sum(len(d) for _, d in bodies))

    def _store(self, client: IMAPClient | None, uidvalidity: int, batch: _Fetched) -> int:
        """Commit a fetched batch with the cursor; then dispose of the server copies
        (unless `client` is None: a broken connection, `_dispose_leftovers` finishes)."""
        bodies = batch.bodies
        with session_scope(self.ctx.engine) as s:
            tries = mailboxes.mark_inflight(s, self.mb.name, batch.first)
        cfg = self.ctx.intake_config()
        stored = 0
        if tries == 0:
            results = intake.store_batch(
                self.ctx.engine,
                cfg,
                (
                    intake.Incoming(data, parsed, uid)
                    for (uid, data), parsed in zip(bodies, batch.parses, strict=True)
                ),
                mailbox=self.mb.name,
                source="imap",
                uidvalidity=uidvalidity,
                finish=lambda s: mailboxes.advance(
                    s, self.mb.name, uidvalidity=uidvalidity, uid=batch.last
                ),
            )
            for (uid, _), r in zip(bodies, results, strict=True):
                self._logged(uid, r)
                stored += r.outcome != "duplicate"
        else:
            # An earlier attempt at this batch died with the process: go one mail per
            # transaction, counting attempts, so a mail that kills us is found and set aside.
            log.warning(
                "recovering batch",
                extra={"mailbox": self.mb.name, "uid": batch.first, "tries": tries},
            )
            for i, (uid, data) in enumerate(bodies):
                if i > 0:
                    with session_scope(self.ctx.engine) as s:
                        tries = mailboxes.mark_inflight(s, self.mb.name, uid)
                parse_it = tries + 1 < mailboxes.POISON_LIMIT
                parsed = next(self._parses(cfg, [data])) if parse_it else None
                with session_scope(self.ctx.engine) as s:
                    r = self._receive(
                        s, cfg, data, uidvalidity, uid, parse_it=parse_it, parsed=parsed
                    )
                    stored += r.outcome != "duplicate"
                    mailboxes.advance(s, self.mb.name, uidvalidity=uidvalidity, uid=uid)
            with session_scope(self.ctx.engine) as s:
                mailboxes.advance(s, self.mb.name, uidvalidity=uidvalidity, uid=batch.last)
        # Committed: only now touch the server copies.
        if client is not None:
            self._dispose(client, [uid for uid, _ in bodies])
        self.ctx.nudge()
        return stored

    def _parses(self, cfg: intake.IntakeConfig, datas: list[bytes]) -> Iterator[Parsed]:
        from inboxd.mail.parsepool import parse_all

        return parse_all(self.ctx.parse_pool, datas, cfg.reader(), cfg.parse_timeout)

    def _receive(
        self,
        s: Any,
        cfg: intake.IntakeConfig,
        data: bytes,
        uidvalidity: int,
        uid: int,
        *,
        parse_it: bool = True,
        parsed: Parsed | None = None,
    ) -> intake.Received:
        r = intake.receive(
            s,
            cfg,
            mailbox=self.mb.name,
            data=data,
            source="imap",
            uidvalidity=uidvalidity,
            uid=uid,
            parse_it=parse_it,
            parsed=parsed,
        )
        return self._logged(uid, r)

    def _logged(self, uid: int, r: intake.Received) -> intake.Received:
        log.info(
            "stored",
            extra={
                "mailbox": self.mb.name,
                "uid": uid,
                "message_id": r.message_id,
                "outcome": r.outcome,
                "ticket": r.ticket_id,
            },
        )
        return r

    # -- disposition -----------------------------------------------------------------

    def _dispose(self, client: IMAPClient, uids: list[int]) -> None:
        action, folder = self.mb.disposition
        if not uids or action == "keep":
            return
        if action == "seen":
            client.add_flags(uids, [b"\\Seen"], silent=True)
        elif action == "move":
            assert folder is not None
            if client.has_capability("MOVE"):
                client.move(uids, folder)
            else:
                client.copy(uids, folder)
                client.delete_messages(uids, silent=True)
                self._expunge(client, uids)
        elif action == "delete":
            client.delete_messages(uids, silent=True)
            self._expunge(client, uids)

    def _expunge(self, client: IMAPClient, uids: list[int]) -> None:
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()

    def _dispose_leftovers(self, client: IMAPClient, last: int) -> None:
        """Finish a move/delete that a crash interrupted after the commit."""
        action, _ = self.mb.disposition
        if last == 0 or action in ("keep", "seen"):
            return
        leftover = [u for u in client.search(["UID", f"1:{last}"]) if u <= last]
        for batch in _chunks(leftover, 500):
            self._dispose(client, batch)

    # -- waiting ---------------------------------------------------------------------

    def wait(self, client: IMAPClient) -> None:
        """Until new mail, shutdown, or time to re-sync: IDLE when offered, else poll."""
        if self.imap.idle and client.has_capability("IDLE"):
            # New mail announced while we searched and fetched would not be announced again
            # in IDLE: look once more first (once: a server that always says EXISTS idles).
            if _announced_since_select(client) and not self._rechecked:
                self._rechecked = True
                return
            self._rechecked = False
            self._idle(client)
        else:
            self.ctx.halt.wait(self.imap.poll_interval.total_seconds())

    def _idle(self, client: IMAPClient) -> None:
        news = _enter_idle(client)
        renew_at = time.monotonic() + IDLE_RENEW_S
        quick_empty = 0
        try:
            while not news and not self.ctx.halt.is_set() and time.monotonic() < renew_at:
                asked = time.monotonic()
                responses = client.idle_check(timeout=IDLE_SLICE_S)
                if any(len(r) > 1 and r[1] == b"EXISTS" for r in responses):
                    return
                if any(r and r[0] == b"BYE" for r in responses):
                    raise ConnectionLost("server said BYE")
                # After EOF imapclient's idle_check answers [] at once, forever: a dead socket.
                quick = not responses and time.monotonic() - asked < IDLE_SLICE_S / 10
                quick_empty = quick_empty + 1 if quick else 0
                if quick_empty >= 3:
                    raise ConnectionLost("connection closed while idling")
        finally:
            try:
                client.idle_done()
            except (IMAPClientError, OSError) as exc:
                raise ConnectionLost(f"connection lost while idling: {exc}") from exc


# IDLE without lost wake-ups. imapclient's `idle()` fails when an untagged response comes
# before the `+ idling` continuation, and `idle_check()` polls the socket, so a response
# that arrived in the same packet as the continuation, already in imaplib's read buffer,
# waits for the next packet: up to IDLE_RENEW_S. These helpers close both gaps on
# imaplib's documented state (`untagged_responses`, `tagged_commands`) and on the two
# internals imapclient's own `idle()` uses (`_command`, `_get_response`).


def _announced_since_select(client: IMAPClient) -> bool:
    """Whether the server said `* n EXISTS` since the sync's SELECT (which it clears)."""
    return client._imap.untagged_responses.pop("EXISTS", None) is not None


def _enter_idle(client: IMAPClient) -> bool:
    """Start IDLE; True when the server announced new mail while we entered it."""
    imap = client._imap
    tag = imap._command("IDLE")
    client._idle_tag = tag  # what imapclient's idle_done() finishes
    while imap._get_response() is not None:  # untagged lines before "+ idling"
        if imap.tagged_commands.get(tag) is not None:
            raise IMAPClientError(f"IDLE refused: {imap.tagged_commands[tag]}")
    news = imap.untagged_responses.pop("EXISTS", None) is not None
    return news or b" EXISTS" in _buffered(client)


def _buffered(client: IMAPClient) -> bytes:
    """What imaplib has read off the socket and not yet parsed; never blocks."""
    sock = client.socket()
    sock.setblocking(False)
    try:
        return bytes(client._imap.file.peek(1))
    except OSError:  # nothing buffered and nothing on the socket (plain or TLS)
        return b""
    finally:
        sock.setblocking(True)
        client._set_read_timeout()


def _sizes(client: IMAPClient, uids: Sequence[int]) -> defaultdict[int, int]:
    """Each message's size (RFC822.SIZE; 0 for one expunged meanwhile), a thousand UIDs a
    FETCH: the command line stays well inside servers' limits (Dovecot's is 64 KB)."""
    sizes: defaultdict[int, int] = defaultdict(int)
    for part in _chunks(uids, SIZES_PER_FETCH):
        for uid, item in client.fetch(part, ["RFC822.SIZE"]).items():
            sizes[uid] = int(item.get(b"RFC822.SIZE") or 0)
    return sizes


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), max(1, size)):
        yield list(items[i : i + size])


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(kind, one line) for `inboxd status`: auth | connect | protocol | config | database | bug."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, LoginError):
        return "auth", f"login refused: {text}"
    if isinstance(exc, ConfigError):
        return "config", text
    if isinstance(exc, ssl.SSLError):
        return "connect", f"TLS: {text}"
    if isinstance(exc, OSError):
        return "connect", f"{type(exc).__name__}: {text}"
    if isinstance(exc, IMAPClientError):
        return "protocol", text
    if isinstance(exc, SQLAlchemyError):
        return "database", text.splitlines()[0][:300]
    return "bug", f"{type(exc).__name__}: {text}"
