"""queue_log and CDR parsers on the lines a real sandbox Asterisk 22 wrote, and the
import into the raw tables: idempotent, growing files, unfinished lines, bad lines.

The fixtures were recorded by tests/integration/test_reports_real_calls.py
(HOTLINE_RECORD_FIXTURES=1): seven scripted calls, see that module's docstring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cti.db import create_schema, make_engine, session_factory
from cti.reports.facts import HOTLINE_CONTEXTS
from cti.reports.importer import LogFollower, import_cdr, import_log_dir, import_queue_log
from cti.reports.models import CdrRecord, QueueLogRow
from cti.reports.sources import (
    CDR_COLUMNS,
    SourceError,
    channel_peer,
    complete_lines,
    parse_cdr_line,
    parse_queue_log_line,
)
from dialplans import compiler

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reports"
QUEUE_LOG = (FIXTURES / "queue_log").read_bytes()
CDR = (FIXTURES / "hotline-cdr.csv").read_bytes()


def test_cdr_columns_match_the_compiled_cdr_custom_mapping() -> None:
    assert tuple(name for name, _ in compiler.CDR_CUSTOM_FIELDS) == CDR_COLUMNS
    assert HOTLINE_CONTEXTS == {compiler.HOTLINE_CONTEXT, compiler.ROUTE_CONTEXT, compiler.FAILSAFE_CONTEXT}
    for module in ("cdr_custom.so", "res_cdrel_custom.so", "func_cdr.so"):
        assert module in compiler.MODULES


def test_queue_log_fixture_parses_line_by_line() -> None:
    lines, consumed = complete_lines(QUEUE_LOG)
    assert consumed == len(QUEUE_LOG)
    entries = [parse_queue_log_line(raw, n) for n, raw in lines]
    assert entries[0].event == "QUEUESTART"
    connect = next(e for e in entries if e.event == "CONNECT" and e.queue == "slow")
    assert (connect.agent, connect.field(0)) == ("1002", "5")  # hold time 5 s: the agent let it ring
    timeout = next(e for e in entries if e.event == "EXITWITHTIMEOUT")
    assert (timeout.queue, timeout.data) == ("nobody", ("1", "1", "8"))
    enter = next(e for e in entries if e.event == "ENTERQUEUE" and e.queue == "fast")
    assert enter.field(1) == "13811110001"
    assert all(e.to_line().encode() == raw for e, (_, raw) in zip(entries, lines, strict=True))


def test_cdr_fixture_parses() -> None:
    lines, _ = complete_lines(CDR)
    rows = [parse_cdr_line(raw, n) for n, raw in lines]
    assert len(rows) == 7
    by_src = {r.src: r for r in rows}
    fast = by_src["13811110001"]
    assert fast.dcontext == "hotline-route" and fast.lastapp == "Queue" and channel_peer(fast.dstchannel) == "1001"
    assert fast.answer is not None and fast.end > fast.answer > fast.start
    assert fast.billsec == pytest.approx(fast.end - fast.answer, abs=0.01)
    ivr = by_src["13811110006"]
    assert (ivr.dcontext, ivr.lastapp) == ("hotline", "AGI")


def test_complete_lines_keeps_the_unfinished_tail() -> None:
    first_end = QUEUE_LOG.index(b"\n")
    lines, consumed = complete_lines(QUEUE_LOG[:first_end + 10])  # ten bytes into the second line
    assert len(lines) == 1 and consumed == first_end + 1
    assert complete_lines(b"no newline yet") == ([], 0)


@pytest.mark.parametrize(("line", "reason"), [
    (b"1795907139|x|q|NONE", "fewer than 5"),
    (b"yesterday|x|q|NONE|ENTERQUEUE|", "epoch seconds"),
    (b"1795907139|x|q|NONE|enter queue|", "not a queue_log event"),
    (b"\xff" * 70_000, "longer than"),
])
def test_bad_queue_log_lines_say_why(line: bytes, reason: str) -> None:
    with pytest.raises(SourceError, match=reason) as info:
        parse_queue_log_line(line, 7)
    assert info.value.line_no == 7


@pytest.mark.parametrize(("line", "reason"), [
    ('"a","b"', "expected 19 CSV fields"),
    (CDR.splitlines()[0].decode().replace('"ANSWERED"', '"MAYBE"'), "unknown disposition"),
    (CDR.splitlines()[0].decode().replace('"0.291401"', '"soon"'), "duration is not a number"),
    ('"a,"b"' + ',""' * 18, "CSV"),
])
def test_bad_cdr_lines_say_why(line: str, reason: str) -> None:
    with pytest.raises(SourceError, match=reason):
        parse_cdr_line(line, 3)


@pytest.fixture
def sessions() -> sessionmaker[Session]:
    engine = make_engine("sqlite://")
    create_schema(engine)
    return session_factory(engine)


def _count(sessions: sessionmaker[Session], table: Any) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def test_import_is_idempotent(sessions: sessionmaker[Session]) -> None:
    first = import_queue_log(sessions, QUEUE_LOG)
    assert (first.added, first.already_imported, first.rejected) == (16, 0, [])
    again = import_queue_log(sessions, QUEUE_LOG)
    assert (again.added, again.already_imported) == (0, 16)
    assert _count(sessions, QueueLogRow) == 16
    cdr = import_cdr(sessions, CDR)
    assert cdr.added == 7 and import_cdr(sessions, CDR).added == 0
    assert _count(sessions, CdrRecord) == 7


def test_growing_file_imports_only_new_lines_and_waits_for_unfinished_ones(sessions: sessionmaker[Session]) -> None:
    half = QUEUE_LOG.index(b"CONNECT") + 3  # in the middle of a line
    part = import_queue_log(sessions, QUEUE_LOG[:half])
    assert part.unfinished_tail_bytes > 0
    rest = import_queue_log(sessions, QUEUE_LOG)
    assert part.added + rest.added == 16 and rest.already_imported == part.added
    assert _count(sessions, QueueLogRow) == 16


def test_identical_lines_are_kept_as_separate_events(sessions: sessionmaker[Session]) -> None:
    line = b"1795907139|NONE|repair|1001|PAUSE|||lunch\n"
    assert import_queue_log(sessions, line * 2).added == 2
    assert import_queue_log(sessions, line * 3).added == 1


def test_bad_lines_are_reported_and_the_rest_imported(sessions: sessionmaker[Session]) -> None:
    broken = QUEUE_LOG.replace(b"|QUEUESTART|", b"|queue start|", 1) + b"garbage\n"
    result = import_queue_log(sessions, broken, "q")
    assert result.added == 15
    assert [(r["line"], r["reason"].split(":")[0]) for r in result.rejected] == [
        (1, "not a queue_log event name"), (17, "fewer than 5 '|'-separated fields")]


def test_import_log_dir(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    (tmp_path / "cdr-custom").mkdir()
    (tmp_path / "queue_log").write_bytes(QUEUE_LOG)
    (tmp_path / "cdr-custom" / "hotline-cdr.csv").write_bytes(CDR)
    results = import_log_dir(sessions, tmp_path)
    assert [(Path(r.source).name, r.added) for r in results] == [("queue_log", 16), ("hotline-cdr.csv", 7)]
    assert import_log_dir(sessions, tmp_path / "missing") == []


def test_log_follower_imports_appended_lines_once(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    log = tmp_path / "queue_log"
    follower = LogFollower(sessions, tmp_path)
    assert follower.poll() == []  # no files yet
    cut = QUEUE_LOG.index(b"CONNECT") + 3  # Asterisk is in the middle of writing a line
    log.write_bytes(QUEUE_LOG[:cut])
    (first,) = follower.poll()
    assert first.unfinished_tail_bytes > 0
    with log.open("ab") as f:
        f.write(QUEUE_LOG[cut:])
    (second,) = follower.poll()
    assert first.added + second.added == 16 and second.already_imported == 0
    (third,) = follower.poll()
    assert (third.lines, third.added) == (0, 0)  # nothing new, nothing re-read
    # Same keys as a full import: a full re-read adds nothing.
    assert import_queue_log(sessions, QUEUE_LOG).added == 0
    # Rotation: a new file (new inode) with old and new lines; only the new ones are added.
    extra = b"1795907200|1795907199.9|fast|NONE|ENTERQUEUE||13811110009|1\n"
    rotated = tmp_path / "queue_log.new"
    rotated.write_bytes(QUEUE_LOG + extra)
    rotated.replace(log)
    (fourth,) = follower.poll()
    assert (fourth.added, fourth.already_imported) == (1, 16)
    assert _count(sessions, QueueLogRow) == 17
