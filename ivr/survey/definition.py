"""Survey definitions as data: prompts and steps (play, question, record, closing).

Like the hotline IVR, a survey is a small graph the engine (`flow.py`) walks; it is
checked when loaded (unknown steps, missing prompts, loops that never reach a
closing) so a bad definition fails before any customer is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path(__file__).with_name("default_survey.yaml")


class SurveyDefinitionError(ValueError):
    """The survey definition is unusable; the message says where."""


@dataclass(frozen=True, slots=True)
class PlayStep:
    id: str
    prompt: str
    next: str


@dataclass(frozen=True, slots=True)
class QuestionStep:
    """One DTMF answer from `digits`; re-asked on invalid input or silence, `retries` times.

    `branches` overrides `next` per digit (e.g. a low score goes to the callback
    offer); a score <= `low_score` opens a follow-up task; a digit in `praise`
    counts for the hotline agent; pressing `callback` asks a supervisor to call back.
    """

    id: str
    prompt: str
    digits: str
    next: str
    branches: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 6.0
    retries: int = 2
    low_score: int | None = None
    praise: str = ""
    callback: str = ""


@dataclass(frozen=True, slots=True)
class RecordStep:
    """An optional voice comment, recorded into the recordings folder; '#' ends it."""

    id: str
    prompt: str
    next: str
    max_seconds: int = 30
    silence_s: int = 4


@dataclass(frozen=True, slots=True)
class ClosingStep:
    id: str
    prompt: str


Step = PlayStep | QuestionStep | RecordStep | ClosingStep


@dataclass(frozen=True, slots=True)
class SurveyDefinition:
    name: str
    voice: str
    start: str
    prompts: Mapping[str, str]
    steps: Mapping[str, Step]
    invalid_prompt: str | None = "invalid"

    @property
    def questions(self) -> list[QuestionStep]:
        return [s for s in self.steps.values() if isinstance(s, QuestionStep)]


def load_survey(source: Path | str = DEFAULT_PATH) -> SurveyDefinition:
    path = Path(source)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SurveyDefinitionError(f"cannot read survey {path}: {exc}") from None
    return survey_from_dict(raw)


def _text(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise SurveyDefinitionError(f"{where}: '{key}' must be a non-empty string")
    return value


def survey_from_dict(raw: Any) -> SurveyDefinition:
    if not isinstance(raw, Mapping):
        raise SurveyDefinitionError("a survey definition is a mapping")
    name = _text(raw, "survey", "survey")
    prompts = raw.get("prompts")
    if not isinstance(prompts, Mapping) or not all(isinstance(v, str) and v for v in prompts.values()):
        raise SurveyDefinitionError("prompts: a mapping of id -> text")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, Mapping) or not steps_raw:
        raise SurveyDefinitionError("steps: a non-empty mapping")
    steps: dict[str, Step] = {}
    for sid, s in steps_raw.items():
        where = f"steps.{sid}"
        if not isinstance(s, Mapping):
            raise SurveyDefinitionError(f"{where}: a mapping")
        kind = s.get("type")
        prompt = _text(s, "prompt", where)
        if prompt not in prompts:
            raise SurveyDefinitionError(f"{where}: unknown prompt {prompt!r}")
        step: Step
        if kind == "play":
            step = PlayStep(sid, prompt, _text(s, "next", where))
        elif kind == "question":
            digits = _text(s, "digits", where)
            if not set(digits) <= set("0123456789*#"):
                raise SurveyDefinitionError(f"{where}: digits must be DTMF keys")
            branches = {str(k): str(v) for k, v in (s.get("branches") or {}).items()}
            if not set(branches) <= set(digits):
                raise SurveyDefinitionError(f"{where}: branches on digits that are not valid answers")
            step = QuestionStep(
                sid, prompt, digits, _text(s, "next", where), branches,
                timeout_s=float(s.get("timeout_s", 6.0)), retries=int(s.get("retries", 2)),
                low_score=None if s.get("low_score") is None else int(s["low_score"]),
                praise=str(s.get("praise", "")), callback=str(s.get("callback", "")))
        elif kind == "record":
            step = RecordStep(sid, prompt, _text(s, "next", where), max_seconds=int(s.get("max_seconds", 30)),
                              silence_s=int(s.get("silence_s", 4)))
        elif kind == "closing":
            step = ClosingStep(sid, prompt)
        else:
            raise SurveyDefinitionError(f"{where}: type must be play, question, record or closing")
        steps[str(sid)] = step
    start = _text(raw, "start", "survey")
    invalid = raw.get("invalid_prompt", "invalid" if "invalid" in prompts else None)
    defn = SurveyDefinition(name, str(raw.get("voice", "cmn")), start, dict(prompts), steps, invalid)
    _check_graph(defn)
    return defn


def _targets(step: Step) -> list[str]:
    if isinstance(step, ClosingStep):
        return []
    if isinstance(step, QuestionStep):
        return [step.next, *step.branches.values()]
    return [step.next]


def _check_graph(defn: SurveyDefinition) -> None:
    if defn.start not in defn.steps:
        raise SurveyDefinitionError(f"start step {defn.start!r} does not exist")
    for step in defn.steps.values():
        for target in _targets(step):
            if target not in defn.steps:
                raise SurveyDefinitionError(f"steps.{step.id}: goes to unknown step {target!r}")
    # Every path must end at a closing: no cycles (a survey never asks in circles).
    state: dict[str, int] = {}

    def visit(sid: str, trail: tuple[str, ...]) -> None:
        if state.get(sid) == 2:
            return
        if state.get(sid) == 1:
            raise SurveyDefinitionError(f"steps loop: {' -> '.join((*trail, sid))}")
        state[sid] = 1
        for target in _targets(defn.steps[sid]):
            visit(target, (*trail, sid))
        state[sid] = 2

    visit(defn.start, ())
