"""What every command shares: the config it runs on, the database, output helpers."""

from __future__ import annotations

import json
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

    def reset(self, config_option: Path | None) -> None:
        self.__dict__.clear()
        self.config_option = config_option

    @property
    def config_path(self) -> Path:
        return resolve_config_path(self.config_option)

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    @cached_property
    def engine(self) -> Engine:
        from inboxd.db import make_engine, require_schema

        engine = make_engine(self.settings.inboxd.database, pooled=False)
        require_schema(engine)
        return engine


STATE = CliState()


def emit_json(doc: Any) -> None:
    """The JSON document alone on stdout (no rich wrapping)."""
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
    sys.stdout.write("\n")
