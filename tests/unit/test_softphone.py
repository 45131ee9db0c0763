"""Softphones (pjsua2 in child processes) calling each other on 127.0.0.1, no Asterisk.

Real SIP, RTP and RFC 4733 between two workers; audio checked with webrtcvad. The one
fake peer is a tiny UDP registrar, because digest registration must be tested without
Asterisk here (the real-Asterisk tests register agents against PJSIP).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import webrtcvad

from ivr.softphone import Call, PhoneConfig, Softphone, SoftphoneError

PhoneMaker = Callable[..., Awaitable[Softphone]]


@pytest.fixture
def make_phone(phones: PhoneMaker) -> PhoneMaker:
    """The suite-wide `phones` factory (tests/conftest.py) under this module's name."""
    return phones


def _wait_for_tool(name: str, timeout: float = 120.0) -> str:
    """espeak-ng/sox may still be installing (apt runs elsewhere on a fresh machine)."""
    deadline = time.monotonic() + timeout
    while (path := shutil.which(name)) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"{name} is not installed")
        time.sleep(1)
    return path


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("softphone-audio")


@pytest.fixture(scope="module")
def speech8k(audio_dir: Path) -> Path:
    """About 2 s of real speech, 8 kHz 16-bit mono, as a prompt would be."""
    raw, wav = audio_dir / "raw.wav", audio_dir / "speech8k.wav"
    subprocess.run([_wait_for_tool("espeak-ng"), "-v", "en", "-s", "160", "-w", str(raw),
                    "Please press one for repair service."], check=True, capture_output=True)
    subprocess.run([_wait_for_tool("sox"), str(raw), "-r", "8000", "-c", "1", "-b", "16", str(wav)],
                   check=True, capture_output=True)
    return wav


@pytest.fixture(scope="module")
def silence8k(audio_dir: Path) -> Path:
    path = audio_dir / "silence8k.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 8000)  # 1 s
    return path


def voiced_seconds(path: Path) -> tuple[float, float]:
    """(voiced, total) seconds by webrtcvad, mode 2, 20 ms frames."""
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2), path
        rate = wav.getframerate()
        pcm = wav.readframes(wav.getnframes())
    vad = webrtcvad.Vad(2)
    step = rate * 20 // 1000 * 2
    frames = [pcm[i:i + step] for i in range(0, len(pcm) - step + 1, step)]
    return sum(vad.is_speech(f, rate) for f in frames) * 0.02, len(frames) * 0.02


async def _connected_pair(make_phone: PhoneMaker, **callee: Any) -> tuple[Softphone, Softphone, Call, Call]:
    caller = await make_phone("caller")
    agent = await make_phone("agent1", auto_answer=True, **callee)
    out = await caller.call(agent.uri)
    inc = await agent.wait_incoming(5)
    await asyncio.gather(out.wait_state("CONFIRMED", 5), inc.wait_state("CONFIRMED", 5),
                         out.wait_media(5), inc.wait_media(5))
    return caller, agent, out, inc


async def test_direct_call_is_confirmed_on_both_sides_with_custom_header(make_phone: PhoneMaker) -> None:
    caller = await make_phone("caller")
    agent = await make_phone("agent1", auto_answer=True, answer_delay=0.2)
    assert agent.uri == f"sip:agent1@127.0.0.1:{agent.sip_port}" and agent.sip_port > 0

    out = await caller.call(agent.uri, headers={"X-Hotline-Test": "qa-run-42"})
    inc = await agent.wait_incoming(5)
    assert inc.incoming_headers["X-Hotline-Test"] == "qa-run-42"
    assert inc.header("x-hotline-test") == "qa-run-42" and inc.header("X-Missing") is None
    assert inc.state in ("INCOMING", "EARLY") and inc.incoming
    await out.wait_state("EARLY", 5)  # the 180 sent while the answer delay runs
    await asyncio.gather(out.wait_state("CONFIRMED", 5), inc.wait_state("CONFIRMED", 5))

    assert out.sip_call_id and out.sip_call_id == inc.sip_call_id
    assert out.last_status_code == 200
    assert "sip:caller@127.0.0.1" in inc.remote_uri
    assert caller.calls == [out] and agent.calls == [inc]

    await out.hangup()
    await asyncio.gather(out.wait_state("DISCONNECTED", 5), inc.wait_state("DISCONNECTED", 5))
    await out.hangup()  # idempotent once ended


