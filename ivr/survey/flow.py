"""Run a survey on an answered outbound call over FastAGI (script name "survey").

The engine style is the IVR's (ivr.engine): prompts are sound files, one DTMF digit
per question, a re-ask on invalid input or silence. Unlike the IVR, the survey
stores what it learns as it goes: every answer is committed (in a worker thread)
before the next prompt plays, so a crash of any process loses nothing already
pressed. The attempt id arrives as a channel variable set on the Originate.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from cti import channel_vars as cv
from ivr.agi.errors import AGIHangup
from ivr.survey.definition import ClosingStep, PlayStep, QuestionStep, RecordStep, SurveyDefinition
from ivr.survey.store import SurveyContext, SurveyError, SurveyStore

log = logging.getLogger(__name__)

MAX_STEPS = 64
_ID = re.compile(r"[0-9]{1,12}")


class SurveyChannel(Protocol):
    """What the survey needs from an AGI channel (ivr.agi.server.AGIChannel)."""

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None: ...
    async def wait_for_digit(self, timeout_ms: int) -> str | None: ...
    async def get_variable(self, name: str) -> str | None: ...
    async def hangup(self) -> None: ...
    async def command(self, *words: str, timeout: float | None = None) -> object: ...


class SurveyFlow:
    """One instance serves every survey call; `surveys` by name."""

    def __init__(self, surveys: Mapping[str, SurveyDefinition], store: SurveyStore,
                 recordings_root: Path | None = None) -> None:
        self.surveys = dict(surveys)
        self.store = store
        #: Where the service sees Asterisk's recordings (to measure a comment's length).
        self.recordings_root = recordings_root
        #: Progress callbacks (ctx, "ask" | "answer" | "record" | "end", step id or result):
        #: status pages and tests follow a survey without polling. Must not block.
        self.listeners: list[Callable[[SurveyContext, str, str], None]] = []

    def _notify(self, ctx: SurveyContext, kind: str, what: str) -> None:
        for listener in list(self.listeners):
            try:
                listener(ctx, kind, what)
            except Exception:
                log.exception("survey listener failed")

    async def run(self, channel: SurveyChannel) -> str:
        """Walk the survey; returns completed | partial | no_input (also stored)."""
        raw = await channel.get_variable(cv.SURVEY_ATTEMPT) or ""
        if not _ID.fullmatch(raw):
            raise SurveyError(f"survey call without a valid {cv.SURVEY_ATTEMPT} ({raw[:20]!r})")
        ctx = await asyncio.to_thread(self.store.survey_started, int(raw))
        answers = 0
        result = "no_input"
        gave_up = False
        try:  # from here on the attempt always learns that the survey ended, and how
            defn = self.surveys.get(ctx.survey)
            if defn is None:
                raise SurveyError(f"unknown survey {ctx.survey!r}")
            sounds = (await channel.get_variable(cv.SURVEY_SOUNDS) or "").rstrip("/") + f"/{defn.name}"
            recdir = (await channel.get_variable(cv.SURVEY_RECDIR) or "").rstrip("/")
            step = defn.steps[defn.start]
            for _ in range(MAX_STEPS):
                if isinstance(step, PlayStep):
                    await channel.stream_file(f"{sounds}/{step.prompt}")
                    step = defn.steps[step.next]
                elif isinstance(step, QuestionStep):
                    digit = await self._ask(channel, ctx, defn, sounds, step)
                    if digit is None:  # nobody is answering: thank them and stop
                        gave_up = True
                        result = "partial" if answers else "no_input"
                        step = self._closing(defn)
                        continue
                    answers += 1
                    await self._store_answer(ctx, step, digit)
                    self._notify(ctx, "answer", step.id)
                    step = defn.steps[step.branches.get(digit, step.next)]
                elif isinstance(step, RecordStep):
                    await self._record(channel, ctx, sounds, recdir, step)
                    step = defn.steps[step.next]
                else:
                    if not gave_up:
                        result = "completed" if answers else "no_input"
                    await channel.stream_file(f"{sounds}/{step.prompt}")
                    await channel.hangup()
                    return result
            raise SurveyError(f"survey {defn.name} did not reach its closing in {MAX_STEPS} steps")
        except AGIHangup:
            if result != "completed":  # a hangup during the closing prompt is still a complete survey
                result = "partial" if answers else "no_input"
            raise
        finally:
            await asyncio.to_thread(self.store.survey_ended, ctx.attempt_id, result)
            self._notify(ctx, "end", result)

    @staticmethod
    def _closing(defn: SurveyDefinition) -> ClosingStep:
        return next(s for s in defn.steps.values() if isinstance(s, ClosingStep))

    async def _ask(self, channel: SurveyChannel, ctx: SurveyContext, defn: SurveyDefinition, sounds: str,
                   step: QuestionStep) -> str | None:
        for _ in range(step.retries + 1):
            self._notify(ctx, "ask", step.id)
            digit = await channel.stream_file(f"{sounds}/{step.prompt}", step.digits + "*#0123456789")
            if not digit:
                digit = await channel.wait_for_digit(int(step.timeout_s * 1000))
            if digit and digit in step.digits:
                return digit
            if digit and defn.invalid_prompt:
                await channel.stream_file(f"{sounds}/{defn.invalid_prompt}")
        return None

    async def _store_answer(self, ctx: SurveyContext, step: QuestionStep, digit: str) -> None:
        score = int(digit) if digit.isdigit() else None
        await asyncio.to_thread(
            self.store.save_answer, ctx, step.id, digit, score=score,
            low_score=step.low_score is not None and score is not None and score <= step.low_score,
            praise=digit in step.praise if step.praise else False,
            callback=bool(step.callback) and digit == step.callback)

    async def _record(self, channel: SurveyChannel, ctx: SurveyContext, sounds: str, recdir: str,
                      step: RecordStep) -> None:
        if not recdir:
            log.warning("survey attempt %s: no %s on the channel; comment skipped", ctx.attempt_id, cv.SURVEY_RECDIR)
            return
        await channel.stream_file(f"{sounds}/{step.prompt}")
        self._notify(ctx, "record", step.id)
        name = f"survey-job{ctx.job_id}-attempt{ctx.attempt_id}-{step.id}"
        try:
            # RECORD FILE <file> <format> <escape digits> <timeout ms> <offset> BEEP s=<silence>
            await channel.command("RECORD FILE", f"{recdir}/{name}", "wav", "#", str(step.max_seconds * 1000), "0",
                                  "BEEP", f"s={step.silence_s}", timeout=step.max_seconds + 30)
        finally:
            # Stored even when the customer hangs up while speaking: Asterisk keeps the file.
            await asyncio.to_thread(self.store.save_answer, ctx, step.id, "recorded",
                                    recording=f"{name}.wav", seconds=self._seconds(name))

    def _seconds(self, name: str) -> float | None:
        if self.recordings_root is None:
            return None
        path = self.recordings_root / f"{name}.wav"
        try:
            return round(max(0, path.stat().st_size - 44) / 16000, 2)
        except OSError:
            return None
