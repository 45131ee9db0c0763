"""When a softphone's playback is done: the rule must survive torn reads of pjmedia's position.

The position model below follows pjmedia's WAV player (pjproject wav_player.c, 2.15):
a 4,000-byte buffer refilled from the bridge's clock thread, ``getPos`` computed from
the file offset and the read pointer, which a refill updates one after the other.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ivr.softphone.worker import PLAYBACK_OVERDUE_S, playback_ended

RATE = 8000
BUF_SAMPLES = 2000  # PJMEDIA_FILE_PORT_BUFSIZE: 4,000 bytes of 16-bit audio
FRAME_SAMPLES = 160  # 20 ms


def _positions(total: int) -> Iterator[tuple[float, int]]:
    """(seconds since start, position a poll may read) for a NO_LOOP playback of `total` samples.

    Yields the true position after each 20 ms frame and, at every refill, the torn
    values a poll reads while the clock thread is between the two updates.
    """
    buf = min(BUF_SAMPLES, total)  # a file shorter than the buffer gets a buffer its size
    loaded = buf  # samples read from the file so far
    at_eof = False  # a read came up short: the file offset is back at the start, position 0
    consumed = 0
    while consumed < total:
        consumed = min(consumed + FRAME_SAMPLES, total)
        t = consumed / RATE
        if consumed >= loaded and not at_eof:  # the buffer is used up: refill
            yield t, loaded - buf  # read pointer reset, file offset not yet advanced
            yield t, loaded + buf - FRAME_SAMPLES  # (split read) file offset advanced first
            got = min(buf, total - loaded)
            loaded += got
            at_eof = got < buf
        yield t, 0 if at_eof else consumed
    for extra in range(1, 20):  # after its end the player keeps reporting 0
        yield total / RATE + extra * 0.01, 0


@pytest.mark.parametrize("seconds", [0.1, 0.25, 0.5, 1.0, 2.0, 4.62])
def test_a_torn_position_never_ends_a_playback_early(seconds: float) -> None:
    total = int(seconds * RATE)
    duration = total / RATE
    ended_at = next(t for t, pos in _positions(total) if playback_ended(pos, total, t, duration))
    assert duration <= ended_at <= duration + 0.25


def test_the_old_rule_was_fooled_by_a_torn_read() -> None:
    """The model reproduces the CI failure: "the position went backwards" fired at 0.25 s."""
    total = int(4.62 * RATE)
    last = 0
    for t, pos in _positions(total):
        if pos < last:
            assert t < 1.0
            break
        last = pos
    else:
        pytest.fail("the torn reads in the model never go backwards")


def test_a_playback_the_bridge_never_finished_is_done_when_overdue() -> None:
    assert not playback_ended(1234, 8000, 1.0 + PLAYBACK_OVERDUE_S, 1.0)
    assert playback_ended(1234, 8000, 1.01 + PLAYBACK_OVERDUE_S, 1.0)


def test_a_late_bridge_is_waited_for() -> None:
    """After the duration a position still inside the file means the bridge lags: not done."""
    assert not playback_ended(6000, 8000, 1.2, 1.0)
    assert playback_ended(0, 8000, 1.2, 1.0)
    assert playback_ended(8000, 8000, 1.2, 1.0)
