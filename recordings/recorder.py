"""The recording component of the running service: index lifecycle, analysis pool, disk guard.

Fed synchronously from the AMI reader (`on_ami_event`, `on_call_ended`) and never
blocking it: index writes go through one ordered queue drained by a worker thread
(start before stop before finalise, as on the wire), and webrtcvad analysis runs in
a `ProcessPoolExecutor` (CPU-bound, outside the GIL and off the event loop), so a
long recording can never delay a call. A free-disk watermark is checked
periodically and at every recording start; crossing it logs a warning and calls
`on_disk_alert`, before Asterisk runs out of space and recording fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cti.ami.events import Event
from recordings.analysis import AgentLegJob, AnalysisJob, Timeline, analyze_call
from recordings.catalog import RecordingCatalog
from recordings.index import LEG_AGENT, LEG_MESSAGE, LEGS, STATUS_COMPLETE, RecordingIndex
from recordings.lifecycle import RecordingFact, RecordingTracker
from recordings.retention import DiskState, RetentionPolicy, disk_state

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecorderConfig:
    dead_air_seconds: float = 10.0
    min_free_mb: int = 2048
    retention: str = "default=90"
    analysis_workers: int = 1
    disk_check_seconds: float = 60.0


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def legs_for(base: str) -> dict[str, str]:
    """The three files the dialplan's MixMonitor writes for one base name."""
    return {leg: f"{base}-{leg}.wav" for leg in LEGS}


