"""Run one test-call scenario: a softphone (own process) dials the hotline, follows the
script, records what it heard and measures every wait.

Two views of each wait are kept: the phone's (wall clock around its own actions and
the audio it heard) and Asterisk's (the call tracker's AMI timestamps, matched to
this call by the X-Hotline-Test tag the dialplan copies into HOTLINE_TEST). Queue
wait and time to agent are reported from the tracker, the authority.

Prompts are checked on the recording while the call runs: each `expect_prompt`
waits until the expected audio has been heard completely (so the next digit is
pressed when a real caller would press it), or fails after its window with the
best score seen. Audio has no events, so the growing recording is re-read every
POLL seconds; nothing else here polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cti import channel_vars as cv
from cti.tracker import CallEvent
from ivr.softphone.client import Call, PhoneConfig, Softphone, SoftphoneError
from ivr.testcall import audio
from ivr.testcall.scenario import DEFAULT_AGENT_WITHIN, DEFAULT_PROMPT_WITHIN, Scenario, Step

log = logging.getLogger(__name__)

POLL = 0.25
#: After the window closes, how long a prompt may still be finishing (seconds).
PROMPT_GRACE = 1.5
CALL_END_TIMEOUT = 15.0


def new_run_id() -> str:
    """Letters, digits and '_' only: kept by the dialplan's FILTER() and safe as file names."""
    return f"tc_{datetime.now(UTC):%Y%m%dT%H%M%S}_{secrets.token_hex(3)}"


class CallObserver:
    """Tracker call events for test calls, by tag. Fed synchronously from the tracker's
    subscribers (service) or from a private AMI session (CLI); waits are futures."""

    def __init__(self, keep: int = 2000) -> None:
        self.keep = keep
        self.by_linkedid: dict[str, list[CallEvent]] = {}
        self.linkedid_of: dict[str, str] = {}
        self._waiters: list[tuple[Callable[[], CallEvent | None], asyncio.Future[CallEvent]]] = []

    def feed(self, event: CallEvent) -> None:
        events = self.by_linkedid.setdefault(event.linkedid, [])
        events.append(event)
        tag = event.call.get("test_tag")
        if tag:
            self.linkedid_of.setdefault(str(tag), event.linkedid)
        while len(self.by_linkedid) > self.keep:
            self.by_linkedid.pop(next(iter(self.by_linkedid)))
        for check, future in list(self._waiters):
            if future.done():
                continue
            found = check()
            if found is not None:
                future.set_result(found)

    def events(self, tag: str) -> list[CallEvent]:
        linkedid = self.linkedid_of.get(tag)
        return list(self.by_linkedid.get(linkedid, [])) if linkedid else []

    def find(self, tag: str, kind: str) -> CallEvent | None:
        return next((e for e in self.events(tag) if e.kind == kind), None)

    async def wait(self, tag: str, kind: str, timeout: float) -> CallEvent | None:
        """The first `kind` event of the tagged call (past or future); None on timeout."""
        found = self.find(tag, kind)
        if found is not None:
            return found
        future: asyncio.Future[CallEvent] = asyncio.get_running_loop().create_future()
        entry = (lambda: self.find(tag, kind), future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._waiters.remove(entry)


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """Where to dial and what the prompts should sound like."""

    sip_host: str
    sip_port: int
    #: prompt id -> WAV file with the exact audio the hotline plays for it.
    prompt_files: Mapping[str, Path]
    work_dir: Path
    #: Extra INVITE headers (the sandbox carrier trunk needs X-Hotline-Trunk).
    headers: Mapping[str, str] = field(default_factory=dict)
    match_threshold: float = audio.MATCH_THRESHOLD


@dataclass
class StepResult:
    index: int
    kind: str
    ok: bool = True
    #: Seconds from the INVITE when the step started and how long it took.
    at: float = 0.0
    seconds: float = 0.0
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "ok": self.ok, "at": round(self.at, 3),
                "seconds": round(self.seconds, 3), "detail": self.detail, **self.extra}


class _Abort(Exception):
    """A step that makes the rest of the script meaningless (call gone, no agent)."""


