"""Every path of the default hotline with real calls: pjsua2 callers pressing digits.

Menu choices, invalid then valid input, timeout to the operator, a caller hanging up
mid-menu, VIP priority from the customer record, overflow when no agent is logged
in, and after-hours (a message recorded for the operator queue). The engine's clock
is pinned per test so the result does not depend on when the suite runs; agents are
logged in (registered phones) or not, as each path needs, and every call waits for
the tracker to show that state before routing depends on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from ivr.routing import TrackerQueueLoad
from recordings.vad import analyze_wav
from tests.support.calls import PhoneFactory, agent_phone, carrier_headers, hotline_uri, leave_message, wait_for

pytestmark = pytest.mark.asterisk

WORKDAY = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # Wednesday 11:00 in Shanghai: open
NATIONAL_DAY = datetime(2026, 10, 1, 4, 0, tzinfo=UTC)  # holiday in the default calendar: closed
# Customers of this module's own (other tests own the demo numbers and their log lines).
VIP = "13912340001"  # IVR-T-VIP, a VIP
OPEN_REPAIR = "13812340002"  # IVR-T-REPAIR, an open repair order on an old air conditioner
ENGLISH = "13712340003"  # IVR-T-EN, prefers English


class Watch:
    """The IVR's live position per caller (engine watchers) and the tracker's call events."""

    def __init__(self, service: HotlineService) -> None:
        self.service = service
        self.ivr: list[tuple[str, str, str]] = []
        self.events: list[Any] = []
        self._unsubscribe = service.subscribe(self.events.append)
        service.runner.watchers.append(self._on_ivr)

    def _on_ivr(self, caller: str, node: str, what: str) -> None:
        self.ivr.append((caller, node, what))

    def close(self) -> None:
        self._unsubscribe()
        self.service.runner.watchers.remove(self._on_ivr)

    def inputs(self, caller: str, node: str = "main") -> int:
        return sum(1 for c, n, w in self.ivr if (c, n, w) == (caller, node, "input"))

    async def ready_for_digits(self, caller: str, count: int = 1) -> None:
        await wait_for(lambda: self.inputs(caller) >= count, 20, f"menu input #{count} for {caller}")

    def event(self, kind: str, caller: str) -> Any:
        return next((e for e in self.events if e.kind == kind and e.call.get("caller_num") == caller), None)

    async def wait_event(self, kind: str, caller: str, timeout: float = 20) -> Any:
        return await wait_for(lambda: self.event(kind, caller), timeout, f"{kind} of {caller}")


@pytest.fixture
def watch(service: HotlineService) -> Iterator[Watch]:
    w = Watch(service)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def clock(service: HotlineService, monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Pin the IVR's clock (restored after the test)."""

    def pin(at: datetime) -> None:
        monkeypatch.setattr(service.runner, "clock", lambda: at)

    pin(WORKDAY)
    return pin


@pytest.fixture(scope="module")
def customers(service: HotlineService) -> None:
    from cti.customers.models import Customer, PhoneNumber, Product, ServiceOrder

    if service.customers.lookup(VIP).status == "match":
        return
    with service.sessions.begin() as session:
        vip = Customer(customer_no="IVR-T-VIP", name="赵丽", vip=True, region="华东")
        vip.phones = [PhoneNumber(e164=f"+86{VIP}", raw=VIP, kind="mobile")]
        repair = Customer(customer_no="IVR-T-REPAIR", name="钱军", region="华北")
        repair.phones = [PhoneNumber(e164=f"+86{OPEN_REPAIR}", raw=OPEN_REPAIR, kind="mobile")]
        aircon = Product(model="KFR-35GW", serial="T1", installed_on=datetime(2020, 5, 6, tzinfo=UTC).date())
        repair.products = [aircon]
        repair.orders = [ServiceOrder(kind="repair", status="open", opened_at=datetime(2026, 11, 20, tzinfo=UTC),
                                      fault_description="不制冷", product=aircon)]
        english = Customer(customer_no="IVR-T-EN", name="John Smith", region="华东", language="en")
        english.phones = [PhoneNumber(e164=f"+86{ENGLISH}", raw=ENGLISH, kind="mobile")]
        session.add_all([vip, repair, english])


