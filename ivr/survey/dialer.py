"""The survey dialer: claims due jobs within the caps and places each call exactly once.

Order of events for one attempt (why it survives a crash):

1. `store.claim_next` commits the attempt row with the Uniqueid the channel will get
   (AMI Originate `ChannelId`) and the rule that allowed the call;
2. the Originate is sent once (never re-sent: cti.originate's rule);
3. the OriginateResponse (matched by ActionID, or by Uniqueid after a restart) and the
   channel's Hangup settle the attempt together with the survey flow's own writes.

On start, and for any attempt this process does not own, `reconcile` asks Asterisk
which of those Uniqueids are still up (CoreShowChannels) and the database what became
of the others (survey rows, the calls table the tracker writes). Nothing is redialled
unless it provably never reached Asterisk.

Caps: at most `max_concurrent` attempts in flight per campaign (counted in the
database, so a restarted dialer respects calls its predecessor left running) and
at most `pace_per_second` Originates per second. Both are the dialer's (per campaign);
the Originator it sends through is left uncapped so the two never fight.

The Originate goes through `cti.originate.Originator` with the attempt row's Uniqueid
(`channel_id=`): it corrects Asterisk 22's `Reason: 0` for a SIP 486 from the leg's
DialEnd / hangup cause (so busy is busy), and refuses a number on the shared
do-not-call list (`cti.suppression`, request `customer_number`) without sending
anything, even when the number was added after the job was claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from cti import channel_vars as cv
from cti.ami.client import AMIClient, AMIError
from cti.ami.events import CoreShowChannel, Event, Hangup, OriginateResponse
from cti.originate import OriginateRequest, OriginateResult, Originator, result_from_event
from ivr.survey.rules import CampaignRules
from ivr.survey.store import DialTicket, SurveyStore

log = logging.getLogger(__name__)

#: Seconds between checks for due jobs when nothing wakes the dialer earlier.
POLL_S = 1.0
#: Attempts not owned by this process are reconciled this often ...
RECONCILE_EVERY_S = 5.0
#: ... and decided only once they have looked unfinished for this long.
RECONCILE_GRACE_S = 4.0
#: The Originator's own cap; the per-campaign caps (rules) are the ones that bind.
ORIGINATOR_CAP = 10_000


class SurveyDialer:
    def __init__(self, store: SurveyStore, ami: AMIClient, *, campaigns: list[str] | None = None,
                 routes: Mapping[str, str] | None = None, poll_s: float = POLL_S,
                 response_grace_s: float = 15.0) -> None:
        self.store = store
        self.ami = ami
        self.campaign_names = campaigns
        #: Per-number dial strings that override the campaign's template (e.g. test phones).
        self.routes = dict(routes or {})
        self.poll_s = poll_s
        self.response_grace_s = response_grace_s
        self.originator = Originator(ami, max_concurrent=ORIGINATOR_CAP, rate_per_second=None,
                                     response_grace_s=response_grace_s, suppression=store.suppression)
        self.outcomes: dict[str, int] = {}
        self._wake = asyncio.Event()
        # Uniqueids this process originated and still hears about (their OriginateResponse is
        # the Originator's, not a predecessor's): kept until both the dial task and the hangup are done.
        self._mine: set[str] = set()
        self._dialing: set[str] = set()  # Uniqueids whose dial task is running
        self._watching: set[str] = set()  # Uniqueids of attempts this process settles
        self._owned: set[int] = set()  # attempt ids with a running dial task here
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_start: dict[int, float] = {}
        self._last_reconcile = float("-inf")
        self._orphan_since: dict[int, float] = {}
        clock_subscribe = getattr(store.clock, "subscribe", None)
        if clock_subscribe is not None:
            clock_subscribe(self.wake)

    @property
    def originates_sent(self) -> int:
        """Originates that left this process (suppressed / not-sent ones are not counted)."""
        return self.originator.sent

    def wake(self) -> None:
        """Look for due jobs now (the clock moved, a job was added, a call ended)."""
        self._wake.set()

    # -- main loop ---------------------------------------------------------------------
    async def run(self) -> None:
        sub = self.ami.subscribe(maxsize=100_000)
        router = asyncio.create_task(self._route(sub), name="survey-dialer-events")
        try:
            while True:
                if self.ami.ready:
                    loop = asyncio.get_running_loop()
                    if loop.time() - self._last_reconcile >= RECONCILE_EVERY_S:
                        self._last_reconcile = loop.time()
                        await self.reconcile()
                    await self._dial_due()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_s):
                        await self._wake.wait()
        finally:
            sub.close()
            router.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.wait({router, *self._tasks})
            await self.originator.aclose()

    async def _dial_due(self) -> None:
        loop = asyncio.get_running_loop()
        for camp in await asyncio.to_thread(self._campaigns):
            rules = CampaignRules.from_json(camp["rules_json"])
            interval = 1.0 / rules.pace_per_second
            # Counted in the database (attempts a killed predecessor left in flight count too),
            # once per pass; our own claims are added as they happen.
            active = await asyncio.to_thread(self.store.in_flight, camp["id"])
            while self.ami.ready and active < rules.max_concurrent:
                now = loop.time()
                booked = self._next_start.get(camp["id"], float("-inf"))
                if booked > now:
                    # Pacing is a schedule: come back when this campaign's next slot opens,
                    # other campaigns go on meanwhile.
                    loop.call_later(booked - now, self.wake)
                    break
                ticket = await asyncio.to_thread(self.store.claim_next, camp["id"])
                if ticket is None:
                    break
                active += 1
                # Slots are at least one interval apart, counted from the moment this start was
                # decided (before the claim's database time): never two starts in one interval.
                self._next_start[camp["id"]] = max(booked, now) + interval
                self._owned.add(ticket.attempt_id)
                self._mine.add(ticket.uniqueid)
                self._dialing.add(ticket.uniqueid)
                self._watching.add(ticket.uniqueid)
                task = asyncio.create_task(self._dial(ticket, rules), name=f"survey-dial-{ticket.attempt_id}")
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    def _campaigns(self) -> list[dict[str, Any]]:
        camps = [c for c in self.store.campaigns() if c["active"]]
        if self.campaign_names is not None:
            camps = [c for c in camps if c["name"] in self.campaign_names]
        return camps

    async def _dial(self, ticket: DialTicket, rules: CampaignRules) -> None:
        try:
            request = OriginateRequest(
                channel=self.routes.get(ticket.number, ticket.channel), context=rules.context, exten=rules.exten,
                priority=1, caller_id=rules.caller_id, timeout_s=rules.ring_timeout_s,
                variables={cv.ORIGIN: "survey", cv.SURVEY_JOB: str(ticket.job_id),
                           cv.SURVEY_ATTEMPT: str(ticket.attempt_id)},
                customer_number=ticket.number)
            # Marked before it leaves (a restart must not redial a call that may have rung);
            # sent at most once; "unknown" is left to `reconcile`, never re-sent.
            await asyncio.to_thread(self.store.originate_sending, ticket.attempt_id)
            result = await self.originator.originate(request, channel_id=ticket.uniqueid)
        except Exception as exc:  # a bad dial string: nothing was sent
            log.exception("survey attempt %s: originate not sent", ticket.attempt_id)
            result = OriginateResult(False, "not_sent", None, ticket.uniqueid, ticket.channel, "", str(exc))
        self.outcomes[result.outcome] = self.outcomes.get(result.outcome, 0) + 1
        try:
            await asyncio.to_thread(self.store.originate_result, ticket.attempt_id, result.outcome, result.reason,
                                    result.channel, result.message)
        finally:
            self._owned.discard(ticket.attempt_id)
            if result.outcome in ("failed", "not_sent", "suppressed"):
                # No channel was created, so no Hangup will come. Other outcomes keep
                # watching: the Hangup (before or after this) records the hangup cause.
                self._watching.discard(ticket.uniqueid)
            self._dialing.discard(ticket.uniqueid)
            if ticket.uniqueid not in self._watching:
                self._mine.discard(ticket.uniqueid)
            self.wake()

    # -- events ------------------------------------------------------------------------
    async def _route(self, sub: Any) -> None:
        async for event in sub:
            self._on_event(event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, OriginateResponse):
            if event.uniqueid in self._watching and event.uniqueid not in self._mine:
                # The Originate of an attempt reconciled after a restart (sent by our predecessor);
                # our own go through the Originator, which also hears the leg's DialEnd / cause.
                result = result_from_event(event, "", event.uniqueid)
                self._spawn(self._late_result(event.uniqueid, result))
        elif isinstance(event, Hangup) and event.channel is not None and event.channel.uniqueid in self._watching:
            uniqueid = event.channel.uniqueid
            self._spawn(self._hangup(uniqueid, event.cause))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("survey dialer task %s failed", task.get_name(), exc_info=task.exception())

    async def _hangup(self, uniqueid: str, cause: int | None) -> None:
        await asyncio.to_thread(self.store.hangup, uniqueid, cause)
        self._watching.discard(uniqueid)
        if uniqueid not in self._dialing:
            self._mine.discard(uniqueid)
        self.wake()

    async def _late_result(self, uniqueid: str, result: OriginateResult) -> None:
        for attempt in await asyncio.to_thread(self.store.unsettled):
            if attempt["uniqueid"] == uniqueid:
                await asyncio.to_thread(self.store.originate_result, attempt["id"], result.outcome, result.reason,
                                        result.channel)

    # -- reconciliation ----------------------------------------------------------------
    async def reconcile(self) -> dict[str, int]:
        """Settle in-flight attempts this process does not own (after a restart or an unknown)."""
        def orphaned(a: dict[str, Any]) -> bool:
            if a["id"] in self._owned:
                return False  # its dial task is still waiting for the OriginateResponse
            unknown = a["originate_outcome"] == "unknown" and not a["reconciled"]
            return a["uniqueid"] not in self._watching or unknown

        orphans = [a for a in await asyncio.to_thread(self.store.unsettled) if orphaned(a)]
        if not orphans:
            return {}
        try:
            _, channels = await self.ami.send_list_action("CoreShowChannels")
        except (AMIError, TimeoutError) as exc:
            log.warning("survey reconcile postponed: %s", exc)
            return {}
        live = {c.channel.uniqueid for c in channels if isinstance(c, CoreShowChannel) and c.channel is not None}
        counts: dict[str, int] = {}
        now = asyncio.get_running_loop().time()
        for attempt in orphans:
            # Wall time, not the store's clock (tests freeze that): a flow may still be writing.
            first_seen = self._orphan_since.setdefault(attempt["id"], now)
            verdict = await asyncio.to_thread(self.store.reconcile, attempt["id"], live=attempt["uniqueid"] in live,
                                              patient=now - first_seen < RECONCILE_GRACE_S)
            if verdict != "wait":
                self._orphan_since.pop(attempt["id"], None)
            if verdict == "live":
                self._watching.add(attempt["uniqueid"])
            counts[verdict] = counts.get(verdict, 0) + 1
            log.info("survey attempt %s (%s) reconciled: %s", attempt["id"], attempt["uniqueid"], verdict)
        self.wake()
        return counts
