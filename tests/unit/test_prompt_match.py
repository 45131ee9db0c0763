"""The prompt matcher on real audio: what a pjsua2 test caller recorded from the sandbox
hotline (tests/fixtures/testcall/heard_repair.wav: welcome, menu, connecting, then the
agent's silence), against the prompt files the hotline plays."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from ivr.testcall import audio

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "testcall"
PROMPTS = FIXTURES / "prompts"


@pytest.fixture(scope="module")
def heard() -> audio.Samples:
    return audio.load(FIXTURES / "heard_repair.wav")


def prompt(name: str) -> audio.Samples:
    return audio.load(PROMPTS / f"{name}.wav")


def ulaw_round_trip(x: audio.Samples) -> audio.Samples:
    """G.711 mu-law encode + decode (the continuous companding law, 8-bit quantised)."""
    y = np.clip(x / 32768.0, -1, 1)
    code = np.round(np.sign(y) * np.log1p(255 * np.abs(y)) / np.log1p(255) * 127)
    z = np.sign(code) * (np.expm1(np.abs(code) / 127 * np.log1p(255)) / 255)
    out: audio.Samples = z * 32768.0
    return out


def test_prompts_heard_in_order_with_their_onsets(heard: audio.Samples) -> None:
    found = {name: audio.find_prompt(heard, prompt(name)) for name in ("welcome", "menu", "connecting")}
    assert all(m.matched() and m.score > 0.95 for m in found.values()), found
    assert found["welcome"].onset < found["menu"].onset < found["connecting"].onset
    # The menu starts right after the welcome ends (same AGI session, back to back).
    assert found["menu"].onset == pytest.approx(found["welcome"].onset + found["welcome"].duration, abs=0.3)


@pytest.mark.parametrize("other", ["sorry", "invalid"])
def test_other_prompts_in_the_same_voice_do_not_match(heard: audio.Samples, other: str) -> None:
    match = audio.find_prompt(heard, prompt(other))
    assert not match.matched() and match.score < 0.35, match


def test_robust_to_gain_codec_noise_and_a_slipped_frame(heard: audio.Samples) -> None:
    rng = np.random.default_rng(7)
    degraded = ulaw_round_trip(heard * 0.25) + rng.normal(0, 40, heard.size)
    cut = int(8.0 * audio.RATE)  # the jitter buffer dropped one 20 ms frame inside the menu
    degraded = np.concatenate((degraded[:cut], degraded[cut + 160:]))
    for name in ("welcome", "menu", "connecting"):
        assert audio.find_prompt(degraded, prompt(name)).score > 0.8, name
    assert audio.find_prompt(degraded, prompt("sorry")).score < 0.35


def test_a_prompt_cut_short_or_missing_does_not_match(heard: audio.Samples) -> None:
    welcome = prompt("welcome")
    onset = int(audio.find_prompt(heard, welcome).onset * audio.RATE)
    # Only the first 40% of the welcome was played (e.g. a hangup): not "heard completely".
    truncated = heard[:onset + int(welcome.size * 0.4)]
    assert not audio.find_prompt(truncated, welcome).matched()
    silence = np.zeros(welcome.size * 2)
    assert audio.find_prompt(silence, welcome).score == 0.0


def test_16k_recording_is_resampled(tmp_path: Path, heard: audio.Samples) -> None:
    up = np.interp(np.arange(heard.size * 2) / 2, np.arange(heard.size), heard)
    wav = tmp_path / "16k.wav"
    pcm = np.clip(up, -32768, 32767).astype("<i2").tobytes()
    wav.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000,
                    32000, 2, 16) + b"data" + struct.pack("<I", len(pcm)) + pcm)
    assert audio.find_prompt(audio.load(wav), prompt("welcome")).score > 0.9


def test_a_file_still_being_written_is_read(tmp_path: Path) -> None:
    """pjsua's recorder fills in the header sizes only at the end: read what is there."""
    data = (FIXTURES / "heard_repair.wav").read_bytes()
    growing = tmp_path / "growing.wav"
    header = bytearray(data[:44])
    header[4:8] = b"\0\0\0\0"
    header[40:44] = b"\0\0\0\0"
    growing.write_bytes(bytes(header) + data[44:44 + 16000])
    pcm, rate = audio.read_pcm(growing)
    assert rate == 8000 and pcm.size == 8000


@pytest.mark.parametrize("content, message", [
    (b"", "not a RIFF/WAVE file"),
    (b"RIFF\0\0\0\0WAVEdata\0\0\0\0", "data before fmt"),
    (b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x06\0\x01\0\x40\x1f\0\0\x40\x1f\0\0\x01\0\x08\0data\0\0\0\0",
     "only 16-bit PCM"),
])
def test_bad_files_are_refused_by_name(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(audio.AudioError, match=message) as info:
        audio.read_pcm(path)
    assert str(path) in str(info.value)