async def logged_in(service: HotlineService, **wanted: int) -> None:
    """Wait until the tracker shows exactly this many logged-in agents per queue."""
    view = TrackerQueueLoad(service.tracker)
    await wait_for(lambda: all(view.load(q).known and view.load(q).logged_in == n for q, n in wanted.items()),
                   15, f"agents logged in: {wanted}")


async def dial(phones: PhoneFactory, sandbox: Sandbox, number: str) -> Any:
    caller = await phones(f"caller{number}", username=number)
    call = await caller.call(hotline_uri(sandbox), headers=carrier_headers())
    await call.wait_state("CONFIRMED", timeout=15)
    return call


def unknown_caller(service: HotlineService, number: str) -> str:
    assert service.customers.lookup(number).status == "unknown", number
    return number


async def test_each_menu_choice_reaches_its_queue(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
    watch: Watch, clock: Callable[[datetime], None],
) -> None:
    await asyncio.gather(*(agent_phone(phones, sandbox, definition, a) for a in ("1001", "1003")))
    await logged_in(service, repair=1, installation=1, complaint=1, operator=2)
    choices_before = dict(service.node_stats.choices)

    async def choose(number: str, digit: str) -> Any:
        call = await dial(phones, sandbox, unknown_caller(service, number))
        await watch.ready_for_digits(number)
        await call.send_dtmf(digit)
        joined = await watch.wait_event("queue_joined", number)
        await call.hangup()
        await watch.wait_event("call_ended", number)
        return joined.call

    paths = {"13512340001": ("1", "repair"), "13512340002": ("2", "installation"),
             "13512340003": ("3", "complaint"), "13512340004": ("0", "operator")}
    calls = await asyncio.gather(*(choose(n, d) for n, (d, _q) in paths.items()))
    for call, (number, (digit, queue)) in zip(calls, paths.items(), strict=True):
        assert call["caller_num"] == number
        assert call["queue"] == queue and call["menu_choice"] == digit
        assert call["route_reason"].startswith(f"menu:{digit}") and call["route_reason"].endswith(f"queue {queue}")
        assert service.node_stats.choices[("main", digit)] == choices_before.get(("main", digit), 0) + 1
    # 0 = operator: the route node looked at the (unknown) customer and used its default.
    assert "operator default: no rule matched (customer unknown)" in calls[3]["route_reason"]


