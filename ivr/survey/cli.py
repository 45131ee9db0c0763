"""``hotline survey ...``: campaigns, triggers, the do-not-call list, results, and the dialer.

    survey campaign NAME [--trigger order_closed|call_ended|manual] [--rules JSON]
    survey rules NAME --rules JSON       change some rules (e.g. {"max_concurrent": 4})
    survey campaigns | status NAME | jobs NAME | results NAME [--csv FILE]
    survey order NAME --order REF --number N [--technician T] [--agent A] [--timezone Z]
    survey import NAME FILE.csv          closed service orders (all rows checked first)
    survey suppress NUMBER [--reason R] | unsuppress NUMBER | suppressed
    survey pause NAME | resume NAME
    survey followups | praise
    survey prompts OUT_DIR               render the survey prompts (espeak-ng + sox)
    survey dial [--campaign NAME ...] [--routes FILE.json]
                                         run the dialer until stopped (own AMI session)

Exit codes: 0 ok, 2 refused (bad input; nothing was written).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cti.ami.client import AMIClient
from ivr.survey.component import default_surveys
from ivr.survey.dialer import SurveyDialer
from ivr.survey.prompts import render_survey_prompts
from ivr.survey.rules import SystemClock
from ivr.survey.store import TRIGGERS, SurveyError, SurveyStore

SessionsFor = Callable[[Any], sessionmaker[Session]]


def add_commands(subparsers: Any, sessions_for: SessionsFor) -> None:
    survey = subparsers.add_parser("survey", help="post-service callback surveys")
    sub = survey.add_subparsers(dest="survey_command", required=True)

    def cmd(name: str, fn: Callable[[argparse.Namespace, SurveyStore, Any], Any], help_: str) -> Any:
        p = sub.add_parser(name, help=help_)

        def run(args: argparse.Namespace, settings: Any) -> int:
            store = SurveyStore(sessions_for(settings), SystemClock(), getattr(settings, "default_region", "CN"))
            try:
                out = fn(args, store, settings)
            except SurveyError as exc:
                print(f"hotline survey: {exc}", file=sys.stderr)
                return 2
            if isinstance(out, int):
                return out
            if out is not None:
                print(out if isinstance(out, str) else json.dumps(out, indent=2, ensure_ascii=False))
            return 0

        p.set_defaults(func=run)
        return p

    p = cmd("campaign", _campaign, "create a campaign")
    p.add_argument("name")
    p.add_argument("--trigger", choices=TRIGGERS, default="manual")
    p.add_argument("--survey", default="default")
    p.add_argument("--rules", default="{}", help='JSON, e.g. {"window_start": "09:00", "max_attempts": 3}')
    p = cmd("rules", lambda a, s, _: s.update_rules(a.name, _rules_arg(a.rules)),
            "change some rules of a campaign (the dialer applies them on its next pass)")
    p.add_argument("name")
    p.add_argument("--rules", required=True, help='JSON, e.g. {"max_concurrent": 4}')
    cmd("campaigns", lambda a, s, _: s.campaigns(), "list campaigns")
    p = cmd("status", lambda a, s, _: s.status(a.name), "jobs by state and attempt outcomes")
    p.add_argument("name")
    p = cmd("jobs", lambda a, s, _: s.jobs(a.name), "every job with its attempt audit rows")
    p.add_argument("name")
    p = cmd("results", _results, "answers per question (JSON, or --csv FILE)")
    p.add_argument("name")
    p.add_argument("--csv", type=Path, help="write the results as CSV to this file ('-' for stdout)")
    p = cmd("order", _order, "a service order was closed: survey its customer")
    p.add_argument("name")
    p.add_argument("--order", required=True)
    p.add_argument("--number", required=True)
    p.add_argument("--technician", default="")
    p.add_argument("--agent", default="")
    p.add_argument("--customer", default="")
    p.add_argument("--timezone", default="Asia/Shanghai")
    p = cmd("import", lambda a, s, _: s.import_orders_csv(a.name, Path(a.file).read_text(encoding="utf-8-sig")),
            "closed service orders from CSV (order,number[,customer,technician,agent,timezone])")
    p.add_argument("name")
    p.add_argument("file")
    p = cmd("suppress", lambda a, s, _: {"suppressed": s.suppress(a.number, a.reason)}, "add to the do-not-call list")
    p.add_argument("number")
    p.add_argument("--reason", default="")
    p = cmd("unsuppress", lambda a, s, _: {"removed": s.unsuppress(a.number)}, "remove from the do-not-call list")
    p.add_argument("number")
    cmd("suppressed", lambda a, s, _: {"suppressed": s.suppressed()}, "list the do-not-call list")
    p = cmd("pause", lambda a, s, _: s.set_active(a.name, False), "stop triggering and dialing a campaign")
    p.add_argument("name")
    p = cmd("resume", lambda a, s, _: s.set_active(a.name, True), "resume a paused campaign")
    p.add_argument("name")
    cmd("followups", lambda a, s, _: s.followups(), "follow-up tasks")
    cmd("praise", lambda a, s, _: s.praise_totals(), "praise totals by agent")
    p = cmd("prompts", lambda a, s, _: {n: {k: str(v) for k, v in render_survey_prompts(d, Path(a.out_dir)).items()}
                                        for n, d in default_surveys().items()}, "render survey prompts")
    p.add_argument("out_dir")
    p = cmd("dial", _dial, "run the survey dialer until stopped")
    p.add_argument("--campaign", action="append", help="only these campaigns (default: all active)")
    p.add_argument("--routes", type=Path, help="JSON {number: dial string} overriding the campaign's template")


def _rules_arg(text: str) -> dict[str, Any]:
    try:
        rules = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SurveyError(f"--rules is not JSON: {exc}") from None
    if not isinstance(rules, dict):
        raise SurveyError("--rules must be a JSON object")
    return rules


def _campaign(args: argparse.Namespace, store: SurveyStore, _settings: Any) -> Any:
    return store.create_campaign(args.name, args.trigger, args.survey, _rules_arg(args.rules))


def _results(args: argparse.Namespace, store: SurveyStore, _settings: Any) -> Any:
    if args.csv is None:
        return store.results(args.name)
    text = store.results_csv(args.name)
    if str(args.csv) == "-":
        sys.stdout.write(text)
    else:
        args.csv.write_text(text, encoding="utf-8")
    return None


def _order(args: argparse.Namespace, store: SurveyStore, _settings: Any) -> Any:
    result = store.on_order_closed(args.name, {"order": args.order, "number": args.number,
                                               "technician": args.technician, "agent": args.agent,
                                               "customer": args.customer, "timezone": args.timezone})
    return {"job": result.job_id, "status": result.status, "reason": result.reason}


def _dial(args: argparse.Namespace, store: SurveyStore, settings: Any) -> int:
    routes = json.loads(args.routes.read_text()) if args.routes else {}
    if not settings.ami_secret:
        raise SurveyError("HOTLINE_AMI_SECRET is not set")

    async def main() -> None:
        ami = AMIClient(settings.ami_host, settings.ami_port, settings.ami_username, settings.ami_secret)
        dialer = SurveyDialer(store, ami, campaigns=args.campaign, routes=routes)
        await ami.start()
        task = asyncio.create_task(dialer.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        print("survey dialer running", flush=True)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            await ami.stop()

    asyncio.run(main())
    return 0
