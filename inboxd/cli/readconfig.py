"""What `ticket list` and `ticket show` need of the configuration, without pydantic.

Validating `inboxd.toml` builds the pydantic models, which costs more than the whole
query of a read command. The read commands need only the database and who is in which
team. After a full validation those few values are kept in a small cache file, keyed by
the config file's path and exact bytes and by inboxd's own code: the same file read
again by the same inboxd gives the same settings, so the cache is used; any edit, or
another inboxd, validates in full again (and any problem is reported as always).

Only SQLite databases are cached (a PostgreSQL URL may carry a password, and those
reads load SQLAlchemy anyway). The cache is `$XDG_CACHE_HOME/inboxd` (else
`~/.cache/inboxd`), files readable by their owner only; when it cannot be written,
every command simply validates in full.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import inboxd

if TYPE_CHECKING:
    from inboxd.config import Settings


@dataclass(frozen=True, slots=True)
class TeamView:
    name: str
    members: tuple[str, ...]
    lead: str | None

    @property
    def agents(self) -> frozenset[str]:
        """Members and the lead."""
        return frozenset(self.members) | ({self.lead} if self.lead else set())


@dataclass(frozen=True, slots=True)
class ReadConfig:
    """The database URL and the teams, as the validated settings have them."""

    database: str
    teams: tuple[TeamView, ...]

    def agents(self) -> frozenset[str]:
        """Every team member and lead, lowercased."""
        return frozenset(a for t in self.teams for a in t.agents)

    def teams_of(self, agent: str) -> tuple[TeamView, ...]:
        """The teams `agent` is a member or the lead of, in file order."""
        agent = agent.strip().lower()
        return tuple(t for t in self.teams if agent in t.agents)


def load(path: Path, validate: Callable[[], Settings]) -> ReadConfig:
    """The read view of the config at `path`: cached, or from `validate()` (which raises
    for a broken config exactly as every other command does)."""
    cache = _cache_file(path)
    if cache is not None:
        try:
            doc = json.loads(cache.read_text())
            teams = tuple(
                TeamView(name, tuple(members), lead) for name, members, lead in doc["teams"]
            )
            return ReadConfig(doc["database"], teams)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or unreadable: validate
    settings = validate()
    view = ReadConfig(
        settings.inboxd.database,
        tuple(TeamView(t.name, tuple(t.members), t.lead) for t in settings.teams),
    )
    if cache is not None and view.database.startswith("sqlite:"):
        teams = [[t.name, list(t.members), t.lead] for t in view.teams]
        _write(cache, {"database": view.database, "teams": teams})
    return view


def _cache_file(path: Path) -> Path | None:
    try:
        data = path.read_bytes()
        stamp = (Path(__file__).resolve().parent.parent / "config.py").stat().st_mtime_ns
    except OSError:
        return None  # unreadable config: the full validation says why
    key = hashlib.sha256()
    for part in (str(path.resolve()).encode(), data, inboxd.__version__.encode(), b"%d" % stamp):
        key.update(len(part).to_bytes(8, "big") + part)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "inboxd" / f"read-{key.hexdigest()[:40]}.json"


def _write(cache: Path, doc: dict[str, object]) -> None:
    """Atomically, owner-only; a cache that cannot be written is no error."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".read-")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out)
        os.replace(tmp, cache)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
