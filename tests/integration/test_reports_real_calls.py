"""Report numbers from real calls: scripted calls through a real Asterisk 22, then the
queue_log and CDR it wrote are imported and every number is checked against what the
test itself did (its own clock and choices), not against the report code.

A dedicated small hotline (tests/fixtures/reports/hotline-reports.yaml) gives each
scenario its own queue, so the seven calls run at the same time:

    A  fast    press 1, agent 1001 answers at once, caller speaks ~3 s, caller hangs up
    B  slow    press 2, agent 1002 lets it ring SLOW_RING s, answers, hangs up at once
    C  nobody  press 3, hangs up as soon as it is queued        (short abandon)
    D  nobody  press 3, hangs up LONG_WAIT s after being queued (abandon)
    E  nobody  press 3, waits until the queue's max_wait (8 s)   (timeout)
    F  -       hangs up in the menu                               (IVR hang-up)
    G  qa      press 4 with the X-Hotline-Test header, agent 1004  (test call)

A second test blind-transfers a call from agent 1001 back into the hotline and on to 1002
(piece-rate: the transfer in is internal).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cti import channel_vars as cv
from cti.customers.models import Customer, PhoneNumber
from cti.reports.importer import import_log_dir
from dialplans.definition import HotlineDefinition, load_definition
from hotline.sandbox import Sandbox, SandboxPorts
from hotline.settings import load_settings
from tests.conftest import CACHE, PORT_OFFSET, bearer
from tests.support.calls import PhoneFactory, agent_phone, carrier_headers, hotline_uri, wait_for
from tests.support.sandboxes import running_sandbox

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(240)]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reports"
DEFINITION = FIXTURES / "hotline-reports.yaml"
TZ = "Asia/Shanghai"
SERVICE_LEVEL = 3.0  # seconds; A is answered well within, B well after
SHORT_ABANDON = 3.0  # C waits < 1 s, D waits LONG_WAIT s
LONG_WAIT = 5.0
SLOW_RING = 5.0
MIN_TALK = 2.5  # piece-rate: A (~3.6 s of speech) counts, B (~0 s) does not
FAST_WRAPUP = 3  # the fast queue's wrapuptime (in the YAML), part of AHT
NUMBERS = {"A": "13811110001", "B": "13811110002", "C": "13811110003", "D": "13811110004",
           "E": "13811110005", "F": "13811110006", "G": "13811110007"}
REGIONS = {"A": "华东", "B": "华北", "E": "华东"}  # C, D, F, G: no customer record
#: queue_log counts whole seconds: a measured duration may differ by up to 1 s, plus our polling.
TOLERANCE = 1.6


@pytest.fixture(scope="module")
def report_definition() -> HotlineDefinition:
    defn = load_definition(DEFINITION)
    assert defn.queues["fast"].wrapup == FAST_WRAPUP
    return defn


@pytest.fixture(scope="module")
def report_sandbox(report_definition: HotlineDefinition, tmp_path_factory: pytest.TempPathFactory
                   ) -> Any:
    """Its own Asterisk instance (ports offset +400 from the suite's) with the small hotline."""
    with running_sandbox(f"reports-{os.getpid()}", report_definition, SandboxPorts.offset(PORT_OFFSET + 400),
                         tmp_path_factory.mktemp("reports-sandbox"), CACHE) as sb:
        yield sb


@pytest.fixture(scope="module")
async def report_server(report_sandbox: Sandbox, report_definition: HotlineDefinition,
                        tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TestServer]:
    from hotline.app import create_app, flow_for

    state = report_sandbox.load_or_create_secrets(report_definition)
    data_dir = tmp_path_factory.mktemp("reports-data")
    rules = data_dir / "rules.yaml"
    rules.write_text(f"reports: {{service_level_seconds: {SERVICE_LEVEL}, short_abandon_seconds: {SHORT_ABANDON},"
                     f" timezone: {TZ}, interval_minutes: 60}}\npiece_rate: {{min_talk_seconds: {MIN_TALK}}}\n")
    settings = load_settings(
        env={}, data_dir=str(data_dir), ami_port=report_sandbox.ports.ami, agi_port=report_sandbox.ports.agi,
        ami_secret=str(state["ami_secret"]), recordings_dir=str(report_sandbox.recordings_dir),
        definition=str(DEFINITION), asterisk_log_dir=str(report_sandbox.log_dir), report_rules=str(rules),
    )
    app = create_app(settings, flow_for(report_definition, f"{report_sandbox.lib}/sounds"))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    from hotline.app import SERVICE

    await app[SERVICE].ami.wait_ready(timeout=15)
    try:
        yield server
    finally:
        await server.close()


def _add_customers(service: Any) -> None:
    with service.sessions.begin() as session:
        for key, region in REGIONS.items():
            session.add(Customer(customer_no=f"RPT-{key}", name=f"Customer {key}", region=region,
                                 phones=[PhoneNumber(e164=f"+86{NUMBERS[key]}", raw=NUMBERS[key], kind="mobile")]))


def _find(events: list[Any], kind: str, pred: Callable[[Any], bool]) -> Any:
    return next((e for e in events if e.kind == kind and pred(e)), None)


async def test_report_numbers_match_scripted_real_calls(
    report_sandbox: Sandbox, report_server: TestServer, report_definition: HotlineDefinition,
    phones: PhoneFactory, speech_wav: Path,
) -> None:
    from hotline.app import SERVICE

    service = report_server.app[SERVICE]
    _add_customers(service)
    admin = service.tokens.issue("rpt-admin", "admin")
    supervisor = service.tokens.issue("rpt-supervisor", "supervisor")
    agent_tokens = {a: service.tokens.issue(f"rpt-agent-{a}", "agent", a) for a in ("1001", "1002")}
    events: list[Any] = []
    unsubscribe = service.subscribe(events.append)
    menu_entered: set[str] = set()

    def watcher(caller: str, node: str, what: str) -> None:
        if node == "main" and what == "enter":
            menu_entered.add(caller)

    service.runner.watchers.append(watcher)
    facts: dict[str, dict[str, float]] = {k: {} for k in NUMBERS}
    linkedids: dict[str, str] = {}

    fast, slow, tester = await asyncio.gather(
        agent_phone(phones, report_sandbox, report_definition, "1001", auto_answer=True),
        agent_phone(phones, report_sandbox, report_definition, "1002"),
        agent_phone(phones, report_sandbox, report_definition, "1004", auto_answer=True))

    async def dial(key: str, headers: dict[str, str] | None = None) -> Any:
        number = NUMBERS[key]
        phone = await phones(f"caller{key}", username=number)
        facts[key]["dialed_at"] = time.time()
        call = await phone.call(hotline_uri(report_sandbox), headers=carrier_headers(headers))
        await call.wait_state("CONFIRMED", timeout=15)
        started = await wait_for(lambda: _find(events, "call_started", lambda e: e.call["caller_num"] == number),
                                 15, f"call_started {key}")
        linkedids[key] = started.linkedid
        await wait_for(lambda: number in menu_entered, 15, f"menu for {key}")
        return call

    async def choose(key: str, call: Any, digit: str) -> None:
        """Press the digit until the call is queued (a digit sent before the prompt plays is lost)."""
        linkedid = linkedids[key]
        for _ in range(4):
            await call.send_dtmf(digit)
            try:
                await wait_for(lambda: _find(events, "queue_joined", lambda e: e.linkedid == linkedid), 3,
                               f"{key} queued")
            except AssertionError:
                continue
            facts[key]["joined_at"] = time.time()
            return
        raise AssertionError(f"call {key} never reached a queue")

    async def scenario_a() -> None:
        call = await dial("A")
        await choose("A", call, "1")
        agent_call = await fast.wait_incoming(15)
        await agent_call.wait_state("CONFIRMED", timeout=10)
        facts["A"]["answered_at"] = time.time()
        await call.wait_media(timeout=5)
        await call.play(speech_wav)
        await call.wait_play_done(timeout=20)
        await call.hangup()
        facts["A"]["ended_at"] = time.time()
        await agent_call.wait_state("DISCONNECTED", timeout=10)

    async def scenario_b() -> None:
        call = await dial("B")
        await choose("B", call, "2")
        agent_call = await slow.wait_incoming(15)
        await asyncio.sleep(SLOW_RING)  # the agent deliberately lets it ring
        await agent_call.answer()
        await agent_call.wait_state("CONFIRMED", timeout=10)
        facts["B"]["answered_at"] = time.time()
        await agent_call.hangup()
        facts["B"]["ended_at"] = time.time()
        await call.wait_state("DISCONNECTED", timeout=10)

    async def abandon(key: str, patience: float) -> None:
        call = await dial(key)
        await choose(key, call, "3")
        if patience:
            await asyncio.sleep(patience)  # the caller's patience is the scenario
        await call.hangup()
        facts[key]["ended_at"] = time.time()
        await call.wait_state("DISCONNECTED", timeout=10)

    async def scenario_e() -> None:
        call = await dial("E")
        await choose("E", call, "3")
        await call.wait_state("DISCONNECTED", timeout=40)  # max_wait, the apology, then Asterisk hangs up
        facts["E"]["ended_at"] = time.time()

    async def scenario_f() -> None:
        call = await dial("F")
        await call.hangup()
        facts["F"]["ended_at"] = time.time()
        await call.wait_state("DISCONNECTED", timeout=10)

    async def scenario_g() -> None:
        call = await dial("G", {cv.TEST_HEADER: "reports-qa"})
        await choose("G", call, "4")
        agent_call = await tester.wait_incoming(15)
        await agent_call.wait_state("CONFIRMED", timeout=10)
        await call.hangup()
        await agent_call.wait_state("DISCONNECTED", timeout=10)

    try:
        await asyncio.gather(scenario_a(), scenario_b(), abandon("C", 0.0), abandon("D", LONG_WAIT),
                             scenario_e(), scenario_f(), scenario_g())
        ended = set(linkedids.values())
        await wait_for(lambda: ended <= {e.linkedid for e in events if e.kind == "call_ended"}, 20,
                       "call_ended for all seven calls")
        await service.flush()
    finally:
        unsubscribe()
        service.runner.watchers.remove(watcher)

    # Asterisk writes each CDR when the call's last channel is gone: wait for all seven.
    cdr_file = report_sandbox.log_dir / "cdr-custom" / "hotline-cdr.csv"
    await wait_for(lambda: cdr_file.is_file() and all(lid in cdr_file.read_text() for lid in linkedids.values()),
                   20, "the CDRs of all seven calls")
    queue_log = report_sandbox.log_dir / "queue_log"
    if os.environ.get("HOTLINE_RECORD_FIXTURES") == "1":
        shutil.copy(queue_log, FIXTURES / "queue_log")
        shutil.copy(cdr_file, FIXTURES / "hotline-cdr.csv")

    zone = ZoneInfo(TZ)
    days = sorted({datetime.fromtimestamp(f["dialed_at"], UTC).astimezone(zone).date() for f in facts.values()})
    period = f"from={days[0].isoformat()}&to={days[-1].isoformat()}"

    async with aiohttp.ClientSession() as http:
        def url(path: str) -> Any:
            return report_server.make_url(path)

        # Import through the API, twice: the second import adds nothing.
        async with http.post(url("/reports/import"), headers=bearer(admin)) as resp:
            assert resp.status == 200, await resp.text()
            first = {Path(r["source"]).name: r for r in (await resp.json())["imports"]}
        assert first["queue_log"]["added"] > 0 and first["hotline-cdr.csv"]["added"] > 0
        assert not first["queue_log"]["rejected"] and not first["hotline-cdr.csv"]["rejected"]
        async with http.post(url("/reports/import"), headers=bearer(admin)) as resp:
            again = {Path(r["source"]).name: r for r in (await resp.json())["imports"]}
        assert again["queue_log"]["added"] == 0 and again["hotline-cdr.csv"]["added"] == 0
        # A full re-read of both files (`hotline report import --log-dir`) adds nothing either.
        full = await asyncio.to_thread(import_log_dir, service.sessions, report_sandbox.log_dir)
        assert [(Path(r.source).name, r.added, r.already_imported) for r in full] == [
            ("queue_log", 0, first["queue_log"]["added"]), ("hotline-cdr.csv", 0, first["hotline-cdr.csv"]["added"])]
        # Uploading the same file adds nothing; only an admin may import.
        async with http.post(url("/reports/import/queue_log"), data=queue_log.read_bytes(), headers=bearer(admin)) \
                as resp:
            upload = await resp.json()
        assert (upload["added"], upload["already_imported"]) == (0, first["queue_log"]["added"])
        async with http.post(url("/reports/import"), headers=bearer(supervisor)) as resp:
            assert resp.status == 403

        async with http.get(url(f"/reports/queues?{period}"), headers=bearer(supervisor)) as resp:
            assert resp.status == 200, await resp.text()
            queues = {q["queue"]: q for q in (await resp.json())["queues"]}
        async with http.get(url(f"/reports/summary?{period}"), headers=bearer(supervisor)) as resp:
            summary = await resp.json()
        async with http.get(url(f"/reports/agents?{period}"), headers=bearer(supervisor)) as resp:
            agents = {a["agent"]: a for a in (await resp.json())["agents"]}
        async with http.get(url(f"/reports/volume?{period}"), headers=bearer(supervisor)) as resp:
            volume = await resp.json()
        async with http.get(url(f"/reports/queues?{period}&format=csv"), headers=bearer(supervisor)) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            csv_text = await resp.text()
        async with http.get(url("/reports/queues?month=2026-13"), headers=bearer(supervisor)) as resp:
            assert resp.status == 400 and (await resp.json())["error_id"] == "invalid-period"
        async with http.get(url(f"/reports/payroll?{period}"), headers=bearer(supervisor)) as resp:
            assert resp.status == 404 and (await resp.json())["error_id"] == "report-not-found"
        # An agent may not read queue reports.
        async with http.get(url(f"/reports/queues?{period}"), headers=bearer(agent_tokens["1001"])) as resp:
            assert resp.status == 403

        # --- expectations from what the calls did -------------------------------------------
        wait_a = facts["A"]["answered_at"] - facts["A"]["joined_at"]
        wait_b = facts["B"]["answered_at"] - facts["B"]["joined_at"]
        talk_a = facts["A"]["ended_at"] - facts["A"]["answered_at"]
        assert wait_a < SERVICE_LEVEL - TOLERANCE and wait_b > SERVICE_LEVEL + TOLERANCE, (wait_a, wait_b)

        fast_q, slow_q, nobody, total = queues["fast"], queues["slow"], queues["nobody"], queues["(all)"]
        assert (fast_q["entered"], fast_q["answered"], fast_q["answered_in_service_level"]) == (1, 1, 1)
        assert fast_q["service_level"] == 1.0
        assert abs(fast_q["asa_seconds"] - wait_a) <= TOLERANCE
        assert abs(fast_q["avg_talk_seconds"] - talk_a) <= TOLERANCE
        assert abs(fast_q["aht_seconds"] - (talk_a + FAST_WRAPUP)) <= TOLERANCE
        assert (slow_q["entered"], slow_q["answered"], slow_q["answered_in_service_level"]) == (1, 1, 0)
        assert slow_q["service_level"] == 0.0
        assert abs(slow_q["asa_seconds"] - wait_b) <= TOLERANCE
        # nobody: C short abandon (not offered), D abandon, E timeout.
        assert (nobody["entered"], nobody["short_abandons"], nobody["offered"]) == (3, 1, 2)
        assert (nobody["abandoned"], nobody["timeouts"], nobody["answered"]) == (1, 1, 0)
        assert nobody["abandon_rate"] == 0.5
        assert nobody["max_wait_seconds"] >= 8 - 1
        # The test call G is in no queue number, only counted as excluded.
        assert queues.get("qa", {"entered": 0})["entered"] == 0
        assert queues["qa"]["test_calls_excluded"] == 1
        # All queues: 5 entered, 1 short abandon -> 4 offered; 1 answered in time -> SL 1/4.
        assert (total["entered"], total["offered"], total["answered"], total["abandoned"]) == (5, 4, 2, 1)
        assert total["service_level"] == 0.25 and total["abandon_rate"] == 0.25
        assert abs(total["asa_seconds"] - (wait_a + wait_b) / 2) <= TOLERANCE

        hotline = summary["hotline"]
        assert hotline == {"calls": 6, "ivr_hangups": 1, "ivr_hangup_rate": round(1 / 6, 4), "queued": 5,
                           "answered": 2, "test_calls": 1}
        assert summary["queues_total"]["offered"] == 4

        assert agents["1001"]["handled"] == 1 and agents["1002"]["handled"] == 1
        assert agents["1004"]["handled"] == 0 and agents["1004"]["test_calls_excluded"] == 1
        assert "1003" not in agents or agents["1003"]["handled"] == 0

        by_region = {r["region"]: r["calls"] for r in volume["by_region"]}
        assert by_region == {"华东": 2, "华北": 1, "(unknown)": 3}
        hours: dict[int, int] = {}
        for key in "ABCDEF":
            hour = datetime.fromtimestamp(facts[key]["dialed_at"], UTC).astimezone(zone).hour
            hours[hour] = hours.get(hour, 0) + 1
        got_hours = {h["hour"]: h["calls"] for h in volume["by_hour"] if h["calls"]}
        assert sum(got_hours.values()) == 6
        # A call dialled in the last second of an hour may start in the next one.
        assert got_hours == hours or sorted(got_hours) == sorted({*hours, *(h + 1 for h in hours)} & set(got_hours))

        header, *rows = csv_text.strip().splitlines()
        assert header.startswith("queue,entered,short_abandons,offered,answered")
        assert any(r.startswith("nobody,3,1,2,0,0,1,1,") for r in rows), rows

        # Piece-rate statements: A counts for 1001, B is too short for 1002, G is a test call.
        month = datetime.fromtimestamp(facts["A"]["dialed_at"], UTC).astimezone(zone).strftime("%Y-%m")
        async with http.get(url(f"/reports/statements/1001?month={month}"), headers=bearer(agent_tokens["1001"])) \
                as resp:
            assert resp.status == 200, await resp.text()
            st1001 = await resp.json()
        assert [(line["linkedid"], line["counted"]) for line in st1001["lines"]] == [(linkedids["A"], True)]
        assert st1001["counted_calls"] == 1 and st1001["piece_points"] == 1.0
        assert st1001["total_points"] == st1001["base_points"] + 1.0 + st1001["composite_points"]
        async with http.get(url(f"/reports/statements/1002?month={month}"), headers=bearer(supervisor)) as resp:
            st1002 = await resp.json()
        assert [(line["linkedid"], line["counted"]) for line in st1002["lines"]] == [(linkedids["B"], False)]
        assert st1002["lines"][0]["reason"].startswith("talk ")
        async with http.get(url(f"/reports/statements/1004?month={month}"), headers=bearer(supervisor)) as resp:
            st1004 = await resp.json()
        assert [(line["linkedid"], line["reason"]) for line in st1004["lines"]] == [(linkedids["G"], "test call")]
        # An agent may not read another agent's statement.
        async with http.get(url(f"/reports/statements/1002?month={month}"), headers=bearer(agent_tokens["1001"])) \
                as resp:
            assert resp.status == 403

    # A changed rule recomputes from the same raw rows: no short abandons, a 10 s service level.
    from cti.reports.rules import ReportRules
    from hotline.reports import report_service

    reports = report_service(service.settings, service.engine, service.sessions)
    first_day, last_day = date.fromisoformat(days[0].isoformat()), date.fromisoformat(days[-1].isoformat())
    p = reports.period(None, first_day.isoformat(), last_day.isoformat())
    relaxed = ReportRules(service_level_seconds=wait_b + TOLERANCE + 5, short_abandon_seconds=0, timezone=TZ)
    recomputed = {q["queue"]: q for q in reports.report("queues", p, relaxed)["queues"]}
    assert (recomputed["nobody"]["offered"], recomputed["nobody"]["abandoned"]) == (3, 2)
    assert recomputed["slow"]["answered_in_service_level"] == 1
    assert recomputed["(all)"]["service_level"] == round(2 / 5, 4)


async def test_transferred_call_counts_once_for_the_transferring_agent(
    report_sandbox: Sandbox, report_server: TestServer, report_definition: HotlineDefinition,
    phones: PhoneFactory, speech_wav: Path,
) -> None:
    """Agent 1001 answers, talks, blind-transfers the caller back into the hotline; the caller
    picks the slow queue and agent 1002 answers. Piece-rate: 1001's segment counts, 1002's
    is an internal transfer (README "Piece-rate rules")."""
    from hotline.app import SERVICE
    from hotline.reports import report_service

    service = report_server.app[SERVICE]
    number = "13811110008"
    events: list[Any] = []
    unsubscribe = service.subscribe(events.append)
    menus: list[str] = []

    def watcher(caller: str, node: str, what: str) -> None:
        if node == "main" and what == "enter" and caller == number:
            menus.append(caller)

    service.runner.watchers.append(watcher)
    first, second = await asyncio.gather(
        agent_phone(phones, report_sandbox, report_definition, "1001", auto_answer=True),
        agent_phone(phones, report_sandbox, report_definition, "1002", auto_answer=True))
    caller = await phones("callerH", username=number)

    def joins(linkedid: str) -> int:
        return sum(1 for e in events if e.kind == "queue_joined" and e.linkedid == linkedid)

    async def choose(call: Any, linkedid: str, digit: str, nth: int) -> None:
        for _ in range(4):
            await call.send_dtmf(digit)
            try:
                await wait_for(lambda: joins(linkedid) >= nth, 3, f"queue join {nth}")
                return
            except AssertionError:
                continue
        raise AssertionError(f"queue join {nth} never happened")

    try:
        call = await caller.call(hotline_uri(report_sandbox), headers=carrier_headers())
        await call.wait_state("CONFIRMED", timeout=15)
        started = await wait_for(lambda: _find(events, "call_started", lambda e: e.call["caller_num"] == number),
                                 15, "call_started")
        linkedid = started.linkedid
        await wait_for(lambda: len(menus) >= 1, 15, "the menu")
        await choose(call, linkedid, "1", 1)
        leg1 = await first.wait_incoming(15)
        await leg1.wait_state("CONFIRMED", timeout=10)
        await call.play(speech_wav)
        await call.wait_play_done(timeout=20)
        await leg1.transfer(hotline_uri(report_sandbox))
        assert await leg1.wait_transfer(timeout=10) == 200
        await wait_for(lambda: len(menus) >= 2, 15, "the menu after the transfer")
        await choose(call, linkedid, "2", 2)
        leg2 = await second.wait_incoming(15)
        await leg2.wait_state("CONFIRMED", timeout=10)
        await call.play(speech_wav)
        await call.wait_play_done(timeout=20)
        await call.hangup()
        await wait_for(lambda: _find(events, "call_ended", lambda e: e.linkedid == linkedid), 20, "call_ended")
        await service.flush()
    finally:
        unsubscribe()
        service.runner.watchers.remove(watcher)

    queue_log = report_sandbox.log_dir / "queue_log"
    await wait_for(lambda: any(f"|{linkedid}|slow|1002|COMPLETE" in line
                               for line in queue_log.read_text().splitlines()), 20, "the second segment logged")
    reports = report_service(service.settings, service.engine, service.sessions)
    reports.import_logs()
    month = datetime.now(UTC).astimezone(ZoneInfo(TZ)).strftime("%Y-%m")
    lines = {agent: [line for line in reports.statement(agent, month)["lines"] if line["linkedid"] == linkedid]
             for agent in ("1001", "1002")}
    assert [(line["counted"], line["queue"]) for line in lines["1001"]] == [(True, "fast")], lines
    assert lines["1001"][0]["talk_seconds"] >= MIN_TALK
    assert [(line["counted"], line["reason"]) for line in lines["1002"]] == [
        (False, "internal: transferred in by agent 1001")], lines
    assert f"|{linkedid}|fast|1001|BLINDTRANSFER|" in queue_log.read_text()
