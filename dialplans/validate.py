"""Validate an edited hotline definition before anything derived from it is applied.

Three layers, each reported with the YAML line the admin wrote:

1. YAML and schema (duplicate keys are found on the composed YAML tree first, so a
   digit given twice in a menu names the menu and both lines; then
   `definition.load_definition` checks the schema and the cross references);
2. graph checks over the IVR (`ivr.model.successors`): unreachable nodes, dead ends,
   loops with no exit, menus whose last retry leads nowhere; missing sound files;
   queues with no members;
3. compilation (`compiler.compile_hotline`): a value that cannot be written safely
   is an error here, not a broken line in Asterisk.

Loading the compiled result into a throwaway Asterisk is the composition layer's
job (`hotline.dialplan_check`), because `dialplans` may not import the sandbox.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dialplans.compiler import AsteriskSettings, CompiledHotline, compile_hotline
from dialplans.definition import HotlineDefinition, InvalidDefinition, load_definition
from dialplans.escaping import UnsafeValue
from ivr.model import TERMINAL, Menu, Node, successors

Compile = Callable[[HotlineDefinition, AsteriskSettings], CompiledHotline]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, located in the definition; `check` names the rule that found it."""

    check: str
    where: str
    line: int | None
    message: str

    def __str__(self) -> str:
        at = f"line {self.line}: " if self.line else ""
        return f"{at}{self.where}: {self.message} [{self.check}]"

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "where": self.where, "line": self.line, "message": self.message}


