"""One exception hierarchy; each class carries the exit code the CLI uses for it."""

from __future__ import annotations

import os


class InboxdError(Exception):
    """A user-facing error: one line on stderr, never a traceback."""

    exit_code = 1


class ConfigError(InboxdError):
    """The configuration or the command line is wrong."""

    exit_code = 2


class SchemaError(InboxdError):
    """The database schema is missing or older than this code."""

    exit_code = 2


class NotFound(InboxdError):
    """A ticket, message, agent or row named by the user does not exist."""


class Forbidden(InboxdError):
    """The acting agent may not do this."""


class TempFail(InboxdError):
    """The mail could not be stored now; the MTA should retry."""

    exit_code = os.EX_TEMPFAIL
