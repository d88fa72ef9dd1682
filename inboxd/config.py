"""inboxd.toml -> frozen, validated `Settings`; `check_config` reports every problem at once.

A file is checked in passes that never hide each other: the fields (pydantic models with
unknown keys refused), then the cross-references and multi-key rules over the raw TOML
dicts (pydantic skips a model's after-validators once one field fails, and the admin must
still see the undefined team beside the bad port). Findings never quote an input value: a
wrong-typed field may hold a password. Secrets are never loaded here, only named: they are
read when a connection needs them (`password()`, `secret()`, `token()`).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import itertools
import json
import os
import re
import string
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, time, timedelta
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from inboxd.errors import ConfigError
from inboxd.locate import CONFIG_ENV, resolve_config_path

__all__ = [
    "ALWAYS_OPEN",
    "BUILTIN_CALENDAR",
    "AckSettings",
    "CalendarSpec",
    "Finding",
    "General",
    "ImapSettings",
    "Mailbox",
    "Priority",
    "Settings",
    "SlaDefaults",
    "SlaPolicy",
    "SmtpEndpoint",
    "SurveySettings",
    "Team",
    "check_config",
    "load_settings",
    "parse_duration",
    "resolve_config_path",
]

BUILTIN_CALENDAR = "24x7"  # always open, UTC; usable by name without a [calendar.*] table
TOKEN_TIMEOUT_S = 30

Priority = Literal["low", "normal", "high", "urgent"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Security = Literal["none", "starttls", "tls"]
Disposition = Literal["keep", "seen", "move", "delete"]
NotifyKind = Literal["new-ticket", "customer-reply", "assigned"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)
ACK_SUBJECT_FIELDS = frozenset({"id", "subject"})  # placeholders ack.subject may use

Loc = tuple[str | int, ...]


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in a configuration file, located as precisely as known."""

    file: str
    line: int | None
    key: str  # dotted TOML path with list items named: `mailbox "support".imap.port`
    problem: str  # what is wrong, then "(what is expected)"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.problem}" if self.key else f"{where}: {self.problem}"


@dataclass(frozen=True, slots=True)
class Expect:
    """Annotation marker: how an error on this field says what it expected."""

    text: str


def _bad(problem: str) -> PydanticCustomError:
    """A validation error whose message is already complete, "(expected)" included."""
    return PydanticCustomError("inboxd", problem)


def _base_dir(info: ValidationInfo) -> Path | None:
    context = info.context
    if isinstance(context, Mapping):
        base = context.get("base_dir")
        return base if isinstance(base, Path) else None
    return None


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file's folder, not to the cwd."""
    value = value.expanduser()
    base = _base_dir(info)
    if value.is_absolute() or base is None:
        return value
    return Path(os.path.normpath(base / value))


# --------------------------------------------------------------------------- durations

_DURATION_RE = re.compile(
    r"(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?"
)
_DURATION_HINT = 'a whole number and a unit: "60s", "90m", "4h", "3d", "2w", or "1h30m"'


def parse_duration(text: str) -> timedelta:
    """Parse "60s", "90m", "4h", "3d", "2w" or a combination largest unit first ("1h30m").

    Raises ValueError naming the text and the accepted forms.
    """
    match = _DURATION_RE.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"invalid duration {text!r} (expected {_DURATION_HINT})")
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    try:
        return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, str):
        try:
            result = parse_duration(value)
        except ValueError:
            raise _bad(f"invalid duration ({_DURATION_HINT})") from None
    else:
        raise _bad(f"should be a duration string ({_DURATION_HINT})")
    if result <= timedelta(0):
        raise _bad(f"must be longer than zero ({_DURATION_HINT})")
    return result


# --------------------------------------------------------------------------- small types

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_NAME_HINT = "lowercase letters, digits, '-' and '_', starting with a letter or digit"
_ADDR_PART = r"[^\s@<>(),;:\"\[\]\\]+"
_ADDR_RE = re.compile(rf"{_ADDR_PART}@{_ADDR_PART}")
_ADDR_HINT = "an address like name@example.com"
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise _bad(f"should be a string ({_NAME_HINT})")
    if not _NAME_RE.fullmatch(value):
        raise _bad(f"invalid name ({_NAME_HINT})")
    return value


def _is_address(value: str) -> bool:
    domain = value.rpartition("@")[2]
    return bool(_ADDR_RE.fullmatch(value)) and not (
        domain.startswith(".") or domain.endswith(".") or ".." in domain
    )


def _address(value: object) -> str:
    if not isinstance(value, str):
        raise _bad(f"should be a string ({_ADDR_HINT})")
    if not _is_address(value.strip()):
        raise _bad(f"invalid address ({_ADDR_HINT})")
    return value.strip().lower()


def _sender_pattern(value: object) -> str:
    hint = 'an address, "@domain", or a glob like "*@*.example.com"'
    if not isinstance(value, str):
        raise _bad(f"should be a string ({hint})")
    text = value.strip().lower()
    ok = (
        any(c in text for c in "*?[")
        or (text.startswith("@") and _is_address("x" + text))
        or _is_address(text)
    )
    if not ok or any(c.isspace() for c in text):
        raise _bad(f"invalid sender pattern ({hint})")
    return text


def _env_name(value: object) -> str:
    hint = "an environment variable name like SMTP_PASSWORD"
    if not isinstance(value, str):
        raise _bad(f"should be a string ({hint})")
    if not _ENV_RE.fullmatch(value):
        raise _bad(f"invalid environment variable name ({hint})")
    return value


def _zone(value: object) -> str:
    hint = 'an IANA time zone like "Europe/Oslo" or "UTC"'
    if not isinstance(value, str):
        raise _bad(f"should be a string ({hint})")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _bad(f"unknown time zone ({hint})") from None
    return value


def _host(value: object) -> str:
    hint = "a host name or IP address"
    if not isinstance(value, str):
        raise _bad(f"should be a string ({hint})")
    text = value.strip()
    if not text or any(c.isspace() or c in "/@" for c in text):
        raise _bad(f"invalid host ({hint})")
    return text


def _nonempty(value: object) -> str:
    if not isinstance(value, str):
        raise _bad("should be a string (a non-empty string)")
    if not value.strip():
        raise _bad("is empty (a non-empty string)")
    return value


