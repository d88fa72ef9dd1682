"""Real servers for integration tests: Dovecot IMAP, PostgreSQL 15 and an SMTP sink.

Each listens on 127.0.0.1 on a free port and keeps its state in a private directory made
with `tempfile.mkdtemp` (never under pytest's 0700 tmp root: Dovecot's and PostgreSQL's
unprivileged processes could not enter it). The fixtures in `conftest.py` start each
server once per session; this module knows nothing of pytest, so a benchmark or a shell
can start the same servers.

Two exceptions tell the fixtures what went wrong: `ServerUnavailable` (the binary or
library is not installed: skip, or fail under INBOXD_TEST_REQUIRE_SERVERS=1) and
`ServerFailed` (it is installed but did not start: always fail, with the log tail).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import email
import email.policy
import importlib.util
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from imapclient import IMAPClient
    from sqlalchemy import Engine

HOST = "127.0.0.1"
TEST_ACCOUNT = "inboxd-test"  # system account for server processes when we run as root
OWNER_FILE = ".inboxd-owner-pid"  # pid of the test session that owns a private dir
START_TIMEOUT_S = 30.0

__all__ = [
    "HOST",
    "Database",
    "Dovecot",
    "Postgres",
    "ReceivedMail",
    "ServerFailed",
    "ServerUnavailable",
    "SmtpSink",
    "free_port",
    "unprivileged_account",
]


class ServerUnavailable(Exception):
    """The server's binary or library is not installed on this machine."""


class ServerFailed(Exception):
    """The server is installed but did not start or stop; the message carries its log."""


# ---------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A port nobody listens on now: bind 127.0.0.1:0, read it, close.

    A race with another process remains possible but is rare; servers that lose it fail
    to start with "address in use" in their log.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(port: int, timeout_s: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout_s):
        return True
    return False


def _tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, or a note that it is missing (for failure messages)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or f"(log {path} is empty)"


def _find_binary(name: str, *extra_dirs: str) -> str | None:
    """`name` on PATH or in the distro's sbin/libexec dirs, which a non-root PATH lacks."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", *extra_dirs):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@dataclass(frozen=True, slots=True)
class Account:
    """A Unix account server processes run as."""

    name: str
    uid: int
    gid: int
    group: str


def _account(name: str) -> Account:
    import grp

    entry = pwd.getpwnam(name)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, grp.getgrgid(entry.pw_gid).gr_name)


def unprivileged_account() -> Account:
    """The account for initdb, pg_ctl and Dovecot's mail processes.

    Both refuse root, so as root we use (and if needed create) the system account
    `inboxd-test`; as anyone else, ourselves.
    """
    if os.geteuid() != 0:
        return _account(pwd.getpwuid(os.geteuid()).pw_name)
    try:
        return _account(TEST_ACCOUNT)
    except KeyError:
        pass
    useradd = _find_binary("useradd")
    if useradd is None:
        raise ServerFailed(f"running as root without a {TEST_ACCOUNT!r} account, and no useradd")
    done = subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir=/nonexistent",
            "--shell=/usr/sbin/nologin",
            TEST_ACCOUNT,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # a parallel session may have created it first: then useradd failed, which is fine
        return _account(TEST_ACCOUNT)
    except KeyError:
        raise ServerFailed(f"useradd {TEST_ACCOUNT} failed: {done.stderr.strip()}") from None


def _temp_root() -> Path:
    """Where private dirs go: the temp dir if others may traverse it, else /tmp."""
    root = Path(tempfile.gettempdir())
    return root if root.stat().st_mode & 0o001 else Path("/tmp")


def _private_dir(kind: str) -> Path:
    """A fresh 0755 dir `inboxd-<kind>-*`, tagged with our pid so a later session can sweep it."""
    _sweep_stale_dirs()
    path = Path(tempfile.mkdtemp(prefix=f"inboxd-{kind}-", dir=_temp_root()))
    path.chmod(0o755)
    (path / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return path


def _alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (dead, not yet reaped by a lax pid 1) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    return stat is None or stat[0] != "Z"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


_swept = False


def _sweep_stale_dirs() -> None:
    """Stop servers and remove dirs left behind by a session that died without finalizers.

    `kill -9` of pytest skips every cleanup; without this a postmaster and its port would
    outlive it forever. A server is signalled only if its command line names the dir.
    """
    global _swept
    if _swept:
        return
    _swept = True
    for path in _temp_root().glob("inboxd-*-*"):
        owner = _read_pid(path / OWNER_FILE)
        if owner is None or _alive(owner):
            continue
        # SIGQUIT is PostgreSQL's immediate shutdown; SIGTERM stops the Dovecot master.
        for pidfile, sig in (
            (path / "data" / "postmaster.pid", signal.SIGQUIT),
            (path / "run" / "master.pid", signal.SIGTERM),
        ):
            pid = _read_pid(pidfile)
            if pid is None:
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in cmdline:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
        shutil.rmtree(path, ignore_errors=True)


class _Stoppable(Protocol):
    def close(self) -> None: ...


_open_servers: list[_Stoppable] = []


def _register(server: _Stoppable) -> None:
    _open_servers.append(server)


def _unregister(server: _Stoppable) -> None:
    with contextlib.suppress(ValueError):
        _open_servers.remove(server)


@atexit.register
def _close_all() -> None:
    """Fallback when the session fixtures' finalizers did not run (an internal error)."""
    for server in reversed(list(_open_servers)):
        with contextlib.suppress(Exception):
            server.close()


