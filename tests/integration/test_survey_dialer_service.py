"""The outbound path as the service runs it, against real Asterisk and pjsua2 customers.

* The do-not-call list is enforced by `cti.originate.Originator` itself: an Originate
  marked with a suppressed `customer_number` never reaches Asterisk (no Newchannel).
* The in-service dialer (`HOTLINE_SURVEY_DIALER=1`): a dedicated service instance with
  its own sandbox Asterisk (ports at the run's offset + 1000,
  like the other modules' own instances) and database; a campaign and
  its orders go in over REST, the service's own dialer calls the customers through the
  carrier trunk, one answers the survey end to end, one is busy (SIP 486, classified
  busy by the Originator from the leg's DialEnd, not Asterisk's `Reason: 0`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cti.ami.events import Newchannel, OriginateResponse
from cti.originate import OriginateRequest, Originator
from cti.suppression import SuppressionList
from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox, SandboxPorts
from hotline.service import HotlineService
from hotline.settings import load_settings
from ivr.survey.component import render_default_prompts
from tests.conftest import CACHE, PORT_OFFSET, bearer
from tests.integration.test_survey_calls import ScriptedCustomers, carrier_route, incoming, unique_numbers
from tests.support.calls import PhoneFactory, wait_for
from tests.support.sandboxes import running_sandbox

pytestmark = pytest.mark.asterisk


async def test_originate_to_a_suppressed_customer_sends_nothing(
    sandbox: Sandbox, service: HotlineService, phones: PhoneFactory,
) -> None:
    customer = await phones("cust-dnc-orig", auto_answer=True)
    number = unique_numbers(1)[0]
    dnc = SuppressionList(service.sessions)
    dnc.add(number, "asked not to be called")
    refused_id = f"dnc-{secrets.token_hex(4)}"
    marker_id = f"marker-{secrets.token_hex(4)}"
    sub = service.ami.subscribe(maxsize=100_000)
    try:
        async with Originator(service.ami, suppression=dnc) as originator:
            refused = await originator.originate(
                OriginateRequest(carrier_route(customer), context="survey-sim", exten="s", timeout_s=5,
                                 customer_number=f"+86{number}"), channel_id=refused_id)
            # A call that is allowed, sent after the refused one: once its OriginateResponse is
            # in, anything the refused request had sent would have shown up before it.
            other = unique_numbers(1)[0]
            marker = await originator.originate(
                OriginateRequest(f"Local/{other}@survey-sim", context="survey-sim", exten="s", timeout_s=10,
                                 customer_number=other), channel_id=marker_id)
        seen: list[Any] = []
        async with asyncio.timeout(15):
            while True:
                event = await sub.get()
                seen.append(event)
                if isinstance(event, OriginateResponse) and event.uniqueid == marker_id:
                    break
    finally:
        sub.close()
    assert refused.outcome == "suppressed" and not refused.success and "do-not-call" in refused.message
    assert marker.outcome == "answered"
    new_ids = [e.channel.uniqueid for e in seen if isinstance(e, Newchannel) and e.channel is not None]
    assert marker_id in new_ids and refused_id not in new_ids
    assert not any(isinstance(e, OriginateResponse) and e.uniqueid == refused_id for e in seen)
    assert originator.sent == 1 and incoming(customer) == []


# -- the service's own dialer ----------------------------------------------------------------
@pytest.fixture(scope="module")
def dialer_sandbox(definition: HotlineDefinition, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """Its own Asterisk instance (ports offset +1000 from the suite's, RTP ranges apart): its
    AGI port is the dedicated service's, so the survey flow runs in the service whose dialer
    placed the call."""
    with running_sandbox(f"svydial-{os.getpid()}", definition, SandboxPorts.offset(PORT_OFFSET + 1000),
                         tmp_path_factory.mktemp("svydial-sandbox"), CACHE,
                         prepare=lambda sb: render_default_prompts(sb.sounds_dir, CACHE / "prompts")) as sb:
        yield sb


@pytest.fixture(scope="module")
async def dialer_server(dialer_sandbox: Sandbox, definition: HotlineDefinition,
                        tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TestServer]:
    from hotline.app import create_app, flow_for

    state = dialer_sandbox.load_or_create_secrets(definition)
    settings = load_settings(
        env={"HOTLINE_SURVEY_DIALER": "1"}, data_dir=str(tmp_path_factory.mktemp("svydial-data")),
        ami_port=dialer_sandbox.ports.ami, agi_port=dialer_sandbox.ports.agi, sip_port=dialer_sandbox.ports.sip,
        ami_secret=str(state["ami_secret"]), recordings_dir=str(dialer_sandbox.recordings_dir),
    )
    assert settings.survey_dialer == 1
    app = create_app(settings, flow_for(definition, f"{dialer_sandbox.lib}/sounds"))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    from hotline.app import SERVICE

    await app[SERVICE].ami.wait_ready(timeout=15)
    try:
        yield server
    finally:
        await server.close()


async def test_in_service_dialer_surveys_a_customer_end_to_end(
    dialer_sandbox: Sandbox, dialer_server: TestServer, phones: PhoneFactory, speech_wav: Path,
) -> None:
    from hotline.app import SERVICE

    svc: HotlineService = dialer_server.app[SERVICE]
    assert svc.surveys.dialer is not None, "HOTLINE_SURVEY_DIALER=1 must start the dialer in the service"
    token = svc.tokens.issue("svydial-supervisor", "supervisor")
    n_happy, n_busy = unique_numbers(2)
    happy, busy = await asyncio.gather(phones(n_happy, auto_answer=True), phones(n_busy, reject_code=486))
    name = f"in-service-{secrets.token_hex(3)}"
    # The dial template reaches the customers through the carrier trunk; each test phone
    # listens on its own port, so each customer has a campaign whose template names it.
    camps = {n_happy: (f"{name}-a", happy), n_busy: (f"{name}-b", busy)}
    customers = ScriptedCustomers(svc, speech_wav)
    customers.add(f"+86{n_happy}", happy, "545")  # agent 5, technician 4, overall 5: no follow-up
    try:
        async with aiohttp.ClientSession(base_url=str(dialer_server.make_url(""))) as http:
            for number, (camp, phone) in camps.items():
                rules = {"window_start": "00:00", "window_end": "23:59", "max_attempts": 1, "ring_timeout_s": 10,
                         "max_concurrent": 2, "pace_per_second": 2,
                         "dial": f"PJSIP/carrier/sip:{{number}}@127.0.0.1:{phone.sip_port}"}
                resp = await http.post("/surveys/campaigns", headers=bearer(token),
                                       json={"name": camp, "trigger": "order_closed", "rules": rules})
                assert resp.status == 201, await resp.text()
                resp = await http.post(f"/surveys/campaigns/{camp}/orders", headers=bearer(token), json={
                    "order": f"SVC-{number}", "number": number, "technician": "李师傅", "agent": "1003"})
                assert resp.status in (200, 201), await resp.text()
            store = svc.surveys.store
            jobs = await wait_for(
                lambda: (j := {n: store.jobs(c)[0] for n, (c, _) in camps.items()})
                and j[n_happy]["state"] == "completed" and j[n_busy]["state"] == "closed" and j,
                90, "the service's dialer to finish both jobs", interval=0.2)
            resp = await http.get(f"/surveys/campaigns/{camps[n_happy][0]}/jobs", headers=bearer(token))
            assert resp.status == 200
            over_rest = await resp.json()
    finally:
        customers.close()
    assert not customers.errors, customers.errors
    done = jobs[n_happy]
    assert customers.pressed[f"+86{n_happy}"] == "545"
    assert done["answers"] == {"agent": "5", "technician": "4", "overall": "5", "comment": "recorded"}
    assert done["follow_up"] is None and done["attempts"] == 1
    [attempt] = done["attempt_log"]
    assert attempt["originate_outcome"] == "answered" and attempt["outcome"] == "completed"
    assert attempt["uniqueid"].startswith(f"survey-{done['id']}-1-")
    [rest_job] = over_rest["jobs"]  # the REST view shows the same stored result
    assert rest_job["state"] == "completed" and rest_job["answers"]["overall"] == "5"
    # Busy: the Originator itself says busy (Asterisk 22.10 reports Reason 0 for the 486).
    [busy_attempt] = jobs[n_busy]["attempt_log"]
    assert busy_attempt["originate_outcome"] == "busy", busy_attempt
    assert busy_attempt["outcome"] == "busy" and jobs[n_busy]["closed_reason"]
    # Each customer's phone rang exactly once; the service's status counts both Originates.
    assert [len(incoming(happy)), len(incoming(busy))] == [1, 1]
    assert svc.surveys.status()["dialer"] is True and svc.surveys.status()["originates_sent"] == 2
