"""The whole service killed with SIGKILL mid-campaign, then restarted (issue 6).

Unlike the `hotline survey dial` crash test in test_survey_calls.py, here the process
that dies runs everything: the dialer (`HOTLINE_SURVEY_DIALER=1`), the FastAGI survey
flow that is talking to a customer, the tracker. It is `hotline serve --sandbox` as a
subprocess against its own sandbox Asterisk (ports at the run's offset + 1400), with its
own data dir / SQLite database; the customers are pjsua2 phones reached through the
carrier trunk (`HOTLINE_SURVEY_ROUTES`).

Cap 1 concurrent call: when the first customer has answered the first question (the
answer is in the database) and is listening to the second, four jobs are still queued.
The service is killed there; while it is down the campaign's cap is raised to 4 (as a
supervisor would, `PATCH /surveys/campaigns/{name}`), and it is restarted. The evidence is independent of the service:
INVITEs each phone received, Newchannel / OriginateResponse events on our own AMI
session to that Asterisk, and the rows in the database.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from cti.ami.client import AMIClient
from cti.ami.events import Event, Newchannel, OriginateResponse
from cti.db import make_engine, session_factory
from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox, SandboxPorts
from ivr.survey.component import render_default_prompts
from ivr.survey.models import SurveyAnswer
from ivr.survey.rules import SystemClock
from ivr.survey.store import SurveyStore
from tests.conftest import CACHE, PORT_OFFSET
from tests.integration.test_survey_calls import carrier_route, incoming, unique_numbers
from tests.support.calls import PhoneFactory, wait_for
from tests.support.sandboxes import running_sandbox

pytestmark = pytest.mark.asterisk

ROOT = Path(__file__).resolve().parents[2]
OFFSET = PORT_OFFSET + 1400
HTTP_PORT = OFFSET + 8080


@pytest.fixture(scope="module")
def kill_sandbox(definition: HotlineDefinition, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """Its own Asterisk; its state lives in `<data dir>/sandbox`, where `hotline serve --sandbox` looks."""
    data_dir = tmp_path_factory.mktemp("svykill-data")
    with running_sandbox(f"svykill-{os.getpid()}", definition, SandboxPorts.offset(OFFSET), data_dir / "sandbox", CACHE,
                         prepare=lambda sb: render_default_prompts(sb.sounds_dir, CACHE / "prompts")) as sb:
        yield sb


class ServiceProcess:
    """`hotline serve --sandbox` in its own process, started and killed by pid."""

    def __init__(self, sandbox: Sandbox, routes: Path, log: Path) -> None:
        self.sandbox = sandbox
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
        self.env.update({"HOTLINE_DATA_DIR": str(sandbox.state_dir.parent), "HOTLINE_HTTP_PORT": str(HTTP_PORT),
                         "HOTLINE_SURVEY_DIALER": "1", "HOTLINE_SURVEY_ROUTES": str(routes),
                         "PYTHONPATH": str(ROOT)})
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, http: aiohttp.ClientSession) -> None:
        out = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hotline.cli", "serve", "--sandbox", self.sandbox.instance,
                "--port-offset", str(OFFSET), env=self.env, stdout=out, stderr=out, cwd=str(ROOT))
        finally:
            os.close(out)
        # Up means: HTTP answers, AMI logged in and resynced, the dialer running.
        status: dict[str, Any] = {}
        try:
            async with asyncio.timeout(60):
                while True:
                    assert self.proc.returncode is None, self.log.read_text()[-3000:]
                    try:
                        async with http.get(f"http://127.0.0.1:{HTTP_PORT}/status") as resp:
                            status = await resp.json()
                        if status["ami"]["ready"] and status["surveys"]["dialer"]:
                            return
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise AssertionError(f"service not up: {status}") from None

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


class Customer:
    """A customer who answers, and presses each scripted key once a question is asked.

    A key pressed while a prompt without input (the intro) plays is lost, as on a real
    phone: the customer presses again until the answer is in the database (the flow
    commits each answer before the next prompt, so it shows within milliseconds).
    """

    def __init__(self, number: str, phone: Any, keys: str, store: SurveyStore, campaign: str) -> None:
        self.number, self.phone, self.keys = number, phone, keys
        self.store, self.campaign = store, campaign
        self.stored = ""  # keys the database confirmed, in order
        self.call: Any = None

    def answers(self) -> dict[str, str]:
        job = next(j for j in self.store.jobs(self.campaign) if j["number"] == self.number)
        return dict(job["answers"])

    def scored(self) -> int:
        return len([q for q in self.answers() if q != "comment"])

    async def run(self) -> None:
        self.call = await self.phone.wait_incoming(timeout=240)
        await self.call.wait_media(timeout=10)
        for key in self.keys:
            want = len(self.stored) + 1
            for _ in range(8):
                if self.call.ended:
                    return
                await self.call.send_dtmf(key)
                try:
                    await wait_for(lambda: self.scored() >= want, 3.0,  # noqa: B023 (awaited here)
                                   f"{self.number} key {key} stored", interval=0.1)
                except AssertionError:
                    continue
                self.stored += key
                break
            else:
                raise AssertionError(f"{self.number}: key {key} never accepted")


def answer_rows(store: SurveyStore, job_id: int) -> int:
    with store.sessions() as session:
        return session.scalar(select(func.count()).select_from(SurveyAnswer).where(SurveyAnswer.job_id == job_id)) or 0


async def finished_jobs(store: SurveyStore, name: str, drivers: list[asyncio.Task[None]],
                        timeout: float) -> dict[str, dict[str, Any]]:
    """The campaign's jobs by number once every one is completed or closed after the
    restart, and the customers' scripts have run to their end."""
    done: dict[str, dict[str, Any]] = await wait_for(
        lambda: (j := {x["number"]: x for x in store.jobs(name)})
        and all(x["state"] in ("completed", "closed") for x in j.values()) and j,
        timeout, "every job finished after the restart", interval=0.5)
    await asyncio.wait_for(asyncio.gather(*drivers), 30)
    return done


