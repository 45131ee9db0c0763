"""The admin-edited hotline definition: YAML in, typed objects out, errors with lines.

Why our own small schema code instead of a JSON-schema library: every error must
name the YAML line the admin wrote, and the rules cross-reference each other
(menus point at nodes, queues at agents, nodes at prompts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from ivr.model import (
    DTMF_DIGITS,
    FACTS,
    QUEUE_FACTS,
    Calendar,
    Collect,
    Condition,
    Flow,
    Hangup,
    Hours,
    Language,
    Lookup,
    Menu,
    Node,
    Play,
    QueueRoute,
    Route,
    Rule,
    Transfer,
    Voicemail,
)

IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
EXTENSION = re.compile(r"^[0-9]{2,15}$")
QUEUE_STRATEGIES = ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear")
VOICES = ("cmn", "en")
VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]{0,30}$")
DIALABLE = re.compile(r"^[0-9]{2,20}$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NODE_TYPES = ("menu", "play", "collect", "lookup", "language", "hours", "route", "queue", "voicemail", "transfer",
              "hangup")
DEFAULT_PATH = Path(__file__).with_name("hotline.yaml")


@dataclass(frozen=True, slots=True)
class DefinitionError:
    """One problem in the definition, located in the YAML the admin edited."""

    where: str
    line: int | None
    message: str

    def __str__(self) -> str:
        at = f"line {self.line}: " if self.line else ""
        return f"{at}{self.where}: {self.message}"


class InvalidDefinition(ValueError):
    """The definition has errors; nothing derived from it may be applied."""

    def __init__(self, errors: list[DefinitionError]) -> None:
        self.errors = errors
        super().__init__("invalid hotline definition:\n" + "\n".join(f"  {e}" for e in errors))


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt: a recorded file (wins) or text rendered with espeak-ng."""

    id: str
    text: str | None
    voice: str
    file: str | None
    #: The same prompt in the hotline's other languages (language -> prompt), e.g. `en`.
    variants: Mapping[str, Prompt] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class QueueDef:
    id: str
    name: str
    strategy: str
    ring_timeout: int
    retry: int
    max_wait: int
    wrapup: int
    members: tuple[str, ...]
    #: Tell waiting callers their position / the expected hold time every
    #: `announce_frequency` seconds (0: never); `periodic_announce` is a prompt id
    #: played every `periodic_announce_frequency` seconds.
    announce_position: bool = False
    announce_holdtime: bool = False
    announce_frequency: int = 0
    periodic_announce: str | None = None
    periodic_announce_frequency: int = 0
    music_on_hold: str = "default"


@dataclass(frozen=True, slots=True)
class HotlineDefinition:
    numbers: tuple[str, ...]
    language: str
    timezone: str
    failsafe_queue: str
    failsafe_prompt: str
    prompts: Mapping[str, Prompt]
    agents: Mapping[str, Agent]
    queues: Mapping[str, QueueDef]
    flow: Flow
    source: str = field(default="", compare=False)
    calendars: Mapping[str, Calendar] = field(default_factory=dict)
    #: Every prompt language, the hotline's `language` first.
    languages: tuple[str, ...] = ()
    #: Music-on-hold class -> folder under the MOH directory ("" = the directory itself).
    music_on_hold: Mapping[str, str] = field(default_factory=lambda: {"default": ""})


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping and of each key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = _Lines()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int):
            raise yaml.constructor.ConstructorError(
                None, None, "keys must be text", key_node.start_mark
            )
        key = str(key)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


class _Lines(dict[str, Any]):
    line: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.key_lines: dict[str, int] = {}


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_definition(source: str | Path) -> HotlineDefinition:
    """Parse and check a definition; raises InvalidDefinition listing every error."""
    text = Path(source).read_text(encoding="utf-8") if isinstance(source, Path) else source
    try:
        raw = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidDefinition([DefinitionError("yaml", line, str(problem))]) from None
    return _Reader(text).read(raw)