def _template_name(value: object) -> str:
    hint = 'a file name in the templates folder, like "ack.txt"'
    if not isinstance(value, str):
        raise _bad(f"should be a string ({hint})")
    parts = value.replace("\\", "/").split("/")
    if not value or value.startswith(("/", "~")) or any(p in ("", ".", "..") for p in parts):
        raise _bad(f"invalid template name ({hint})")
    return value


_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9}
_SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30}


def _size(value: object) -> int:
    hint = 'bytes as an integer, or "25MB", "10MiB"'
    if isinstance(value, int) and not isinstance(value, bool):
        result = value
    elif isinstance(value, str) and (match := _SIZE_RE.fullmatch(value.strip())):
        unit = (match.group(2) or "b").lower()
        result = int(float(match.group(1)) * _SIZE_UNITS[unit])
    else:
        raise _bad(f"invalid size ({hint})")
    if result < 1:
        raise _bad(f"must be at least 1 byte ({hint})")
    return result


def _listen(value: object) -> str | None:
    hint = 'a port, or "host:port" like "127.0.0.1:9108"'
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        host, port_text = "", str(value)
    elif isinstance(value, str):
        text = value.strip()
        host, _, port_text = text.rpartition(":") if ":" in text else ("", "", text)
    else:
        raise _bad(f"should be a string or a port number ({hint})")
    host = host.strip().removeprefix("[").removesuffix("]") or "127.0.0.1"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535 or " " in host:
        raise _bad(f"invalid listen address ({hint})")
    return f"[{host}]:{int(port_text)}" if ":" in host else f"{host}:{int(port_text)}"


def _placeholders(template: str) -> set[str]:
    """Field names of a str.format template; ValueError on unbalanced braces."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def _subject_tag(value: object) -> str:
    hint = 'text containing {id}, like "[#{id}]"'
    if not isinstance(value, str):
        raise _bad(f"should be a string ({hint})")
    try:
        fields = _placeholders(value)
    except ValueError:
        raise _bad(f"unbalanced braces ({hint})") from None
    if fields != {"id"} or value.count("{id}") != 1:
        raise _bad(f"must contain {{id}} once and no other placeholder ({hint})")
    return value


def _ack_subject(value: object) -> str:
    known = ", ".join("{" + f + "}" for f in sorted(ACK_SUBJECT_FIELDS))
    hint = f'text with the placeholders {known}, like "[#{{id}}] {{subject}}"'
    if not isinstance(value, str):
        raise _bad(f"should be a string ({hint})")
    try:
        fields = _placeholders(value)
    except ValueError:
        raise _bad(f"unbalanced braces ({hint})") from None
    if not fields <= ACK_SUBJECT_FIELDS:
        raise _bad(f"unknown placeholder ({hint})")
    return value


def _on_processed(value: object) -> str:
    hint = "keep, seen, delete or move:<folder>"
    if not isinstance(value, str):
        raise _bad(f"should be a string ({hint})")
    if value in ("keep", "seen", "delete"):
        return value
    if value.startswith("move:") and value[5:].strip():
        return value
    raise _bad(f"unknown disposition ({hint})")


_SIMPLE_ACTIONS = ("notify-team", "notify-lead", "raise-priority")


def _action(value: object) -> str:
    hint = "notify-team, notify-lead, raise-priority or reassign:<team>"
    if not isinstance(value, str):
        raise _bad(f"should be a string ({hint})")
    if value in _SIMPLE_ACTIONS or (
        value.startswith("reassign:") and _NAME_RE.fullmatch(value[9:])
    ):
        return value
    raise _bad(f"unknown action ({hint})")


_RANGE_RE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_HOURS_HINT = '"HH:MM-HH:MM" ranges, comma separated or a list, like "09:00-12:00,13:00-17:00"'


def _clock_time(hour: str, minute: str, *, end: bool) -> time:
    h, m = int(hour), int(minute)
    if end and (h, m) == (24, 0):
        return time.max  # "24:00": to the end of the day
    if h > 23 or m > 59:
        raise _bad(f"invalid time of day ({_HOURS_HINT})")
    return time(h, m)


def _ranges(value: object) -> tuple[tuple[time, time], ...]:
    """One weekday's open hours: sorted, each start < end, none overlapping."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise _bad(f"should be a string or a list of strings ({_HOURS_HINT})")
    spans: list[tuple[time, time]] = []
    for item in items:
        if isinstance(item, tuple) and all(isinstance(t, time) for t in item) and len(item) == 2:
            spans.append((item[0], item[1]))  # already parsed: built in Python, not TOML
            continue
        if not isinstance(item, str):
            raise _bad(f"should be a string or a list of strings ({_HOURS_HINT})")
        for piece in item.split(",") if item.strip() else []:
            match = _RANGE_RE.fullmatch(piece.strip())
            if match is None:
                raise _bad(f"invalid range ({_HOURS_HINT})")
            start = _clock_time(match.group(1), match.group(2), end=False)
            spans.append((start, _clock_time(match.group(3), match.group(4), end=True)))
    if any(not start < end for start, end in spans):
        raise _bad(f"a range ends before it starts ({_HOURS_HINT})")
    spans.sort()
    for (_, earlier_end), (later_start, _) in itertools.pairwise(spans):
        if later_start < earlier_end:
            raise _bad(f"ranges overlap ({_HOURS_HINT})")
    return tuple(spans)


Name = Annotated[str, BeforeValidator(_name), Expect(_NAME_HINT)]
Address = Annotated[str, BeforeValidator(_address), Expect(_ADDR_HINT)]
EnvName = Annotated[str, BeforeValidator(_env_name), Expect("an environment variable name")]
Zone = Annotated[str, BeforeValidator(_zone), Expect('an IANA time zone like "Europe/Oslo"')]
Host = Annotated[str, BeforeValidator(_host), Expect("a host name or IP address")]
NonEmpty = Annotated[str, BeforeValidator(_nonempty), Expect("a non-empty string")]
TemplateName = Annotated[str, BeforeValidator(_template_name)]
Duration = Annotated[timedelta, BeforeValidator(_duration), Expect(_DURATION_HINT)]
Port = Annotated[StrictInt, Field(ge=1, le=65535), Expect("integer 1-65535")]
Action = Annotated[str, BeforeValidator(_action)]
Hours = Annotated[tuple[tuple[time, time], ...], BeforeValidator(_ranges), Expect(_HOURS_HINT)]
Holiday = Annotated[date, Expect("a date like 2026-12-24")]
TeamRef = Annotated[str, Expect("the name of a [[team]]")]
SmtpRef = Annotated[str, Expect("the name of an [smtp.NAME] table")]
SlaRef = Annotated[str, Expect("the name of an [sla.NAME] table")]
CalendarRef = Annotated[str, Expect('the name of a [calendar.NAME] table, or "24x7"')]

