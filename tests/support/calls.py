"""Helpers for tests that place real calls through the sandbox Asterisk."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dialplans.definition import HotlineDefinition
from hotline.sandbox import Sandbox

PhoneFactory = Callable[..., Awaitable[Any]]


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll a cheap in-process condition until it holds (state we own, not Asterisk's)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def asterisk_cli(sandbox: Sandbox, command: str) -> str:
    """Run an Asterisk CLI command against the sandbox (diagnostics and checks)."""
    proc = subprocess.run(
        ["chroot", str(sandbox.root), "/usr/sbin/asterisk", "-C", f"{sandbox.etc}/asterisk.conf", "-rx", command],
        capture_output=True, text=True, timeout=20, check=False,
    )
    return proc.stdout + proc.stderr


async def agent_phone(phones: PhoneFactory, sandbox: Sandbox, definition: HotlineDefinition, agent: str,
                      **kwargs: Any) -> Any:
    """An agent's registered softphone (digest auth against the sandbox's PJSIP)."""
    state = sandbox.load_or_create_secrets(definition)
    passwords = state["agent_passwords"]
    assert isinstance(passwords, dict)
    phone = await phones(f"agent{agent}", registrar=f"sip:127.0.0.1:{sandbox.ports.sip}", username=agent,
                         password=str(passwords[agent]), **kwargs)
    await phone.register(timeout=10)
    return phone


def hotline_uri(sandbox: Sandbox, number: str = "4000") -> str:
    return f"sip:{number}@127.0.0.1:{sandbox.ports.sip}"


def carrier_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Headers the sandbox's carrier trunk needs to accept a PSTN-style caller."""
    from cti import channel_vars as cv

    return {cv.TRUNK_HEADER: "carrier", **(extra or {})}


def recorded(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 44


async def leave_message(call: Any, message: Path, seconds: float = 2.5) -> None:
    """Let the caller (already talking: a looping playback) fill `seconds` of the message
    Record() writes at `message`, then stop talking and hang up.

    The caller talks from the start of the call, over the IVR's prompts: Record() ends a
    message after 3 s of silence, and the time from the IVR's decision to Record()'s beep
    depends on the machine's load, so a caller who waited for the beep could be cut off.
    Record() writes 8 kHz 16-bit mono (16,000 bytes a second) after a 44-byte header.
    """
    wanted = 44 + int(seconds * 16000)
    await wait_for(lambda: message.is_file() and message.stat().st_size >= wanted, 30,
                   f"{seconds} s of the message in {message}")
    await call.stop_play()
    await call.hangup()
