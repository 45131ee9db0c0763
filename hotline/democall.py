"""`hotline call`: place one real call into the sandbox hotline and report what happened.

It registers an auto-answering softphone for every agent, dials the hotline as a PSTN
caller through the sandbox carrier trunk, presses the menu digits once the IVR menu is
playing (seen through the service's own /ivr/stats), speaks a sentence to the agent,
hangs up, and returns the service's record of the call from GET /calls/{linkedid}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from cti import channel_vars as cv
from dialplans.definition import load_definition
from hotline.sandbox import Sandbox
from hotline.settings import Settings
from ivr.model import first_menu
from ivr.softphone.client import PhoneConfig, Softphone


def admin_token_file(settings: Settings) -> Path:
    """Where `hotline run` leaves the admin token it issued for this data dir."""
    return settings.data_dir / "admin-token"


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        return await resp.json() if resp.status == 200 else None


async def _poll(fn: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await fn()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no {what} within {timeout}s")


def _ours(listing: dict[str, Any], caller: str, seen: set[str]) -> list[dict[str, Any]]:
    """The calls of a GET /calls listing placed from `caller` since `seen` was taken."""
    return [c for c in listing.get("live", []) + listing.get("recent", [])
            if c["caller_num"] == caller and c["linkedid"] not in seen]


async def _call_seen(http: aiohttp.ClientSession, base: str, caller: str, seen: set[str]) -> str:
    """What the service knows of our call when it did not end in time: says whether
    the service is cut off from Asterisk or still holds the call live (and which of
    its channels hung up)."""
    listing = await _get(http, f"{base}/calls") or {}
    ours = _ours(listing, caller, seen)
    fresh = {k: listing.get(k) for k in ("ami_connected", "fresh", "resyncs")}
    if not ours:
        return f"the service never saw a call from {caller} (AMI {fresh})"
    return f"AMI {fresh}; the service still shows: " + json.dumps(
        [{k: c.get(k) for k in ("linkedid", "live", "queue", "agent", "outcome", "hangups")} for c in ours])


def _speech(path: Path) -> Path:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(raw), "Hello, this is a test call to the hotline."],
                   check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(path)], check=True, capture_output=True)
    return path


async def place_demo_call(sandbox: Sandbox, settings: Settings, *, digits: str = "1", caller: str = "13800138000",
                          base_url: str | None = None, token: str | None = None) -> dict[str, Any]:
    base = base_url or f"http://{settings.http_host}:{settings.http_port}"
    token = token or admin_token_file(settings).read_text().strip()
    defn = load_definition(settings.definition)
    menu = first_menu(defn.flow) or defn.flow.start  # digits count only once the menu plays
    state = json.loads(sandbox.secrets_file.read_text())
    passwords: dict[str, str] = state["agent_passwords"]
    phones: list[Softphone] = []
    with tempfile.TemporaryDirectory() as tmp:
        speech = _speech(Path(tmp) / "speech.wav")
        try:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
                before = await _get(http, f"{base}/calls") or {}
                seen = {c["linkedid"] for c in before.get("recent", []) + before.get("live", [])}
                stats = await _get(http, f"{base}/ivr/stats") or {}
                entries_before = stats.get(menu, {}).get("entries", 0)
                for agent in sorted(defn.agents):
                    phone = await Softphone.start(PhoneConfig(
                        name=f"demo-agent{agent}", registrar=f"sip:127.0.0.1:{sandbox.ports.sip}",
                        username=agent, password=passwords[agent], auto_answer=True))
                    phones.append(phone)
                    await phone.register(timeout=10)
                phone = await Softphone.start(PhoneConfig(name="demo-caller", username=caller))
                phones.append(phone)
                call = await phone.call(f"sip:{defn.numbers[0]}@127.0.0.1:{sandbox.ports.sip}",
                                        headers={cv.TRUNK_HEADER: "carrier"})
                await call.wait_state("CONFIRMED", timeout=10)

                async def menu_playing() -> bool:
                    now = await _get(http, f"{base}/ivr/stats") or {}
                    return bool(now.get(menu, {}).get("entries", 0) > entries_before)

                await _poll(menu_playing, 10, "IVR menu")
                await call.send_dtmf(digits)
                answering = [asyncio.ensure_future(p.wait_incoming(30)) for p in phones[:-1]]
                done, pending = await asyncio.wait(answering, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                agent_call = done.pop().result()
                await agent_call.wait_state("CONFIRMED", timeout=10)
                await call.wait_media(timeout=5)
                await call.play(speech)
                await call.wait_play_done(timeout=20)
                await call.hangup()

                async def finished_call() -> Any:
                    listing = await _get(http, f"{base}/calls") or {}
                    return next((c for c in reversed(_ours(listing, caller, seen)) if not c["live"]), None)

                try:
                    record = await _poll(finished_call, 15, "finished call record")
                except TimeoutError as exc:
                    raise TimeoutError(f"{exc}; {await _call_seen(http, base, caller, seen)}") from None
                recordings = await _get(http, f"{base}/calls/{record['linkedid']}/recordings")
                return {"ok": record["outcome"] == "answered", "call": record,
                        "recordings": (recordings or {}).get("recordings", [])}
        finally:
            for p in phones:
                with contextlib.suppress(Exception):
                    await p.stop()