async def test_invalid_input_timeout_and_hangup_mid_menu(
    sandbox: Sandbox, service: HotlineService, service_server: TestServer, definition: HotlineDefinition,
    phones: PhoneFactory, tokens: dict[str, str], watch: Watch, clock: Callable[[datetime], None],
) -> None:
    await asyncio.gather(*(agent_phone(phones, sandbox, definition, a) for a in ("1001", "1003")))
    await logged_in(service, repair=1, operator=2)
    stats = service.node_stats
    invalid, timeouts, hangups, failures = stats.invalid["main"], stats.timeouts["main"], stats.hangups["main"], \
        service.agi.failures

    async def invalid_then_valid(number: str) -> Any:
        call = await dial(phones, sandbox, unknown_caller(service, number))
        await watch.ready_for_digits(number)
        await call.send_dtmf("9")  # not on the menu: "invalid", then the menu again
        await watch.ready_for_digits(number, 2)
        await call.send_dtmf("1")
        joined = await watch.wait_event("queue_joined", number)
        await call.hangup()
        return joined.call

    async def silent(number: str) -> Any:
        call = await dial(phones, sandbox, unknown_caller(service, number))
        joined = await watch.wait_event("queue_joined", number, timeout=90)  # 3 x (prompts + 5 s)
        await call.hangup()
        return joined.call

    async def hang_up_mid_menu(number: str) -> Any:
        call = await dial(phones, sandbox, unknown_caller(service, number))
        await watch.ready_for_digits(number)
        await call.hangup()
        return (await watch.wait_event("call_ended", number)).call

    retried, timed_out, gone = await asyncio.gather(
        invalid_then_valid("13512340011"), silent("13512340012"), hang_up_mid_menu("13512340013"))

    assert retried["queue"] == "repair" and retried["menu_choice"] == "1"
    assert timed_out["queue"] == "operator" and timed_out["menu_choice"] is None
    assert "operator default" in timed_out["route_reason"]
    assert gone["outcome"] == "ivr_hangup" and gone["queue"] is None
    await wait_for(lambda: stats.hangups["main"] == hangups + 1, 10, "the hang-up counted")
    assert stats.invalid["main"] == invalid + 1
    assert stats.timeouts["main"] == timeouts + 3
    assert service.agi.failures == failures  # a hang-up is not a failure: nothing crashed

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {tokens['supervisor']}"}) as http:
        async with http.get(service_server.make_url("/ivr/stats")) as resp:
            assert resp.status == 200
            main = (await resp.json())["main"]
        async with http.get(service_server.make_url("/ivr/stats"),
                            headers={"Authorization": f"Bearer {tokens['agent1001']}"}) as resp:
            assert resp.status == 403
    assert main["hangups"] == stats.hangups["main"] and main["invalid"] == stats.invalid["main"]
    assert main["timeouts"] == stats.timeouts["main"] and main["entries"] == stats.entries["main"]
    assert main["seconds"] > 0 and main["choices"]["1"] >= 1


async def test_vip_customer_joins_ahead_of_waiting_callers(
    sandbox: Sandbox, service: HotlineService, service_server: TestServer, definition: HotlineDefinition,
    phones: PhoneFactory, tokens: dict[str, str], watch: Watch, clock: Callable[[datetime], None],
    customers: None,
) -> None:
    await agent_phone(phones, sandbox, definition, "1001")  # logged in, does not answer
    await logged_in(service, repair=1)
    regular = unknown_caller(service, "13512340021")

    first = await dial(phones, sandbox, regular)
    await watch.ready_for_digits(regular)
    await first.send_dtmf("1")
    waiting = await watch.wait_event("queue_joined", regular)
    assert waiting.data["position"] == 1
    vip = await dial(phones, sandbox, VIP)
    await watch.ready_for_digits(VIP)
    await vip.send_dtmf("1")
    joined = await watch.wait_event("queue_joined", VIP)
    # Same queue, joined later, but first in line: QUEUE_PRIO from the VIP rule.
    assert joined.call["queue"] == "repair" and joined.data["position"] == 1
    linkedid = joined.linkedid
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {tokens['admin']}"}) as http:
        async with http.get(service_server.make_url(f"/calls/{linkedid}")) as resp:
            body = await resp.json()
    assert body["route_reason"] == "menu:1; rule vip-priority: customer IVR-T-VIP vip=true; queue repair; priority 10"
    await asyncio.gather(first.hangup(), vip.hangup())
    await watch.wait_event("call_ended", VIP)


