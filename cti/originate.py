"""Outbound calls through AMI `Originate`, sent once and never again.

`Originator.originate(request)` sends one asynchronous Originate (`Async: true`,
own ActionID, own channel Uniqueid) over the service's `AMIClient` and waits for
the matching `OriginateResponse` event. The result names what happened to the
outbound leg: "answered", "no_answer", "busy", "congestion" or "failed" from
Asterisk's reason code refined by the leg's own DialEnd and hangup cause (Asterisk 22
reports a SIP 486 as Reason 0), or "unknown" when the AMI session dropped (or the event
never came) after the action may have reached Asterisk. "unknown" is never
retried here: a second Originate could ring a customer twice, so the caller
reconciles from events (the channel's Uniqueid is known in advance: the
`uniqueid` field) before deciding to dial again. "not_sent" means nothing left
the process (AMI not ready): safe to retry later. "suppressed" means the request
named a `customer_number` that is on the shared do-not-call list (`cti.suppression`,
given to the Originator as `suppression`): refused, nothing was sent.

The request checks and the reason mapping are pure functions (`originate_headers`,
`result_from_event`, `outcome_for_reason`, `Pacer`); only `Originator` does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Final, Protocol

from cti.ami.client import AMIActionError, AMIClient, AMIConnectionLost, AMITimeout, Subscription
from cti.ami.events import DialEnd, Event, Hangup, HangupRequest, Newchannel, OriginateResponse
from cti.tracker import ORIGINATE_REASONS, originate_outcome

__all__ = [
    "OUTCOMES",
    "InvalidOriginateRequest",
    "OriginateRequest",
    "OriginateResult",
    "Originator",
    "Pacer",
    "SuppressionCheck",
    "originate_headers",
    "outcome_for_reason",
    "result_from_event",
]

log = logging.getLogger(__name__)

# OriginateResponse `Reason` is the last AST_CONTROL_* frame seen on the outbound
# leg (main/pbx.c, pbx_dial_reason, Asterisk 22): 0 failed (also a SIP 486 on
# Asterisk 22.10, see cti.tracker.originate_outcome), 1 hung up before answer,
# 3 still ringing at Timeout, 4 answered, 5 busy, 8 congestion.
REASON_OUTCOMES: Final[Mapping[int, str]] = MappingProxyType(dict(ORIGINATE_REASONS))

OUTCOMES: Final = ("answered", "no_answer", "busy", "congestion", "failed", "unknown", "not_sent", "suppressed")

_VAR_NAME = re.compile(r"_{0,2}[A-Za-z][A-Za-z0-9_]{0,79}")
_CHANNEL = re.compile(r"[A-Za-z][A-Za-z0-9_]*/\S+")
_FORBIDDEN = re.compile(r"[\r\n\x00]")
_MAX_TEXT = 1024


class InvalidOriginateRequest(ValueError):
    """The request would be unsafe or meaningless to send; nothing was sent."""


def _check_text(what: str, value: str, *, allow_empty: bool = True, max_len: int = _MAX_TEXT) -> None:
    if not isinstance(value, str):
        raise InvalidOriginateRequest(f"{what} must be a string, not {type(value).__name__}")
    if _FORBIDDEN.search(value):
        # A CR/LF would end the AMI header and let the text inject headers or actions.
        raise InvalidOriginateRequest(f"{what} contains a line break or NUL: {value!r}")
    if not allow_empty and not value:
        raise InvalidOriginateRequest(f"{what} must not be empty")
    if len(value) > max_len:
        raise InvalidOriginateRequest(f"{what} is longer than {max_len} characters")


@dataclass(frozen=True, slots=True)
class OriginateRequest:
    """One outbound call: dial `channel`, then run `context/exten/priority` or `application(data)`.

    `variables` are set on the outbound channel (tag calls with them, e.g.
    HOTLINE_ORIGIN=survey: the tracker reports HOTLINE_* variables). Invalid or
    hostile values raise InvalidOriginateRequest on construction.

    `customer_number` marks a customer-facing call: the Originator refuses it when
    that number is on the do-not-call list (checked in the Originator, so no caller
    can forget it).
    """

    channel: str
    context: str | None = None
    exten: str | None = None
    priority: int | str | None = None
    application: str | None = None
    data: str | None = None
    caller_id: str = ""
    timeout_s: float = 30.0
    variables: Mapping[str, str] = field(default_factory=dict)
    account_code: str | None = None
    customer_number: str | None = None

    def __post_init__(self) -> None:
        _check_text("channel", self.channel, allow_empty=False, max_len=256)
        if not _CHANNEL.fullmatch(self.channel):
            raise InvalidOriginateRequest(f"channel must look like Tech/resource, not {self.channel!r}")
        dialplan = any(v is not None for v in (self.context, self.exten, self.priority))
        app = self.application is not None or self.data is not None
        if dialplan == app:
            raise InvalidOriginateRequest("give either context/exten/priority or application/data")
        if dialplan:
            for name in ("context", "exten"):
                value = getattr(self, name)
                if value is None:
                    raise InvalidOriginateRequest(f"{name} is required with a dialplan target")
                _check_text(name, value, allow_empty=False, max_len=80)
            priority = 1 if self.priority is None else self.priority
            if isinstance(priority, bool) or not isinstance(priority, (int, str)):
                raise InvalidOriginateRequest("priority must be an int or a label")
            _check_text("priority", str(priority), allow_empty=False, max_len=80)
            if isinstance(priority, int) and priority < 1:
                raise InvalidOriginateRequest("priority must be >= 1")
        else:
            if not self.application:
                raise InvalidOriginateRequest("application is required with application data")
            _check_text("application", self.application, allow_empty=False, max_len=80)
            _check_text("data", self.data or "")
        _check_text("caller_id", self.caller_id, max_len=256)
        if self.account_code is not None:
            _check_text("account_code", self.account_code, allow_empty=False, max_len=80)
        if self.customer_number is not None:
            _check_text("customer_number", self.customer_number, allow_empty=False, max_len=64)
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)):
            raise InvalidOriginateRequest("timeout_s must be a number")
        if not 0 < self.timeout_s <= 3600:
            raise InvalidOriginateRequest(f"timeout_s must be in (0, 3600], not {self.timeout_s}")
        if not isinstance(self.variables, Mapping):
            raise InvalidOriginateRequest("variables must be a mapping of name -> value")
        for name, value in self.variables.items():
            if not isinstance(name, str) or not _VAR_NAME.fullmatch(name):
                raise InvalidOriginateRequest(f"invalid channel variable name {name!r}")
            _check_text(f"variable {name}", value)
            # manager.c splits each Variable header on ',' (AST_STANDARD_APP_ARGS):
            # a comma would silently set a second, attacker-chosen variable.
            if "," in value:
                raise InvalidOriginateRequest(f"variable {name} must not contain ',' (Asterisk splits on it)")
        # Freeze the mapping: the request is a value, shared between tasks.
        object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))


@dataclass(frozen=True, slots=True)
class OriginateResult:
    """What became of one Originate.

    `outcome` is one of OUTCOMES; `reason` the raw OriginateResponse Reason (None
    when no event came); `uniqueid` the outbound channel's Uniqueid (set by us, so it
    is known even when the outcome is "unknown"); `channel` the channel name Asterisk
    reported (or the requested dial string).
    """

    success: bool
    outcome: str
    reason: int | None
    uniqueid: str
    channel: str
    action_id: str
    message: str = ""
    dial_status: str | None = None  # DialEnd of the outbound leg (BUSY, NOANSWER ...)
    hangup_cause: int | None = None  # Q.850 cause of the outbound leg, if it hung up

    @property
    def must_reconcile(self) -> bool:
        """Asterisk may have placed the call: look it up before dialling again."""
        return self.outcome == "unknown"


def outcome_for_reason(reason: int | None, success: bool, dial_status: str | None = None,
                       cause: int | None = None) -> str:
    """Map OriginateResponse Response/Reason (refined by the leg's DialEnd and cause) to an outcome."""
    return originate_outcome(success, reason, dial_status, cause)


def originate_headers(request: OriginateRequest, channel_id: str) -> dict[str, str | list[str]]:
    """The Originate action's headers for `request` (ActionID is added by the client)."""
    headers: dict[str, str | list[str]] = {
        "Channel": request.channel,
        "Async": "true",
        "Timeout": str(max(1, round(request.timeout_s * 1000))),
        "ChannelId": channel_id,
    }
    if request.application is not None:
        headers["Application"] = request.application
        if request.data:
            headers["Data"] = request.data
    else:
        assert request.context is not None and request.exten is not None
        headers["Context"] = request.context
        headers["Exten"] = request.exten
        headers["Priority"] = str(1 if request.priority is None else request.priority)
    if request.caller_id:
        headers["CallerID"] = request.caller_id
    if request.account_code:
        headers["Account"] = request.account_code
    if request.variables:
        headers["Variable"] = [f"{k}={v}" for k, v in request.variables.items()]
    return headers


def result_from_event(event: OriginateResponse, action_id: str, channel_id: str,
                      dial_status: str | None = None, cause: int | None = None) -> OriginateResult:
    """Type the OriginateResponse of our action (with what the leg's own events said)."""
    uniqueid = event.uniqueid if event.uniqueid and event.uniqueid != "<null>" else channel_id
    return OriginateResult(
        success=event.success,
        outcome=outcome_for_reason(event.reason, event.success, dial_status, cause),
        reason=event.reason,
        uniqueid=uniqueid,
        channel=event.channel,
        action_id=action_id,
        message=event.raw.get("Message") or "",
        dial_status=dial_status,
        hangup_cause=cause,
    )


class Pacer:
    """At most `rate` starts per second, evenly spaced (no bursts after idle time).

    Pure: `reserve(now)` books the next free slot and returns how long to wait.
    """

    def __init__(self, rate: float) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._next = float("-inf")

    def reserve(self, now: float) -> float:
        slot = max(now, self._next)
        self._next = slot + self.interval
        return slot - now


@dataclass(slots=True)
class _Leg:
    """What the outbound channel's own events said (they may come before or after the
    OriginateResponse: Asterisk 22 sends them in either order)."""

    dial_status: str | None = None
    cause: int | None = None
    created: bool = False
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)


