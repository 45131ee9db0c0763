"""The admin-edited hotline definition: YAML in, typed objects out, errors with lines.

Why our own small schema code instead of a JSON-schema library: every error must
name the YAML line the admin wrote, and the rules cross-reference each other
(menus point at nodes, queues at agents, nodes at prompts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ivr.model import DTMF_DIGITS, Flow, Hangup, Menu, Node, Play, QueueRoute

IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
EXTENSION = re.compile(r"^[0-9]{2,15}$")
QUEUE_STRATEGIES = ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear")
VOICES = ("cmn", "en")
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
        timezone = self.text_field(hotline, "timezone", "hotline", "Asia/Shanghai")
        failsafe_queue = self.text_field(hotline, "failsafe_queue", "hotline", "operator", IDENTIFIER)
        failsafe_prompt = self.text_field(hotline, "failsafe_prompt", "hotline", "sorry", IDENTIFIER)

        prompts = self.read_prompts(self.section(raw, "prompts", "prompts"))
        agents = self.read_agents(self.section(raw, "agents", "agents"))
        queues = self.read_queues(self.section(raw, "queues", "queues"), agents)
        flow = self.read_flow(self.section(raw, "ivr", "ivr"), prompts, queues)
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
            text = spec.get("text")
            file = spec.get("file")
            voice = str(spec.get("voice", "cmn"))
            if text is None and file is None:
                self.error(where, getattr(spec, "line", None), "a prompt needs 'text' or 'file'")
            if text is not None and (not isinstance(text, str) or not text.strip()):
                self.error(where, _line(spec, "text"), "'text' must be non-empty text")
            if file is not None and (not isinstance(file, str) or ".." in Path(file).parts):
                self.error(where, _line(spec, "file"), "'file' must be a relative path inside the prompts folder")
            if voice not in VOICES:
                self.error(where, _line(spec, "voice"), f"voice must be one of {', '.join(VOICES)}")
            prompts[pid] = Prompt(pid, text if isinstance(text, str) else None, voice,
                                  file if isinstance(file, str) else None)
        return prompts

    def read_agents(self, raw: _Lines) -> dict[str, Agent]:
        agents: dict[str, Agent] = {}
        for aid, spec in raw.items():
            where = f"agents.{aid}"
            if not EXTENSION.match(aid):
                self.error(where, raw.key_lines.get(aid), "an agent id is its extension number")
            name = self.text_field(spec, "name", where, aid)
            agents[aid] = Agent(aid, name)
        return agents

    def read_queues(self, raw: _Lines, agents: Mapping[str, Agent]) -> dict[str, QueueDef]:
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
            queues[qid] = QueueDef(
                id=qid,
                name=self.text_field(spec, "name", where, qid),
                strategy=strategy,
                ring_timeout=self.int_field(spec, "ring_timeout", where, 15, 3, 600),
                retry=self.int_field(spec, "retry", where, 1, 0, 60),
                max_wait=self.int_field(spec, "max_wait", where, 300, 5, 7200),
                wrapup=self.int_field(spec, "wrapup", where, 0, 0, 3600),
                members=tuple(str(m) for m in members),
            )
        return queues

    def read_flow(
        self, raw: _Lines, prompts: Mapping[str, Prompt], queues: Mapping[str, QueueDef]
    ) -> Flow:
        start = self.text_field(raw, "start", "ivr", None, IDENTIFIER)
        nodes_raw = self.section(raw, "nodes", "ivr.nodes")
        nodes: dict[str, Node] = {}
        targets: list[tuple[str, int | None, str]] = []

        def need_prompts(where: str, line: int | None, ids: tuple[str, ...]) -> None:
            for p in ids:
                if p not in prompts:
                    self.error(where, line, f"prompt {p!r} is not defined")

        for nid, spec in nodes_raw.items():
            where = f"ivr.nodes.{nid}"
            line = nodes_raw.key_lines.get(nid)
            if not IDENTIFIER.match(nid):
                self.error(where, line, "node ids are letters, digits, _ and -")
            if not isinstance(spec, dict):
                self.error(where, line, "a node is a mapping with a 'type'")
                continue
            kind = spec.get("type")
            node_prompts = self.prompt_list(spec, "prompts", where)
            need_prompts(where, _line(spec, "prompts"), node_prompts)
            node: Node
            if kind == "menu":
                choices_raw = spec.get("choices")
                choices: dict[str, str] = {}
                if not isinstance(choices_raw, dict) or not choices_raw:
                    self.error(where, _line(spec, "choices"), "a menu needs 'choices' (digit: node)")
                else:
                    for digit, target in choices_raw.items():
                        if len(digit) != 1 or digit not in DTMF_DIGITS:
                            self.error(where, _line(choices_raw, digit),
                                       f"choice {digit!r} is not one DTMF digit")
                        choices[digit] = str(target)
                        targets.append((where, _line(choices_raw, digit), str(target)))
                on_exhausted = self.text_field(spec, "on_exhausted", where, "operator")
                targets.append((where, _line(spec, "on_exhausted"), on_exhausted))
                invalid_prompt = spec.get("invalid_prompt")
                timeout_prompt = spec.get("timeout_prompt")
                for key, value in (("invalid_prompt", invalid_prompt), ("timeout_prompt", timeout_prompt)):
                    if value is not None:
                        need_prompts(where, _line(spec, key), (str(value),))
                node = Menu(
                    id=nid, prompts=node_prompts, choices=choices,
                    timeout=float(self.int_field(spec, "timeout", where, 5, 1, 60)),
                    retries=self.int_field(spec, "retries", where, 2, 0, 9),
                    invalid_prompt=str(invalid_prompt) if invalid_prompt is not None else None,
                    timeout_prompt=str(timeout_prompt) if timeout_prompt is not None else None,
                    on_exhausted=on_exhausted,
                )
            elif kind == "play":
                nxt = self.text_field(spec, "next", where)
                targets.append((where, _line(spec, "next"), nxt))
                node = Play(nid, node_prompts, nxt)
            elif kind == "queue":
                queue = self.text_field(spec, "queue", where)
                if queue and queue not in queues:
                    self.error(where, _line(spec, "queue"), f"queue {queue!r} is not defined")
                node = QueueRoute(nid, queue, node_prompts)
            elif kind == "hangup":
                node = Hangup(nid, node_prompts)
            else:
                self.error(where, _line(spec, "type"), "type must be one of menu, play, queue, hangup")
                continue
            nodes[nid] = node
        for where, line, target in targets:
            if target and target not in nodes:
                self.error(where, line, f"goes to node {target!r}, which does not exist")
        if start and start not in nodes:
            self.error("ivr.start", _line(raw, "start"), f"start node {start!r} does not exist")
        return Flow(start=start, nodes=nodes)


def _line(raw: Any, key: str) -> int | None:
    if isinstance(raw, _Lines):
        return raw.key_lines.get(key, raw.line)
    return None
