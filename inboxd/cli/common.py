"""What every command shares: the config it runs on, the database, output helpers."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import Engine

from inboxd.config import Settings, load_settings, resolve_config_path


def fail(message: str, code: int) -> NoReturn:
    """`inboxd: error: ...` on stderr and exit; nothing for an empty message (help shown)."""
    if message:
        print(f"inboxd: error: {message}", file=sys.stderr)  # noqa: T201 - the CLI's voice
    sys.exit(code)


@dataclass
class CliState:
    """Per-invocation state; `reset` runs first in every command (tests call main() often)."""

    config_option: Path | None = None
    agent_option: str | None = None  # --as / $INBOXD_AGENT; `inboxd.cli.identity` reads it

    def reset(self, config_option: Path | None, agent_option: str | None = None) -> None:
        self.__dict__.clear()
        self.config_option = config_option
        self.agent_option = agent_option

    @property
    def config_path(self) -> Path:
        return resolve_config_path(self.config_option)

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    @cached_property
    def engine(self) -> Engine:
        from inboxd.db import make_engine

        engine = make_engine(self.settings.inboxd.database, pooled=False)
        require_current_schema(engine)
        return engine


STATE = CliState()

_REVISION = re.compile(r"^revision(?:\s*:[^=]*)?=\s*[\"']([^\"']+)[\"']", re.M)
_DOWN = re.compile(r"^down_revision(?:\s*:[^=]*)?=(.*)$", re.M)


def require_current_schema(engine: Engine) -> None:
    """`db.require_schema`, without loading Alembic when the schema is current.

    Importing Alembic costs more than a whole `ticket list`; the head revision is read
    from the revision files instead. Anything unexpected (a file without a revision, two
    heads, an old or missing schema) goes to Alembic's own check and its error message.
    """
    head = _head_from_files()
    if head is not None:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with engine.connect() as conn:
                current = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        except SQLAlchemyError:
            current = []
        if [tuple(r) for r in current] == [(head,)]:
            return
    from inboxd.db import require_schema

    require_schema(engine)


def _head_from_files() -> str | None:
    from inboxd.db import migrations_dir

    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (migrations_dir() / "versions").glob("*.py"):
        if path.name == "__init__.py":
            continue
        text = path.read_text(encoding="utf-8")
        found = _REVISION.search(text)
        down = _DOWN.search(text)
        if found is None or down is None:
            return None
        revisions.add(found.group(1))
        parents.update(re.findall(r"[\"']([^\"']+)[\"']", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def emit_json(doc: Any) -> None:
    """The JSON document alone on stdout (no rich wrapping)."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
    sys.stdout.write("\n")
