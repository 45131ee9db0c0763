"""Stand-alone test-call runs (`hotline testcall run`): no service needed.

The command opens its own AMI session and feeds its own call tracker, so the tagged
call's queue wait and time to agent come from Asterisk's events exactly as in the
service. Argument parsing lives in the composition layer (hotline/cli.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cti.ami.client import AMIClient
from cti.ami.events import Event
from cti.tracker import CallTracker
from ivr.testcall.runner import CallObserver, RunnerConfig, TestCallRunner, new_run_id
from ivr.testcall.scenario import Scenario
from ivr.testcall.store import TestCallStore


@dataclass(frozen=True, slots=True)
class AMIAccess:
    host: str
    port: int
    username: str
    secret: str


async def run_standalone(scenario: Scenario, scenario_yaml: str, config: RunnerConfig, ami: AMIAccess,
                         store: TestCallStore | None = None, trigger: str = "cli") -> dict[str, Any]:
    """Run one scenario with a private AMI session; store the result if a store is given."""
    tracker = CallTracker()
    observer = CallObserver()

    def on_event(event: Event) -> None:
        for call_event in tracker.feed(event):
            observer.feed(call_event)

    client = AMIClient(ami.host, ami.port, ami.username, ami.secret, on_event=on_event)
    run_id = new_run_id()
    if store is not None:
        store.start(run_id, scenario.name, scenario_yaml, trigger)
    await client.start()
    try:
        await client.wait_ready(timeout=15)
        result = await TestCallRunner(config, observer).run(scenario, run_id)
    except BaseException as exc:
        if store is not None:
            store.finish(run_id, {"run_id": run_id, "passed": False, "failures": [f"runner error: {exc!r}"]}, "error")
        raise
    finally:
        await client.stop()
    if store is not None:
        store.finish(run_id, result)
    return result
