"""Shared fixtures: one real sandbox Asterisk per test run, the service beside it, phones.

The sandbox is built by the project's own script (docker/sandbox/build-root.sh),
started lazily the first time an `asterisk` test needs it, on its own instance and
ports (offset 20000) so a developer's `hotline run` sandbox keeps working, and
stopped by pid at the end of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from dialplans.definition import DEFAULT_PATH, HotlineDefinition, load_definition
from hotline.sandbox import Sandbox, SandboxPorts
from hotline.settings import load_settings
from tests.support.calls import PhoneFactory
from tests.support.sandboxes import running_sandbox

PORT_OFFSET = int(os.environ.get("HOTLINE_TEST_PORT_OFFSET", "20000"))
CACHE = Path(os.environ.get("HOTLINE_TEST_CACHE", Path.home() / ".cache" / "hotline" / "test-cache"))


@pytest.fixture(scope="session")
def definition() -> HotlineDefinition:
    return load_definition(DEFAULT_PATH)


@pytest.fixture(scope="session")
def sandbox(definition: HotlineDefinition, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with running_sandbox(f"test-{os.getpid()}", definition, SandboxPorts.offset(PORT_OFFSET),
                         tmp_path_factory.mktemp("sandbox-state"), CACHE) as sb:
        yield sb


@pytest.fixture(scope="session")
async def service_server(
    sandbox: Sandbox, definition: HotlineDefinition, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TestServer]:
    from hotline.app import create_app, flow_for

    state = sandbox.load_or_create_secrets(definition)
    data_dir = tmp_path_factory.mktemp("service-data")
    settings = load_settings(
        env={}, data_dir=str(data_dir), ami_port=sandbox.ports.ami, agi_port=sandbox.ports.agi,
        sip_port=sandbox.ports.sip,
        ami_secret=str(state["ami_secret"]), recordings_dir=str(sandbox.recordings_dir),
    )
    app = create_app(settings, flow_for(definition, f"{sandbox.lib}/sounds"))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    service = app[SERVICE_KEY()]
    service.runner.clock = _opening_hours_clock(service.runner.flow)
    await service.ami.wait_ready(timeout=15)
    try:
        yield server
    finally:
        await server.close()


def _opening_hours_clock(flow: Any) -> Any:
    """Real time, moved on by whole weeks while the hotline's calendars say closed.

    The default hotline is open around the clock except on its listed holidays; on
    those days every test call would take the after-hours branch. Tests that want
    after-hours pin the clock themselves.
    """
    from datetime import UTC, datetime, timedelta

    from ivr.hours import is_open
    from ivr.model import Hours

    calendars = [node.calendar for node in flow.nodes.values() if isinstance(node, Hours)]

    def clock() -> datetime:
        now = datetime.now(UTC)
        for _ in range(52):
            if all(is_open(calendar, now) for calendar in calendars):
                break
            now += timedelta(days=7)
        return now

    return clock


@pytest.fixture(scope="session")
def service(service_server: TestServer) -> Any:
    return service_server.app[SERVICE_KEY()]


@pytest.fixture(scope="session")
def tokens(service: Any) -> dict[str, str]:
    """One API token per role, and one per agent (agent1001 ... agent1004)."""
    issued = {role: service.tokens.issue(f"test-{role}", role) for role in ("admin", "supervisor", "qa")}
    for agent in ("1001", "1002", "1003", "1004"):
        issued[f"agent{agent}"] = service.tokens.issue(f"test-agent-{agent}", "agent", agent)
    return issued


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def SERVICE_KEY() -> Any:  # noqa: N802 - imported late so unit tests need no service stack
    from hotline.app import SERVICE

    return SERVICE


@pytest.fixture
async def phones(tmp_path: Path) -> AsyncIterator[PhoneFactory]:
    """Start softphones (own processes); every one is stopped (or killed by pid) after the test."""
    from ivr.softphone.client import PhoneConfig, Softphone

    started: list[Softphone] = []

    async def start(name: str, **kwargs: Any) -> Softphone:
        config = PhoneConfig(name=name, log_dir=tmp_path / "phone-logs", **kwargs)
        phone = await Softphone.start(config)
        started.append(phone)
        return phone

    try:
        yield start
    finally:
        await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)
        for phone in started:  # a phone that would not stop is killed by its pid
            if phone.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(phone.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 3 s of real speech (espeak-ng), 8 kHz mono 16-bit, padded with silence."""
    out = tmp_path_factory.mktemp("audio")
    raw = out / "raw.wav"
    wav = out / "speech8k.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(raw),
                    "Hello, my washing machine is leaking water, please send a technician."], check=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(wav), "pad", "0.3", "0.3"], check=True)
    return wav


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Real-Asterisk tests get a longer budget than unit tests.
    for item in items:
        if item.get_closest_marker("asterisk") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(180))
