"""IVR nodes the default hotline does not use, proven with real calls (pjsua2 phones).

A small hotline (tests/fixtures/ivr/hotline-nodes.yaml) runs in its own sandbox
Asterisk with its own service: transfer to an agent (answered: audio both ways;
unanswered: apology + operator queue), collect digits (`*` clears, `#` submits,
first and inter-digit timeouts, too few digits -> retry -> on_failure), routing
rules over the customer record (region) and over real queue load (callers really
waiting: `waiting_at_least`, `estimated_wait_over`), the `language` node, and an
after-hours message indexed as the call's `message` recording leg.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cti.customers.models import Customer, PhoneNumber
from dialplans.definition import HotlineDefinition, load_definition
from hotline.sandbox import Sandbox, SandboxPorts
from hotline.settings import load_settings
from ivr.routing import TrackerQueueLoad
from recordings.index import LEG_MESSAGE, STATUS_COMPLETE
from recordings.retention import reconcile
from recordings.vad import analyze_wav
from tests.conftest import CACHE, PORT_OFFSET, bearer
from tests.support.calls import PhoneFactory, agent_phone, carrier_headers, hotline_uri, leave_message, wait_for
from tests.support.sandboxes import running_sandbox

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(240)]

DEFINITION = Path(__file__).resolve().parents[1] / "fixtures" / "ivr" / "hotline-nodes.yaml"
WORKDAY = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # Wednesday 11:00 in Shanghai: open
NATIONAL_DAY = datetime(2026, 10, 1, 4, 0, tzinfo=UTC)  # a holiday in the fixture's calendar: closed
SOUTH, EAST = "13600000301", "13600000302"  # customers of this module (regions 华南, 华东)


@dataclass
class Nodes:
    sandbox: Sandbox
    definition: HotlineDefinition
    server: TestServer
    service: Any
    admin: str


@pytest.fixture(scope="module")
def nodes_definition() -> HotlineDefinition:
    return load_definition(DEFINITION)


@pytest.fixture(scope="module")
def nodes_sandbox(nodes_definition: HotlineDefinition, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """Its own Asterisk instance, ports in this run's second range (offset + 1000 .. + 1999)."""
    base = PORT_OFFSET + 1000
    ports = SandboxPorts(sip=base + 60, ami=base + 38, agi=base + 73, rtp_start=base + 100, rtp_end=base + 999)
    with running_sandbox(f"ivrnodes-{os.getpid()}", nodes_definition, ports, tmp_path_factory.mktemp("ivrnodes-sb"),
                         CACHE) as sb:
        yield sb


@pytest.fixture(scope="module")
async def nodes(nodes_sandbox: Sandbox, nodes_definition: HotlineDefinition,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Nodes]:
    from hotline.app import SERVICE, create_app, flow_for

    sb = nodes_sandbox
    state = sb.load_or_create_secrets(nodes_definition)
    settings = load_settings(
        env={}, data_dir=str(tmp_path_factory.mktemp("ivrnodes-data")), ami_port=sb.ports.ami,
        agi_port=sb.ports.agi, sip_port=sb.ports.sip, ami_secret=str(state["ami_secret"]),
        recordings_dir=str(sb.recordings_dir), definition=str(DEFINITION), asterisk_log_dir=str(sb.log_dir),
    )
    app = create_app(settings, flow_for(nodes_definition, f"{sb.lib}/sounds"))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    service = app[SERVICE]
    service.runner.clock = lambda: WORKDAY
    await service.ami.wait_ready(timeout=15)
    with service.sessions.begin() as session:
        for no, number, region in (("NODES-SOUTH", SOUTH, "华南"), ("NODES-EAST", EAST, "华东")):
            session.add(Customer(customer_no=no, name=no, region=region,
                                 phones=[PhoneNumber(e164=f"+86{number}", raw=number, kind="mobile")]))
    try:
        yield Nodes(sb, nodes_definition, server, service, service.tokens.issue("nodes-admin", "admin"))
    finally:
        await server.close()


