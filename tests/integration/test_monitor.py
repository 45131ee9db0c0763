"""Live monitoring on a real call: the supervisor's phone rings into ChanSpy on the agent's
channel; webrtcvad on each phone's recording shows who hears whom in each mode."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cti.auth import Principal
from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from recordings.vad import analyze_wav
from tests.integration.test_testcall import open_hours  # noqa: F401 - fixture
from tests.support.calls import PhoneFactory, agent_phone, carrier_headers, hotline_uri, wait_for

pytestmark = pytest.mark.asterisk


def _event(events: list[Any], kind: str, linkedid: str | None = None, **call: Any) -> Any:
    return next((e for e in events if e.kind == kind and (linkedid is None or e.linkedid == linkedid)
                 and all(e.call.get(k) == v for k, v in call.items())), None)


def _spy_field(service: HotlineService, session_id: int, field: str) -> Callable[[], Any]:
    """The audit row's field, once the monitor stored it (from ChanSpyStart/Stop)."""
    return lambda: (service.monitor.get(session_id) or {}).get(field)


async def _heard(call: Any, path: Path) -> float:
    await call.stop_record()
    return (await asyncio.to_thread(analyze_wav, path)).speech_seconds


async def test_listen_whisper_barge_reach_the_right_people(
    sandbox: Sandbox, service: HotlineService, service_server: TestServer, definition: HotlineDefinition,
    phones: PhoneFactory, speech_wav: Path, tokens: dict[str, str], tmp_path: Path,
    open_hours: None,  # noqa: F811
) -> None:
    events: list[Any] = []
    unsubscribe = service.subscribe(events.append)
    try:
        agent, supervisor = await asyncio.gather(
            agent_phone(phones, sandbox, definition, "1001", auto_answer=True),
            agent_phone(phones, sandbox, definition, "1004", auto_answer=True))
        caller = await phones("caller", username="13700001111")
        menu_entries = service.node_stats.entries["main"]
        call = await caller.call(hotline_uri(sandbox), headers=carrier_headers())
        await call.wait_media(timeout=10)
        await wait_for(lambda: service.node_stats.entries["main"] > menu_entries, 15, "the IVR menu")
        await call.send_dtmf("1")
        agent_call = await agent.wait_incoming(30)
        await agent_call.wait_media(timeout=10)
        answered = await wait_for(lambda: _event(events, "agent_answered", caller_num="13700001111"), 10, "answer")
        linkedid = answered.linkedid
        stream_from = service.hub.last_seq

        async with aiohttp.ClientSession() as http:
            async def post(token: str, body: dict[str, Any]) -> tuple[int, Any]:
                async with http.post(service_server.make_url("/monitor"), json=body,
                                     headers={"Authorization": f"Bearer {tokens[token]}"}) as resp:
                    return resp.status, await resp.json()

            # Role-gated: agents and QA may not listen in.
            for role in ("agent1002", "qa"):
                status, body = await post(role, {"linkedid": linkedid, "mode": "listen", "endpoint": "1004"})
                assert status == 403 and body["error_id"] == "forbidden"
            status, body = await post("supervisor", {"linkedid": linkedid, "mode": "snoop", "endpoint": "1004"})
            assert status == 400 and body["error_id"] == "invalid-mode"
            status, body = await post("supervisor", {"linkedid": "no-such", "mode": "listen", "endpoint": "1004"})
            assert status == 404

            heard: dict[str, dict[str, float]] = {}
            for mode in ("listen", "whisper", "barge"):
                status, row = await post("supervisor", {"linkedid": linkedid, "mode": mode, "endpoint": "1004"})
                assert status == 202 and row["mode"] == mode and row["agent"] == "1001", row
                assert row["agent_channel"].startswith("PJSIP/1001-")
                spy = await supervisor.wait_incoming(15)
                await spy.wait_media(timeout=10)
                await wait_for(_spy_field(service, row["id"], "spy_started_at"), 10, "ChanSpyStart")
                files = {who: tmp_path / f"{mode}-{who}.wav" for who in ("caller", "agent", "supervisor")}
                await asyncio.gather(call.record(files["caller"]), agent_call.record(files["agent"]),
                                     spy.record(files["supervisor"]))
                # In listen mode the caller talks (the supervisor must hear it); the supervisor
                # always talks (only whisper/barge may carry it). The agent stays silent.
                if mode == "listen":
                    await call.play(speech_wav)
                await spy.play(speech_wav)
                await spy.wait_play_done(timeout=15)
                if mode == "listen":
                    await call.wait_play_done(timeout=15)
                heard[mode] = {who: await _heard(c, files[who])
                               for who, c in (("caller", call), ("agent", agent_call), ("supervisor", spy))}
                await spy.hangup()
                await spy.wait_state("DISCONNECTED", timeout=10)
                await wait_for(_spy_field(service, row["id"], "spy_stopped_at"), 10, "ChanSpyStop")

            async with http.get(service_server.make_url(f"/calls/{linkedid}/monitoring"),
                                headers={"Authorization": f"Bearer {tokens['supervisor']}"}) as resp:
                assert resp.status == 200
                sessions = (await resp.json())["sessions"]
        await call.hangup()
        stream = {role: [e for e in service.hub.since(stream_from, Principal(f"t-{role}", role, agent)) or []
                         if e.type == "monitor"]
                  for role, agent in (("supervisor", None), ("agent", "1001"))}
    finally:
        unsubscribe()

    # Listen: the supervisor hears the caller; the caller hears nothing of the supervisor.
    assert heard["listen"]["supervisor"] >= 1.5, heard
    assert heard["listen"]["caller"] < 0.3, heard
    # Whisper: only the agent hears the supervisor.
    assert heard["whisper"]["agent"] >= 1.5, heard
    assert heard["whisper"]["caller"] < 0.3, heard
    # Barge: both parties hear the supervisor.
    assert heard["barge"]["agent"] >= 1.5 and heard["barge"]["caller"] >= 1.5, heard

    # Audited and on the recording's timeline, in order.
    assert [s["mode"] for s in sessions] == ["listen", "whisper", "barge"]
    assert all(s["user"] == "test-supervisor" and s["outcome"] == "answered" for s in sessions), sessions
    offsets = [s["recording_offset_seconds"] for s in sessions]
    assert all(o is not None and o > 0 for o in offsets) and offsets == sorted(offsets), offsets
    assert all(s["recording"] for s in sessions)
    # The marks are on the live stream for supervisors; the monitored agent sees none of them.
    kinds = [(e.data["kind"], e.data["mode"]) for e in stream["supervisor"]]
    assert kinds == [(k, m) for m in ("listen", "whisper", "barge")
                     for k in ("monitor_requested", "monitor_started", "monitor_stopped")], kinds
    assert all(e.linkedid == linkedid for e in stream["supervisor"])
    assert stream["agent"] == []
