"""Outbox delivery over SMTP (aiosmtplib): claim, send outside any transaction, record.

Every outgoing mail is already a row (`inboxd.tickets.outbox`); this module only moves
rows to a relay. A row is claimed in one short transaction (PostgreSQL `FOR UPDATE SKIP
LOCKED`, SQLite `BEGIN IMMEDIATE`), sent with no transaction open, and its outcome
recorded in another. Mail is never dropped: transient failures (4xx, connection,
timeouts) wait with capped exponential backoff, 5xx fails the row with the server's
reason, and a row whose claimer died is requeued. The rare crash between the server's
250 and our commit resends the row under the Message-ID fixed at enqueue, so the
duplicate is recognisable downstream.

Within one batch each endpoint gets one connection and sends its rows one at a time
(an aiosmtplib connection carries one message at a time); endpoints work concurrently,
so a dead relay does not hold up a live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import aiosmtplib
from sqlalchemy import Engine

from inboxd.clock import Clock, utcnow
from inboxd.db import session_scope
from inboxd.tickets import outbox
from inboxd.tickets.outbox import Attempt, Claim

if TYPE_CHECKING:
    from inboxd.config import Settings, SmtpEndpoint

log = logging.getLogger("inboxd.smtp")

BATCH = 20  # rows claimed per round; a full batch means "look again at once"
IDLE_MAX_S = 5.0  # longest wait between rounds without a nudge (other processes enqueue)
IDLE_MIN_S = 0.05  # shortest wait: a row another sender holds is not polled in a hot loop
NUDGE_GAP_S = 0.02  # rounds start at most this often, however often mailboxes commit
ERROR_PAUSE_S = 5.0  # after the database itself failed
STALE_CHECK_S = 10.0  # how often rows of dead senders are looked for
STOP_GRACE_S = 2.0  # a send in flight may finish this long after stop; then it is cut
QUIT_TIMEOUT_S = 2.0


def send_timeout_s(endpoint: SmtpEndpoint) -> float:
    """Deadline of one whole transaction (MAIL, RCPT..., DATA), not of one socket read.

    aiosmtplib's `timeout` bounds each socket operation only (docs/timeouts.rst).
    """
    return 2 * endpoint.timeout.total_seconds()


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {exc.message}".strip()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply(exc)
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def mail_options(claim: Claim, data: bytes, client: aiosmtplib.SMTP) -> list[str]:
    """SMTPUTF8 for non-ASCII envelope addresses, BODY=8BITMIME for an 8-bit body."""
    options: list[str] = []
    if not all(a.isascii() for a in (claim.mail_from, *claim.recipients)):
        options.append("SMTPUTF8")  # sendmail raises SMTPNotSupported if the relay lacks it
    if not data.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    return options


async def connect(endpoint: SmtpEndpoint) -> aiosmtplib.SMTP:
    """A connected (and logged-in) client; security is never the opportunistic default.

    none -> `start_tls=False`, starttls -> `start_tls=True` (refused without STARTTLS),
    tls -> `use_tls=True`; certificates are verified, with `ca_file` added when set.
    Raises ConfigError for an unreadable password, aiosmtplib/OS errors otherwise.
    """
    username = endpoint.username
    password = endpoint.password() if username else None
    client = aiosmtplib.SMTP(
        hostname=endpoint.host,
        port=endpoint.port,
        username=username,
        password=password,
        local_hostname=endpoint.helo,
        timeout=endpoint.timeout.total_seconds(),
        use_tls=endpoint.security == "tls",
        start_tls=endpoint.security == "starttls",
        validate_certs=True,
        cert_bundle=str(endpoint.ca_file) if endpoint.ca_file else None,
    )
    async with asyncio.timeout(send_timeout_s(endpoint)):
        await client.connect()
        try:
            if client.is_ehlo_or_helo_needed:  # so supports_extension() knows the answer
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except BaseException:
            client.close()
            raise
    return client


async def send_one(
    client: aiosmtplib.SMTP, endpoint: SmtpEndpoint, claim: Claim, data: bytes
) -> tuple[Attempt, bool]:
    """Send `data` as stored (no re-flattening); (what happened, connection still usable)."""
    try:
        async with asyncio.timeout(send_timeout_s(endpoint)):
            errors, _ = await client.sendmail(
                claim.mail_from,
                list(claim.recipients),
                data,
                mail_options=mail_options(claim, data, client),
            )
    except aiosmtplib.SMTPRecipientsRefused as exc:  # every recipient refused
        deferred = {r.recipient: _reply(r) for r in exc.recipients if r.code < 500}
        refused = {r.recipient: _reply(r) for r in exc.recipients if r.code >= 500}
        return Attempt(deferred=deferred, refused=refused), client.is_connected
    except aiosmtplib.SMTPResponseException as exc:  # MAIL FROM or DATA answered no
        return Attempt(error=_reply(exc), permanent=exc.code >= 500), client.is_connected
    except aiosmtplib.SMTPNotSupported as exc:  # SMTPUTF8 needed, relay lacks it
        return Attempt(error=_describe(exc), permanent=True), client.is_connected
    except (OSError, TimeoutError) as exc:  # disconnects, socket timeouts, our deadline
        return Attempt(error=_describe(exc)), False
    except ValueError as exc:  # an address aiosmtplib will not put on the wire
        return Attempt(error=f"invalid address: {exc}", permanent=True), client.is_connected
    except Exception as exc:  # a client bug must not drop the row: it is retried
        log.exception("send failed unexpectedly", extra={"message_id": claim.message_id})
        return Attempt(error=_describe(exc)), False
    accepted = tuple(r for r in claim.recipients if r not in errors)
    deferred = {r: f"{e.code} {e.message}" for r, e in errors.items() if e.code < 500}
    refused = {r: f"{e.code} {e.message}" for r, e in errors.items() if e.code >= 500}
    return Attempt(accepted=accepted, deferred=deferred, refused=refused), True


async def close(client: aiosmtplib.SMTP) -> None:
    """QUIT politely, briefly (not when cut short by a stop); drop the connection anyway."""
    task = asyncio.current_task()
    try:
        if client.is_connected and not (task and task.cancelling()):
            async with asyncio.timeout(QUIT_TIMEOUT_S):
                await client.quit()
    except Exception:  # noqa: BLE001 - the messages are recorded; a failed QUIT changes nothing
        pass
    finally:
        client.close()


class Sender:
    """Delivers claimed rows; remembers which endpoints are down to log that once."""

    def __init__(self, settings: Settings, engine: Engine, *, owner: str, clock: Clock) -> None:
        self.settings = settings
        self.engine = engine
        self.owner = owner
        self.clock = clock
        self.down: dict[str, str] = {}  # endpoint -> the error it is failing with
        self._stale_check_at = 0.0  # time.monotonic() of the next look for dead claims

    # -- database steps, each its own short transaction, off the event loop

    def _tx_requeue_stale(self) -> list[int]:
        with session_scope(self.engine) as s:
            return outbox.requeue_stale(s, now=self.clock())

    def _tx_claim(self, limit: int, ids: Sequence[int] | None = None) -> list[Claim]:
        with session_scope(self.engine) as s:
            return outbox.claim_due(s, owner=self.owner, now=self.clock(), limit=limit, ids=ids)

    def _tx_step(
        self, done: tuple[Claim, Attempt] | None, next_id: int | None
    ) -> tuple[outbox.Result | None, bytes | None]:
        """Record the row just sent and fetch the next one's bytes, in one transaction."""
        result: outbox.Result | None = None
        data: bytes | None = None
        with session_scope(self.engine) as s:
            now = self.clock()
            if done is not None:
                result = outbox.record_attempt(
                    s, row_id=done[0].id, owner=self.owner, now=now, attempt=done[1]
                )
            if next_id is not None:
                data = outbox.start_send(s, row_id=next_id, owner=self.owner, now=now)
        return result, data

    def _tx_record_all(self, ids: Sequence[int], attempt: Attempt) -> list[outbox.Result]:
        with session_scope(self.engine) as s:
            now = self.clock()
            return [
                outbox.record_attempt(s, row_id=i, owner=self.owner, now=now, attempt=attempt)
                for i in ids
            ]

    def _tx_claim_or_delay(self, limit: int) -> tuple[list[Claim], float]:
        """Claim what is due; with nothing due, how long until something is (one transaction)."""
        with session_scope(self.engine) as s:
            claims = outbox.claim_due(s, owner=self.owner, now=self.clock(), limit=limit)
            due = None if claims else outbox.next_due(s)
        return claims, self._delay(due)

    def _tx_next_delay(self) -> float:
        with session_scope(self.engine) as s:
            return self._delay(outbox.next_due(s))

    def _delay(self, due: datetime | None) -> float:
        if due is None:
            return IDLE_MAX_S
        return min(IDLE_MAX_S, max(IDLE_MIN_S, (due - self.clock()).total_seconds()))

    def _tx_release(self) -> list[int]:
        with session_scope(self.engine) as s:
            return outbox.release(s, owner=self.owner, now=self.clock())

    def _tx_queued_ids(self) -> list[int]:
        with session_scope(self.engine) as s:
            return outbox.queued_ids(s, now=self.clock())

    # -- rounds

    async def requeue_stale(self) -> int:
        stale = await asyncio.to_thread(self._tx_requeue_stale)
        if stale:
            log.warning("requeued rows of a dead sender", extra={"rows": len(stale)})
        return len(stale)

    async def round(self, batch: int = BATCH) -> tuple[Counter[str], float]:
        """Requeue dead claims, send what is due; (counts, seconds until looking again).

        A nudge follows every ingested mail, so an idle round is one transaction; dead
        claims are looked for every STALE_CHECK_S (a claimer is dead after a minute).
        """
        counts: Counter[str] = Counter()
        if time.monotonic() >= self._stale_check_at:
            counts["requeued"] = await self.requeue_stale()
            self._stale_check_at = time.monotonic() + STALE_CHECK_S
        claims, delay = await asyncio.to_thread(self._tx_claim_or_delay, batch)
        if not claims:
            return counts, delay
        counts.update(await self.deliver(claims))
        if len(claims) >= batch:
            return counts, 0.0
        return counts, await asyncio.to_thread(self._tx_next_delay)  # retries moved it

    async def flush(self, batch: int = BATCH) -> Counter[str]:
        """Every queued row once, now, whatever its backoff (holds are kept)."""
        counts: Counter[str] = Counter()
        counts["requeued"] = await self.requeue_stale()
        ids = await asyncio.to_thread(self._tx_queued_ids)
        for start in range(0, len(ids), batch):
            claims = await asyncio.to_thread(self._tx_claim, batch, ids[start : start + batch])
            counts.update(await self.deliver(claims))
        return counts

    async def release(self) -> None:
        released = await asyncio.to_thread(self._tx_release)
        if released:
            log.info("released unsent rows", extra={"rows": len(released)})

    async def deliver(self, claims: Sequence[Claim]) -> Counter[str]:
        """Send claimed rows: one connection per endpoint, endpoints side by side."""
        by_endpoint: dict[str, list[Claim]] = defaultdict(list)
        for claim in claims:
            by_endpoint[claim.smtp].append(claim)
        counts: Counter[str] = Counter()
        # return_exceptions: every endpoint finishes (and records) before an error surfaces
        results = await asyncio.gather(
            *(self._deliver_endpoint(name, rows) for name, rows in by_endpoint.items()),
            return_exceptions=True,
        )
        for c in results:
            if isinstance(c, BaseException):
                raise c
            counts.update(c)
        return counts

    async def _deliver_endpoint(self, name: str, claims: list[Claim]) -> Counter[str]:
        """Send one endpoint's rows over one connection, one at a time.

        A row's outcome is recorded in the same transaction that fetches the next row's
        bytes (one transaction per row, not two).
        """
        counts: Counter[str] = Counter()
        endpoint = self.settings.smtp.get(name)
        if endpoint is None:
            known = ", ".join(sorted(self.settings.smtp)) or "none"
            error = f"unknown SMTP endpoint {name!r} (inboxd.toml has: {known})"
            self._endpoint_failing(name, error)
            counts.update(await self._record_all(claims, Attempt(error=error)))
            return counts
        client: aiosmtplib.SMTP | None = None
        sent: tuple[Claim, Attempt] | None = None  # sent, not yet recorded

        async def step(next_id: int | None) -> bytes | None:
            nonlocal sent
            done, sent = sent, None
            result, data = await asyncio.to_thread(self._tx_step, done, next_id)
            if done is not None and result is not None:
                counts[result] += 1
                self._log_result(name, done[0], done[1], result)
            return data

        try:
            for i, claim in enumerate(claims):
                data = await step(claim.id)
                if data is None:
                    counts["skipped"] += 1
                    continue
                if client is None:
                    try:
                        client = await connect(endpoint)
                    except Exception as exc:  # noqa: BLE001 - any connect failure is the endpoint's; rows wait
                        error = f"cannot reach SMTP endpoint {name!r}: {_describe(exc)}"
                        self._endpoint_failing(name, error)
                        counts.update(await self._record_all(claims[i:], Attempt(error=error)))
                        return counts
                    self._endpoint_ok(name)
                attempt, usable = await send_one(client, endpoint, claim, data)
                sent = (claim, attempt)
                if not usable:
                    client.close()
                    client = None
        finally:
            if sent is not None:  # recorded even when a stop cuts the batch short
                await step(None)
            if client is not None:
                await close(client)
        return counts

    async def _record_all(self, claims: Sequence[Claim], attempt: Attempt) -> Counter[str]:
        results = await asyncio.to_thread(self._tx_record_all, [c.id for c in claims], attempt)
        return Counter(results)

    def _endpoint_failing(self, name: str, error: str) -> None:
        if name not in self.down:
            log.warning("smtp endpoint unreachable", extra={"smtp": name, "error": error})
        self.down[name] = error

    def _endpoint_ok(self, name: str) -> None:
        if self.down.pop(name, None) is not None:
            log.info("smtp endpoint reachable again", extra={"smtp": name})

    def _log_result(self, name: str, claim: Claim, attempt: Attempt, result: str) -> None:
        extra = {
            "smtp": name,
            "outbox": claim.id,
            "message_id": claim.message_id,
            "owner": self.owner,
        }
        if result == "sent":
            log.info("sent", extra=extra)
        elif result == "failed":
            log.warning("delivery failed", extra={**extra, "error": attempt.error or "refused"})
        elif result == "deferred":
            log.debug("deferred", extra={**extra, "error": attempt.error or "deferred"})


