"""The recording index: the system of record for every recorded leg of every call.

A row per leg is created when recording starts (the dialplan's HOTLINE_REC channel
variable seen on AMI) and finalised when the call ends, from what is on disk: Asterisk
22 sends no MixMonitorStop on a plain hangup, so the hangup finalises. Both steps are
idempotent because AMI events can be replayed after a reconnect.

Legs (MixMonitor on the caller's inbound channel, DESIGN.md section 5):

* ``mix`` -- both directions mixed, the file people listen to;
* ``rx``  -- MixMonitor option ``r``: audio *received from* the channel, i.e. the
  caller's own voice;
* ``tx``  -- MixMonitor option ``t``: audio *transmitted to* the channel, i.e. what
  the caller hears: prompts, music on hold, the agent's voice.
* ``message`` -- a message the caller left at the IVR's voicemail node (Record(), not
  MixMonitor): indexed when the call ends, only when the file is there.
* ``agent`` -- one per answering agent: MixMonitor ``r`` on the *agent's* channel
  (`<base>-agent-<ext>-<agent uniqueid>.wav`), the agent's own voice. Its row carries
  the agent channel's Uniqueid and that agent, so a transferred call has one per agent.

Keeping rx and tx apart is what lets us measure talk, silence, dead air and overtalk
per party. Paths are stored relative to the recordings root and turned into files
only through `RecordingIndex.resolve`, which refuses anything outside the root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath

from sqlalchemy import BigInteger, Boolean, Float, Integer, String, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from cti.db import Base, UTCDateTime
from recordings.vad import read_wav_info

LEG_MIX = "mix"
LEG_RX = "rx"  # received from the caller's channel: the caller's voice
LEG_TX = "tx"  # transmitted to the caller's channel: prompts and the agent's voice
LEGS = (LEG_MIX, LEG_RX, LEG_TX)
#: A message the caller left (the IVR's voicemail node records `<base>-message.wav` with
#: Record()): indexed when the call ends, only if the caller left one.
LEG_MESSAGE = "message"
#: An answering agent's own voice (MixMonitor on the agent's channel), one row per agent channel.
LEG_AGENT = "agent"
INDEXED_LEGS = (*LEGS, LEG_MESSAGE, LEG_AGENT)

STATUS_RECORDING = "recording"
STATUS_COMPLETE = "complete"
STATUS_MISSING = "missing"  # indexed, but no file on disk when the call ended
STATUS_FAILED = "failed"  # a file is there but is not a usable WAV, or is not a regular file


class Recording(Base):
    """One recorded leg of one channel of a call."""

    __tablename__ = "recordings"
    __table_args__ = (UniqueConstraint("linkedid", "uniqueid", "leg", name="uq_recordings_call_channel_leg"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    linkedid: Mapped[str] = mapped_column(String(64), index=True)
    uniqueid: Mapped[str] = mapped_column(String(64))
    leg: Mapped[str] = mapped_column(String(8))
    #: POSIX path relative to the recordings root; never absolute, never "..".
    path: Mapped[str] = mapped_column(String(512))
    format: Mapped[str] = mapped_column(String(8), default="wav", server_default="wav")
    status: Mapped[str] = mapped_column(String(16), default=STATUS_RECORDING, server_default=STATUS_RECORDING)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    queue: Mapped[str | None] = mapped_column(String(64))
    agent: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(64))
    #: Filled by VAD analysis after the call; None means not analysed (yet).
    has_speech: Mapped[bool | None] = mapped_column(Boolean)
    speech_seconds: Mapped[float | None] = mapped_column(Float)

    def __repr__(self) -> str:
        return f"Recording(id={self.id!r}, linkedid={self.linkedid!r}, leg={self.leg!r}, status={self.status!r})"


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")


def clean_relative_path(relative: str) -> str:
    """Normalise an index path; refuse absolute paths, '..', NUL and empty names.

    This is the lexical check; `RecordingIndex.resolve` adds the symlink check.
    """
    if not relative or "\x00" in relative or "\\" in relative:
        raise ValueError(f"not a usable recording path: {relative!r}")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or pure == PurePosixPath("."):
        raise ValueError(f"recording path must be relative to the recordings root: {relative!r}")
    return pure.as_posix()


class RecordingIndex:
    """Index rows for recorded legs, reconciled with the files under `root`.

    Blocking (database and disk): call it from a worker thread, not the event loop.
    """

    def __init__(self, sessions: sessionmaker[Session], root: Path) -> None:
        self.sessions = sessions
        self.root = Path(root)

    def _session(self) -> Session:
        # Rows are handed back to callers after the session closes, so they must not expire.
        return self.sessions(expire_on_commit=False)

    def resolve(self, relative: str) -> Path:
        """The file for an indexed path; ValueError for anything that lands outside the root.

        Symlinks are followed before the check, so a link inside the root that points
        elsewhere is refused too. (A link swapped in after this check is not caught:
        the recordings root must not be writable by untrusted users.)
        """
        if not relative or "\x00" in relative or os.path.isabs(relative):
            raise ValueError(f"not a relative recording path: {relative!r}")
        root = Path(os.path.realpath(self.root))
        path = Path(os.path.realpath(root / relative))
        if path == root or not path.is_relative_to(root):
            raise ValueError(f"recording path escapes the recordings root: {relative!r}")
        return path

    def start(
        self, *, linkedid: str, uniqueid: str, legs: Mapping[str, str], started_at: datetime,
        agent: str | None = None,
    ) -> list[Recording]:
        """Index the legs of a recording that has just started (leg -> path relative to root).

        `agent`: whose leg it is (agent legs); kept by `finalize`, which names the call's agent.

        Idempotent: a repeated start returns the existing rows unchanged. The same leg
        with a different path is a contradiction and raises ValueError.
        """
        if not linkedid or not uniqueid:
            raise ValueError("linkedid and uniqueid are required")
        if not legs:
            raise ValueError("no legs to index")
        _require_aware("started_at", started_at)
        wanted: dict[str, str] = {}
        for leg, relative in legs.items():
            if leg not in INDEXED_LEGS:
                raise ValueError(f"unknown leg {leg!r}; expected one of {INDEXED_LEGS}")
            wanted[leg] = clean_relative_path(relative)
            self.resolve(wanted[leg])

        rows: list[Recording] = []
        with self._session() as session, session.begin():
            for leg, relative in wanted.items():
                row = self._find(session, linkedid, uniqueid, leg)
                if row is None:
                    row = Recording(
                        linkedid=linkedid, uniqueid=uniqueid, leg=leg, path=relative, format="wav",
                        status=STATUS_RECORDING, started_at=started_at, agent=agent,
                    )
                    try:
                        with session.begin_nested():
                            session.add(row)
                    except IntegrityError:  # a concurrent start of the same leg won the race
                        row = self._find(session, linkedid, uniqueid, leg)
                        if row is None:
                            raise
                if row.path != relative:
                    raise ValueError(
                        f"{linkedid}/{uniqueid} leg {leg} is already indexed at {row.path!r}, not {relative!r}"
                    )
                rows.append(row)
        return rows

    def finalize(
        self,
        *,
        linkedid: str,
        stopped_at: datetime,
        queue: str | None = None,
        agent: str | None = None,
        customer_id: str | None = None,
    ) -> list[Recording]:
        """Stat every indexed leg of the call: size, duration, status complete / missing / failed.

        Idempotent: the first stop time is kept, the file facts are re-read each time
        (a header Asterisk finalised late, a file that turned up). `queue`, `agent` and
        `customer_id` are written when given, so recordings can be searched by them.
        """
        _require_aware("stopped_at", stopped_at)
        with self._session() as session, session.begin():
            rows = list(session.scalars(
                select(Recording).where(Recording.linkedid == linkedid).order_by(Recording.id)
            ))
            for row in rows:
                if row.stopped_at is None:
                    row.stopped_at = stopped_at
                for name, value in (("queue", queue), ("agent", agent), ("customer_id", customer_id)):
                    if name == "agent" and row.leg == LEG_AGENT and row.agent:
                        continue  # an agent leg belongs to the agent who spoke on it
                    if value is not None:
                        setattr(row, name, value)
                self._stat(row)
        return rows

    def _stat(self, row: Recording) -> None:
        row.size_bytes = None
        row.duration_seconds = None
        try:
            path = self.resolve(row.path)
        except ValueError:
            row.status = STATUS_FAILED
            return
        try:
            st = path.stat()
        except FileNotFoundError:
            row.status = STATUS_MISSING
            return
        except OSError:
            row.status = STATUS_FAILED
            return
        if not stat.S_ISREG(st.st_mode):
            row.status = STATUS_FAILED
            return
        row.size_bytes = st.st_size
        try:
            row.duration_seconds = round(read_wav_info(path).duration, 3)
        except (ValueError, OSError):
            row.status = STATUS_FAILED
            return
        row.status = STATUS_COMPLETE

    def record_speech(self, recording_id: int, *, has_speech: bool, speech_seconds: float) -> Recording | None:
        """Store the VAD outcome for one leg; None if the row is gone."""
        with self._session() as session, session.begin():
            row = session.get(Recording, recording_id)
            if row is not None:
                row.has_speech = has_speech
                row.speech_seconds = speech_seconds
            return row

    def for_call(self, linkedid: str) -> list[Recording]:
        """All indexed legs of a call, in the order they were indexed."""
        with self._session() as session:
            return list(session.scalars(
                select(Recording).where(Recording.linkedid == linkedid).order_by(Recording.id)
            ))

    @staticmethod
    def _find(session: Session, linkedid: str, uniqueid: str, leg: str) -> Recording | None:
        return session.scalar(select(Recording).where(
            Recording.linkedid == linkedid, Recording.uniqueid == uniqueid, Recording.leg == leg
        ))
