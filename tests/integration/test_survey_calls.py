"""Outbound surveys through the real sandbox Asterisk with pjsua2 "customer" phones.

Customers are reached through the carrier trunk (PJSIP/carrier/sip:<user>@127.0.0.1:<port>,
per-number routes). The survey flow runs in the service's FastAGI server; the dialer
runs in-process (with a controllable clock) or as a `hotline survey dial` subprocess
that is killed with SIGKILL mid-campaign and restarted.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cti.ami.events import Hangup, Newchannel, OriginateResponse
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from ivr.survey.component import render_default_prompts
from ivr.survey.dialer import SurveyDialer
from ivr.survey.rules import ManualClock
from ivr.survey.store import SurveyContext, SurveyStore
from tests.conftest import CACHE, bearer
from tests.support.calls import PhoneFactory, wait_for

pytestmark = pytest.mark.asterisk

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def survey_prompts(sandbox: Sandbox) -> None:
    render_default_prompts(sandbox.sounds_dir, CACHE / "prompts")


def carrier_route(phone: Any) -> str:
    return f"PJSIP/carrier/sip:{phone.name}@127.0.0.1:{phone.sip_port}"


def incoming(phone: Any) -> list[Any]:
    return [c for c in phone.calls if c.incoming]


def unique_numbers(count: int) -> list[str]:
    """Valid CN mobile numbers no other test uses (one survey per number per period)."""
    base = 13000000000 + secrets.randbelow(8_000_000) * 100
    return [str(base + i) for i in range(count)]


class ScriptedCustomers:
    """Customers who answer each question with their next scripted key and leave a spoken
    comment, driven by the survey flow's progress events (no sleeps, no polling)."""

    def __init__(self, service: HotlineService, speech: Path | None = None) -> None:
        self.flow = service.surveys.flow
        self.speech = speech
        self.scripts: dict[str, tuple[Any, list[str]]] = {}
        self.pressed: dict[str, str] = {}
        self.ended: dict[str, str] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.errors: list[BaseException] = []
        self.flow.listeners.append(self._on_progress)

    def add(self, e164: str, phone: Any, keys: str) -> None:
        self.scripts[e164] = (phone, list(keys))

    def close(self) -> None:
        self.flow.listeners.remove(self._on_progress)

    def _on_progress(self, ctx: SurveyContext, kind: str, what: str) -> None:
        if ctx.number not in self.scripts:
            return
        phone, keys = self.scripts[ctx.number]
        if kind == "end":
            self.ended[ctx.number] = what
        elif kind == "ask" and keys:
            self._spawn(self._press(ctx.number, phone, keys.pop(0)))
        elif kind == "record":
            self._spawn(self._comment(phone))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(task.exception())  # type: ignore[arg-type]

    @staticmethod
    def _live_call(phone: Any) -> Any:
        return next(c for c in reversed(incoming(phone)) if not c.ended)

    async def _press(self, number: str, phone: Any, key: str) -> None:
        call = self._live_call(phone)
        await call.wait_media(timeout=5)
        await call.send_dtmf(key)
        self.pressed[number] = self.pressed.get(number, "") + key

    async def _comment(self, phone: Any) -> None:
        call = self._live_call(phone)
        if self.speech is not None:
            await call.play(self.speech)
            await call.wait_play_done(timeout=15)
        await call.send_dtmf("#")


@pytest.fixture
async def http(service_server: TestServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=str(service_server.make_url(""))) as session:
        yield session


@pytest.fixture
def restore_clock(service: HotlineService) -> Iterator[None]:
    store = service.surveys.store
    original = store.clock
    yield
    store.clock = original


def job_by_number(store: SurveyStore, campaign: str) -> dict[str, dict[str, Any]]:
    return {j["number"]: j for j in store.jobs(campaign)}


