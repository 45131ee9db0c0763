"""Publish, roll back and draft-test hotline edits without ever half-applying one.

publish(text):
  1. validate: schema + graph + compile (`dialplans.validate`), then boot the compiled
     config in a throwaway sandbox Asterisk and compare what loaded with what was
     written (`hotline.dialplan_check`). Any finding: the version is stored as
     `rejected` and nothing live is touched.
  2. render the version's prompts into its own sounds folder (the live one is untouched);
  3. write every config file into a new generation directory, fsync, and swap the
     live link with one rename (`dialplans.configdir`);
  4. AMI `Reload`, then check that Asterisk has loaded exactly the new files;
  5. swap the service's flow (calls in progress keep theirs);
  6. smoke calls along the changed menu paths (`hotline.smoke`): the route each one
     reaches must be the planned one, proven by the AMI QueueCallerJoin;
  7. success: the version becomes `live`. Any failure in 3-6: the link is swapped
     back, Asterisk reloaded and re-checked, the flow restored, the version stored as
     `failed` with the step and message; the live files are then the previous
     generation, byte for byte (checked by hashing every file before and after).

Draft mode: `publish(text, draft=True, test_callers=[...])` compiles the live
definition plus the draft's new queues and agents into the config (so the draft's
routes exist in Asterisk while live callers see no change), and the service runs the
draft's flow only for calls whose caller ID is a test-caller number. `promote()`
publishes the draft to everyone through the normal path.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cti import channel_vars as cv
from cti.ami.client import AMIError
from dialplans import configdir
from dialplans.compiler import HOTLINE_CONTEXT, AsteriskSettings, CompiledHotline, compile_hotline
from dialplans.definition import HotlineDefinition
from dialplans.prompts import render_prompts
from dialplans.validate import DefinitionRejected, Finding, ValidationReport, validate_text
from hotline import dialplan_versions as dv
from hotline.dialplan_check import check_in_sandbox, loaded_problems
from hotline.sandbox import Sandbox
from hotline.service import HotlineService
from hotline.smoke import NO_AGENT_PENALTY, SMOKE_VAR, SmokeRun
from ivr.model import TERMINAL, Flow, Hangup, Menu, Node, QueueRoute, prompts_of, successors

log = logging.getLogger(__name__)

Compile = Callable[[HotlineDefinition, AsteriskSettings], CompiledHotline]
#: Caller ID of live smoke calls: no test caller (the live flow answers) and no customer.
SMOKE_CALLER = "hotline-smoke"


class PublishFailed(RuntimeError):
    """The edit was applied, a check failed, and the previous version was restored."""

    def __init__(self, step: str, message: str, version: int) -> None:
        self.step = step
        self.version = version
        super().__init__(f"publish of version {version} failed at {step}: {message}; "
                         "the previous version was restored")


class _StepFailed(Exception):
    def __init__(self, step: str, message: str) -> None:
        self.step = step
        self.message = message
        super().__init__(message)


class NothingToDo(ValueError):
    """Rollback or promote with no version to go to."""


@dataclass(frozen=True, slots=True)
class LiveTarget:
    """Where the running Asterisk reads its config and sounds, as the host and Asterisk see them."""

    config_link: Path
    sounds_host: Path
    sounds_asterisk: str
    settings_for: Callable[[HotlineDefinition], AsteriskSettings]
    #: Rewritten after each successful publish so a restart starts from the live version.
    definition_file: Path | None = None


@dataclass(frozen=True, slots=True)
class SandboxCheck:
    """Throwaway-sandbox settings for validation (None on the publisher: skip that step)."""

    root: Path
    port_offset: int
    state_dir: Path


@dataclass(frozen=True, slots=True)
class SmokePath:
    digits: tuple[str, ...]
    nodes: tuple[str, ...]
    #: The terminal node the digits alone lead to; None when a branch (hours, rules) decides.
    expect: str | None


@dataclass
class _Applied:
    defn: HotlineDefinition
    text: str
    sounds: str  # as Asterisk sees them
    flow: Flow


@dataclass
class PublishResult:
    version: dv.VersionView
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version.to_dict(), "steps": self.steps}


class DialplanPublisher:
    """The one path by which a hotline edit reaches Asterisk and the running service."""

    def __init__(
        self,
        service: HotlineService,
        target: LiveTarget,
        store: dv.VersionStore,
        *,
        live_text: str,
        live_defn: HotlineDefinition,
        live_sounds: str,
        check: SandboxCheck | None,
        prompts_dir: Path | None = None,
        cache_dir: Path | None = None,
        compile_fn: Compile = compile_hotline,
        smoke_limit: int = 3,
        smoke_timeout: float = 40.0,
    ) -> None:
        self.service = service
        self.target = target
        self.store = store
        self.check = check
        self.prompts_dir = prompts_dir
        self.cache_dir = cache_dir
        self.compile_fn = compile_fn
        self.smoke_limit = smoke_limit
        self.smoke_timeout = smoke_timeout
        self.live = _Applied(live_defn, live_text, live_sounds, service.flow)
        # Sounds folder per definition text: republishing a text (rollback) reuses its folder,
        # so its compiled files are byte for byte the ones that ran before.
        self._sounds: dict[str, str] = {dv.sha256(live_text): live_sounds}
        self.draft: _Applied | None = None
        self._lock = asyncio.Lock()
        self._check_lock = asyncio.Lock()
        self._adopted = False
        service.smoke.press_key = self._press_key

    # -- read-only operations -------------------------------------------------------------
    async def validate(self, text: str, *, sandbox: bool = True) -> ValidationReport:
        """Schema, graph and compile checks; then (if configured) the throwaway Asterisk."""
        report = await asyncio.to_thread(validate_text, text, prompts_dir=self.prompts_dir,
                                         compile_fn=self.compile_fn)
        if report.ok and sandbox and self.check is not None:
            assert report.definition is not None
            await self._sandbox_check(report, report.definition)
        return report

    async def _sandbox_check(self, report: ValidationReport, defn: HotlineDefinition) -> None:
        assert self.check is not None
        async with self._check_lock:  # one throwaway instance (one set of ports) at a time
            findings, info = await self._check_in_sandbox(defn)
        report.errors += findings
        report.sandbox = info

    async def _check_in_sandbox(self, defn: HotlineDefinition) -> tuple[list[Finding], dict[str, Any]]:
        assert self.check is not None
        return await check_in_sandbox(
            defn, root=self.check.root, port_offset=self.check.port_offset, state_dir=self.check.state_dir,
            cache_dir=self.cache_dir, prompts_dir=self.prompts_dir, compile_fn=self.compile_fn)

    def diff(self, text: str) -> str:
        return dv.unified_diff(self.live.text, text, "live", "edit")

    def history(self, limit: int = 50) -> list[dv.VersionView]:
        return self.store.history(limit)

    # -- publishing ---------------------------------------------------------------------
    async def publish(self, text: str, *, author: str, reason: str, draft: bool = False,
                      test_callers: tuple[str, ...] = (), kind: str | None = None) -> PublishResult:
        """Validate, apply, reload, smoke-test; roll back on any failure (see module doc)."""
        kind = kind or ("draft" if draft else "publish")
        if draft and not test_callers:
            raise ValueError("a draft needs at least one test-caller number")
        async with self._lock:
            await asyncio.to_thread(self.ensure_adopted)
            base = await asyncio.to_thread(self.store.live)
            base_id = base.id if base else None
            diff = dv.unified_diff(self.live.text, text, f"v{base_id}", "edit")
            report = await asyncio.to_thread(validate_text, text, prompts_dir=self.prompts_dir,
                                             compile_fn=self.compile_fn)
            new_defn = report.definition
            config_defn = new_defn
            if report.ok and new_defn is not None and draft:
                config_defn = with_draft_additions(self.live.defn, new_defn)
            if report.ok and config_defn is not None and self.check is not None:
                checked = time.monotonic()
                await self._sandbox_check(report, config_defn)
                report.sandbox["seconds"] = round(time.monotonic() - checked, 3)
            if not report.ok or new_defn is None or config_defn is None:
                await asyncio.to_thread(
                    self.store.add, author=author, reason=reason, kind=kind, status=dv.REJECTED, definition=text,
                    diff=diff, base_version=base_id, test_callers=test_callers,
                    error=[e.to_dict() for e in report.errors])
                raise DefinitionRejected(report)
            version = await asyncio.to_thread(
                self.store.add, author=author, reason=reason, kind=kind, status="applying", definition=text,
                diff=diff, base_version=base_id, test_callers=test_callers)
            steps: list[dict[str, Any]] = [{"step": "validate", "ok": True, "sandbox": report.sandbox}]
            try:
                if draft:
                    await self._apply_draft(version.id, text, new_defn, config_defn, test_callers, steps)
                else:
                    await self._apply_live(version.id, text, new_defn, steps)
            except PublishFailed as exc:
                await asyncio.to_thread(self.store.set_status, version.id, dv.FAILED,
                                        error={"step": exc.step, "message": str(exc)}, log=steps)
                raise
            except Exception as exc:  # before anything live changed (rendering prompts, writing files)
                await asyncio.to_thread(self.store.set_status, version.id, dv.FAILED,
                                        error={"step": "prepare", "message": str(exc)}, log=steps)
                raise PublishFailed("prepare", f"{type(exc).__name__}: {exc}", version.id) from exc
            if draft:
                await asyncio.to_thread(self.store.retire_drafts)
                await asyncio.to_thread(self.store.set_status, version.id, dv.DRAFT, log=steps)
            else:
                await asyncio.to_thread(self.store.retire_drafts)
                await asyncio.to_thread(self.store.make_live, version.id)
                await asyncio.to_thread(self.store.set_status, version.id, dv.LIVE, log=steps)
            final = await asyncio.to_thread(self.store.get, version.id)
            assert final is not None
            return PublishResult(final, steps)

    async def rollback(self, *, author: str, reason: str = "", to_version: int | None = None) -> PublishResult:
        """Republish an earlier version (default: the one live before the current one)."""
        await asyncio.to_thread(self.ensure_adopted)
        if to_version is None:
            live = await asyncio.to_thread(self.store.live)
            target = None if live is None else await asyncio.to_thread(self.store.previous_live, live.id)
        else:
            target = await asyncio.to_thread(self.store.get, to_version)
        if target is None:
            raise NothingToDo("no earlier version to roll back to" if to_version is None
                              else f"no version {to_version}")
        return await self.publish(target.definition, author=author, kind="rollback",
                                  reason=reason or f"rollback to version {target.id}")

    async def promote(self, *, author: str, reason: str = "") -> PublishResult:
        """The published draft goes live for everyone (through the normal publish path)."""
        draft = await asyncio.to_thread(self.store.draft)
        if draft is None or self.draft is None:
            raise NothingToDo("no draft is published")
        return await self.publish(draft.definition, author=author, kind="promote",
                                  reason=reason or f"promote draft version {draft.id}")

    async def discard_draft(self) -> None:
        async with self._lock:
            self.service.set_draft(None)
            self.draft = None
            await asyncio.to_thread(self.store.retire_drafts)

    # -- applying -----------------------------------------------------------------------
    def ensure_adopted(self) -> None:
        """The definition the service started with becomes a version if the store lacks it."""
        if self._adopted:
            return
        live = self.store.live()
        if live is None or live.sha256 != dv.sha256(self.live.text):
            row = self.store.add(author="system", reason="running definition adopted", kind="adopt",
                                 status="applying", definition=self.live.text, diff="",
                                 base_version=live.id if live else None)
            self.store.make_live(row.id)
        # A draft does not survive a restart of the service that ran it.
        self.store.retire_drafts()
        self._adopted = True

    def _sounds_for(self, text: str) -> tuple[Path, str]:
        """(host path, Asterisk path) of the sounds folder for a definition text."""
        sha = dv.sha256(text)
        inside = self._sounds.setdefault(sha, f"{self.target.sounds_asterisk}/v-{sha[:16]}")
        relative = inside.removeprefix(self.target.sounds_asterisk).lstrip("/")
        return self.target.sounds_host / relative, inside

    def _compile(self, defn: HotlineDefinition, sounds: str) -> CompiledHotline:
        return self.compile_fn(defn, replace(self.target.settings_for(defn), sounds_dir=sounds))

    async def _apply_live(self, version: int, text: str, defn: HotlineDefinition,
                          steps: list[dict[str, Any]]) -> None:
        sounds_host, sounds = self._sounds_for(text)
        compiled = await asyncio.to_thread(self._compile, defn, sounds)
        await asyncio.to_thread(render_prompts, defn, sounds_host, prompts_src=self.prompts_dir,
                                cache_dir=self.cache_dir)
        steps.append({"step": "render-prompts", "ok": True, "sounds": sounds})
        old_flow = self.service.flow
        old_draft = self.service.draft_runner.flow if self.service.draft_runner else None
        old_callers = self.service.draft_callers

        def switch() -> None:
            self.service.swap_flow(compiled.flow)
            self.service.set_draft(None)

        def restore() -> None:
            self.service.swap_flow(old_flow)
            self.service.set_draft(old_draft, old_callers)

        paths = plan_smoke(old_flow, compiled.flow, self.live.defn, defn, limit=self.smoke_limit)
        await self._apply(version, compiled, switch, restore, paths, compiled.flow, SMOKE_CALLER,
                          steps)
        self.live = _Applied(defn, text, sounds, compiled.flow)
        self.draft = None
        if self.target.definition_file is not None:
            await asyncio.to_thread(_write_atomically, self.target.definition_file, text)

    async def _apply_draft(self, version: int, text: str, defn: HotlineDefinition, config_defn: HotlineDefinition,
                           callers: tuple[str, ...], steps: list[dict[str, Any]]) -> None:
        sounds_host, sounds = self._sounds_for(text)
        # Asterisk runs the live definition plus the draft's additions, with the live sounds.
        compiled = await asyncio.to_thread(self._compile, config_defn, self.live.sounds)
        draft_flow = (await asyncio.to_thread(self._compile, defn, sounds)).flow
        await asyncio.to_thread(render_prompts, defn, sounds_host, prompts_src=self.prompts_dir,
                                cache_dir=self.cache_dir)
        steps.append({"step": "render-prompts", "ok": True, "sounds": sounds})
        old_draft = self.service.draft_runner.flow if self.service.draft_runner else None
        old_callers = self.service.draft_callers

        def switch() -> None:
            self.service.set_draft(draft_flow, frozenset(callers))

        def restore() -> None:
            self.service.set_draft(old_draft, old_callers)

        paths = plan_smoke(self.service.flow, draft_flow, self.live.defn, defn, limit=self.smoke_limit)
        await self._apply(version, compiled, switch, restore, paths, draft_flow, callers[0], steps)
        self.draft = _Applied(defn, text, sounds, draft_flow)

    async def _apply(self, version: int, compiled: CompiledHotline, switch: Callable[[], None],
                     restore: Callable[[], None], paths: list[SmokePath], flow: Flow, caller: str,
                     steps: list[dict[str, Any]]) -> None:
        link = self.target.config_link
        before = await asyncio.to_thread(configdir.fingerprint, link)
        previous = configdir.current_generation(link)
        if previous is None:
            raise PublishFailed("write", f"{link} is not a generation link (install the config with "
                                "dialplans.configdir first)", version)
        old_files = {p.name: p.read_text(encoding="utf-8") for p in previous.iterdir() if p.is_file()}
        generation = await asyncio.to_thread(configdir.write_generation, link, compiled.files)
        configdir.activate(link, generation)
        steps.append({"step": "write", "ok": True, "generation": generation.name})
        switched = False
        try:
            await self._reload_and_verify(compiled.files, steps, "reload")
            switch()
            switched = True
            steps.append({"step": "switch-flow", "ok": True})
            await self._smoke(paths, flow, caller, steps)
        except BaseException as exc:
            # Whatever went wrong (a check, a bug, a cancellation): the previous version first.
            configdir.activate(link, previous)
            if switched:
                restore()
            try:
                await asyncio.shield(self._reload_and_verify(old_files, steps, "restore-reload"))
            except _StepFailed as again:
                log.error("restoring the previous dialplan did not verify: %s", again)
            after = configdir.fingerprint(link)
            steps.append({"step": "restored", "ok": after == before, "files": len(after)})
            shutil.rmtree(generation, ignore_errors=True)
            if isinstance(exc, _StepFailed):
                raise PublishFailed(exc.step, exc.message, version) from exc
            if isinstance(exc, Exception):
                raise PublishFailed("internal", f"{type(exc).__name__}: {exc}", version) from exc
            raise
        configdir.prune(link)

    async def _reload_and_verify(self, files: Mapping[str, str], steps: list[dict[str, Any]], step: str) -> None:
        ami = self.service.ami
        started = time.monotonic()
        try:
            response = await ami.send_action("Reload", timeout=60)
            problems = await loaded_problems(ami, files)
        except (AMIError, OSError) as exc:
            steps.append({"step": step, "ok": False, "message": str(exc)})
            raise _StepFailed(step, f"AMI reload failed: {exc}") from exc
        steps.append({"step": step, "ok": not problems, "message": response.message, "problems": problems,
                      "seconds": round(time.monotonic() - started, 3)})
        if problems:
            raise _StepFailed(step, "Asterisk did not load the new config: " + "; ".join(problems[:5]))

    # -- smoke calls ---------------------------------------------------------------------
    async def _press_key(self, channel: str, key: str) -> None:
        # PlayDTMF on the ;1 half of the Local channel: the key arrives on the ;2 half
        # (running the hotline dialplan and our AGI) exactly like a caller's key.
        other = channel[:-2] + ";1" if channel.endswith(";2") else channel
        await self.service.ami.send_action("PlayDTMF", {"Channel": other, "Digit": key, "Duration": "200"})

    async def _smoke(self, paths: list[SmokePath], flow: Flow, caller: str, steps: list[dict[str, Any]]) -> None:
        results = await asyncio.gather(*(self._smoke_one(p, flow, caller) for p in paths))
        for path, (ok, detail) in zip(paths, results, strict=True):
            steps.append({"step": "smoke", "ok": ok, "digits": "".join(path.digits), "path": list(path.nodes),
                          "expect": path.expect, **detail})
        failed = [d for ok, d in results if not ok]
        if failed:
            raise _StepFailed("smoke", "smoke call failed: " + "; ".join(str(d.get("message")) for d in failed))

    async def _smoke_one(self, path: SmokePath, flow: Flow, caller: str) -> tuple[bool, dict[str, Any]]:
        ami = self.service.ami
        token = secrets.token_hex(8)
        linkedid = f"smoke-{token}"
        run = self.service.smoke.expect(token, path.digits)
        events = ami.subscribe()
        detail: dict[str, Any] = {"linkedid": linkedid}
        started = time.monotonic()
        try:
            await ami.send_action("Originate", {
                "Channel": f"Local/s@{HOTLINE_CONTEXT}", "Application": "Wait", "Data": "120",
                "CallerID": f'"hotline smoke" <{caller}>', "Async": "true", "Timeout": "15000",
                "ChannelId": linkedid, "OtherChannelId": f"{linkedid}-2",
                "Variable": [f"__{SMOKE_VAR}={token}", f"__QUEUE_MIN_PENALTY={NO_AGENT_PENALTY}"],
            })
            ok, message = await asyncio.wait_for(self._await_route(run, path, flow, events, linkedid, detail),
                                                 self.smoke_timeout)
        except TimeoutError:
            ok, message = False, (f"no route within {self.smoke_timeout}s (keys pressed: {''.join(run.pressed)}, "
                                  f"IVR decision: {run.variables or 'none'})")
        except AMIError as exc:
            ok, message = False, f"AMI: {exc}"
        finally:
            events.close()
            self.service.smoke.forget(token)
            with contextlib.suppress(AMIError):
                await ami.send_action("Hangup", {"Channel": f"/^Local\\/s@{HOTLINE_CONTEXT}-.*/"}
                                      if not run.channel else {"Channel": run.channel})
        detail.update(message=message, variables=dict(run.variables), pressed="".join(run.pressed),
                      seconds=round(time.monotonic() - started, 3))
        return ok, detail

    async def _await_route(self, run: SmokeRun, path: SmokePath, flow: Flow, events: Any, linkedid: str,
                           detail: dict[str, Any]) -> tuple[bool, str]:
        await run.decided.wait()
        if run.flow is not flow:
            return False, "the smoke call was not answered by the new flow"
        action = run.variables.get(cv.ACTION, "")
        target = run.variables.get(cv.TARGET, "")
        detail.update(action=action, target=target)
        if run.variables.get(cv.ROUTE_REASON) == "failsafe":
            return False, "the IVR sent the smoke call to the failsafe"
        node = flow.nodes.get(path.expect or "")
        if node is not None:
            want = _expected_action(node)
            if want is not None and (action, target) != want and not getattr(node, "rules", ()):
                keys = "".join(path.digits)
                return False, f"expected route {want[0]} {want[1]} for keys {keys}, got {action} {target}"
        if action != "queue":
            return True, f"IVR decided {action} {target}"
        async for event in events:
            raw = event.raw
            if raw.name == "QueueCallerJoin" and raw.get("Linkedid") == linkedid:
                queue = raw.get("Queue") or ""
                detail["queue_joined"] = queue
                if queue != target:
                    return False, f"the dialplan put the call in queue {queue}, the IVR chose {target}"
                return True, f"joined queue {queue} (QueueCallerJoin)"
            if raw.name == "Hangup" and raw.get("Linkedid") == linkedid:
                return False, f"the call ended before joining queue {target}"
        return False, "AMI event stream closed"


def _expected_action(node: Node) -> tuple[str, str] | None:
    if isinstance(node, QueueRoute):
        return ("queue", node.queue)
    if isinstance(node, Hangup):
        return ("hangup", "normal")
    return None


def with_draft_additions(live: HotlineDefinition, draft: HotlineDefinition) -> HotlineDefinition:
    """The live definition plus the draft's new queues and agents (live entries win on a clash)."""
    return replace(live, queues={**draft.queues, **live.queues}, agents={**draft.agents, **live.agents})


