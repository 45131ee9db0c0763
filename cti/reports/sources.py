"""Sans-I/O parsers for Asterisk's queue_log file and the hotline's cdr_custom CSV.

Bytes in, typed rows out; nothing here opens files or databases. Both files are
appended to while Asterisk runs, so a read may end in the middle of a line:
`complete_lines` hands back only whole lines plus the unconsumed tail, and the
importer parses the tail on a later import once Asterisk has finished it.

queue_log (Asterisk 22, `queue_log_to_file = yes`): one event per line,
``epoch|callid|queue|agent|event|data1|data2|...``, epoch in whole seconds, agent
``NONE`` when no member is concerned (``log_membername_as_agent`` gives the member
name, e.g. ``1001``).

CDR: the columns the dialplan compiler writes into cdr_custom.conf (its
`CDR_CUSTOM_FIELDS`; a unit test keeps `CDR_COLUMNS` equal to it, since `cti`
may not import `dialplans`). Every field is CSV-quoted by Asterisk's CSV_QUOTE.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

#: Column order of the hotline CDR file (cdr_custom "hotline-cdr.csv").
CDR_COLUMNS = (
    "linkedid", "uniqueid", "sequence", "channel", "dstchannel", "src", "dst", "dcontext", "clid",
    "lastapp", "lastdata", "start", "answer", "end", "duration", "billsec", "disposition",
    "userfield", "accountcode",
)
CDR_DISPOSITIONS = frozenset({"ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION"})
#: A line longer than this is garbage, not an Asterisk log line.
MAX_LINE_BYTES = 64 * 1024


class SourceError(ValueError):
    """A line Asterisk could not have written; says which line and why."""

    def __init__(self, line_no: int, reason: str, line: str) -> None:
        self.line_no = line_no
        self.reason = reason
        self.line = line[:200]
        super().__init__(f"line {line_no}: {reason}: {self.line!r}")


@dataclass(frozen=True, slots=True)
class QueueLogEntry:
    """One queue_log event exactly as Asterisk logged it."""

    time: int
    callid: str
    queue: str
    agent: str
    event: str
    data: tuple[str, ...]

    def field(self, index: int) -> str:
        """data<index+1>, '' when Asterisk left it out."""
        return self.data[index] if index < len(self.data) else ""

    def to_line(self) -> str:
        return "|".join((str(self.time), self.callid, self.queue, self.agent, self.event, *self.data))


@dataclass(frozen=True, slots=True)
class CdrRow:
    """One CDR, typed. `answer` is None for calls never answered (Asterisk writes 0)."""

    linkedid: str
    uniqueid: str
    sequence: int
    channel: str
    dstchannel: str
    src: str
    dst: str
    dcontext: str
    clid: str
    lastapp: str
    lastdata: str
    start: float
    answer: float | None
    end: float
    duration: float
    billsec: float
    disposition: str
    userfield: str
    accountcode: str


def complete_lines(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Split at newlines: ([(line_no, line)], bytes consumed). The unfinished tail is left over."""
    end = data.rfind(b"\n")
    if end < 0:
        return [], 0
    lines = data[:end].split(b"\n")
    return [(i + 1, line.rstrip(b"\r")) for i, line in enumerate(lines)], end + 1


def _text(raw: bytes, line_no: int) -> str:
    if len(raw) > MAX_LINE_BYTES:
        raise SourceError(line_no, f"line longer than {MAX_LINE_BYTES} bytes", raw[:200].decode("utf-8", "replace"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Caller-ID names are not guaranteed UTF-8; keep the line, mark the bad bytes.
        return raw.decode("utf-8", "replace")


def parse_queue_log_line(raw: bytes | str, line_no: int = 1) -> QueueLogEntry:
    """One queue_log line -> entry; SourceError when it cannot be an Asterisk line."""
    line = _text(raw, line_no) if isinstance(raw, bytes) else raw
    parts = line.split("|")
    if len(parts) < 5:
        raise SourceError(line_no, "fewer than 5 '|'-separated fields", line)
    stamp, callid, queue, agent, event, *data = parts
    if not stamp.isdigit():
        raise SourceError(line_no, "the time is not epoch seconds", line)
    if not event or not event.replace("_", "").isalnum() or event.upper() != event:
        raise SourceError(line_no, f"not a queue_log event name: {event[:40]!r}", line)
    return QueueLogEntry(int(stamp), callid, queue, agent, event, tuple(data))


def _epoch(value: str, line_no: int, name: str, line: str) -> float:
    try:
        number = float(value) if value else 0.0
    except ValueError:
        raise SourceError(line_no, f"{name} is not a number: {value[:40]!r}", line) from None
    if number < 0:
        raise SourceError(line_no, f"{name} is negative", line)
    return number


def parse_cdr_line(raw: bytes | str, line_no: int = 1) -> CdrRow:
    """One CDR CSV line (our column order) -> CdrRow; SourceError when malformed."""
    line = _text(raw, line_no) if isinstance(raw, bytes) else raw
    try:
        rows = list(csv.reader(io.StringIO(line), strict=True))
    except csv.Error as exc:
        raise SourceError(line_no, f"bad CSV: {exc}", line) from None
    if len(rows) != 1 or len(rows[0]) != len(CDR_COLUMNS):
        got = len(rows[0]) if len(rows) == 1 else 0
        raise SourceError(line_no, f"expected {len(CDR_COLUMNS)} CSV fields, got {got}", line)
    f = dict(zip(CDR_COLUMNS, rows[0], strict=True))
    if not f["uniqueid"] or not f["linkedid"]:
        raise SourceError(line_no, "uniqueid and linkedid are required", line)
    if f["disposition"] not in CDR_DISPOSITIONS:
        raise SourceError(line_no, f"unknown disposition {f['disposition'][:20]!r}", line)
    try:
        sequence = int(f["sequence"] or "0")
    except ValueError:
        raise SourceError(line_no, "sequence is not a number", line) from None
    answer = _epoch(f["answer"], line_no, "answer", line)
    return CdrRow(
        linkedid=f["linkedid"], uniqueid=f["uniqueid"], sequence=sequence, channel=f["channel"],
        dstchannel=f["dstchannel"], src=f["src"], dst=f["dst"], dcontext=f["dcontext"], clid=f["clid"],
        lastapp=f["lastapp"], lastdata=f["lastdata"], start=_epoch(f["start"], line_no, "start", line),
        answer=answer or None, end=_epoch(f["end"], line_no, "end", line),
        duration=_epoch(f["duration"], line_no, "duration", line),
        billsec=_epoch(f["billsec"], line_no, "billsec", line), disposition=f["disposition"],
        userfield=f["userfield"], accountcode=f["accountcode"],
    )


def channel_peer(channel: str) -> str:
    """'PJSIP/1001-0000000a' -> '1001' (the endpoint); '' for anything else."""
    tech, _, rest = channel.partition("/")
    if not tech or not rest:
        return ""
    name, _, suffix = rest.rpartition("-")
    return name if name and suffix else rest


__all__ = [
    "CDR_COLUMNS", "CdrRow", "QueueLogEntry", "SourceError", "channel_peer", "complete_lines",
    "parse_cdr_line", "parse_queue_log_line",
]
