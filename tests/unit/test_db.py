"""cti.db on SQLite: engine settings, aware datetimes, upsert merge semantics, concurrent writers."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from cti.db import (
    CallRecord,
    create_schema,
    default_sqlite_url,
    make_engine,
    session_factory,
    upsert_call,
)

BEIJING = timezone(timedelta(hours=8))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(default_sqlite_url(tmp_path / "data"))
    create_schema(eng)
    yield eng
    eng.dispose()


def test_default_sqlite_url_is_absolute_and_creates_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = default_sqlite_url(Path("nested/dir"))
    assert (tmp_path / "nested" / "dir").is_dir()
    assert url == f"sqlite:///{tmp_path}/nested/dir/hotline.sqlite3"


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_create_schema_is_repeatable(engine: Engine) -> None:
    create_schema(engine)
    with engine.connect() as conn:
        names = {row[0] for row in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
    assert "calls" in names


def _hold_write_lock_on_new_file(path: Path) -> sqlite3.Connection:
    """A connection mid-write on a new file still in rollback-journal mode.

    That is where another process is while it creates the database; SQLite then
    refuses a switch to WAL at once, without calling the busy handler.
    """
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE other_process (x INTEGER)")
    return holder


def test_opening_a_file_another_process_is_creating_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    holder = _hold_write_lock_on_new_file(path)
    releaser = threading.Timer(0.3, holder.commit)
    releaser.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        create_schema(engine)  # the service and a CLI start together on one data directory
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        releaser.join()
        holder.close()
        engine.dispose()


def test_a_file_locked_past_the_busy_timeout_still_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cti.db.SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "stuck.db"
    holder = _hold_write_lock_on_new_file(path)
    engine = make_engine(f"sqlite:///{path}")
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            engine.connect()
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()


def test_in_memory_database_is_shared_across_threads() -> None:
    # Callers use the database from worker threads (asyncio.to_thread); with the
    # default per-thread pool each thread would see its own empty database.
    eng = make_engine("sqlite://")
    create_schema(eng)
    sessions = session_factory(eng)
    started = datetime(2025, 1, 1, tzinfo=UTC)

    def write() -> None:
        with sessions.begin() as session:
            upsert_call(session, {"linkedid": "mem-1", "started_at": started})

    worker = threading.Thread(target=write)
    worker.start()
    worker.join()
    with sessions() as session:
        assert session.get(CallRecord, "mem-1") is not None
    eng.dispose()


def test_bare_postgresql_url_gets_the_psycopg2_driver() -> None:
    eng = make_engine("postgresql://u:p@127.0.0.1:1/hotline")  # no connection is made here
    try:
        assert eng.dialect.driver == "psycopg2"
        assert getattr(eng.pool, "_pre_ping", None) is True
    finally:
        eng.dispose()


def test_datetimes_round_trip_as_aware_utc(sessions: sessionmaker[Session]) -> None:
    started = datetime(2025, 3, 8, 9, 30, 15, 250000, tzinfo=BEIJING)
    with sessions.begin() as session:
        upsert_call(session, {"linkedid": "1700000000.1", "started_at": started, "ended_at": None})
    with sessions() as session:
        row = session.get(CallRecord, "1700000000.1")
        assert row is not None
        assert row.started_at == started
        assert row.started_at.utcoffset() == timedelta(0)
        assert row.started_at.hour == 1  # 09:30 in Beijing is 01:30 UTC
        assert row.ended_at is None


def test_datetime_comparisons_in_queries_use_utc(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        upsert_call(session, {"linkedid": "a", "started_at": datetime(2025, 3, 8, 1, 0, tzinfo=UTC)})
        upsert_call(session, {"linkedid": "b", "started_at": datetime(2025, 3, 8, 3, 0, tzinfo=UTC)})
    since = datetime(2025, 3, 8, 10, 0, tzinfo=BEIJING)  # = 02:00 UTC
    with sessions() as session:
        found = session.scalars(select(CallRecord.linkedid).where(CallRecord.started_at >= since)).all()
    assert found == ["b"]


def test_naive_datetimes_are_refused(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="naive datetime"), sessions.begin() as session:
        upsert_call(session, {"linkedid": "naive", "started_at": datetime(2025, 1, 1, 12, 0)})
        session.flush()


def test_upsert_inserts_with_defaults_then_merges(sessions: sessionmaker[Session]) -> None:
    started = datetime(2025, 5, 1, 8, 0, tzinfo=UTC)
    with sessions.begin() as session:
        row = upsert_call(session, {
            "linkedid": "1746086400.42", "caller_num": "13812345678", "caller_name": "张伟",
            "dnid": "4008001234", "started_at": started, "queue": "repair", "menu_choice": "1",
        })
        assert row.linkedid == "1746086400.42"
    with sessions() as session:
        inserted = session.get(CallRecord, "1746086400.42")
        assert inserted is not None
        assert (inserted.direction, row.is_test_call, row.outcome) == ("inbound", False, None)
        assert inserted.caller_name == "张伟"

    ended = started + timedelta(minutes=3)
    with sessions.begin() as session:
        upsert_call(session, {"linkedid": "1746086400.42", "ended_at": ended, "outcome": "answered",
                              "talk_seconds": 151.5, "menu_choice": None})
    with sessions() as session:
        merged = session.get(CallRecord, "1746086400.42")
        assert merged is not None
        # Absent keys are kept, present keys (None included) are written.
        assert (merged.caller_num, merged.queue, merged.started_at) == ("13812345678", "repair", started)
        assert (merged.ended_at, merged.outcome, merged.talk_seconds, merged.menu_choice) == (
            ended, "answered", 151.5, None)
        assert session.scalar(select(CallRecord).where(CallRecord.linkedid != "1746086400.42")) is None


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"started_at": datetime(2025, 1, 1, tzinfo=UTC)}, "linkedid"),
        ({"linkedid": "", "started_at": datetime(2025, 1, 1, tzinfo=UTC)}, "linkedid"),
        ({"linkedid": "x", "caller_nmu": "1"}, "caller_nmu"),
    ],
)
def test_upsert_rejects_bad_records(sessions: sessionmaker[Session], record: dict[str, object], message: str) -> None:
    with sessions() as session, pytest.raises(ValueError, match=message):
        upsert_call(session, record)


def test_upsert_turns_a_lost_insert_race_into_an_update(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    started = datetime(2025, 1, 1, tzinfo=UTC)
    with sessions.begin() as session:
        upsert_call(session, {"linkedid": "race", "caller_num": "1001", "started_at": started})
    with sessions.begin() as session:
        real_get = session.get
        calls: list[str] = []

        def first_get_misses(entity: type[CallRecord], ident: str) -> CallRecord | None:
            # What a concurrent writer looks like: the row is not there when we look,
            # but it is when we insert.
            calls.append(ident)
            return None if len(calls) == 1 else real_get(entity, ident)

        monkeypatch.setattr(session, "get", first_get_misses)
        row = upsert_call(session, {"linkedid": "race", "outcome": "answered"})
        assert len(calls) == 2
        assert row.outcome == "answered"
    with sessions() as session:
        row2 = session.get(CallRecord, "race")
        assert row2 is not None
        assert (row2.caller_num, row2.outcome) == ("1001", "answered")


def test_concurrent_writers_on_one_sqlite_file_wait_instead_of_failing(sessions: sessionmaker[Session]) -> None:
    started = datetime(2025, 1, 1, tzinfo=UTC)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(10):
                with sessions.begin() as session:
                    upsert_call(session, {"linkedid": f"call-{i}", "started_at": started, "agent": f"10{n:02d}"})
        except BaseException as exc:  # collected and asserted in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with sessions() as session:
        assert len(session.scalars(select(CallRecord)).all()) == 10


def test_read_sessions_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    """A screen-pop lookup must not queue behind a long write (e.g. a customer import)."""
    import time

    from sqlalchemy import text

    from cti.db import read_session_factory

    engine = make_engine(f"sqlite:///{tmp_path / 'rw.db'}")
    create_schema(engine)
    writer = session_factory(engine)()
    writer.begin()
    writer.execute(text("CREATE TABLE t (x INTEGER)"))  # holds the write lock, uncommitted
    try:
        started = time.monotonic()
        with read_session_factory(engine)() as reader:
            assert reader.execute(text("SELECT count(*) FROM calls")).scalar() == 0
        assert time.monotonic() - started < 1.0
    finally:
        writer.rollback()
        writer.close()
        engine.dispose()
