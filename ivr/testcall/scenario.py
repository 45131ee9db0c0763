"""Test-call scenarios: what a QA "mystery shopper" does on one call, as YAML.

    name: repair-path
    number: "4000"              # what to dial
    caller_id: "13800138000"    # optional: the number presented
    thresholds:                 # seconds; a measured value above one fails the call
      max_first_prompt: 3       # INVITE -> first expected prompt starts
      max_queue_wait: 30        # queue join -> agent connected (from AMI)
      max_time_to_agent: 40     # INVITE -> agent connected (from AMI)
    steps:
      - expect_prompt: welcome              # a prompt id of the hotline definition
      - expect_prompt: {prompt: menu, within: 5}
      - press: "1"
      - expect_prompt: connecting
      - wait_agent: {within: 30}
      - play: question.wav                  # relative to the scenario file
      - stay: 3
      - hangup

Errors name the YAML line; every error in a file is reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DIGITS = re.compile(r"^[0-9*#]{1,32}$")
NUMBER = re.compile(r"^[0-9+*#]{2,32}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STEP_KINDS = ("expect_prompt", "press", "wait_agent", "play", "stay", "hangup", "expect_hangup")
THRESHOLDS = ("max_first_prompt", "max_queue_wait", "max_time_to_agent")
#: Default time a prompt may take to start after the previous step.
DEFAULT_PROMPT_WITHIN = 5.0
DEFAULT_AGENT_WITHIN = 60.0


class ScenarioError(ValueError):
    """A scenario file that cannot be run; `errors` lists every problem with its line."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"invalid test-call scenario {source}:\n" + "\n".join(f"  {e}" for e in errors))


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted action or expectation. Fields are used as fits the kind."""

    kind: str
    prompt: str | None = None
    digits: str | None = None
    within: float | None = None
    wav: Path | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for key in ("prompt", "digits", "within", "seconds"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.wav is not None:
            out["wav"] = str(self.wav)
        return out


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_first_prompt: float | None = None
    max_queue_wait: float | None = None
    max_time_to_agent: float | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    number: str
    steps: tuple[Step, ...]
    caller_id: str | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    #: The menu digits this scenario walks (set by the generator; informational).
    path: tuple[str, ...] = ()
    #: What the path relies on that DTMF cannot choose (e.g. "hours:open"; generator).
    assumes: tuple[str, ...] = ()
    source: str = ""

    @property
    def prompts(self) -> list[str]:
        return [s.prompt for s in self.steps if s.kind == "expect_prompt" and s.prompt]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "number": self.number, "caller_id": self.caller_id,
                "thresholds": {k: getattr(self.thresholds, k) for k in THRESHOLDS},
                "path": list(self.path), "assumes": list(self.assumes), "steps": [s.to_dict() for s in self.steps]}

    def to_yaml(self) -> str:
        """The scenario as a file `load_scenario` reads back (the generator writes these)."""
        steps: list[Any] = []
        for s in self.steps:
            d = s.to_dict()
            kind = d.pop("kind")
            steps.append(kind if not d else {kind: d})
        doc: dict[str, Any] = {"name": self.name, "number": self.number}
        if self.caller_id:
            doc["caller_id"] = self.caller_id
        limits = {k: getattr(self.thresholds, k) for k in THRESHOLDS if getattr(self.thresholds, k) is not None}
        if limits:
            doc["thresholds"] = limits
        if self.path:
            doc["path"] = list(self.path)
        if self.assumes:
            doc["assumes"] = list(self.assumes)
        doc["steps"] = steps
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


class _Loader(yaml.SafeLoader):
    """Keeps the line of every mapping, sequence item and scalar."""


def _lined(loader: _Loader, node: yaml.Node, value: Any) -> Any:
    if isinstance(value, dict):
        out: Any = _LDict(value)
    elif isinstance(value, list):
        out = _LList(value)
    else:
        return value
    out.line = node.start_mark.line + 1
    return out


class _LDict(dict[str, Any]):
    line = 0
    key_lines: dict[str, int] = {}  # set per instance by the loader


class _LList(list[Any]):
    line = 0
    item_lines: list[int] = []  # set per instance by the loader


def _map(loader: _Loader, node: yaml.MappingNode) -> Any:
    value = {}
    lines = {}
    for k, v in node.value:
        key = loader.construct_object(k, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(None, None, "keys must be text", k.start_mark)
        if key in value:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k.start_mark)
        value[key] = loader.construct_object(v, deep=True)
        lines[key] = k.start_mark.line + 1
    out = _lined(loader, node, value)
    out.key_lines = lines
    return out


def _seq(loader: _Loader, node: yaml.SequenceNode) -> Any:
    out = _lined(loader, node, [loader.construct_object(v, deep=True) for v in node.value])
    out.item_lines = [v.start_mark.line + 1 for v in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _seq)


def load_scenario(source: str | Path, *, text: str | None = None, base_dir: Path | None = None,
                  prompt_ids: Collection[str] | None = None, media_inside_base: bool = False) -> Scenario:
    """Read a scenario file (or `text`, named `source`); raise ScenarioError listing every
    problem. `prompt_ids` (the hotline's prompts) lets unknown prompt ids fail here.
    `media_inside_base` (scenarios sent over the API) refuses WAVs outside `base_dir`,
    so a scenario cannot play an arbitrary server file into a call."""
    name = str(source)
    if text is None:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(name, [f"cannot read the file: {exc}"]) from None
        base_dir = base_dir or Path(source).resolve().parent
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise ScenarioError(name, [f"{at}not valid YAML: {getattr(exc, 'problem', None) or exc}"]) from None
    return _Reader(name, base_dir or Path("."), prompt_ids, media_inside_base).read(raw)


class _Reader:
    def __init__(self, source: str, base_dir: Path, prompt_ids: Collection[str] | None,
                 media_inside_base: bool = False) -> None:
        self.media_inside_base = media_inside_base
        self.source = source
        self.base_dir = base_dir
        self.prompt_ids = prompt_ids
        self.errors: list[str] = []

    def error(self, line: int | None, where: str, message: str) -> None:
        self.errors.append(f"{f'line {line}: ' if line else ''}{where}: {message}")

    def seconds(self, value: Any, line: int, where: str, low: float = 0.0, high: float = 3600.0) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            self.error(line, where, f"must be a number of seconds from {low:g} to {high:g}, not {value!r}")
            return None
        return float(value)

    def read(self, raw: Any) -> Scenario:
        if not isinstance(raw, dict):
            raise ScenarioError(self.source, ["line 1: a scenario is a mapping with 'number' and 'steps'"])
        line = getattr(raw, "line", 1)
        known = {"name", "number", "caller_id", "thresholds", "steps", "path", "assumes", "description"}
        for key in sorted(set(raw) - known):
            at = getattr(raw, "key_lines", {}).get(key, line)
            self.error(at, key, f"unknown key (known: {', '.join(sorted(known))})")
        name = str(raw.get("name") or Path(self.source).stem or "scenario")
        if not NAME.match(name):
            self.error(line, "name", f"{name!r}: letters, digits, '_', '.', '-' (max 64)")
        number = raw.get("number")
        if number is None:
            self.error(line, "number", "the number to dial is required")
        elif isinstance(number, bool) or not NUMBER.match(str(number)):
            self.error(line, "number", f"{number!r} is not a dialable number")
        caller_id = raw.get("caller_id")
        if caller_id is not None and (isinstance(caller_id, bool) or not NUMBER.match(str(caller_id))):
            self.error(line, "caller_id", f"{caller_id!r} is not a phone number")
        thresholds = self.read_thresholds(raw.get("thresholds"), line)
        path_raw = raw.get("path", [])
        path = tuple(str(p) for p in path_raw) if isinstance(path_raw, list) else ()
        assumes_raw = raw.get("assumes", [])
        assumes = tuple(str(a) for a in assumes_raw) if isinstance(assumes_raw, list) else ()
        steps = self.read_steps(raw.get("steps"), line)
        if self.errors:
            raise ScenarioError(self.source, self.errors)
        return Scenario(name=name, number=str(number), steps=tuple(steps),
                        caller_id=None if caller_id is None else str(caller_id),
                        thresholds=thresholds, path=path, assumes=assumes, source=self.source)

    def read_thresholds(self, raw: Any, line: int) -> Thresholds:
        if raw is None:
            return Thresholds()
        if not isinstance(raw, dict):
            self.error(line, "thresholds", "must be a mapping of " + ", ".join(THRESHOLDS))
            return Thresholds()
        tline = getattr(raw, "line", line)
        values: dict[str, float | None] = {}
        for key, value in raw.items():
            if key not in THRESHOLDS:
                self.error(tline, f"thresholds.{key}", f"unknown threshold (known: {', '.join(THRESHOLDS)})")
                continue
            values[key] = self.seconds(value, tline, f"thresholds.{key}", 0.0, 7200.0)
        return Thresholds(**values)

    def read_steps(self, raw: Any, line: int) -> list[Step]:
        if not isinstance(raw, list) or not raw:
            self.error(line, "steps", "give a list of steps (expect_prompt, press, wait_agent, play, stay, hangup)")
            return []
        steps: list[Step] = []
        sline = getattr(raw, "line", line)
        for i, item in enumerate(raw):
            where = f"steps[{i}]"
            lines = getattr(raw, "item_lines", [])
            iline = lines[i] if i < len(lines) else sline
            if isinstance(item, str):
                kind, value = item, None
            elif isinstance(item, dict) and len(item) == 1:
                kind, value = next(iter(item.items()))
            else:
                self.error(iline, where, f"a step is one of {', '.join(STEP_KINDS)} (a name or a one-key mapping)")
                continue
            if kind not in STEP_KINDS:
                self.error(iline, where, f"unknown step {kind!r} (known: {', '.join(STEP_KINDS)})")
                continue
            step = self.read_step(kind, value, iline, f"{where}.{kind}")
            if step is not None:
                steps.append(step)
        return steps

    def read_step(self, kind: str, value: Any, line: int, where: str) -> Step | None:
        opts: dict[str, Any] = dict(value) if isinstance(value, dict) else {}
        main = {"expect_prompt": "prompt", "press": "digits", "play": "wav", "stay": "seconds",
                "wait_agent": "within", "expect_hangup": "within", "hangup": None}[kind]
        if value is not None and not isinstance(value, dict):
            if main is None:
                self.error(line, where, "takes no value")
                return None
            opts = {main: value}
        allowed = {main, "within"} - {None}
        for key in sorted(set(opts) - allowed):
            self.error(line, where, f"unknown option {key!r}")
        within = None
        if "within" in opts:
            within = self.seconds(opts["within"], line, f"{where}.within", 0.1, 3600.0)
        if kind == "expect_prompt":
            prompt = opts.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                self.error(line, where, "needs a prompt id")
                return None
            if self.prompt_ids is not None and prompt not in self.prompt_ids:
                self.error(line, where, f"prompt {prompt!r} is not in the hotline definition "
                                        f"(known: {', '.join(sorted(self.prompt_ids))})")
            return Step(kind, prompt=prompt, within=within)
        if kind == "press":
            digits = opts.get("digits")
            if isinstance(digits, int) and not isinstance(digits, bool):
                digits = str(digits)
            if not isinstance(digits, str) or not DIGITS.match(digits):
                self.error(line, where, f"{digits!r}: DTMF digits 0-9, * and # (quote them in YAML)")
                return None
            return Step(kind, digits=digits)
        if kind == "play":
            wav = opts.get("wav")
            if not isinstance(wav, str) or not wav:
                self.error(line, where, "needs a WAV file")
                return None
            path = (self.base_dir / wav).resolve()
            if self.media_inside_base and not path.is_relative_to(self.base_dir.resolve()):
                self.error(line, where, f"file {wav!r} must be inside the test-call media folder {self.base_dir}")
                return None
            if not path.is_file():
                self.error(line, where, f"file {wav!r} not found (looked in {path})")
                return None
            return Step(kind, wav=path)
        if kind == "stay":
            secs = self.seconds(opts.get("seconds"), line, where, 0.0, 3600.0)
            return None if secs is None else Step(kind, seconds=secs)
        return Step(kind, within=within)


def check_prompts(scenario: Scenario, prompt_ids: Mapping[str, Any] | Collection[str]) -> list[str]:
    """Prompt ids the scenario expects that the hotline does not define."""
    return [p for p in scenario.prompts if p not in prompt_ids]