async def test_survey_customers_answer_never_answer_busy_night_and_suppressed(
    sandbox: Sandbox, service: HotlineService, phones: PhoneFactory, http: aiohttp.ClientSession,
    tokens: dict[str, str], speech_wav: Path, survey_prompts: None, restore_clock: None,
) -> None:
    store = service.surveys.store
    # Tuesday 10:00 in Shanghai is 22:00 the evening before in New York.
    clock = ManualClock(datetime(2026, 9, 29, 2, 0, tzinfo=UTC))
    store.clock = clock
    happy, away, busy, night, dnc = await asyncio.gather(
        phones("cust-happy", auto_answer=True), phones("cust-away"), phones("cust-busy", reject_code=486),
        phones("cust-night", auto_answer=True), phones("cust-dnc", auto_answer=True))
    n_happy, n_away, n_busy, n_night, n_dnc = unique_numbers(5)
    e164 = {n: f"+86{n}" for n in (n_happy, n_away, n_busy, n_night, n_dnc)}
    routes = {e164[n]: carrier_route(p) for n, p in
              ((n_happy, happy), (n_away, away), (n_busy, busy), (n_night, night), (n_dnc, dnc))}
    name = f"scenarios-{secrets.token_hex(3)}"
    rules = {"window_start": "09:00", "window_end": "20:00", "max_attempts": 2, "ring_timeout_s": 4,
             "retry_delays": {"no_answer": 600, "busy": 300, "no_input": 1800}, "max_concurrent": 4,
             "pace_per_second": 5}

    # REST: qa may read but not create; a supervisor creates the campaign and the triggers.
    resp = await http.post("/surveys/campaigns", json={"name": name, "trigger": "order_closed", "rules": rules},
                           headers=bearer(tokens["qa"]))
    assert resp.status == 403
    resp = await http.post("/surveys/campaigns", json={"name": name, "trigger": "order_closed", "rules": rules},
                           headers=bearer(tokens["supervisor"]))
    assert resp.status == 201, await resp.text()
    resp = await http.post("/surveys/suppression", json={"number": n_dnc, "reason": "do not call"},
                           headers=bearer(tokens["supervisor"]))
    assert resp.status == 201
    for ref, number, zone in (("SO-1", n_happy, "Asia/Shanghai"), ("SO-2", n_away, "Asia/Shanghai"),
                              ("SO-3", n_busy, "Asia/Shanghai"), ("SO-4", n_night, "America/New_York"),
                              ("SO-5", n_dnc, "Asia/Shanghai")):
        resp = await http.post(f"/surveys/campaigns/{name}/orders", headers=bearer(tokens["supervisor"]), json={
            "order": ref, "number": number, "technician": "张师傅", "agent": "1001", "timezone": zone})
        assert resp.status in (200, 201), await resp.text()
    praise_before = store.praise_totals().get("1001", 0)

    customers = ScriptedCustomers(service, speech_wav)
    customers.add(e164[n_happy], happy, "541" "1")  # agent 5, technician 4, overall 1 -> callback offer: 1
    dialer = SurveyDialer(store, service.ami, campaigns=[name], routes=routes)
    run = asyncio.create_task(dialer.run())
    try:
        # First round at 10:00 Shanghai: the happy customer completes the survey; the others
        # are not answered / busy; New York is asleep; the suppressed number is never called.
        jobs = await wait_for(lambda: (j := job_by_number(store, name)) and j[e164[n_happy]]["state"] == "completed"
                              and j[e164[n_away]]["attempts"] == 1 and j[e164[n_away]]["state"] == "pending"
                              and j[e164[n_busy]]["attempts"] == 1 and j[e164[n_busy]]["state"] == "pending"
                              and j, 90, "the first round", interval=0.2)
        assert not customers.errors
        assert customers.pressed[e164[n_happy]] == "5411"
        done = jobs[e164[n_happy]]
        assert done["answers"] == {"agent": "5", "technician": "4", "overall": "1", "callback": "1",
                                   "comment": "recorded"}
        assert done["follow_up"]["callback_requested"] is True and "overall=1" in done["follow_up"]["reason"]
        comment = sandbox.recordings_dir / done["recordings"]["comment"]
        assert comment.is_file() and comment.stat().st_size > 8000 * 2  # more than a second of audio
        assert store.praise_totals().get("1001", 0) == praise_before + 1
        assert [a["outcome"] for a in jobs[e164[n_away]]["attempt_log"]] == ["no_answer"]
        assert [a["outcome"] for a in jobs[e164[n_busy]]["attempt_log"]] == ["busy"]
        # Busy from the Originator itself (leg DialEnd/cause), not only the store's hangup-cause fix-up.
        assert [a["originate_outcome"] for a in jobs[e164[n_busy]]["attempt_log"]] == ["busy"]
        assert jobs[e164[n_night]]["attempts"] == 0
        assert jobs[e164[n_night]]["next_attempt_at"] == "2026-09-29T13:00:00+00:00"  # 09:00 in New York
        assert jobs[e164[n_dnc]]["state"] == "closed" and jobs[e164[n_dnc]]["closed_reason"] == "suppressed"
        assert (len(incoming(happy)), len(incoming(away)), len(incoming(busy)), len(incoming(night)),
                len(incoming(dnc))) == (1, 1, 1, 0, 0)
        busy_attempt = jobs[e164[n_busy]]["attempt_log"][0]
        assert "window 09:00-20:00 Asia/Shanghai" in busy_attempt["rule"] and "attempt 1/2" in busy_attempt["rule"]
        await wait_for(lambda: store.jobs(name) and job_by_number(store, name)[e164[n_busy]]["attempt_log"][0][
            "hangup_cause"] is not None, 10, "the busy call's hangup cause")

        # Ten minutes later the retries are due: one more no-answer and one more busy, then closed.
        clock.advance(600)
        jobs = await wait_for(lambda: (j := job_by_number(store, name)) and j[e164[n_away]]["state"] == "closed"
                              and j[e164[n_busy]]["state"] == "closed" and j, 60, "the retries", interval=0.2)
        for number in (n_away, n_busy):
            assert jobs[e164[number]]["closed_reason"].startswith("max_attempts (2) reached"), jobs[e164[number]]
        assert [a["outcome"] for a in jobs[e164[n_away]]["attempt_log"]] == ["no_answer", "no_answer"]
        assert [a["outcome"] for a in jobs[e164[n_busy]]["attempt_log"]] == ["busy", "busy"]
        assert (len(incoming(away)), len(incoming(busy)), len(incoming(night))) == (2, 2, 0)

        # 09:00 in New York: now the night customer is called (and hangs up at once).
        clock.set(datetime(2026, 9, 29, 13, 0, tzinfo=UTC))
        call = await night.wait_incoming(15)
        await call.wait_state("CONFIRMED", timeout=10)
        await call.hangup()
        jobs = await wait_for(lambda: (j := job_by_number(store, name)) and j[e164[n_night]]["attempt_log"]
                              and j[e164[n_night]]["attempt_log"][0]["outcome"] and j, 30, "the night call's end",
                              interval=0.2)
        first = jobs[e164[n_night]]["attempt_log"][0]
        assert first["started_at"] == "2026-09-29T13:00:00+00:00" and "America/New_York" in first["rule"]
        assert first["outcome"] == "no_input" and jobs[e164[n_night]]["state"] == "pending"
        assert (len(incoming(dnc)), len(incoming(happy))) == (0, 1)
    finally:
        run.cancel()
        await asyncio.wait({run})
        customers.close()

    # Results: REST (readable by qa), with the order, technician and agent on every answer.
    resp = await http.get(f"/surveys/campaigns/{name}/results?format=csv", headers=bearer(tokens["qa"]))
    assert resp.status == 200
    lines = (await resp.text()).splitlines()
    assert lines[0].startswith("job,number,service_order,technician,agent")
    assert any(",SO-1,张师傅,1001," in line and ",overall,1," in line for line in lines)
    resp = await http.get("/surveys/followups", headers=bearer(tokens["supervisor"]))
    assert any(f["service_order"] == "SO-1" and f["callback_requested"] for f in (await resp.json())["followups"])


