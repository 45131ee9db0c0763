"""The service's event loop choice, and the FastAGI server's scenarios on uvloop.

The service runs on uvloop by default (ivr.agi.eventloop), while pytest-asyncio runs
tests/unit/test_agi_server.py on asyncio's loop; so every scenario there that takes
only the server fixtures runs again here, each on a fresh uvloop loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop  # a declared dependency: missing, this file fails, never skips

from hotline.settings import SettingsError, load_settings
from ivr.agi.eventloop import GC_YOUNG_THRESHOLD, LOOP_KINDS, loop_name, new_event_loop, tune_gc
from tests.support.agi_servers import AGITestBed
from tests.unit import test_agi_server

Scenario = Callable[..., Awaitable[None]]
FIXTURES = {"make_server", "connect"}


def _scenarios() -> list[Scenario]:
    """test_agi_server's async tests whose only parameters are its server fixtures."""
    found = []
    for name, func in vars(test_agi_server).items():
        if not (name.startswith("test_") and inspect.iscoroutinefunction(func)):
            continue
        params = set(inspect.signature(func).parameters)
        if params and params <= FIXTURES and not hasattr(func, "pytestmark"):
            found.append(func)
    return found


SCENARIOS = _scenarios()


@contextlib.asynccontextmanager
async def _server_fixtures() -> AsyncIterator[dict[str, Any]]:
    """test_agi_server's make_server and connect fixtures, for one scenario."""
    bed = AGITestBed()
    try:
        yield {"make_server": bed.make_server, "connect": bed.connect}
    finally:
        await bed.close_fakes()
        await bed.stop_servers()


def test_the_server_scenarios_were_found() -> None:
    names = {s.__name__ for s in SCENARIOS}
    assert len(SCENARIOS) >= 25
    assert {"test_normal_session", "test_stop_with_sessions_in_flight", "test_500_concurrent_sessions",
            "test_every_waiting_connection_is_accepted_in_one_pass"} <= names


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__.removeprefix("test_"))
def test_server_scenario_on_uvloop(scenario: Scenario) -> None:
    async def main() -> None:
        assert loop_name(asyncio.get_running_loop()) == "uvloop"
        async with _server_fixtures() as fixtures:
            await scenario(**{name: fixtures[name] for name in inspect.signature(scenario).parameters})

    loop = new_event_loop("uvloop")
    try:
        loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# -- the choice ------------------------------------------------------------------------------------


def test_new_event_loop_kinds() -> None:
    for kind in LOOP_KINDS:
        loop = new_event_loop(kind)
        try:
            assert loop_name(loop) == kind
            assert isinstance(loop, uvloop.Loop if kind == "uvloop" else asyncio.BaseEventLoop)
        finally:
            loop.close()


def test_unknown_event_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="uvloop, asyncio"):
        new_event_loop("trio")


def test_missing_uvloop_falls_back_to_asyncio(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with caplog.at_level(logging.WARNING, logger="ivr.agi.eventloop"):
        loop = new_event_loop("uvloop")
    try:
        assert loop_name(loop) == "asyncio"
        assert "uvloop is not installed" in caplog.text
    finally:
        loop.close()


def test_event_loop_setting() -> None:
    assert load_settings(env={}).event_loop == "uvloop"
    assert load_settings(env={"HOTLINE_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"


def test_service_refuses_an_unknown_event_loop_setting() -> None:
    from hotline.cli import _event_loop

    with pytest.raises(SettingsError, match="HOTLINE_EVENT_LOOP"):
        _event_loop(load_settings(env={"HOTLINE_EVENT_LOOP": "tokio"}))
    loop = _event_loop(load_settings(env={"HOTLINE_EVENT_LOOP": "asyncio"}))
    try:
        assert loop_name(loop) == "asyncio"
    finally:
        loop.close()


def test_tune_gc() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
