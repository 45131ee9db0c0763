"""Did Asterisk load exactly what we wrote? Checks for a throwaway sandbox and the live PBX.

Asterisk's config loaders are forgiving: a line pbx_config cannot parse is logged
and skipped, the rest loads, and `Reload` still answers Success. So "it loaded" is
decided by comparing what Asterisk reports over AMI with what the compiled files
say: every context, extension and priority of extensions.conf (ShowDialPlan), every
endpoint of pjsip.conf (PJSIPShowEndpoints), every queue and member of queues.conf
(QueueStatus). In the throwaway sandbox we also read its log for errors and ask it
whether every dialplan application exists.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cti.ami.client import AMIClient, AMIError
from dialplans.compiler import AsteriskSettings, CompiledHotline, compile_hotline
from dialplans.definition import HotlineDefinition
from dialplans.validate import Finding
from hotline.sandbox import Sandbox, SandboxError, SandboxPorts

Compile = Callable[[HotlineDefinition, AsteriskSettings], CompiledHotline]
_SECTION = re.compile(r"^\[([^\]]+)\](\(!?[^)]*\))?")


@dataclass
class ExpectedDialplan:
    """What extensions.conf says Asterisk should have: priorities per (context, extension)."""

    priorities: Counter[tuple[str, str]] = field(default_factory=Counter)
    lines: dict[tuple[str, str], int] = field(default_factory=dict)
    includes: set[tuple[str, str]] = field(default_factory=set)
    applications: dict[str, int] = field(default_factory=dict)


def expected_dialplan(extensions_conf: str) -> ExpectedDialplan:
    out = ExpectedDialplan()
    context: str | None = None
    last: str | None = None
    for number, raw in enumerate(extensions_conf.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if m := _SECTION.match(line):
            context, last = m.group(1), None
            continue
        if context is None or context in ("general", "globals"):
            continue
        key, sep, value = line.partition("=>")
        if not sep:
            continue
        key = key.strip()
        if key == "include":
            out.includes.add((context, value.strip()))
            continue
        if key == "exten":
            ext, _, rest = value.strip().partition(",")
            last = ext.strip()
            priority, _, app = rest.partition(",")
            if priority.strip() == "hint":
                continue
        elif key == "same" and last is not None:
            _, _, app = value.partition(",")
        else:
            continue
        out.priorities[(context, last)] += 1
        out.lines.setdefault((context, last), number)
        name = app.strip().split("(", 1)[0].strip()
        if name:
            out.applications.setdefault(name, number)
    return out


def expected_endpoints(pjsip_conf: str) -> set[str]:
    """Names of the concrete `type = endpoint` sections (a template's type is inherited)."""
    sections: list[tuple[str, bool, list[str], dict[str, str]]] = []
    for raw in pjsip_conf.splitlines():
        line = raw.strip()
        if m := _SECTION.match(line):
            parents = (m.group(2) or "").strip("()")
            template = parents.startswith("!")
            sections.append((m.group(1), template, [p for p in parents.lstrip("!").split(",") if p], {}))
        elif sections and "=" in line and not line.startswith(";"):
            key, _, value = line.partition("=")
            sections[-1][3].setdefault(key.strip(), value.strip())
    template_types = {name: opts.get("type", "") for name, template, _, opts in sections if template}
    names: set[str] = set()
    for name, template, parents, opts in sections:
        kind = opts.get("type") or next((template_types[p] for p in parents if template_types.get(p)), "")
        if not template and kind == "endpoint":
            names.add(name)
    return names


def expected_queues(queues_conf: str) -> dict[str, set[str]]:
    queues: dict[str, set[str]] = {}
    section: str | None = None
    for raw in queues_conf.splitlines():
        line = raw.strip()
        if m := _SECTION.match(line):
            section = None if m.group(1) == "general" else m.group(1)
            if section:
                queues[section] = set()
        elif section and line.startswith("member"):
            interface = line.partition("=>")[2].split(",", 1)[0].strip()
            queues[section].add(interface)
    return queues


async def loaded_problems(ami: AMIClient, files: Mapping[str, str]) -> list[str]:
    """Differences between the compiled files and what Asterisk has loaded (empty: identical)."""
    problems: list[str] = []
    want = expected_dialplan(files["extensions.conf"])
    _, events = await ami.send_list_action("ShowDialPlan", timeout=20)
    have: Counter[tuple[str, str]] = Counter()
    have_includes: set[tuple[str, str]] = set()
    for event in events:
        raw = event.raw
        if raw.get("Registrar") != "pbx_config":
            continue
        context = raw.get("Context") or ""
        if raw.get("IncludeContext"):
            have_includes.add((context, raw.get("IncludeContext") or ""))
        elif (raw.get("Priority") or "").isdigit():
            have[(context, raw.get("Extension") or "")] += 1
    for key, count in sorted(want.priorities.items()):
        got = have.get(key, 0)
        if got != count:
            problems.append(f"extensions.conf line {want.lines[key]}: [{key[0]}] {key[1]}: {count} priorities "
                            f"written, Asterisk loaded {got}")
    for key in sorted(set(have) - set(want.priorities)):
        problems.append(f"extensions.conf: [{key[0]}] {key[1]} is loaded but was not written")
    for context, included in sorted(want.includes - have_includes):
        problems.append(f"extensions.conf: [{context}] include => {included} did not load")

    endpoints = expected_endpoints(files.get("pjsip.conf", ""))
    if endpoints:
        _, events = await ami.send_list_action("PJSIPShowEndpoints", timeout=20)
        loaded = {e.raw.get("ObjectName") for e in events if e.raw.name == "EndpointList"}
        for name in sorted(endpoints - loaded):
            problems.append(f"pjsip.conf: endpoint {name} did not load")

    queues = expected_queues(files.get("queues.conf", ""))
    if queues:
        _, events = await ami.send_list_action("QueueStatus", timeout=20)
        loaded_queues: dict[str, set[str]] = {}
        for e in events:
            queue = e.raw.get("Queue") or ""
            if e.raw.name == "QueueParams":
                loaded_queues.setdefault(queue, set())
            elif e.raw.name == "QueueMember":
                member = e.raw.get("StateInterface") or e.raw.get("Location") or ""
                loaded_queues.setdefault(queue, set()).add(member)
        for queue, members in sorted(queues.items()):
            if queue not in loaded_queues:
                problems.append(f"queues.conf: queue {queue} did not load")
            elif members - loaded_queues[queue]:
                missing = ", ".join(sorted(members - loaded_queues[queue]))
                problems.append(f"queues.conf: queue {queue} is missing members {missing}")
    return problems


def _cli(sandbox: Sandbox, command: str) -> str:
    proc = subprocess.run(
        ["chroot", str(sandbox.root), "/usr/sbin/asterisk", "-C", f"{sandbox.etc}/asterisk.conf", "-rx", command],
        capture_output=True, text=True, timeout=20, check=False,
    )
    return proc.stdout + proc.stderr


def log_problems(sandbox: Sandbox) -> list[str]:
    """ERROR and WARNING lines the sandbox Asterisk logged while loading."""
    path = sandbox.log_dir / "messages.log"
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(errors="replace").splitlines()
            if " ERROR[" in line or " WARNING[" in line]