async def test_overflow_to_operator_when_no_agent_is_logged_in(
    sandbox: Sandbox, service: HotlineService, service_server: TestServer, definition: HotlineDefinition,
    phones: PhoneFactory, tokens: dict[str, str], watch: Watch, clock: Callable[[datetime], None],
    customers: None,
) -> None:
    operator = await agent_phone(phones, sandbox, definition, "1003", auto_answer=True)
    await logged_in(service, repair=0, operator=1)
    unknown = unknown_caller(service, "13512340031")

    async def press(number: str, digit: str) -> Any:
        call = await dial(phones, sandbox, number)
        await watch.ready_for_digits(number)
        await call.send_dtmf(digit)
        return call, await watch.wait_event("queue_joined", number)

    # 1 = repair, nobody logged in there; 0 by a customer with an open repair order routes to
    # repair by the customer record first, then overflows the same way.
    (call1, joined1), (call2, joined2) = await asyncio.gather(press(unknown, "1"), press(OPEN_REPAIR, "0"))
    assert joined1.call["queue"] == "operator" and joined2.call["queue"] == "operator"
    assert joined1.call["route_reason"] == (
        "menu:1; rule repair-no-agents: repair has 0 of 2 agents logged in; queue operator")
    assert joined2.call["route_reason"].startswith(
        "menu:0; rule open-repair: customer IVR-T-REPAIR open_repair=true; "
        "rule repair-no-agents: repair has 0 of 2 agents logged in; queue operator")
    # The operator's phone rings and answers one of them.
    await (await operator.wait_incoming(20)).wait_state("CONFIRMED", timeout=10)
    answered = await wait_for(lambda: next((c for c in service.tracker.calls.values()
                                            if c.caller_num in (unknown, OPEN_REPAIR) and c.agent), None),
                              15, "the operator answering")
    assert answered.agent == "1003"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {tokens['admin']}"}) as http:
        async with http.get(service_server.make_url(f"/calls/{joined1.linkedid}")) as resp:
            assert "rule repair-no-agents" in (await resp.json())["route_reason"]
    await asyncio.gather(call1.hangup(), call2.hangup())
    await watch.wait_event("call_ended", OPEN_REPAIR)


async def test_after_hours_caller_leaves_a_recorded_message(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
    speech_wav: Any, watch: Watch, clock: Callable[[datetime], None],
) -> None:
    clock(NATIONAL_DAY)
    number = unknown_caller(service, "13512340041")
    menu_entries, closed = service.node_stats.entries["main"], service.node_stats.routes[("hours", "closed")]
    call = await dial(phones, sandbox, number)
    await call.play(speech_wav, loop=True)  # the caller talks until the message is long enough
    decided = await watch.wait_event("ivr_decided", number)
    assert (decided.data["action"], decided.data["target"]) == ("voicemail", "operator")
    assert decided.call["route_reason"] == (
        "hours main closed: holiday 2026-10-01 12:00 Asia/Shanghai; message for operator")
    await leave_message(call, service.recordings.resolve(f"{decided.call['recording']}-message.wav"))
    ended = await watch.wait_event("call_ended", number)
    assert service.node_stats.entries["main"] == menu_entries  # no menu after hours
    assert service.node_stats.routes[("hours", "closed")] == closed + 1
    # The message is on disk beside the call's indexed legs, and it holds the caller's speech.
    message = service.recordings.resolve(f"{ended.call['recording']}-message.wav")
    await wait_for(lambda: message.is_file() and message.stat().st_size > 8000, 10, "the message file")
    assert analyze_wav(message).has_speech


async def test_customer_who_prefers_english_hears_english_prompts(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
    watch: Watch, clock: Callable[[datetime], None], customers: None,
) -> None:
    await agent_phone(phones, sandbox, definition, "1001")
    await logged_in(service, installation=1)
    log = sandbox.log_dir / "messages.log"

    def played(lang: str) -> int:
        text = log.read_text(errors="replace")
        return text.count(f"/sounds/{lang}/welcome") + text.count(f"/sounds/{lang}/connecting")

    english_before, chinese_before = played("en"), played("zh")
    call = await dial(phones, sandbox, ENGLISH)
    await watch.ready_for_digits(ENGLISH)
    await call.send_dtmf("2")
    joined = await watch.wait_event("queue_joined", ENGLISH)
    assert joined.call["queue"] == "installation"
    await call.hangup()
    await watch.wait_event("call_ended", ENGLISH)
    # Asterisk played the English welcome and connecting prompts (its own log), no Chinese ones.
    await wait_for(lambda: played("en") >= english_before + 2, 10, "English prompts in the Asterisk log")
    assert played("zh") == chinese_before