# -- smoke planning ----------------------------------------------------------------------------
def changed_nodes(old_flow: Flow | None, new_flow: Flow, old: HotlineDefinition | None,
                  new: HotlineDefinition) -> list[str]:
    """Nodes that are new or differ, or whose queue or prompts changed."""
    out: list[str] = []
    for nid, node in new_flow.nodes.items():
        before = None if old_flow is None else old_flow.nodes.get(nid)
        changed = before != node
        if not changed and old is not None:
            queue = getattr(node, "queue", None)
            if queue is not None and old.queues.get(queue) != new.queues.get(queue):
                changed = True
            if any(old.prompts.get(p) != new.prompts.get(p) for p in prompts_of(node)):
                changed = True
        if changed:
            out.append(nid)
    return out


def _edges(node: Node) -> list[tuple[str | None, str, bool]]:
    """(key pressed or None, target, decided by the caller's keys alone)."""
    if isinstance(node, Menu):
        return [(digit, target, True) for digit, target in node.choices.items()]
    targets = successors(node)
    if isinstance(node, TERMINAL):
        return []
    if len(targets) == 1:
        return [(None, targets[0], True)]
    if hasattr(node, "variable"):  # collect digits: a smoke call cannot type a number
        return []
    return [(None, t, False) for t in targets]


