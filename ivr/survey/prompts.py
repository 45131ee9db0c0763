"""Render a survey's text prompts to 8 kHz WAVs (espeak-ng + sox), as the hotline's are.

`ivr` may not import `dialplans`, so this is the survey's own small renderer; the
recipe is the same (voice, 150 wpm, sox to 8 kHz 16-bit mono) and renders are
cached by (voice, text) hash. Output: `<out_dir>/<survey>/<prompt>.wav`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from ivr.survey.definition import SurveyDefinition


class SurveyPromptError(RuntimeError):
    """A prompt could not be rendered (missing tool, failing command)."""


def render_survey_prompts(defn: SurveyDefinition, out_dir: Path, cache_dir: Path | None = None) -> dict[str, Path]:
    target_dir = out_dir / defn.name
    target_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for pid, text in sorted(defn.prompts.items()):
        target = target_dir / f"{pid}.wav"
        key = hashlib.sha256(f"{defn.voice}\0{text}".encode()).hexdigest()[:24]
        cached = cache_dir / f"{key}.wav" if cache_dir else None
        if cached is not None and cached.is_file():
            shutil.copyfile(cached, target)
        else:
            _render(defn.voice, text, target, pid)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(target, cached)
        written[pid] = target
    return written


def _render(voice: str, text: str, target: Path, what: str) -> None:
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if espeak is None or sox is None:
        raise SurveyPromptError("espeak-ng and sox are needed (apt-get install espeak-ng sox)")
    with tempfile.TemporaryDirectory() as tmp:
        spoken = Path(tmp) / "spoken.wav"
        _run([espeak, "-v", voice, "-s", "150", "-w", str(spoken), text], what)
        tmp_target = target.with_suffix(".tmp.wav")
        _run([sox, str(spoken), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(tmp_target)], what)
        tmp_target.replace(target)


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SurveyPromptError(f"prompt {what}: {Path(cmd[0]).name} failed: {proc.stderr.strip()[:300]}")
