"""`hotline dialplan validate|diff|publish|rollback|promote|history`.

validate, diff and history work offline (validate boots its own throwaway Asterisk);
publish, rollback and promote go through the running service's REST API, because
the service must swap its IVR flow and place the smoke calls: a second process
writing Asterisk's config behind its back is exactly the half-applied state this
lifecycle exists to prevent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from dialplans.validate import validate_text
from hotline.dialplan_versions import VersionStore
from hotline.settings import Settings

#: Default port offset of the throwaway Asterisk that `validate` boots.
VALIDATE_PORT_OFFSET = 30000


def add_commands(sub: Any) -> None:
    dp = sub.add_parser("dialplan", help="validate, diff, publish, roll back and list hotline definition versions")
    dsub = dp.add_subparsers(dest="dialplan_command", required=True)

    v = dsub.add_parser("validate", help="schema, graph checks, then load it into a throwaway Asterisk")
    v.add_argument("file", type=Path)
    v.add_argument("--no-sandbox", action="store_true", help="skip the throwaway Asterisk")
    v.add_argument("--check-port-offset", type=int, default=VALIDATE_PORT_OFFSET)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_validate)

    d = dsub.add_parser("diff", help="unified diff of FILE against the live version")
    d.add_argument("file", type=Path)
    d.set_defaults(func=cmd_diff)

    h = dsub.add_parser("history", help="every version: author, reason, status")
    h.add_argument("--limit", type=int, default=50)
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_history)

    def remote(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="the service (default http://HTTP_HOST:HTTP_PORT)")
        p.add_argument("--token", help="admin API token (default $HOTLINE_TOKEN, else DATA_DIR/admin-token)")
        p.add_argument("--reason", default="")

    p = dsub.add_parser("publish", help="publish FILE through the running service (validate, apply, smoke, "
                                        "roll back on failure)")
    p.add_argument("file", type=Path)
    p.add_argument("--draft", action="store_true", help="only the --test-caller numbers reach it")
    p.add_argument("--test-caller", action="append", default=[], dest="test_callers")
    remote(p)
    p.set_defaults(func=cmd_publish)

    r = dsub.add_parser("rollback", help="republish the previous (or --version N) version")
    r.add_argument("--version", type=int)
    remote(r)
    r.set_defaults(func=cmd_rollback)

    pr = dsub.add_parser("promote", help="the published draft goes live for everyone")
    remote(pr)
    pr.set_defaults(func=cmd_promote)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"hotline: cannot read {path}: {exc}") from None


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from hotline.dialplan_check import check_in_sandbox
    from hotline.sandbox import ensure_root

    prompts_dir = settings.definition.parent
    report = validate_text(_read(args.file), prompts_dir=prompts_dir)
    if report.ok and not args.no_sandbox:
        assert report.definition is not None
        findings, info = asyncio.run(check_in_sandbox(
            report.definition, root=ensure_root(), port_offset=args.check_port_offset,
            state_dir=settings.data_dir / "validate-sandbox", cache_dir=settings.data_dir / "prompt-cache",
            prompts_dir=prompts_dir))
        report.errors += findings
        report.sandbox = info
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.text() if not report.ok else
              "valid" + (" (loaded cleanly into a throwaway Asterisk)" if not args.no_sandbox else ""))
    return 0 if report.ok else 1


def _store(settings: Settings) -> VersionStore:
    from hotline.cli import _sessions

    return VersionStore(_sessions(settings))


def cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    from hotline.dialplan_versions import unified_diff

    live = _store(settings).live()
    base = live.definition if live is not None else _read(settings.definition)
    name = f"live (version {live.id})" if live is not None else str(settings.definition)
    sys.stdout.write(unified_diff(base, _read(args.file), name, str(args.file)) or "no changes\n")
    return 0


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    versions = _store(settings).history(args.limit)
    if args.json:
        print(json.dumps([v.to_dict() for v in versions], indent=2, ensure_ascii=False))
        return 0
    for v in versions:
        extra = f" test callers {','.join(v.test_callers)}" if v.test_callers else ""
        print(f"{v.id:>5}  {v.created_at:%Y-%m-%d %H:%M:%S}  {v.status:<13} {v.kind:<8} {v.author:<16} "
              f"{v.reason}{extra}")
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> str:
    if args.token:
        return str(args.token)
    if os.environ.get("HOTLINE_TOKEN"):
        return os.environ["HOTLINE_TOKEN"]
    path = settings.data_dir / "admin-token"
    if path.is_file():
        return path.read_text().strip()
    raise SystemExit("hotline: no admin token (--token, $HOTLINE_TOKEN or DATA_DIR/admin-token)")


def _post(args: argparse.Namespace, settings: Settings, path: str, body: dict[str, Any]) -> int:
    url = (args.url or f"http://{settings.http_host}:{settings.http_port}").rstrip("/") + path

    async def go() -> tuple[int, Any]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {_token(args, settings)}"}) as http:
            async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=600)) as resp:
                return resp.status, await resp.json(content_type=None)

    try:
        status, answer = asyncio.run(go())
    except aiohttp.ClientError as exc:
        print(f"hotline: cannot reach the service at {url}: {exc}", file=sys.stderr)
        return 2
    if status == 200:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return 0
    message = answer.get("message", answer) if isinstance(answer, dict) else answer
    print(f"hotline: {status} {answer.get('error_id', '') if isinstance(answer, dict) else ''}: {message}",
          file=sys.stderr)
    return 1


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    return _post(args, settings, "/dialplan/publish", {
        "definition": _read(args.file), "reason": args.reason, "draft": args.draft,
        "test_callers": args.test_callers})


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {"reason": args.reason}
    if args.version is not None:
        body["version"] = args.version
    return _post(args, settings, "/dialplan/rollback", body)


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    return _post(args, settings, "/dialplan/promote", {"reason": args.reason})
