"""RecordingIndex on SQLite: idempotent start/finalize, file facts from disk, path confinement."""

from __future__ import annotations

import os
import struct
import wave
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cti.db import create_schema, make_engine
from recordings.index import Recording, RecordingIndex

T0 = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
LINKEDID = "1748743200.17"
UNIQUEID = "1748743200.17"
BASE = f"hotline/2025/06/01/{LINKEDID}-{UNIQUEID}"
LEGS = {leg: f"{BASE}-{leg}.wav" for leg in ("mix", "rx", "tx")}


def write_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    """A silent 16-bit mono WAV, the format MixMonitor writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\x00\x00" * int(seconds * rate))


def unfinalise_header(path: Path) -> None:
    """What Asterisk leaves on disk until it closes the file: zero RIFF and data sizes."""
    data = bytearray(path.read_bytes())
    assert data[36:40] == b"data"
    data[4:8] = struct.pack("<I", 0)
    data[40:44] = struct.pack("<I", 0)
    path.write_bytes(bytes(data))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    create_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "monitor"
    path.mkdir()
    return path


@pytest.fixture
def index(sessions: sessionmaker[Session], root: Path) -> RecordingIndex:
    return RecordingIndex(sessions, root)


def test_start_indexes_each_leg_and_is_idempotent(index: RecordingIndex) -> None:
    rows = index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs=LEGS, started_at=T0)
    assert [(r.leg, r.path, r.status, r.format) for r in rows] == [
        (leg, path, "recording", "wav") for leg, path in LEGS.items()
    ]
    assert all(r.started_at == T0 and r.started_at.tzinfo is not None for r in rows)

    again = index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs=LEGS, started_at=T0 + timedelta(seconds=5))
    assert [r.id for r in again] == [r.id for r in rows]
    assert all(r.started_at == T0 for r in again)  # the first start wins
    assert len(index.for_call(LINKEDID)) == 3


def test_start_refuses_a_different_path_for_an_indexed_leg(index: RecordingIndex) -> None:
    index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs={"mix": LEGS["mix"]}, started_at=T0)
    with pytest.raises(ValueError, match="already indexed"):
        index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs={"mix": "other/place.wav"}, started_at=T0)
    assert [r.path for r in index.for_call(LINKEDID)] == [LEGS["mix"]]


@pytest.mark.parametrize(
    ("legs", "started_at", "message"),
    [
        ({"both": "a.wav"}, T0, "unknown leg"),
        ({}, T0, "no legs"),
        ({"mix": "/var/spool/asterisk/monitor/a.wav"}, T0, "relative"),
        ({"mix": "../a.wav"}, T0, "relative"),
        ({"mix": "a/../../a.wav"}, T0, "relative"),
        ({"mix": ""}, T0, "path"),
        ({"mix": "a.wav"}, datetime(2025, 6, 1, 2, 0), "timezone-aware"),
    ],
)
def test_start_validates_its_input(
    index: RecordingIndex, legs: dict[str, str], started_at: datetime, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs=legs, started_at=started_at)
    assert index.for_call(LINKEDID) == []


def test_start_stores_a_normalised_posix_path(index: RecordingIndex) -> None:
    [row] = index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs={"rx": "./hotline//x/./a-rx.wav"}, started_at=T0)
    assert row.path == "hotline/x/a-rx.wav"


def test_finalize_reads_size_and_duration_and_marks_missing_legs(index: RecordingIndex, root: Path) -> None:
    index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs=LEGS, started_at=T0)
    write_wav(root / LEGS["mix"], 2.5)
    write_wav(root / LEGS["rx"], 2.5)
    stopped = T0 + timedelta(seconds=3)

    rows = {r.leg: r for r in index.finalize(linkedid=LINKEDID, stopped_at=stopped, queue="repair", agent="1002",
                                             customer_id="C-000123")}
    assert rows["mix"].status == "complete"
    assert rows["mix"].size_bytes == 44 + 2.5 * 8000 * 2
    assert rows["mix"].duration_seconds == 2.5
    assert rows["tx"].status == "missing"
    assert (rows["tx"].size_bytes, rows["tx"].duration_seconds) == (None, None)
    assert all(r.stopped_at == stopped for r in rows.values())
    assert {(r.queue, r.agent, r.customer_id) for r in rows.values()} == {("repair", "1002", "C-000123")}

    # The tx file turns up late: a second finalize reconciles with the disk, keeps the first stop time.
    write_wav(root / LEGS["tx"], 1.0)
    rows2 = {r.leg: r for r in index.finalize(linkedid=LINKEDID, stopped_at=stopped + timedelta(minutes=1))}
    assert rows2["tx"].status == "complete"
    assert rows2["tx"].duration_seconds == 1.0
    assert all(r.stopped_at == stopped for r in rows2.values())
    assert rows2["mix"].queue == "repair"  # not given again: kept

    stored = {r.leg: r for r in index.for_call(LINKEDID)}
    assert {leg: r.status for leg, r in stored.items()} == {"mix": "complete", "rx": "complete", "tx": "complete"}


def test_finalize_tolerates_a_header_asterisk_has_not_finalised(index: RecordingIndex, root: Path) -> None:
    index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs={"mix": LEGS["mix"]}, started_at=T0)
    write_wav(root / LEGS["mix"], 4.0)
    unfinalise_header(root / LEGS["mix"])
    with pytest.raises(wave.Error):  # why the index does not rely on the wave module
        wave.open(str(root / LEGS["mix"]), "rb")
    [row] = index.finalize(linkedid=LINKEDID, stopped_at=T0 + timedelta(seconds=4))
    assert (row.status, row.duration_seconds, row.size_bytes) == ("complete", 4.0, 44 + 64000)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00", b"this is not audio at all" * 10])
def test_finalize_marks_unreadable_files_failed(index: RecordingIndex, root: Path, content: bytes) -> None:
    index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs={"mix": LEGS["mix"]}, started_at=T0)
    (root / LEGS["mix"]).parent.mkdir(parents=True)
    (root / LEGS["mix"]).write_bytes(content)
    [row] = index.finalize(linkedid=LINKEDID, stopped_at=T0)
    assert (row.status, row.size_bytes, row.duration_seconds) == ("failed", len(content), None)


def test_finalize_marks_a_directory_in_place_of_the_file_failed(index: RecordingIndex, root: Path) -> None:
    index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs={"mix": LEGS["mix"]}, started_at=T0)
    (root / LEGS["mix"]).mkdir(parents=True)
    [row] = index.finalize(linkedid=LINKEDID, stopped_at=T0)
    assert row.status == "failed"


def test_finalize_refuses_to_follow_a_symlink_planted_after_start(
    index: RecordingIndex, root: Path, tmp_path: Path
) -> None:
    index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs={"mix": LEGS["mix"]}, started_at=T0)
    outside = tmp_path / "outside"
    write_wav(outside / Path(LEGS["mix"]).name, 1.0)
    day_dir = (root / LEGS["mix"]).parent
    day_dir.parent.mkdir(parents=True)
    day_dir.symlink_to(outside, target_is_directory=True)
    [row] = index.finalize(linkedid=LINKEDID, stopped_at=T0)
    assert (row.status, row.size_bytes) == ("failed", None)


def test_finalize_of_an_unknown_call_is_empty(index: RecordingIndex) -> None:
    assert index.finalize(linkedid="nope", stopped_at=T0) == []


def test_finalize_refuses_a_naive_stop_time(index: RecordingIndex) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        index.finalize(linkedid=LINKEDID, stopped_at=datetime(2025, 1, 1))


def test_for_call_is_per_call_in_index_order_and_rows_outlive_the_session(index: RecordingIndex) -> None:
    index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs=LEGS, started_at=T0)
    index.start(linkedid="other", uniqueid="other", legs={"mix": "hotline/other-mix.wav"}, started_at=T0)
    # A transferred call: a second channel of the same call records too.
    index.start(linkedid=LINKEDID, uniqueid="1748743200.20", legs={"mix": f"{BASE}-b-mix.wav"}, started_at=T0)
    rows = index.for_call(LINKEDID)
    assert [(r.uniqueid, r.leg) for r in rows] == [
        (UNIQUEID, "mix"), (UNIQUEID, "rx"), (UNIQUEID, "tx"), ("1748743200.20", "mix")
    ]
    assert rows[0].path == LEGS["mix"]  # attributes still load: nothing expired or lazy


def test_record_speech(index: RecordingIndex) -> None:
    [row] = index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs={"rx": LEGS["rx"]}, started_at=T0)
    assert row.has_speech is None
    updated = index.record_speech(row.id, has_speech=True, speech_seconds=12.34)
    assert updated is not None and updated.has_speech is True
    [stored] = index.for_call(LINKEDID)
    assert (stored.has_speech, stored.speech_seconds) == (True, 12.34)
    assert index.record_speech(999999, has_speech=False, speech_seconds=0.0) is None


def test_rows_are_detached_even_with_an_expiring_sessionmaker(engine: Engine, root: Path) -> None:
    index = RecordingIndex(sessionmaker(engine), root)  # expire_on_commit left at True
    [row] = index.start(linkedid=LINKEDID, uniqueid=UNIQUEID, legs={"mix": LEGS["mix"]}, started_at=T0)
    assert row.path == LEGS["mix"]


# -- resolve(): the only way from an index path to a file -------------------------------------


@pytest.mark.parametrize(
    "relative",
    [
        "../etc/passwd",
        "../../../../../../etc/shadow",
        "hotline/../../outside.wav",
        "/etc/passwd",
        "",
        ".",
        "hotline/..",
        "a\x00b.wav",
    ],
)
def test_resolve_refuses_paths_outside_the_root(index: RecordingIndex, relative: str) -> None:
    with pytest.raises(ValueError):
        index.resolve(relative)


def test_resolve_refuses_a_root_sibling_with_the_same_prefix(index: RecordingIndex, root: Path) -> None:
    # "/x/monitor-evil" starts with "/x/monitor" as a string but is not inside it.
    (root.parent / "monitor-evil").mkdir()
    with pytest.raises(ValueError):
        index.resolve("../monitor-evil/a.wav")


def test_resolve_refuses_symlink_escapes(index: RecordingIndex, root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not a recording")
    (root / "link-to-file.wav").symlink_to(secret)
    (root / "link-to-dir").symlink_to(tmp_path, target_is_directory=True)
    (root / "absolute-link").symlink_to("/etc")
    for relative in ("link-to-file.wav", "link-to-dir/secret.txt", "absolute-link/passwd"):
        with pytest.raises(ValueError, match="escapes"):
            index.resolve(relative)


def test_resolve_accepts_paths_inside_the_root(index: RecordingIndex, root: Path) -> None:
    real_root = Path(os.path.realpath(root))
    assert index.resolve(LEGS["mix"]) == real_root / LEGS["mix"]
    assert index.resolve("hotline/x/../a.wav") == real_root / "hotline" / "a.wav"  # lexically odd, still inside
    write_wav(root / "hotline" / "real.wav", 0.1)
    (root / "alias.wav").symlink_to(root / "hotline" / "real.wav")  # a link that stays inside is fine
    assert index.resolve("alias.wav") == real_root / "hotline" / "real.wav"


def test_resolve_works_when_the_root_itself_is_a_symlink(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    real = tmp_path / "disk" / "monitor"
    real.mkdir(parents=True)
    link = tmp_path / "monitor-link"
    link.symlink_to(real, target_is_directory=True)
    index = RecordingIndex(sessions, link)
    assert index.resolve("a/b.wav") == Path(os.path.realpath(real)) / "a" / "b.wav"
    with pytest.raises(ValueError):
        index.resolve("../../disk/other.wav")


def test_recording_table_is_on_the_shared_metadata() -> None:
    from cti.db import Base

    assert Base.metadata.tables["recordings"] is Recording.__table__


def test_an_agent_leg_keeps_its_own_agent_when_the_call_is_finalised(index: RecordingIndex, root: Path) -> None:
    t0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    index.start(linkedid="L1", uniqueid="U1", legs={"rx": "hotline/L1-U1-rx.wav"}, started_at=t0)
    for uid, agent in (("U2", "1001"), ("U3", "1002")):
        index.start(linkedid="L1", uniqueid=uid, legs={"agent": f"hotline/L1-U1-agent-{agent}-{uid}.wav"},
                    started_at=t0, agent=agent)
        write_wav(root / f"hotline/L1-U1-agent-{agent}-{uid}.wav", 1.0)
    rows = index.finalize(linkedid="L1", stopped_at=t0 + timedelta(seconds=5), agent="1001")
    assert [(r.leg, r.uniqueid, r.agent) for r in rows] == [
        ("rx", "U1", "1001"), ("agent", "U2", "1001"), ("agent", "U3", "1002")]
    assert [r.status for r in rows] == ["missing", "complete", "complete"]