async def test_sequential_calls_keep_their_own_handles(make_phone: PhoneMaker) -> None:
    """pjsua reuses call slots at once; each call must still get its own events."""
    caller = await make_phone("caller")
    agent = await make_phone("agent5", auto_answer=True)
    for n in range(1, 4):
        out = await caller.call(agent.uri, headers={"X-Seq": str(n)})
        inc = await agent.wait_incoming(5)
        assert inc.incoming_headers["X-Seq"] == str(n)
        await asyncio.gather(out.wait_state("CONFIRMED", 5), inc.wait_state("CONFIRMED", 5), inc.wait_media(5))
        await inc.hangup()
        await asyncio.gather(out.wait_state("DISCONNECTED", 5), inc.wait_state("DISCONNECTED", 5))
    assert [c.call_id for c in agent.calls] == [1, 2, 3]
    assert len({c.sip_call_id for c in agent.calls}) == 3
    assert all(c.state == "DISCONNECTED" for c in caller.calls + agent.calls)


async def test_callee_records_the_callers_speech(make_phone: PhoneMaker, speech8k: Path, tmp_path: Path) -> None:
    _, _, out, inc = await _connected_pair(make_phone)
    heard = tmp_path / "heard.wav"
    await inc.record(heard)
    started = time.monotonic()
    await out.play(speech8k)
    await out.wait_play_done(timeout=10)
    played_for = time.monotonic() - started
    await out.hangup()
    # DISCONNECTED is reported after the worker finalised the recording.
    await asyncio.gather(out.wait_state("DISCONNECTED", 5), inc.wait_state("DISCONNECTED", 5))

    spoken, length = voiced_seconds(speech8k)
    assert played_for >= length, (played_for, length)  # "done" means the whole file was sent
    voiced, recorded = voiced_seconds(heard)
    assert spoken > 1.0
    assert recorded >= length * 0.8, (recorded, length)
    assert voiced >= 0.6 * spoken, (voiced, spoken)


async def test_sixteen_khz_phone_records_wideband(make_phone: PhoneMaker, speech8k: Path, tmp_path: Path) -> None:
    """A 16 kHz phone (bridge and recorder at 16 kHz) still talks G.711 and hears speech."""
    _, _, out, inc = await _connected_pair(make_phone, clock_rate=16000)
    heard = tmp_path / "heard16k.wav"
    await inc.record(heard)
    await out.play(speech8k)
    await out.wait_play_done(timeout=10)
    await inc.stop_record()
    with wave.open(str(heard), "rb") as wav:
        assert wav.getframerate() == 16000
    spoken, _ = voiced_seconds(speech8k)
    voiced, _ = voiced_seconds(heard)
    assert voiced >= 0.6 * spoken, (voiced, spoken)


async def test_silent_call_records_no_speech(make_phone: PhoneMaker, silence8k: Path, tmp_path: Path) -> None:
    _, _, out, inc = await _connected_pair(make_phone)
    heard = tmp_path / "silent.wav"
    await inc.record(heard)
    await out.play(silence8k)
    await out.wait_play_done(timeout=10)
    await inc.stop_record()  # finalises the WAV while the call goes on
    voiced, recorded = voiced_seconds(heard)
    assert recorded >= 0.8
    assert voiced <= 0.1, voiced


async def test_dtmf_arrives_in_order(make_phone: PhoneMaker) -> None:
    _, _, out, inc = await _connected_pair(make_phone)
    await out.send_dtmf("1234#")
    assert await inc.wait_dtmf(5, timeout=5) == "1234#"
    with pytest.raises(ValueError):
        await out.send_dtmf("12x")


async def test_playback_can_loop_and_be_replaced_or_stopped(make_phone: PhoneMaker, silence8k: Path) -> None:
    _, _, out, _ = await _connected_pair(make_phone)
    await out.play(silence8k, loop=True)
    with pytest.raises(SoftphoneError, match="never ends"):
        await out.wait_play_done(timeout=1)
    await out.play(silence8k)  # replaces the loop
    await out.stop_play()
    await out.wait_play_done(timeout=1)  # a stopped playback is done too
    with pytest.raises(SoftphoneError, match="no such WAV"):
        await out.play(Path("/nonexistent/prompt.wav"))