def _group_alive(pgid: int) -> bool:
    """Whether a process group has a live (non-zombie) member.

    Zombies count as dead: orphans are reaped by pid 1, which in a container may never
    do it, and `killpg(pgid, 0)` would report them alive forever.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        fields = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _kill_group(
    proc: subprocess.Popen[bytes], timeout_s: float = 10.0, grace_s: float = 0.5
) -> None:
    """SIGTERM a process started with start_new_session, then SIGKILL what is left of its group.

    The leader gets `timeout_s` to exit; its group then `grace_s`. Dovecot's imap
    processes outlive their master for ~10 s after saying BYE to a client in IDLE, and an
    imap-login left by a killed master would keep the listening socket and the port.
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    deadline = time.monotonic() + grace_s
    while _group_alive(proc.pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout_s)


# ---------------------------------------------------------------------------- Dovecot

_DOVECOT_CONF = """\
# Generated by inboxd tests/servers.py for one test session. Nothing here is read from
# /etc/dovecot, and no path or port is shared with a system Dovecot.
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = inboxd-test-{port}
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
log_timestamp = "%Y-%m-%d %H:%M:%S "

listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
# Tests log in with wrong passwords on purpose; the default 2 s penalty only slows them.
auth_failure_delay = 0
# The default %Lu lowercases the login name and would no longer match the passwd-file.
auth_username_format = %u

default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = {mail_uid}
last_valid_uid = 0
first_valid_gid = {mail_gid}

mail_location = maildir:~/Maildir
mail_fsync = never
# Without inotify IDLE would notice another connection's APPEND only every 30 s.
mailbox_idle_check_interval = 1 secs

protocol imap {{
  mail_max_userip_connections = 1000
}}

# passwd-file is re-read when its mtime or size changes: users can be added mid-session.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {dir}/users
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={dir}/mail/%u
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
{login_extra}}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
# Mode 0 disables the auth penalty (up to 15 s per login after failures from one IP),
# which would make every wrong-password test slow down the ones after it.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{anvil_extra}}}
# imap processes run as the mail user, which is not in the internal group.
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{nonroot_extra}"""

# Running the master as non-root: no chroot, and every service as ourselves.
_DOVECOT_NONROOT = """\
service auth-worker {
  user = $default_internal_user
}
"""

_POOL_SIZE = 200
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_APPENDUID = re.compile(rb"APPENDUID \d+ (\d+)")