class SuppressionCheck(Protocol):
    """The do-not-call list as the Originator needs it (`cti.suppression.SuppressionList`)."""

    def contains(self, number: str) -> bool: ...


class Originator:
    """Sends Originates over an `AMIClient`: at most `max_concurrent` in flight, at most
    `rate_per_second` started per second (None: unpaced). With `suppression`, requests
    whose `customer_number` is on that list are refused ("suppressed", nothing sent).

    Use as `async with Originator(ami) as originator:` or call `aclose()`: it owns one
    event subscription (and its reader task) that routes OriginateResponse events by
    ActionID to the waiting callers.
    """

    def __init__(
        self,
        ami: AMIClient,
        *,
        max_concurrent: int = 20,
        rate_per_second: float | None = None,
        response_grace_s: float = 15.0,
        leg_grace_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        suppression: SuppressionCheck | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self._ami = ami
        self._slots = asyncio.Semaphore(max_concurrent)
        self.max_concurrent = max_concurrent
        self._pacer = Pacer(rate_per_second) if rate_per_second is not None else None
        self._pacing_lock = asyncio.Lock()
        self.response_grace_s = response_grace_s
        self.leg_grace_s = leg_grace_s
        self._clock = clock
        self.suppression = suppression
        self._waiting: dict[str, asyncio.Future[OriginateResponse]] = {}
        self._legs: dict[str, _Leg] = {}  # our ChannelId -> what its events said
        self._subscription: Subscription | None = None
        self._router: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"orig-{secrets.token_hex(4)}"
        self.in_flight = 0
        self.sent = 0
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    async def __aenter__(self) -> Originator:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop routing events; originates still waiting end as "unknown"."""
        router, self._router = self._router, None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if router is not None:
            router.cancel()
            await asyncio.wait({router})
        self._fail_waiting()

    # -- the one public action ------------------------------------------------------
    async def originate(self, request: OriginateRequest, *, channel_id: str | None = None) -> OriginateResult:
        """Send `request` once and return its outcome (see the module docstring).

        `channel_id` sets the outbound channel's Uniqueid (a caller that stores it before
        dialling can reconcile after a crash); by default the Originator makes one.
        """
        if not isinstance(request, OriginateRequest):
            raise TypeError("originate() takes an OriginateRequest")
        if channel_id is not None:
            _check_text("channel_id", channel_id, allow_empty=False, max_len=120)
            if "," in channel_id or " " in channel_id:
                raise InvalidOriginateRequest(f"channel_id must not contain ',' or spaces: {channel_id!r}")
        refused = await self._refusal(request, channel_id)
        if refused is not None:
            self.outcomes[refused.outcome] += 1
            log.info("originate %s refused: %s", request.channel, refused.message)
            return refused
        async with self._slots:
            await self._pace()
            self.in_flight += 1
            try:
                result = await self._originate_once(request, channel_id)
            finally:
                self.in_flight -= 1
        self.outcomes[result.outcome] = self.outcomes.get(result.outcome, 0) + 1
        log.info("originate %s -> %s (reason %s, uniqueid %s)", request.channel, result.outcome,
                 result.reason, result.uniqueid)
        return result

    async def _refusal(self, request: OriginateRequest, channel_id: str | None) -> OriginateResult | None:
        """A "suppressed" result when the customer asked not to be called; None to go on."""
        if request.customer_number is None or self.suppression is None:
            return None
        try:
            # The list is a database table: read it off the event loop.
            listed = await asyncio.to_thread(self.suppression.contains, request.customer_number)
        except ValueError as exc:
            # Not a phone number: it cannot be checked, so it is not called either.
            raise InvalidOriginateRequest(f"customer_number: {exc}") from None
        if not listed:
            return None
        return OriginateResult(False, "suppressed", None, channel_id or "", request.channel, "",
                               f"{request.customer_number} is on the do-not-call list; nothing was sent")

    async def _pace(self) -> None:
        if self._pacer is None:
            return
        async with self._pacing_lock:
            delay = self._pacer.reserve(self._clock())
        if delay > 0:
            await asyncio.sleep(delay)  # a rate limit is a schedule, not a wait for an event

    async def _originate_once(self, request: OriginateRequest, chosen_id: str | None) -> OriginateResult:
        action_id = self._ami.new_action_id()
        channel_id = chosen_id or f"{self._id_prefix}-{next(self._ids)}"

        def unsent(message: str) -> OriginateResult:
            return OriginateResult(False, "not_sent", None, channel_id, request.channel, action_id, message)

        def unknown(message: str) -> OriginateResult:
            return OriginateResult(False, "unknown", None, channel_id, request.channel, action_id, message)

        if not self._ami.ready:
            return unsent("AMI is not connected and resynced; nothing was sent")
        self._ensure_router()
        headers = originate_headers(request, channel_id)
        answer: asyncio.Future[OriginateResponse] = asyncio.get_running_loop().create_future()
        self._waiting[action_id] = answer
        leg = self._legs[channel_id] = _Leg()
        lost = self._ami.session_lost()
        try:
            # From here on the action may reach Asterisk: never send it again.
            self.sent += 1
            try:
                await self._ami.send_action("Originate", headers, action_id=action_id)
            except AMIActionError as exc:
                # Refused before dialling (bad channel technology, permission): nothing rang.
                return OriginateResult(False, "failed", None, channel_id, request.channel, action_id, str(exc))
            except (AMIConnectionLost, AMITimeout) as exc:
                return unknown(f"no reply to Originate ({exc}); Asterisk may have dialled")
            limit = request.timeout_s + self.response_grace_s
            either: set[asyncio.Future[Any]] = {answer, lost}
            done, _ = await asyncio.wait(either, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if answer in done and not answer.cancelled() and answer.exception() is None:
                response = answer.result()
                if not response.success and leg.created and leg.dial_status is None and not leg.hung_up.is_set():
                    # The leg exists but its DialEnd has not arrived. Asterisk raises the
                    # OriginateResponse directly while the leg's events go through stasis,
                    # so the response can overtake them, even after the HangupRequest; the
                    # leg's Hangup comes after its DialEnd, within moments.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.leg_grace_s):
                            await leg.hung_up.wait()
                return result_from_event(response, action_id, channel_id, leg.dial_status, leg.cause)
            if lost in done:
                return unknown("AMI connection lost before the OriginateResponse; not re-sent")
            if answer in done:
                return unknown(f"OriginateResponse not received: {answer.exception()}")
            return unknown(f"no OriginateResponse within {limit:.0f}s")
        finally:
            self._waiting.pop(action_id, None)
            self._legs.pop(channel_id, None)
            if not lost.done():
                lost.cancel()
            if not answer.done():
                answer.cancel()

    # -- event routing --------------------------------------------------------------
    def _ensure_router(self) -> None:
        if self._router is not None and not self._router.done():
            return
        self._subscription = self._ami.subscribe(maxsize=100_000)
        self._router = asyncio.create_task(self._route(self._subscription), name="originate-router")

    async def _route(self, subscription: Subscription) -> None:
        async for event in subscription:
            self._deliver(event)
        if subscription.lagged:
            # Events were dropped: some OriginateResponses may be gone for good.
            log.warning("originate router lagged; waiting originates end as unknown")
            self._fail_waiting()

    def _deliver(self, event: Event) -> None:
        if isinstance(event, Newchannel):
            leg = self._legs.get(event.channel.uniqueid) if event.channel is not None else None
            if leg is not None:
                leg.created = True
            return
        if isinstance(event, DialEnd):
            leg = self._legs.get(event.dest.uniqueid) if event.dest is not None else None
            if leg is not None:
                leg.dial_status = event.dial_status or None
            return
        if isinstance(event, (HangupRequest, Hangup)):
            leg = self._legs.get(event.channel.uniqueid) if event.channel is not None else None
            if leg is not None:
                if leg.cause is None and event.cause:
                    leg.cause = event.cause
                if isinstance(event, Hangup):
                    leg.hung_up.set()
            return
        if not isinstance(event, OriginateResponse):
            return
        action_id = event.action_id
        waiter = self._waiting.get(action_id) if action_id else None
        if waiter is not None and not waiter.done():
            waiter.set_result(event)

    def _fail_waiting(self) -> None:
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(AMIConnectionLost("originate event routing stopped"))
                with contextlib.suppress(BaseException):
                    waiter.exception()  # mark retrieved
