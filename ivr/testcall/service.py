"""The test-call component of the running service: launches runs as owned tasks,
stores their results, runs periodic schedules and raises failure alerts.

Started and stopped by the service; gets what it needs through its constructor (the
sessions, the flow, a source of expected prompt audio, where to dial).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.orm import Session, sessionmaker

from cti import channel_vars as cv
from cti.tracker import CallEvent
from ivr.model import Flow
from ivr.testcall.generator import Generated, generate
from ivr.testcall.runner import CallObserver, RunnerConfig, TestCallRunner, new_run_id
from ivr.testcall.scenario import Scenario, ScenarioError, load_scenario
from ivr.testcall.store import TestCallStore

log = logging.getLogger(__name__)

#: Concurrent test calls at most (each is a softphone process and a caller slot).
MAX_CONCURRENT = 4
WEBHOOK_TIMEOUT = 10.0
MIN_INTERVAL = 60


class TestCalls:
    """Runs scenarios against the hotline; one instance per service."""
    __test__ = False  # not a pytest test class, despite the name


    def __init__(self, sessions: sessionmaker[Session], flow: Callable[[], Flow], work_dir: Path, *,
                 prompt_files: Callable[[], Mapping[str, Path]], sip_host: str, sip_port: int,
                 number: str, trunk_header: str = "carrier") -> None:
        self.store = TestCallStore(sessions)
        self._flow = flow  # the live flow: a published edit is tested from the next run on
        self.work_dir = work_dir
        self.number = number
        self.sip_host = sip_host
        self.sip_port = sip_port
        self.trunk_header = trunk_header
        self.observer = CallObserver()
        self.alerts: list[dict[str, Any]] = []
        #: Shortest schedule interval accepted (seconds); tests lower it.
        self.min_interval = MIN_INTERVAL
        self._prompt_source = prompt_files
        self._runs: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._limit = asyncio.Semaphore(MAX_CONCURRENT)
        self._scheduler: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: The in-flight run of each schedule: a schedule never overlaps itself, even
        #: when a run (a real call) takes longer than its interval.
        self._scheduled: dict[int, asyncio.Task[dict[str, Any]]] = {}
        #: When each schedule is next due (time.time()); a run's end sets its next one.
        self._next_due: dict[int, float] = {}

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._scheduler = asyncio.create_task(self._schedule_loop(), name="testcall-scheduler")

    async def stop(self) -> None:
        # The scheduler first, so it starts no run after the others are collected.
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        tasks = [*self._runs.values(), *self._scheduled.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def on_call_event(self, event: CallEvent) -> None:
        """Subscriber of the service's tracker events (quick, never blocks)."""
        self.observer.feed(event)

    # -- scenarios ---------------------------------------------------------------------
    @property
    def flow(self) -> Flow:
        return self._flow()

    def prompt_ids(self) -> set[str]:
        return set(self.flow.prompts)

    def parse(self, text: str, source: str = "request") -> Scenario:
        """A scenario sent over the API: its WAVs must be in <work_dir>/media."""
        return load_scenario(source, text=text, base_dir=self.work_dir / "media", prompt_ids=self.prompt_ids(),
                             media_inside_base=True)

    def generated(self) -> Generated:
        return generate(self.flow, self.number)

    async def _runner(self) -> TestCallRunner:
        # The expected prompts as the current definition renders them (espeak-ng + sox,
        # blocking; cached by text, so a repeat costs file copies only).
        prompt_files = await asyncio.to_thread(self._prompt_source)
        config = RunnerConfig(sip_host=self.sip_host, sip_port=self.sip_port, prompt_files=prompt_files,
                              work_dir=self.work_dir / "runs", headers={cv.TRUNK_HEADER: self.trunk_header})
        return TestCallRunner(config, self.observer)

    # -- runs --------------------------------------------------------------------------
    async def launch(self, scenario: Scenario, scenario_yaml: str, trigger: str) -> str:
        """Start a run in the background (an owned task); its result row exists on return."""
        run_id = new_run_id()
        await asyncio.to_thread(self.store.start, run_id, scenario.name, scenario_yaml, trigger)
        task = asyncio.create_task(self._run(run_id, scenario), name=f"testcall-{run_id}")
        self._runs[run_id] = task
        task.add_done_callback(lambda _t: self._runs.pop(run_id, None))
        return run_id

    async def wait(self, run_id: str) -> dict[str, Any] | None:
        """The stored result once the run has finished."""
        task = self._runs.get(run_id)
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        return await asyncio.to_thread(self.store.get, run_id)

    async def run(self, scenario: Scenario, scenario_yaml: str = "", trigger: str = "api") -> dict[str, Any]:
        """Launch and wait: the runner's result (also stored)."""
        run_id = await self.launch(scenario, scenario_yaml, trigger)
        task = self._runs.get(run_id)
        if task is not None:
            return await asyncio.shield(task)
        row = await asyncio.to_thread(self.store.get, run_id)
        return dict((row or {}).get("result") or {})

    async def _run(self, run_id: str, scenario: Scenario) -> dict[str, Any]:
        async with self._limit:
            try:
                runner = await self._runner()
                result = await runner.run(scenario, run_id)
            except Exception as exc:  # our bug or the environment: stored, alerted, not lost
                log.exception("test call %s crashed", run_id)
                result = {"run_id": run_id, "scenario": scenario.name, "passed": False,
                          "failures": [f"runner error: {exc!r}"]}
                await asyncio.to_thread(self.store.finish, run_id, result, "error")
                return result
        await asyncio.to_thread(self.store.finish, run_id, result)
        return result

    # -- schedules ---------------------------------------------------------------------
    def add_schedule(self, name: str, scenario_yaml: str, interval: int, webhook: str | None,
                     created_by: str) -> dict[str, Any]:
        """Blocking (database); call `schedules_changed()` on the loop afterwards."""
        self.parse(scenario_yaml, f"schedule {name}")  # refuse a broken scenario now, not at 3 am
        if interval < self.min_interval:
            raise ValueError(f"interval must be at least {self.min_interval} seconds")
        if webhook is not None and not webhook.startswith(("http://", "https://")):
            raise ValueError("webhook must be an http(s) URL")
        return self.store.add_schedule(name, scenario_yaml, interval, webhook, created_by)

    def schedules_changed(self) -> None:
        self._wake.set()

    async def _schedule_loop(self) -> None:
        """Runs every enabled schedule when due; sleeps until the next one is due, a
        schedule changes or a scheduled run ends. A schedule with a run in flight waits:
        it is due again `interval` after that run ends, so slow calls do not pile up."""
        while True:
            self._wake.clear()
            schedules = await asyncio.to_thread(self.store.schedules, True)
            now = time.time()
            enabled = {s.id for s in schedules}
            for gone in [i for i in self._next_due if i not in enabled and i not in self._scheduled]:
                del self._next_due[gone]  # deleted: forget it (re-enabled, it starts a fresh interval)
            waiting = [s for s in schedules if s.id not in self._scheduled]
            for sched in waiting:
                due = self._next_due.setdefault(sched.id, now + sched.interval_seconds)
                if due <= now:
                    self._start_scheduled(sched.id, sched.name, sched.scenario_yaml, sched.webhook_url,
                                          sched.interval_seconds)
            pending = [self._next_due[s.id] for s in waiting if s.id not in self._scheduled]
            delay = max(0.05, min(pending) - time.time()) if pending else 3600.0
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel that lands as
            # the event is set, and stop() then waits for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _start_scheduled(self, schedule_id: int, name: str, scenario_yaml: str, webhook: str | None,
                         interval: float) -> None:
        task = asyncio.create_task(self.run_schedule(schedule_id, name, scenario_yaml, webhook),
                                   name=f"testcall-schedule-{schedule_id}")
        self._scheduled[schedule_id] = task

        def ended(_task: asyncio.Task[dict[str, Any]]) -> None:
            del self._scheduled[schedule_id]
            self._next_due[schedule_id] = time.time() + interval
            self._wake.set()

        task.add_done_callback(ended)

    async def scheduled_runs_idle(self) -> None:
        """Waits until no scheduled run is in flight (after a delete, say)."""
        while self._scheduled:
            await asyncio.gather(*self._scheduled.values(), return_exceptions=True)

    async def run_schedule(self, schedule_id: int, name: str, scenario_yaml: str,
                           webhook: str | None) -> dict[str, Any]:
        """One scheduled run; a failure is logged and POSTed to the webhook, unless the
        schedule was deleted while its call ran (nobody wants alerts from it any more)."""
        try:
            scenario = self.parse(scenario_yaml, f"schedule {name}")
        except ScenarioError as exc:
            result: dict[str, Any] = {"run_id": None, "scenario": name, "passed": False, "failures": exc.errors}
        else:
            result = await self.run(scenario, scenario_yaml, f"schedule:{schedule_id}")
        status = "passed" if result.get("passed") else "failed"
        if result.get("run_id"):
            await asyncio.to_thread(self.store.schedule_ran, schedule_id, result["run_id"], status)
        if not result.get("passed"):
            if await asyncio.to_thread(self.store.schedule_enabled, schedule_id):
                await self.alert(schedule_id, name, result, webhook)
            else:
                log.info("scheduled test call %s failed after its schedule was deleted; no alert", name)
        return result

    async def alert(self, schedule_id: int, name: str, result: dict[str, Any], webhook: str | None) -> None:
        payload = {"event": "testcall_failed", "schedule_id": schedule_id, "schedule": name,
                   "run_id": result.get("run_id"), "scenario": result.get("scenario"),
                   "failures": result.get("failures", []), "linkedid": result.get("linkedid")}
        log.warning("scheduled test call %s failed: %s", name, "; ".join(payload["failures"]))
        delivery: dict[str, Any] = {"webhook": webhook, "status": None, "error": None}
        if webhook:
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT)) as http:
                    async with http.post(webhook, data=json.dumps(payload, ensure_ascii=False),
                                         headers={"Content-Type": "application/json"}) as resp:
                        delivery["status"] = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                delivery["error"] = repr(exc)
                log.warning("test-call alert webhook %s failed: %r", webhook, exc)
        self.alerts.append({**payload, "delivery": delivery, "at": time.time()})
        del self.alerts[:-100]
