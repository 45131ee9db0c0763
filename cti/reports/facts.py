"""Raw rows -> call facts: pure functions, no I/O, no rules applied yet.

A *queue attempt* is one caller's stay in one queue (ENTERQUEUE to CONNECT/ABANDON/
EXIT...), rebuilt from queue_log. A *hotline call* is one inbound call into the
hotline contexts, from the CDR of its first channel (uniqueid == linkedid). A
*callback* is an agent's own outbound call to a non-agent number, from the CDR.
The tracker's call records add what only the service knows: the test-call flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cti.reports.sources import CdrRow, QueueLogEntry, channel_peer

#: Dialplan contexts a hotline call ends in (dialplans.compiler HOTLINE_CONTEXT,
#: ROUTE_CONTEXT, FAILSAFE_CONTEXT; a unit test keeps them equal).
HOTLINE_CONTEXTS = frozenset({"hotline", "hotline-route", "hotline-failsafe"})

#: queue_log events that end a caller's stay in a queue, and the outcome each means.
EXIT_EVENTS = {"ABANDON": "abandoned", "EXITWITHTIMEOUT": "timeout", "EXITEMPTY": "exit_empty",
               "EXITWITHKEY": "exit_key"}
COMPLETE_EVENTS = {"COMPLETECALLER": "caller", "COMPLETEAGENT": "agent", "BLINDTRANSFER": "transfer",
                   "ATTENDEDTRANSFER": "transfer", "TRANSFER": "transfer"}


@dataclass(frozen=True, slots=True)
class TrackedCall:
    """What the service's tracker stored about a call (cti.db.CallRecord), reduced."""

    linkedid: str
    caller_num: str = ""
    is_test_call: bool = False
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class QueueAttempt:
    """One caller's stay in one queue."""

    callid: str
    queue: str
    entered_at: int
    caller_num: str = ""
    #: answered | abandoned | timeout | exit_empty | exit_key | in_queue (no exit logged yet)
    outcome: str = "in_queue"
    #: Seconds in the queue until answered or until the exit (queue_log: whole seconds).
    wait_seconds: float | None = None
    agent: str | None = None
    #: Connected time (Asterisk's calltime: hold is inside it); None while connected.
    talk_seconds: float | None = None
    #: caller | agent | transfer (who ended an answered call)
    ended_by: str | None = None
    ended_at: int | None = None
    ring_no_answer: tuple[str, ...] = ()
    is_test: bool = False
    #: Why the call is internal (caller is an agent, or an agent transferred it in); None: external.
    internal: str | None = None


@dataclass(frozen=True, slots=True)
class HotlineCall:
    """One inbound hotline call (all its queue attempts share its linkedid as callid)."""

    linkedid: str
    started_at: float
    caller_num: str
    queued: bool
    answered: bool
    is_test: bool = False
    tracker_outcome: str | None = None


@dataclass(frozen=True, slots=True)
class Callback:
    """An agent's own outbound call to a customer (CDR), for piece-rate."""

    linkedid: str
    agent: str
    number: str
    started_at: float
    answered: bool
    talk_seconds: float
    is_test: bool = False