class _Reader:
    """Turns the raw YAML tree into typed objects, collecting every error."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.errors: list[DefinitionError] = []
        self._targets: list[tuple[str, int | None, str]] = []
        self.languages: tuple[str, ...] = ("zh",)

    def error(self, where: str, line: int | None, message: str) -> None:
        self.errors.append(DefinitionError(where, line, message))

    def section(self, parent: Any, key: str, where: str) -> _Lines:
        value = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(value, dict):
            self.error(where, _line(parent, key), f"'{key}' must be a mapping")
            empty = _Lines()
            empty.line = _line(parent, key)
            return empty
        return value  # type: ignore[return-value]

    def text_field(
        self, raw: Any, key: str, where: str, default: str | None = None, pattern: re.Pattern[str] | None = None
    ) -> str:
        value = raw.get(key, default) if isinstance(raw, dict) else default
        if value is None:
            self.error(where, _line(raw, key), f"'{key}' is required")
            return ""
        if not isinstance(value, str | int) or isinstance(value, bool):
            self.error(where, _line(raw, key), f"'{key}' must be text")
            return ""
        value = str(value)
        if pattern is not None and not pattern.match(value):
            self.error(where, _line(raw, key), f"'{key}' value {value!r} is not allowed here")
        return value

    def int_field(self, raw: Any, key: str, where: str, default: int, low: int, high: int) -> int:
        value = raw.get(key, default) if isinstance(raw, dict) else default
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            self.error(where, _line(raw, key), f"'{key}' must be a number from {low} to {high}")
            return default
        return int(value)

    def prompt_list(self, raw: Any, key: str, where: str) -> tuple[str, ...]:
        value = raw.get(key, []) if isinstance(raw, dict) else []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(where, _line(raw, key), f"'{key}' must be a prompt id or a list of them")
            return ()
        return tuple(value)

    def read(self, raw: Any) -> HotlineDefinition:
        if not isinstance(raw, dict):
            raise InvalidDefinition([DefinitionError("yaml", 1, "the definition must be a mapping")])
        if raw.get("version") != 1:
            self.error("version", _line(raw, "version"), "only version: 1 is understood")
        hotline = self.section(raw, "hotline", "hotline")
        numbers_raw = hotline.get("numbers", [])
        numbers: list[str] = []
        if not isinstance(numbers_raw, list) or not numbers_raw:
            self.error("hotline.numbers", _line(hotline, "numbers"), "give at least one number")
        else:
            for n in numbers_raw:
                if not EXTENSION.match(str(n)):
                    self.error("hotline.numbers", _line(hotline, "numbers"), f"{n!r} is not a dialable number")
                numbers.append(str(n))
        language = self.text_field(hotline, "language", "hotline", "zh", re.compile(r"^[a-z]{2}$"))
        languages = [language]
        for extra in self.list_field(hotline, "languages", "hotline"):
            if not isinstance(extra, str) or not re.match(r"^[a-z]{2}$", extra):
                self.error("hotline.languages", _line(hotline, "languages"), f"{extra!r} is not a language code")
            elif extra not in languages:
                languages.append(extra)
        self.languages = tuple(languages)
        timezone = self.text_field(hotline, "timezone", "hotline", "Asia/Shanghai")
        failsafe_queue = self.text_field(hotline, "failsafe_queue", "hotline", "operator", IDENTIFIER)
        failsafe_prompt = self.text_field(hotline, "failsafe_prompt", "hotline", "sorry", IDENTIFIER)

        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self.error("hotline.timezone", _line(hotline, "timezone"), f"unknown time zone {timezone!r}")
            timezone = "UTC"

        prompts = self.read_prompts(self.section(raw, "prompts", "prompts"))
        agents = self.read_agents(self.section(raw, "agents", "agents"))
        moh = self.read_moh(raw)
        queues = self.read_queues(self.section(raw, "queues", "queues"), agents, prompts, moh)
        calendars = self.read_calendars(raw, timezone)
        flow = self.read_flow(self.section(raw, "ivr", "ivr"), prompts, queues, calendars, agents)
        if failsafe_queue not in queues:
            self.error("hotline.failsafe_queue", _line(hotline, "failsafe_queue"),
                       f"queue {failsafe_queue!r} is not defined")
        if failsafe_prompt not in prompts:
            self.error("hotline.failsafe_prompt", _line(hotline, "failsafe_prompt"),
                       f"prompt {failsafe_prompt!r} is not defined")
        if self.errors:
            raise InvalidDefinition(self.errors)
        return HotlineDefinition(
            numbers=tuple(numbers), language=language, timezone=timezone,
            failsafe_queue=failsafe_queue, failsafe_prompt=failsafe_prompt,
            prompts=prompts, agents=agents, queues=queues, flow=flow, source=self.text,
            calendars=calendars, music_on_hold=moh, languages=self.languages,
        )

    def read_prompts(self, raw: _Lines) -> dict[str, Prompt]:
        prompts: dict[str, Prompt] = {}
        for pid, spec in raw.items():
            where = f"prompts.{pid}"
            if not IDENTIFIER.match(pid):
                self.error(where, raw.key_lines.get(pid), "prompt ids are letters, digits, _ and -")
            if not isinstance(spec, dict):
                self.error(where, raw.key_lines.get(pid), "a prompt is a mapping with text or file")
                continue
            prompt = self.read_prompt(pid, spec, where, "cmn")
            variants: dict[str, Prompt] = {}
            for key, value in spec.items():
                if not re.match(r"^[a-z]{2}$", key):
                    continue
                if key not in self.languages[1:] or not isinstance(value, dict):
                    self.error(where, _line(spec, key), f"{key!r} is not one of hotline.languages "
                               f"({', '.join(self.languages[1:]) or 'none besides ' + self.languages[0]}) "
                               "with a mapping of text or file")
                    continue
                variants[key] = self.read_prompt(pid, value, f"{where}.{key}", "en" if key == "en" else "cmn")
            prompts[pid] = Prompt(prompt.id, prompt.text, prompt.voice, prompt.file, variants)
        return prompts

    def read_prompt(self, pid: str, spec: Any, where: str, default_voice: str) -> Prompt:
        """One prompt (or one language variant of it): a recorded file or text to speak."""
        text = spec.get("text")
        file = spec.get("file")
        voice = str(spec.get("voice", default_voice))
        if text is None and file is None:
            self.error(where, getattr(spec, "line", None), "a prompt needs 'text' or 'file'")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            self.error(where, _line(spec, "text"), "'text' must be non-empty text")
        if file is not None and (not isinstance(file, str) or ".." in Path(file).parts):
            self.error(where, _line(spec, "file"), "'file' must be a relative path inside the prompts folder")
        if voice not in VOICES:
            self.error(where, _line(spec, "voice"), f"voice must be one of {', '.join(VOICES)}")
        return Prompt(pid, text if isinstance(text, str) else None, voice, file if isinstance(file, str) else None)

    def read_agents(self, raw: _Lines) -> dict[str, Agent]:
        agents: dict[str, Agent] = {}
        for aid, spec in raw.items():
            where = f"agents.{aid}"
            if not EXTENSION.match(aid):
                self.error(where, raw.key_lines.get(aid), "an agent id is its extension number")
            name = self.text_field(spec, "name", where, aid)
            agents[aid] = Agent(aid, name)
        return agents

    def read_moh(self, raw: Any) -> dict[str, str]:
        """`music_on_hold: {class: {folder: name}}`; the class `default` always exists."""
        classes = {"default": ""}
        if "music_on_hold" not in raw:
            return classes
        section = self.section(raw, "music_on_hold", "music_on_hold")
        for name, spec in section.items():
            where = f"music_on_hold.{name}"
            if not IDENTIFIER.match(name):
                self.error(where, section.key_lines.get(name), "class names are letters, digits, _ and -")
            folder = self.text_field(spec, "folder", where, "" if name == "default" else name)
            if folder and not IDENTIFIER.match(folder):
                self.error(where, _line(spec, "folder"), "'folder' is one folder name inside the MOH directory")
            classes[name] = folder
        return classes

    def bool_field(self, raw: Any, key: str, where: str, default: bool) -> bool:
        value = raw.get(key, default) if isinstance(raw, dict) else default
        if not isinstance(value, bool):
            self.error(where, _line(raw, key), f"'{key}' must be true or false")
            return default
        return value

    def read_calendars(self, raw: Any, default_tz: str) -> dict[str, Calendar]:
        """`hours: {name: {timezone, weekly: {mon-fri: "08:00-20:00"}, holidays: [...], workdays: [...]}}`."""
        if "hours" not in raw:
            return {}
        section = self.section(raw, "hours", "hours")
        calendars: dict[str, Calendar] = {}
        for name, spec in section.items():
            where = f"hours.{name}"
            if not IDENTIFIER.match(name) or not isinstance(spec, dict):
                self.error(where, section.key_lines.get(name), "a calendar is a named mapping with 'weekly'")
                continue
            tz = self.text_field(spec, "timezone", where, default_tz)
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                self.error(where, _line(spec, "timezone"), f"unknown time zone {tz!r}")
                tz = "UTC"
            weekly: list[tuple[int, int, int]] = []
            week = self.section(spec, "weekly", f"{where}.weekly")
            for days_text, ranges in week.items():
                line = week.key_lines.get(days_text)
                try:
                    days = _parse_days(days_text)
                    spans = [_parse_range(str(r)) for r in (ranges if isinstance(ranges, list) else [ranges])]
                except ValueError as exc:
                    self.error(f"{where}.weekly", line, str(exc))
                    continue
                weekly += [(d, a, b) for d in days for a, b in spans]
            holidays: list[tuple[date, date]] = []
            for item in self.list_field(spec, "holidays", where):
                first = item.get("from", item.get("date")) if isinstance(item, dict) else item
                last = item.get("to", first) if isinstance(item, dict) else item
                if not isinstance(first, date) or not isinstance(last, date) or last < first:
                    self.error(where, _line(spec, "holidays"),
                               f"holiday {item!r} must be a date (2026-10-01) or {{from: date, to: date}}")
                    continue
                holidays.append((first, last))
            workdays: list[date] = []
            for item in self.list_field(spec, "workdays", where):
                if not isinstance(item, date):
                    self.error(where, _line(spec, "workdays"), f"workday {item!r} must be a date")
                    continue
                workdays.append(item)
            workday_hours = (9 * 60, 18 * 60)
            if "workday_hours" in spec:
                try:
                    workday_hours = _parse_range(str(spec["workday_hours"]))
                except ValueError as exc:
                    self.error(where, _line(spec, "workday_hours"), str(exc))
            calendars[name] = Calendar(name, tz, tuple(weekly), tuple(holidays), tuple(workdays), workday_hours)
        return calendars

    def list_field(self, raw: Any, key: str, where: str) -> list[Any]:
        value = raw.get(key, []) if isinstance(raw, dict) else []
        if not isinstance(value, list):
            self.error(where, _line(raw, key), f"'{key}' must be a list")
            return []
        return value

    def read_queues(self, raw: _Lines, agents: Mapping[str, Agent], prompts: Mapping[str, Prompt],
                    moh: Mapping[str, str]) -> dict[str, QueueDef]:
        queues: dict[str, QueueDef] = {}
        for qid, spec in raw.items():
            where = f"queues.{qid}"
            if not IDENTIFIER.match(qid):
                self.error(where, raw.key_lines.get(qid), "queue ids are letters, digits, _ and -")
            strategy = self.text_field(spec, "strategy", where, "rrmemory")
            if strategy not in QUEUE_STRATEGIES:
                self.error(where, _line(spec, "strategy"), f"strategy must be one of {', '.join(QUEUE_STRATEGIES)}")
            members = spec.get("members", []) if isinstance(spec, dict) else []
            if not isinstance(members, list):
                self.error(where, _line(spec, "members"), "'members' must be a list of agent ids")
                members = []
            for m in members:
                if str(m) not in agents:
                    self.error(where, _line(spec, "members"), f"member {m!r} is not a defined agent")
            periodic = spec.get("periodic_announce") if isinstance(spec, dict) else None
            if periodic is not None and str(periodic) not in prompts:
                self.error(where, _line(spec, "periodic_announce"), f"prompt {periodic!r} is not defined")
            music = self.text_field(spec, "music_on_hold", where, "default")
            if music not in moh:
                self.error(where, _line(spec, "music_on_hold"), f"music-on-hold class {music!r} is not defined")
            queues[qid] = QueueDef(
                id=qid,
                name=self.text_field(spec, "name", where, qid),
                strategy=strategy,
                ring_timeout=self.int_field(spec, "ring_timeout", where, 15, 3, 600),
                retry=self.int_field(spec, "retry", where, 1, 0, 60),
                max_wait=self.int_field(spec, "max_wait", where, 300, 5, 7200),
                wrapup=self.int_field(spec, "wrapup", where, 0, 0, 3600),
                members=tuple(str(m) for m in members),
                announce_position=self.bool_field(spec, "announce_position", where, False),
                announce_holdtime=self.bool_field(spec, "announce_holdtime", where, False),
                announce_frequency=self.int_field(spec, "announce_frequency", where, 0, 0, 3600),
                periodic_announce=str(periodic) if periodic is not None else None,
                periodic_announce_frequency=self.int_field(spec, "periodic_announce_frequency", where, 0, 0, 3600),
                music_on_hold=music,
            )
        return queues

    def read_flow(
        self, raw: _Lines, prompts: Mapping[str, Prompt], queues: Mapping[str, QueueDef],
        calendars: Mapping[str, Calendar], agents: Mapping[str, Agent],
    ) -> Flow:
        start = self.text_field(raw, "start", "ivr", None, IDENTIFIER)
        nodes_raw = self.section(raw, "nodes", "ivr.nodes")
        nodes: dict[str, Node] = {}

        for nid, spec in nodes_raw.items():
            where = f"ivr.nodes.{nid}"
            line = nodes_raw.key_lines.get(nid)
            if not IDENTIFIER.match(nid):
                self.error(where, line, "node ids are letters, digits, _ and -")
            if not isinstance(spec, dict):
                self.error(where, line, "a node is a mapping with a 'type'")
                continue
            node = self.read_node(nid, spec, where, prompts, queues, calendars, agents)
            if node is not None:
                nodes[nid] = node
        for where, line, target in self._targets:
            if target and target not in nodes:
                self.error(where, line, f"goes to node {target!r}, which does not exist")
        if start and start not in nodes:
            self.error("ivr.start", _line(raw, "start"), f"start node {start!r} does not exist")
        return Flow(start=start, nodes=nodes)

    def goto(self, spec: Any, key: str, where: str, default: str | None = None) -> str:
        """A reference to another node (checked once every node is read)."""
        target = self.text_field(spec, key, where, default)
        self._targets.append((where, _line(spec, key), target))
        return target

    def prompt_ref(self, spec: Any, key: str, where: str, prompts: Mapping[str, Prompt]) -> str | None:
        value = spec.get(key)
        if value is None:
            return None
        if str(value) not in prompts:
            self.error(where, _line(spec, key), f"prompt {value!r} is not defined")
        return str(value)

    def seconds(self, spec: Any, key: str, where: str, default: float, low: float, high: float) -> float:
        value = spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            self.error(where, _line(spec, key), f"'{key}' must be a number of seconds from {low:g} to {high:g}")
            return default
        return float(value)

    def read_node(
        self, nid: str, spec: dict[str, Any], where: str, prompts: Mapping[str, Prompt], queues: Mapping[str, QueueDef],
        calendars: Mapping[str, Calendar], agents: Mapping[str, Agent],
    ) -> Node | None:
        kind = spec.get("type")
        node_prompts = self.prompt_list(spec, "prompts", where)
        for p in node_prompts:
            if p not in prompts:
                self.error(where, _line(spec, "prompts"), f"prompt {p!r} is not defined")
        if kind == "menu":
            choices_raw = spec.get("choices")
            choices: dict[str, str] = {}
            if not isinstance(choices_raw, dict) or not choices_raw:
                self.error(where, _line(spec, "choices"), "a menu needs 'choices' (digit: node)")
            else:
                for digit, target in choices_raw.items():
                    if len(digit) != 1 or digit not in DTMF_DIGITS:
                        self.error(where, _line(choices_raw, digit), f"choice {digit!r} is not one DTMF digit")
                    choices[digit] = str(target)
                    self._targets.append((where, _line(choices_raw, digit), str(target)))
            return Menu(
                id=nid, prompts=node_prompts, choices=choices,
                timeout=float(self.int_field(spec, "timeout", where, 5, 1, 60)),
                retries=self.int_field(spec, "retries", where, 2, 0, 9),
                invalid_prompt=self.prompt_ref(spec, "invalid_prompt", where, prompts),
                timeout_prompt=self.prompt_ref(spec, "timeout_prompt", where, prompts),
                on_exhausted=self.goto(spec, "on_exhausted", where, "operator"),
            )
        if kind == "play":
            return Play(nid, node_prompts, self.goto(spec, "next", where))
        if kind == "collect":
            variable = self.text_field(spec, "variable", where, None, VARIABLE)
            low = self.int_field(spec, "min_digits", where, 1, 1, 40)
            high = self.int_field(spec, "max_digits", where, 20, 1, 40)
            if high < low:
                self.error(where, _line(spec, "max_digits"), "'max_digits' must not be below 'min_digits'")
            return Collect(
                id=nid, prompts=node_prompts, variable=variable,
                next=self.goto(spec, "next", where), on_failure=self.goto(spec, "on_failure", where, "operator"),
                min_digits=low, max_digits=high,
                first_timeout=self.seconds(spec, "first_timeout", where, 5, 1, 60),
                inter_timeout=self.seconds(spec, "inter_timeout", where, 3, 1, 30),
                retries=self.int_field(spec, "retries", where, 2, 0, 9),
                invalid_prompt=self.prompt_ref(spec, "invalid_prompt", where, prompts),
            )
        if kind == "lookup":
            return Lookup(nid, self.goto(spec, "next", where), self.seconds(spec, "timeout", where, 2, 0.1, 10))
        if kind == "language":
            language = self.text_field(spec, "language", where)
            if language and language not in self.languages:
                self.error(where, _line(spec, "language"),
                           f"language {language!r} is not in hotline.languages ({', '.join(self.languages)})")
            return Language(nid, language, self.goto(spec, "next", where))
        if kind == "hours":
            name = self.text_field(spec, "calendar", where, "main")
            calendar = calendars.get(name)
            if calendar is None:
                self.error(where, _line(spec, "calendar"), f"calendar {name!r} is not defined under 'hours'")
                calendar = Calendar(name, "UTC", ())
            return Hours(nid, calendar, self.goto(spec, "open", where), self.goto(spec, "closed", where))
        if kind == "route":
            rules = self.read_rules(spec, where, queues, for_queue=False)
            return Route(nid, rules, self.goto(spec, "default", where))
        if kind == "queue":
            queue = self.text_field(spec, "queue", where)
            if queue and queue not in queues:
                self.error(where, _line(spec, "queue"), f"queue {queue!r} is not defined")
            return QueueRoute(nid, queue, node_prompts, self.read_rules(spec, where, queues, for_queue=True))
        if kind == "voicemail":
            queue = self.text_field(spec, "queue", where)
            if queue and queue not in queues:
                self.error(where, _line(spec, "queue"), f"queue {queue!r} is not defined")
            return Voicemail(nid, queue, node_prompts, self.int_field(spec, "max_seconds", where, 120, 5, 600))
        if kind == "transfer":
            number = self.text_field(spec, "number", where, None, DIALABLE)
            return Transfer(nid, number, node_prompts, self.int_field(spec, "timeout", where, 60, 5, 600))
        if kind == "hangup":
            return Hangup(nid, node_prompts)
        self.error(where, _line(spec, "type"), f"type must be one of {', '.join(NODE_TYPES)}")
        return None

    def read_rules(
        self, spec: dict[str, Any], where: str, queues: Mapping[str, QueueDef], *, for_queue: bool
    ) -> tuple[Rule, ...]:
        """`rules: [{id, if: {fact: value, ...}, goto: node | priority: N}]`, first match wins."""
        rules: list[Rule] = []
        seen: set[str] = set()
        for i, item in enumerate(self.list_field(spec, "rules", where)):
            rwhere = f"{where}.rules[{i}]"
            if not isinstance(item, dict):
                self.error(rwhere, _line(spec, "rules"), "a rule is a mapping with 'id', 'if' and 'goto'")
                continue
            rid = self.text_field(item, "id", rwhere, None, IDENTIFIER)
            if rid in seen:
                self.error(rwhere, _line(item, "id"), f"rule id {rid!r} is used twice in this node")
            seen.add(rid)
            conditions = self.read_conditions(item, rwhere, queues, for_queue)
            goto = self.goto(item, "goto", rwhere) if "goto" in item else None
            priority = self.int_field(item, "priority", rwhere, 0, 1, 100) if "priority" in item else None
            if (goto is None) == (priority is None) or (priority is not None and not for_queue):
                self.error(rwhere, getattr(item, "line", None),
                           "a rule needs 'goto' (or, in a queue node, 'priority' instead)")
            rules.append(Rule(rid, conditions, goto, priority))
        return tuple(rules)

    def read_conditions(self, item: Any, where: str, queues: Mapping[str, QueueDef],
                        for_queue: bool) -> tuple[Condition, ...]:
        raw = item.get("if")
        if not isinstance(raw, dict) or not raw:
            self.error(where, _line(item, "if"), f"'if' must map facts ({', '.join(FACTS)}) to values")
            return ()
        out: list[Condition] = []
        for fact, value in raw.items():
            line = _line(raw, fact)
            if fact not in FACTS:
                self.error(where, line, f"unknown fact {fact!r}; one of {', '.join(FACTS)}")
                continue
            queue: str | None = None
            if fact in QUEUE_FACTS and isinstance(value, dict):
                queue = str(value.get("queue", ""))
                value = value.get("value", True if fact == "no_agents" else None)
            if fact in QUEUE_FACTS and queue is None and not for_queue:
                self.error(where, line, f"{fact!r} outside a queue node needs {{queue: id, value: ...}}")
            if queue is not None and queue not in queues:
                self.error(where, line, f"queue {queue!r} is not defined")
            if fact in ("known", "vip", "open_repair", "no_agents"):
                if not isinstance(value, bool):
                    self.error(where, line, f"{fact!r} must be true or false")
                    continue
            elif fact == "region":
                regions = value if isinstance(value, list) else [value]
                if not regions or not all(isinstance(r, str) and r for r in regions):
                    self.error(where, line, "'region' must be a region name or a list of them")
                    continue
                value = tuple(regions)
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                self.error(where, line, f"{fact!r} must be a whole number")
                continue
            out.append(Condition(fact, value, queue))
        return tuple(out)


def _parse_days(text: str) -> tuple[int, ...]:
    """`"mon-fri"` -> (0..4); also `"sat"`, `"mon,wed"`, `"sat-sun"`."""
    days: list[int] = []
    for part in str(text).lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(f"{text!r}: days are mon, tue, wed, thu, fri, sat, sun or ranges like mon-fri")
        a, b = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        if b < a:
            raise ValueError(f"{text!r}: a day range runs forward (mon-fri)")
        days.extend(range(a, b + 1))
    return tuple(dict.fromkeys(days))


def _parse_range(text: str) -> tuple[int, int]:
    """`"08:00-20:00"` -> (480, 1200) minutes; `"00:00-24:00"` is the whole day."""
    try:
        start_s, end_s = text.split("-")
        start, end = _minute(start_s), _minute(end_s)
    except ValueError:
        raise ValueError(f"{text!r} is not a time range like 08:00-20:00") from None
    if not start < end:
        raise ValueError(f"{text!r} ends before it starts")
    return start, end


def _minute(text: str) -> int:
    hh, mm = text.strip().split(":")
    h, m = int(hh), int(mm)
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ValueError(text)
    return h * 60 + m


def _line(raw: Any, key: str) -> int | None:
    if isinstance(raw, _Lines):
        return raw.key_lines.get(key, raw.line)
    return None
