"""Signed reply tokens: `support+t42-3f9c0a1b2c4d@example.com` names ticket 42.

The token is the ticket id and a truncated HMAC-SHA256 over it, so a stranger can
neither guess nor forge one. Lowercase hex only: mail systems fold address case.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Iterable

from sqlmodel import Session, select

from inboxd.db import insert_ignore
from inboxd.models import Setting

SECRET_KEY = "reply_token_secret"
MAC_HEX = 12  # 48 bits: guessing one token takes ~1.4e14 tries on average
_TOKEN = re.compile(rf"^t(\d{{1,12}})-([0-9a-f]{{{MAC_HEX}}})$")


def _mac(secret: bytes, ticket_id: int) -> str:
    return hmac.digest(secret, f"ticket:{ticket_id}".encode(), "sha256").hex()[:MAC_HEX]


def make_token(secret: bytes, ticket_id: int) -> str:
    return f"t{ticket_id}-{_mac(secret, ticket_id)}"


def verify_token(secret: bytes, token: str) -> int | None:
    """The ticket id a token names, or None when it is malformed or forged."""
    m = _TOKEN.match(token.lower())
    if m is None:
        return None
    ticket_id = int(m.group(1))
    return ticket_id if hmac.compare_digest(m.group(2), _mac(secret, ticket_id)) else None


def reply_address(address: str, token: str) -> str:
    """`support@example.com` + token -> `support+<token>@example.com` (subaddressing)."""
    local, _, domain = address.partition("@")
    return f"{local}+{token}@{domain}"


def find_ticket_token(
    secret: bytes, addresses: Iterable[str], own_addresses: frozenset[str]
) -> int | None:
    """The first valid token in an address of ours (`local+token@domain`), if any."""
    for address in addresses:
        local, _, domain = address.lower().partition("@")
        base, plus, token = local.partition("+")
        if plus and f"{base}@{domain}" in own_addresses:
            ticket_id = verify_token(secret, token)
            if ticket_id is not None:
                return ticket_id
    return None


def reply_secret(session: Session, configured: str | None = None) -> bytes:
    """The HMAC secret: the configured one, else one generated once and kept in the database."""
    if configured:
        return configured.encode()
    row = session.get(Setting, SECRET_KEY)
    if row is None:  # two daemons may race here: the first insert wins, both read it back
        insert_ignore(session, Setting, [{"key": SECRET_KEY, "value": secrets.token_hex(32)}])
        row = session.exec(select(Setting).where(Setting.key == SECRET_KEY)).one()
    return row.value.encode()