_MODEL = ConfigDict(frozen=True, extra="forbid")
_SMTP_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "tls": 465}
_IMAP_PORTS: dict[str, int] = {"none": 143, "starttls": 143, "tls": 993}


def _default_port(data: Any, ports: Mapping[str, int], default_security: str) -> Any:
    """Fill `port` from `security` when the file leaves it out.

    An invalid `security` gets the default's port, so it is reported once, not twice.
    """
    if isinstance(data, dict) and "port" not in data:
        security = data.get("security")
        if not (isinstance(security, str) and security in ports):
            security = default_security
        return {**data, "port": ports[security]}
    return data


def _read_secret(env: str | None, file: Path | None, what: str) -> str | None:
    """The secret named by `env` or `file`, read now; ConfigError (without it) if unreadable."""
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"environment variable {env} is not set or empty (the {what})")
        return value
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read the {what} from {file}: {reason}") from None
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- models


class SmtpEndpoint(BaseModel):
    """An SMTP relay mailboxes answer through (TOML `[smtp.NAME]`)."""

    model_config = _MODEL

    host: Host
    security: Security = "starttls"
    port: Port  # default from security: 25 none, 587 starttls, 465 tls
    username: NonEmpty | None = None
    password_env: EnvName | None = None
    password_file: Path | None = None
    timeout: Duration = timedelta(seconds=60)
    helo: NonEmpty | None = None
    ca_file: Path | None = None  # extra CA bundle, e.g. for a relay with a private CA

    @model_validator(mode="before")
    @classmethod
    def _port_from_security(cls, data: Any) -> Any:
        return _default_port(data, _SMTP_PORTS, "starttls")

    @field_validator("password_file", mode="after")
    @classmethod
    def _relative(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @field_validator("ca_file", mode="after")
    @classmethod
    def _ca_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _existing_file(value, info)

    def password(self) -> str | None:
        """The SMTP password, read now from the environment or file; None if none is set.

        Raises ConfigError when the variable is unset or the file unreadable.
        """
        return _read_secret(self.password_env, self.password_file, "SMTP password")


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    path = _resolve(value, info)
    if not path.is_file():
        raise _bad("file not found (a path relative to this file, or absolute)")
    return path


class ImapSettings(BaseModel):
    """Where and how a mailbox is fetched over IMAP (TOML `imap = {...}` in `[[mailbox]]`)."""

    model_config = _MODEL

    host: Host
    security: Security = "tls"
    port: Port  # default 993 with tls, 143 otherwise
    username: NonEmpty
    auth: Literal["password", "oauth2"] = "password"
    password_env: EnvName | None = None
    password_file: Path | None = None
    token_command: NonEmpty | None = Field(default=None, repr=False)  # may carry a secret
    folder: NonEmpty = "INBOX"
    idle: StrictBool = True
    poll_interval: Duration = timedelta(seconds=60)
    batch_size: Annotated[StrictInt, Field(ge=1, le=10_000), Expect("integer 1-10000")] = 200
    timeout: Duration = timedelta(seconds=120)
    ca_file: Path | None = None

    _base_dir: Path | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _port_from_security(cls, data: Any) -> Any:
        return _default_port(data, _IMAP_PORTS, "tls")

    @field_validator("password_file", mode="after")
    @classmethod
    def _relative(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @field_validator("ca_file", mode="after")
    @classmethod
    def _ca_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _existing_file(value, info)

    @model_validator(mode="after")
    def _remember_base(self, info: ValidationInfo) -> ImapSettings:
        self._base_dir = _base_dir(info)  # token_command runs in the config's folder
        return self

    def password(self) -> str | None:
        """The IMAP password, read now; None when none is set (oauth2). Raises ConfigError."""
        return _read_secret(self.password_env, self.password_file, "IMAP password")

    def token(self) -> str:
        """Run `token_command` now and return the OAuth2 access token it prints.

        Runs with the shell, in the config file's folder, for at most 30 s. Raises
        ConfigError with a one-line reason that never contains the command's output.
        """
        if not self.token_command:
            raise ConfigError('no token_command (needed with auth = "oauth2")')
        try:
            done = subprocess.run(
                self.token_command,
                shell=True,
                capture_output=True,
                timeout=TOKEN_TIMEOUT_S,
                cwd=self._base_dir,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(f"token_command did not finish within {TOKEN_TIMEOUT_S} s") from None
        except OSError as exc:
            raise ConfigError(f"token_command could not run: {exc.strerror}") from None
        token = done.stdout.decode("utf-8", "replace").strip()
        if done.returncode != 0:
            # stderr usually says why (expired refresh token); never echo stdout
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1][:200] if lines else ""
            if token and token in reason:
                reason = ""
            suffix = f": {reason}" if reason else ""
            raise ConfigError(f"token_command exited with status {done.returncode}{suffix}")
        if not token:
            raise ConfigError("token_command printed no token")
        return token


class Mailbox(BaseModel):
    """One shared address inboxd serves (TOML `[[mailbox]]`)."""

    model_config = _MODEL

    name: Name
    address: Address
    aliases: tuple[Address, ...] = ()
    default_team: TeamRef
    smtp: SmtpRef
    on_processed: Annotated[
        str, BeforeValidator(_on_processed), Expect("keep, seen, delete or move:<folder>")
    ] = "keep"
    ack_template: TemplateName | None = None
    sla: SlaRef | None = None
    imap: ImapSettings | None = None  # None: fed only by `inboxd deliver` (the MTA pipe)

    @property
    def disposition(self) -> tuple[Disposition, str | None]:
        """What to do with the server copy after the commit, and the folder for "move"."""
        if self.on_processed.startswith("move:"):
            return "move", self.on_processed[5:].strip()
        if self.on_processed in ("seen", "delete"):
            return ("seen" if self.on_processed == "seen" else "delete"), None
        return "keep", None

    @property
    def addresses(self) -> tuple[str, ...]:
        """The address, then the aliases, lowercased."""
        return (self.address, *self.aliases)


class Team(BaseModel):
    """A queue of agents (TOML `[[team]]`)."""

    model_config = _MODEL

    name: Name
    members: tuple[Address, ...] = ()
    lead: Address | None = None
    assignment: Literal["none", "round-robin", "least-loaded"] = "none"
    sla: SlaRef | None = None
    calendar: CalendarRef | None = None  # hours in which agents are notified
    notify: tuple[NotifyKind, ...] = ()
    address: Address | None = None  # the team's list address, for notify-team mails

    @field_validator("members", "notify", mode="after")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise _bad("listed twice (each entry once)")
        return value

    @property
    def agents(self) -> frozenset[str]:
        """Members and the lead."""
        return frozenset(self.members) | ({self.lead} if self.lead else set())


class CalendarSpec(BaseModel):
    """Business hours in one time zone, minus holidays (TOML `[calendar.NAME]`)."""

    model_config = _MODEL

    timezone: Zone
    hours: dict[Weekday, Hours] = Field(default_factory=dict)  # a missing day is closed
    holidays_file: Path | None = None  # iCalendar file; its dates join `holidays`
    holidays: tuple[Holiday, ...] = Field(default=(), validate_default=True)

    @field_validator("holidays_file", mode="after")
    @classmethod
    def _readable_ics(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = _resolve(value, info)
        try:
            _read_ics(path)
        except FileNotFoundError:
            raise _bad("file not found (an iCalendar file, relative to this file)") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise _bad(f"cannot read: {reason} (an iCalendar file)") from None
        except ValueError as exc:
            raise _bad(f"{exc} (an iCalendar file of all-day events)") from None
        return path

    @field_validator("holidays", mode="after")
    @classmethod
    def _merge_file(cls, value: tuple[date, ...], info: ValidationInfo) -> tuple[date, ...]:
        """`holidays` ends up holding every holiday: listed ones and the file's."""
        path = info.data.get("holidays_file")
        extra = _read_ics(path) if isinstance(path, Path) else frozenset()
        return tuple(sorted(set(value) | extra))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


ALWAYS_OPEN = CalendarSpec(timezone="UTC", hours={day: ((time(0), time.max),) for day in WEEKDAYS})


class SlaPolicy(BaseModel):
    """Response and resolution targets in business time (TOML `[sla.NAME]`)."""

    model_config = _MODEL

    calendar: CalendarRef = BUILTIN_CALENDAR
    first_response: Duration
    next_response: Duration | None = None
    resolution: Duration
    warn_at: Annotated[StrictFloat, Field(gt=0, lt=1), Expect("a fraction between 0 and 1")] = 0.8
    on_warning: tuple[Action, ...] = ()
    on_breach: tuple[Action, ...] = ()
    notify_in_business_hours: StrictBool = True


class SlaDefaults(BaseModel):
    """Which SLA policy a ticket gets when no rule and no team names one."""

    model_config = _MODEL

    default: SlaRef | None = None
    by_priority: dict[Priority, SlaRef] = Field(default_factory=dict)

    def policy_for(self, priority: str) -> str | None:
        """The policy name for this priority, else the default, else None."""
        for key, name in self.by_priority.items():
            if key == priority:
                return name
        return self.default


class AckSettings(BaseModel):
    """The acknowledgement a customer gets for a new ticket (TOML `[ack]`)."""

    model_config = _MODEL

    enabled: StrictBool = True
    template: TemplateName = "ack.txt"
    subject: Annotated[str, BeforeValidator(_ack_subject)] = "[#{id}] {subject}"
    rate_limit: Annotated[StrictInt, Field(ge=1), Expect("an integer of at least 1")] = 3
    rate_window: Duration = timedelta(hours=1)


class SurveySettings(BaseModel):
    """The satisfaction survey sent when a ticket is resolved (TOML `[survey]`)."""

    model_config = _MODEL

    enabled: StrictBool = False
    template: TemplateName = "survey.txt"


_DB_HINT = '"sqlite:///inboxd.db" (relative to this file) or "postgresql+psycopg://user@host/db"'


class General(BaseModel):
    """Process-wide settings (TOML `[inboxd]`)."""

    model_config = _MODEL

    # repr=False: a PostgreSQL URL may carry a password
    database: Annotated[str, Expect(_DB_HINT)] = Field(repr=False)
    rules: Path = Field(default=Path("rules"), validate_default=True)
    templates: Path | None = None
    timezone: Zone = "UTC"
    secret_env: EnvName | None = None
    secret_file: Path | None = None
    subject_tag: Annotated[str, BeforeValidator(_subject_tag)] = "[#{id}]"
    max_message_size: Annotated[int, BeforeValidator(_size)] = 25_000_000
    # A mail whose parse takes longer is quarantined, so it cannot hold up its mailbox.
    parse_timeout: Duration = timedelta(seconds=60)
    sweep_interval: Duration = timedelta(seconds=10)
    # SQLite: the daily full-text index merge (writers wait for it) runs in this local hour.
    search_merge_hour: Annotated[StrictInt, Field(ge=0, le=23), Expect("an hour 0-23")] = 3
    auto_resolve_pending: Duration = timedelta(days=7)
    sender_blocklist: tuple[Annotated[str, BeforeValidator(_sender_pattern)], ...] = ()
    admins: tuple[Address, ...] = ()
    retention: Duration | None = None
    stale_after: Duration = timedelta(minutes=30)
    # `inboxd status` is unhealthy once a due outgoing mail waits longer than this.
    outbox_stuck_after: Duration = timedelta(minutes=30)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics: Annotated[str | None, BeforeValidator(_listen)] = None

    @field_validator("database", mode="after")
    @classmethod
    def _database(cls, value: str, info: ValidationInfo) -> str:
        """Relative SQLite paths become absolute; `postgresql://` gets the psycopg driver."""
        scheme, sep, rest = value.strip().partition("://")
        scheme = scheme.lower()
        if sep and scheme in ("postgresql", "postgres", "postgresql+psycopg") and rest:
            return f"postgresql+psycopg://{rest}"
        if sep and scheme == "sqlite" and (rest == "" or rest.startswith("/")):
            file, query_sep, query = rest[1:].partition("?")
            base = _base_dir(info)
            if file in ("", ":memory:") or file.startswith("/") or base is None:
                return f"sqlite://{rest}"
            return f"sqlite:///{os.path.normpath(base / Path(file).expanduser())}{query_sep}{query}"
        raise _bad(f"unsupported database URL ({_DB_HINT})")

    @field_validator("rules", "secret_file", mode="after")
    @classmethod
    def _relative(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @field_validator("templates", mode="after")
    @classmethod
    def _folder(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = _resolve(value, info)
        if not path.is_dir():
            raise _bad("folder not found (a folder, relative to this file)")
        return path

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def metrics_bind(self) -> tuple[str, int] | None:
        """(host, port) for the metrics listener, or None when it is off."""
        if self.metrics is None:
            return None
        host, _, port = self.metrics.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def tag_pattern(self) -> re.Pattern[str]:
        """Finds the ticket tag in a subject; the number is group "id"."""
        before, _, after = self.subject_tag.partition("{id}")
        return re.compile(re.escape(before) + r"(?P<id>\d+)" + re.escape(after))

    def tag(self, ticket_id: int) -> str:
        return self.subject_tag.replace("{id}", str(ticket_id))

    def secret(self) -> str | None:
        """The reply-token HMAC secret, read now; None means the database keeps one."""
        return _read_secret(self.secret_env, self.secret_file, "reply-token secret")

    def blocks(self, address: str) -> bool:
        """Whether `sender_blocklist` refuses mail from this address (case-insensitive)."""
        address = address.strip().lower()
        domain = address.rpartition("@")[2]
        for pattern in self.sender_blocklist:
            if any(c in pattern for c in "*?["):
                if fnmatch.fnmatchcase(address, pattern):
                    return True
            elif pattern.startswith("@"):
                if domain == pattern[1:]:
                    return True
            elif address == pattern:
                return True
        return False


class Settings(BaseModel):
    """A whole, valid inboxd.toml. Build it with `load_settings`, which also checks references."""

    model_config = _MODEL

    path: Path  # the config file, absolute
    base_dir: Path  # its folder: relative paths in the file are relative to it
    inboxd: General
    smtp: dict[Name, SmtpEndpoint] = Field(default_factory=dict)
    mailboxes: tuple[Mailbox, ...] = Field(default=(), alias="mailbox")
    teams: tuple[Team, ...] = Field(default=(), alias="team")
    calendars: dict[Name, CalendarSpec] = Field(default_factory=dict, alias="calendar")
    sla: dict[Name, SlaPolicy] = Field(default_factory=dict)
    sla_defaults: SlaDefaults = SlaDefaults()
    ack: AckSettings = AckSettings()
    survey: SurveySettings = SurveySettings()

    def mailbox(self, name: str) -> Mailbox:
        """The mailbox called `name`; ConfigError naming the known ones otherwise."""
        for mailbox in self.mailboxes:
            if mailbox.name == name:
                return mailbox
        raise ConfigError(_unknown("mailbox", name, [m.name for m in self.mailboxes]))

    def team(self, name: str) -> Team:
        """The team called `name`; ConfigError naming the known ones otherwise."""
        for team in self.teams:
            if team.name == name:
                return team
        raise ConfigError(_unknown("team", name, [t.name for t in self.teams]))

    def calendar(self, name: str) -> CalendarSpec:
        """The calendar called `name`, "24x7" included; ConfigError otherwise."""
        if name == BUILTIN_CALENDAR:
            return ALWAYS_OPEN
        if name in self.calendars:
            return self.calendars[name]
        raise ConfigError(_unknown("calendar", name, [*self.calendars, BUILTIN_CALENDAR]))

    def sla_policy(self, name: str) -> SlaPolicy:
        """The SLA policy called `name`; ConfigError otherwise."""
        if name in self.sla:
            return self.sla[name]
        raise ConfigError(_unknown("SLA policy", name, list(self.sla)))

    def own_addresses(self) -> frozenset[str]:
        """Every mailbox address and alias, lowercased: mail from these is our own."""
        return frozenset(a for m in self.mailboxes for a in m.addresses)

    def mailbox_for(self, address: str) -> Mailbox | None:
        """The mailbox an address belongs to, ignoring a "+tag" (reply tokens)."""
        local, _, domain = address.strip().lower().rpartition("@")
        bare = f"{local.partition('+')[0]}@{domain}"
        for mailbox in self.mailboxes:
            if bare in mailbox.addresses or address.strip().lower() in mailbox.addresses:
                return mailbox
        return None

    def agents(self) -> frozenset[str]:
        """Every team member and lead, lowercased."""
        return frozenset(a for t in self.teams for a in t.agents)

    def teams_of(self, agent: str) -> tuple[Team, ...]:
        """The teams `agent` is a member or the lead of, in file order."""
        agent = agent.strip().lower()
        return tuple(t for t in self.teams if agent in t.agents)


def _unknown(kind: str, name: str, known: list[str]) -> str:
    plural = {"SLA policy": "SLA policies", "mailbox": "mailboxes"}.get(kind, f"{kind}s")
    listed = ", ".join(sorted(set(known))) if known else "none defined"
    return f"unknown {kind} {_quote(name)} ({plural}: {listed})"


# --------------------------------------------------------------------------- iCalendar

_ICS_HORIZON_YEAR = 2100  # yearly rules are expanded up to here
_ICS_VALUE_RE = re.compile(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})Z?)?")
_ICS_RRULE_KEYS = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYMONTH", "BYMONTHDAY", "WKST"}


def _ics_value(text: str) -> tuple[date, time | None]:
    match = _ICS_VALUE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError("a date is not YYYYMMDD or YYYYMMDDTHHMMSS")
    y, mo, d, h, mi, s = match.groups()
    clock = time(int(h), int(mi), int(s)) if h else None
    return date(int(y), int(mo), int(d)), clock


def _ics_event_days(event: Mapping[str, str]) -> set[date]:
    if "DTSTART" not in event:
        raise ValueError("an event has no DTSTART")
    start, _ = _ics_value(event["DTSTART"])
    last = start
    if "DTEND" in event:
        end, end_clock = _ics_value(event["DTEND"])
        # DTEND is exclusive: an all-day event on the 24th ends on the 25th (RFC 5545 3.6.1)
        last = end - timedelta(days=1) if end_clock in (None, time(0)) else end
    elif match := re.fullmatch(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T.*)?", event.get("DURATION", "")):
        days = int(match.group(1) or 0) * 7 + int(match.group(2) or 0)
        last = start + timedelta(days=max(days - 1, 0))
    span = min(max((last - start).days, 0), 366)
    starts = [start]
    if "RRULE" in event:
        starts = _ics_yearly(start, event["RRULE"])
    return {s + timedelta(days=i) for s in starts for i in range(span + 1)}


def _ics_yearly(start: date, rule: str) -> list[date]:
    """Occurrences of a yearly rule on a fixed date; anything richer is refused."""
    unsupported = "unsupported RRULE (only FREQ=YEARLY on a fixed date)"
    parts = dict(p.split("=", 1) for p in rule.upper().split(";") if "=" in p)
    if (
        parts.get("FREQ") != "YEARLY"
        or not set(parts) <= _ICS_RRULE_KEYS
        or parts.get("BYMONTH", str(start.month)) != str(start.month)
        or parts.get("BYMONTHDAY", str(start.day)) != str(start.day)
    ):
        raise ValueError(unsupported)
    try:
        interval = max(int(parts.get("INTERVAL", "1")), 1)
        count = int(parts["COUNT"]) if "COUNT" in parts else None
        until = _ics_value(parts["UNTIL"])[0] if "UNTIL" in parts else date.max
    except ValueError:
        raise ValueError(unsupported) from None
    out: list[date] = []
    for year in range(start.year, _ICS_HORIZON_YEAR + 1, interval):
        if count is not None and len(out) >= count:
            break
        try:
            occurrence = start.replace(year=year)
        except ValueError:  # 29 February in a common year: skipped (RFC 5545 3.3.10)
            continue
        if occurrence > until:
            break
        out.append(occurrence)
    return out


def _read_ics(path: Path) -> frozenset[date]:
    """Every day an iCalendar file's events cover.

    Raises OSError, UnicodeDecodeError, or ValueError with a message quoting nothing
    from the file.
    """
    text = path.read_text(encoding="utf-8-sig")
    lines = re.sub(r"\r?\n[ \t]", "", text).splitlines()  # unfold (RFC 5545 3.1)
    if not any(line.strip().upper() == "BEGIN:VCALENDAR" for line in lines):
        raise ValueError("not an iCalendar file (no BEGIN:VCALENDAR)")
    days: set[date] = set()
    event: dict[str, str] | None = None
    count = 0
    for line in lines:
        head, _, value = line.partition(":")
        prop = head.split(";", 1)[0].strip().upper()
        if prop == "BEGIN" and value.strip().upper() == "VEVENT":
            event, count = {}, count + 1
        elif prop == "END" and value.strip().upper() == "VEVENT" and event is not None:
            try:
                days |= _ics_event_days(event)
            except ValueError as exc:
                raise ValueError(f"event {count}: {exc}") from None
            event = None
        elif event is not None and prop in ("DTSTART", "DTEND", "DURATION", "RRULE"):
            event.setdefault(prop, value.strip())
    return frozenset(days)


# --------------------------------------------------------------------------- locating


def _quote(text: str) -> str:
    """A name in double quotes, escaped so it stays on one line."""
    return json.dumps(text, ensure_ascii=False)


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_TOML_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_TOML_DOTTED = rf"{_TOML_KEY}(?:\s*\.\s*{_TOML_KEY})*"
_HEADER_RE = re.compile(rf"\s*(\[\[?)\s*({_TOML_DOTTED})\s*\]\]?\s*(?:#.*)?")
_ASSIGN_RE = re.compile(rf"\s*({_TOML_DOTTED})\s*=\s*(.*)")
_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')


def _key_parts(dotted: str) -> tuple[str, ...]:
    parts: list[str] = []
    for raw in re.findall(_TOML_KEY, dotted):
        if raw.startswith('"'):
            try:
                raw = json.loads(raw)
            except ValueError:
                raw = raw[1:-1]
        elif raw.startswith("'"):
            raw = raw[1:-1]
        parts.append(raw)
    return tuple(parts)


class _Lines:
    """Best-effort map from TOML key paths (list items by index) to the line defining them.

    A line is reported only when found; a path not found falls back to its nearest
    defined parent (a missing key points at its table's header).
    """

    def __init__(self, text: str) -> None:
        self.where: dict[Loc, int] = {}
        arrays: dict[Loc, int] = {}  # array-of-tables path -> number of items so far
        table: Loc = ()
        closing: str | None = None  # inside a multi-line string ending with this
        depth = 0  # open brackets of a multi-line array

        def expand(parts: tuple[str, ...]) -> Loc:
            out: list[str | int] = []
            for part in parts:
                out.append(part)
                if tuple(out) in arrays:
                    out.append(arrays[tuple(out)] - 1)
            return tuple(out)

        for number, line in enumerate(text.splitlines(), 1):
            if closing is not None:
                if closing in line:
                    closing = None
                continue
            if depth > 0:
                depth = max(depth + _bracket_balance(line), 0)
                continue
            if header := _HEADER_RE.fullmatch(line):
                parts = _key_parts(header.group(2))
                if header.group(1) == "[[":
                    array = (*expand(parts[:-1]), parts[-1])
                    arrays[array] = arrays.get(array, 0) + 1
                    table = (*array, arrays[array] - 1)
                else:
                    table = expand(parts)
                self.where.setdefault(table, number)
                continue
            if assign := _ASSIGN_RE.fullmatch(line):
                self.where.setdefault((*table, *_key_parts(assign.group(1))), number)
                value = assign.group(2).lstrip()
                for quote in ('"""', "'''"):
                    if value.startswith(quote) and quote not in value[3:]:
                        closing = quote
                if closing is None:
                    depth = max(_bracket_balance(value), 0)

    def line(self, loc: Loc) -> int | None:
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.where:
                return self.where[loc[:end]]
        return None


def _bracket_balance(text: str) -> int:
    bare = _STRING_RE.sub("", text).partition("#")[0]
    return bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}")


def _keypath(loc: Loc, data: Any) -> str:
    """`('mailbox', 0, 'imap', 'port')` -> `mailbox "support".imap.port`."""
    out: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            child = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
            name = child.get("name") if isinstance(child, dict) else None
            label = f" {_quote(name)}" if isinstance(name, str) and name else f"[{item}]"
            if out:
                out[-1] += label
            else:
                out.append(label.strip())
            node = child
        else:
            out.append(item if _BARE_KEY_RE.fullmatch(item) else _quote(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(out)


# --------------------------------------------------------------------------- field pass


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """Strip Annotated (keeping its metadata) and Optional."""
    meta: list[Any] = []
    while True:
        if get_origin(tp) is Annotated:
            tp, *extra = get_args(tp)
            meta.extend(extra)
        elif get_origin(tp) in (Union, UnionType):
            rest = [a for a in get_args(tp) if a is not NoneType]
            if len(rest) != 1:
                return tp, meta
            tp = rest[0]
        else:
            return tp, meta


def _type_at(loc: Loc) -> tuple[Any, list[Any]]:
    """The annotation (and field metadata) a validation error location points at."""
    tp: Any = Settings
    meta: list[Any] = []
    items = list(loc)
    while items:
        item = items.pop(0)
        tp, more = _unwrap(tp)
        meta = meta + more
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {(f.alias or n): f for n, f in tp.model_fields.items()}
            if not isinstance(item, str) or item not in fields:
                return None, []
            tp, meta = fields[item].annotation, list(fields[item].metadata)
        elif get_origin(tp) is tuple:
            tp, meta = get_args(tp)[0], []
        elif get_origin(tp) is dict:
            key_error = bool(items) and items[0] == "[key]"
            tp, meta = get_args(tp)[0 if key_error else 1], []
            if key_error:
                items.pop(0)
        else:
            return None, []
    tp, more = _unwrap(tp)
    return tp, meta + more


def _expected(loc: Loc) -> str | None:
    """What a field takes, said for a person: from its Expect marker or its type."""
    tp, meta = _type_at(loc)
    for item in meta:
        if isinstance(item, Expect):
            return item.text
    if get_origin(tp) is Literal:
        return "one of: " + ", ".join(str(a) for a in get_args(tp))
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    simple |= {Path: "a path, relative to this file", date: "a date like 2026-12-24"}
    if tp in simple:
        return simple[tp]
    if get_origin(tp) is tuple:
        return "a list"
    if get_origin(tp) is dict or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return "a table"
    return None


def _known_keys(loc: Loc) -> list[str]:
    tp, _ = _type_at(loc) if loc else (Settings, [])
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    keys = [f.alias or n for n, f in tp.model_fields.items()]
    return [k for k in keys if tp is not Settings or k not in _INJECTED]


_INJECTED = ("path", "base_dir")  # Settings fields inboxd fills in; not TOML keys
_RESTATED = {
    "model_type": "should be a table",
    "model_attributes_type": "should be a table",
    "dict_type": "should be a table",
    "tuple_type": "should be a list",
    "list_type": "should be a list",
    "path_type": "should be a string holding a path",
}


def _field_problems(err: ValidationError) -> Iterator[tuple[Loc, str]]:
    """One (location, problem) per pydantic error, never quoting the input."""
    for error in err.errors(include_input=False, include_url=False, include_context=False):
        loc: Loc = tuple(error["loc"])
        kind, message = error["type"], error["msg"]
        if kind == "extra_forbidden":
            known = ", ".join(_known_keys(loc[:-1]))
            yield loc, f"unknown key (known: {known})" if known else "unknown key"
            continue
        key_error = bool(loc) and loc[-1] == "[key]"
        hint: str | None = None
        if kind == "inboxd":
            problem = message  # our own validators say what they expect
        elif kind == "literal_error" and key_error:
            problem = "unknown key"
            hint = (_expected(loc) or "").replace("one of: ", "known: ") or None
        elif kind == "literal_error":
            problem = message  # pydantic lists the choices
        elif kind in _RESTATED:
            problem = _RESTATED[kind]
        else:
            problem = "required key missing" if kind == "missing" else message
            hint = _expected(loc)
        yield loc, f"{problem} ({hint})" if hint else problem


# --------------------------------------------------------------------------- reference pass


def _items(data: Mapping[str, Any], key: str) -> list[tuple[Loc, dict[str, Any]]]:
    """The tables of a `[[key]]` array, with their locations; anything else skipped."""
    value = data.get(key)
    if not isinstance(value, list):
        return []
    return [((key, i), item) for i, item in enumerate(value) if isinstance(item, dict)]


def _tables(data: Mapping[str, Any], key: str) -> list[tuple[Loc, str, dict[str, Any]]]:
    """The sub-tables of a `[key.NAME]` table, with their locations and names."""
    value = data.get(key)
    if not isinstance(value, dict):
        return []
    return [((key, name), name, item) for name, item in value.items() if isinstance(item, dict)]


def _text(table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    return value if isinstance(value, str) else None


def _texts(table: Mapping[str, Any], key: str) -> list[tuple[int, str]]:
    value = table.get(key)
    if not isinstance(value, list):
        return []
    return [(i, v) for i, v in enumerate(value) if isinstance(v, str)]


def _cross_problems(data: Mapping[str, Any]) -> Iterator[tuple[Loc, str]]:
    """References between tables, duplicate names, and rules spanning several keys.

    Reads the raw TOML, so it reports even where field validation failed; it only looks
    at values of the right type, so a wrong-typed value is reported once, by the fields.
    """
    mailboxes, teams = _items(data, "mailbox"), _items(data, "team")
    team_names = [n for _, t in teams if (n := _text(t, "name"))]
    smtp_names = [name for _, name, _ in _tables(data, "smtp")]
    sla_names = [name for _, name, _ in _tables(data, "sla")]
    calendar_names = [name for _, name, _ in _tables(data, "calendar")]

    def ref(kind: str, known: list[str], loc: Loc, value: str | None) -> Iterator[tuple[Loc, str]]:
        if value is not None and value not in known:
            yield loc, _unknown(kind, value, known)

    def calendar_ref(loc: Loc, value: str | None) -> Iterator[tuple[Loc, str]]:
        yield from ref("calendar", [*calendar_names, BUILTIN_CALENDAR], loc, value)

    for kind, entries in (("mailbox", mailboxes), ("team", teams)):
        seen: set[str] = set()
        for loc, entry in entries:
            name = _text(entry, "name")
            if name is not None and name in seen:
                yield (*loc, "name"), f"duplicate {kind} name (each {kind} once)"
            seen.add(name or "")

    owners: dict[str, Loc] = {}  # address -> the mailbox that has it
    for loc, mailbox in mailboxes:
        yield from ref("team", team_names, (*loc, "default_team"), _text(mailbox, "default_team"))
        yield from ref("SMTP endpoint", smtp_names, (*loc, "smtp"), _text(mailbox, "smtp"))
        yield from ref("SLA policy", sla_names, (*loc, "sla"), _text(mailbox, "sla"))
        addresses = [((*loc, "address"), _text(mailbox, "address"))]
        addresses += [((*loc, "aliases", i), a) for i, a in _texts(mailbox, "aliases")]
        for where, address in addresses:
            if address is None:
                continue
            owner = owners.setdefault(address.strip().lower(), loc)
            if owner == loc and where[-1] != "address" and _is_dup(mailbox, where[-1]):
                yield where, "listed twice in this mailbox (each address once)"
            elif owner != loc:
                owned = _keypath(owner, data)
                yield where, f"address already used by {owned} (each address once)"
        imap = mailbox.get("imap")
        if isinstance(imap, dict):
            yield from _imap_problems((*loc, "imap"), imap)

    own = set(owners)
    for loc, team in teams:
        yield from ref("SLA policy", sla_names, (*loc, "sla"), _text(team, "sla"))
        yield from calendar_ref((*loc, "calendar"), _text(team, "calendar"))
        people = [((*loc, "members", i), a) for i, a in _texts(team, "members")]
        people += [((*loc, key), a) for key in ("lead", "address") if (a := _text(team, key))]
        for where, address in people:
            if address.strip().lower() in own:
                yield where, "is one of inboxd's own mailbox addresses (a person or list)"

    for i, address in _texts(_dict(data.get("inboxd")), "admins"):
        if address.strip().lower() in own:
            yield ("inboxd", "admins", i), "is one of inboxd's own mailbox addresses (a loop)"

    for loc, _, policy in _tables(data, "sla"):
        yield from calendar_ref((*loc, "calendar"), _text(policy, "calendar"))
        for key in ("on_warning", "on_breach"):
            for i, action in _texts(policy, key):
                if action.startswith("reassign:") and _NAME_RE.fullmatch(action[9:]):
                    yield from ref("team", team_names, (*loc, key, i), action[9:])

    if BUILTIN_CALENDAR in calendar_names:
        yield ("calendar", BUILTIN_CALENDAR), "reserved name (24x7 is the built-in always-open one)"

    defaults = _dict(data.get("sla_defaults"))
    yield from ref("SLA policy", sla_names, ("sla_defaults", "default"), _text(defaults, "default"))
    for priority, policy in _dict(defaults.get("by_priority")).items():
        if isinstance(policy, str):
            yield from ref(
                "SLA policy", sla_names, ("sla_defaults", "by_priority", priority), policy
            )

    for loc, _, endpoint in _tables(data, "smtp"):
        yield from _credential_problems(loc, endpoint, needs_password=False)
    general = _dict(data.get("inboxd"))
    if "secret_env" in general and "secret_file" in general:
        yield ("inboxd", "secret_file"), "set secret_env or secret_file, not both"


def _is_dup(mailbox: Mapping[str, Any], index: str | int) -> bool:
    """Whether alias `index` repeats the mailbox's address or an earlier alias."""
    aliases = _texts(mailbox, "aliases")
    earlier = {a.strip().lower() for i, a in aliases if isinstance(index, int) and i < index}
    this = next((a for i, a in aliases if i == index), "").strip().lower()
    return this == (_text(mailbox, "address") or "").strip().lower() or this in earlier


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _credential_problems(
    loc: Loc, table: Mapping[str, Any], *, needs_password: bool
) -> Iterator[tuple[Loc, str]]:
    has_env, has_file = "password_env" in table, "password_file" in table
    if has_env and has_file:
        yield (*loc, "password_file"), "set password_env or password_file, not both"
    if (has_env or has_file) and "username" not in table:
        yield (*loc, "username"), "required key missing (a password needs a username)"
    if needs_password and not (has_env or has_file):
        yield loc, 'auth = "password" needs password_env or password_file'
    host, security = table.get("host"), table.get("security", "tls" if needs_password else None)
    if (
        (has_env or has_file)
        and security == "none"
        and isinstance(host, str)
        and not _is_loopback(host)
    ):
        yield (*loc, "security"), 'would send the password in clear ("starttls" or "tls")'


def _imap_problems(loc: Loc, imap: Mapping[str, Any]) -> Iterator[tuple[Loc, str]]:
    auth = imap.get("auth", "password")
    if auth == "password":
        yield from _credential_problems(loc, imap, needs_password=True)
        if "token_command" in imap:
            yield (*loc, "token_command"), 'only used with auth = "oauth2"'
    elif auth == "oauth2":
        if "token_command" not in imap:
            yield (*loc, "token_command"), 'required key missing (with auth = "oauth2")'
        for key in ("password_env", "password_file"):
            if key in imap:
                yield (*loc, key), 'not used with auth = "oauth2" (token_command gives the token)'


# --------------------------------------------------------------------------- entry points


def _inspect(path: Path) -> tuple[list[Finding], Settings | None]:
    """Every finding for the file at `path`, and the Settings when there are none."""
    file = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        fix = f"create it, or pass --config or set {CONFIG_ENV}"
        return [Finding(file, None, "", f"cannot read: {exc.strerror} ({fix})")], None
    except UnicodeDecodeError as exc:
        return [Finding(file, None, "", f"not UTF-8 text at byte {exc.start} (UTF-8)")], None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(at.group(1)) if at else None
        if line is None and "end of document" in message:
            line = max(len(text.splitlines()), 1)
        return [Finding(file, line, "", message)], None  # tomllib's text says where

    lines = _Lines(text)
    absolute = Path(os.path.abspath(path))
    problems: list[tuple[Loc, str]] = []
    fields = dict(data)
    for key in _INJECTED:
        if key in fields:
            del fields[key]
            problems.append(((key,), f"unknown key (known: {', '.join(_known_keys(()))})"))
    fields |= {"path": absolute, "base_dir": absolute.parent}
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(fields, context={"base_dir": absolute.parent})
    except ValidationError as err:
        problems.extend(_field_problems(err))
    problems.extend(_cross_problems(data))

    findings: list[Finding] = []
    for loc, problem in problems:
        located = tuple(x for x in loc if x != "[key]")
        finding = Finding(file, lines.line(located), _keypath(located, data), problem)
        if finding not in findings:
            findings.append(finding)
    findings.sort(key=lambda f: (f.line is None, f.line or 0))
    return findings, (settings if not findings else None)


def check_config(path: Path) -> list[Finding]:
    """Every problem in the config file at once, sorted by line; [] when it is valid.

    Never raises for a user error (a missing file is a finding). Does not read secrets:
    an unset password variable is found when connecting, not here.
    """
    return _inspect(path)[0]


def load_settings(path: Path) -> Settings:
    """The validated settings of the config file at `path`.

    Raises ConfigError naming the first problem and how many there are.
    """
    findings, settings = _inspect(path)
    if settings is None:
        count = len(findings)
        noun = "problem" if count == 1 else "problems"
        raise ConfigError(f"{findings[0]} ({count} {noun}; run `inboxd check`)")
    return settings
