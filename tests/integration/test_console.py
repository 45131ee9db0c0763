"""The web console in headless Chromium (Playwright, Debian's /usr/bin/chromium) against the real service.

Roles: each token sees only its pages, and the server refuses the rest even when the
page is forced. Real calls (pjsua2 phones through the sandbox Asterisk): the wallboard's
waiting count rises and falls, the agent page pops the demo customer's card before the
phone is answered, a supervisor listens in from the call's row, a stream dropped
mid-call catches up with ``?since=``, "several matches" and "unknown caller" pop, a recording
plays through the Range-capable stream and leaves an access-log row, report charts match
the report API, a test call is launched from the page, and a hotline edit is validated,
published and rolled back from the editor. Every wait is one of Playwright's auto-waiting expectations.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import async_playwright, expect

from dialplans.definition import DEFAULT_PATH, HotlineDefinition
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from recordings.catalog import SetFilter
from tests.conftest import CACHE, PORT_OFFSET
from tests.support.calls import PhoneFactory, agent_phone, carrier_headers, hotline_uri, wait_for
from tests.support.publishing import publishing_service

pytestmark = pytest.mark.asterisk
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KNOWN_CALLER = "13800138000"  # demo customer DEMO-0001 张建国: two products, an open repair order
OPEN = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))  # a Wednesday, open
WAIT_MS = 20_000
ORIGINAL = DEFAULT_PATH.read_text(encoding="utf-8")
#: The editor test publishes to its own sandbox (and validates in a throwaway one), never the
#: shared one; like tests/integration/test_dialplan_publish.py at the session offset + 1000
#: and + 2000 unless HOTLINE_TEST_CONSOLE_PUBLISH_OFFSET says otherwise.
PUBLISH_OFFSET = int(os.environ.get("HOTLINE_TEST_CONSOLE_PUBLISH_OFFSET", PORT_OFFSET + 1000))
PAGES = {
    "admin": {"wallboard", "recordings", "surveys", "testcalls", "editor", "reports"},
    "supervisor": {"wallboard", "recordings", "surveys", "testcalls", "reports"},
    "qa": {"wallboard", "recordings", "surveys", "testcalls"},
    "agent1001": {"agent", "reports"},
}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def open_hours(service: HotlineService) -> Iterator[None]:
    before = service.runner.clock
    service.runner.clock = lambda: OPEN
    try:
        yield
    finally:
        service.runner.clock = before


@pytest.fixture(scope="module")
def demo_customers(service: HotlineService) -> None:
    from cti.customers.demo import generate

    if service.customers.lookup(KNOWN_CALLER).status != "match":
        generate(service.sessions, 50, seed=7)


class Console:
    """One logged-in browser tab; JavaScript errors on the page fail the test."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.sockets: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("websocket", lambda ws: self.sockets.append(ws.url))

    def cell(self, table: str, row: str, col: str) -> Any:
        return self.page.locator(f'[data-testid="{table}"] tr[data-id="{row}"] td[data-col="{col}"]')

    async def goto(self, page_id: str) -> None:
        await self.page.evaluate("id => { window.location.hash = '#/' + id; }", page_id)
        await expect(self.page.get_by_test_id(f"page-{page_id}")).to_be_visible()

    async def fetch_status(self, path: str) -> int:
        """What the server answers this tab's token on an API path (the nav is not the gate)."""
        status: int = await self.page.evaluate(
            """async path => (await fetch(path, {headers: {Authorization:
                 'Bearer ' + sessionStorage.getItem('hotline-console-token')}})).status""", path)
        return status


