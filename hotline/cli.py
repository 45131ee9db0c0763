"""`hotline` command line: serve, sandbox up|down|status, run (sandbox + service)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from cti.auth import ROLES, AuthError, TokenStore
from cti.customers.cli import add_commands as add_customer_commands
from cti.db import create_schema, make_engine, session_factory
from cti.reports.cli import add_commands as add_report_commands
from cti.reports.service import ReportService
from dialplans.definition import DEFAULT_PATH, InvalidDefinition, load_definition
from hotline.app import create_app, flow_for
from hotline.dialplan_cli import add_commands as add_dialplan_commands
from hotline.reports import cli_report_service
from hotline.sandbox import Sandbox, SandboxError, SandboxPorts, ensure_root, root_path
from hotline.settings import Settings, SettingsError, load_settings
from ivr.agi.eventloop import loop_name, new_event_loop, tune_gc
from ivr.survey.cli import add_commands as add_survey_commands
from ivr.survey.component import render_default_prompts as render_survey_prompts
from recordings.catalog import RecordingCatalog
from recordings.cli import add_commands as add_recording_commands
from recordings.index import RecordingIndex

DEFAULT_INSTANCE = "dev"


def _sandbox(settings: Settings, instance: str, port_offset: int, root: Path | None = None) -> Sandbox:
    ports = SandboxPorts.offset(port_offset) if port_offset else SandboxPorts()
    return Sandbox(root or root_path(), instance, ports, state_dir=settings.data_dir / "sandbox")


def _settings_for_sandbox(settings: Settings, sandbox: Sandbox) -> Settings:
    """Point the service at a sandbox: its AMI secret, ports and recordings folder.

    Every other setting is kept (e.g. HOTLINE_SURVEY_DIALER, the recordings policy).
    """
    state = json.loads(sandbox.secrets_file.read_text())
    return replace(
        settings, ami_host="127.0.0.1", ami_username=Settings().ami_username, ami_port=sandbox.ports.ami,
        agi_port=sandbox.ports.agi, ami_secret=str(state["ami_secret"]),
        sip_port=sandbox.ports.sip, recordings_dir=Path(sandbox.recordings_dir), asterisk_log_dir=str(sandbox.log_dir),
    )


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "up":
        root = ensure_root()
        sandbox = _sandbox(settings, args.instance, args.port_offset, root)
        defn = load_definition(settings.definition)
        sandbox.install(defn, cache_dir=settings.data_dir / "prompt-cache")
        render_survey_prompts(sandbox.sounds_dir, settings.data_dir / "prompt-cache")
        if sandbox.pid() is None:
            sandbox.start()
        asyncio.run(sandbox.wait_booted())
        print(json.dumps(sandbox.status(), indent=2))
        return 0
    sandbox = _sandbox(settings, args.instance, args.port_offset)
    if args.action == "down":
        print("stopped" if sandbox.stop() else "not running")
        return 0
    print(json.dumps(sandbox.status(), indent=2))
    return 0 if sandbox.pid() is not None else 3


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.sandbox:
        sandbox = _sandbox(settings, args.sandbox, args.port_offset)
        settings = _settings_for_sandbox(settings, sandbox)
        return _serve_with_sounds(settings, f"{sandbox.lib}/sounds", sandbox)
    if not settings.ami_secret:
        raise SettingsError("HOTLINE_AMI_SECRET is not set (or use --sandbox INSTANCE)")
    return _serve_with_sounds(settings, "/var/lib/hotline/sounds")


def _serve_with_sounds(settings: Settings, sounds_dir: str, sandbox: Sandbox | None = None) -> int:
    defn = load_definition(settings.definition)
    app = create_app(settings, flow_for(defn, sounds_dir))
    if sandbox is not None:  # the editing lifecycle publishes into this sandbox's config
        from hotline.app import SERVICE
        from hotline.dialplan_publish import publisher_for_sandbox
        from hotline.dialplan_web import PUBLISHER

        app[PUBLISHER] = publisher_for_sandbox(
            app[SERVICE], sandbox, live_text=settings.definition.read_text(encoding="utf-8"), live_defn=defn,
            cache_dir=settings.data_dir / "prompt-cache", prompts_dir=settings.definition.parent,
            definition_file=settings.definition)
    print(f"hotline service: http://{settings.http_host}:{settings.http_port}/status "
          f"(FastAGI {settings.agi_host}:{settings.agi_port}, AMI {settings.ami_host}:{settings.ami_port})",
          flush=True)
    loop = _event_loop(settings)
    tune_gc()
    web.run_app(app, host=settings.http_host, port=settings.http_port, print=lambda _m: None, loop=loop)
    return 0


def _event_loop(settings: Settings) -> asyncio.AbstractEventLoop:
    """The service's loop: uvloop unless HOTLINE_EVENT_LOOP=asyncio (see ivr.agi.eventloop)."""
    try:
        loop = new_event_loop(settings.event_loop)
    except ValueError as exc:
        raise SettingsError(f"setting event_loop (HOTLINE_EVENT_LOOP): {exc}") from None
    logging.getLogger("hotline").info("event loop: %s", loop_name(loop))
    return loop


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Everything for a developer: sandbox Asterisk, then the service in the foreground."""
    args.action = "up"
    cmd_sandbox(args, settings)
    sandbox = _sandbox(settings, args.instance, args.port_offset)
    settings = _working_definition(settings)
    defn = load_definition(settings.definition)
    numbers = ", ".join(defn.numbers)
    token_file = ensure_admin_token(settings)
    ensure_demo_customers(settings, args.demo_customers)
    print(
        f"\nHotline ready. Asterisk PJSIP on 127.0.0.1:{sandbox.ports.sip}, hotline numbers {numbers}.\n"
        f"Agent SIP passwords: {sandbox.secrets_file}\n"
        f"Admin API token:     {token_file}  (curl -H \"Authorization: Bearer $(cat {token_file})\" "
        f"http://{settings.http_host}:{settings.http_port}/calls)\n"
        f"Place a real test call (new terminal):  .venv/bin/hotline call --instance {args.instance} --digits 1\n"
        f"Stop Asterisk afterwards:               .venv/bin/hotline sandbox down --instance {args.instance}\n",
        flush=True,
    )
    return _serve_with_sounds(_settings_for_sandbox(settings, sandbox), f"{sandbox.lib}/sounds", sandbox)


def _working_definition(settings: Settings) -> Settings:
    """The packaged default hotline is copied into the data folder once and edited there.

    Publishing rewrites the live definition file; the copy keeps the repository's
    default untouched and keeps the demo's edits across restarts.
    """
    if settings.definition.resolve() != DEFAULT_PATH.resolve():
        return settings
    working = settings.data_dir / "hotline.yaml"
    if not working.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        working.write_text(DEFAULT_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    return replace(settings, definition=working)


def _sessions(settings: Settings) -> sessionmaker[Session]:
    """The service database (schema created if missing) for offline commands."""
    import hotline.service  # noqa: F401 - registers every table on the shared metadata

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    create_schema(engine)
    return session_factory(engine)


def _recording_catalog(settings: Settings) -> tuple[RecordingCatalog, str]:
    """The recording index of this service's database and recordings folder, for the CLI."""
    return RecordingCatalog(RecordingIndex(_sessions(settings), settings.recordings_dir)), settings.recordings_retention


