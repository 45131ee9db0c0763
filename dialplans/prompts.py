"""Render the definition's prompts to 8 kHz WAV files Asterisk can play.

Debian ships no Mandarin Asterisk prompts, so a prompt may be written as text and
is spoken with espeak-ng (voice `cmn` or `en`), then converted by sox to 8 kHz
16-bit mono (Asterisk's native slin rate: no transcoding at play time). A recorded
file in the prompts folder always wins over text. Output names are stable, so the
test-call runner knows the exact audio every IVR node should play.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from dialplans.definition import HotlineDefinition, Prompt


class PromptRenderError(RuntimeError):
    """A prompt could not be produced (missing tool, missing file, bad audio)."""


def render_prompts(
    defn: HotlineDefinition, out_dir: Path, *, prompts_src: Path | None = None, cache_dir: Path | None = None
) -> dict[str, Path]:
    """Write `<out_dir>/<language>/<prompt id>.wav` for every prompt; returns the paths.

    Variants in the hotline's other languages go to `<out_dir>/<their language>/`
    (the engine falls back to the hotline's language where a prompt has none).
    Text renders are cached by (voice, text) hash so a re-publish is cheap.
    """
    lang_dir = out_dir / defn.language
    lang_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for pid, prompt in sorted(defn.prompts.items()):
        target = lang_dir / f"{pid}.wav"
        _render_one(prompt, target, prompts_src, cache_dir)
        written[pid] = target
        for lang, variant in sorted(prompt.variants.items()):
            (out_dir / lang).mkdir(parents=True, exist_ok=True)
            _render_one(variant, out_dir / lang / f"{pid}.wav", prompts_src, cache_dir)
    return written


def _render_one(prompt: Prompt, target: Path, prompts_src: Path | None, cache_dir: Path | None) -> None:
    if prompt.file is not None:
        base = prompts_src or Path(".")
        source = (base / prompt.file).resolve()
        if not source.is_relative_to(base.resolve()):
            raise PromptRenderError(f"prompt {prompt.id}: file {prompt.file!r} is outside the prompts folder")
        if not source.is_file():
            raise PromptRenderError(f"prompt {prompt.id}: file {prompt.file!r} does not exist")
        _to_asterisk_wav(source, target)
        return
    assert prompt.text is not None
    key = hashlib.sha256(f"{prompt.voice}\0{prompt.text}".encode()).hexdigest()[:24]
    cached = cache_dir / f"{key}.wav" if cache_dir else None
    if cached is not None and cached.is_file():
        shutil.copyfile(cached, target)
        return
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise PromptRenderError("espeak-ng is not installed (apt-get install espeak-ng sox)")
    with tempfile.TemporaryDirectory() as tmp:
        spoken = Path(tmp) / "spoken.wav"
        _run([espeak, "-v", prompt.voice, "-s", "150", "-w", str(spoken), prompt.text], prompt.id)
        _to_asterisk_wav(spoken, target)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, cached)


def _to_asterisk_wav(source: Path, target: Path) -> None:
    sox = shutil.which("sox")
    if sox is None:
        raise PromptRenderError("sox is not installed (apt-get install sox)")
    tmp = target.with_suffix(".tmp.wav")
    _run([sox, str(source), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(tmp)], target.stem)
    tmp.replace(target)


def render_moh(out_dir: Path) -> Path:
    """A quiet two-tone hold loop: Debian's Asterisk has no MOH files in the path we use."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "hold.wav"
    if target.is_file():
        return target
    sox = shutil.which("sox")
    if sox is None:
        raise PromptRenderError("sox is not installed (apt-get install sox)")
    _run([sox, "-n", "-r", "8000", "-c", "1", "-b", "16", str(target),
          "synth", "0.4", "sine", "523", "synth", "0.4", "sine", "659", "pad", "0", "1.2",
          "repeat", "5", "vol", "0.15"], "moh")
    return target


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PromptRenderError(f"{what}: {Path(cmd[0]).name} failed: {proc.stderr.strip()[:500]}")
