"""Raw report events as imported: queue_log lines and CDR rows, one row each.

Reports are computed from these rows (plus the tracker's `calls` table), never from
stored aggregates, so a changed rule recomputes every past number. Each row carries
an import key (hash of the raw line and its occurrence number in its file) with a
unique constraint: importing the same file again adds nothing.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cti.db import Base


class QueueLogRow(Base):
    """One queue_log event (see cti.reports.sources.QueueLogEntry)."""

    __tablename__ = "report_queue_log"
    __table_args__ = (Index("ix_report_queue_log_time", "time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    time: Mapped[int] = mapped_column(BigInteger)
    callid: Mapped[str] = mapped_column(String(64), index=True)
    queue: Mapped[str] = mapped_column(String(64))
    agent: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(32))
    #: data1|data2|... as logged.
    data: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(255), default="")


class CdrRecord(Base):
    """One CDR from the hotline's cdr_custom file (see cti.reports.sources.CdrRow)."""

    __tablename__ = "report_cdr"
    __table_args__ = (Index("ix_report_cdr_start", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    linkedid: Mapped[str] = mapped_column(String(64), index=True)
    uniqueid: Mapped[str] = mapped_column(String(64), index=True)
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    channel: Mapped[str] = mapped_column(String(255), default="")
    dstchannel: Mapped[str] = mapped_column(String(255), default="")
    src: Mapped[str] = mapped_column(String(128), default="")
    dst: Mapped[str] = mapped_column(String(128), default="")
    dcontext: Mapped[str] = mapped_column(String(128), default="")
    clid: Mapped[str] = mapped_column(String(255), default="")
    lastapp: Mapped[str] = mapped_column(String(64), default="")
    lastdata: Mapped[str] = mapped_column(Text, default="")
    start: Mapped[float] = mapped_column(Float)
    answer: Mapped[float | None] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    billsec: Mapped[float] = mapped_column(Float, default=0.0)
    disposition: Mapped[str] = mapped_column(String(16), default="")
    userfield: Mapped[str] = mapped_column(String(255), default="")
    accountcode: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(255), default="")


__all__ = ["CdrRecord", "QueueLogRow"]
