"""The survey parts the service composes: store, flow (FastAGI "survey"), triggers, dialer.

HotlineService holds one `SurveyComponent`: it registers `agi_handler` under the
script name "survey", forwards finished hotline calls to `on_call_ended`, and may run
the dialer in-process (`start_dialer`); `hotline survey dial` runs it on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cti.ami.client import AMIClient
from ivr.survey import models
from ivr.survey.definition import DEFAULT_PATH, SurveyDefinition, load_survey
from ivr.survey.dialer import SurveyDialer
from ivr.survey.flow import SurveyChannel, SurveyFlow
from ivr.survey.prompts import render_survey_prompts
from ivr.survey.rules import SystemClock
from ivr.survey.store import Clock, SurveyStore

log = logging.getLogger(__name__)

#: Import for side effect: the survey tables join the shared metadata before create_schema.
TABLES = models.SurveyJob


def default_surveys() -> dict[str, SurveyDefinition]:
    defn = load_survey(DEFAULT_PATH)
    return {defn.name: defn}


def render_default_prompts(sounds_dir: Path, cache_dir: Path | None = None) -> None:
    """Render every built-in survey's prompts to `<sounds_dir>/survey/<survey>/<prompt>.wav`."""
    for defn in default_surveys().values():
        render_survey_prompts(defn, sounds_dir / "survey", cache_dir)


class SurveyComponent:
    def __init__(self, sessions: sessionmaker[Session], recordings_root: Path | None = None,
                 clock: Clock | None = None, surveys: dict[str, SurveyDefinition] | None = None,
                 default_region: str = "CN") -> None:
        self.clock = clock or SystemClock()
        self.store = SurveyStore(sessions, self.clock, default_region)
        self.surveys = surveys or default_surveys()
        self.flow = SurveyFlow(self.surveys, self.store, recordings_root)
        self.dialer: SurveyDialer | None = None
        self._dialer_task: asyncio.Task[None] | None = None
        self.calls_surveyed = 0

    async def agi_handler(self, channel: Any) -> None:
        channel_: SurveyChannel = channel
        await self.flow.run(channel_)

    def on_call_ended(self, call: dict[str, Any]) -> None:
        """Blocking (the service's writer thread): sample the call into call_ended campaigns."""
        results = self.store.on_call_ended(call)
        queued = [r for r in results if r.status == "queued"]
        self.calls_surveyed += len(queued)
        if queued and self.dialer is not None:
            self.dialer.wake()

    def start_dialer(self, ami: AMIClient, **kwargs: Any) -> SurveyDialer:
        self.dialer = SurveyDialer(self.store, ami, **kwargs)
        self._dialer_task = asyncio.create_task(self.dialer.run(), name="survey-dialer")
        return self.dialer

    async def stop(self) -> None:
        task, self._dialer_task = self._dialer_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(self) -> dict[str, Any]:
        dialer = self.dialer
        return {"dialer": dialer is not None, "calls_surveyed": self.calls_surveyed,
                "originates_sent": 0 if dialer is None else dialer.originates_sent}
