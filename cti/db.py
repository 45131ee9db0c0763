"""Storage foundation: one SQLAlchemy metadata, engines for SQLite and PostgreSQL, the calls table.

SQLite is the embedded default (one file under the data directory); PostgreSQL runs
the same schema for larger sites. Everything here is portable between the two: no
dialect-specific upserts, datetimes stored as UTC and always returned timezone-aware.

`cti` imports no other package (DESIGN.md section 2), so `create_schema` only creates
the tables already registered on `Base.metadata`; the composition layer imports the
other packages' model modules (e.g. `recordings.index`) before calling it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    create_engine,
    event,
    false,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

#: How long a SQLite connection waits for another writer before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 5000


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes in, aware UTC datetimes out, on every backend.

    SQLite has no timestamp type and silently drops tzinfo, so we store naive UTC
    there and re-attach UTC on the way out; PostgreSQL gets ``timestamptz``.
    Naive datetimes are refused: their meaning depends on the host's clock setting,
    which is exactly the bug this type exists to prevent.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: store timezone-aware datetimes only")
        utc = value.astimezone(UTC)
        return utc if dialect.name == "postgresql" else utc.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """One metadata for the whole service; each package defines its tables on it."""


class CallRecord(Base):
    """One live or finished call, keyed by Asterisk's Linkedid (shared by all its channels)."""

    __tablename__ = "calls"

    linkedid: Mapped[str] = mapped_column(String(64), primary_key=True)
    caller_num: Mapped[str] = mapped_column(String(64), default="", server_default="")
    caller_name: Mapped[str] = mapped_column(String(255), default="", server_default="")
    #: The number the caller dialled (DNID / the hotline extension).
    dnid: Mapped[str] = mapped_column(String(64), default="", server_default="")
    direction: Mapped[str] = mapped_column(String(16), default="inbound", server_default="inbound")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    menu_choice: Mapped[str | None] = mapped_column(String(64))
    route_reason: Mapped[str | None] = mapped_column(String(255))
    queue: Mapped[str | None] = mapped_column(String(64), index=True)
    #: Queue member name (e.g. "1002"); the dialled interface is kept separately.
    agent: Mapped[str | None] = mapped_column(String(64), index=True)
    agent_interface: Mapped[str | None] = mapped_column(String(128))
    queue_joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    agent_connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    wait_seconds: Mapped[float | None] = mapped_column(Float)
    talk_seconds: Mapped[float | None] = mapped_column(Float)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    #: answered | abandoned | ivr_hangup | timeout | failed | ...
    outcome: Mapped[str | None] = mapped_column(String(32))
    #: Q.850 cause code from the Hangup event.
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    #: QA test calls are stored but kept out of agent KPIs.
    is_test_call: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    test_tag: Mapped[str | None] = mapped_column(String(64))

    def __repr__(self) -> str:
        return f"CallRecord(linkedid={self.linkedid!r}, outcome={self.outcome!r})"


def _sqlite_connection_setup(engine: Engine) -> None:
    """Pragmas and real transactions on every new SQLite connection.

    pysqlite (Python < 3.12) begins transactions lazily and on its own terms, which
    breaks SAVEPOINT and lets a read-then-write transaction fail with SQLITE_BUSY
    immediately (busy_timeout does not apply to a lock upgrade). So we turn its
    implicit handling off and issue ``BEGIN IMMEDIATE`` ourselves: writers queue on
    the busy timeout instead of failing. WAL keeps readers on other connections
    unblocked while a writer works.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
            _switch_to_wal(cur)
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Read paths (screen-pop lookups) begin DEFERRED: under WAL they then never
        # wait for a writer, e.g. during a long customer import.
        deferred = conn.get_execution_options().get(READ_MOSTLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


def _switch_to_wal(cur: Any) -> None:
    """Put the database file in WAL mode, waiting for other processes that hold it.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers "database
    is locked" at once, without its busy handler, while another connection holds a
    write lock on it (e.g. the service and two CLIs creating the schema together).
    So the switch is retried here for as long as a writer would wait.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            if time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def make_engine(url: str | URL) -> Engine:
    """An engine for ``sqlite:///path`` (default) or ``postgresql+psycopg2://...``.

    A bare ``postgresql://`` URL gets the psycopg2 driver, the one we declare as a
    dependency (SQLAlchemy 2.1 would otherwise pick psycopg 3).
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or every thread would see its own empty database.
            kwargs["poolclass"] = StaticPool
        engine = create_engine(parsed, **kwargs)
        _sqlite_connection_setup(engine)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg2")
        extra: dict[str, Any] = {}
        if parsed.get_driver_name() == "psycopg2":
            extra["client_encoding"] = "utf8"  # caller names are Chinese, whatever the server default
        return create_engine(parsed, pool_pre_ping=True, **extra)
    return create_engine(parsed, pool_pre_ping=True)


#: PostgreSQL advisory-lock key that serialises schema creation between processes.
SCHEMA_LOCK_KEY = 0x686F746C  # "hotl"


def create_schema(engine: Engine) -> None:
    """Create every table registered on `Base.metadata` (existing tables are left alone).

    The service and a CLI may start together on a new database. SQLite serialises
    the check-then-create through ``BEGIN IMMEDIATE``; PostgreSQL would let both
    create the same table, so there the transaction first takes an advisory lock.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
        Base.metadata.create_all(conn)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (they are handed to other threads)."""
    return sessionmaker(engine, expire_on_commit=False)


READ_MOSTLY_OPTION = "hotline_read_mostly"


def read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for latency-critical reads: on SQLite their transactions begin DEFERRED,
    so they read the last committed state instead of queueing behind a writer. An
    occasional write through them still works (it may wait for the busy timeout)."""
    return sessionmaker(engine.execution_options(**{READ_MOSTLY_OPTION: True}), expire_on_commit=False)


def default_sqlite_url(data_dir: Path) -> str:
    """``sqlite:///<data_dir>/hotline.sqlite3``, absolute, creating the directory."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return URL.create("sqlite", database=str(data_dir / "hotline.sqlite3")).render_as_string(hide_password=False)


_CALL_COLUMNS = frozenset(attr.key for attr in inspect(CallRecord).column_attrs)


def upsert_call(session: Session, record: Mapping[str, object]) -> CallRecord:
    """Insert or update the call with ``record["linkedid"]``; returns the row (in `session`).

    Merge semantics: keys present in `record` are written (``None`` included), absent
    keys keep their stored value. Portable: a plain get-or-insert, with the insert
    in a SAVEPOINT so a concurrent insert of the same call (PostgreSQL) turns into
    an update instead of failing the caller's transaction. Unknown keys raise, so
    a typo cannot silently drop data.
    """
    linkedid = record.get("linkedid")
    if not isinstance(linkedid, str) or not linkedid:
        raise ValueError("upsert_call needs a non-empty string 'linkedid'")
    unknown = set(record) - _CALL_COLUMNS
    if unknown:
        raise ValueError(f"unknown calls column(s): {', '.join(sorted(unknown))}")
    values = {key: value for key, value in record.items() if key != "linkedid"}

    row = session.get(CallRecord, linkedid)
    if row is None:
        try:
            with session.begin_nested():
                row = CallRecord(linkedid=linkedid, **values)
                session.add(row)
            return row
        except IntegrityError:
            row = session.get(CallRecord, linkedid)
            if row is None:  # not a duplicate: a real constraint violation
                raise
    for key, value in values.items():
        setattr(row, key, value)
    return row
