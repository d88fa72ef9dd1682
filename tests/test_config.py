"""inboxd.toml loading and `inboxd check` findings: pure, files under tmp_path only."""

from __future__ import annotations

import re
from datetime import date, time, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from inboxd import config
from inboxd.config import (
    ALWAYS_OPEN,
    Finding,
    Settings,
    check_config,
    load_settings,
    parse_duration,
    resolve_config_path,
)
from inboxd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "inboxd.toml"

# The shape the spec promises to accept, verbatim.
BASE = """\
[inboxd]
database = "sqlite:///inboxd.db"   # relative paths are relative to this file
rules = "rules"
timezone = "UTC"
[smtp.default]
host = "127.0.0.1"
port = 587
security = "starttls"
username = "support@example.com"
password_env = "SMTP_PASSWORD"
[[mailbox]]
name = "support"
address = "support@example.com"
default_team = "frontline"
smtp = "default"
on_processed = "keep"
imap = { host = "imap.example.com", port = 993, security = "tls", username = "support@example.com", password_env = "SUPPORT_PASSWORD", folder = "INBOX", idle = true, poll_interval = "60s" }
[[team]]
name = "frontline"
members = ["ann@example.com", "bob@example.com"]
lead = "lea@example.com"
assignment = "round-robin"
sla = "standard"
[calendar.office]
timezone = "Europe/Oslo"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-16:00" }
holidays = ["2026-12-24", "2026-12-25"]
[sla.standard]
calendar = "office"
first_response = "4h"
resolution = "3d"
warn_at = 0.8
[ack]
enabled = true
"""  # noqa: E501 - the spec's inline tables are one line by TOML's rules

SECRET = "hunter2-S3CRET"