def _dialer_env(service: HotlineService) -> dict[str, str]:
    s = service.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update({"HOTLINE_DATA_DIR": str(s.data_dir), "HOTLINE_AMI_HOST": s.ami_host,
                "HOTLINE_AMI_PORT": str(s.ami_port), "HOTLINE_AMI_SECRET": s.ami_secret,
                "PYTHONPATH": str(ROOT)})
    if s.database_url:
        env["HOTLINE_DATABASE_URL"] = s.database_url
    return env


async def _start_dialer(service: HotlineService, campaign: str, routes: Path, log: Path) -> Any:
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hotline.cli", "survey", "dial", "--campaign", campaign, "--routes", str(routes),
            env=_dialer_env(service), stdout=out, stderr=out, cwd=str(ROOT))
    finally:
        os.close(out)
    return proc


async def test_dialer_killed_mid_campaign_calls_nobody_twice_and_keeps_every_answer(
    sandbox: Sandbox, service: HotlineService, phones: PhoneFactory, speech_wav: Path, survey_prompts: None,
    tmp_path: Path,
) -> None:
    store = service.surveys.store
    customers_phones = await asyncio.gather(*(phones(f"cust-r{i}", auto_answer=True) for i in range(4)))
    numbers = [f"+86{n}" for n in unique_numbers(4)]
    name = f"restart-{secrets.token_hex(3)}"
    store.create_campaign(name, "order_closed", rules={
        "window_start": "00:00", "window_end": "23:59", "max_concurrent": 2, "pace_per_second": 2,
        "ring_timeout_s": 15, "max_attempts": 2})
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps({n: carrier_route(p) for n, p in zip(numbers, customers_phones, strict=True)}))
    customers = ScriptedCustomers(service, speech_wav)
    for i, (number, phone) in enumerate(zip(numbers, customers_phones, strict=True)):
        customers.add(number, phone, "54" + "345"[i % 3])  # no low score: no callback offer
        store.on_order_closed(name, {"order": f"RS-{i}", "number": number, "agent": "1002"})
    ami_events = service.ami.subscribe()
    log = tmp_path / "dialer.log"
    first = await _start_dialer(service, name, routes, log)
    second = None
    try:
        # Kill -9 while two surveys are in progress (answers already stored) and jobs still wait.
        await wait_for(lambda: len([n for n in customers.pressed if len(customers.pressed[n]) >= 1]) >= 2,
                       60, "two surveys in progress", interval=0.05)
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        pending_at_kill = [j for j in store.jobs(name) if j["state"] == "pending"]
        assert pending_at_kill, "the campaign must still have jobs to dial after the kill"
        # Raised while no dialer runs: the waiting jobs need not wait for the two surveys
        # the killed dialer left going (they count as in flight until they settle).
        store.update_rules(name, {"max_concurrent": 4})
        second = await _start_dialer(service, name, routes, log)
        jobs = await wait_for(lambda: (j := store.jobs(name)) and all(x["state"] == "completed" for x in j) and j,
                              120, "every survey completed", interval=0.2)
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        customers.close()
    assert not customers.errors, customers.errors
    # Nobody was called twice: one INVITE per phone, one attempt per job, one Originate per job.
    assert [len(incoming(p)) for p in customers_phones] == [1, 1, 1, 1]
    assert [j["attempts"] for j in jobs] == [1, 1, 1, 1]
    uniqueids = {j["attempt_log"][0]["uniqueid"] for j in jobs}
    originated: Counter[str] = Counter()
    while len(ami_events):
        event = await ami_events.get(timeout=1)
        if isinstance(event, OriginateResponse) and event.uniqueid in uniqueids:
            originated[event.uniqueid] += 1
    ami_events.close()
    assert all(originated[u] <= 1 for u in uniqueids), originated
    # No answer was lost: every key a customer pressed is stored, in its question.
    for job in jobs:
        pressed = customers.pressed[job["number"]]
        assert [job["answers"][q] for q in ("agent", "technician", "overall")] == list(pressed), job
        assert job["answers"]["comment"] == "recorded"
    reconciled = [j for j in jobs if j["attempt_log"][0]["reconciled"]]
    assert reconciled, "the restarted dialer must have reconciled the calls its predecessor left in flight"
    assert "reconciled" in log.read_text()


