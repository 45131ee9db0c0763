"""The service process's runtime: its event loop and its garbage collector settings.

uvloop (libuv, in C) roughly halves the event loop's and transports' share of a
FastAGI call: on tests/bench/bench_fastagi.py our server's CPU per call drops by
about a third. Nothing in the service depends on the loop's implementation, so the
choice is a setting (HOTLINE_EVENT_LOOP=asyncio turns uvloop off).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Final

log = logging.getLogger(__name__)

#: The values of the event_loop setting.
LOOP_KINDS: Final = ("uvloop", "asyncio")
#: The young generation's collection threshold in the service (Python's default: 700).
GC_YOUNG_THRESHOLD: Final = 10_000


def new_event_loop(kind: str = "uvloop") -> asyncio.AbstractEventLoop:
    """A new loop of `kind`; "uvloop" falls back to asyncio's (with a warning) when it is missing."""
    if kind not in LOOP_KINDS:
        raise ValueError(f"event loop {kind!r} is not one of {', '.join(LOOP_KINDS)}")
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; running on asyncio's event loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """"uvloop" or "asyncio": which implementation `loop` is (for logs and /status)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def tune_gc() -> None:
    """Collect the young generation less often; keep start-up objects out of full collections.

    A finished FastAGI call is freed by reference counting (it leaves no cycles), but
    the objects of the calls in flight keep the young generation above Python's
    threshold of 700: the collector ran every few dozen calls, promoted in-flight
    calls' objects to the older generations and traversed them there again, about
    10% of the server's CPU at 1,000 concurrent calls on bench_fastagi (3% at 100).
    10,000 holds several hundred calls in flight. gc.freeze() moves what start-up
    created (modules, the flow, settings) to the permanent generation.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