async def stop_all(drivers: list[asyncio.Task[None]], service: ServiceProcess) -> None:
    for task in drivers:
        task.cancel()
    if drivers:
        await asyncio.wait(drivers)
    await service.stop()


@pytest.mark.timeout(420)
async def test_service_killed_mid_survey_calls_nobody_twice_and_loses_no_answer(
    kill_sandbox: Sandbox, phones: PhoneFactory, tmp_path: Path,
) -> None:
    sb = kill_sandbox
    cust_phones = await asyncio.gather(*(phones(f"kill-c{i}", auto_answer=True) for i in range(5)))
    numbers = [f"+86{n}" for n in unique_numbers(5)]
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps({n: carrier_route(p) for n, p in zip(numbers, cust_phones, strict=True)}))
    service = ServiceProcess(sb, routes, tmp_path / "service.log")

    state = json.loads(sb.secrets_file.read_text())
    tap = AMIClient("127.0.0.1", sb.ports.ami, "hotline", str(state["ami_secret"]))
    await tap.start()
    await tap.wait_ready(timeout=15)
    events: list[Event] = []
    sub = tap.subscribe(maxsize=100_000)

    async def collect() -> None:
        async for event in sub:
            events.append(event)

    collector = asyncio.create_task(collect())
    drivers: list[asyncio.Task[None]] = []
    try:
        async with aiohttp.ClientSession() as http:
            await service.start(http)
            store = SurveyStore(session_factory(make_engine(f"sqlite:///{sb.state_dir.parent}/hotline.sqlite3")),
                                SystemClock())
            name = f"svc-kill-{secrets.token_hex(3)}"
            store.create_campaign(name, "order_closed", rules={
                "window_start": "00:00", "window_end": "23:59", "max_concurrent": 1, "pace_per_second": 1,
                "ring_timeout_s": 20, "max_attempts": 2})
            # The first customer presses 5 for the first question, then listens (the kill comes
            # during the second question); the others answer the whole survey after the restart.
            scripts = ["5"] + ["543", "453", "345", "554"]
            customers = [Customer(n, p, k, store, name)
                         for n, p, k in zip(numbers, cust_phones, scripts, strict=True)]
            for i, number in enumerate(numbers):
                assert store.on_order_closed(name, {"order": f"KILL-{i}", "number": number, "agent": "1002"}
                                             ).status == "queued"
            drivers = [asyncio.create_task(c.run()) for c in customers]
            first = await wait_for(lambda: next((c for c in customers if c.stored), None), 90,
                                   "a customer's first answer stored", interval=0.05)
            await service.kill()

            jobs = {j["number"]: j for j in store.jobs(name)}
            interrupted = jobs[first.number]
            queued_at_kill = [j for j in jobs.values() if j["state"] == "pending" and j["attempts"] == 0]
            assert interrupted["state"] == "dialing" and interrupted["answers"] == {"agent": "5"}
            assert len(queued_at_kill) == 4, jobs
            # The killed service never settled its call: one attempt is left in flight.
            assert [a["status"] for a in interrupted["attempt_log"]] == ["in_flight"]
            # While it is down, a supervisor lets the rest of the campaign dial four at a
            # time (so the four queued surveys run side by side, not one after another).
            assert store.update_rules(name, {"max_concurrent": 4})["rules"]["max_concurrent"] == 4

            await service.start(http)
            done = await finished_jobs(store, name, drivers, 240)
    finally:
        await stop_all(drivers, service)
        collector.cancel()
        await asyncio.wait({collector})
        sub.close()
        await tap.stop()

    log = (tmp_path / "service.log").read_text()
    # Nobody was called twice: one INVITE per phone, one attempt per job.
    assert [len(incoming(p)) for p in cust_phones] == [1] * 5, log[-3000:]
    assert {n: j["attempts"] for n, j in done.items()} == dict.fromkeys(numbers, 1)
    assert all(len(j["attempt_log"]) == 1 for j in done.values())
    # ... and Asterisk agrees: one channel and at most one OriginateResponse per attempt, and
    # no other survey channel of these jobs was ever created.
    uniqueids = {j["attempt_log"][0]["uniqueid"] for j in done.values()}
    job_prefixes = tuple(f"survey-{j['id']}-" for j in done.values())
    created = Counter(e.channel.uniqueid for e in events if isinstance(e, Newchannel) and e.channel is not None
                      and e.channel.uniqueid.startswith(job_prefixes))
    assert created == Counter(dict.fromkeys(uniqueids, 1)), created
    responses = Counter(e.uniqueid for e in events if isinstance(e, OriginateResponse) and e.uniqueid in uniqueids)
    assert all(n <= 1 for n in responses.values()), responses

    # The interrupted survey: settled as partial (final, not redialled), its one answer kept once.
    cut = done[first.number]
    assert cut["state"] == "closed" and cut["closed_reason"] == "partial", cut
    [attempt] = cut["attempt_log"]
    assert attempt["outcome"] == "partial" and attempt["reconciled"] is True, attempt
    assert cut["answers"] == {"agent": "5"} and answer_rows(store, cut["id"]) == 1
    assert first.stored == "5"
    assert "reconciled" in log

    # Every queued job completed after the restart, every key stored once, in its question.
    for customer in customers:
        if customer is first:
            continue
        job = done[customer.number]
        assert job["state"] == "completed", job
        assert customer.stored == customer.keys
        assert [job["answers"][q] for q in ("agent", "technician", "overall")] == list(customer.keys), job
        assert job["answers"]["comment"] == "recorded"
        assert answer_rows(store, job["id"]) == 4  # three scores and the comment, each once