def write(tmp_path: Path, text: str, name: str = "inboxd.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def edit(text: str, old: str, new: str) -> str:
    """Replace exactly one occurrence, so a test cannot silently edit nothing."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def problems(path: Path) -> list[str]:
    return [str(f) for f in check_config(path)]


# --------------------------------------------------------------------------- good files


def test_example_checks_clean_and_loads() -> None:
    assert check_config(EXAMPLE) == []
    settings = load_settings(EXAMPLE)
    assert settings.path == EXAMPLE
    assert settings.base_dir == ROOT
    assert settings.inboxd.database == f"sqlite:///{ROOT}/inboxd.db"
    assert settings.inboxd.rules == ROOT / "rules"
    assert [m.name for m in settings.mailboxes] == ["support", "billing"]
    assert settings.mailbox("support").default_team == "frontline"
    assert settings.mailbox("billing").default_team == "billing"
    imap = settings.mailbox("support").imap
    assert imap is not None
    assert imap.host == "127.0.0.1"
    assert settings.team("frontline").assignment == "round-robin"
    assert settings.team("billing").assignment == "least-loaded"
    office = settings.calendar("office")
    assert office.timezone == "Europe/Oslo"
    assert office.hours["fri"] == ((time(9), time(16)),)
    assert "sat" not in office.hours
    assert office.holidays == (date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 31))
    assert settings.sla["standard"].first_response == timedelta(hours=4)
    assert settings.sla["urgent"].on_breach == ("notify-lead", "raise-priority")
    assert settings.sla_defaults.policy_for("urgent") == "urgent"
    assert settings.sla_defaults.policy_for("low") == "standard"
    assert settings.smtp["default"].port == 587
    assert settings.ack.enabled


def test_spec_shape_is_accepted_with_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, BASE))
    general = settings.inboxd
    assert general.subject_tag == "[#{id}]"
    assert general.max_message_size == 25_000_000
    assert general.sweep_interval == timedelta(seconds=10)
    assert general.auto_resolve_pending == timedelta(days=7)
    assert general.stale_after == timedelta(minutes=30)
    assert (general.log_format, general.log_level, general.metrics) == ("text", "info", None)
    imap = settings.mailbox("support").imap
    assert imap is not None
    assert (imap.batch_size, imap.timeout, imap.auth) == (200, timedelta(seconds=120), "password")
    assert settings.mailbox("support").disposition == ("keep", None)
    assert settings.ack.rate_limit == 3
    assert settings.ack.rate_window == timedelta(hours=1)
    assert settings.survey.enabled is False
    assert settings.sla["standard"].calendar == "office"
    assert settings.sla["standard"].notify_in_business_hours is True


# --------------------------------------------------------------------------- findings


def test_three_mistakes_give_three_located_lines(tmp_path: Path) -> None:
    """The issue's acceptance test: unknown key, invalid value, undefined team."""
    text = edit(BASE, 'members = ["ann', 'membrs = ["ann')
    text = edit(text, "port = 993,", 'port = "993x",')
    text = edit(text, 'default_team = "frontline"', 'default_team = "frontlin"')
    path = write(tmp_path, text)
    assert problems(path) == [
        f'{path}:{line_of(text, "default_team")}: mailbox "support".default_team: '
        'unknown team "frontlin" (teams: frontline)',
        f'{path}:{line_of(text, "imap =")}: mailbox "support".imap.port: '
        "Input should be a valid integer (integer 1-65535)",
        f'{path}:{line_of(text, "membrs")}: team "frontline".membrs: unknown key '
        "(known: name, members, lead, assignment, sla, calendar, notify, address)",
    ]


FIELD_ERROR = ("port = 587", 'port = "587"', "smtp.default.port: Input should be a valid integer")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'default_team = "frontline"',
            'default_team = "nobody"',
            'mailbox "support".default_team: unknown team "nobody" (teams: frontline)',
        ),
        (
            'smtp = "default"',
            'smtp = "relay"',
            'mailbox "support".smtp: unknown SMTP endpoint "relay" (SMTP endpoints: default)',
        ),
        (
            'on_processed = "keep"',
            'on_processed = "keep"\nsla = "gold"',
            'mailbox "support".sla: unknown SLA policy "gold" (SLA policies: standard)',
        ),
        (
            'sla = "standard"',
            'sla = "gold"',
            'team "frontline".sla: unknown SLA policy "gold" (SLA policies: standard)',
        ),
        (
            'assignment = "round-robin"',
            'assignment = "round-robin"\ncalendar = "nights"',
            'team "frontline".calendar: unknown calendar "nights" (calendars: 24x7, office)',
        ),
        (
            'calendar = "office"',
            'calendar = "ofice"',
            'sla.standard.calendar: unknown calendar "ofice" (calendars: 24x7, office)',
        ),
        (
            "warn_at = 0.8",
            'warn_at = 0.8\non_breach = ["notify-lead", "reassign:tech"]',
            'sla.standard.on_breach[1]: unknown team "tech" (teams: frontline)',
        ),
        (
            "[ack]",
            '[sla_defaults]\ndefault = "gold"\n[ack]',
            'sla_defaults.default: unknown SLA policy "gold" (SLA policies: standard)',
        ),
        (
            "[ack]",
            '[sla_defaults]\nby_priority = { urgent = "fast" }\n[ack]',
            'sla_defaults.by_priority.urgent: unknown SLA policy "fast" (SLA policies: standard)',
        ),
        (
            "[calendar.office]",
            '[[team]]\nname = "frontline"\n[calendar.office]',
            'team "frontline".name: duplicate team name',
        ),
        (
            '"bob@example.com"]',
            '"bob@example.com", "support@example.com"]',
            'team "frontline".members[2]: is one of inboxd\'s own mailbox addresses',
        ),
    ],
)
def test_cross_reference_reported_beside_field_error(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = edit(edit(BASE, old, new), *FIELD_ERROR[:2])
    found = problems(write(tmp_path, text))
    assert any(FIELD_ERROR[2] in p for p in found), found
    assert any(expected in p for p in found), found
    assert len(found) == 2, found


def test_unknown_keys_are_refused_everywhere(tmp_path: Path) -> None:
    text = edit(BASE, "idle = true", "idel = true")
    text = edit(text, "[ack]\nenabled = true", "[ack]\nenabled = true\nrate = 5")
    text = text + "[survy]\nenabled = true\n"
    found = problems(write(tmp_path, text))
    assert len(found) == 3, found
    assert 'mailbox "support".imap.idel: unknown key (known: host, security, port, ' in found[0]
    assert "ack.rate: unknown key (known: enabled, template, subject, rate_limit" in found[1]
    assert "survy: unknown key (known: inboxd, smtp, mailbox, team, calendar, sla," in found[2]
    assert "path" not in found[2]
    assert "base_dir" not in found[2]


def test_inboxd_fills_path_and_base_dir_not_the_file(tmp_path: Path) -> None:
    (finding,) = problems(write(tmp_path, 'path = "/etc/passwd"\n' + BASE))
    assert finding.startswith(f"{tmp_path / 'inboxd.toml'}:1: path: unknown key (known: inboxd,")


def test_no_value_is_ever_printed(tmp_path: Path) -> None:
    """A wrong-typed field may hold a password: findings name the key, never the value."""
    text = edit(BASE, "port = 587", f'port = "{SECRET}"')
    text = edit(text, "idle = true", f'idle = "{SECRET}"')
    text = edit(text, 'password_env = "SMTP_PASSWORD"', f'password = "{SECRET}"')
    text = edit(text, '"sqlite:///inboxd.db"', f'"mysql://root:{SECRET}@db/inboxd"')
    text = edit(text, 'first_response = "4h"', f'first_response = "{SECRET}"')
    text = edit(text, 'timezone = "UTC"', f'timezone = "{SECRET}"')
    path = write(tmp_path, text)
    findings = check_config(path)
    assert len(findings) == 6, findings
    assert all(SECRET not in str(f) for f in findings)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert SECRET not in str(caught.value)


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    text = edit(BASE, '"sqlite:///inboxd.db"', f'"postgresql://inboxd:{SECRET}@db/inboxd"')
    text = edit(
        text,
        'password_env = "SUPPORT_PASSWORD",',
        f'auth = "oauth2", token_command = "get-token --secret {SECRET}",',
    )
    settings = load_settings(write(tmp_path, text))
    assert settings.inboxd.database == f"postgresql+psycopg://inboxd:{SECRET}@db/inboxd"
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    text = edit(BASE, 'lead = "lea@example.com"', "lead = lea@example.com")
    path = write(tmp_path, text)
    (finding,) = check_config(path)
    assert finding.line == line_of(text, "lead =")
    assert f"(at line {finding.line}, column " in finding.problem
    assert str(finding).startswith(f"{path}:{finding.line}: ")


def test_missing_file_is_a_finding_and_load_raises(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    (finding,) = check_config(path)
    assert finding == Finding(
        str(path),
        None,
        "",
        "cannot read: No such file or directory (create it, or pass --config or set INBOXD_CONFIG)",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.exit_code == 2
    assert str(caught.value) == f"{finding} (1 problem; run `inboxd check`)"


def test_load_names_the_first_problem_and_the_count(tmp_path: Path) -> None:
    text = edit(BASE, 'default_team = "frontline"', 'default_team = "x"')
    text = edit(text, "warn_at = 0.8", "warn_at = 2")
    path = write(tmp_path, text)
    first = check_config(path)[0]
    with pytest.raises(ConfigError, match=re.escape(f"{first} (2 problems; run `inboxd check`)")):
        load_settings(path)


def test_findings_are_sorted_by_line_and_missing_keys_point_at_their_table(
    tmp_path: Path,
) -> None:
    text = edit(BASE, 'resolution = "3d"\n', "")
    text = edit(text, 'address = "support@example.com"\n', "")
    found = check_config(write(tmp_path, text))
    assert [(f.key, f.problem) for f in found] == [
        ('mailbox "support".address', "required key missing (an address like name@example.com)"),
        ("sla.standard.resolution", "required key missing (" + found[1].problem.split("(", 1)[1]),
    ]
    assert [f.line for f in found] == [line_of(text, "[[mailbox]]"), line_of(text, "[sla.")]


def test_password_env_unset_is_not_a_check_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    path = write(tmp_path, BASE)
    assert check_config(path) == []
    endpoint = load_settings(path).smtp["default"]
    with pytest.raises(ConfigError, match="SMTP_PASSWORD is not set"):
        endpoint.password()
    monkeypatch.setenv("SMTP_PASSWORD", SECRET)  # read at call time, not at load
    assert endpoint.password() == SECRET


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("60s", timedelta(seconds=60)),
        ("90m", timedelta(minutes=90)),
        ("4h", timedelta(hours=4)),
        ("3d", timedelta(days=3)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 1d 2h ", timedelta(days=1, hours=2)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "4", "h", "4x", "1.5h", "30m1h", "-4h", "4H", "1h1h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r'invalid duration .* \(expected .*"1h30m"\)'):
        parse_duration(text)


def test_durations_in_the_file_need_a_unit_and_a_length(tmp_path: Path) -> None:
    text = edit(BASE, 'first_response = "4h"', "first_response = 14400")
    text = edit(text, 'resolution = "3d"', 'resolution = "0s"')
    found = problems(write(tmp_path, text))
    assert "sla.standard.first_response: should be a duration string (" in found[0]
    assert "sla.standard.resolution: must be longer than zero (" in found[1]


def test_relative_paths_follow_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    (etc / "mail-templates").mkdir(parents=True)
    (etc / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    (etc / "norway.ics").write_text(
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20260517\r\n"
        "DTEND;VALUE=DATE:20260518\r\nSUMMARY:Grunnlovsdag\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        encoding="utf-8",
    )
    text = edit(BASE, '"sqlite:///inboxd.db"', '"sqlite:///data/inboxd.db"')
    text = edit(text, 'rules = "rules"', 'rules = "../rules"\ntemplates = "mail-templates"')
    text = edit(text, 'password_env = "SMTP_PASSWORD"', 'password_file = "smtp.pw"')
    text = edit(text, "idle = true,", 'idle = true, ca_file = "ca.pem",')
    text = edit(text, "holidays = [", 'holidays_file = "norway.ics"\nholidays = [')
    path = write(etc, text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(Path("../etc/inboxd.toml"))
    assert settings.path == path
    assert settings.base_dir == etc
    assert settings.inboxd.database == f"sqlite:///{etc}/data/inboxd.db"
    assert settings.inboxd.rules == tmp_path / "rules"
    assert settings.inboxd.templates == etc / "mail-templates"
    assert settings.smtp["default"].password_file == etc / "smtp.pw"
    imap = settings.mailbox("support").imap
    assert imap is not None
    assert imap.ca_file == etc / "ca.pem"
    office = settings.calendar("office")
    assert office.holidays_file == etc / "norway.ics"
    assert office.holidays == (date(2026, 5, 17), date(2026, 12, 24), date(2026, 12, 25))
    (etc / "smtp.pw").write_text(f"{SECRET}\n", encoding="utf-8")
    assert settings.smtp["default"].password() == SECRET


def test_missing_files_named_by_the_config_are_findings(tmp_path: Path) -> None:
    text = edit(BASE, 'rules = "rules"', 'rules = "rules"\ntemplates = "tpl"')
    text = edit(text, "idle = true,", 'idle = true, ca_file = "ca.pem",')
    text = edit(text, "holidays = [", 'holidays_file = "h.ics"\nholidays = [')
    found = problems(write(tmp_path, text))
    assert [p.split(": ")[1] for p in found] == [
        "inboxd.templates",
        'mailbox "support".imap.ca_file',
        "calendar.office.holidays_file",
    ]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////var/lib/inboxd.db", "sqlite:////var/lib/inboxd.db"),
        ("sqlite://", "sqlite://"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://inboxd@db/inboxd", "postgresql+psycopg://inboxd@db/inboxd"),
        ("postgresql+psycopg://inboxd@db/inboxd", "postgresql+psycopg://inboxd@db/inboxd"),
    ],
)
def test_database_urls(tmp_path: Path, url: str, expected: str) -> None:
    text = edit(BASE, '"sqlite:///inboxd.db"', f'"{url}"')
    assert load_settings(write(tmp_path, text)).inboxd.database == expected


def test_ports_default_by_security(tmp_path: Path) -> None:
    text = edit(BASE, "port = 587\n", "")
    text = edit(text, 'security = "starttls"', 'security = "tls"')
    text = edit(text, "port = 993, ", "")
    text = edit(text, 'security = "tls", username', 'security = "starttls", username')
    settings = load_settings(write(tmp_path, text))
    assert settings.smtp["default"].port == 465
    imap = settings.mailbox("support").imap
    assert imap is not None
    assert imap.port == 143


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1000", 1000), ('"25MB"', 25_000_000), ('"10MiB"', 10 * 2**20), ('"512 kb"', 512_000)],
)
def test_max_message_size(tmp_path: Path, value: str, expected: int) -> None:
    text = edit(BASE, 'timezone = "UTC"', f'timezone = "UTC"\nmax_message_size = {value}')
    assert load_settings(write(tmp_path, text)).inboxd.max_message_size == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9108", ("127.0.0.1", 9108)),
        ('":9108"', ("127.0.0.1", 9108)),
        ('"9108"', ("127.0.0.1", 9108)),
        ('"0.0.0.0:9100"', ("0.0.0.0", 9100)),
        ('"[::1]:9108"', ("::1", 9108)),
    ],
)
def test_metrics_listener_defaults_to_loopback(
    tmp_path: Path, value: str, expected: tuple[str, int]
) -> None:
    text = edit(BASE, 'timezone = "UTC"', f'timezone = "UTC"\nmetrics = {value}')
    assert load_settings(write(tmp_path, text)).inboxd.metrics_bind == expected


def test_calendar_hours(tmp_path: Path) -> None:
    text = edit(
        BASE,
        'tue = "09:00-17:00"',
        'tue = "13:00-17:00, 09:00-12:00", sat = ["10:00-12:00", "12:00-14:00"], '
        'sun = "00:00-24:00"',
    )
    hours = load_settings(write(tmp_path, text)).calendar("office").hours
    assert hours["tue"] == ((time(9), time(12)), (time(13), time(17)))
    assert hours["sat"] == ((time(10), time(12)), (time(12), time(14)))
    assert hours["sun"] == ((time(0), time.max),)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('"09:00-12:00,11:00-17:00"', "ranges overlap"),
        ('"17:00-09:00"', "a range ends before it starts"),
        ('"9-17"', "invalid range"),
        ('"09:00-25:00"', "invalid time of day"),
        ("9", "should be a string or a list of strings"),
    ],
)
def test_calendar_hours_refused(tmp_path: Path, value: str, problem: str) -> None:
    text = edit(BASE, 'tue = "09:00-17:00"', f"tue = {value}")
    (finding,) = check_config(write(tmp_path, text))
    assert finding.key == "calendar.office.hours.tue"
    assert finding.problem.startswith(f'{problem} ("HH:MM-HH:MM" ranges')