@pytest.fixture
async def console(browser: Any, service_server: TestServer) -> AsyncIterator[Any]:
    contexts: list[Any] = []
    tabs: list[Console] = []

    async def open_as(token: str, server: TestServer | None = None) -> Console:
        context = await browser.new_context()
        contexts.append(context)
        tab = Console(await context.new_page())
        tabs.append(tab)
        await tab.page.goto(str((server or service_server).make_url("/console/")))
        await tab.page.locator("#token").fill(token)
        await tab.page.get_by_role("button", name="Log in").click()
        await expect(tab.page.get_by_test_id("stream-state")).to_have_text("live", timeout=WAIT_MS)
        return tab

    try:
        yield open_as
    finally:
        for context in contexts:
            await context.close()
    for tab in tabs:
        assert not tab.errors, f"JavaScript errors on the page: {tab.errors}"


async def test_each_role_sees_only_its_pages_and_the_server_refuses_the_rest(
    console: Any, tokens: dict[str, str], service_server: TestServer,
) -> None:
    for who, pages in PAGES.items():
        tab = await console(tokens[who])
        nav = tab.page.locator("#nav a")
        await expect(nav).to_have_count(len(pages))
        assert set(await nav.evaluate_all("links => links.map(a => a.dataset.page)")) == pages
        role = "agent" if who.startswith("agent") else who
        await expect(tab.page.get_by_test_id("who")).to_contain_text(f"({role}")
    # Forcing a page the role may not see: the console says no, and so does the server.
    agent = await console(tokens["agent1001"])
    await agent.goto("agent")
    await agent.page.evaluate("() => { window.location.hash = '#/wallboard'; }")
    await expect(agent.page.get_by_test_id("not-allowed")).to_contain_text("agent may not open")
    assert await agent.fetch_status("/queues") == 403
    assert await agent.fetch_status("/recordings") == 403
    assert await agent.fetch_status("/reports/statements/1002?month=2026-11") == 403
    assert await agent.fetch_status("/reports/statements/1001?month=2026-11") == 200
    await agent.goto("reports")  # an agent's reports page is their own piece-rate statement
    await expect(agent.page.get_by_test_id("report")).to_contain_text("Statement 1001")
    await expect(agent.page.locator('button[data-report="queues"]')).to_have_count(0)
    qa = await console(tokens["qa"])
    assert await qa.fetch_status("/dialplan/history") == 403
    assert await qa.fetch_status("/reports/summary?month=2026-11") == 403
    assert await qa.fetch_status("/queues") == 200
    supervisor = await console(tokens["supervisor"])
    await supervisor.goto("reports")
    await expect(supervisor.page.get_by_test_id("tiles")).to_contain_text("service level")
    # A wrong token gets the login form's error, and the page stays logged out.
    tab = await console(tokens["qa"])
    page = await tab.page.context.new_page()
    await page.goto(str(service_server.make_url("/console/")))
    await page.evaluate("() => sessionStorage.clear()")
    await page.reload()
    await page.locator("#token").fill("not-a-token")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_test_id("login-error")).to_have_text("This token is not valid.")
    await expect(page.locator("#nav a")).to_have_count(0)


async def test_survey_campaign_created_on_the_page(console: Any, tokens: dict[str, str]) -> None:
    name = f"console-{os.getpid()}"
    tab = await console(tokens["supervisor"])
    await tab.goto("surveys")
    form = tab.page.locator("form", has_text="New campaign")
    await form.locator('input[name="name"]').fill(name)
    await form.get_by_role("button", name="Create").click()
    await expect(tab.page.locator(f'[data-testid="campaign-table"] tr[data-id="{name}"]')).to_have_count(1)
    await expect(tab.page.get_by_test_id("campaign-detail")).to_contain_text(f"Campaign {name}")
    await expect(tab.page.get_by_test_id("jobs-chart")).to_be_visible()
    qa = await console(tokens["qa"])  # qa reads campaigns but creates none
    await qa.goto("surveys")
    await expect(qa.page.locator(f'[data-testid="campaign-table"] tr[data-id="{name}"]')).to_have_count(1)
    await expect(qa.page.locator("form", has_text="New campaign")).to_have_count(0)
    assert await qa.fetch_status("/surveys/praise") == 200


