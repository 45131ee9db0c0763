"""Screen pop: tracker call events -> customer cards on the ringing agent's stream.

One task consumes call events in order, so a pop can never overtake the answer or
hangup update that follows it, while the AMI reader never waits: the caller is
looked up once per call, in a worker thread, as soon as the call starts, and the
pop for a ringing agent waits for that lookup if it is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from cti.stream import EventHub
from cti.tracker import CallEvent

log = logging.getLogger(__name__)

Lookup = Callable[[str], dict[str, Any]]


def call_summary(call: dict[str, Any]) -> dict[str, Any]:
    keys = ("linkedid", "caller_num", "caller_name", "dialed", "menu_choice", "route_reason", "queue",
            "queue_position", "agent", "wait_seconds", "talk_seconds", "outcome", "test_tag", "started_at")
    return {k: call.get(k) for k in keys}


class ScreenPop:
    def __init__(self, hub: EventHub, lookup: Lookup, *, cache_size: int = 5000) -> None:
        self.hub = hub
        self.lookup = lookup
        self.cache_size = cache_size
        self._queue: asyncio.Queue[CallEvent] = asyncio.Queue()
        self._lookups: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._popped: dict[str, set[str]] = {}  # linkedid -> agents that got a pop and no close yet
        self._task: asyncio.Task[None] | None = None
        self.pops = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="screen-pop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on_call_event(self, event: CallEvent) -> None:
        """Called synchronously from the AMI reader: only queue, never wait."""
        if event.kind == "call_started" or (event.linkedid not in self._lookups and event.kind == "agent_ringing"):
            self._start_lookup(event)
        self._queue.put_nowait(event)

    async def drain(self) -> None:
        """Wait until every queued call event has been published (tests)."""
        await self._queue.join()

    def _start_lookup(self, event: CallEvent) -> None:
        number = str(event.call.get("caller_num") or "")
        future = asyncio.ensure_future(asyncio.to_thread(self._safe_lookup, number))
        self._lookups[event.linkedid] = future
        while len(self._lookups) > self.cache_size:
            self._lookups.pop(next(iter(self._lookups)))

    def _safe_lookup(self, number: str) -> dict[str, Any]:
        try:
            return self.lookup(number)
        except Exception as exc:  # an unknown or broken number must not cost the agent the pop
            log.warning("customer lookup for %r failed: %s", number, exc)
            return {"status": "error", "number": number, "cards": [], "error": str(exc)}

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._handle(event)
            except Exception:
                log.exception("screen pop failed for %s", event.kind)
            finally:
                self._queue.task_done()

    async def _customer(self, linkedid: str) -> dict[str, Any]:
        future = self._lookups.get(linkedid)
        if future is None:
            return {"status": "unknown", "cards": []}
        return await future

    async def _handle(self, event: CallEvent) -> None:
        hub, call, data = self.hub, event.call, event.data
        summary = call_summary(call)
        # Every call event for the roles that watch all calls (wallboard, supervisors).
        hub.publish("call", {"kind": event.kind, "call": summary, **_plain(data)}, linkedid=event.linkedid,
                    at=event.at)
        if event.kind == "agent_ringing":
            customer = await self._customer(event.linkedid)
            hub.publish("screen_pop", {"state": "ringing", "call": summary, "queue": data.get("queue"),
                                       "customer": customer},
                        linkedid=event.linkedid, agent=data.get("agent"), at=event.at)
            self._popped.setdefault(event.linkedid, set()).add(str(data.get("agent")))
            self.pops += 1
        elif event.kind == "agent_answered":
            hub.publish("call_update", {"state": "answered", "call": summary},
                        linkedid=event.linkedid, agent=data.get("agent"), at=event.at)
            popped = self._popped.setdefault(event.linkedid, set())
            for other in sorted(popped - {str(data.get("agent"))}):
                hub.publish("call_update", {"state": "answered_elsewhere", "call": summary},
                            linkedid=event.linkedid, agent=other, at=event.at)
            popped.intersection_update({str(data.get("agent"))})
        elif event.kind == "agent_no_answer":
            hub.publish("call_update", {"state": "missed", "call": summary},
                        linkedid=event.linkedid, agent=data.get("agent"), at=event.at)
            self._popped.get(event.linkedid, set()).discard(str(data.get("agent")))
        elif event.kind == "transferred" and call.get("agent"):
            hub.publish("call_update", {"state": "transferred", "call": summary, "transfer": _plain(data)},
                        linkedid=event.linkedid, agent=call.get("agent"), at=event.at)
        elif event.kind == "call_ended":
            agents = self._popped.pop(event.linkedid, set()) | ({str(call["agent"])} if call.get("agent") else set())
            for agent in sorted(agents):
                hub.publish("call_update", {"state": "ended", "call": summary, "outcome": call.get("outcome")},
                            linkedid=event.linkedid, agent=agent, at=event.at)
            self._lookups.pop(event.linkedid, None)


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, str | int | float | bool | list | dict | type(None))}
