"""The README's one-liner `hotline call` places a real call against a running service."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestServer

from hotline.democall import place_demo_call
from hotline.sandbox import Sandbox
from hotline.settings import load_settings

pytestmark = pytest.mark.asterisk


async def test_demo_call_reaches_an_agent(sandbox: Sandbox, service_server: TestServer,
                                         tokens: dict[str, str]) -> None:
    result = await place_demo_call(sandbox, load_settings(env={}), digits="2", caller="13700137000",
                                   base_url=str(service_server.make_url("")).rstrip("/"), token=tokens["admin"])
    assert result["ok"] is True, result
    call = result["call"]
    assert call["queue"] == "installation" and call["menu_choice"] == "2"
    assert call["agent"] in ("1001", "1002")
    assert {r["leg"] for r in result["recordings"]} == {"mix", "rx", "tx", "agent"}  # agent: the agent's own voice
