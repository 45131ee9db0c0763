"""The do-not-call list shared by every outbound call the service places.

It lives in `cti` (not in the survey package) because `cti.originate.Originator`
enforces it: an Originate whose request names a `customer_number` on this list is
refused before anything is sent, whoever asked for the call (surveys, callbacks,
agents' click-to-call). Numbers are stored in E.164 (`cti.customers.phone.normalize`),
so "138 0013 8000", "013800138000" and "+8613800138000" are one entry.

The table keeps its original name, `outbound_suppression`, so existing lists survive
the move from `ivr.survey`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from cti.customers.phone import InvalidPhoneNumber, normalize
from cti.db import Base, UTCDateTime

__all__ = ["InvalidSuppressionNumber", "SuppressedNumber", "SuppressionList"]


def _now() -> datetime:
    return datetime.now(UTC)


class SuppressedNumber(Base):
    """One number nobody may call from here (E.164), with why and since when."""

    __tablename__ = "outbound_suppression"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class InvalidSuppressionNumber(ValueError):
    """The text is not a phone number; nothing was written."""


class SuppressionList:
    """Blocking reads/writes of the list (async callers use a worker thread)."""

    def __init__(self, sessions: sessionmaker[Session], default_region: str = "CN") -> None:
        self.sessions = sessions
        self.default_region = default_region

    def e164(self, number: str) -> str:
        """The stored form of `number`; InvalidSuppressionNumber when it is not a number."""
        try:
            return normalize(number, self.default_region)
        except InvalidPhoneNumber as exc:
            raise InvalidSuppressionNumber(f"not a phone number: {number!r} ({exc})") from None

    def add(self, number: str, reason: str = "", now: datetime | None = None) -> str:
        """Suppress `number` (idempotent: the first reason is kept); returns its E.164 form."""
        e164 = self.e164(number)
        if not isinstance(reason, str) or len(reason) > 1000:
            raise InvalidSuppressionNumber("reason must be text of at most 1000 characters")
        with self.sessions.begin() as session:
            if session.get(SuppressedNumber, e164) is None:
                session.add(SuppressedNumber(number=e164, reason=reason, added_at=now or _now()))
        return e164

    def remove(self, number: str) -> bool:
        """Allow calls to `number` again; False when it was not on the list."""
        e164 = self.e164(number)
        with self.sessions.begin() as session:
            row = session.get(SuppressedNumber, e164)
            if row is None:
                return False
            session.delete(row)
            return True

    def contains(self, number: str) -> bool:
        """Is `number` suppressed? A text that is no phone number raises (never "not suppressed")."""
        e164 = self.e164(number)
        with self.sessions() as session:
            return session.get(SuppressedNumber, e164) is not None

    def entries(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            rows = session.scalars(select(SuppressedNumber).order_by(SuppressedNumber.number))
            return [{"number": r.number, "reason": r.reason, "added_at": r.added_at.isoformat()} for r in rows]
