"""Recording REST without Asterisk: Range parsing, roles, streaming, traversal refusals,
and the Recorder's process-pool analysis fed by a real AMI capture."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cti.ami.events import parse_event
from cti.ami.protocol import AMIParser
from cti.auth import TokenStore
from cti.db import create_schema, make_engine, session_factory
from cti.web import TOKENS, auth_middleware
from recordings.index import Recording
from recordings.recorder import Recorder, RecorderConfig
from recordings.web import RangeNotSatisfiable, add_routes, parse_range
from tests.unit.test_recording_index import write_wav

T0 = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("", None), ("bytes=0-9", (0, 9)), ("bytes=10-", (10, 99)), ("bytes=-10", (90, 99)),
    ("bytes=-500", (0, 99)), ("bytes=90-500", (90, 99)), ("bytes=5-5", (5, 5)),
    ("items=0-9", None), ("bytes=0-9,20-29", None), ("bytes=9-0", None), ("bytes=a-b", None), ("bytes=", None),
])
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


class Env:
    def __init__(self, client: TestClient[Any, Any], recorder: Recorder, tokens: dict[str, str]) -> None:
        self.client, self.recorder, self.tokens = client, recorder, tokens

    async def get(self, path: str, role: str, *, headers: dict[str, str] | None = None,
                  params: dict[str, str] | None = None) -> Any:
        return await self.client.get(path, params=params,
                                     headers={"Authorization": f"Bearer {self.tokens[role]}", **(headers or {})})


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    engine = make_engine(f"sqlite:///{tmp_path / 'web.sqlite3'}")
    import recordings.catalog  # noqa: F401 - registers the set tables

    create_schema(engine)
    sessions = session_factory(engine)
    root = tmp_path / "monitor"
    recorder = Recorder(sessions, root, RecorderConfig())
    store = TokenStore(sessions)
    tokens = {role: store.issue(f"u-{role}", role) for role in ("qa", "supervisor", "admin")}
    tokens["agent"] = store.issue("u-agent", "agent", "1001")
    app = web.Application(middlewares=[auth_middleware])
    app[TOKENS] = store
    add_routes(app, recorder)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Env(client, recorder, tokens)
    finally:
        await client.close()
        engine.dispose()


def _recorded(recorder: Recorder, tmp: Path) -> dict[str, int]:
    base = "hotline/2025/06/01/1.1-1.1"
    rows = recorder.index.start(linkedid="1.1", uniqueid="1.1", legs={"mix": f"{base}-mix.wav"}, started_at=T0)
    recorder.catalog.open_set(linkedid="1.1", uniqueid="1.1", base=base, started_at=T0)
    write_wav(recorder.index.root / rows[0].path, 0.5)
    return {"mix": rows[0].id}


async def test_roles_stream_and_access_log(env: Env, tmp_path: Path) -> None:
    ids = await asyncio.to_thread(_recorded, env.recorder, tmp_path)
    data = (env.recorder.index.root / "hotline/2025/06/01/1.1-1.1-mix.wav").read_bytes()
    resp = await env.get(f"/recordings/{ids['mix']}/audio?reason=x", "agent")
    assert resp.status == 403
    resp = await env.get(f"/recordings/{ids['mix']}/audio", "qa", params={"reason": "check"},
                         headers={"Range": "bytes=44-99"})
    assert resp.status == 206 and await resp.read() == data[44:100]
    assert resp.headers["Content-Range"] == f"bytes 44-99/{len(data)}"
    log = env.recorder.catalog.access_log(ids["mix"])
    assert [(e["user"], e["action"], e["reason"], e["byte_range"]) for e in log] == [("u-qa", "play", "check",
                                                                                     "44-99")]


async def test_tampered_paths_and_symlinks_are_refused(env: Env, tmp_path: Path) -> None:
    ids = await asyncio.to_thread(_recorded, env.recorder, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    rid = ids["mix"]
    real = env.recorder.index.root / "hotline/2025/06/01/1.1-1.1-mix.wav"
    for bad in ("../secret.txt", str(secret), "hotline/../../secret.txt", "hotline/2025/../../../secret.txt"):
        with env.recorder.index.sessions.begin() as session:
            row = session.get(Recording, rid)
            assert row is not None
            row.path = bad
        resp = await env.get(f"/recordings/{rid}/audio", "admin", params={"reason": "x"})
        assert resp.status == 403, bad
        assert b"root:" not in await resp.read()
    with env.recorder.index.sessions.begin() as session:
        row = session.get(Recording, rid)
        assert row is not None
        row.path = "hotline/2025/06/01/1.1-1.1-mix.wav"
    real.unlink()
    real.symlink_to(secret)
    resp = await env.get(f"/recordings/{rid}/audio", "admin", params={"reason": "x"})
    assert resp.status == 403 and (await resp.json())["error_id"] == "recording-path-refused"
    real.unlink()
    resp = await env.get(f"/recordings/{rid}/audio", "admin", params={"reason": "x"})
    assert resp.status == 404 and (await resp.json())["error_id"] == "recording-file-missing"
    for path in ("/recordings/..%2F..%2Fsecret.txt/audio", "/recordings/%2Ftmp%2Fsecret.txt/audio",
                 "/recordings/1e3/audio"):
        resp = await env.get(path + "?reason=x", "admin")
        assert resp.status == 404, path
    assert env.recorder.catalog.access_log(rid) == []  # nothing was served, nothing logged


async def test_recorder_analyses_in_a_process_pool_from_a_real_capture(tmp_path: Path) -> None:
    """The transfer capture drives the lifecycle; synthetic legs are analysed in another process."""
    from tests.unit.test_vad import speak

    engine = make_engine(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    import recordings.catalog  # noqa: F401

    create_schema(engine)
    recorder = Recorder(session_factory(engine), tmp_path / "monitor", RecorderConfig(dead_air_seconds=1))
    await recorder.start()
    try:
        parser = AMIParser()
        events = [parse_event(m) for m in parser.feed((CAPTURES / "hotline_transfer_hold.ami").read_bytes())
                  if m.kind == "event"]
        for event in events:
            recorder.on_ami_event(event)
        await recorder.flush()
        (linkedid,) = recorder.tracker.by_linkedid
        call = recorder.tracker.recorded(linkedid)
        assert call is not None
        rows = recorder.index.for_call(linkedid)
        assert sorted(r.leg for r in rows) == ["agent", "agent", "mix", "rx", "tx"]
        assert sorted(str(r.agent) for r in rows if r.leg == "agent") == sorted(call.parties)
        for row in rows:  # what MixMonitor would have written
            path = recorder.index.root / row.path
            path.parent.mkdir(parents=True, exist_ok=True)
            speak(path, "Hello this is the hotline")
        recorder.on_call_ended({"linkedid": linkedid, "queue": "repair", "agent": call.parties[0],
                                "outcome": "answered", "caller_num": "13500135000", "transfers": [{}]},
                               call.stopped_at or 0.0)
        await recorder.flush()
        found = recorder.catalog.get(linkedid)
        assert found is not None
        rs, legs = found
        assert rs.agents == f",{call.parties[0]},{call.parties[1]},"
        assert rs.transfers == 1 and rs.outcome == "answered"
        assert all(leg.has_speech for leg in legs)
        assert rs.analysis is not None and rs.analysis["recording_seconds"] > 0
        assert rs.analysis["agent_legs"] == sorted(call.parties)  # placed on the caller's axis by AMI times
        assert recorder.analysed == 1 and recorder.analysis_failures == 0
        assert recorder.status()["disk"]["free_bytes"] > 0
        # The analysis ran in a worker process, not in the event loop's process.
        from concurrent.futures import ProcessPoolExecutor

        assert isinstance(recorder._pool, ProcessPoolExecutor)
        pids = {p.pid for p in recorder._pool._processes.values()}
        assert pids and os.getpid() not in pids
    finally:
        await recorder.stop()
        engine.dispose()


async def test_disk_watermark_alerts_and_shows_in_status(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'd.sqlite3'}")
    alerts: list[dict[str, Any]] = []
    got = asyncio.Event()

    def alert(payload: dict[str, Any]) -> None:
        alerts.append(payload)
        got.set()

    # A watermark above the disk's size: the disk is "low" from the first check.
    recorder = Recorder(session_factory(engine), tmp_path / "monitor", RecorderConfig(min_free_mb=2**40),
                        on_disk_alert=alert)
    await recorder.start()
    try:
        await asyncio.wait_for(got.wait(), 5)
        assert alerts[0]["recordings_disk"]["low"] is True
        assert recorder.status()["disk"]["low"] is True
        await recorder.check_disk()  # still low: no second alert
        await asyncio.sleep(0)  # let a (wrongly) scheduled alert callback run
        assert len(alerts) == 1
    finally:
        await recorder.stop()
        engine.dispose()
