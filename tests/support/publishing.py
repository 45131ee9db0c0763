"""A service that may publish its own dialplan, on a dedicated sandbox Asterisk.

Publishing reloads Asterisk and runs smoke calls, so the tests that do it (the REST and
CLI lifecycle, the console's editor) get their own instance instead of the suite's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aiohttp.test_utils import TestServer

from dialplans.definition import DEFAULT_PATH, load_definition
from hotline.dialplan_publish import DialplanPublisher, publisher_for_sandbox
from hotline.sandbox import Sandbox, SandboxPorts, ensure_root
from hotline.service import HotlineService
from hotline.settings import load_settings


@dataclass(frozen=True)
class PublishingService:
    sandbox: Sandbox
    service: HotlineService
    server: TestServer
    publisher: DialplanPublisher
    definition_file: Path


@contextlib.asynccontextmanager
async def publishing_service(tmp: Path, instance: str, port_offset: int, check_port_offset: int, text: str,
                             clock: Callable[[], datetime], cache_dir: Path) -> AsyncIterator[PublishingService]:
    """Sandbox `instance` running hotline definition `text`, the service beside it with a
    publisher (validation Asterisk at `check_port_offset`) and its HTTP API on 127.0.0.1.
    `clock` is the flow's clock: opening hours whatever the test machine's date (published
    flows keep it). Asterisk is stopped by pid and its directories removed on exit."""
    from hotline.app import SERVICE, create_app, flow_for
    from hotline.dialplan_web import PUBLISHER

    definition_file = tmp / "hotline.yaml"
    definition_file.write_text(text, encoding="utf-8")
    defn = load_definition(definition_file)
    sb = Sandbox(ensure_root(), instance, SandboxPorts.offset(port_offset), state_dir=tmp / "state")
    sb.remove_dirs()
    sb.install(defn, cache_dir=cache_dir / "prompts")
    sb.start()
    try:
        await sb.wait_booted(timeout=30)
        state = sb.load_or_create_secrets(defn)
        settings = load_settings(env={}, data_dir=str(tmp / "data"), ami_port=sb.ports.ami, agi_port=sb.ports.agi,
                                 ami_secret=str(state["ami_secret"]), recordings_dir=str(sb.recordings_dir),
                                 definition=str(definition_file))
        app = create_app(settings, flow_for(defn, f"{sb.lib}/sounds"))
        service = app[SERVICE]
        service.runner.clock = clock
        publisher = publisher_for_sandbox(service, sb, live_text=text, live_defn=defn,
                                          check_port_offset=check_port_offset, cache_dir=cache_dir / "prompts",
                                          prompts_dir=DEFAULT_PATH.parent, definition_file=definition_file)
        app[PUBLISHER] = publisher
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        try:
            await service.ami.wait_ready(timeout=15)
            yield PublishingService(sb, service, server, publisher, definition_file)
        finally:
            await server.close()
    finally:
        sb.stop()
        sb.remove_dirs()