class Watch:
    """Engine positions per caller (watchers), call events, and HOTLINE_IN_* VarSets from AMI."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.ivr: list[tuple[str, str, str]] = []
        self.events: list[Any] = []
        self.inputs_set: list[tuple[str, str, str]] = []  # (caller, variable, value)
        self._unsubscribe = service.subscribe(self.events.append)
        service.runner.watchers.append(self._on_ivr)
        self._ami = service.ami.subscribe()
        self._reader = asyncio.get_running_loop().create_task(self._read_ami())

    def _on_ivr(self, caller: str, node: str, what: str) -> None:
        self.ivr.append((caller, node, what))

    async def _read_ami(self) -> None:
        async for event in self._ami:
            variable = str(getattr(event, "variable", "") or "").lstrip("_")
            channel = getattr(event, "channel", None)
            if event.name == "VarSet" and variable.startswith("HOTLINE_IN_") and channel is not None:
                self.inputs_set.append((channel.caller_id_num, variable, str(event.value)))

    async def close(self) -> None:
        self._unsubscribe()
        self.service.runner.watchers.remove(self._on_ivr)
        self._ami.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def inputs(self, caller: str, node: str) -> int:
        return sum(1 for c, n, w in self.ivr if (c, n, w) == (caller, node, "input"))

    async def ready(self, caller: str, node: str = "main", count: int = 1) -> None:
        await wait_for(lambda: self.inputs(caller, node) >= count, 20, f"input #{count} at {node} for {caller}")

    def event(self, kind: str, caller: str) -> Any:
        return next((e for e in self.events if e.kind == kind and e.call.get("caller_num") == caller), None)

    async def wait_event(self, kind: str, caller: str, timeout: float = 20) -> Any:
        return await wait_for(lambda: self.event(kind, caller), timeout, f"{kind} of {caller}")


@pytest.fixture
async def watch(nodes: Nodes) -> AsyncIterator[Watch]:
    w = Watch(nodes.service)
    try:
        yield w
    finally:
        await w.close()


async def dial(phones: PhoneFactory, nodes: Nodes, number: str) -> Any:
    caller = await phones(f"caller{number}", username=number)
    call = await caller.call(hotline_uri(nodes.sandbox), headers=carrier_headers())
    await call.wait_state("CONFIRMED", timeout=15)
    return call


async def choose(phones: PhoneFactory, nodes: Nodes, watch: Watch, number: str, digit: str) -> Any:
    """Call the hotline and press `digit` at the main menu."""
    call = await dial(phones, nodes, number)
    await watch.ready(number)
    await call.send_dtmf(digit)
    return call


async def key_in(call: Any, watch: Watch, number: str, keys: str, *, last_waits: bool = True) -> None:
    """One key at a time, each once the engine is waiting for the next one (like a person typing)."""
    def past(count: int) -> Callable[[], bool]:
        return lambda: watch.inputs(number, "order") > count

    for i, key in enumerate(keys):
        seen = watch.inputs(number, "order")
        await call.send_dtmf(key)
        if i < len(keys) - 1 or last_waits:
            await wait_for(past(seen), 15, f"the engine taking {key!r}")


async def call_view(nodes: Nodes, linkedid: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(headers=bearer(nodes.admin)) as http:
        async with http.get(nodes.server.make_url(f"/calls/{linkedid}")) as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body


async def test_transfer_connects_the_agent_and_an_unanswered_transfer_gets_the_failsafe(
    nodes: Nodes, phones: PhoneFactory, watch: Watch, speech_wav: Path, tmp_path: Path,
) -> None:
    svc = nodes.service
    answering, ringing = await asyncio.gather(agent_phone(phones, nodes.sandbox, nodes.definition, "1003"),
                                              agent_phone(phones, nodes.sandbox, nodes.definition, "1005"))

    async def answered(number: str) -> tuple[Path, Path, Any]:
        call = await choose(phones, nodes, watch, number, "1")
        decided = await watch.wait_event("ivr_decided", number)
        assert (decided.data["action"], decided.data["target"]) == ("transfer", "1003")
        incoming = await answering.wait_incoming(20)
        await incoming.answer()
        await incoming.wait_state("CONFIRMED", timeout=10)
        heard_by_caller, heard_by_agent = tmp_path / "caller-heard.wav", tmp_path / "agent-heard.wav"
        await asyncio.gather(call.record(heard_by_caller), incoming.record(heard_by_agent))
        await asyncio.gather(call.play(speech_wav), incoming.play(speech_wav))
        await asyncio.gather(call.wait_play_done(timeout=20), incoming.wait_play_done(timeout=20))
        await asyncio.gather(call.stop_record(), incoming.stop_record())
        await call.hangup()
        await watch.wait_event("call_ended", number)
        return heard_by_caller, heard_by_agent, decided

    async def unanswered(number: str) -> tuple[Path, Any, Any, float]:
        call = await choose(phones, nodes, watch, number, "6")
        decided = await watch.wait_event("ivr_decided", number)
        assert (decided.data["action"], decided.data["target"]) == ("transfer", "1005")
        rings = await ringing.wait_incoming(20)  # the agent's phone rings and nobody answers
        rang_at = time.monotonic()
        def in_failsafe() -> bool:
            tracked = svc.tracker.call(decided.linkedid)
            return tracked is not None and tracked.route_reason == "failsafe"

        await wait_for(in_failsafe, 20, "the failsafe after the unanswered transfer")
        rang_for = time.monotonic() - rang_at
        apology = tmp_path / "apology.wav"
        await call.record(apology)
        joined = await watch.wait_event("queue_joined", number, timeout=20)
        await call.stop_record()
        await wait_for(lambda: rings.ended, 10, "Asterisk giving up on the ringing phone")
        await call.hangup()
        await watch.wait_event("call_ended", number)
        return apology, joined, decided, rang_for

    (caller_heard, agent_heard, decided), (apology, joined, failed, rang_for) = await asyncio.gather(
        answered("13600000101"), unanswered("13600000102"))

    # Connected: each side hears the other's speech (webrtcvad on what each phone received).
    for heard in (caller_heard, agent_heard):
        result = analyze_wav(heard)
        assert result.has_speech and result.speech_seconds >= 1.0, (heard.name, result)
    view = await call_view(nodes, decided.linkedid)
    assert view["route_reason"] == "menu:1; transfer to 1003"
    # Unanswered: rang the node's 5 s, then the apology (speech, not silence) and the operator queue.
    assert rang_for >= 4.0
    result = analyze_wav(apology)
    assert result.has_speech and result.speech_seconds >= 1.0, result
    assert joined.call["queue"] == "operator"
    assert (await call_view(nodes, failed.linkedid))["route_reason"] == "failsafe"


async def test_collect_digits_star_clears_hash_submits_timeouts_and_failure(
    nodes: Nodes, phones: PhoneFactory, watch: Watch,
) -> None:
    stats = nodes.service.node_stats
    invalid, timeouts, entries = stats.invalid["order"], stats.timeouts["order"], stats.entries["order"]

    async def corrected(number: str) -> Any:  # 9 9 * clears, then 1234#
        call = await choose(phones, nodes, watch, number, "2")
        await watch.ready(number, "order")
        await key_in(call, watch, number, "99*1234#", last_waits=False)
        decided = await watch.wait_event("ivr_decided", number)
        await call.hangup()
        return decided

    async def inter_digit_timeout(number: str) -> tuple[Any, float]:  # 56789, then silence submits
        call = await choose(phones, nodes, watch, number, "2")
        await watch.ready(number, "order")
        await key_in(call, watch, number, "56789")
        typed_at = time.monotonic()
        decided = await watch.wait_event("ivr_decided", number)
        waited = time.monotonic() - typed_at
        await call.hangup()
        return decided, waited

    async def too_short(number: str) -> Any:  # 12# -> "too short", retry; 7# -> on_failure
        call = await choose(phones, nodes, watch, number, "2")
        await watch.ready(number, "order")
        await key_in(call, watch, number, "12#")  # waits for the retry's prompt
        await key_in(call, watch, number, "7#", last_waits=False)
        joined = await watch.wait_event("queue_joined", number)
        await call.hangup()
        return joined

    async def silent(number: str) -> tuple[Any, float]:  # no key at all: two first-digit timeouts
        call = await choose(phones, nodes, watch, number, "2")
        await watch.ready(number, "order")
        asked_at = time.monotonic()
        joined = await watch.wait_event("queue_joined", number, timeout=40)
        waited = time.monotonic() - asked_at
        await call.hangup()
        return joined, waited

    numbers = ("13600000201", "13600000202", "13600000203", "13600000204")
    ok, (timed, typed_wait), short, (quiet, quiet_wait) = await asyncio.gather(
        corrected(numbers[0]), inter_digit_timeout(numbers[1]), too_short(numbers[2]), silent(numbers[3]))

    collected = {caller: value for caller, variable, value in watch.inputs_set if variable == "HOTLINE_IN_ORDER"}
    assert collected == {numbers[0]: "1234", numbers[1]: "56789"}  # from AMI VarSet; none for the failures
    for decided in (ok, timed):
        assert (decided.data["action"], decided.data["target"]) == ("hangup", "normal")
        assert decided.call["route_reason"] == "menu:2; hangup at got_order"
    assert typed_wait >= 1.5  # no '#' and fewer than max_digits: the 2 s inter-digit timeout submitted
    for joined in (short, quiet):
        assert joined.call["queue"] == "operator"
        assert (await call_view(nodes, joined.linkedid))["route_reason"] == "menu:2; queue operator"
    assert quiet_wait >= 2 * 4 - 1.0  # two first-digit timeouts of 4 s (minus the prompt's head start)
    assert stats.entries["order"] == entries + 4
    assert stats.invalid["order"] == invalid + 2  # 12 and 7: too short, twice
    assert stats.timeouts["order"] == timeouts + 2  # the silent caller, twice


async def test_routing_by_region_waiting_callers_estimated_wait_and_language(
    nodes: Nodes, phones: PhoneFactory, watch: Watch,
) -> None:
    svc, sb = nodes.service, nodes.sandbox
    assert svc.customers.lookup(SOUTH).status == "match" and svc.customers.lookup(EAST).status == "match"
    # Agents logged in (registered) but never answering: callers really wait in their queues.
    await asyncio.gather(*(agent_phone(phones, sb, nodes.definition, a) for a in ("1002", "1004")))
    view = TrackerQueueLoad(svc.tracker)
    await wait_for(lambda: all(view.load(q).known and view.load(q).logged_in == 1 for q in ("sales", "support")),
                   15, "agents 1002 and 1004 logged in")
    log = sb.log_dir / "messages.log"

    def played(path: str) -> int:
        return log.read_text(errors="replace").count(path) if log.exists() else 0

    zh_before, en_before = played("/sounds/zh/hello"), played("/sounds/en/hello")
    calls: list[Any] = []

    async def join(number: str, digit: str) -> Any:
        calls.append(await choose(phones, nodes, watch, number, digit))
        return await watch.wait_event("queue_joined", number)

    async def sales_line() -> list[Any]:  # two callers wait in sales, the third overflows
        first = await join(EAST, "3")
        second = await join("13600000303", "3")
        third = await join("13600000304", "3")
        return [first, second, third]

    async def support_line() -> list[Any]:  # one caller waits: the next one's estimate is over 60 s
        return [await join("13600000305", "5"), await join("13600000306", "5")]

    async def chinese() -> Any:
        call = await choose(phones, nodes, watch, "13600000307", "4")
        decided = await watch.wait_event("ivr_decided", "13600000307")
        await watch.wait_event("call_ended", "13600000307", timeout=20)  # the hangup node ends it
        calls.append(call)
        return decided

    sales, support, south, lang = await asyncio.gather(sales_line(), support_line(), join(SOUTH, "3"), chinese())

    assert [j.call["queue"] for j in sales] == ["sales", "sales", "overflow"]
    assert sales[0].call["route_reason"] == "menu:3; region default: no rule matched (customer match); queue sales"
    assert (await call_view(nodes, sales[2].linkedid))["route_reason"] == (
        "menu:3; region default: no rule matched (customer unknown); "
        "rule crowded: sales has 2 callers waiting; queue overflow")
    assert [j.call["queue"] for j in support] == ["support", "overflow"]
    reason = (await call_view(nodes, support[1].linkedid))["route_reason"]
    estimate = re.fullmatch(r"menu:5; rule slow: support estimated wait (\d+)s; queue overflow", reason)
    assert estimate is not None and int(estimate.group(1)) > 60, reason
    assert south.call["queue"] == "south"
    assert (await call_view(nodes, south.linkedid))["route_reason"] == (
        "menu:3; rule south-region: customer NODES-SOUTH region 华南; queue south")
    # The language node: the hangup node's prompt was played in Chinese, not English.
    assert lang.call["route_reason"] == "menu:4; hangup at hello"
    await wait_for(lambda: played("/sounds/zh/hello") == zh_before + 1, 10, "the Chinese prompt in the Asterisk log")
    assert played("/sounds/en/hello") == en_before
    await asyncio.gather(*(c.hangup() for c in calls if not c.ended), return_exceptions=True)


async def test_after_hours_message_is_indexed_with_the_call(
    nodes: Nodes, phones: PhoneFactory, watch: Watch, speech_wav: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = nodes.service
    monkeypatch.setattr(svc.runner, "clock", lambda: NATIONAL_DAY)
    number = "13600000401"
    call = await dial(phones, nodes, number)
    await call.play(speech_wav, loop=True)  # the caller talks until the message is long enough
    decided = await watch.wait_event("ivr_decided", number)
    assert (decided.data["action"], decided.data["target"]) == ("voicemail", "operator")
    await leave_message(call, svc.recordings.resolve(f"{decided.call['recording']}-message.wav"))
    ended = await watch.wait_event("call_ended", number)
    linkedid = ended.linkedid
    await svc.recorder.flush()  # index writes and the VAD analysis

    rows = {r.leg: r for r in svc.recordings.for_call(linkedid)}
    assert set(rows) == {"mix", "rx", "tx", LEG_MESSAGE}
    message = rows[LEG_MESSAGE]
    assert message.path == f"{ended.call['recording']}-message.wav"
    assert (message.linkedid, message.queue, message.status) == (linkedid, "operator", STATUS_COMPLETE)
    assert message.duration_seconds is not None and message.duration_seconds >= 2.0
    assert message.has_speech is True
    # Listed over REST with its call, and playable.
    async with aiohttp.ClientSession(headers=bearer(nodes.admin)) as http:
        async with http.get(nodes.server.make_url("/recordings"), params={"queue": "operator"}) as resp:
            assert resp.status == 200
            sets = {s["linkedid"]: s for s in (await resp.json())["recordings"]}
        legs = {leg["leg"]: leg for leg in sets[linkedid]["legs"]}
        assert legs[LEG_MESSAGE]["id"] == message.id and legs[LEG_MESSAGE]["has_speech"] is True
        assert sets[linkedid]["queue"] == "operator" and sets[linkedid]["caller_num"] == number
        async with http.get(nodes.server.make_url(f"/recordings/{message.id}/audio"),
                            params={"reason": "ivr node test"}) as resp:
            assert resp.status == 200
            audio = tmp_path / "message.wav"
            audio.write_bytes(await resp.read())
    assert analyze_wav(audio).has_speech
    # Reconciliation knows the file: not an orphan, not missing.
    found = await asyncio.to_thread(reconcile, svc.recorder.catalog)
    assert message.path not in found["files_without_rows"]
    assert message.path not in found["rows_without_files"]
