"""WAV header reading and voice-activity analysis (webrtcvad): pure functions on files.

Both are blocking CPU/disk work: callers run them off the event loop with
`asyncio.to_thread` or a process pool (DESIGN.md section 3.12).

Why our own RIFF reader instead of the `wave` module: while MixMonitor is still
writing, Asterisk's header carries zero RIFF and data sizes (they are filled in
when the file is closed), and `wave` refuses such a file outright ("not a WAVE
file"). We read the format from the header and take the data length from the file
size whenever the declared length is zero or larger than what is on disk, so a
recording cut short by a crash or still being written is measured as far as it goes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import webrtcvad

#: Sample rates webrtcvad accepts; MixMonitor writes 8 kHz 16-bit mono for ``.wav``.
SUPPORTED_RATES = (8000, 16000, 32000, 48000)
#: Frame lengths webrtcvad accepts.
SUPPORTED_FRAME_MS = (10, 20, 30)
#: Below this much detected speech a leg counts as silent (dead air, an unanswered leg).
MIN_SPEECH_SECONDS = 0.3

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# 0xFFFFFFFF is what streaming writers put in a size field they never come back to.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class WavInfo:
    """What the header says, corrected by the size of the file on disk."""

    sample_rate: int
    channels: int
    sample_width: int  # bytes per sample
    format_tag: int
    data_offset: int
    data_bytes: int  # usable PCM bytes actually present in the file
    #: False when the header's data length was missing (0) or larger than the file.
    header_complete: bool

    @property
    def block_align(self) -> int:
        return self.channels * self.sample_width

    @property
    def frames(self) -> int:
        return self.data_bytes // self.block_align

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def read_wav_info(path: Path) -> WavInfo:
    """Parse a RIFF/WAVE header; raise ValueError (naming the file) if it is not a usable WAV."""
    path = Path(path)
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        riff = fh.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            raise ValueError(f"{path}: not a RIFF/WAVE file")
        fmt: tuple[int, int, int, int] | None = None
        pos = 12
        while True:
            fh.seek(pos)
            head = fh.read(8)
            if len(head) < 8:
                missing = "no 'fmt ' chunk" if fmt is None else "no 'data' chunk"
                raise ValueError(f"{path}: truncated WAV header ({missing})")
            chunk_id, chunk_size = head[:4], struct.unpack("<I", head[4:])[0]
            body_at = pos + 8
            if chunk_id == b"fmt ":
                body = fh.read(min(chunk_size, 40))
                if len(body) < 16:
                    raise ValueError(f"{path}: truncated 'fmt ' chunk")
                tag, channels, rate, _byte_rate, _align, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the SubFormat GUID
                fmt = (tag, channels, rate, bits)
            elif chunk_id == b"data":
                if fmt is None:
                    raise ValueError(f"{path}: 'data' chunk before 'fmt ' chunk")
                tag, channels, rate, bits = fmt
                if channels < 1 or rate < 1 or bits < 8 or bits % 8:
                    raise ValueError(f"{path}: invalid format ({channels} channels, {rate} Hz, {bits} bits)")
                available = max(0, size - body_at)
                complete = chunk_size not in _UNKNOWN_SIZES and chunk_size <= available
                data_bytes = chunk_size if complete else available
                width = bits // 8
                data_bytes -= data_bytes % (channels * width)  # drop a trailing partial frame
                return WavInfo(rate, channels, width, tag, body_at, data_bytes, complete)
            pos = body_at + chunk_size + (chunk_size & 1)  # chunks are padded to even length


@dataclass(frozen=True, slots=True)
class SpeechSegment:
    """A stretch of speech, in seconds from the start of the file."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class VadResult:
    """Speech found in one recorded leg; the basis of talk / silence / dead-air measures."""

    duration: float
    speech_seconds: float
    segments: tuple[SpeechSegment, ...]
    #: Longest stretch without speech, counting leading and trailing silence.
    longest_silence: float
    sample_rate: int

    @property
    def has_speech(self) -> bool:
        return self.speech_seconds >= MIN_SPEECH_SECONDS