async def test_reject_with_busy(make_phone: PhoneMaker) -> None:
    caller = await make_phone("caller")
    busy = await make_phone("busy", reject_code=486)
    out = await caller.call(busy.uri)
    started = time.monotonic()
    with pytest.raises(SoftphoneError, match="486"):
        await out.wait_state("CONFIRMED", 5)  # fails as soon as the call ends, not at the timeout
    assert time.monotonic() - started < 3
    assert out.state == "DISCONNECTED" and out.last_status_code == 486
    inc = await busy.wait_incoming(1)  # the callee still saw the INVITE
    await inc.wait_state("DISCONNECTED", 1)


async def test_manual_answer_and_caller_giving_up(make_phone: PhoneMaker) -> None:
    caller = await make_phone("caller")
    agent = await make_phone("agent2")  # neither auto-answer nor reject: it rings

    first = await caller.call(agent.uri)
    ringing = await agent.wait_incoming(5)
    await first.wait_state("EARLY", 5)
    with pytest.raises(SoftphoneError, match="no active audio"):
        await first.send_dtmf("1")
    await ringing.answer()
    await asyncio.gather(first.wait_state("CONFIRMED", 5), ringing.wait_state("CONFIRMED", 5))
    await ringing.hangup()  # callee ends it: BYE the other way
    await first.wait_state("DISCONNECTED", 5)

    second = await caller.call(agent.uri)
    unanswered = await agent.wait_incoming(5)
    assert unanswered is not ringing and unanswered.call_id != ringing.call_id
    await second.wait_state("EARLY", 5)
    await second.hangup()  # CANCEL
    await unanswered.wait_state("DISCONNECTED", 5)
    assert unanswered.last_status_code == 487
    with pytest.raises(SoftphoneError, match="timed out after 0.2s waiting for an incoming call"):
        await agent.wait_incoming(0.2)


HOSTILE = 'Evil"; EXEC System(touch /tmp/pwned) ;\\ |,$(x) <sip:x@y>'


def _display_name(header: str) -> str:
    """Unquote the display name of a From header value."""
    match = re.match(r'\s*"((?:[^"\\]|\\.)*)"\s*<', header)
    assert match, header
    return re.sub(r"\\(.)", r"\1", match.group(1))


async def test_hostile_display_name_is_sent_quoted(make_phone: PhoneMaker) -> None:
    caller = await make_phone("evil", username="13900139000", display_name=HOSTILE)
    agent = await make_phone("agent3", auto_answer=True)
    out = await caller.call(agent.uri)
    inc = await agent.wait_incoming(5)
    await asyncio.gather(out.wait_state("CONFIRMED", 5), inc.wait_state("CONFIRMED", 5))
    from_header = inc.incoming_headers["From"]
    assert _display_name(from_header) == HOSTILE
    assert "<sip:13900139000@127.0.0.1>" in from_header


async def test_killed_worker_fails_waits_quickly(make_phone: PhoneMaker) -> None:
    caller = await make_phone("doomed")
    agent = await make_phone("agent4")  # rings forever
    out = await caller.call(agent.uri)
    await agent.wait_incoming(5)
    waiting = asyncio.ensure_future(out.wait_state("CONFIRMED", timeout=30))
    await asyncio.sleep(0)  # let the wait start before the kill
    started = time.monotonic()
    os.kill(caller.pid, signal.SIGKILL)
    with pytest.raises(SoftphoneError, match="exit code -9"):
        await waiting
    assert time.monotonic() - started < 2
    with pytest.raises(SoftphoneError, match="died"):
        await caller.call(agent.uri)
    await caller.stop()  # still reaps cleanly
    assert caller.returncode == -9


async def test_three_phones_start_and_stop_concurrently(tmp_path: Path) -> None:
    started = time.monotonic()
    phones = await asyncio.gather(*(
        Softphone.start(PhoneConfig(name=f"p{i}", log_dir=tmp_path)) for i in range(3)))
    try:
        assert len({p.sip_port for p in phones}) == 3
        assert len({p.pid for p in phones}) == 3
    finally:
        await asyncio.gather(*(p.stop() for p in phones))
    assert [p.returncode for p in phones] == [0, 0, 0]
    assert time.monotonic() - started < 5
    with pytest.raises(SoftphoneError, match="stopped"):
        await phones[0].call("sip:x@127.0.0.1:9")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_restart_on_the_same_port(make_phone: PhoneMaker) -> None:
    port = _free_udp_port()
    first = await make_phone("fixed", sip_port=port)
    assert first.sip_port == port
    await first.stop()
    second = await make_phone("fixed", sip_port=port)
    assert second.sip_port == port


