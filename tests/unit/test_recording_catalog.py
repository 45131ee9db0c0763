"""Recording sets on SQLite with WAV files on disk: search filters, case library, legal hold,
access log, retention policy, purge, reconciliation, the disk watermark and the CLI."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

import recordings.catalog  # noqa: F401 - registers the set tables on the metadata
from cti.db import Base, create_schema, make_engine
from recordings.catalog import RecordingCatalog, SetFilter
from recordings.index import RecordingIndex
from recordings.recorder import legs_for
from recordings.retention import RetentionPolicy, disk_state, purge, purge_plan, reconcile
from tests.unit.test_recording_index import write_wav

T0 = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    from tests.support.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """Every test on SQLite, and (marker postgres) on a real PostgreSQL server."""
    url = f"sqlite:///{tmp_path / 'rec.sqlite3'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    eng = make_engine(url)
    Base.metadata.drop_all(eng)  # a fresh schema per test (the PostgreSQL server lives per module)
    create_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def catalog(sessions: sessionmaker[Session], tmp_path: Path) -> RecordingCatalog:
    root = tmp_path / "monitor"
    root.mkdir()
    return RecordingCatalog(RecordingIndex(sessions, root))


def record_call(catalog: RecordingCatalog, n: int, *, start: datetime = T0, queue: str = "repair",
                agent: str | None = "1001", agents: tuple[str, ...] = (), outcome: str = "answered",
                caller: str = "13800138000", customer: str | None = None, finished: bool = True) -> dict[str, int]:
    """A call as the service records it: rows at start, files written, finalised at hangup."""
    linkedid = uniqueid = f"{1748743200 + n}.{n}"
    base = f"hotline/{start:%Y/%m/%d}/{linkedid}-{uniqueid}"
    rows = catalog.index.start(linkedid=linkedid, uniqueid=uniqueid, legs=legs_for(base), started_at=start)
    catalog.open_set(linkedid=linkedid, uniqueid=uniqueid, base=base, started_at=start)
    if finished:
        for row in rows:
            write_wav(catalog.index.root / row.path, 1.0)
        stop = start + timedelta(seconds=60)
        catalog.index.finalize(linkedid=linkedid, stopped_at=stop, queue=queue, agent=agent)
        catalog.close_set(linkedid, stopped_at=stop, queue=queue, agent=agent, agents=agents, caller_num=caller,
                          customer_id=customer, outcome=outcome, transfers=len(agents))
    return {r.leg: r.id for r in rows}


def ids(results: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [r["linkedid"] for r in results]


def test_search_filters(catalog: RecordingCatalog) -> None:
    record_call(catalog, 1, agent="1001", agents=("1002",), customer="42")
    record_call(catalog, 2, start=T0 + timedelta(days=1), queue="complaint", agent="1003", outcome="answered")
    record_call(catalog, 3, start=T0 + timedelta(days=2), agent=None, outcome="abandoned", caller="13900139000")
    catalog.store_analysis("1748743201.1", {"legs": {}, "metrics": {"flags": ["dead_air"]}}, T0)
    every = ids(catalog.search(SetFilter()))
    assert every == ["1748743203.3", "1748743202.2", "1748743201.1"]  # newest first
    assert ids(catalog.search(SetFilter(agent="1002"))) == ["1748743201.1"]  # the transferred-to agent
    assert ids(catalog.search(SetFilter(agent="100"))) == []  # whole names only
    assert ids(catalog.search(SetFilter(queue="complaint"))) == ["1748743202.2"]
    assert ids(catalog.search(SetFilter(customer="42"))) == ["1748743201.1"]
    assert ids(catalog.search(SetFilter(customer="13900139000"))) == ["1748743203.3"]
    assert ids(catalog.search(SetFilter(outcome="abandoned"))) == ["1748743203.3"]
    assert ids(catalog.search(SetFilter(flagged=True))) == ["1748743201.1"]
    assert ids(catalog.search(SetFilter(since=T0 + timedelta(hours=1), until=T0 + timedelta(days=2)))) == [
        "1748743202.2"]
    assert len(catalog.search(SetFilter(limit=1))) == 1


def test_case_library_and_legal_hold(catalog: RecordingCatalog) -> None:
    legs = record_call(catalog, 1)
    record_call(catalog, 2)
    with pytest.raises(ValueError, match="note"):
        catalog.mark_case(legs["rx"], "praise", "  ", "qa1", T0)
    with pytest.raises(ValueError, match="case must be"):
        catalog.mark_case(legs["rx"], "funny", "x", "qa1", T0)
    with pytest.raises(LookupError):
        catalog.mark_case(999, "praise", "x", "qa1", T0)
    catalog.mark_case(legs["rx"], "complaint", "rude tone at 02:10", "qa1", T0)  # any leg id marks the call
    lib = catalog.search(SetFilter(case="any"))
    assert ids(lib) == ["1748743201.1"]
    assert lib[0]["case"] == {"kind": "complaint", "note": "rude tone at 02:10", "by": "qa1", "at": T0.isoformat()}
    assert catalog.search(SetFilter(case="praise")) == []
    catalog.mark_case(legs["mix"], None, "", "qa1", T0)
    assert catalog.search(SetFilter(case="any")) == []
    with pytest.raises(ValueError, match="reason"):
        catalog.set_legal_hold(legs["mix"], True, "")
    assert catalog.set_legal_hold(legs["mix"], True, "case 7").legal_hold is True


def test_access_log_rows(catalog: RecordingCatalog) -> None:
    legs = record_call(catalog, 1)
    row = catalog.leg(legs["mix"])
    assert row is not None
    catalog.log_access(recording=row, user="qa1", role="qa", action="play", reason="review", byte_range="0-99", at=T0)
    (entry,) = catalog.access_log(legs["mix"])
    assert entry["user"] == "qa1" and entry["reason"] == "review" and entry["byte_range"] == "0-99"
    assert catalog.access_log(legs["rx"]) == []


def test_retention_policy_rules() -> None:
    with pytest.raises(ValueError, match="default"):
        RetentionPolicy.parse("answered=10")
    for bad in ("default=ten", "default", "default=1,=3", "default=1,queue name=3"):
        with pytest.raises(ValueError):
            RetentionPolicy.parse(bad)
    policy = RetentionPolicy.parse("default=90, abandoned=30, queue:complaint=365, case=keep")
    assert policy.rules == {"default": 90, "abandoned": 30, "queue:complaint": 365, "case": None}


def test_purge_by_policy_with_hold_and_cases(catalog: RecordingCatalog) -> None:
    policy = RetentionPolicy.parse("default=90,abandoned=30,queue:complaint=365,case=keep")
    record_call(catalog, 1, outcome="abandoned", agent=None)                    # 30 days
    record_call(catalog, 2)                                                     # 90 days
    record_call(catalog, 3, queue="complaint", outcome="abandoned", agent=None)  # the longest rule: 365
    held = record_call(catalog, 4)
    case = record_call(catalog, 5)
    record_call(catalog, 6, finished=False)  # still recording: never touched
    catalog.set_legal_hold(held["mix"], True, "court order")
    catalog.mark_case(case["mix"], "praise", "textbook call", "qa", T0)

    def planned(days: int) -> list[str]:
        return sorted(i.linkedid for i in purge_plan(catalog, policy, T0 + timedelta(days=days)))

    assert planned(29) == []
    assert planned(31) == ["1748743201.1"]
    assert planned(91) == ["1748743201.1", "1748743202.2"]
    assert planned(400) == ["1748743201.1", "1748743202.2", "1748743203.3"]

    files = [catalog.index.resolve(p) for p in legs_for("hotline/2025/06/01/1748743202.2-1748743202.2").values()]
    assert all(f.exists() for f in files)
    plan = purge_plan(catalog, policy, T0 + timedelta(days=91))
    result = purge(catalog, plan, T0 + timedelta(days=91))
    assert result == {"calls": 2, "files_deleted": 6, "files_already_gone": 0, "errors": []}
    assert not any(f.exists() for f in files)
    found = catalog.get("1748743202.2")
    assert found is not None and found[0].purged_at is not None and {r.status for r in found[1]} == {"purged"}
    assert "1748743202.2" not in ids(catalog.search(SetFilter()))
    assert "1748743202.2" in ids(catalog.search(SetFilter(include_purged=True)))
    assert planned(91) == []  # purged calls are not planned again


def test_purge_never_deletes_outside_the_root(catalog: RecordingCatalog, sessions: sessionmaker[Session],
                                              tmp_path: Path) -> None:
    from recordings.index import Recording

    legs = record_call(catalog, 1)
    outside = tmp_path / "precious.wav"
    write_wav(outside, 0.1)
    with sessions.begin() as session:
        row = session.get(Recording, legs["mix"])
        assert row is not None
        row.path = "../precious.wav"
    plan = purge_plan(catalog, RetentionPolicy.parse("default=0"), T0 + timedelta(days=1))
    result = purge(catalog, plan, T0 + timedelta(days=1))
    assert outside.exists()
    assert result["files_deleted"] == 2 and len(result["errors"]) == 1
    found = catalog.get("1748743201.1")
    assert found is not None and found[0].purged_at is None  # not forgotten: the row stays for a human


def test_reconcile_reports_orphans_missing_files_and_symlinks(catalog: RecordingCatalog, tmp_path: Path) -> None:
    legs = record_call(catalog, 1)
    record_call(catalog, 2, finished=False)  # live: its files may not exist yet
    assert reconcile(catalog) == {"files_without_rows": [], "rows_without_files": []}
    root = catalog.index.root
    orphan = root / "hotline/2025/06/01/999.9-999.9-mix.wav"
    write_wav(orphan, 0.5)
    (root / "hotline/2025/06/01/link-mix.wav").symlink_to(tmp_path / "nowhere.wav")
    rx = catalog.leg(legs["rx"])
    assert rx is not None
    catalog.index.resolve(rx.path).unlink()
    report = reconcile(catalog)
    assert report == {"files_without_rows": ["hotline/2025/06/01/999.9-999.9-mix.wav",
                                             "hotline/2025/06/01/link-mix.wav"],
                      "rows_without_files": [rx.path]}


def test_disk_watermark(tmp_path: Path) -> None:
    free = disk_state(tmp_path / "not" / "yet" / "created", 0)
    assert free.free_bytes > 0 and not free.low
    low = disk_state(tmp_path, free.total_bytes + 1)
    assert low.low and low.to_dict()["low"] is True


def test_cli_commands(catalog: RecordingCatalog, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    from hotline.cli import main

    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HOTLINE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("HOTLINE_RECORDINGS_DIR", str(catalog.index.root))
    monkeypatch.delenv("HOTLINE_CONFIG", raising=False)
    legs = record_call(catalog, 1, start=datetime.now(UTC) - timedelta(days=100))
    record_call(catalog, 2, start=datetime.now(UTC))

    def run(*argv: str) -> tuple[int, str]:
        code = main(["recordings", *argv])
        return code, capsys.readouterr().out

    code, out = run("list", "--agent", "1001")
    assert code == 0 and len(json.loads(out)) == 2
    code, out = run("mark", str(legs["mix"]), "--case", "praise", "--note", "clear and kind")
    assert code == 0 and json.loads(out)["case"]["kind"] == "praise"
    assert main(["recordings", "mark", str(legs["mix"]), "--case", "praise"]) == 2  # no note
    assert "note" in capsys.readouterr().err
    code, out = run("library")
    assert [s["linkedid"] for s in json.loads(out)] == ["1748743201.1"]
    code, out = run("show", str(legs["rx"]))
    assert json.loads(out)["linkedid"] == "1748743201.1" and json.loads(out)["access"] == []
    assert main(["recordings", "show", "424242"]) == 2
    capsys.readouterr()
    # The case library keeps the 100-day-old call; without the case it would go (default 90 days).
    code, out = run("purge", "--dry-run")
    assert code == 0 and json.loads(out)["would_purge"] == []
    run("mark", str(legs["mix"]), "--case", "none")
    code, out = run("purge", "--dry-run")
    assert [i["linkedid"] for i in json.loads(out)["would_purge"]] == ["1748743201.1"]
    path = catalog.index.resolve(catalog.leg(legs["mix"]).path)  # type: ignore[union-attr]
    assert path.exists()
    code, out = run("hold", str(legs["mix"]), "--reason", "audit")
    code, out = run("purge", "--dry-run")
    assert json.loads(out)["would_purge"] == []
    run("hold", str(legs["mix"]), "--release")
    code, out = run("purge")
    assert code == 0 and json.loads(out)["files_deleted"] == 3 and not path.exists()
    code, out = run("reconcile")
    assert code == 0 and json.loads(out) == {"files_without_rows": [], "rows_without_files": []}
    os.remove(catalog.index.resolve(catalog.leg(legs["mix"] + 3).path))  # type: ignore[union-attr]
    code, out = run("reconcile")
    assert code == 1 and len(json.loads(out)["rows_without_files"]) == 1
