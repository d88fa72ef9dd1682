"""Where the config file is: a module of its own, light enough for every command."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_ENV = "INBOXD_CONFIG"
DEFAULT_CONFIG = Path("inboxd.toml")


def resolve_config_path(cli_value: Path | None) -> Path:
    """--config wins, then $INBOXD_CONFIG, then ./inboxd.toml (returned as given)."""
    if cli_value is not None:
        return cli_value
    env = os.environ.get(CONFIG_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_CONFIG