async def flush(
    settings: Settings, engine: Engine, *, owner: str, clock: Clock = utcnow
) -> dict[str, int]:
    """Try every queued row now, whatever its backoff (`inboxd run --once`, cron's retry).

    Returns counts: sent, deferred, failed, requeued (rows of a dead sender put back).
    """
    sender = Sender(settings, engine, owner=owner, clock=clock)
    try:
        counts = await sender.flush()
    finally:
        await sender.release()
    return {k: counts[k] for k in ("sent", "deferred", "failed", "requeued")}


async def run_sender(
    settings: Settings,
    engine: Engine,
    *,
    wake: asyncio.Event,
    stop: asyncio.Event,
    owner: str,
    clock: Clock = utcnow,
    batch: int = BATCH,
) -> None:
    """Deliver due rows until `stop`; `wake` (set after a commit) starts a round at once.

    Between rounds it waits for `wake`, `stop` or the next due row (at most IDLE_MAX_S,
    for rows other processes enqueue). On `stop`, a send in flight gets STOP_GRACE_S,
    then is cut; rows still claimed go back to the queue.
    """
    sender = Sender(settings, engine, owner=owner, clock=clock)
    log.info("outbox sender started", extra={"owner": owner})
    try:
        while not stop.is_set():
            wake.clear()  # a nudge during the round below starts the next one
            started = time.monotonic()
            work = asyncio.create_task(sender.round(batch))
            if not await _until_done_or(work, stop):
                await _cut(work)
                break
            try:
                _, delay = work.result()
            except Exception as exc:  # noqa: BLE001 - the database may be back next round
                log.error("outbox round failed", extra={"error": _describe(exc)})
                delay = ERROR_PAUSE_S
                with contextlib.suppress(Exception):  # rows of the failed round: queued again
                    await sender.release()
            if delay > 0:
                await _wait_any(wake, stop, delay)
            # Back-to-back nudges (an ingest backlog commits many mails a second) share a
            # round: at most one per NUDGE_GAP_S; a lone nudge is served at once.
            gap = NUDGE_GAP_S - (time.monotonic() - started)
            if gap > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), gap)
    finally:
        try:
            await sender.release()
        except Exception as exc:  # noqa: BLE001 - rows left claimed are requeued as stale
            log.error("could not release claimed rows", extra={"error": _describe(exc)})
        log.info("outbox sender stopped")


async def _until_done_or(work: asyncio.Task[object], stop: asyncio.Event) -> bool:
    """Wait for `work`; False when `stop` came first and `work` outlived the grace."""
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if work.done():
        return True
    done, _ = await asyncio.wait({work}, timeout=STOP_GRACE_S)
    return bool(done)


async def _cut(work: asyncio.Task[object]) -> None:
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await work


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, timeout_s: float) -> None:
    waiters = {asyncio.create_task(wake.wait()), asyncio.create_task(stop.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