@pytest.mark.timeout(420)
async def test_customer_answering_while_the_service_is_down_is_not_called_again(
    kill_sandbox: Sandbox, phones: PhoneFactory, tmp_path: Path,
) -> None:
    """The Originate reached the customer's phone; the service dies while it rings; the
    customer answers while nothing listens on FastAGI (Asterisk hangs up at once) and the
    call is gone before the restart. The restarted dialer must not take that for an
    Originate that never left (which it may dial again at once)."""
    sb = kill_sandbox
    ringing, later = await asyncio.gather(phones("kill-ring"), phones("kill-later", auto_answer=True))
    n_ringing, n_later = (f"+86{n}" for n in unique_numbers(2))
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps({n_ringing: carrier_route(ringing), n_later: carrier_route(later)}))
    service = ServiceProcess(sb, routes, tmp_path / "service.log")
    drivers: list[asyncio.Task[None]] = []
    try:
        async with aiohttp.ClientSession() as http:
            await service.start(http)
            store = SurveyStore(session_factory(make_engine(f"sqlite:///{sb.state_dir.parent}/hotline.sqlite3")),
                                SystemClock())
            name = f"svc-ring-{secrets.token_hex(3)}"
            store.create_campaign(name, "order_closed", rules={
                "window_start": "00:00", "window_end": "23:59", "max_concurrent": 1, "pace_per_second": 1,
                "ring_timeout_s": 30, "max_attempts": 2, "retry_delays": {"no_answer": 1, "failed": 1}})
            for i, number in enumerate((n_ringing, n_later)):
                assert store.on_order_closed(name, {"order": f"RING-{i}", "number": number}).status == "queued"
            call = await ringing.wait_incoming(timeout=60)
            await service.kill()
            await call.answer()
            await call.wait_state("DISCONNECTED", timeout=15)  # FastAGI refused: Asterisk hangs up
            customer = Customer(n_later, later, "555", store, name)
            drivers = [asyncio.create_task(customer.run())]
            await service.start(http)
            done = await finished_jobs(store, name, drivers, 180)
    finally:
        await stop_all(drivers, service)
    log = (tmp_path / "service.log").read_text()
    assert len(incoming(ringing)) == 1, (done[n_ringing], log[-3000:])
    assert done[n_later]["state"] == "completed" and len(incoming(later)) == 1
    # The Originate was marked sent before it left, so the restart settles it as "unknown"
    # (no retry rule for it here: closed, never a blind redial).
    [attempt] = done[n_ringing]["attempt_log"]
    assert (attempt["originate_outcome"], attempt["outcome"], attempt["reconciled"]) == ("sent", "unknown", True)
    assert done[n_ringing]["state"] == "closed" and done[n_ringing]["attempts"] == 1, done[n_ringing]
    assert "reconciled: unknown" in log


def test_an_attempt_that_never_left_is_redialled_under_a_new_attempt_number(tmp_path: Path) -> None:
    """Killed between the claim's commit and the Originate: "not_dialed" gives the attempt back,
    and the next claim must not collide with the old row (job_id, attempt_no is unique)."""
    from cti.db import create_schema

    engine = make_engine(f"sqlite:///{tmp_path}/claims.sqlite3")
    create_schema(engine)
    store = SurveyStore(session_factory(engine), SystemClock())
    camp = store.create_campaign("never-left", "order_closed", rules={"window_start": "00:00", "window_end": "23:59"})
    [number] = unique_numbers(1)
    assert store.on_order_closed("never-left", {"order": "NL-1", "number": number}).status == "queued"
    first = store.claim_next(camp["id"])
    assert first is not None
    assert store.reconcile(first.attempt_id, live=False) == "not_dialed"
    again = store.claim_next(camp["id"])
    assert again is not None and again.job_id == first.job_id and again.uniqueid != first.uniqueid
    [job] = store.jobs("never-left")
    assert job["attempts"] == 1  # the rules count one call ...
    assert [(a["attempt_no"], a["outcome"]) for a in job["attempt_log"]] == [(1, "not_dialed"), (2, None)]
