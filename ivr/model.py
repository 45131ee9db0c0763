"""The IVR flow as data: node dataclasses the engine runs and the compiler reads.

Kept free of I/O and of YAML so that `dialplans/` (which loads and validates the
admin-edited definition) and `ivr/` (which runs it over FastAGI) share one model.
Evaluation lives elsewhere: business hours in `ivr.hours`, routing rules in
`ivr.routing`, the walk itself in `ivr.engine`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

DTMF_DIGITS = "0123456789*#"

#: Facts a routing condition may test, and what its value means.
#: Customer facts come from the caller's customer record (a `lookup` node must run
#: first); queue facts come from the live queue state (the tracker's view of AMI).
CUSTOMER_FACTS = ("known", "vip", "open_repair", "installed_within_days", "region")
QUEUE_FACTS = ("no_agents", "waiting_at_least", "estimated_wait_over")
FACTS = CUSTOMER_FACTS + QUEUE_FACTS


@dataclass(frozen=True, slots=True)
class Condition:
    """One test of a rule, e.g. `vip == True`, `installed_within_days <= 7`, `region in (...)`.

    `value` is a bool (known, vip, open_repair, no_agents), a number (days, callers,
    seconds) or a tuple of region names. Queue facts name their `queue`; None means
    the queue of the node the rule belongs to.
    """

    fact: str
    value: bool | int | tuple[str, ...]
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """All conditions hold -> go to `goto`, or (queue nodes) join with `priority`."""

    id: str
    conditions: tuple[Condition, ...]
    goto: str | None = None
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class Calendar:
    """Opening hours in one time zone, minus holidays.

    `weekly` holds (weekday 0=Monday, start minute, end minute) ranges in local time,
    end exclusive. `holidays` are inclusive (first, last) date ranges; `workdays`
    are dates open although their weekday is not (China's make-up working days),
    with the hours of `workday_hours` (start minute, end minute).
    """

    name: str
    timezone: str
    weekly: tuple[tuple[int, int, int], ...]
    holidays: tuple[tuple[date, date], ...] = ()
    workdays: tuple[date, ...] = ()
    workday_hours: tuple[int, int] = (9 * 60, 18 * 60)


@dataclass(frozen=True, slots=True)
class Play:
    """Play prompts, then continue at `next`."""

    id: str
    prompts: tuple[str, ...]
    next: str


@dataclass(frozen=True, slots=True)
class Menu:
    """Play prompts and branch on one DTMF digit.

    A digit pressed during a prompt interrupts it. After `retries` invalid or
    missing inputs the caller goes to `on_exhausted` (usually the operator), so a
    menu can never trap a caller.
    """

    id: str
    prompts: tuple[str, ...]
    choices: Mapping[str, str]
    timeout: float = 5.0
    retries: int = 2
    invalid_prompt: str | None = None
    timeout_prompt: str | None = None
    on_exhausted: str = "operator"


@dataclass(frozen=True, slots=True)
class Collect:
    """Collect a number (order number, account): `*` clears, `#` submits.

    The first key may take `first_timeout` seconds, each later key `inter_timeout`;
    a timeout with at least `min_digits` keys submits. The digits are stored as the
    channel variable HOTLINE_IN_<variable> and in the call's data. After `retries`
    failed attempts the caller goes to `on_failure`.
    """

    id: str
    prompts: tuple[str, ...]
    variable: str
    next: str
    on_failure: str
    min_digits: int = 1
    max_digits: int = 20
    first_timeout: float = 5.0
    inter_timeout: float = 3.0
    retries: int = 2
    invalid_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class Lookup:
    """Look the caller's number up in the customer store, then continue at `next`.

    Never blocks the call: the lookup runs in a worker thread with a time limit; an
    error or timeout leaves the caller unknown and the flow continues.
    """

    id: str
    next: str
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class Hours:
    """Branch on the calendar: `open` during opening hours, else `closed`."""

    id: str
    calendar: Calendar
    open: str
    closed: str


@dataclass(frozen=True, slots=True)
class Route:
    """First matching rule decides the next node; no match -> `default`."""

    id: str
    rules: tuple[Rule, ...]
    default: str


@dataclass(frozen=True, slots=True)
class QueueRoute:
    """Hand the call to an Asterisk queue (the dialplan runs Queue()).

    `rules` run first: a rule with `goto` sends the caller elsewhere (overflow when
    the queue has no agents, too many waiting, too long a wait); a rule with
    `priority` joins this queue ahead of others (QUEUE_PRIO, e.g. for VIPs).
    """

    id: str
    queue: str
    prompts: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True)
class Voicemail:
    """Leave a message for a queue: the dialplan records it beside the call's legs."""

    id: str
    queue: str
    prompts: tuple[str, ...] = ()
    max_seconds: int = 120


@dataclass(frozen=True, slots=True)
class Transfer:
    """Transfer the caller to a number (an agent extension or via the carrier trunk).

    Rings for `timeout` seconds; unanswered, busy or unreachable -> the failsafe.
    """

    id: str
    number: str
    prompts: tuple[str, ...] = ()
    timeout: int = 60


@dataclass(frozen=True, slots=True)
class Language:
    """Switch the call's prompt language (prompts without that variant keep the default)."""

    id: str
    language: str
    next: str


@dataclass(frozen=True, slots=True)
class Hangup:
    """Play prompts (e.g. a goodbye) and end the call."""

    id: str
    prompts: tuple[str, ...] = ()


Node = Play | Menu | Collect | Lookup | Language | Hours | Route | QueueRoute | Voicemail | Transfer | Hangup
#: Nodes that end the IVR: the dialplan takes over.
TERMINAL = (QueueRoute, Voicemail, Transfer, Hangup)


def successors(node: Node) -> tuple[str, ...]:
    """Every node id `node` can lead to, in a stable order without repeats.

    A queue node leads to its rules' overflow targets (it also ends the IVR when
    no rule sends the caller on); voicemail, transfer and hangup lead nowhere.
    """
    out: list[str] = []
    if isinstance(node, Play | Lookup | Language):
        out = [node.next]
    elif isinstance(node, Menu):
        out = [*node.choices.values(), node.on_exhausted]
    elif isinstance(node, Collect):
        out = [node.next, node.on_failure]
    elif isinstance(node, Hours):
        out = [node.open, node.closed]
    elif isinstance(node, Route):
        out = [r.goto for r in node.rules if r.goto] + [node.default]
    elif isinstance(node, QueueRoute):
        out = [r.goto for r in node.rules if r.goto]
    return tuple(dict.fromkeys(out))


def prompts_of(node: Node) -> tuple[str, ...]:
    """Every prompt id a node may play (for graph checks and test-call expectations)."""
    out: list[str] = list(getattr(node, "prompts", ()))
    for extra in (getattr(node, "invalid_prompt", None), getattr(node, "timeout_prompt", None)):
        if extra:
            out.append(extra)
    return tuple(dict.fromkeys(out))


def first_menu(flow: Flow) -> str | None:
    """The first menu a caller reaches from the start (during opening hours)."""
    seen: set[str] = set()
    todo = [flow.start]
    while todo:
        node_id = todo.pop(0)
        if node_id in seen or node_id not in flow.nodes:
            continue
        seen.add(node_id)
        node = flow.nodes[node_id]
        if isinstance(node, Menu):
            return node_id
        todo.extend([node.open] if isinstance(node, Hours) else successors(node))
    return None


@dataclass(frozen=True, slots=True)
class Flow:
    """A runnable IVR: nodes by id, the start node, and prompt files.

    `prompts` maps a prompt id to the sound file as Asterisk sees it, without
    extension (Asterisk picks the format), e.g. `/var/lib/hotline/sounds/zh/welcome`;
    `localized` holds the other languages' variants (language -> prompt id -> file).
    """

    start: str
    nodes: Mapping[str, Node]
    prompts: Mapping[str, str] = field(default_factory=dict)
    localized: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def node(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def sound(self, prompt_id: str, language: str | None = None) -> str:
        """The prompt in `language` if it has that variant, else in the hotline's language."""
        if language is not None:
            variant = self.localized.get(language, {}).get(prompt_id)
            if variant is not None:
                return variant
        return self.prompts[prompt_id]