async def test_start_failure_names_the_reason(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        with pytest.raises(SoftphoneError, match=f"cannot bind SIP UDP 127.0.0.1:{port}"):
            await Softphone.start(PhoneConfig(name="clash", sip_port=port, log_dir=tmp_path))


# --- registration against a fake digest registrar --------------------------------------

class FakeRegistrar(asyncio.DatagramProtocol):
    """Challenges every REGISTER (RFC 2617 MD5, no qop), then checks the digest."""

    realm = "hotline"
    nonce = "5f2b7c0e"

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.requests: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode()
        if not text.startswith("REGISTER "):
            return
        self.requests.append(text)
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        fields: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip().lower(), value.strip())
        auth = fields.get("authorization")
        if auth is None:
            status, extra = "401 Unauthorized", [
                f'WWW-Authenticate: Digest realm="{self.realm}", nonce="{self.nonce}", algorithm=MD5']
        elif self._digest_ok(auth):
            contact = fields.get("contact", "")
            status, extra = "200 OK", [f"Contact: {contact};expires=300"] if contact and "expires=0" not in (
                contact + fields.get("expires", "")) else []
        else:
            status, extra = "403 Forbidden", []
        to = fields["to"] + ("" if ";tag=" in fields["to"] else ";tag=reg1")
        lines = [f"SIP/2.0 {status}", f"Via: {fields['via']}", f"From: {fields['from']}", f"To: {to}",
                 f"Call-ID: {fields['call-id']}", f"CSeq: {fields['cseq']}", *extra, "Content-Length: 0", "", ""]
        assert self.transport is not None
        self.transport.sendto("\r\n".join(lines).encode(), addr)

    def _digest_ok(self, header: str) -> bool:
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', header))
        password = self.users.get(params.get("username", ""))
        if password is None:
            return False

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        expected = md5(f"{md5(params['username'] + ':' + self.realm + ':' + password)}:{self.nonce}:"
                       f"{md5('REGISTER:' + params['uri'])}")
        return params.get("response") == expected


@pytest.fixture
async def registrar() -> AsyncIterator[tuple[FakeRegistrar, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: FakeRegistrar({"1001": "s3cret"}), local_addr=("127.0.0.1", 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def test_register_with_digest_and_unregister_on_stop(
    make_phone: PhoneMaker, registrar: tuple[FakeRegistrar, int],
) -> None:
    fake, port = registrar
    agent = await make_phone("agent1001", registrar=f"sip:127.0.0.1:{port}", username="1001", password="s3cret")
    await agent.register(timeout=5)
    assert agent.registered and agent.last_reg_code == 200
    assert agent.uri == f"sip:1001@127.0.0.1:{agent.sip_port}"
    assert any("Authorization: Digest" in r for r in fake.requests)  # MD5 worked in the bundled OpenSSL
    before = len(fake.requests)
    await agent.stop()
    unregister = fake.requests[before:]
    assert unregister and re.search(r"expires[=:]\s*0\b", unregister[-1], re.IGNORECASE), unregister


async def test_register_failure_reports_the_status(
    make_phone: PhoneMaker, registrar: tuple[FakeRegistrar, int],
) -> None:
    _, port = registrar
    agent = await make_phone("agent1001", registrar=f"sip:127.0.0.1:{port}", username="1001", password="wrong")
    with pytest.raises(SoftphoneError, match="403"):
        await agent.register(timeout=5)
    assert not agent.registered
    unregistered = await make_phone("noreg")
    with pytest.raises(SoftphoneError, match="no registrar"):
        await unregistered.register()


def test_worker_never_writes_to_stdout_but_events(tmp_path: Path) -> None:
    """pjlib prints its first lines to stdout before libInit: they must not reach the client."""
    log_file = tmp_path / "w.log"
    config = PhoneConfig(name="raw").to_wire(log_file)
    lines = (json.dumps({"id": 1, "cmd": "configure", "config": config}) + "\n"
             + json.dumps({"id": 2, "cmd": "shutdown"}) + "\n")
    done = subprocess.run([sys.executable, "-m", "ivr.softphone.worker"], input=lines.encode(),
                          capture_output=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    events = [json.loads(x) for x in done.stdout.decode().splitlines()]
    assert [e["event"] for e in events if e["event"] != "log"] == ["ack", "ready", "ack"]
    assert "pjlib" in done.stderr.decode(errors="replace") + log_file.read_text(errors="replace")