def _seconds(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def queue_attempts(entries: Iterable[QueueLogEntry], tracked: Mapping[str, TrackedCall] | None = None,
                   agents: Iterable[str] = ()) -> list[QueueAttempt]:
    """Rebuild every queue attempt from queue_log entries (any order; sorted by time here).

    Unknown events and events for attempts whose ENTERQUEUE was not imported are ignored
    (a log may start mid-call). Test flags come from `tracked` (by callid = linkedid).
    """
    tracked = tracked or {}
    agent_set = set(agents)
    # Open attempts as plain dicts of QueueAttempt fields: built once when they close
    # (dataclasses.replace per event dominated the cost on a month of calls).
    open_: dict[tuple[str, str], dict[str, Any]] = {}
    done: list[QueueAttempt] = []
    transferred_by: dict[str, str] = {}  # callid -> agent who last transferred it

    def close(key: tuple[str, str], **changes: Any) -> None:
        fields_ = open_.pop(key)
        fields_.update(changes)
        fields_["ring_no_answer"] = tuple(fields_["ring_no_answer"])
        done.append(QueueAttempt(**fields_))

    ordered = sorted(enumerate(entries), key=lambda p: (p[1].time, p[0]))
    for _, e in ordered:
        key = (e.callid, e.queue)
        if e.event == "ENTERQUEUE":
            if key in open_:  # entered again without a logged exit: keep the first as-is
                close(key)
            caller = e.field(1)
            call = tracked.get(e.callid)
            internal = None
            if caller and caller in agent_set:
                internal = f"caller is agent {caller}"
            elif e.callid in transferred_by:
                internal = f"transferred in by agent {transferred_by[e.callid]}"
            open_[key] = {"callid": e.callid, "queue": e.queue, "entered_at": e.time,
                          "caller_num": caller or (call.caller_num if call else ""),
                          "is_test": bool(call and call.is_test_call), "internal": internal, "ring_no_answer": []}
            continue
        a = open_.get(key)
        if a is None:
            continue
        if e.event == "CONNECT":
            a.update(outcome="answered", agent=e.agent, wait_seconds=_seconds(e.field(0)))
        elif e.event == "RINGNOANSWER":
            a["ring_no_answer"].append(e.agent)
        elif e.event in COMPLETE_EVENTS:
            # holdtime|calltime|origposition are the last three fields for every variant.
            calltime = _seconds(e.data[-2]) if len(e.data) >= 3 else None
            ended_by = COMPLETE_EVENTS[e.event]
            if ended_by == "transfer":
                transferred_by[e.callid] = e.agent
            wait = a.get("wait_seconds")
            if wait is None and len(e.data) >= 3:
                wait = _seconds(e.data[-3])
            close(key, outcome="answered", agent=a.get("agent") or e.agent, talk_seconds=calltime,
                  ended_by=ended_by, ended_at=e.time, wait_seconds=wait)
        elif e.event in EXIT_EVENTS:
            close(key, outcome=EXIT_EVENTS[e.event], wait_seconds=_seconds(e.data[-1]) if e.data else None,
                  ended_at=e.time)
    for key in list(open_):
        close(key)
    done.sort(key=lambda a: (a.entered_at, a.callid, a.queue))
    return done


def hotline_calls(cdrs: Iterable[CdrRow], attempts: Iterable[QueueAttempt],
                  tracked: Mapping[str, TrackedCall] | None = None) -> list[HotlineCall]:
    """One HotlineCall per linkedid whose first channel's CDR ended in a hotline context."""
    tracked = tracked or {}
    by_callid: dict[str, list[QueueAttempt]] = {}
    for a in attempts:
        by_callid.setdefault(a.callid, []).append(a)
    # A channel may have several CDRs (one per dial attempt of the queue); any of them in a
    # hotline context makes it a hotline call, the earliest gives start and caller.
    rows: dict[str, list[CdrRow]] = {}
    for row in cdrs:
        if row.uniqueid == row.linkedid:
            rows.setdefault(row.linkedid, []).append(row)
    calls = []
    for linkedid, mine_rows in rows.items():
        if not any(r.dcontext in HOTLINE_CONTEXTS for r in mine_rows):
            continue
        earliest = min(mine_rows, key=lambda r: (r.start, r.sequence))
        mine = by_callid.get(linkedid, [])
        call = tracked.get(linkedid)
        calls.append(HotlineCall(
            linkedid=linkedid, started_at=earliest.start,
            caller_num=earliest.src or (call.caller_num if call else ""),
            queued=bool(mine), answered=any(a.outcome == "answered" for a in mine),
            is_test=bool(call and call.is_test_call), tracker_outcome=call.outcome if call else None))
    calls.sort(key=lambda c: (c.started_at, c.linkedid))
    return calls


def callbacks(cdrs: Iterable[CdrRow], agents: Iterable[str],
              tracked: Mapping[str, TrackedCall] | None = None) -> list[Callback]:
    """Agent-originated calls to numbers that are not agents, outside the hotline contexts."""
    tracked = tracked or {}
    agent_set = set(agents)
    best: dict[str, CdrRow] = {}
    for row in cdrs:
        agent = channel_peer(row.channel)
        if row.uniqueid != row.linkedid or agent not in agent_set or row.dcontext in HOTLINE_CONTEXTS:
            continue
        if not row.dst or row.dst in agent_set or row.lastapp != "Dial":
            continue
        known = best.get(row.linkedid)
        if known is None or row.billsec > known.billsec:
            best[row.linkedid] = row
    out = []
    for linkedid, row in best.items():
        call = tracked.get(linkedid)
        out.append(Callback(linkedid=linkedid, agent=channel_peer(row.channel), number=row.dst, started_at=row.start,
                            answered=row.disposition == "ANSWERED", talk_seconds=row.billsec,
                            is_test=bool(call and call.is_test_call)))
    out.sort(key=lambda c: (c.started_at, c.linkedid))
    return out


__all__ = ["HOTLINE_CONTEXTS", "Callback", "HotlineCall", "QueueAttempt", "TrackedCall", "callbacks",
           "hotline_calls", "queue_attempts"]