async def check_in_sandbox(
    defn: HotlineDefinition,
    *,
    root: Path,
    port_offset: int,
    state_dir: Path,
    cache_dir: Path | None = None,
    prompts_dir: Path | None = None,
    compile_fn: Compile = compile_hotline,
    timeout: float = 30.0,
) -> tuple[list[Finding], dict[str, object]]:
    """Compile `defn`, boot it in a throwaway Asterisk, and report everything that did not load."""
    instance = f"validate-{os.getpid()}-{port_offset}"
    sandbox = Sandbox(root, instance, SandboxPorts.offset(port_offset), state_dir=state_dir)
    findings: list[Finding] = []
    info: dict[str, object] = {"instance": instance, "ports": {"ami": sandbox.ports.ami, "sip": sandbox.ports.sip}}

    def fail(message: str) -> None:
        findings.append(Finding("sandbox-load", "asterisk", None, message))

    try:
        sandbox.remove_dirs()
        compiled = await asyncio.to_thread(sandbox.install, defn, cache_dir=cache_dir, compile_fn=compile_fn,
                                           prompts_src=prompts_dir)
        sandbox.start()
        try:
            await sandbox.wait_booted(timeout=timeout)
        except SandboxError as exc:
            fail(f"Asterisk did not boot with this configuration: {exc}")
            return findings, info
        secret = str(json.loads(sandbox.secrets_file.read_text())["ami_secret"])
        ami = AMIClient("127.0.0.1", sandbox.ports.ami, "hotline", secret, reconnect_max=1.0)
        await ami.start()
        try:
            await ami.wait_ready(timeout=10)
            for problem in await loaded_problems(ami, compiled.files):
                fail(problem)
        except AMIError as exc:
            fail(f"could not query the sandbox over AMI: {exc}")
        finally:
            await ami.stop()
        known = {m.group(1).lower() for m in re.finditer(r"^\s*(\S+): ", await asyncio.to_thread(
            _cli, sandbox, "core show applications"), re.M)}
        for app, line in expected_dialplan(compiled.files["extensions.conf"]).applications.items():
            if known and app.lower() not in known:
                fail(f"extensions.conf line {line}: application {app!r} does not exist in this Asterisk")
        for logged in log_problems(sandbox):
            fail(f"Asterisk logged: {logged}")
        info["checked"] = ["boot", "dialplan", "endpoints", "queues", "applications", "log"]
        return findings, info
    except (SandboxError, OSError, ValueError) as exc:
        fail(f"could not run the sandbox check: {exc}")
        return findings, info
    finally:
        await asyncio.to_thread(sandbox.stop)
        sandbox.remove_dirs()
        sandbox.secrets_file.unlink(missing_ok=True)