class Recorder:
    """Owns the recording index lifecycle, the analysis process pool and the disk watermark."""

    def __init__(self, sessions: sessionmaker[Session], root: Path, config: RecorderConfig, *,
                 lookup_customer: Callable[[str], str | None] | None = None,
                 on_disk_alert: Callable[[dict[str, Any]], object] | None = None,
                 write_lock: threading.Lock | None = None) -> None:
        self.index = RecordingIndex(sessions, root)
        self.catalog = RecordingCatalog(self.index)
        self.tracker = RecordingTracker()
        self.config = config
        self.policy = RetentionPolicy.parse(config.retention)
        self.lookup_customer = lookup_customer
        self.on_disk_alert = on_disk_alert
        # Shared with the service's own writer: on SQLite two writer threads can make a
        # read-then-write transaction elsewhere fail at once with SQLITE_BUSY (a lock
        # upgrade does not wait for busy_timeout).
        self.write_lock = write_lock or threading.Lock()
        self._writes: asyncio.Queue[Callable[[], Any]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool: ProcessPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.disk: DiskState | None = None
        self.analysed = 0
        self.analysis_failures = 0
        self.analysis_seconds = 0.0
        self.write_failures = 0

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # spawn: the service process has threads (asyncio workers); forking them is unsafe.
        self._pool = ProcessPoolExecutor(max_workers=max(1, self.config.analysis_workers),
                                         mp_context=multiprocessing.get_context("spawn"))
        self._writer = asyncio.create_task(self._write_loop(), name="recordings-writer")
        await self.check_disk()
        self._monitor = asyncio.create_task(self._disk_loop(), name="recordings-disk")

    async def stop(self) -> None:
        await self.flush()
        for task in (self._writer, self._monitor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)

    async def flush(self) -> None:
        """Wait until every queued index write and every scheduled analysis is stored."""
        while True:
            await self._writes.join()
            if not self._tasks:
                return
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- inputs from the service (event loop, must not block) ----------------------------
    def on_ami_event(self, event: Event) -> None:
        try:
            facts = self.tracker.feed(event)
        except Exception:  # a recording bug must never stop call tracking in the AMI reader
            log.exception("recording lifecycle failed on %s", event.name)
            return
        for fact in facts:
            self._writes.put_nowait(lambda f=fact: self._apply(f))  # type: ignore[misc]

    def on_call_ended(self, call: dict[str, Any], at: float, *, message_queue: str | None = None) -> None:
        """Finalise the call's recording set and schedule its analysis.

        `message_queue`: the queue a voicemail node took a message for (the call never
        joined a queue), so the message is found by queue like any queued call.
        """
        linkedid = str(call["linkedid"])
        recorded = self.tracker.pop(linkedid)
        base = recorded.base if recorded is not None else call.get("recording")
        if not base:
            return  # a call that never reached MixMonitor
        uniqueid = recorded.uniqueid if recorded is not None else str(base).rsplit("-", 1)[-1]
        started = recorded.started_at if recorded is not None else float(call.get("started_at") or at)
        timeline = recorded.timeline(at) if recorded is not None else Timeline(duration=0.0)
        parties = list(recorded.parties) if recorded is not None else []
        transfers = max(recorded.transfers if recorded is not None else 0, len(call.get("transfers") or []))
        # Each agent leg's start on the caller's time axis (AMI MixMonitorStart times, one clock).
        offsets = {} if recorded is None else {
            u: round(leg.origin - recorded.origin, 3) for u, leg in recorded.agent_legs.items()}
        self._writes.put_nowait(lambda: self._finalize(
            call, str(base), uniqueid, started, at, timeline, parties, transfers, message_queue, offsets))

    # -- ordered index writes (worker thread) ------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            fn = await self._writes.get()
            try:
                result = await asyncio.to_thread(self._locked, fn)
                if isinstance(result, AnalysisJob):
                    self._spawn(self._analyse(result))
            except Exception:
                self.write_failures += 1
                log.exception("recording index write failed")
            finally:
                self._writes.task_done()

    def _locked(self, fn: Callable[[], Any]) -> Any:
        with self.write_lock:
            return fn()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _apply(self, fact: RecordingFact) -> None:
        if fact.kind == "started":
            self._open(fact.linkedid, fact.uniqueid, fact.base, fact.at)
            self._check_disk_now()
        elif fact.kind == "stopped":
            self.index.finalize(linkedid=fact.linkedid, stopped_at=_utc(fact.at))
        elif fact.kind == "agent_started":
            self.index.start(linkedid=fact.linkedid, uniqueid=fact.uniqueid, legs={LEG_AGENT: f"{fact.base}.wav"},
                             started_at=_utc(fact.at), agent=fact.agent)

    def _open(self, linkedid: str, uniqueid: str, base: str, at: float) -> None:
        self.index.start(linkedid=linkedid, uniqueid=uniqueid, legs=legs_for(base), started_at=_utc(at))
        self.catalog.open_set(linkedid=linkedid, uniqueid=uniqueid, base=base, started_at=_utc(at))

    def _finalize(self, call: dict[str, Any], base: str, uniqueid: str, started: float, at: float,
                  timeline: Timeline, parties: list[str], transfers: int,
                  message_queue: str | None = None,
                  agent_offsets: dict[str, float] | None = None) -> AnalysisJob | None:
        linkedid = str(call["linkedid"])
        self._open(linkedid, uniqueid, base, started)  # no-op unless the start was missed (reconnect)
        message = f"{base}-{LEG_MESSAGE}.wav"
        if self.index.resolve(message).is_file():  # Record() has closed it: the caller hung up or stopped
            self.index.start(linkedid=linkedid, uniqueid=uniqueid, legs={LEG_MESSAGE: message},
                             started_at=_utc(started))
        rows = self.index.finalize(linkedid=linkedid, stopped_at=_utc(at),
                                   queue=call.get("queue") or message_queue, agent=call.get("agent"))
        caller = str(call.get("caller_num") or "") or None
        customer_id = None
        if caller and self.lookup_customer is not None:
            try:
                customer_id = self.lookup_customer(caller)
            except Exception:  # the recording must be indexed even if the customer store fails
                log.exception("customer lookup for recording %s failed", linkedid)
        agents = [p for p in parties if p != call.get("agent")]
        self.catalog.close_set(linkedid, stopped_at=_utc(at), queue=call.get("queue") or message_queue,
                               agent=call.get("agent"),
                               agents=agents, caller_num=caller, customer_id=customer_id,
                               outcome=call.get("outcome"), transfers=transfers)
        complete = [r for r in rows if r.status == STATUS_COMPLETE]
        legs = {r.leg: (r.id, str(self.index.resolve(r.path))) for r in complete if r.leg != LEG_AGENT}
        offsets = agent_offsets or {}
        agent_legs = tuple(
            AgentLegJob(r.id, str(self.index.resolve(r.path)), r.agent or r.uniqueid, offsets.get(r.uniqueid))
            for r in complete if r.leg == LEG_AGENT)
        if not legs and not agent_legs:
            return None
        return AnalysisJob(linkedid, legs, timeline, float(self.config.dead_air_seconds), agent_legs=agent_legs)

    # -- analysis (process pool) ---------------------------------------------------------
    async def _analyse(self, job: AnalysisJob) -> None:
        if self._pool is None:
            return
        started = time.perf_counter()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._pool, analyze_call, job)
        except Exception:
            self.analysis_failures += 1
            log.exception("analysis of recording %s failed", job.linkedid)
            return
        self.analysis_seconds += time.perf_counter() - started
        self.analysed += 1
        for leg in result["legs"].values():
            if "error" in leg:
                log.warning("VAD analysis of %s leg %s failed: %s", job.linkedid, leg["leg"], leg["error"])
        metrics = result.get("metrics") or {}
        if metrics.get("flags"):
            log.info("recording %s flagged for QA: %s (longest dead air %.1f s)", job.linkedid,
                     ",".join(metrics["flags"]), metrics.get("longest_dead_air_seconds", 0.0))
        now = datetime.now(UTC)
        self._writes.put_nowait(lambda: self.catalog.store_analysis(job.linkedid, result, now))

    # -- disk watermark ------------------------------------------------------------------
    async def check_disk(self) -> DiskState:
        return await asyncio.to_thread(self._check_disk_now)

    def _check_disk_now(self) -> DiskState:
        state = disk_state(self.index.root, self.config.min_free_mb * 2**20)
        was_low = self.disk is not None and self.disk.low
        self.disk = state
        if state.low != was_low:
            if state.low:
                log.warning("recordings disk low: %d MB free at %s, watermark %d MB: recording will fail "
                            "when it is full; purge or add space", state.free_bytes // 2**20, self.index.root,
                            self.config.min_free_mb)
            else:
                log.info("recordings disk back above the watermark: %d MB free", state.free_bytes // 2**20)
            if self.on_disk_alert is not None and self._loop is not None:
                # Checked in worker threads; the alert (a hub publish) belongs to the event loop.
                self._loop.call_soon_threadsafe(self.on_disk_alert, {"recordings_disk": state.to_dict()})
        return state

    async def _disk_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.disk_check_seconds)  # a periodic guard, not a wait for an event
            try:
                await self.check_disk()
            except OSError:
                log.exception("cannot read free space of %s", self.index.root)

    def status(self) -> dict[str, Any]:
        return {
            "disk": None if self.disk is None else self.disk.to_dict(),
            "pending_writes": self._writes.qsize(),
            "analyses_running": len(self._tasks),
            "analysed": self.analysed,
            "analysis_failures": self.analysis_failures,
            "write_failures": self.write_failures,
            "dead_air_threshold_seconds": self.config.dead_air_seconds,
        }
