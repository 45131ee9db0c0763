"""Every published hotline definition, kept: who, why, when, the diff, and what became of it.

One row per publish attempt (rejected and failed ones too, with the reason), so the
history answers "what ran when" and "why was this edit refused". The definition
text is stored whole: a rollback republishes exactly the bytes that ran before.
SQLite and PostgreSQL (the shared `cti.db` metadata).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from cti.db import Base, UTCDateTime

#: Status of a version row.
LIVE = "live"  # what every caller gets now (exactly one row)
SUPERSEDED = "superseded"  # was live, replaced by a later version
DRAFT = "draft"  # published for test callers only (at most one row)
DRAFT_RETIRED = "draft-retired"  # a draft that was promoted or replaced
REJECTED = "rejected"  # validation failed; nothing was applied
FAILED = "failed"  # applied, then a check failed: rolled back automatically


class DialplanVersion(Base):
    __tablename__ = "dialplan_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    author: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    #: publish | draft | promote | rollback | adopt
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    definition: Mapped[str] = mapped_column(Text)
    #: unified diff against the version that was live when this one was made
    diff: Mapped[str] = mapped_column(Text, default="")
    base_version: Mapped[int | None] = mapped_column(Integer)
    #: JSON list of caller numbers that reach a draft
    test_callers: Mapped[str] = mapped_column(Text, default="[]")
    #: JSON: the validation findings / failed step and its message
    error: Mapped[str | None] = mapped_column(Text)
    #: JSON: steps taken (sandbox check, reload, smoke calls) with their results
    log: Mapped[str] = mapped_column(Text, default="[]")
    generation: Mapped[str | None] = mapped_column(String(255))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def unified_diff(old: str, new: str, old_name: str = "live", new_name: str = "edit") -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=old_name, tofile=new_name))


@dataclass(frozen=True, slots=True)
class VersionView:
    """A version as the CLI and REST show it."""

    id: int
    created_at: datetime
    author: str
    reason: str
    kind: str
    status: str
    sha256: str
    base_version: int | None
    test_callers: tuple[str, ...]
    error: Any
    log: Any
    diff: str
    definition: str

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "created_at": self.created_at.isoformat(), "author": self.author,
            "reason": self.reason, "kind": self.kind, "status": self.status, "sha256": self.sha256,
            "base_version": self.base_version, "test_callers": list(self.test_callers), "error": self.error,
        }
        if full:
            out.update(diff=self.diff, log=self.log, definition=self.definition)
        return out


def _view(row: DialplanVersion) -> VersionView:
    return VersionView(
        id=row.id, created_at=row.created_at, author=row.author, reason=row.reason, kind=row.kind,
        status=row.status, sha256=row.sha256, base_version=row.base_version,
        test_callers=tuple(json.loads(row.test_callers or "[]")),
        error=json.loads(row.error) if row.error else None, log=json.loads(row.log or "[]"),
        diff=row.diff or "", definition=row.definition,
    )


class VersionStore:
    """Blocking (SQLAlchemy); the publisher calls it from a worker thread."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(self, *, author: str, reason: str, kind: str, status: str, definition: str, diff: str,
            base_version: int | None, test_callers: tuple[str, ...] = (), error: Any = None,
            log: Any = None, generation: str | None = None) -> VersionView:
        with self.sessions.begin() as session:
            row = DialplanVersion(
                created_at=datetime.now(UTC), author=author, reason=reason, kind=kind, status=status,
                sha256=sha256(definition), definition=definition, diff=diff, base_version=base_version,
                test_callers=json.dumps(list(test_callers)),
                error=None if error is None else json.dumps(error, ensure_ascii=False),
                log=json.dumps(log or [], ensure_ascii=False), generation=generation,
            )
            session.add(row)
            session.flush()
            return _view(row)

    def make_live(self, version_id: int) -> None:
        """This version is now live; the previous live one is superseded (one transaction)."""
        with self.sessions.begin() as session:
            for row in session.scalars(select(DialplanVersion).where(DialplanVersion.status == LIVE)):
                row.status = SUPERSEDED
            live = session.get(DialplanVersion, version_id)
            if live is None:
                raise KeyError(version_id)
            live.status = LIVE

    def set_status(self, version_id: int, status: str, *, error: Any = None, log: Any = None) -> None:
        with self.sessions.begin() as session:
            row = session.get(DialplanVersion, version_id)
            if row is None:
                raise KeyError(version_id)
            row.status = status
            if error is not None:
                row.error = json.dumps(error, ensure_ascii=False)
            if log is not None:
                row.log = json.dumps(log, ensure_ascii=False)

    def retire_drafts(self) -> None:
        with self.sessions.begin() as session:
            for row in session.scalars(select(DialplanVersion).where(DialplanVersion.status == DRAFT)):
                row.status = DRAFT_RETIRED

    def get(self, version_id: int) -> VersionView | None:
        with self.sessions() as session:
            row = session.get(DialplanVersion, version_id)
            return None if row is None else _view(row)

    def with_status(self, status: str) -> VersionView | None:
        with self.sessions() as session:
            row = session.scalars(select(DialplanVersion).where(DialplanVersion.status == status)
                                  .order_by(DialplanVersion.id.desc())).first()
            return None if row is None else _view(row)

    def live(self) -> VersionView | None:
        return self.with_status(LIVE)

    def draft(self) -> VersionView | None:
        return self.with_status(DRAFT)

    def previous_live(self, before: int) -> VersionView | None:
        """The newest version before `before` that was live at some point."""
        with self.sessions() as session:
            row = session.scalars(select(DialplanVersion)
                                  .where(DialplanVersion.id < before,
                                         DialplanVersion.status.in_((SUPERSEDED, LIVE)))
                                  .order_by(DialplanVersion.id.desc())).first()
            return None if row is None else _view(row)

    def history(self, limit: int = 50) -> list[VersionView]:
        with self.sessions() as session:
            rows = session.scalars(select(DialplanVersion).order_by(DialplanVersion.id.desc()).limit(limit))
            return [_view(r) for r in rows]
