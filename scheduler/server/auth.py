"""API tokens: created once (printed, never stored), kept as sha256 hashes, revoked by name."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update

from flowlib.errors import FlowError
from scheduler.store.models import tokens

PREFIX = "flow_"  # tokens start with it, so a leaked one is recognisable in a log or a scan


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False

    def may_change(self, owner: str) -> bool:
        """Only a run's owner, or an admin, may cancel or resume it."""
        return self.admin or self.name == owner


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, name: str, *, admin: bool = False) -> str:
    """A new token for `name` (a name that exists gets one more); only its hash is stored."""
    if not name or not name.strip() or len(name) > 100:
        raise FlowError(f"token name {name!r}: give a name of 1 to 100 characters")
    token = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(
            insert(tokens).values(name=name, hash=token_hash(token), admin=admin, created_at=time.time())
        )
    return token


def revoke_tokens(engine: Engine, name: str) -> int:
    """Revoke every token of `name`; return how many were live."""
    with engine.begin() as conn:
        done = conn.execute(
            update(tokens)
            .where(tokens.c.name == name, tokens.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
        return done.rowcount or 0


def user_of(engine: Engine, token: str | None) -> User | None:
    """The user a token belongs to, or None for a missing, unknown or revoked one."""
    if not token:
        return None
    digest = token_hash(token)
    with engine.connect() as conn:
        row = conn.execute(
            select(tokens.c.name, tokens.c.admin, tokens.c.hash).where(
                tokens.c.hash == digest, tokens.c.revoked_at.is_(None)
            )
        ).first()
    if row is None or not hmac.compare_digest(row.hash, digest):
        return None
    return User(row.name, bool(row.admin))