@dataclass
class ValidationReport:
    """Everything validate found; `definition` is set when the schema passed."""

    errors: list[Finding] = field(default_factory=list)
    definition: HotlineDefinition | None = None
    compiled: CompiledHotline | None = None
    sandbox: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors and self.definition is not None

    def text(self) -> str:
        if self.ok:
            return "valid"
        return "invalid hotline definition:\n" + "\n".join(f"  {e}" for e in self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": [e.to_dict() for e in self.errors], "sandbox": self.sandbox}


class DefinitionRejected(ValueError):
    """Validation failed; nothing was applied. `report` lists every finding."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(report.text())


# Node types after which the dialplan (not the IVR) owns the call: a flow must reach one.
def is_terminal(node: Node) -> bool:
    """A node after which the dialplan owns the call (queue, voicemail, transfer, hangup)."""
    return isinstance(node, TERMINAL)


def validate_text(
    text: str,
    *,
    prompts_dir: Path | None = None,
    settings: AsteriskSettings | None = None,
    compile_fn: Compile = compile_hotline,
) -> ValidationReport:
    """Schema, graph and compile checks for a definition's text (no Asterisk needed)."""
    report = ValidationReport()
    lines = YamlLines.parse(text)
    if lines is None:
        # Not even YAML: let the loader produce its positioned message.
        try:
            load_definition(text)
        except InvalidDefinition as exc:
            report.errors += [Finding("schema", e.where, e.line, e.message) for e in exc.errors]
        return report
    report.errors += lines.duplicates
    try:
        defn = load_definition(text)
    except InvalidDefinition as exc:
        dup_lines = {d.line for d in lines.duplicates}
        report.errors += [Finding("schema", e.where, e.line, e.message) for e in exc.errors
                          if not (e.where == "yaml" and e.line in dup_lines)]
        return report
    if lines.duplicates:
        return report
    report.errors += graph_findings(defn, lines)
    report.errors += sound_findings(defn, lines, prompts_dir)
    report.errors += queue_findings(defn, lines)
    if not report.errors:
        report.definition = defn
        try:
            report.compiled = compile_fn(defn, settings or placeholder_settings(defn))
        except (UnsafeValue, ValueError, KeyError) as exc:
            report.errors.append(Finding("compile", "compiler", None, f"cannot compile: {exc}"))
            report.definition = None
    return report


def placeholder_settings(defn: HotlineDefinition) -> AsteriskSettings:
    """Settings good enough to compile for checking (no real secrets involved)."""
    return AsteriskSettings(ami_secret="validate", agent_passwords=dict.fromkeys(defn.agents, "validate"))


# -- YAML positions ------------------------------------------------------------------------
class YamlLines:
    """Lines of every mapping key in the composed YAML tree, by key path."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        self.duplicates: list[Finding] = []

    @classmethod
    def parse(cls, text: str) -> YamlLines | None:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return None
        out = cls()
        if root is not None:
            out._walk(root, ())
        return out

    def _walk(self, node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    self._duplicate(path, key, seen[key], line)
                else:
                    seen[key] = line
                    self.lines[(*path, key)] = line
                self._walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, str(i)))

    def _duplicate(self, path: tuple[str, ...], key: str, first: int, again: int) -> None:
        where = ".".join(path) or "(top level)"
        if path and path[-1] == "choices":
            message = f"digit {key!r} is given twice (lines {first} and {again}); a caller's key must lead one way"
            self.duplicates.append(Finding("duplicate-digit", where, again, message))
        else:
            message = f"key {key!r} is given twice (lines {first} and {again}); YAML would silently keep one"
            self.duplicates.append(Finding("duplicate-key", where, again, message))

    def line(self, *path: str) -> int | None:
        """The line of the deepest existing key along `path`."""
        for n in range(len(path), 0, -1):
            if (found := self.lines.get(tuple(path[:n]))) is not None:
                return found
        return None


# -- graph checks --------------------------------------------------------------------------
def graph_findings(defn: HotlineDefinition, lines: YamlLines) -> list[Finding]:
    """Unreachable nodes, dead ends, loops with no exit, menus that end nowhere."""
    nodes = defn.flow.nodes
    edges = {nid: tuple(t for t in successors(node) if t in nodes) for nid, node in nodes.items()}
    findings: list[Finding] = []

    def node_line(nid: str, *key: str) -> int | None:
        return lines.line("ivr", "nodes", nid, *key)

    reachable = _reach(defn.flow.start, edges)
    for nid in nodes:
        if nid not in reachable:
            findings.append(Finding("unreachable", f"ivr.nodes.{nid}", node_line(nid),
                                    f"node {nid!r} cannot be reached from the start node {defn.flow.start!r}"))

    for nid, node in nodes.items():
        if isinstance(node, Menu) and not node.on_exhausted:
            findings.append(Finding("dead-end", f"ivr.nodes.{nid}", node_line(nid, "on_exhausted"),
                                    f"menu {nid!r}: after the last retry the caller goes nowhere "
                                    "(set on_exhausted, e.g. the operator)"))
        elif not is_terminal(node) and not edges[nid]:
            findings.append(Finding("dead-end", f"ivr.nodes.{nid}", node_line(nid),
                                    f"node {nid!r} is a dead end: it neither routes the call nor goes on "
                                    "to another node"))

    # Nodes from which some terminal node can be reached (reverse search from terminals).
    reverse: dict[str, list[str]] = {nid: [] for nid in nodes}
    for nid, targets in edges.items():
        for t in targets:
            reverse[t].append(nid)
    can_finish = _reach_all((nid for nid, n in nodes.items() if is_terminal(n)), reverse)
    trapped = {nid for nid in reachable if nid not in can_finish and edges[nid]}
    reported: set[str] = set()
    for nid in nodes:  # definition order: the first node of each loop names it
        if nid not in trapped or nid in reported:
            continue
        cycle = _cycle_from(nid, edges, trapped)
        if cycle is None:
            continue
        reported.update(cycle)
        loop = " -> ".join([*cycle, cycle[0]])
        findings.append(Finding("loop-no-exit", f"ivr.nodes.{cycle[0]}", node_line(cycle[0]),
                                f"loop with no exit: {loop}; a caller would go round forever"))
    return findings


def _reach(start: str, edges: Mapping[str, Iterable[str]]) -> set[str]:
    return _reach_all([start] if start in edges else [], edges)


def _reach_all(starts: Iterable[str], edges: Mapping[str, Iterable[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        nid = todo.pop()
        if nid in seen:
            continue
        seen.add(nid)
        todo.extend(t for t in edges.get(nid, ()) if t not in seen)
    return seen


def _cycle_from(start: str, edges: Mapping[str, tuple[str, ...]], within: set[str]) -> list[str] | None:
    """A cycle through nodes of `within` reachable from `start` (depth-first), as a node list."""
    path: list[str] = []
    on_path: dict[str, int] = {}
    done: set[str] = set()

    def visit(nid: str) -> list[str] | None:
        on_path[nid] = len(path)
        path.append(nid)
        for t in edges[nid]:
            if t not in within or t in done:
                continue
            if t in on_path:
                return path[on_path[t]:]
            if (found := visit(t)) is not None:
                return found
        path.pop()
        del on_path[nid]
        done.add(nid)
        return None

    return visit(start)


# -- sounds and queues ---------------------------------------------------------------------
def sound_findings(defn: HotlineDefinition, lines: YamlLines, prompts_dir: Path | None) -> list[Finding]:
    """Every recorded prompt file exists in the prompts folder; text prompts need espeak-ng and sox."""
    findings: list[Finding] = []
    base = (prompts_dir or Path(".")).resolve()
    needs_tts = False
    for pid, prompt in defn.prompts.items():
        if prompt.file is None:
            needs_tts = True
            continue
        source = (base / prompt.file).resolve()
        if not source.is_relative_to(base):
            findings.append(Finding("missing-sound", f"prompts.{pid}", lines.line("prompts", pid, "file"),
                                    f"sound file {prompt.file!r} is outside the prompts folder {base}"))
        elif not source.is_file():
            findings.append(Finding("missing-sound", f"prompts.{pid}", lines.line("prompts", pid, "file"),
                                    f"sound file {prompt.file!r} does not exist in the prompts folder {base}"))
    if needs_tts:
        for tool in ("espeak-ng", "sox"):
            if shutil.which(tool) is None:
                findings.append(Finding("missing-sound", "prompts", lines.line("prompts"),
                                        f"text prompts need {tool}, which is not installed"))
    return findings


def queue_findings(defn: HotlineDefinition, lines: YamlLines) -> list[Finding]:
    """A queue with no members holds callers until max_wait with nobody to answer."""
    return [
        Finding("queue-no-members", f"queues.{qid}", lines.line("queues", qid, "members"),
                f"queue {qid!r} has no members: callers routed there would wait {q.max_wait}s for nobody")
        for qid, q in defn.queues.items() if not q.members
    ]