def analyze_wav(
    path: Path,
    *,
    aggressiveness: int = 2,
    frame_ms: int = 20,
    min_segment_ms: int = 120,
    hangover_ms: int = 200,
) -> VadResult:
    """Find the speech in a 16-bit mono WAV at 8/16/32/48 kHz.

    Per-frame webrtcvad decisions are smoothed: voiced runs separated by less than
    `hangover_ms` are joined (pauses between words), then runs shorter than
    `min_segment_ms` are dropped (clicks, line noise). Other formats raise
    ValueError rather than being resampled silently: convert them with sox first.
    """
    if aggressiveness not in (0, 1, 2, 3):
        raise ValueError(f"aggressiveness must be 0..3, got {aggressiveness}")
    if frame_ms not in SUPPORTED_FRAME_MS:
        raise ValueError(f"frame_ms must be one of {SUPPORTED_FRAME_MS}, got {frame_ms}")
    if min_segment_ms < 0 or hangover_ms < 0:
        raise ValueError("min_segment_ms and hangover_ms must not be negative")

    path = Path(path)
    info = read_wav_info(path)
    if info.format_tag != _WAVE_FORMAT_PCM or info.sample_width != 2 or info.channels != 1:
        raise ValueError(
            f"{path}: need 16-bit PCM mono, got format {info.format_tag:#06x}, {info.sample_width * 8}-bit, "
            f"{info.channels} channel(s); convert with: sox IN -r 8000 -c 1 -b 16 OUT.wav"
        )
    if info.sample_rate not in SUPPORTED_RATES:
        raise ValueError(
            f"{path}: sample rate {info.sample_rate} Hz not supported by webrtcvad {SUPPORTED_RATES}; "
            f"convert with: sox IN -r 8000 -c 1 -b 16 OUT.wav"
        )

    vad = webrtcvad.Vad(aggressiveness)
    frame_bytes = info.sample_rate * frame_ms // 1000 * info.sample_width
    runs: list[list[int]] = []  # [first frame, end frame (exclusive)] after joining short gaps
    # A gap is joined when gap_frames * frame_ms < hangover_ms; adjacent frames always are.
    max_gap_frames = max(0, -(-hangover_ms // frame_ms) - 1)
    with path.open("rb") as fh:
        fh.seek(info.data_offset)
        data = fh.read(info.data_bytes)  # one read, then 320-byte slices: cheaper than a read per frame
    # Digitally silent frames (MixMonitor writes zeros while a direction carries no
    # audio) are skipped without asking webrtcvad: a cheap C-level compare of bytes.
    silent = bytes(frame_bytes)
    is_speech = vad.is_speech
    rate = info.sample_rate
    for index in range(len(data) // frame_bytes):  # a file that shrank under us ends early
        frame = data[index * frame_bytes:(index + 1) * frame_bytes]
        if frame == silent or not is_speech(frame, rate):
            continue
        if runs and index - runs[-1][1] <= max_gap_frames:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1])

    frame_s = frame_ms / 1000
    segments = tuple(
        SpeechSegment(round(first * frame_s, 3), round(end * frame_s, 3))
        for first, end in runs
        if (end - first) * frame_ms >= min_segment_ms
    )
    duration = info.duration
    edges = [0.0, *(t for s in segments for t in (s.start, s.end)), duration]
    longest_silence = max(max(0.0, edges[i + 1] - edges[i]) for i in range(0, len(edges), 2))
    speech = sum(s.duration for s in segments)
    return VadResult(
        duration=round(duration, 3),
        speech_seconds=round(speech, 3),
        segments=segments,
        longest_silence=round(longest_silence, 3),
        sample_rate=info.sample_rate,
    )