async def test_campaign_of_200_jobs_holds_its_concurrency_cap_and_another_its_pacing(
    sandbox: Sandbox, service: HotlineService,
) -> None:
    """Two campaigns at once over Local channels (answer, 1 s of silence, hang up): 200 jobs
    bound by their concurrency cap (8), 100 jobs bound by pacing (5/s). Measured from AMI events."""
    store = service.surveys.store
    paced, capped = f"paced-{secrets.token_hex(3)}", f"capped-{secrets.token_hex(3)}"
    sim = {"window_start": "00:00", "window_end": "23:59", "dial": "Local/{number}@survey-sim",
           "context": "survey-sim", "exten": "s", "max_attempts": 1, "ring_timeout_s": 10}
    store.create_campaign(paced, rules={**sim, "pace_per_second": 5, "max_concurrent": 50})
    store.create_campaign(capped, rules={**sim, "pace_per_second": 50, "max_concurrent": 8})
    jobs_of: dict[int, str] = {}
    sizes = {paced: 100, capped: 200}
    for camp in (paced, capped):
        for i, number in enumerate(unique_numbers(sizes[camp])):
            result = store.enqueue(camp, number, f"load:{i}")
            assert result.status == "queued" and result.job_id is not None
            jobs_of[result.job_id] = camp
    starts: dict[str, list[float]] = {paced: [], capped: []}
    spans: dict[str, list[tuple[float, float]]] = {paced: [], capped: []}
    open_at: dict[str, tuple[str, float]] = {}
    sub = service.ami.subscribe(maxsize=1_000_000)
    dialer = SurveyDialer(store, service.ami, campaigns=[paced, capped])
    run = asyncio.create_task(dialer.run())

    def campaign_of(uniqueid: str) -> str | None:
        # Our ChannelId names the Local channel's ;1 half; Asterisk names the ;2 half "<id>;2".
        parts = uniqueid.split("-")
        if len(parts) == 4 and parts[0] == "survey" and parts[1].isdigit() and ";" not in uniqueid:
            return jobs_of.get(int(parts[1]))
        return None

    try:
        finished = 0
        async with asyncio.timeout(150):
            while finished < 300:
                event = await sub.get()
                at = float(event.raw.get("Timestamp") or 0)
                if isinstance(event, Newchannel) and event.channel is not None:
                    owner = campaign_of(event.channel.uniqueid)
                    if owner is not None:
                        starts[owner].append(at)
                        open_at[event.channel.uniqueid] = (owner, at)
                elif isinstance(event, Hangup) and event.channel is not None:
                    opened = open_at.pop(event.channel.uniqueid, None)
                    if opened is not None:
                        spans[opened[0]].append((opened[1], at))
                        finished += 1
        await wait_for(lambda: all(j["state"] == "closed" for camp in (paced, capped) for j in store.jobs(camp)),
                       30, "every load job settled", interval=0.5)
    finally:
        run.cancel()
        await asyncio.wait({run})
        sub.close()

    def max_concurrency(intervals: list[tuple[float, float]]) -> int:
        marks = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda m: (m[0], m[1]))
        level = peak = 0
        for _, step in marks:
            level += step
            peak = max(peak, level)
        return peak

    def max_per_second(times: list[float]) -> int:
        times = sorted(times)
        return max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))

    report: dict[str, dict[str, Any]] = {}
    for camp in (paced, capped):
        times = sorted(starts[camp])
        rate = (len(times) - 1) / (times[-1] - times[0])
        report[camp.split("-")[0]] = {"originates": len(times), "sustained_rate_per_s": round(rate, 2),
                                      "max_in_any_1s": max_per_second(times),
                                      "max_concurrent": max_concurrency(spans[camp])}
    print("survey dialer load:", json.dumps(report))
    paced_r, capped_r = report["paced"], report["capped"]
    assert paced_r["originates"] == 100 and capped_r["originates"] == 200
    # The dialer's own schedule: starts are decided at least 1/5 s apart; the attempt rows'
    # times add the claim's own database time (a few ms of jitter: one more may fit in 1 s) ...
    claimed = sorted(datetime.fromisoformat(a["started_at"]).timestamp()
                     for j in store.jobs(paced) for a in j["attempt_log"])
    assert max_per_second(claimed) <= 5 + 1, claimed
    # ... and Asterisk saw them at that rate too; its timestamps carry its own scheduling
    # jitter (a starved manager thread handles two queued Originates back to back).
    assert paced_r["max_in_any_1s"] <= 5 + 2 and 3.0 <= paced_r["sustained_rate_per_s"] <= 5.1
    assert 6 <= capped_r["max_concurrent"] <= 8
    assert all(j["attempts"] == 1 for camp in (paced, capped) for j in store.jobs(camp))