class Dovecot:
    """A private Dovecot 2.3 IMAP server with passwd-file users and Maildir storage.

    `stop()` and `start()` keep the port and the mail, so a test can take the server
    away under a client in IDLE and bring it back.
    """

    def __init__(self, binary: str, directory: Path, port: int) -> None:
        self.binary = binary
        self.dir = directory
        self.host = HOST
        self.port = port
        self.users: dict[str, str] = {}
        self.log_path = directory / "dovecot.log"
        self.conf_path = directory / "dovecot.conf"
        self._stdout_path = directory / "dovecot.stdout"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        self._probe_user = f"probe-{secrets.token_hex(4)}"
        self._pool: list[tuple[str, str]] = []  # users Dovecot already knows, for new_user()
        self._users_mtime = 0

    @classmethod
    def create(cls) -> Dovecot:
        """Configure and start a server; raises ServerUnavailable or ServerFailed."""
        binary = _find_binary("dovecot")
        if binary is None:
            raise ServerUnavailable("dovecot not found (Debian package dovecot-imapd)")
        if importlib.util.find_spec("imapclient") is None:
            raise ServerUnavailable("imapclient is not installed")
        server = cls(binary, _private_dir("dovecot"), free_port())
        _register(server)
        try:
            server._configure()
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    def _configure(self) -> None:
        root = os.geteuid() == 0
        mail = unprivileged_account()
        if root:
            login_user = _existing_user("dovenull", "nobody")
            internal = _account(_existing_user("dovecot", mail.name))
        else:
            login_user, internal = mail.name, mail
        mail_root = self.dir / "mail"
        mail_root.mkdir(mode=0o755)
        for sub in ("run", "state"):
            (self.dir / sub).mkdir(mode=0o755)
        if root:
            os.chown(mail_root, mail.uid, mail.gid)
        self.conf_path.write_text(
            _DOVECOT_CONF.format(
                dir=self.dir,
                port=self.port,
                login_user=login_user,
                internal_user=internal.name,
                internal_group=internal.group,
                mail_uid=mail.uid,
                mail_gid=mail.gid,
                login_extra="" if root else "  chroot =\n",
                anvil_extra="" if root else "  chroot =\n",
                nonroot_extra="" if root else _DOVECOT_NONROOT,
            )
        )
        # Written before the first start, so the first read sees them all at once.
        self._pool = self._make_users(_POOL_SIZE)
        self._write_users({**dict(self._pool), self._probe_user: secrets.token_hex(8)})

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the master on our port and wait until LOGIN works; a no-op if running."""
        if self.running:
            return
        with self._stdout_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # Ctrl-C reaches pytest only; teardown stops us
            )
        try:
            self._wait_login(self._probe_user, START_TIMEOUT_S)
        except ServerFailed:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the master and every imap process; clients see their connection close."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _kill_group(proc)

    def close(self) -> None:
        """Stop the server and remove its directory (mail, logs, config)."""
        self.stop()
        _unregister(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _failure(self, what: str) -> str:
        return (
            f"{what}\n--- {self._stdout_path} ---\n{_tail(self._stdout_path)}"
            f"\n--- {self.log_path} ---\n{_tail(self.log_path)}"
        )

    def log_tail(self, lines: int = 40) -> str:
        """The end of Dovecot's log, for assertion messages."""
        return _tail(self.log_path, lines)

    # -- users and mail

    def add_user(self, name: str, password: str) -> None:
        """Add (or re-password) a user; returns once LOGIN accepts the new password.

        Dovecot stats the passwd-file at most once a second, so this can take up to ~1 s;
        `new_user()` hands out users written before the server started and does not wait.
        """
        self._write_users({name: password})

    def new_user(self) -> tuple[str, str]:
        """A fresh user with an empty mailbox: (name, password). Usually instant."""
        with self._lock:
            if not self._pool:
                self._pool = self._make_users(_POOL_SIZE)
                refill = dict(self._pool)
            else:
                refill = {}
        if refill:
            self._write_users(refill)
        with self._lock:
            return self._pool.pop()

    def _make_users(self, count: int) -> list[tuple[str, str]]:
        return [
            (f"user{next(self._names)}-{secrets.token_hex(3)}", secrets.token_hex(8))
            for _ in range(count)
        ]

    def _write_users(self, users: dict[str, str]) -> None:
        for name, password in users.items():
            if not _USER_NAME.fullmatch(name):
                raise ValueError(f"user name {name!r} must match {_USER_NAME.pattern}")
            if any(c in password for c in ":\r\n"):
                raise ValueError("password must not contain ':' or a line break (passwd-file)")
        with self._lock:
            self.users.update(users)
            text = "".join(f"{user}:{{PLAIN}}{pw}\n" for user, pw in self.users.items())
            tmp = self.dir / "users.tmp"
            tmp.write_text(text)
            tmp.chmod(0o644)  # read by the auth process, which runs unprivileged
            # Dovecot re-reads when the whole-second mtime or the size changed; a new
            # password of the same length written in the same second would go unseen.
            self._users_mtime = max(int(time.time()), self._users_mtime + 1)
            os.utime(tmp, (self._users_mtime, self._users_mtime))
            os.replace(tmp, self.dir / "users")  # never a half-written file
        if self.running:
            self._wait_login(next(reversed(users)), START_TIMEOUT_S)

    def _wait_login(self, user: str, timeout_s: float) -> None:
        """Log in as `user` until it works: the server is up and has read the passwd-file."""
        deadline = time.monotonic() + timeout_s
        last_error = "port never opened"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise ServerFailed(self._failure(f"dovecot is not running (exit {code})"))
            if _port_open(self.port):
                try:
                    self.client(user, timeout=5).logout()
                    return
                except Exception as exc:  # any failure means "not yet"; reported at the deadline
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        raise ServerFailed(
            self._failure(
                f"LOGIN as {user} did not succeed within {timeout_s:.0f} s ({last_error})"
            )
        )

    def client(self, user: str, *, timeout: float = 10.0) -> IMAPClient:
        """A logged-in plain-text IMAPClient; the caller logs out.

        `normalise_times` is off so INTERNALDATE comes back timezone-aware, as in inboxd.
        """
        from imapclient import IMAPClient

        imap = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        imap.normalise_times = False
        try:
            imap.login(user, self.users[user])
        except BaseException:
            with contextlib.suppress(Exception):
                imap.shutdown()
            raise
        return imap

    def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Sequence[str | bytes] = (),
        when: datetime | None = None,
    ) -> int:
        """APPEND `raw` as a second client would (INTERNALDATE `when`, default now); its UID."""
        imap = self.client(user)
        try:
            response = imap.append(folder, raw, flags=tuple(flags), msg_time=when)
        finally:
            imap.logout()
        found = _APPENDUID.search(response)  # UIDPLUS, RFC 4315; Dovecot always sends it
        if found is None:
            raise ServerFailed(f"APPEND answer without APPENDUID: {response!r}")
        return int(found.group(1))

    def create_folder(self, user: str, folder: str) -> None:
        """CREATE a folder for `user`."""
        imap = self.client(user)
        try:
            imap.create_folder(folder)
        finally:
            imap.logout()

    def delete_folder(self, user: str, folder: str) -> None:
        """DELETE a folder of `user`, with its mail."""
        imap = self.client(user)
        try:
            imap.delete_folder(folder)
        finally:
            imap.logout()