async def test_console_files_are_served_safely(service_server: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(service_server.make_url("/console/app.js")) as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        async with http.get(service_server.make_url("/console"), allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/console/"
        for bad in ("/console/..%2Fweb.py", "/console/__init__.py", "/console/nope.js"):
            async with http.get(service_server.make_url(bad)) as resp:
                assert resp.status == 404, bad
        async with http.get(service_server.make_url("/whoami")) as resp:
            assert resp.status == 401


async def test_wallboard_and_screen_pop_follow_a_real_call(
    console: Any, tokens: dict[str, str], sandbox: Sandbox, service: HotlineService,
    definition: HotlineDefinition, phones: PhoneFactory, demo_customers: None, open_hours: None,
) -> None:
    phone = await agent_phone(phones, sandbox, definition, "1001")
    await wait_for(lambda: service.agents_view().get("1001", {}).get("state") == "available", 10,
                   "agent 1001 available")
    board = await console(tokens["supervisor"])
    await board.goto("wallboard")
    desk = await console(tokens["agent1001"])
    await desk.goto("agent")
    await expect(board.cell("agent-table", "1001", "state")).to_have_text("available")
    await expect(board.cell("queue-table", "repair", "waiting")).to_have_text("0")
    available_before = int(await board.cell("queue-table", "repair", "available").inner_text())
    assert available_before >= 1

    caller = await phones("known", username=KNOWN_CALLER)
    menu_entries = service.node_stats.entries["main"]
    call = await caller.call(hotline_uri(sandbox), headers=carrier_headers())
    await call.wait_state("CONFIRMED", timeout=10)
    await wait_for(lambda: service.node_stats.entries["main"] > menu_entries, 10, "the IVR menu")
    await call.send_dtmf("1")

    # The caller waits in the repair queue while agent 1001's phone rings.
    await expect(board.cell("queue-table", "repair", "waiting")).to_have_text("1", timeout=WAIT_MS)
    agent_call = await phone.wait_incoming(20)
    linkedid = next(c.linkedid for c in service.tracker.calls.values() if c.caller_num == KNOWN_CALLER)
    await expect(board.cell("call-table", linkedid, "state")).to_have_text("waiting")
    # The agent's card, before the answer.
    await expect(desk.page.get_by_test_id("call-state")).to_contain_text("ringing", timeout=WAIT_MS)
    await expect(desk.page.get_by_test_id("customer-name")).to_contain_text("张建国")
    await expect(desk.page.get_by_test_id("open-repair")).to_be_visible()
    await expect(desk.page.get_by_test_id("customer-address")).not_to_be_empty()
    products = desk.page.locator('[data-testid="products"] td[data-col="installed_on"]')
    await expect(products).to_have_count(2)
    assert all(d for d in await products.all_inner_texts())
    await expect(desk.page.locator('[data-testid="service-orders"] td[data-col="kind"]', has_text="repair").first) \
        .to_be_visible()
    assert agent_call.state != "CONFIRMED"

    await agent_call.answer()
    await expect(board.cell("queue-table", "repair", "waiting")).to_have_text("0", timeout=WAIT_MS)
    await expect(board.cell("call-table", linkedid, "state")).to_have_text("talking")
    await expect(board.cell("call-table", linkedid, "agent")).to_have_text("1001")
    await expect(board.cell("agent-table", "1001", "state")).to_have_text("in_call")
    await expect(desk.page.get_by_test_id("call-state")).to_contain_text("in call")

    # The supervisor listens in from the call's row: their phone (1004) rings into ChanSpy.
    listener = await agent_phone(phones, sandbox, definition, "1004")
    await board.page.get_by_test_id("monitor-endpoint").fill("1004")
    await board.cell("call-table", linkedid, "monitor").get_by_role("button", name="listen").click()
    await expect(board.page.get_by_test_id("monitor-state")).to_have_text("listen on agent 1001: ringing 1004")
    spy = await listener.wait_incoming(15)
    await spy.answer()
    await wait_for(lambda: any(r["linkedid"] == linkedid and r["user"] == "test-supervisor" and r["spy_started_at"]
                               for r in service.monitor.recent()), 10, "ChanSpyStart for the console's request")
    await spy.hangup()

    # The wallboard's stream goes away; the call ends meanwhile; on reconnect the
    # console asks for what it missed (?since=) and the call leaves the board.
    await board.page.evaluate("() => window.hotlineConsole.stream.stop()")
    await call.hangup()
    await wait_for(lambda: linkedid in service.tracker.finished, 15, "call_ended in the tracker")
    await board.page.evaluate("() => window.hotlineConsole.stream.start()")
    await expect(board.page.get_by_test_id("stream-state")).to_have_text("live", timeout=WAIT_MS)
    await expect(board.page.locator(f'[data-testid="call-table"] tr[data-id="{linkedid}"]')).to_have_count(0)
    assert "since=" in board.sockets[-1] and "since=" not in board.sockets[0]
    # Caught up by replay: the only snapshot is the first connection's.
    assert await board.page.evaluate("() => window.hotlineConsole.stream.snapshots") == 1
    await expect(desk.page.get_by_test_id("call-state")).to_contain_text("ended (answered)")


async def test_agent_pages_show_several_matches_and_an_unknown_caller(
    console: Any, tokens: dict[str, str], sandbox: Sandbox, service: HotlineService,
    definition: HotlineDefinition, phones: PhoneFactory, demo_customers: None, open_hours: None,
) -> None:
    shared, unknown = "13700137000", "13511112222"  # a household of two customers; nobody
    assert service.customers.lookup(shared).status == "several"
    assert service.customers.lookup(unknown).status == "unknown"
    agents = {a: await agent_phone(phones, sandbox, definition, a) for a in ("1001", "1002")}
    desks = {a: await console(tokens[f"agent{a}"]) for a in agents}
    for desk in desks.values():
        await desk.goto("agent")
    menu_entries = service.node_stats.entries["main"]

    async def dial(number: str) -> Any:
        caller = await phones(f"c{number}", username=number)
        call = await caller.call(hotline_uri(sandbox), headers=carrier_headers())
        await call.wait_state("CONFIRMED", timeout=10)
        return call

    calls = await asyncio.gather(dial(shared), dial(unknown))
    await wait_for(lambda: service.node_stats.entries["main"] >= menu_entries + 2, 10, "both callers in the menu")
    await asyncio.gather(*(c.send_dtmf("1") for c in calls))
    # Both agents ring (ringinuse=no), one for each caller; neither has answered.
    await asyncio.gather(*(p.wait_incoming(20) for p in agents.values()))
    for desk in desks.values():
        await expect(desk.page.get_by_test_id("call-state")).to_contain_text("ringing", timeout=WAIT_MS)
    by_caller: dict[str, Console] = {}
    for desk in desks.values():
        text = await desk.page.get_by_test_id("call-state").inner_text()
        by_caller[shared if shared in text else unknown] = desk
    assert set(by_caller) == {shared, unknown}
    several = by_caller[shared].page.get_by_test_id("several-matches")
    await expect(several.get_by_role("button")).to_have_count(2)
    names = set(await several.get_by_role("button").all_inner_texts())
    assert names == {"王磊", "王芳"}
    await several.get_by_role("button", name="王芳").click()
    await expect(by_caller[shared].page.get_by_test_id("customer-name")).to_contain_text("王芳")
    await expect(by_caller[unknown].page.get_by_test_id("unknown-caller")).to_contain_text(f"Unknown caller {unknown}")
    await asyncio.gather(*(c.hangup() for c in calls))
    for desk in desks.values():
        await expect(desk.page.get_by_test_id("call-state")).to_contain_text("ended", timeout=WAIT_MS)


async def _recorded_call(service: HotlineService, sandbox: Sandbox, definition: HotlineDefinition,
                         phones: PhoneFactory) -> dict[str, Any]:
    """A finished call with a recorded mix leg (the earlier test's, else a short new one)."""
    def done() -> dict[str, Any] | None:
        sets = service.recorder.catalog.search(SetFilter(limit=20))
        return next((s for s in sets if s["stopped_at"] and any(
            leg["leg"] == "mix" and (leg["size_bytes"] or 0) > 44 for leg in s["legs"])), None)

    earlier = await asyncio.to_thread(done)
    if earlier is not None:
        return earlier
    await agent_phone(phones, sandbox, definition, "1002", auto_answer=True)
    caller = await phones("rec", username="13900139000")
    menu_entries = service.node_stats.entries["main"]
    call = await caller.call(hotline_uri(sandbox), headers=carrier_headers())
    await call.wait_state("CONFIRMED", timeout=10)
    await wait_for(lambda: service.node_stats.entries["main"] > menu_entries, 10, "the IVR menu")
    await call.send_dtmf("1")
    await wait_for(lambda: any(c.agent for c in service.tracker.calls.values() if c.caller_num == "13900139000"),
                   30, "agent answer")
    await call.hangup()
    await service.flush()
    found: dict[str, Any] = await wait_for(done, 15, "the recording set finalised after the hangup", interval=0.1)
    return found


async def test_recording_plays_in_the_browser_and_is_logged(
    console: Any, tokens: dict[str, str], sandbox: Sandbox, service: HotlineService,
    definition: HotlineDefinition, phones: PhoneFactory, open_hours: None,
) -> None:
    rec = await _recorded_call(service, sandbox, definition, phones)
    mix = next(leg for leg in rec["legs"] if leg["leg"] == "mix")
    tab = await console(tokens["qa"])
    await tab.goto("recordings")
    await tab.page.locator(f'[data-testid="recordings-table"] tr[data-id="{rec["linkedid"]}"]').click()
    await tab.page.get_by_test_id("play-leg").select_option(str(mix["id"]))
    await tab.page.get_by_test_id("play-reason").fill("console test: quality check")
    await tab.page.get_by_role("button", name="Listen").click()
    audio = tab.page.get_by_test_id("audio-mix")
    await expect(audio).to_be_attached()
    handle = await audio.element_handle()
    # Chromium reads the WAV header through the stream (HAVE_METADATA) and knows its length.
    await tab.page.wait_for_function("a => a.readyState >= 1 && a.duration > 0", arg=handle, timeout=WAIT_MS)
    duration = await audio.evaluate("a => a.duration")
    assert abs(duration - (mix["duration_seconds"] or duration)) < 1.0
    rows = await asyncio.to_thread(service.recorder.catalog.access_log, mix["id"])
    mine = [r for r in rows if r["user"] == "test-qa" and r["reason"] == "console test: quality check"]
    assert mine and mine[0]["action"] == "play" and mine[0]["role"] == "qa"
    assert any(r["byte_range"] for r in mine)  # the browser asked with Range (206)
    others = [leg["id"] for leg in rec["legs"] if leg["leg"] != "mix"]
    for other in others:  # only the chosen leg was fetched (and logged)
        assert not [r for r in await asyncio.to_thread(service.recorder.catalog.access_log, other)
                    if r["reason"] == "console test: quality check"]
    # The qa role may not read the access log itself (supervisor, admin): the page hides it.
    await expect(tab.page.get_by_test_id("access-log")).to_have_count(0)


async def test_report_charts_show_the_imported_calls(
    console: Any, tokens: dict[str, str], sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition,
    phones: PhoneFactory, service_server: TestServer, open_hours: None,
) -> None:
    rec = await _recorded_call(service, sandbox, definition, phones)
    # The real queue_log and CDR the sandbox wrote, imported over REST (admin).
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {tokens['admin']}"}) as http:
        for kind, path in (("queue_log", sandbox.log_dir / "queue_log"),
                           ("cdr", sandbox.log_dir / "cdr-custom" / "hotline-cdr.csv")):
            async with http.post(service_server.make_url(f"/reports/import/{kind}"), data=path.read_bytes()) as resp:
                assert resp.status == 200, await resp.text()
        month = datetime.fromisoformat(rec["started_at"]).astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
        async with http.get(service_server.make_url("/reports/queues"), params={"month": month}) as resp:
            queues = {q["queue"]: q for q in (await resp.json())["queues"]}
    queue = rec["queue"]
    assert queues[queue]["offered"] >= 1 and queues[queue]["answered"] >= 1
    tab = await console(tokens["supervisor"])
    await tab.goto("reports")
    await tab.page.get_by_test_id("report-month").fill(month)
    await tab.page.locator('button[data-report="queues"]').click()
    for series in ("offered", "answered"):
        bar = tab.page.locator(f'[data-testid="queues-chart"] rect[data-row="{queue}"][data-series="{series}"]')
        await expect(bar).to_have_attribute("data-value", str(queues[queue][series]))
        assert float(await bar.get_attribute("height") or 0) > 0
    name_cell = tab.page.locator(f'td[data-col="queue"]:text-is("{queue}")')
    row = tab.page.locator('[data-testid="queues-table"] tr', has=name_cell)
    await expect(row.locator('td[data-col="offered"]')).to_have_text(str(queues[queue]["offered"]))
    await tab.page.locator('button[data-report="volume"]').click()
    await expect(tab.page.get_by_test_id("hour-chart").locator("rect")).to_have_count(24)


async def test_test_call_launched_from_the_page(
    console: Any, tokens: dict[str, str], service: HotlineService, open_hours: None,
) -> None:
    tab = await console(tokens["qa"])
    await tab.goto("testcalls")
    await tab.page.get_by_role("button", name="Run test call").click()
    verdict = tab.page.get_by_test_id("testcall-verdict")
    await expect(verdict).to_have_text("passed", timeout=90_000)
    run_id = await tab.page.get_by_test_id("launch-status").get_attribute("data-run")
    stored = await asyncio.to_thread(service.testcalls.store.get, run_id)
    assert stored is not None and stored["status"] == "passed" and stored["trigger"] == "api:test-qa"
    steps = tab.page.locator('[data-testid="steps"] td[data-col="ok"]')
    await expect(steps).to_have_count(3)
    assert await steps.all_inner_texts() == ["yes", "yes", "yes"]
    heard = await tab.page.get_by_test_id("heard-audio").element_handle()
    await tab.page.wait_for_function("a => a.readyState >= 1 && a.duration > 1", arg=heard, timeout=WAIT_MS)
    await expect(tab.page.locator(f'[data-testid="testcall-table"] tr[data-id="{run_id}"]')).to_have_count(1)
    # Scheduled from the page (the first run is one interval away), then stopped.
    form = tab.page.locator("form", has_text="Schedule the selected scenario")
    await form.locator('input[name="name"]').fill("console-nightly")
    await form.locator('input[name="interval"]').fill("900")
    await form.get_by_role("button", name="Schedule").click()
    await expect(tab.cell("schedule-table", "console-nightly", "enabled")).to_have_text("yes")
    await tab.cell("schedule-table", "console-nightly", "id").get_by_role("button", name="Stop").click()
    await expect(tab.cell("schedule-table", "console-nightly", "enabled")).to_have_text("no")
    stored_schedules = await asyncio.to_thread(service.testcalls.store.schedules)
    assert [(s.name, s.interval_seconds, s.enabled) for s in stored_schedules
            if s.name == "console-nightly"] == [("console-nightly", 900, False)]
    # A supervisor reads results but gets no launch button.
    sup = await console(tokens["supervisor"])
    await sup.goto("testcalls")
    await expect(sup.page.get_by_role("button", name="Run test call")).to_have_count(0)
    await expect(sup.page.locator(f'[data-testid="testcall-table"] tr[data-id="{run_id}"]')).to_have_count(1)


def _with_billing(text: str) -> str:
    """Menu key 4 goes to a new billing queue answered by agent 1003."""
    text = text.replace('        "0": operator\n', '        "0": operator\n        "4": billing\n', 1)
    text = text.replace("ivr:\n", "  billing:\n    name: 账务\n    members: [\"1003\"]\n\nivr:\n", 1)
    return text + "    billing:      { type: queue, queue: billing, prompts: [connecting] }\n"


@pytest.fixture(scope="module")
async def publishing(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[TestServer, Sandbox, str]]:
    """A service with a publisher on its own sandbox: the editor may change its dialplan.
    The smoke calls go through the menu, so the flow's clock says the hotline is open."""
    async with publishing_service(tmp_path_factory.mktemp("console-publish"), f"console-{os.getpid()}",
                                  PUBLISH_OFFSET, PUBLISH_OFFSET + 1000, ORIGINAL, lambda: OPEN, CACHE) as stack:
        yield stack.server, stack.sandbox, stack.service.tokens.issue("console-admin", "admin")


@pytest.mark.timeout(300)  # validation Asterisk, a smoke call and a rollback on a shared 2-core machine
async def test_hotline_edit_validated_published_and_rolled_back_from_the_editor(
    console: Any, publishing: tuple[TestServer, Sandbox, str],
) -> None:
    server, sb, admin = publishing
    queues_conf = sb.host(sb.etc) / "queues.conf"
    assert "[billing]" not in queues_conf.read_text()
    tab = await console(admin, server)
    await tab.goto("editor")
    editor = tab.page.get_by_test_id("definition")
    history = tab.page.get_by_test_id("history-table")
    await expect(history).to_be_visible()
    if await history.locator('td[data-col="status"]', has_text="live").count():
        await expect(editor).to_have_value(ORIGINAL)  # the live version, loaded from the history
    else:  # the running definition becomes a version at the first publish: the admin pastes it
        await expect(tab.page.get_by_test_id("no-live-version")).to_be_visible()

    # A broken edit: the finding names the YAML line; nothing is published.
    broken = ORIGINAL.replace('"3": complaint', '"3": complaints')
    await editor.fill(broken)
    await tab.page.locator("label", has_text="quick").locator("input").check()
    await tab.page.get_by_test_id("validate").click()
    await expect(tab.page.get_by_test_id("validate-result")).to_contain_text("problem")
    line = next(n for n, t in enumerate(broken.splitlines(), 1) if '"3": complaints' in t)
    finding = tab.page.get_by_test_id("findings").locator("li").first
    await expect(finding).to_contain_text(f"line {line}")
    await expect(finding).to_contain_text("complaints")

    # The good edit: diff, then publish (validated in a throwaway Asterisk, smoke-called).
    await editor.fill(_with_billing(ORIGINAL))
    await tab.page.get_by_test_id("diff-button").click()
    await expect(tab.page.get_by_test_id("diff")).to_contain_text('+        "4": billing')
    await tab.page.get_by_test_id("reason").fill("billing line from the console")
    await tab.page.get_by_test_id("publish").click()
    await expect(tab.page.get_by_test_id("publish-result")).to_contain_text("(live)", timeout=180_000)
    smoke = tab.page.locator('[data-testid="steps"] tr', has_text="smoke")
    await expect(smoke.first).to_be_visible()
    assert all("true" in row for row in await smoke.all_inner_texts())
    assert "[billing]" in queues_conf.read_text()
    first = tab.page.locator('[data-testid="history-table"] tbody tr').first
    await expect(first.locator('td[data-col="reason"]')).to_have_text("billing line from the console")
    await expect(first.locator('td[data-col="status"]')).to_have_text("live")

    # Roll back from the page: the previous files are live again, the editor shows them.
    await tab.page.get_by_test_id("rollback").click()
    await expect(tab.page.get_by_test_id("rollback-result")).to_contain_text("is live", timeout=180_000)
    assert "[billing]" not in queues_conf.read_text()
    await expect(editor).to_have_value(ORIGINAL)
    await expect(first.locator('td[data-col="status"]')).to_have_text("live")
    await expect(first.locator('td[data-col="kind"]')).to_have_text("rollback")