def _shortest(flow: Flow, start: str, goal: Callable[[str], bool]) -> list[tuple[str, str | None, bool]] | None:
    """Fewest keys (then fewest undecided branches) from `start` to a node satisfying `goal`.

    Returns [(node, key pressed there or None, decided)], the goal node last.
    """
    heap: list[tuple[int, int, int, str]] = [(0, 0, 0, start)]
    prev: dict[str, tuple[str, str | None, bool]] = {}
    best: dict[str, tuple[int, int]] = {start: (0, 0)}
    counter = 0
    while heap:
        keys, undecided, _, nid = heapq.heappop(heap)
        if (keys, undecided) != best.get(nid):
            continue
        if goal(nid):
            out: list[tuple[str, str | None, bool]] = [(nid, None, True)]
            while nid in prev:
                parent, key, decided = prev[nid]
                out.insert(0, (parent, key, decided))
                nid = parent
            return out
        node = flow.nodes.get(nid)
        if node is None:
            continue
        for key, target, decided in _edges(node):
            if target not in flow.nodes:
                continue
            cost = (keys + (key is not None), undecided + (not decided))
            if cost < best.get(target, (1 << 30, 0)):
                best[target] = cost
                prev[target] = (nid, key, decided)
                counter += 1
                heapq.heappush(heap, (cost[0], cost[1], counter, target))
    return None


