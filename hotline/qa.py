"""Composition of the QA parts: test calls (ivr.testcall) and live monitoring (cti.monitor).

The expected prompt audio is rendered here by the same code that renders what Asterisk
plays (dialplans.prompts: espeak-ng + sox, recorded files win), so the test-call
runner compares what it heard with exactly what the IVR node should have played,
wherever Asterisk runs.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cti.monitor import Monitor
from dialplans.definition import load_definition
from dialplans.prompts import render_prompts
from hotline.settings import Settings
from ivr.testcall.service import TestCalls

if TYPE_CHECKING:
    from hotline.service import HotlineService


def expected_prompts(settings: Settings) -> dict[str, Path]:
    """prompt id -> WAV with the audio the hotline plays for it (blocking: renders)."""
    defn = load_definition(settings.definition)
    out = settings.data_dir / "testcall" / "expected-prompts"
    out.mkdir(parents=True, exist_ok=True)
    # Several `hotline testcall run` processes may render at once; the renderer's
    # temporary files and cache are not safe for that, so renders take turns.
    with open(out / ".render.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Recorded prompt files are relative to the definition's folder, as when publishing.
        return render_prompts(defn, out, prompts_src=settings.definition.parent,
                              cache_dir=settings.data_dir / "prompt-cache")


def attach_qa(service: HotlineService) -> tuple[TestCalls, Monitor]:
    """Build both parts and subscribe them to the service's call events."""
    settings = service.settings
    number = load_definition(settings.definition).numbers[0]
    testcalls = TestCalls(service.sessions, lambda: service.flow, settings.data_dir / "testcall",
                          prompt_files=lambda: expected_prompts(settings), sip_host=settings.ami_host,
                          sip_port=settings.sip_port, number=number)

    def mark(linkedid: str, data: dict[str, Any]) -> None:
        # Supervisors (not agents) see monitoring marks on the call's live stream.
        service.hub.publish("monitor", data, linkedid=linkedid)

    monitor = Monitor(service.ami, service.tracker, service.sessions, on_mark=mark)
    service.subscribe(testcalls.on_call_event)
    service.subscribe(monitor.on_call_event)
    return testcalls, monitor


# -- `hotline testcall ...` ---------------------------------------------------------------
def add_testcall_commands(sub: Any, sandbox_args: Any) -> None:
    """`hotline testcall run SCENARIO` and `hotline testcall generate`."""
    tc = sub.add_parser("testcall", help="QA test calls (mystery shopper)")
    tc_sub = tc.add_subparsers(dest="testcall_command", required=True)
    run = tc_sub.add_parser("run", help="place one scenario's test call; JSON result, exit 1 on failure")
    run.add_argument("scenario", type=Path, help="scenario YAML file")
    run.add_argument("--sandbox", metavar="INSTANCE", help="dial a sandbox instance (its ports and AMI secret)")
    run.add_argument("--port-offset", type=int, default=0)
    run.add_argument("--no-store", action="store_true", help="do not store the result in the database")
    run.set_defaults(func=cmd_testcall_run)
    gen = tc_sub.add_parser("generate", help="scenarios for every menu path of the hotline definition")
    gen.add_argument("--out", type=Path, help="write one YAML file per scenario into this folder")
    gen.set_defaults(func=cmd_testcall_generate)


def cmd_testcall_run(args: Any, settings: Settings) -> int:
    import asyncio
    import json
    import sys

    from cti import channel_vars as cv
    from hotline.cli import _sandbox, _sessions, _settings_for_sandbox
    from ivr.testcall.cli import AMIAccess, run_standalone
    from ivr.testcall.runner import RunnerConfig
    from ivr.testcall.scenario import ScenarioError, load_scenario
    from ivr.testcall.store import TestCallStore

    if args.sandbox:
        settings = _settings_for_sandbox(settings, _sandbox(settings, args.sandbox, args.port_offset))
    defn = load_definition(settings.definition)
    try:
        scenario = load_scenario(args.scenario, prompt_ids=set(defn.prompts))
    except ScenarioError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 2
    if not settings.ami_secret:
        print("hotline: HOTLINE_AMI_SECRET is not set (or use --sandbox INSTANCE)", file=sys.stderr)
        return 2
    config = RunnerConfig(sip_host=settings.ami_host, sip_port=settings.sip_port,
                          prompt_files=expected_prompts(settings), work_dir=settings.data_dir / "testcall" / "runs",
                          headers={cv.TRUNK_HEADER: "carrier"})
    store = None if args.no_store else TestCallStore(_sessions(settings))
    ami = AMIAccess(settings.ami_host, settings.ami_port, settings.ami_username, settings.ami_secret)
    result = asyncio.run(run_standalone(scenario, args.scenario.read_text(encoding="utf-8"), config, ami, store))
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if result.get("passed") else 1


def cmd_testcall_generate(args: Any, settings: Settings) -> int:
    import json

    from hotline.app import flow_for
    from ivr.testcall.generator import generate

    defn = load_definition(settings.definition)
    generated = generate(flow_for(defn, "/sounds"), defn.numbers[0])
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for scenario in generated.scenarios:
            (args.out / f"{scenario.name}.yaml").write_text(scenario.to_yaml(), encoding="utf-8")
    print(json.dumps({"scenarios": [{"name": s.name, "path": list(s.path), "steps": len(s.steps)}
                                    for s in generated.scenarios],
                      "skipped": [{"path": list(k.path), "node": k.node, "reason": k.reason}
                                  for k in generated.skipped],
                      "written_to": str(args.out) if args.out else None}, indent=2, ensure_ascii=False))
    return 0