def test_calendar_unknown_weekday(tmp_path: Path) -> None:
    text = edit(BASE, 'mon = "09:00', 'mond = "09:00')
    (finding,) = problems(write(tmp_path, text))
    assert finding.endswith(
        "calendar.office.hours.mond: unknown key (known: mon, tue, wed, thu, fri, sat, sun)"
    )


def test_holidays_file_yearly_rules(tmp_path: Path) -> None:
    write(
        tmp_path,
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20251225\n"
        "RRULE:FREQ=YEARLY;COUNT=3\nEND:VEVENT\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20260401\n"
        "DTEND;VALUE=DATE:20260404\nEND:VEVENT\nEND:VCALENDAR\n",
        "h.ics",
    )
    text = edit(BASE, 'holidays = ["2026-12-24", "2026-12-25"]', 'holidays_file = "h.ics"')
    holidays = load_settings(write(tmp_path, text)).calendar("office").holidays
    assert holidays == (
        date(2025, 12, 25),
        date(2026, 4, 1),  # DTEND is exclusive: three days
        date(2026, 4, 2),
        date(2026, 4, 3),
        date(2026, 12, 25),
        date(2027, 12, 25),  # COUNT=3
    )


def test_holidays_file_refuses_rules_it_cannot_expand(tmp_path: Path) -> None:
    write(
        tmp_path,
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20260525\n"
        "RRULE:FREQ=YEARLY;BYMONTH=5;BYDAY=-1MO\nEND:VEVENT\nEND:VCALENDAR\n",
        "h.ics",
    )
    text = edit(BASE, 'holidays = ["2026-12-24", "2026-12-25"]', 'holidays_file = "h.ics"')
    (finding,) = check_config(write(tmp_path, text))
    assert finding.key == "calendar.office.holidays_file"
    assert finding.problem.startswith("event 1: unsupported RRULE")


