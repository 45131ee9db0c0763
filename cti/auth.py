"""API tokens and roles: who may see which calls and pages.

Tokens are random strings shown once at creation; only their SHA-256 is stored, so a
leaked database does not leak working tokens. Roles: agent (their own calls and
screen pops only), supervisor, qa, admin.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from cti.db import Base, UTCDateTime

ROLES = ("agent", "supervisor", "qa", "admin")


class AuthError(ValueError):
    """A token request that cannot be honoured (bad role, agent without extension)."""


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    role: str
    agent: str | None = None  # the agent's queue member name / extension, for role agent

    def sees_agent(self, agent: str | None) -> bool:
        """Agents see only what concerns themselves; every other role sees all agents."""
        return self.role != "agent" or (agent is not None and agent == self.agent)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    agent: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


#: Every token starts with this: a bare url-safe token begins with "-" one time in 64,
#: and `hotline ... --token -xyz` then reads it as an option; the prefix also lets
#: secret scanners recognise a leaked token.
TOKEN_PREFIX = "hl_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Issue and check tokens; checked tokens are cached (the websocket re-checks often)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._cache: dict[str, Principal | None] = {}

    def issue(self, user: str, role: str, agent: str | None = None) -> str:
        if role not in ROLES:
            raise AuthError(f"role must be one of {', '.join(ROLES)}")
        if role == "agent" and not agent:
            raise AuthError("an agent token needs the agent's extension")
        if not user or len(user) > 128:
            raise AuthError("user must be 1 to 128 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(24)
        with self.sessions.begin() as session:
            session.add(ApiToken(token_sha256=_digest(token), user=user, role=role,
                                 agent=agent if role == "agent" else None, created_at=datetime.now(UTC)))
        return token

    def check(self, token: str | None) -> Principal | None:
        if not token or len(token) > 256:
            return None
        digest = _digest(token)
        if digest in self._cache:
            return self._cache[digest]
        with self.sessions() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
            principal = None if row is None else Principal(row.user, row.role, row.agent)
        self._cache[digest] = principal
        return principal

    def revoke(self, token: str) -> bool:
        digest = _digest(token)
        self._cache.pop(digest, None)
        with self.sessions.begin() as session:
            row = session.get(ApiToken, digest)
            if row is None:
                return False
            session.delete(row)
            return True