def _path(flow: Flow, steps: list[tuple[str, str | None, bool]]) -> SmokePath:
    digits = tuple(k for _, k, _ in steps if k is not None)
    nodes = tuple(n for n, _, _ in steps)
    decided = all(d for _, _, d in steps)
    last = nodes[-1]
    terminal = isinstance(flow.nodes[last], TERMINAL)
    return SmokePath(digits, nodes, last if decided and terminal else None)


def plan_smoke(old_flow: Flow | None, new_flow: Flow, old: HotlineDefinition | None, new: HotlineDefinition,
               *, limit: int = 3) -> list[SmokePath]:
    """Smoke calls through the changed nodes: to each changed node, then on to a route.

    For a changed menu, the new or re-targeted choices are walked. With nothing
    changed in the flow, one call walks the shortest keyed path to a route.
    """
    def is_terminal(nid: str) -> bool:
        return isinstance(new_flow.nodes.get(nid), TERMINAL)

    plans: list[SmokePath] = []
    seen: set[tuple[str, ...]] = set()

    def add(steps: list[tuple[str, str | None, bool]] | None) -> None:
        if steps is None or len(plans) >= limit:
            return
        path = _path(new_flow, steps)
        if path.digits not in seen:
            seen.add(path.digits)
            plans.append(path)

    for nid in changed_nodes(old_flow, new_flow, old, new):
        prefix = _shortest(new_flow, new_flow.start, lambda n, nid=nid: n == nid)  # type: ignore[misc]
        if prefix is None:
            continue
        node = new_flow.nodes[nid]
        if isinstance(node, Menu):
            before = old_flow.nodes.get(nid) if old_flow else None
            old_choices = dict(before.choices) if isinstance(before, Menu) else {}
            picks = [d for d, t in node.choices.items() if old_choices.get(d) != t] or list(node.choices)[:1]
            for digit in picks:
                rest = _shortest(new_flow, node.choices[digit], is_terminal)
                if rest is not None:
                    add([*prefix[:-1], (nid, digit, True), *rest])
        else:
            rest = _shortest(new_flow, nid, is_terminal)
            if rest is not None:
                add([*prefix[:-1], *rest])
    if not plans:
        add(_shortest(new_flow, new_flow.start, is_terminal))
    return plans


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)





