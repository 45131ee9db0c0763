"""Routing rules over the caller's customer record and the live queue load.

Pure evaluation (`decide`) over plain facts: `CallerFacts` from the customer lookup
store and `QueueLoad` from the call tracker's AMI-derived queue/member state. Every
decision names the rule and the facts that made it, e.g.
``rule repair-no-agents: repair has 0 of 2 agents logged in``: that text becomes
HOTLINE_ROUTE_REASON and is shown in GET /calls/{linkedid}.

A fact that is not known never matches: an unknown caller is not a VIP, and a
queue whose state is stale (AMI away, not resynced) does not overflow; the caller
joins the queue, which is the safe default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ivr.model import Condition, Rule

#: Asterisk device states of a queue member whose agent is not logged in
#: (4 AST_DEVICE_INVALID, 5 AST_DEVICE_UNAVAILABLE: no registered phone).
NOT_LOGGED_IN = frozenset({4, 5})
#: Average handle time assumed until a queue has answered calls of its own.
DEFAULT_HANDLE_SECONDS = 120.0
#: How many recent answered calls the handle-time estimate uses.
HANDLE_SAMPLE = 50


@dataclass(frozen=True, slots=True)
class CallerFacts:
    """What the customer record says about the caller (all False/None when unknown).

    For a number shared by several customers only what all of them have in common
    counts (the same region), except an open repair order, which any may have.
    """

    status: str = "not_looked_up"  # match | several | unknown | invalid | error | timeout | not_looked_up
    customer: str | None = None  # customer number(s), for the route reason
    vip: bool = False
    open_repair: bool = False
    days_since_install: int | None = None  # the most recent installation
    region: str | None = None
    #: The customer's preferred language (when every card agrees), e.g. "en".
    language: str | None = None

    @property
    def known(self) -> bool:
        return self.status in ("match", "several")


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """One queue right now, from the tracker. `known` is False while state is stale."""

    queue: str
    known: bool
    members: int = 0
    logged_in: int = 0
    waiting: int = 0
    longest_wait: float = 0.0
    #: Logged in and not paused.
    available: int = 0
    #: Seconds a caller joining now would wait: callers ahead x handle time / available
    #: agents; None when nobody is available (no bound).
    estimated_wait: float | None = None


class QueueLoadView(Protocol):
    def load(self, queue: str) -> QueueLoad: ...


@dataclass(frozen=True, slots=True)
class Decision:
    rule: str | None  # None: the node's default
    goto: str | None
    priority: int | None
    reason: str


def facts_from_lookup(lookup: Any) -> CallerFacts:
    """`cti.customers.store.Lookup` -> facts (duck-typed so tests can pass plain objects)."""
    cards = list(lookup.cards)
    if lookup.status not in ("match", "several") or not cards:
        return CallerFacts(status=str(lookup.status))
    installs = [p.days_since_install for c in cards for p in c.products if p.days_since_install is not None]
    regions = {c.region for c in cards}
    languages = {c.language for c in cards if c.language}
    return CallerFacts(
        status=str(lookup.status),
        customer=",".join(c.customer_no for c in cards[:3]),
        vip=all(c.vip for c in cards),
        open_repair=any(c.open_repair for c in cards),
        days_since_install=min(installs) if installs else None,
        region=regions.pop() if len(regions) == 1 else None,
        language=languages.pop() if len(languages) == 1 else None,
    )


def check(condition: Condition, facts: CallerFacts, load: Callable[[str], QueueLoad],
          own_queue: str | None) -> tuple[bool, str]:
    """Whether one condition holds, and the fact as text for the route reason."""
    fact, value = condition.fact, condition.value
    if fact == "known":
        return facts.known == value, f"customer {facts.status}"
    if fact == "vip":
        return facts.vip == value, f"customer {facts.customer or '-'} vip={str(facts.vip).lower()}"
    if fact == "open_repair":
        return facts.open_repair == value, (
            f"customer {facts.customer or '-'} open_repair={str(facts.open_repair).lower()}")
    if fact == "installed_within_days":
        days = facts.days_since_install
        return days is not None and isinstance(value, int) and 0 <= days <= value, (
            f"customer {facts.customer or '-'} installed {days if days is not None else '-'} days ago")
    if fact == "region":
        regions = value if isinstance(value, tuple) else (str(value),)
        return facts.region is not None and facts.region in regions, (
            f"customer {facts.customer or '-'} region {facts.region or '-'}")
    queue = condition.queue or own_queue
    if queue is None:
        return False, f"{fact}: no queue"
    q = load(queue)
    if not q.known:
        return False, f"{queue} state unknown"
    if fact == "no_agents":
        return (q.logged_in == 0) == value, f"{queue} has {q.logged_in} of {q.members} agents logged in"
    if fact == "waiting_at_least":
        return isinstance(value, int) and q.waiting >= value, f"{queue} has {q.waiting} callers waiting"
    if fact == "estimated_wait_over":
        est = q.estimated_wait
        shown = "unbounded" if est is None else f"{est:.0f}s"
        # Nobody logged in: the wait has no bound, so it is over any limit.
        return isinstance(value, int) and (est is None or est > value), f"{queue} estimated wait {shown}"
    return False, f"unknown fact {fact}"


def decide(rules: Iterable[Rule], facts: CallerFacts, load: Callable[[str], QueueLoad],
           own_queue: str | None = None) -> Decision | None:
    """The first rule whose conditions all hold, with a reason naming it and its facts."""
    for rule in rules:
        shown: list[str] = []
        for condition in rule.conditions:
            ok, text = check(condition, facts, load, own_queue)
            if not ok:
                break
            shown.append(text)
        else:
            return Decision(rule.id, rule.goto, rule.priority, f"rule {rule.id}: {'; '.join(shown) or 'always'}")
    return None


class TrackerQueueLoad:
    """Read-only queue-load view over `cti.tracker.CallTracker` (it is never changed here)."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker

    def load(self, queue: str) -> QueueLoad:
        tracker = self.tracker
        members = [m for (q, _), m in list(tracker.members.items()) if q == queue]
        if tracker.needs_resync or not members:
            return QueueLoad(queue, known=False)
        logged_in = sum(1 for m in members if int(m.status) not in NOT_LOGGED_IN)
        available = sum(1 for m in members if int(m.status) not in NOT_LOGGED_IN and not m.paused)
        now = tracker.clock()
        waits = [now - c.queue_joined_at for c in list(tracker.calls.values())
                 if c.queue == queue and c.agent is None and c.queue_joined_at is not None
                 and c.queue_left_at is None]
        handled = [c.talk_seconds for c in list(tracker.finished.values())[-500:]
                   if c.queue == queue and c.talk_seconds][-HANDLE_SAMPLE:]
        handle = sum(handled) / len(handled) if handled else DEFAULT_HANDLE_SECONDS
        estimate = None if available == 0 else round(len(waits) * handle / available, 1)
        return QueueLoad(queue, True, len(members), logged_in, len(waits),
                         round(max(waits, default=0.0), 1), available, estimate)


def store_lookup(store: Any) -> Callable[[str], CallerFacts]:
    """A blocking caller lookup over `cti.customers.store.CustomerStore` for the engine."""

    def lookup(number: str) -> CallerFacts:
        return facts_from_lookup(store.lookup(number))

    return lookup