class TestCallRunner:
    """Runs scenarios; one softphone process per call, stopped afterwards."""
    __test__ = False  # not a pytest test class, despite the name


    def __init__(self, config: RunnerConfig, observer: CallObserver) -> None:
        self.config = config
        self.observer = observer
        self._templates: dict[str, audio.Samples] = {}

    def _template(self, prompt: str) -> audio.Samples:
        if prompt not in self._templates:
            path = self.config.prompt_files.get(prompt)
            if path is None:
                raise KeyError(prompt)
            self._templates[prompt] = audio.load(path)
        return self._templates[prompt]

    async def run(self, scenario: Scenario, run_id: str | None = None) -> dict[str, Any]:
        """Place the call, follow the script, return the result (JSON-ready). Never raises
        for a failing hotline: failures are in `failures`; only our own bugs propagate."""
        run_id = run_id or new_run_id()
        out_dir = self.config.work_dir / run_id
        out_dir.mkdir(parents=True, exist_ok=True)
        heard_path = out_dir / "heard.wav"
        started_at = time.time()
        failures: list[str] = []
        steps: list[StepResult] = []
        missing = [p for p in scenario.prompts if p not in self.config.prompt_files]
        result: dict[str, Any] = {"run_id": run_id, "scenario": scenario.name, "path": list(scenario.path),
                                  "started_at": started_at, "heard_audio": str(heard_path)}
        if missing:
            failures.append(f"prompts not known to the hotline: {', '.join(missing)}")
            return self._finish(result, scenario, steps, failures, None, {})
        phone: Softphone | None = None
        call: Call | None = None
        t0 = time.monotonic()
        media_at: float | None = None
        try:
            config = PhoneConfig(name=f"testcall-{run_id}", username=scenario.caller_id or "qa-test", log_dir=out_dir)
            phone = await Softphone.start(config)
            headers = {**self.config.headers, cv.TEST_HEADER: run_id}
            t0 = time.monotonic()
            call = await phone.call(f"sip:{scenario.number}@{self.config.sip_host}:{self.config.sip_port}",
                                    headers=headers)
            await call.record(heard_path)  # starts with the media
            await call.wait_media(timeout=15)
            media_at = time.monotonic() - t0
            state = _RunState(call=call, heard=heard_path, t0=t0, media_at=media_at, tag=run_id)
            for index, step in enumerate(scenario.steps):
                sr = StepResult(index, step.kind, at=time.monotonic() - t0)
                steps.append(sr)
                try:
                    await self._step(step, sr, state)
                except _Abort as exc:
                    sr.ok, sr.detail = False, str(exc)
                    break
                except SoftphoneError as exc:
                    sr.ok, sr.detail = False, f"phone: {exc}"
                    break
                finally:
                    sr.seconds = time.monotonic() - t0 - sr.at
            first = next((s for s in steps if s.kind == "expect_prompt"), None)
            if first is not None and first.ok and media_at is not None:
                result["time_to_first_prompt"] = round(media_at + first.extra["onset_in_recording"], 3)
        except SoftphoneError as exc:
            failures.append(f"the test call could not be placed: {exc}")
        finally:
            if call is not None and not call.ended:
                with contextlib.suppress(SoftphoneError):
                    await call.hangup()
                    await call.wait_state("DISCONNECTED", timeout=10)
            if phone is not None:
                await phone.stop()
        ended = await self.observer.wait(run_id, "call_ended", CALL_END_TIMEOUT)
        phone_view = {"media_seconds": None if media_at is None else round(media_at, 3)}
        answered_step = next((s for s in steps if s.kind == "wait_agent" and s.ok), None)
        if answered_step is not None:
            phone_view["time_to_agent"] = round(answered_step.at + answered_step.seconds, 3)
        return self._finish(result, scenario, steps, failures, ended, phone_view)

    async def _step(self, step: Step, sr: StepResult, state: _RunState) -> None:
        call = state.call
        if step.kind == "expect_prompt":
            assert step.prompt is not None
            await self._expect_prompt(step, sr, state)
        elif step.kind == "press":
            assert step.digits is not None
            await call.send_dtmf(step.digits)
            sr.detail = f"pressed {step.digits}"
        elif step.kind == "wait_agent":
            within = step.within if step.within is not None else DEFAULT_AGENT_WITHIN
            event = await _until_ended(call, self.observer.wait(state.tag, "agent_answered", within))
            if event is None:
                queued = self.observer.find(state.tag, "queue_joined")
                where = f"queue {queued.call.get('queue')}" if queued else "no queue joined"
                raise _Abort(f"no agent answered within {within:g} s ({where})")
            sr.detail = f"agent {event.call.get('agent')} answered"
            sr.extra["agent"] = event.call.get("agent")
        elif step.kind == "play":
            assert step.wav is not None
            await call.play(step.wav)
            pcm = audio.load(step.wav)
            await call.wait_play_done(timeout=pcm.size / audio.RATE + 10)
            sr.detail = f"played {step.wav.name}"
        elif step.kind == "stay":
            assert step.seconds is not None
            try:
                await call.wait_state("DISCONNECTED", timeout=step.seconds)
            except SoftphoneError:
                sr.detail = f"stayed {step.seconds:g} s"  # the normal case: nobody hung up
            else:
                raise _Abort(f"the hotline hung up during a {step.seconds:g} s stay")
        elif step.kind == "hangup":
            await call.hangup()
            await call.wait_state("DISCONNECTED", timeout=10)
            sr.detail = "hung up"
        elif step.kind == "expect_hangup":
            within = step.within if step.within is not None else 30.0
            try:
                await call.wait_state("DISCONNECTED", timeout=within)
            except SoftphoneError as exc:
                raise _Abort(f"the hotline did not hang up within {within:g} s") from exc
            sr.detail = "the hotline hung up"

    async def _expect_prompt(self, step: Step, sr: StepResult, state: _RunState) -> None:
        """Wait until the prompt has been heard completely after the cursor, or its window ends."""
        assert step.prompt is not None
        template = self._template(step.prompt)
        duration = template.size / audio.RATE
        within = step.within if step.within is not None else DEFAULT_PROMPT_WITHIN
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within + duration + PROMPT_GRACE
        best = audio.Match(0.0, 0.0, duration, 0)
        checked = -1
        while True:
            heard = await asyncio.to_thread(_read_heard, state.heard)
            region = heard[state.cursor:]
            if region.size >= template.size and region.size != checked:
                # Placements that fitted in what was already searched cannot change: only
                # search where the prompt could end in the new audio (keeps each check short).
                start = max(0, checked - template.size - audio.SLACK - 1) if checked > 0 else 0
                checked = region.size
                match = await asyncio.to_thread(audio.find_prompt, region[start:], template)
                match = replace(match, onset=round(match.onset + start / audio.RATE, 3))
                if match.score > best.score:
                    best = match
                if match.matched(self.config.match_threshold):
                    break
            if loop.time() >= deadline:
                break
            if state.call.ended:
                raise _Abort(f"call ended while waiting for prompt {step.prompt}")
            await asyncio.sleep(POLL)
        onset = state.cursor / audio.RATE + best.onset
        sr.extra.update({"prompt": step.prompt, "score": best.score, "onset_in_recording": round(onset, 3),
                         "prompt_seconds": round(duration, 3), "threshold": self.config.match_threshold})
        if best.matched(self.config.match_threshold):
            state.cursor += int(round((best.onset + best.duration) * audio.RATE))
            sr.extra["heard_at"] = round(state.media_at + onset, 3)
            sr.detail = f"prompt {step.prompt} matched (score {best.score:.2f})"
        else:
            sr.ok = False
            sr.detail = (f"prompt {step.prompt} not heard within {within:g} s: best score {best.score:.2f} "
                         f"< {self.config.match_threshold:.2f} (wrong or missing prompt)")

    def _finish(self, result: dict[str, Any], scenario: Scenario, steps: list[StepResult], failures: list[str],
                ended: CallEvent | None, phone_view: dict[str, Any]) -> dict[str, Any]:
        for s in steps:
            if not s.ok:
                failures.append(f"step {s.index} ({s.kind}): {s.detail}")
        call = ended.call if ended is not None else {}
        tracker: dict[str, Any] = {}
        if ended is not None:
            joined, connected = call.get("queue_joined_at"), call.get("agent_connected_at")
            tracker = {
                "linkedid": ended.linkedid, "queue": call.get("queue"), "agent": call.get("agent"),
                "menu_choice": call.get("menu_choice"), "outcome": call.get("outcome"),
                "queue_wait": round(connected - joined, 3) if joined and connected else None,
                "time_to_agent": round(connected - call["started_at"], 3) if connected else None,
                "talk_seconds": call.get("talk_seconds"), "duration_seconds": call.get("duration_seconds"),
                "test_tag": call.get("test_tag"),
            }
        elif steps:
            failures.append("the call's AMI events were not seen (no call_ended for the X-Hotline-Test tag)")
        limits = scenario.thresholds
        measures = {"time_to_first_prompt": result.get("time_to_first_prompt"),
                    "queue_wait": tracker.get("queue_wait"), "time_to_agent": tracker.get("time_to_agent")}
        for name, value, limit in (("time to first prompt", measures["time_to_first_prompt"], limits.max_first_prompt),
                                   ("queue wait", measures["queue_wait"], limits.max_queue_wait),
                                   ("time to agent", measures["time_to_agent"], limits.max_time_to_agent)):
            if limit is not None and value is not None and value > limit:
                failures.append(f"{name} {value:.2f} s exceeds the threshold {limit:g} s")
        result.update({
            "passed": not failures, "failures": failures, "linkedid": tracker.get("linkedid"),
            "ended_at": time.time(), "measures": measures, "phone": phone_view, "tracker": tracker,
            "steps": [s.to_dict() for s in steps], "scenario_definition": scenario.to_dict(),
        })
        result.pop("time_to_first_prompt", None)
        return result


@dataclass
class _RunState:
    call: Call
    heard: Path
    t0: float
    media_at: float
    tag: str
    cursor: int = 0  # samples of the recording already accounted for by matched prompts


def _read_heard(path: Path) -> audio.Samples:
    try:
        return audio.load(path)
    except (OSError, audio.AudioError):
        return np.zeros(0)  # not created yet: pjsua opens it with the media


async def _until_ended(call: Call, waiting: Any) -> Any:
    """Await `waiting`, but give up (None) if the call ends first."""
    task = asyncio.ensure_future(waiting)
    ended = asyncio.ensure_future(call.wait_state("DISCONNECTED", timeout=3600))
    try:
        done, _ = await asyncio.wait({task, ended}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        raise _Abort("the call ended while waiting for an agent")
    finally:
        for t in (task, ended):
            if not t.done():
                t.cancel()
        await asyncio.gather(task, ended, return_exceptions=True)