def test_builtin_24x7_calendar(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, edit(BASE, '"office"\nfirst', '"24x7"\nfirst')))
    assert settings.calendar("24x7") is ALWAYS_OPEN
    assert set(ALWAYS_OPEN.hours) == {"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
    text = BASE + '[calendar.24x7]\ntimezone = "UTC"\n'
    assert problems(write(tmp_path, text))[0].endswith(
        "calendar.24x7: reserved name (24x7 is the built-in always-open one)"
    )


# --------------------------------------------------------------------------- secrets


OAUTH = 'auth = "oauth2", token_command = "{cmd}",'


def imap_with(tmp_path: Path, replacement: str) -> Path:
    return write(tmp_path, edit(BASE, 'password_env = "SUPPORT_PASSWORD",', replacement))


def test_token_command_output_is_the_token(tmp_path: Path) -> None:
    path = imap_with(tmp_path, OAUTH.format(cmd="printf ' tok-123\\\\n'"))
    imap = load_settings(path).mailbox("support").imap
    assert imap is not None
    assert imap.password() is None
    assert imap.token() == "tok-123"


def test_token_command_failure_never_shows_the_output(tmp_path: Path) -> None:
    cmd = f"echo {SECRET}; echo refresh token expired >&2; exit 3"
    imap = load_settings(imap_with(tmp_path, OAUTH.format(cmd=cmd))).mailbox("support").imap
    assert imap is not None
    with pytest.raises(ConfigError) as caught:
        imap.token()
    assert str(caught.value) == "token_command exited with status 3: refresh token expired"


def test_token_command_runs_in_the_config_folder(tmp_path: Path) -> None:
    write(tmp_path, "tok-from-file\n", "token.txt")
    imap = (
        load_settings(imap_with(tmp_path, OAUTH.format(cmd="cat token.txt")))
        .mailbox("support")
        .imap
    )
    assert imap is not None
    assert imap.token() == "tok-from-file"


@pytest.mark.parametrize(
    ("replacement", "expected"),
    [
        ('auth = "oauth2",', 'imap.token_command: required key missing (with auth = "oauth2")'),
        (
            'password_env = "P", token_command = "x",',
            'imap.token_command: only used with auth = "oauth2"',
        ),
        (
            'auth = "oauth2", token_command = "x", password_env = "P",',
            'imap.password_env: not used with auth = "oauth2"',
        ),
        ("", 'imap: auth = "password" needs password_env or password_file'),
        (
            'password_env = "P", password_file = "p.txt",',
            "imap.password_file: set password_env or password_file, not both",
        ),
    ],
)
def test_imap_credentials(tmp_path: Path, replacement: str, expected: str) -> None:
    (finding,) = problems(imap_with(tmp_path, replacement))
    assert f'mailbox "support".{expected}' in finding


def test_plain_text_password_only_on_loopback(tmp_path: Path) -> None:
    text = edit(BASE, 'security = "starttls"', 'security = "none"')
    assert check_config(write(tmp_path, text)) == []  # 127.0.0.1
    text = edit(text, 'host = "127.0.0.1"', 'host = "smtp.example.com"')
    (finding,) = problems(write(tmp_path, text))
    assert "smtp.default.security: would send the password in clear" in finding


# --------------------------------------------------------------------------- helpers


def test_resolve_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INBOXD_CONFIG", raising=False)
    assert resolve_config_path(None) == Path("inboxd.toml")
    monkeypatch.setenv("INBOXD_CONFIG", "/etc/inboxd/from-env.toml")
    assert resolve_config_path(None) == Path("/etc/inboxd/from-env.toml")
    assert resolve_config_path(Path("cli.toml")) == Path("cli.toml")


def test_lookups(tmp_path: Path) -> None:
    settings = load_settings(EXAMPLE)
    assert settings.own_addresses() == {
        "support@example.com",
        "help@example.com",
        "billing@example.com",
    }
    assert "lea@example.com" in settings.agents()
    assert "ann@example.com" in settings.agents()
    assert [t.name for t in settings.teams_of("LEA@example.com")] == ["frontline", "billing"]
    assert [t.name for t in settings.teams_of("carl@example.com")] == ["billing"]
    assert settings.mailbox_for("Support+AbC123@example.com") is settings.mailbox("support")
    assert settings.mailbox_for("help@example.com") is settings.mailbox("support")
    assert settings.mailbox_for("nobody@example.com") is None
    known = r"\(mailboxes: billing, support\)"
    with pytest.raises(ConfigError, match=rf'unknown mailbox "sales" {known}'):
        settings.mailbox("sales")
    with pytest.raises(ConfigError, match='unknown team "tech"'):
        settings.team("tech")
    with pytest.raises(ConfigError, match='unknown calendar "night"'):
        settings.calendar("night")


def test_settings_are_frozen() -> None:
    settings = load_settings(EXAMPLE)
    with pytest.raises(ValidationError):
        settings.inboxd.timezone = "Europe/Oslo"
    with pytest.raises(ValidationError):
        settings.teams[0].lead = None
    assert isinstance(settings, Settings)


def test_addresses_are_lowercased_and_checked(tmp_path: Path) -> None:
    text = edit(BASE, '"ann@example.com"', '"Ann@Example.COM"')
    assert load_settings(write(tmp_path, text)).team("frontline").members[0] == "ann@example.com"
    text = edit(BASE, '"ann@example.com"', '"ann"')
    (finding,) = problems(write(tmp_path, text))
    assert 'team "frontline".members[0]: invalid address (an address like' in finding


def test_disposition_and_subject_tag(tmp_path: Path) -> None:
    text = edit(BASE, 'on_processed = "keep"', 'on_processed = "move:Done/2026"')
    text = edit(text, 'timezone = "UTC"', 'timezone = "UTC"\nsubject_tag = "(T{id})"')
    settings = load_settings(write(tmp_path, text))
    assert settings.mailbox("support").disposition == ("move", "Done/2026")
    match = settings.inboxd.tag_pattern.search("Re: (T42) refund")
    assert match is not None
    assert match["id"] == "42"
    assert settings.inboxd.tag(7) == "(T7)"


def test_sender_blocklist(tmp_path: Path) -> None:
    text = edit(
        BASE,
        'timezone = "UTC"',
        'timezone = "UTC"\nsender_blocklist = ["spam@x.org", "@junk.example", "*@*.bulk.example"]',
    )
    general = load_settings(write(tmp_path, text)).inboxd
    assert general.blocks("SPAM@x.org")
    assert general.blocks("a@junk.example")
    assert not general.blocks("a@sub.junk.example")
    assert general.blocks("a@mail.bulk.example")
    assert not general.blocks("customer@example.com")


def test_lines_follow_arrays_of_tables_and_sub_tables(tmp_path: Path) -> None:
    text = (
        BASE
        + '[[mailbox]]\nname = "billing"\naddress = "billing@example.com"\n'
        + 'default_team = "frontline"\nsmtp = "default"\n[mailbox.imap]\nhost = "127.0.0.1"\n'
        + 'username = "billing"\npassword_env = "P"\nport = 0\n'
    )
    (finding,) = check_config(write(tmp_path, text))
    assert finding.key == 'mailbox "billing".imap.port'
    assert finding.line == len(text.splitlines())


def test_an_invalid_security_is_reported_once(tmp_path: Path) -> None:
    text = edit(BASE, "port = 587\n", "")
    text = edit(text, 'security = "starttls"', 'security = "ssl"')
    (finding,) = problems(write(tmp_path, text))
    assert "smtp.default.security: Input should be 'none', 'starttls' or 'tls'" in finding


@pytest.mark.parametrize(
    "text",
    [
        "mailbox = 5",
        "team = [1, []]",
        "smtp = []",
        'inboxd = []\ncalendar = { office = 3, "24x7" = [] }',
        'sla_defaults = { by_priority = [], default = 1 }\nsla = { x = "y" }',
        '[inboxd]\ndatabase = "sqlite://"\n[[mailbox]]\nname = 1\nimap = []\naliases = "a"',
    ],
)
def test_odd_shapes_are_findings_not_crashes(tmp_path: Path, text: str) -> None:
    found = check_config(write(tmp_path, text))
    assert found
    assert all(isinstance(f, Finding) for f in found)


def test_example_documents_every_key() -> None:
    """A key added to a model without a word in the example file fails here."""
    text = EXAMPLE.read_text(encoding="utf-8")
    models: list[type[BaseModel]] = [
        config.General,
        config.SmtpEndpoint,
        config.ImapSettings,
        config.Mailbox,
        config.Team,
        config.CalendarSpec,
        config.SlaPolicy,
        config.SlaDefaults,
        config.AckSettings,
        config.SurveySettings,
    ]
    missing = [
        f"{model.__name__}.{field.alias or name}"
        for model in models
        for name, field in model.model_fields.items()
        if not re.search(rf"\b{re.escape(field.alias or name)}\b", text)
    ]
    assert missing == []
