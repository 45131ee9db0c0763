"""The CTI event stream: versioned JSON events with sequence numbers, per-principal views.

Publishing never blocks (the AMI reader is upstream): each subscriber has a bounded
queue, and a subscriber that falls behind is closed with a `lagged` notice; it can
reconnect and ask for everything since the last sequence number it saw, which the
hub keeps in a ring buffer. Events addressed to one agent (a screen pop) reach only
that agent and the roles that see every agent.

Schema (version 1), one JSON object per websocket message:
    {"v": 1, "seq": 42, "type": "...", "at": 1700000000.123,
     "linkedid": "..." | null, "agent": "1001" | null, "data": {...}}
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cti.auth import Principal

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class StreamEvent:
    seq: int
    type: str
    at: float
    linkedid: str | None
    agent: str | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "seq": self.seq, "type": self.type, "at": self.at,
                "linkedid": self.linkedid, "agent": self.agent, "data": self.data}

    def visible_to(self, principal: Principal) -> bool:
        if principal.role != "agent":
            return True
        return (self.agent is None and self.type == "status") or self.agent == principal.agent


@dataclass
class Subscriber:
    principal: Principal
    queue: asyncio.Queue[StreamEvent | None]
    lagged: bool = False
    closed: bool = False

    def offer(self, event: StreamEvent) -> None:
        if self.closed or not event.visible_to(self.principal):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            # Make room for the end marker: the subscriber is being dropped anyway.
            self.queue.get_nowait()
            self.queue.put_nowait(None)


@dataclass
class EventHub:
    """Fan-out with history. Single-threaded: call from the event loop only."""

    history_size: int = 10_000
    subscriber_queue: int = 1_000
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _history: deque[StreamEvent] = field(init=False)
    _subscribers: list[Subscriber] = field(default_factory=list)
    last_seq: int = 0

    def __post_init__(self) -> None:
        self._history = deque(maxlen=self.history_size)

    def publish(self, type: str, data: dict[str, Any], *, linkedid: str | None = None,
                agent: str | None = None, at: float | None = None) -> StreamEvent:
        event = StreamEvent(next(self._seq), type, time.time() if at is None else at, linkedid, agent, data)
        self.last_seq = event.seq
        self._history.append(event)
        for sub in self._subscribers:
            sub.offer(event)
        if any(s.closed for s in self._subscribers):
            self._subscribers = [s for s in self._subscribers if not s.closed]
        return event

    def subscribe(self, principal: Principal) -> Subscriber:
        sub = Subscriber(principal, asyncio.Queue(self.subscriber_queue))
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.close()
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def since(self, seq: int, principal: Principal) -> list[StreamEvent] | None:
        """Events after `seq` this principal may see; None when they left the buffer."""
        if self._history and seq < self._history[0].seq - 1:
            return None
        return [e for e in self._history if e.seq > seq and e.visible_to(principal)]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