async def test_finished_hotline_call_is_sampled_into_a_call_ended_campaign(
    sandbox: Sandbox, service: HotlineService, definition: Any, phones: PhoneFactory,
) -> None:
    """The service's finished-call path: an answered repair call joins the campaign
    (sampling rate 1.0 for repair), with its agent, queue and linkedid."""
    from tests.support.calls import agent_phone, carrier_headers, hotline_uri

    store = service.surveys.store
    name = f"after-call-{secrets.token_hex(3)}"
    store.create_campaign(name, "call_ended", rules={"sample_rates": {"repair": 1.0, "*": 0.0}})
    number = unique_numbers(1)[0]
    events: list[Any] = []
    unsubscribe = service.subscribe(events.append)
    try:
        await asyncio.gather(*(agent_phone(phones, sandbox, definition, a, auto_answer=True)
                               for a in ("1001", "1002")))
        caller = await phones(f"caller{number}", username=number)
        menu_entries = service.node_stats.entries["main"]
        call = await caller.call(hotline_uri(sandbox), headers=carrier_headers())
        await call.wait_state("CONFIRMED", timeout=10)
        await wait_for(lambda: service.node_stats.entries["main"] > menu_entries, 10, "the IVR menu")
        await call.send_dtmf("1")
        answered = await wait_for(lambda: next((e for e in events if e.kind == "agent_answered"
                                                and e.call.get("caller_num") == number), None), 30, "an agent")
        await call.hangup()
        await wait_for(lambda: any(e.kind == "call_ended" and e.linkedid == answered.linkedid for e in events),
                       15, "call_ended")
        await service.flush()  # the finished-call write (and the survey trigger in it) is applied
    finally:
        unsubscribe()
        store.set_active(name, False)  # later tests' calls must not feed this campaign
    jobs = store.jobs(name)
    assert len(jobs) == 1, jobs
    job = jobs[0]
    assert job["number"] == f"+86{number}" and job["state"] == "pending"
    assert job["source_ref"] == f"call:{answered.linkedid}"
    assert job["agent"] == answered.call["agent"] and job["agent"] in ("1001", "1002")
