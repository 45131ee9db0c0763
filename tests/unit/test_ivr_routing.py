"""Routing rules over the customer record and the queue load; the tracker's queue-load view."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cti.ami.events import Event, parse_event
from cti.ami.protocol import Message
from cti.customers.demo import generate
from cti.customers.models import Customer, PhoneNumber, Product
from cti.customers.store import CustomerStore
from cti.tracker import CallTracker
from ivr.model import Condition, Rule
from ivr.routing import CallerFacts, QueueLoad, TrackerQueueLoad, decide, facts_from_lookup, store_lookup

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


@pytest.fixture
def store(sessions: sessionmaker[Session]) -> CustomerStore:
    generate(sessions, 20, seed=3, now=NOW)
    return CustomerStore(sessions, clock=lambda: NOW)


def test_demo_customers_give_the_facts_the_rules_use(store: CustomerStore) -> None:
    lookup = store_lookup(store)
    repair = lookup("13800138000")
    assert (repair.status, repair.customer, repair.open_repair, repair.vip) == ("match", "DEMO-0001", True, False)
    vip = lookup("+86 139-0013-9000")
    assert (vip.customer, vip.vip) == ("DEMO-0002", True)
    shared = lookup("13700137000")  # one Shenzhen household, two customers
    assert shared.status == "several" and shared.region == "华南" and not shared.vip
    assert lookup("13512345678").status == "unknown" and not lookup("13512345678").known
    assert lookup("not a number").status == "invalid"


def test_recent_installation_counts_in_days(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        c = Customer(customer_no="N1", name="新客户", region="华东")
        c.phones = [PhoneNumber(e164="+8613512340000", raw="13512340000", kind="mobile")]
        c.products = [Product(model="A", serial="1", installed_on=date(2026, 11, 20)),
                      Product(model="B", serial="2", installed_on=date(2020, 1, 1))]
        session.add(c)
    facts = facts_from_lookup(CustomerStore(sessions, clock=lambda: NOW).lookup("13512340000"))
    assert facts.days_since_install == 5 and facts.region == "华东"


def loads(**logged_in: int) -> dict[str, QueueLoad]:
    return {q: QueueLoad(q, True, 2, n, waiting=3, estimated_wait=None if n == 0 else 90.0)
            for q, n in logged_in.items()}


RULES = (
    Rule("repair-no-agents", (Condition("no_agents", True),), goto="overflow"),
    Rule("long-wait", (Condition("estimated_wait_over", 60),), goto="callback"),
    Rule("vip", (Condition("vip", True),), priority=10),
)


@pytest.mark.parametrize(("facts", "logged_in", "rule", "reason"), [
    (CallerFacts(), 0, "repair-no-agents", "rule repair-no-agents: repair has 0 of 2 agents logged in"),
    (CallerFacts(), 1, "long-wait", "rule long-wait: repair estimated wait 90s"),
    (CallerFacts("match", "C9", vip=True), 2, "long-wait", None),
])
def test_first_matching_rule_wins_and_names_its_facts(
    facts: CallerFacts, logged_in: int, rule: str, reason: str | None,
) -> None:
    view = loads(repair=logged_in)
    decision = decide(RULES, facts, view.__getitem__, "repair")
    assert decision is not None and decision.rule == rule
    if reason:
        assert decision.reason == reason


def test_priority_rule_and_no_match() -> None:
    quiet = {"repair": QueueLoad("repair", True, 2, 2, waiting=0, estimated_wait=0.0)}
    decision = decide(RULES, CallerFacts("match", "C9", vip=True), quiet.__getitem__, "repair")
    assert decision is not None and (decision.goto, decision.priority) == (None, 10)
    assert decision.reason == "rule vip: customer C9 vip=true"
    assert decide(RULES, CallerFacts("match", "C9"), quiet.__getitem__, "repair") is None


def test_unknown_queue_state_never_overflows() -> None:
    stale = {"repair": QueueLoad("repair", known=False)}
    assert decide(RULES[:2], CallerFacts(), stale.__getitem__, "repair") is None


@pytest.mark.parametrize(("condition", "facts", "expected"), [
    (Condition("open_repair", True), CallerFacts("match", "C", open_repair=True), True),
    (Condition("open_repair", True), CallerFacts("unknown"), False),
    (Condition("installed_within_days", 7), CallerFacts("match", "C", days_since_install=7), True),
    (Condition("installed_within_days", 7), CallerFacts("match", "C", days_since_install=8), False),
    (Condition("installed_within_days", 7), CallerFacts("match", "C"), False),
    (Condition("region", ("华南", "华东")), CallerFacts("match", "C", region="华东"), True),
    (Condition("region", ("华南",)), CallerFacts("several", "C"), False),
    (Condition("known", False), CallerFacts("invalid"), True),
    (Condition("waiting_at_least", 3, "operator"), CallerFacts(), True),
    (Condition("waiting_at_least", 4, "operator"), CallerFacts(), False),
])
def test_each_fact(condition: Condition, facts: CallerFacts, expected: bool) -> None:
    view = loads(operator=1)
    decision = decide((Rule("r", (condition,), goto="x"),), facts, view.__getitem__, None)
    assert (decision is not None) is expected


def _event(**headers: str) -> Event:
    return parse_event(Message(tuple(headers.items())))


def test_tracker_view_counts_logged_in_agents_and_waiting_callers() -> None:
    tracker = CallTracker(clock=lambda: 1000.0)
    view = TrackerQueueLoad(tracker)
    assert not view.load("repair").known  # nothing seen yet / not resynced
    for name, status in (("1001", "1"), ("1002", "5")):
        tracker.feed(_event(Event="QueueMember", Queue="repair", Name=name, StateInterface=f"PJSIP/{name}",
                            Location=f"PJSIP/{name}", Status=status, Paused="0", InCall="0", CallsTaken="0"))
    tracker.needs_resync = False
    load = view.load("repair")
    assert (load.known, load.members, load.logged_in, load.waiting) == (True, 2, 1, 0)
    assert load.estimated_wait == 0.0 and load.available == 1
    tracker.feed(_event(Event="QueueMemberPause", Queue="repair", MemberName="1001", Interface="PJSIP/1001",
                        Status="1", Paused="1"))
    paused = view.load("repair")
    assert (paused.logged_in, paused.available, paused.estimated_wait) == (1, 0, None)  # logged in, on a break
    tracker.feed(_event(Event="QueueMemberStatus", Queue="repair", MemberName="1001", Interface="PJSIP/1001",
                        Status="5"))
    assert view.load("repair").logged_in == 0 and view.load("repair").estimated_wait is None
    tracker.needs_resync = True  # AMI away: the view says it does not know
    assert not view.load("repair").known


def test_tracker_view_estimates_the_wait_from_waiting_callers() -> None:
    tracker = CallTracker(clock=lambda: 1000.0)
    tracker.feed(_event(Event="QueueMember", Queue="operator", Name="1003", StateInterface="PJSIP/1003",
                        Location="PJSIP/1003", Status="1", Paused="0", InCall="0", CallsTaken="0"))
    tracker.needs_resync = False
    for i, joined in enumerate(("990.0", "995.0")):
        tracker.feed(_event(Event="QueueCallerJoin", Timestamp=joined, Channel=f"PJSIP/carrier-{i}",
                            Uniqueid=f"17.{i}", Linkedid=f"17.{i}", CallerIDNum=f"1351234000{i}",
                            Queue="operator", Position=str(i + 1), Count=str(i + 1)))
    load = TrackerQueueLoad(tracker).load("operator")
    assert (load.waiting, load.longest_wait) == (2, 10.0)
    assert load.estimated_wait == 240.0  # 2 callers ahead x 120 s default handle time / 1 agent
    rule = Rule("busy", (Condition("waiting_at_least", 2),), goto="message")
    decision = decide((rule,), CallerFacts(), TrackerQueueLoad(tracker).load, "operator")
    assert decision is not None and decision.reason == "rule busy: operator has 2 callers waiting"
