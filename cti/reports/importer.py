"""Import queue_log and CDR files into the raw report tables, idempotently.

The whole file is read each time (Asterisk appends; rotation starts a new file):
every complete line gets a key = sha256(line) + its occurrence number among equal
lines of that file, and only keys not yet stored are inserted. So importing the
same file twice, or a grown copy of it, adds exactly the new lines. Lines that
cannot be Asterisk's are reported with their number and reason and skipped; the
good lines around them are imported. An unfinished last line waits for the next
import.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from cti.reports.models import CdrRecord, QueueLogRow
from cti.reports.sources import QueueLogEntry, SourceError, complete_lines, parse_cdr_line, parse_queue_log_line

#: Where Asterisk writes them, relative to its log directory (astlogdir).
QUEUE_LOG_NAME = "queue_log"
CDR_FILE = "cdr-custom/hotline-cdr.csv"
_CHUNK = 500

T = TypeVar("T")


@dataclass
class ImportResult:
    """What one import did: new rows, rows already present, rejected lines."""

    source: str
    lines: int = 0
    added: int = 0
    already_imported: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    unfinished_tail_bytes: int = 0
    consumed_bytes: int = field(default=0, repr=False)
    line_count: int = field(default=0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["consumed_bytes"], out["line_count"]
        return out


def _keys(lines: Iterable[tuple[int, bytes]], seen: Counter[str]) -> list[tuple[int, bytes, str]]:
    """Key = hash of the line + how many equal lines came before it in the file (`seen`, updated)."""
    out = []
    for line_no, raw in lines:
        digest = hashlib.sha256(raw).hexdigest()[:56]
        out.append((line_no, raw, f"{digest}#{seen[digest]}"))
        seen[digest] += 1
    return out


def _import(sessions: sessionmaker[Session], data: bytes, source: str, table: Any,
            parse: Callable[[bytes, int], T], to_row: Callable[[T], dict[str, Any]],
            seen: Counter[str] | None = None, first_line: int = 1) -> ImportResult:
    lines, consumed = complete_lines(data)
    result = ImportResult(source=source, unfinished_tail_bytes=len(data) - consumed)
    parsed: list[tuple[str, dict[str, Any]]] = []
    numbered = ((n + first_line - 1, raw) for n, raw in lines if raw.strip())
    for line_no, raw, key in _keys(numbered, Counter() if seen is None else seen):
        result.lines += 1
        try:
            parsed.append((key, to_row(parse(raw, line_no))))
        except SourceError as exc:
            result.rejected.append({"line": exc.line_no, "reason": exc.reason, "text": exc.line})
    result.consumed_bytes = consumed
    result.line_count = len(lines)
    with sessions.begin() as session:
        for start in range(0, len(parsed), _CHUNK):
            chunk = parsed[start:start + _CHUNK]
            existing = set(session.scalars(select(table.key).where(table.key.in_([k for k, _ in chunk]))))
            new = [{**row, "key": key, "source": source[:255]} for key, row in chunk if key not in existing]
            result.already_imported += len(chunk) - len(new)
            if new:
                session.execute(insert(table), new)
                result.added += len(new)
    return result


def _queue_log_row(e: QueueLogEntry) -> dict[str, Any]:
    return {"time": e.time, "callid": e.callid[:64], "queue": e.queue[:64], "agent": e.agent[:128],
            "event": e.event[:32], "data": "|".join(e.data)}


def import_queue_log(sessions: sessionmaker[Session], data: bytes, source: str = "queue_log",
                     seen: Counter[str] | None = None, first_line: int = 1) -> ImportResult:
    """Import queue_log text; see the module docstring for the idempotency rule."""
    return _import(sessions, data, source, QueueLogRow, parse_queue_log_line, _queue_log_row, seen, first_line)


def import_cdr(sessions: sessionmaker[Session], data: bytes, source: str = "cdr",
               seen: Counter[str] | None = None, first_line: int = 1) -> ImportResult:
    """Import hotline CDR CSV text (cdr_custom, our column order)."""
    return _import(sessions, data, source, CdrRecord, parse_cdr_line, asdict, seen, first_line)


def import_log_dir(sessions: sessionmaker[Session], log_dir: Path) -> list[ImportResult]:
    """Import Asterisk's queue_log and the hotline CDR file from its log directory (missing files: skipped)."""
    results = []
    for name, importer in ((QUEUE_LOG_NAME, import_queue_log), (CDR_FILE, import_cdr)):
        path = log_dir / name
        if path.is_file():
            results.append(importer(sessions, path.read_bytes(), str(path)))
    return results


@dataclass
class _Followed:
    inode: int
    offset: int = 0
    lines: int = 0
    seen: Counter[str] = field(default_factory=Counter)


class LogFollower:
    """Import only what Asterisk appended since the last poll (same keys as a full import).

    Per file it keeps the inode, the bytes consumed and the equal-line counts; a new inode
    or a shorter file (rotation, truncation) starts that file from the beginning, which
    the keys make harmless. One poll at a time (a lock): concurrent report requests must
    not insert the same new lines twice.
    """

    def __init__(self, sessions: sessionmaker[Session], log_dir: Path) -> None:
        self.sessions = sessions
        self.log_dir = log_dir
        self._files: dict[str, _Followed] = {}
        self._lock = threading.Lock()

    def poll(self) -> list[ImportResult]:
        with self._lock:
            results = []
            for name, importer in ((QUEUE_LOG_NAME, import_queue_log), (CDR_FILE, import_cdr)):
                path = self.log_dir / name
                try:
                    with path.open("rb") as f:
                        stat = os.fstat(f.fileno())
                        state = self._files.get(name)
                        if state is None or state.inode != stat.st_ino or stat.st_size < state.offset:
                            state = self._files[name] = _Followed(stat.st_ino)
                        f.seek(state.offset)
                        data = f.read()
                except FileNotFoundError:
                    continue
                seen = Counter(state.seen)  # kept only if the import commits
                result = importer(self.sessions, data, str(path), seen, state.lines + 1)
                state.seen = seen
                state.offset += result.consumed_bytes
                state.lines += result.line_count
                results.append(result)
            return results


__all__ = ["CDR_FILE", "QUEUE_LOG_NAME", "ImportResult", "LogFollower", "import_cdr", "import_log_dir",
           "import_queue_log"]
