"""What a server's request handlers share: the database, the store, who may do what."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from flowlib.store import ArtifactStore
from scheduler.server.auth import User, user_of
from scheduler.server.deployments import Launcher

SESSION_COOKIE = "flow_session"


@dataclass
class ServerContext:
    engine: Engine
    store: ArtifactStore
    home: Path
    launcher: Launcher
    executor: str
    auth: bool = True
    os_user: str = "flow"
    max_code_mb: float = 50.0
    pool: Any = None  # scheduler.server.pool.ServerPool, when this server executes runs
    local_tokens: dict[str, User] = field(default_factory=dict)  # `flow ui`'s one-person token
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))  # signs CSRF tokens

    def user(self, token: str | None) -> User | None:
        """The user a bearer token or session cookie stands for; without auth, the server's OS user."""
        if not self.auth:
            return User(self.os_user, admin=True)
        if token and token in self.local_tokens:
            return self.local_tokens[token]
        return user_of(self.engine, token)

    def csrf(self, session: str) -> str:
        """The CSRF token that goes with a session: forms carry it, state changes check it."""
        return hmac.new(self.secret, session.encode(), hashlib.sha256).hexdigest()

    def reader(self) -> Any:
        from scheduler.store.blobs import Blobs

        return Blobs(self.engine).reader(self.store)

    def queued(self) -> None:
        """A run was queued: this server looks for work at once."""
        if self.pool is not None:
            self.pool.notify()
