"""VAD on real synthetic speech (espeak-ng + sox) with known silences, and on broken files.

Ground truth: espeak-ng output has digitally silent pauses, so the true speech span of
each utterance is where its samples leave zero; the padding we add with sox is exact.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import pytest

from recordings.vad import SpeechSegment, VadResult, analyze_wav, read_wav_info

#: Allowed error on segment edges: webrtcvad decides per 20 ms frame and lags a few frames.
TOLERANCE = 0.25


def run(*argv: str | Path) -> None:
    if shutil.which(str(argv[0])) is None:  # no skip: the prompt compiler needs them too
        raise RuntimeError(f"{argv[0]} not found: apt-get install espeak-ng sox")
    subprocess.run([str(a) for a in argv], check=True, capture_output=True)


def speak(out: Path, text: str, *, voice: str = "en", rate: int = 8000) -> Path:
    """Real speech as MixMonitor would store it: 16-bit mono at `rate`."""
    raw = out.with_suffix(".raw.wav")
    run("espeak-ng", "-v", voice, "-w", raw, text)
    run("sox", raw, "-r", str(rate), "-c", "1", "-b", "16", out)
    return out


def voiced_span(path: Path) -> tuple[float, float]:
    """First and last non-silent sample of a clean synthetic file, in seconds."""
    info = read_wav_info(path)
    with path.open("rb") as fh:
        fh.seek(info.data_offset)
        data = fh.read(info.data_bytes)
    samples = struct.unpack(f"<{len(data) // 2}h", data)
    loud = [i for i, s in enumerate(samples) if abs(s) > 64]
    return loud[0] / info.sample_rate, (loud[-1] + 1) / info.sample_rate


def duration(path: Path) -> float:
    return read_wav_info(path).duration


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vad")


@pytest.fixture(scope="module")
def two_utterances(audio: Path) -> tuple[Path, list[tuple[float, float]], float]:
    """1.0 s silence, utterance A, 1.5 s silence, utterance B, 2.0 s silence (8 kHz)."""
    a = speak(audio / "a.wav", "Hello, my washing machine is leaking.")
    b = speak(audio / "b.wav", "Please send a technician tomorrow.")
    a_span, b_span = voiced_span(a), voiced_span(b)
    run("sox", a, audio / "a-pad.wav", "pad", "1.0", "1.5")
    run("sox", b, audio / "b-pad.wav", "pad", "0", "2.0")
    joined = audio / "call-rx.wav"
    run("sox", audio / "a-pad.wav", audio / "b-pad.wav", joined)
    b_offset = 1.0 + duration(a) + 1.5
    truth = [(1.0 + a_span[0], 1.0 + a_span[1]), (b_offset + b_span[0], b_offset + b_span[1])]
    return joined, truth, duration(joined)


def test_two_utterances_are_found_where_they_are(two_utterances: tuple[Path, list[tuple[float, float]], float]) -> None:
    path, truth, total = two_utterances
    result = analyze_wav(path)
    assert result.sample_rate == 8000
    assert result.duration == pytest.approx(total, abs=0.001)
    assert result.has_speech
    (a_start, a_end), (b_start, b_end) = truth
    gap_middle = (a_end + b_start) / 2
    first = [s for s in result.segments if s.end <= gap_middle]
    second = [s for s in result.segments if s.start >= gap_middle]
    assert first and second, result.segments
    assert len(first) + len(second) == len(result.segments), "a segment straddles the 1.5 s pause"
    assert first[0].start == pytest.approx(a_start, abs=TOLERANCE)
    assert first[-1].end == pytest.approx(a_end, abs=TOLERANCE)
    assert second[0].start == pytest.approx(b_start, abs=TOLERANCE)
    assert second[-1].end == pytest.approx(b_end, abs=TOLERANCE)
    # The longest silence is the 2 s of trailing padding (plus espeak's own tail), not a word gap.
    assert result.longest_silence == pytest.approx(total - b_end, abs=TOLERANCE)
    voiced_truth = (a_end - a_start) + (b_end - b_start)
    assert result.speech_seconds == pytest.approx(voiced_truth, abs=4 * TOLERANCE)
    assert result.speech_seconds == pytest.approx(sum(s.end - s.start for s in result.segments), abs=0.01)


def test_hangover_joins_word_gaps_and_a_long_pause_is_kept(
    two_utterances: tuple[Path, list[tuple[float, float]], float],
) -> None:
    path, _, _ = two_utterances
    assert len(analyze_wav(path).segments) == 2  # default 200 ms hangover bridges pauses between words
    fragmented = analyze_wav(path, hangover_ms=0, min_segment_ms=0)
    assert len(fragmented.segments) >= 2
    bridged = analyze_wav(path, hangover_ms=3000)  # longer than the 1.5 s pause: one segment
    assert len(bridged.segments) == 1


def test_min_segment_drops_short_blips(two_utterances: tuple[Path, list[tuple[float, float]], float]) -> None:
    path, _, _ = two_utterances
    result = analyze_wav(path, min_segment_ms=5000)  # no single utterance lasts 5 s
    assert result.segments == ()
    assert not result.has_speech
    assert result.longest_silence == result.duration


@pytest.mark.parametrize("rate", [16000, 32000, 48000])
def test_mandarin_prompt_at_other_rates(audio: Path, rate: int) -> None:
    path = speak(audio / f"cmn-{rate}.wav", "您好，欢迎致电客服热线，报修请按一。", voice="cmn", rate=rate)
    start, end = voiced_span(path)
    result = analyze_wav(path, frame_ms=30)
    assert result.sample_rate == rate
    assert result.segments[0].start == pytest.approx(start, abs=TOLERANCE)
    assert result.segments[-1].end == pytest.approx(end, abs=TOLERANCE)
    assert result.speech_seconds > 0.5 * (end - start)


def test_pure_silence_has_no_speech(audio: Path) -> None:
    path = audio / "silence.wav"
    run("sox", "-n", "-r", "8000", "-c", "1", "-b", "16", path, "trim", "0", "3.0")
    result = analyze_wav(path)
    assert result == VadResult(duration=3.0, speech_seconds=0.0, segments=(), longest_silence=3.0, sample_rate=8000)
    assert not result.has_speech


def test_an_unfinalised_header_is_analysed_from_the_file_size(
    two_utterances: tuple[Path, list[tuple[float, float]], float], audio: Path
) -> None:
    path, _, _ = two_utterances
    data = bytearray(path.read_bytes())
    info = read_wav_info(path)
    data[4:8] = b"\x00\x00\x00\x00"
    data[info.data_offset - 4:info.data_offset] = b"\x00\x00\x00\x00"
    live = audio / "live.wav"
    live.write_bytes(bytes(data))
    assert not read_wav_info(live).header_complete
    assert analyze_wav(live) == analyze_wav(path)


def test_a_file_cut_short_in_the_audio_is_analysed_as_far_as_it_goes(
    two_utterances: tuple[Path, list[tuple[float, float]], float], audio: Path
) -> None:
    path, truth, _ = two_utterances
    cut = audio / "cut.wav"
    info = read_wav_info(path)
    cut.write_bytes(path.read_bytes()[: info.data_offset + 8000 * 2 * 2 + 1])  # 2 s and an odd byte
    result = analyze_wav(cut)
    assert result.duration == 2.0
    assert result.segments[0].start == pytest.approx(truth[0][0], abs=TOLERANCE)
    assert result.segments[-1].end <= 2.0


def make_file(audio: Path, name: str, content: bytes) -> Path:
    path = audio / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a RIFF/WAVE file"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "truncated"),
        (b"\x00" * 4096, "not a RIFF/WAVE file"),
        (b"ID3\x04" + b"\xff\xfb" * 2000, "not a RIFF/WAVE file"),  # an MP3 renamed to .wav
        (b"RIFF\x00\x00\x00\x00WAVEdata\x10\x00\x00\x00" + b"\x00" * 16, "'data' chunk before 'fmt '"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\x01\x00", "truncated 'fmt '"),
        (b"RIFF\x00\x00\x00\x00WAVELIST\xff\xff\xff\x7f", "truncated WAV header"),
    ],
)
def test_garbage_and_truncated_headers_raise_a_clear_error(audio: Path, content: bytes, message: str) -> None:
    path = make_file(audio, "broken.wav", content)
    with pytest.raises(ValueError, match=message) as caught:
        analyze_wav(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_raises_oserror(audio: Path) -> None:
    with pytest.raises(FileNotFoundError):
        analyze_wav(audio / "does-not-exist.wav")


def write_pcm(path: Path, *, rate: int, channels: int, width: int, seconds: float = 1.0) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(b"\x00" * int(rate * seconds) * channels * width)
    return path


@pytest.mark.parametrize(
    ("maker", "message"),
    [
        (lambda p: write_pcm(p, rate=22050, channels=1, width=2), "22050 Hz not supported"),
        (lambda p: write_pcm(p, rate=8000, channels=2, width=2), "2 channel"),
        (lambda p: write_pcm(p, rate=8000, channels=1, width=1), "8-bit"),
    ],
)
def test_unsupported_formats_are_rejected_with_a_hint(
    audio: Path, maker: Callable[[Path], Path], message: str
) -> None:
    path = maker(audio / "fmt.wav")
    with pytest.raises(ValueError, match=message) as caught:
        analyze_wav(path)
    assert "sox" in str(caught.value)


def test_espeak_native_rate_is_rejected_not_silently_resampled(audio: Path) -> None:
    raw = audio / "native.wav"
    run("espeak-ng", "-v", "en", "-w", raw, "test")
    assert read_wav_info(raw).sample_rate == 22050
    with pytest.raises(ValueError, match="22050 Hz"):
        analyze_wav(raw)


def test_alaw_is_rejected(audio: Path) -> None:
    path = audio / "alaw.wav"
    run("sox", "-n", "-r", "8000", "-c", "1", "-e", "a-law", path, "trim", "0", "0.5")
    with pytest.raises(ValueError, match="16-bit PCM"):
        analyze_wav(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aggressiveness": 4}, "aggressiveness"),
        ({"frame_ms": 25}, "frame_ms"),
        ({"hangover_ms": -1}, "negative"),
    ],
)
def test_bad_parameters(audio: Path, kwargs: dict[str, int], message: str) -> None:
    path = write_pcm(audio / "ok.wav", rate=8000, channels=1, width=2)
    with pytest.raises(ValueError, match=message):
        analyze_wav(path, **kwargs)


def test_segments_are_frozen_values() -> None:
    seg = SpeechSegment(1.0, 2.5)
    assert seg.duration == 1.5
    with pytest.raises(AttributeError):
        seg.start = 0.0  # type: ignore[misc]
