"""Mail that does not come over IMAP: the MTA pipe (stdin), mbox files, Maildirs, .eml folders.

Readers yield one message's bytes at a time, so a large backfill never sits in memory;
`batched` bounds what a backfill, or the IMAP worker, holds at once.
"""

from __future__ import annotations

import mailbox
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from inboxd.errors import InboxdError

T = TypeVar("T")


def batched(
    items: Iterable[T], *, count: int, max_bytes: int, size: Callable[[T], int]
) -> Iterator[list[T]]:
    """`count` items at a time, fewer when their `size` would pass `max_bytes`; a larger
    item is a batch of its own. Mail of large attachments then never fills memory."""
    batch: list[T] = []
    held = 0
    for item in items:
        n = size(item)
        if batch and (len(batch) >= count or held + n > max_bytes):
            yield batch
            batch, held = [], 0
        batch.append(item)
        held += n
    if batch:
        yield batch


@dataclass(frozen=True, slots=True)
class SourceMail:
    where: str  # file and position, for messages about this mail
    data: bytes


def read_pipe(stream: BinaryIO, *, limit: int) -> bytes:
    """One message from an MTA pipe. Reads at most `limit + 1` bytes (oversize is kept)."""
    data = stream.read(limit + 1)
    rest = stream.read(1 << 20)
    while rest:  # drain, so the MTA does not see a broken pipe; the excess is not kept
        rest = stream.read(1 << 20)
    return data


def kind_of(path: Path) -> str:
    """maildir | mbox | files | eml: what `inboxd import` finds at `path`."""
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            return "maildir"
        return "files"
    if not path.exists():
        raise InboxdError(f"{path}: no such file or folder")
    with path.open("rb") as fh:
        head = fh.read(5)
    return "mbox" if head == b"From " else "eml"


def count(path: Path) -> int | None:
    """How many messages `read` will yield, when cheap to know (for a progress bar)."""
    kind = kind_of(path)
    if kind == "maildir":
        return sum(1 for sub in ("cur", "new") for p in (path / sub).iterdir() if p.is_file())
    if kind == "files":
        return sum(1 for p in _files(path))
    if kind == "eml":
        return 1
    return None


def _files(folder: Path) -> Iterator[Path]:
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            yield p


def read(path: Path) -> Iterator[SourceMail]:
    """Every message at `path`, in a stable order."""
    kind = kind_of(path)
    if kind == "eml":
        yield SourceMail(str(path), path.read_bytes())
    elif kind == "files":
        for p in _files(path):
            yield SourceMail(str(p), p.read_bytes())
    elif kind == "maildir":
        for sub in ("cur", "new"):
            for p in sorted((path / sub).iterdir()):
                if p.is_file():
                    yield SourceMail(str(p), p.read_bytes())
    else:
        box = mailbox.mbox(path, create=False)
        try:
            for i, key in enumerate(box.iterkeys(), 1):
                yield SourceMail(f"{path}#{i}", box.get_bytes(key, from_=False))
        finally:
            box.close()
