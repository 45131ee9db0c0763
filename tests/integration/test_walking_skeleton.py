"""One real hotline call across every part: pjsua2 phones -> Asterisk 22 -> FastAGI IVR ->
queue -> agent, with AMI tracking, HTTP, recording index and VAD checks."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cti.ami.events import parse_event
from cti.ami.protocol import AMIParser
from cti.tracker import CallTracker
from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from recordings.vad import analyze_wav
from tests.support.ami_tap import AMITap
from tests.support.calls import PhoneFactory, agent_phone, carrier_headers, hotline_uri, wait_for

pytestmark = pytest.mark.asterisk
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"


def _event(events: list[Any], kind: str, **match: Any) -> Any:
    for e in events:
        if e.kind == kind and all(e.call.get(k) == v or e.data.get(k) == v for k, v in match.items()):
            return e
    return None


async def _first_incoming(agents: list[Any], timeout: float) -> tuple[Any, Any]:
    """The agent phone the queue rang first, and its call."""
    waits = {asyncio.ensure_future(a.wait_incoming(timeout)): a for a in agents}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    task = done.pop()
    return waits[task], task.result()


async def test_hotline_call_reaches_agent_end_to_end(
    sandbox: Sandbox, service: HotlineService, service_server: TestServer, definition: HotlineDefinition,
    phones: PhoneFactory, speech_wav: Path, tmp_path: Path, tokens: dict[str, str],
) -> None:
    events: list[Any] = []
    unsubscribe = service.subscribe(events.append)
    secret = str(sandbox.load_or_create_secrets(definition)["ami_secret"])
    tap = AMITap(sandbox.ports.ami, "hotline", secret)
    try:
        await tap.__aenter__()
        agents = list(await asyncio.gather(*(
            agent_phone(phones, sandbox, definition, a, auto_answer=True) for a in ("1001", "1002"))))
        caller = await phones("caller", username="13800138000")
        menu_entries = service.node_stats.entries["main"]

        call = await caller.call(hotline_uri(sandbox), headers=carrier_headers())
        await call.wait_state("CONFIRMED", timeout=10)
        started = await wait_for(lambda: _event(events, "call_started", caller_num="13800138000"), 10, "call_started")
        linkedid = started.linkedid

        # The menu is playing (its STREAM FILE accepts digits): press 1 for repair.
        await wait_for(lambda: service.node_stats.entries["main"] > menu_entries, 10, "the IVR menu")
        await call.send_dtmf("1")

        agent, agent_call = await _first_incoming(agents, timeout=20)
        await agent_call.wait_state("CONFIRMED", timeout=10)
        await agent_call.wait_media(timeout=5)
        heard = tmp_path / "agent-heard.wav"
        await agent_call.record(heard)
        await call.play(speech_wav)
        await call.wait_play_done(timeout=20)
        await agent_call.stop_record()
        await call.hangup()
        await call.wait_state("DISCONNECTED", timeout=10)

        ended = await wait_for(lambda: _event(events, "call_ended", linkedid=linkedid), 15, "call_ended")
    finally:
        unsubscribe()
        await tap.__aexit__(None, None, None)

    # The raw AMI bytes of this call, replayed byte by byte through the parser and a fresh
    # tracker, tell the same story as the live service (HOTLINE_RECORD_FIXTURES=1 keeps
    # them as tests/fixtures/ami/hotline_answered.ami for the replay unit tests).
    parser = AMIParser()
    replayed = CallTracker()
    for i in range(len(tap.data)):
        for message in parser.feed(bytes(tap.data[i:i + 1])):
            if message.kind == "event":
                replayed.feed(parse_event(message))
    replay_call = replayed.call(linkedid)
    assert replay_call is not None
    live_call = ended.call
    for key in ("menu_choice", "queue", "agent", "outcome", "caller_num", "recording"):
        assert replay_call.to_dict()[key] == live_call[key], key
    if os.environ.get("HOTLINE_RECORD_FIXTURES") == "1":
        (FIXTURES / "hotline_answered.ami").write_bytes(bytes(tap.data))

    # The agent heard the caller's speech (webrtcvad on the agent phone's recording).
    vad = analyze_wav(heard)
    assert vad.speech_seconds >= 1.5, vad

    # AMI told us the whole story for this Linkedid.
    kinds = [e.kind for e in events if e.linkedid == linkedid]
    for kind in ("call_started", "ivr_decided", "recording_started", "queue_joined", "agent_ringing",
                 "agent_answered", "call_ended"):
        assert kind in kinds, (kind, kinds)
    assert ended.data["outcome"] == "answered"

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {tokens['admin']}"}) as http:
        async with http.get(service_server.make_url(f"/calls/{linkedid}")) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["menu_choice"] == "1"
        assert body["queue"] == "repair"
        assert body["agent"] in ("1001", "1002")
        assert agent is agents[("1001", "1002").index(body["agent"])]
        assert body["caller_num"] == "13800138000"
        assert body["outcome"] == "answered"
        assert body["live"] is False
        assert 0 <= body["wait_seconds"] < 20
        assert body["talk_seconds"] >= 2.0
        assert body["duration_seconds"] > body["talk_seconds"]

        # Recording: indexed against the call at start, finalised at hangup, with speech.
        await service.flush()
        async with http.get(service_server.make_url(f"/calls/{linkedid}/recordings")) as resp:
            recs = (await resp.json())["recordings"]
        by_leg = {r["leg"]: r for r in recs}
        assert set(by_leg) == {"mix", "rx", "tx", "agent"}  # agent: the answering agent's own voice
        for leg, row in by_leg.items():
            assert row["status"] == "complete", row
            assert service.recordings.resolve(row["path"]).is_file(), leg
        assert by_leg["mix"]["has_speech"] is True
        assert by_leg["rx"]["has_speech"] is True  # the caller's own voice leg
        assert by_leg["mix"]["duration_seconds"] >= body["talk_seconds"] - 1

        # The same call is served from the database after the tracker forgets it.
        service.tracker.finished.pop(linkedid)
        async with http.get(service_server.make_url(f"/calls/{linkedid}")) as resp:
            stored = await resp.json()
        assert stored["queue"] == "repair" and stored["agent"] == body["agent"]
        assert stored["menu_choice"] == "1" and stored["outcome"] == "answered"

        async with http.get(service_server.make_url("/calls/no-such-call")) as resp:
            assert resp.status == 404
            assert (await resp.json())["error_id"] == "call-not-found"


HOSTILE_NAME = 'Evil"; EXEC System(touch /tmp/pwned) ;\\ |,$(x)'


async def test_hostile_caller_id_cannot_inject(
    sandbox: Sandbox, service: HotlineService, definition: HotlineDefinition, phones: PhoneFactory,
) -> None:
    """A caller-ID name full of AGI/dialplan metacharacters stays inert text."""
    events: list[Any] = []
    unsubscribe = service.subscribe(events.append)
    failures = service.agi.failures
    pwned = sandbox.host("/tmp/pwned")
    pwned.unlink(missing_ok=True)
    try:
        caller = await phones("evil", username="13900139000", display_name=HOSTILE_NAME)
        menu_entries = service.node_stats.entries["main"]
        call = await caller.call(hotline_uri(sandbox), headers=carrier_headers())
        await call.wait_state("CONFIRMED", timeout=10)
        started = await wait_for(lambda: _event(events, "call_started", caller_num="13900139000"), 10, "call")
        await wait_for(lambda: service.node_stats.entries["main"] > menu_entries, 10, "the IVR menu")
        await call.send_dtmf("3")
        decided = await wait_for(lambda: _event(events, "ivr_decided", linkedid=started.linkedid), 15, "decision")
        await call.hangup()
        await wait_for(lambda: _event(events, "call_ended", linkedid=started.linkedid), 15, "call_ended")
    finally:
        unsubscribe()
    # The IVR still worked: complaint queue chosen, no handler failure.
    assert decided.data["target"] == "complaint"
    assert service.agi.failures == failures
    # The dangerous text reached Asterisk and us as inert data, and nothing was executed.
    # (PJSIP keeps the SIP quoted-string escapes and Asterisk escapes `"` and `\` again
    # in the caller-ID name, so the name is not byte-equal to what the phone typed.)
    name = started.call["caller_name"]
    for part in ("Evil", '"', "; EXEC System(touch /tmp/pwned) ;", "|,$(x)"):
        assert part in name, (part, name)
    assert not pwned.exists()
    # The AGI environment gives the name as it was on the SIP wire (quoted-string content);
    # the service's Verbose line sent it back as one quoted argument: exactly one log line
    # with exactly that text, nothing executed.
    on_the_wire = HOSTILE_NAME.replace("\\", "\\\\").replace('"', '\\"')
    log = (sandbox.log_dir / "messages.log").read_text(errors="replace")
    lines = [line for line in log.splitlines() if "hotline call from" in line and "13900139000" in line]
    assert len(lines) == 1 and lines[0].endswith(f"hotline call from {on_the_wire} <13900139000>"), lines
