"""Regenerate migrations/versions/0001_initial_schema.py from inboxd/models.py.

Only while nothing has been released: once a revision ships, schema changes are new
revisions (`alembic revision --autogenerate -m "..."`), never edits of old ones.
Uses a private throwaway SQLite file, so several people can run it at once.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "migrations" / "versions" / "0001_initial_schema.py"


def main() -> None:
    # Later hand-written revisions (0002_fulltext: raw DDL autogenerate cannot see) revise
    # 0001: park them while 0001 is rebuilt, or Alembic cannot load the chain.
    later = [p for p in TARGET.parent.glob("0*.py") if p != TARGET]
    with (
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryDirectory(dir=TARGET.parent.parent) as parked,  # same filesystem
    ):
        moved = [p.rename(Path(parked) / p.name) for p in later]
        try:
            TARGET.unlink(missing_ok=True)
            cfg = Config()
            cfg.set_main_option("script_location", str(ROOT / "migrations"))
            cfg.set_main_option("sqlalchemy.url", f"sqlite:///{tmp}/empty.db")
            command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
        finally:
            for p in moved:
                p.rename(TARGET.parent / p.name)
    text = TARGET.read_text().replace("Revises: \n", "Revises:\n")
    TARGET.write_text(text)
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run([*ruff, "check", "--fix", "-q", str(TARGET)], check=False)
    subprocess.run([*ruff, "format", "-q", str(TARGET)], check=True)
    print(f"wrote {TARGET.relative_to(ROOT)}")  # noqa: T201


if __name__ == "__main__":
    main()