def _report_service(args: argparse.Namespace) -> ReportService:
    """`hotline report ...`: this service's database; `--sandbox NAME` imports that sandbox's logs."""
    settings = load_settings(args.config)
    instance = getattr(args, "sandbox", None)
    log_dir = _sandbox(settings, instance, 0).log_dir if instance else None
    return cli_report_service(args, settings, log_dir)


def ensure_admin_token(settings: Settings) -> Path:
    """Issue an admin token for the demo once, kept in data_dir/admin-token (mode 600)."""
    from hotline.democall import admin_token_file

    path = admin_token_file(settings)
    tokens = TokenStore(_sessions(settings))
    if path.is_file() and tokens.check(path.read_text().strip()) is not None:
        return path
    token = tokens.issue("demo-admin", "admin")
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def ensure_demo_customers(settings: Settings, count: int) -> None:
    """First run only: fill an empty customer table with demo data for screen pops."""
    from sqlalchemy import func, select

    from cti.customers.demo import generate
    from cti.customers.models import Customer

    sessions = _sessions(settings)
    with sessions() as session:
        existing = session.scalar(select(func.count()).select_from(Customer)) or 0
    if existing == 0 and count > 0:
        print(f"generating {count} demo customers (first run only) ...", flush=True)
        generate(sessions, count)


def cmd_tokens(args: argparse.Namespace, settings: Settings) -> int:
    tokens = TokenStore(_sessions(settings))
    try:
        print(tokens.issue(args.user, args.role, args.agent))
    except AuthError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_call(args: argparse.Namespace, settings: Settings) -> int:
    from hotline.democall import place_demo_call

    sandbox = _sandbox(settings, args.instance, args.port_offset)
    result = asyncio.run(place_demo_call(sandbox, settings, digits=args.digits, caller=args.caller))
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if result.get("ok") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotline", description=__doc__)
    parser.add_argument("--config", type=Path, help="settings YAML (else HOTLINE_CONFIG, defaults, HOTLINE_* env)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def sandbox_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--instance", default=DEFAULT_INSTANCE, help="sandbox instance name")
        p.add_argument("--port-offset", type=int, default=0, help="add this to every default port")

    sb = sub.add_parser("sandbox", help="the real Asterisk 22 sandbox (Debian sid root + chroot)")
    sb.add_argument("action", choices=("up", "down", "status"))
    sandbox_args(sb)
    sb.set_defaults(func=cmd_sandbox)

    serve = sub.add_parser("serve", help="run the service (FastAGI + AMI + HTTP)")
    serve.add_argument("--sandbox", metavar="INSTANCE", help="use a sandbox's AMI secret, ports and recordings")
    serve.add_argument("--port-offset", type=int, default=0)
    serve.set_defaults(func=cmd_serve)

    run = sub.add_parser("run", help="sandbox up, then serve against it (the one-command demo)")
    sandbox_args(run)
    run.add_argument("--demo-customers", type=int, default=100_000,
                     help="demo customers generated into an empty database (0: none)")
    run.set_defaults(func=cmd_run)

    tokens = sub.add_parser("tokens", help="API tokens")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True)
    create = tokens_sub.add_parser("create", help="issue a token (printed once)")
    create.add_argument("--user", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--agent", help="the agent's extension (role agent)")
    create.set_defaults(func=cmd_tokens)

    add_customer_commands(sub, lambda: _sessions(load_settings()))
    add_dialplan_commands(sub)
    add_recording_commands(sub, _recording_catalog)
    add_survey_commands(sub, _sessions)
    add_report_commands(sub, _report_service)

    call = sub.add_parser("call", help="place a real demo call into the sandbox hotline")
    sandbox_args(call)
    call.add_argument("--digits", default="1", help="menu digits the caller presses")
    call.add_argument("--caller", default="13800138000", help="caller number presented by the carrier")
    call.set_defaults(func=cmd_call)

    from hotline.qa import add_testcall_commands

    add_testcall_commands(sub, sandbox_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
        return int(args.func(args, settings))
    except (SettingsError, InvalidDefinition, SandboxError) as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
