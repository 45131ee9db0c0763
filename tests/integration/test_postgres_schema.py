"""The service schema on a real PostgreSQL server: the same code paths the SQLite unit tests cover.

Uses its own module-scoped server (tests/support/postgres.py); a session-wide one
from conftest would serve just as well.
"""

from __future__ import annotations

import threading
import time
import wave
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, make_url, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from cti.db import Base, CallRecord, create_schema, make_engine, session_factory, upsert_call
from recordings.index import Recording, RecordingIndex
from tests.support.postgres import postgres_server

pytestmark = pytest.mark.postgres

BEIJING = timezone(timedelta(hours=8))
T0 = datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=BEIJING)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url)
    assert Recording.__tablename__ in Base.metadata.tables  # imported, so its table gets created too
    create_schema(eng)
    yield eng
    Base.metadata.drop_all(eng)
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


def test_schema_uses_native_types(engine: Engine) -> None:
    create_schema(engine)  # repeatable
    insp = inspect(engine)
    assert {"calls", "recordings"} <= set(insp.get_table_names())
    calls = {c["name"]: c for c in insp.get_columns("calls")}
    assert str(calls["started_at"]["type"]) == "TIMESTAMP"
    assert calls["started_at"]["type"].timezone is True  # type: ignore[attr-defined]
    assert calls["started_at"]["nullable"] is False
    assert str(calls["is_test_call"]["type"]) == "BOOLEAN"
    uniques = insp.get_unique_constraints("recordings")
    assert [u["column_names"] for u in uniques] == [["linkedid", "uniqueid", "leg"]]
    with engine.connect() as conn:
        assert conn.execute(text("SHOW server_encoding")).scalar() == "UTF8"
        assert conn.execute(text("SHOW client_encoding")).scalar() == "UTF8"


