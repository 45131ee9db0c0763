"""Prompt check: find an expected prompt in what the test caller heard.

Why segment-wise normalised cross-correlation: the prompt travels Asterisk -> G.711
-> RTP -> pjsua's jitter buffer -> the recorder, so the heard waveform is the
prompt with quantisation noise, an unknown gain, an unknown start time, and now and
then a frame inserted or dropped by the jitter buffer. NCC is gain invariant and
G.711 keeps the waveform (about 38 dB SNR), so the same audio scores near 1 while
other speech, even in the same synthetic voice, scores near 0. Correlating short
segments separately and letting each slide a little around the common anchor makes
one jitter-buffer slip cost one segment, not the whole match.

Pure functions on arrays and files (numpy); run them off the event loop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE = 8000
#: Segment length and hop for the segment-wise correlation (0.25 s).
SEGMENT = 2000
#: How far (samples) each segment may slide around the common anchor: 30 ms of jitter.
SLACK = 240
#: A segment quieter than this fraction of the prompt's RMS is a pause: not scored.
QUIET_FRACTION = 0.15
#: Default score above which a prompt counts as heard.
MATCH_THRESHOLD = 0.5

Samples = npt.NDArray[np.float64]


class AudioError(ValueError):
    """A file that is not 16-bit PCM WAV (the message names it)."""


@dataclass(frozen=True, slots=True)
class Match:
    """Best placement of a prompt in the heard audio."""

    score: float  # mean segment NCC at the best anchor, 0..1
    onset: float  # seconds from the start of the searched audio
    duration: float  # the prompt's length in seconds
    segments: int  # voiced segments scored

    def matched(self, threshold: float = MATCH_THRESHOLD) -> bool:
        return self.score >= threshold


def read_pcm(path: Path) -> tuple[Samples, int]:
    """16-bit PCM WAV -> (mono float samples, rate). Tolerates a file still being
    written (the header's sizes are zero or too large until the writer closes it)."""
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError(f"{path}: not a RIFF/WAVE file")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise AudioError(f"{path}: truncated fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body:body + 16])
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt is None:
                raise AudioError(f"{path}: data before fmt")
            tag, channels, rate, bits = fmt
            if tag not in (1, 0xFFFE) or bits != 16 or channels < 1:
                raise AudioError(f"{path}: only 16-bit PCM is supported (format {tag}, {bits} bits)")
            end = len(data) if size in (0, 0xFFFFFFFF) or body + size > len(data) else body + size
            usable = (end - body) // (2 * channels) * 2 * channels
            pcm = np.frombuffer(data[body:body + usable], dtype="<i2").astype(np.float64)
            if channels > 1:
                pcm = pcm.reshape(-1, channels).mean(axis=1)
            return pcm, int(rate)
        pos = body + size + (size & 1)
    raise AudioError(f"{path}: no data chunk")


def to_rate(samples: Samples, rate: int, target: int = RATE) -> Samples:
    """Resample by linear interpolation (enough for telephone-band speech matching)."""
    if rate == target or samples.size == 0:
        return samples
    n = int(round(samples.size * target / rate))
    out: Samples = np.interp(np.arange(n) * (rate / target), np.arange(samples.size), samples)
    return out


def load(path: Path) -> Samples:
    pcm, rate = read_pcm(path)
    return to_rate(pcm, rate)


def _prepare(x: Samples) -> Samples:
    """DC removed and pre-emphasised: speech detail (not low-frequency energy) decides."""
    if x.size < 2:
        return np.zeros(x.size)
    y = x - x.mean()
    return np.concatenate(([0.0], y[1:] - 0.95 * y[:-1]))


def _running_max(c: Samples, radius: int) -> Samples:
    """max(c[i-radius .. i+radius]) by doubling shifts: O(n log r), no big window views."""
    out = c.copy()
    width = 1
    while width <= radius:
        shift = min(width, radius - width + 1)
        left = np.concatenate((out[shift:], np.full(shift, -1.0)))
        right = np.concatenate((np.full(shift, -1.0), out[:-shift]))
        out = np.maximum(out, np.maximum(left, right))
        width += shift
    return out


def find_prompt(heard: Samples, prompt: Samples, *, slack: int = SLACK) -> Match:
    """Where (and how well) `prompt` occurs completely inside `heard` (both at 8 kHz)."""
    x, t = _prepare(heard), _prepare(prompt)
    n, m = t.size, x.size
    duration = n / RATE
    rms = float(np.sqrt(np.mean(t * t))) if n else 0.0
    starts = [s for s in range(0, max(n - SEGMENT // 2, 1), SEGMENT)]
    segs = [(s, t[s:s + SEGMENT]) for s in starts]
    voiced = [(s, seg) for s, seg in segs if seg.size >= SEGMENT // 2
              and float(np.sqrt(np.mean(seg * seg))) > QUIET_FRACTION * rms]
    if not voiced or m < n or rms == 0.0:
        return Match(0.0, 0.0, duration, len(voiced))
    size = 1 << int(np.ceil(np.log2(m + SEGMENT)))
    spectrum = np.fft.rfft(x, size)
    energy = np.concatenate(([0.0], np.cumsum(x * x)))
    anchors = m - n + 1  # the whole prompt must fit: it was heard completely
    total = np.zeros(anchors)
    for s, seg in voiced:
        length = seg.size
        corr = np.fft.irfft(spectrum * np.conj(np.fft.rfft(seg, size)), size)[:m - length + 1]
        window = energy[length:] - energy[:-length]
        norm = np.sqrt(np.maximum(window, 0.0)) * float(np.sqrt(np.dot(seg, seg)))
        # Digital silence (Asterisk's transmit_silence) has no shape to correlate: score 0.
        floor = 1e-3 * float(np.dot(seg, seg))
        ncc = np.where(norm > floor, corr / np.maximum(norm, 1e-12), 0.0)
        ncc = _running_max(ncc, slack)
        # Anchor a places this segment at a + s; pad so every anchor has a value.
        shifted = ncc[s:s + anchors]
        if shifted.size < anchors:
            shifted = np.concatenate((shifted, np.zeros(anchors - shifted.size)))
        total += np.clip(shifted, 0.0, 1.0)
    total /= len(voiced)
    best = int(np.argmax(total))
    return Match(round(float(total[best]), 4), round(best / RATE, 3), round(duration, 3), len(voiced))


def speech_level_db(samples: Samples) -> float:
    """RMS level in dBFS (diagnostics: a swapped prompt usually has a similar level)."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(samples * samples))) / 32768.0
    return round(20.0 * float(np.log10(max(rms, 1e-6))), 1)