def _existing_user(*names: str) -> str:
    """The first of `names` that exists as a Unix account."""
    for name in names:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ServerFailed(f"none of the accounts {names} exists")


# ---------------------------------------------------------------------------- PostgreSQL

_PG_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=200 -c log_min_messages=warning"
)


class Postgres:
    """A private PostgreSQL cluster, trust auth for `postgres` on 127.0.0.1 only."""

    def __init__(self, initdb: str, pg_ctl: str, directory: Path, port: int) -> None:
        self.initdb = initdb
        self.pg_ctl = pg_ctl
        self.dir = directory
        self.host = HOST
        self.port = port
        self.data_dir = directory / "data"
        self.socket_dir = directory / "sock"
        self.log_path = directory / "postgres.log"
        self._account = unprivileged_account()
        self._started = False

    @classmethod
    def create(cls) -> Postgres:
        """initdb and start a cluster; raises ServerUnavailable or ServerFailed."""
        bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        extra = [str(d) for d in bindirs]
        initdb, pg_ctl = _find_binary("initdb", *extra), _find_binary("pg_ctl", *extra)
        if initdb is None or pg_ctl is None:
            raise ServerUnavailable("initdb/pg_ctl not found (PostgreSQL 15 server binaries)")
        if importlib.util.find_spec("psycopg") is None:
            raise ServerUnavailable("psycopg is not installed")
        server = cls(initdb, pg_ctl, _private_dir("postgres"), free_port())
        _register(server)
        try:
            server._initdb()
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    def _run(self, *args: str, what: str) -> None:
        """Run a PostgreSQL tool as the unprivileged account; ServerFailed with output."""
        as_root = os.geteuid() == 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        done = subprocess.run(
            args,
            cwd=self.dir,  # the account may not be able to enter our cwd
            env=env,
            user=self._account.uid if as_root else None,
            group=self._account.gid if as_root else None,
            extra_groups=[] if as_root else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            start_new_session=True,  # the postmaster must not get the terminal's Ctrl-C
            timeout=120,
        )
        if done.returncode != 0:
            raise ServerFailed(
                f"{what} failed ({done.returncode}): {done.stdout}{done.stderr}"
                f"\n--- {self.log_path} ---\n{_tail(self.log_path)}"
            )

    def _initdb(self) -> None:
        if os.geteuid() == 0:
            os.chown(self.dir, self._account.uid, self._account.gid)
        self.socket_dir.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(self.socket_dir, self._account.uid, self._account.gid)
        self._run(
            self.initdb,
            f"--pgdata={self.data_dir}",
            *("--auth=trust", "--username=postgres", "--encoding=UTF8", "--locale=C"),
            *("--no-sync", "--no-instructions"),  # a throwaway cluster: no fsync
            what="initdb",
        )

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections; a no-op if started."""
        if self._started:
            return
        self._run(
            self.pg_ctl,
            f"--pgdata={self.data_dir}",
            f"--log={self.log_path}",
            f"--options=-h {HOST} -p {self.port} -k {self.socket_dir} {_PG_OPTIONS}",
            *("--wait", f"--timeout={START_TIMEOUT_S:.0f}", "start"),
            what="pg_ctl start",
        )
        self._started = True

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the cluster; "fast" disconnects clients, "immediate" is a crash."""
        if not self._started:
            return
        self._started = False
        self._run(
            self.pg_ctl,
            f"--pgdata={self.data_dir}",
            f"--mode={mode}",
            "--wait",
            "stop",
            what="pg_ctl stop",
        )

    def close(self) -> None:
        """Stop the cluster and remove its directory."""
        try:
            self.stop("immediate")  # the data is thrown away: skip the shutdown checkpoint
        finally:
            _unregister(self)
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL of database `dbname` (psycopg 3 driver)."""
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{dbname}"

    def conninfo(self, dbname: str = "postgres") -> str:
        """libpq connection string, for psycopg.connect()."""
        return f"host={self.host} port={self.port} user=postgres dbname={dbname}"

    def _admin(self, statement: Any) -> None:
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str, template: str | None = None) -> None:
        """CREATE DATABASE `name`, copied from `template` when given."""
        from psycopg import sql

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        self._admin(statement)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE `name` if it exists, closing any connection a test left open."""
        from psycopg import sql

        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def seal_template(self, name: str) -> None:
        """Make `name` a template nobody connects to, so CREATE ... TEMPLATE never waits.

        CREATE DATABASE refuses a template with open sessions; a pool left by the
        migrations would otherwise make every test's copy fail.
        """
        from psycopg import sql

        self._admin(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)
            )
        )
        self._admin(
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = {} AND pid <> pg_backend_pid()"
            ).format(sql.Literal(name))
        )