def test_call_round_trip_with_chinese_name_and_aware_datetimes(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        upsert_call(session, {
            "linkedid": "pg-1748743200.1", "caller_num": "02161234567", "caller_name": "上海市徐汇区 王秀英",
            "dnid": "4008001234", "started_at": T0, "queue": "complaint", "route_reason": "vip customer → 投诉",
            "is_test_call": True, "test_tag": "qa-42",
        })
    # A server session in another zone must not change what we read back.
    with sessions() as session:
        session.execute(text("SET TIME ZONE 'America/New_York'"))
        row = session.get(CallRecord, "pg-1748743200.1")
        assert row is not None
        assert row.caller_name == "上海市徐汇区 王秀英"
        assert row.route_reason == "vip customer → 投诉"
        assert row.started_at == T0
        assert row.started_at.utcoffset() == timedelta(0)
        assert row.started_at.microsecond == 123456
        assert (row.is_test_call, row.direction) == (True, "inbound")

    ended = T0 + timedelta(minutes=4, seconds=2)
    with sessions.begin() as session:
        upsert_call(session, {"linkedid": "pg-1748743200.1", "ended_at": ended, "outcome": "answered",
                              "hangup_cause": 16, "test_tag": None})
    with sessions() as session:
        row = session.get(CallRecord, "pg-1748743200.1")
        assert row is not None
        assert (row.queue, row.ended_at, row.outcome, row.hangup_cause, row.test_tag) == (
            "complaint", ended, "answered", 16, None)
        window = select(CallRecord.linkedid).where(
            CallRecord.started_at >= datetime(2025, 6, 1, 2, 0, tzinfo=UTC),
            CallRecord.started_at < datetime(2025, 6, 1, 10, 0, 1, tzinfo=BEIJING),
        )
        assert session.scalars(window).all() == ["pg-1748743200.1"]


def test_naive_datetimes_are_refused(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="naive datetime"), sessions.begin() as session:
        upsert_call(session, {"linkedid": "pg-naive", "started_at": datetime(2025, 1, 1)})
        session.flush()


def _wait_for_lock_waiter(engine: Engine, deadline: float) -> None:
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar()
            if waiting:
                return
            conn.rollback()  # fresh snapshot for pg_locks
            time.sleep(0.02)
    raise AssertionError("the second writer never blocked on the first")


def test_concurrent_first_inserts_of_one_call_both_succeed(engine: Engine, sessions: sessionmaker[Session]) -> None:
    """Two writers insert the same new call; the loser's insert becomes an update (SAVEPOINT)."""
    errors: list[BaseException] = []
    first = sessions()
    first.begin()
    upsert_call(first, {"linkedid": "pg-race", "started_at": T0, "caller_num": "13900000000"})
    first.flush()  # row inserted, uncommitted: the unique index now blocks the second insert

    def second_writer() -> None:
        try:
            with sessions.begin() as session:
                upsert_call(session, {"linkedid": "pg-race", "started_at": T0, "agent": "1002"})
        except BaseException as exc:  # asserted in the main thread
            errors.append(exc)

    worker = threading.Thread(target=second_writer)
    worker.start()
    try:
        _wait_for_lock_waiter(engine, time.monotonic() + 10)
    finally:
        first.commit()
        first.close()
        worker.join(timeout=10)
    assert errors == []
    with sessions() as session:
        row = session.get(CallRecord, "pg-race")
        assert row is not None
        assert (row.caller_num, row.agent) == ("13900000000", "1002")


def _write_wav(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00\x00" * int(8000 * seconds))


def test_recording_index_start_and_finalize(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    root = tmp_path / "monitor"
    index = RecordingIndex(sessions, root)
    base = "hotline/2025/06/01/pg-1748743200.9-1748743200.9"
    legs = {leg: f"{base}-{leg}.wav" for leg in ("mix", "rx", "tx")}
    rows = index.start(linkedid="pg-1748743200.9", uniqueid="1748743200.9", legs=legs, started_at=T0)
    assert [r.status for r in rows] == ["recording"] * 3
    again = index.start(linkedid="pg-1748743200.9", uniqueid="1748743200.9", legs=legs, started_at=T0)
    assert [r.id for r in again] == [r.id for r in rows]

    _write_wav(root / legs["mix"], 3.0)
    _write_wav(root / legs["rx"], 3.0)
    stopped = T0 + timedelta(seconds=3)
    done = {r.leg: r for r in index.finalize(linkedid="pg-1748743200.9", stopped_at=stopped, agent="1002")}
    assert (done["mix"].status, done["mix"].duration_seconds, done["mix"].size_bytes) == ("complete", 3.0, 48044)
    assert done["tx"].status == "missing"
    index.record_speech(done["rx"].id, has_speech=False, speech_seconds=0.0)

    stored = {r.leg: r for r in index.for_call("pg-1748743200.9")}
    assert stored["mix"].stopped_at == stopped and stored["mix"].stopped_at.utcoffset() == timedelta(0)
    assert stored["mix"].started_at == T0
    assert (stored["rx"].has_speech, stored["rx"].speech_seconds, stored["rx"].agent) == (False, 0.0, "1002")
    assert index.resolve(stored["mix"].path) == (root / legs["mix"]).resolve()


def test_processes_starting_together_on_a_new_database_create_the_schema_once(pg_url: str) -> None:
    """The service and CLIs may start at once on an empty database; none may fail."""
    admin = make_engine(pg_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE fresh_start"))
    url = make_url(pg_url).set(database="fresh_start")
    engines = [make_engine(url) for _ in range(6)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def start(engine: Engine) -> None:
        try:
            barrier.wait()
            create_schema(engine)
        except BaseException as exc:  # collected and asserted in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(eng,)) for eng in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert set(inspect(engines[0]).get_table_names()) == set(Base.metadata.tables)
    finally:
        for eng in engines:
            eng.dispose()
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE fresh_start"))
        admin.engine.dispose()
