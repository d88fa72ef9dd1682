"""`inboxd deliver` and `inboxd import`: the same intake as IMAP, fed from stdin or files."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from inboxd.config import Settings
from inboxd.daemon import Runtime, open_runtime
from inboxd.db import session_scope
from inboxd.errors import InboxdError
from inboxd.mail import sources
from inboxd.tickets import intake

if TYPE_CHECKING:
    from inboxd.mail.parse import Parsed

IMPORT_COMMIT_EVERY = 200  # messages per transaction during a backfill
IMPORT_BATCH_BYTES = 32 * 1024 * 1024  # ... or fewer: two batches in memory stay bounded


def deliver_stdin(settings: Settings, mailbox: str, stream: BinaryIO) -> str:
    """Store one piped message; returns a one-line outcome. Raises on any failure."""
    runtime = open_runtime(settings)
    try:
        data = sources.read_pipe(stream, limit=settings.inboxd.max_message_size)
        if not data.strip():
            raise InboxdError("empty message on stdin")
        with session_scope(runtime.engine) as s:
            r = intake.receive(
                s, runtime.intake_config(), mailbox=mailbox, data=data, source="pipe"
            )
    finally:
        runtime.engine.dispose()
    ticket = f" ticket {r.ticket_id}" if r.ticket_id else ""
    return f"inboxd: {r.outcome}{ticket} ({r.message_id or 'no Message-ID'})"


def import_path(settings: Settings, mailbox: str, path: Path, *, progress: bool) -> dict[str, int]:
    """Backfill every message at `path`; duplicates are skipped, so running twice is safe."""
    settings.mailbox(mailbox)
    total = sources.count(path)
    runtime = open_runtime(settings)
    runtime.checkpoint_in_background()
    runtime.parse_ahead()  # a second core parses, under the daemon's time limit
    cfg = runtime.intake_config()
    counts: Counter[str] = Counter()
    bar = Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress,
        transient=True,
    )
    try:
        with bar:
            task = bar.add_task("import", total=total)
            # One batch ahead, as the mailbox worker: the next batch parses meanwhile.
            in_hand: _Parsing | None = None
            for batch in sources.batched(
                sources.read(path),
                count=IMPORT_COMMIT_EVERY,
                max_bytes=IMPORT_BATCH_BYTES,
                size=lambda mail: len(mail.data),
            ):
                parsing = _parse(runtime, cfg, [mail.data for mail in batch])
                if in_hand is not None:
                    _store(runtime, cfg, mailbox, in_hand, counts)
                    bar.advance(task, len(in_hand.datas))
                in_hand = parsing
            if in_hand is not None:
                _store(runtime, cfg, mailbox, in_hand, counts)
                bar.advance(task, len(in_hand.datas))
    finally:
        runtime.close()
    return {
        "stored": counts["stored"],
        "duplicates": counts["duplicate"],
        "quarantined": counts["quarantined"],
        "tickets": counts["new-ticket"],
    }


@dataclass(frozen=True, slots=True)
class _Parsing:
    """A batch read from the files, its parse under way."""

    datas: list[bytes]
    parses: Iterator[Parsed]


def _parse(runtime: Runtime, cfg: intake.IntakeConfig, datas: list[bytes]) -> _Parsing:
    from inboxd.mail.parsepool import parse_all

    pool = runtime.parse_pool
    return _Parsing(datas, parse_all(pool, datas, cfg.reader(), cfg.parse_timeout))


def _store(
    runtime: Runtime,
    cfg: intake.IntakeConfig,
    mailbox: str,
    batch: _Parsing,
    counts: Counter[str],
) -> None:
    mails = (
        intake.Incoming(data, parsed)
        for data, parsed in zip(batch.datas, batch.parses, strict=True)
    )
    for r in intake.store_batch(runtime.engine, cfg, mails, mailbox=mailbox, source="import"):
        counts[r.outcome] += 1
        if r.outcome != "duplicate":
            counts["stored"] += 1
