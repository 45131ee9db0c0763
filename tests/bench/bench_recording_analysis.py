"""Recording analysis speed: seconds of call audio analysed per CPU second, on one core.

    .venv/bin/python tests/bench/bench_recording_analysis.py [--minutes 10] [--repeats 5]

Builds a call of `--minutes` as MixMonitor stores it (8 kHz 16-bit mono, three legs):
``rx`` (caller) and ``tx`` (agent) alternate espeak-ng utterances with pauses, ``mix``
is their sum. Two flavours: *digital silence* between utterances (what MixMonitor
writes while a direction carries no audio) and *line noise* (low-level white noise,
about -60 dBFS, in every pause, so no frame is digitally silent and every frame goes
through webrtcvad). The process is pinned to one CPU; time is CPU time
(`time.process_time`), best of `--repeats`.

Rows: `analyze_wav` on one leg (the service's code), `analyze_call` on the whole call
(three legs + metrics, what one worker-process job does), and the pre-optimisation
loop (one `read()` per 20 ms frame, every frame through webrtcvad) for comparison.
The target is at least 1,000x real time per core for `analyze_call`.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import webrtcvad  # noqa: E402

from recordings.analysis import AnalysisJob, Timeline, Window, analyze_call  # noqa: E402
from recordings.vad import analyze_wav, read_wav_info  # noqa: E402

RATE = 8000
SENTENCES = [
    "Hello my washing machine is leaking water", "I am sorry to hear that",
    "Can you tell me the model number please", "It is the front loader from two years ago",
    "We can send a technician tomorrow morning", "Yes that works for me thank you",
]


def utterances(tmp: Path) -> list[bytes]:
    out = []
    for i, text in enumerate(SENTENCES):
        raw, wav = tmp / f"u{i}.raw.wav", tmp / f"u{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav)], check=True,
                       capture_output=True)
        with wave.open(str(wav), "rb") as w:
            out.append(w.readframes(w.getnframes()))
    return out


def build_call(tmp: Path, minutes: float, noise: bool, seed: int = 7) -> dict[str, Path]:
    """rx and tx take turns (with pauses), mix is their sum, all `minutes` long."""
    import numpy as np

    rng = random.Random(seed)
    says = [np.frombuffer(u, dtype="<i2").astype(np.int32) for u in utterances(tmp)]
    n = int(minutes * 60 * RATE)
    legs = {"rx": np.zeros(n, np.int32), "tx": np.zeros(n, np.int32)}
    at, turn = int(0.5 * RATE), "rx"
    while at < n:
        speech = says[rng.randrange(len(says))][: n - at]
        legs[turn][at:at + len(speech)] = speech
        at += len(speech) + int(rng.uniform(0.3, 3.0) * RATE)
        turn = "tx" if turn == "rx" else "rx"
    if noise:
        gen = np.random.default_rng(seed)
        for leg in legs.values():
            leg += gen.integers(-33, 34, n, dtype=np.int32)  # about -60 dBFS
    legs["mix"] = legs["rx"] + legs["tx"]
    paths = {}
    for name, samples in legs.items():
        path = tmp / f"{'noise' if noise else 'silence'}-{name}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())
        paths[name] = path
    return paths


def old_loop(path: Path) -> int:
    """The first implementation: one read per frame, every frame to webrtcvad."""
    info = read_wav_info(path)
    vad = webrtcvad.Vad(2)
    frame_bytes = RATE * 20 // 1000 * 2
    voiced = 0
    with path.open("rb") as fh:
        fh.seek(info.data_offset)
        for _ in range(info.data_bytes // frame_bytes):
            frame = fh.read(frame_bytes)
            if len(frame) < frame_bytes:
                break
            voiced += vad.is_speech(frame, RATE)
    return voiced


def best_cpu(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()} webrtcvad, pinned to one CPU; "
          f"call length {args.minutes:g} min, best of {args.repeats}")
    print(f"{'audio':<17} {'what':<36} {'audio s':>8} {'CPU s':>8} {'x real time':>12}")
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as tmp_s:
        tmp = Path(tmp_s)
        for noise in (False, True):
            legs = build_call(tmp, args.minutes, noise)
            seconds = read_wav_info(legs["rx"]).duration
            job = AnalysisJob("bench", {leg: (i, str(p)) for i, (leg, p) in enumerate(legs.items())},
                              Timeline(seconds, (Window(5.0, seconds, "1001"),)), dead_air_threshold=10.0)
            rows = [
                ("analyze_wav, one leg (rx)", seconds, lambda rx=legs["rx"]: analyze_wav(rx)),
                ("analyze_call, 3 legs + metrics", seconds, lambda j=job: analyze_call(j)),
                ("old per-frame loop, one leg", seconds, lambda rx=legs["rx"]: old_loop(rx)),
            ]
            flavour = "line noise" if noise else "digital silence"
            for what, audio, fn in rows:
                cpu = best_cpu(fn, args.repeats)
                print(f"{flavour:<17} {what:<36} {audio:>8.1f} {cpu:>8.3f} {audio / cpu:>11.0f}x")
            metrics = analyze_call(job)["metrics"]
            print(f"{'':<17} (speech found: caller {metrics['caller_talk_seconds']:.0f} s, "
                  f"agent {metrics['agent_talk_seconds']:.0f} s, overtalk {metrics['overtalk_seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