# ---------------------------------------------------------------------------- SMTP sink


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One message as the sink's SMTP session saw it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes  # the DATA bytes as received: dot-unstuffed, CRLF line ends
    message: EmailMessage  # parsed from `content` with LF line ends, policy.default


def _parse(content: bytes) -> EmailMessage:
    """The message as the sender composed it: SMTP's CRLF line ends become LF again."""
    parsed = email.message_from_bytes(content.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


RcptReply = str | Callable[[str], str | None] | None


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that keeps every message it accepts.

    Failures are real SMTP replies: set `reply` to a 4xx/5xx line to refuse DATA with it,
    or `rcpt_reply` (a reply line, or a function of the address returning a line or None)
    to refuse recipients. `stop()`/`start()` keep the port.
    """

    def __init__(self, port: int | None = None) -> None:
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.reply: str | None = None
        self.rcpt_reply: RcptReply = None
        self.messages: list[ReceivedMail] = []
        self.refused: list[ReceivedMail] = []  # DATA answered with a non-2xx `reply`
        self._cond = threading.Condition()
        self._controller: Any = None

    @classmethod
    def create(cls) -> SmtpSink:
        """Start a sink on a free port; raises ServerUnavailable without aiosmtpd."""
        if importlib.util.find_spec("aiosmtpd") is None:
            raise ServerUnavailable("aiosmtpd is not installed (pip install -e '.[test]')")
        sink = cls()
        _register(sink)
        try:
            sink.start()
        except Exception as exc:
            sink.close()
            raise ServerFailed(f"aiosmtpd did not start on {HOST}:{sink.port}: {exc!r}") from exc
        return sink

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Listen again on the same port; a no-op if running."""
        if self._controller is not None:
            return
        from aiosmtpd.controller import Controller

        # A stopped Controller has closed its loop, so each start builds a new one.
        # server_hostname spares a getfqdn() DNS lookup per session.
        controller = Controller(
            self,
            hostname=HOST,
            port=self.port,
            server_hostname="sink.inboxd.test",
            ready_timeout=10,
            enable_SMTPUTF8=True,  # as real MTAs do; aiosmtplib uses it for non-ASCII addresses
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening and drop open sessions; senders see connection refused."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def close(self) -> None:
        self.stop()
        _unregister(self)

    def clear(self) -> None:
        """Forget received and refused messages."""
        with self._cond:
            self.messages.clear()
            self.refused.clear()

    def reset(self) -> None:
        """Forget messages and accept everything again."""
        self.clear()
        self.reply = None
        self.rcpt_reply = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until `count` messages were accepted; return them (AssertionError if not)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(
                    f"SMTP sink: expected {count} message(s) within {timeout} s, "
                    f"got {len(self.messages)} (refused {len(self.refused)})"
                )
            return list(self.messages)

    async def wait_for_async(self, count: int, timeout_s: float = 10.0) -> list[ReceivedMail]:
        """`wait_for` without blocking the caller's event loop (where the sender may run)."""
        return await asyncio.to_thread(self.wait_for, count, timeout_s)

    # aiosmtpd handler hooks; they run in the controller's thread.

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        rule = self.rcpt_reply
        refusal = rule(address) if callable(rule) else rule
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = bytes(envelope.content)
        mail = ReceivedMail(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=content,
            message=_parse(content),
        )
        reply = self.reply or "250 OK"
        with self._cond:
            (self.messages if reply.startswith("2") else self.refused).append(mail)
            self._cond.notify_all()
        return reply


# ---------------------------------------------------------------------------- databases


@dataclass(frozen=True, slots=True)
class Database:
    """A freshly migrated database for one test: its URL (for subprocesses) and an engine."""

    backend: Literal["sqlite", "postgresql"]
    url: str
    engine: Engine