def publisher_for_sandbox(
    service: HotlineService,
    sandbox: Sandbox,
    *,
    live_text: str,
    live_defn: HotlineDefinition,
    check_port_offset: int | None = None,
    cache_dir: Path | None = None,
    prompts_dir: Path | None = None,
    definition_file: Path | None = None,
    compile_fn: Compile = compile_hotline,
) -> DialplanPublisher:
    """A publisher for a service running against a sandbox instance (hotline run, tests).

    The throwaway validation Asterisk runs at the sandbox's port offset + 1000 unless
    `check_port_offset` says otherwise.
    """
    offset = check_port_offset if check_port_offset is not None else sandbox.ports.sip - 5060 + 1000
    target = LiveTarget(config_link=sandbox.host(sandbox.etc), sounds_host=sandbox.sounds_dir,
                        sounds_asterisk=f"{sandbox.lib}/sounds", settings_for=sandbox.settings,
                        definition_file=definition_file)
    return DialplanPublisher(
        service, target, dv.VersionStore(service.sessions), live_text=live_text, live_defn=live_defn,
        live_sounds=f"{sandbox.lib}/sounds",
        check=SandboxCheck(sandbox.root, offset, service.settings.data_dir / "validate-sandbox"),
        prompts_dir=prompts_dir, cache_dir=cache_dir, compile_fn=compile_fn)


__all__ = ["DefinitionRejected", "DialplanPublisher", "Finding", "LiveTarget", "NothingToDo", "PublishFailed",
           "PublishResult", "SandboxCheck", "SmokePath", "plan_smoke", "publisher_for_sandbox",
           "with_draft_additions"]
