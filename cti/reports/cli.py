"""``hotline report ...``: import Asterisk's logs, print reports and statements.

    report import [--log-dir DIR] [--queue-log FILE] [--cdr FILE]
    report summary|queues|agents|volume (--month YYYY-MM | --from DAY [--to DAY]) [--csv]
    report statement AGENT --month YYYY-MM [--csv]
    every report takes --rules FILE (YAML: {reports: {...}, piece_rate: {...}})

The composition layer passes `make_service(args)`, so the database and the
definition are opened only when one of these commands runs. Exit 0 on success,
1 when an import rejected lines (the rest were imported), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cti.reports.dataset import PeriodError
from cti.reports.importer import ImportResult, import_cdr, import_queue_log
from cti.reports.rules import RulesError
from cti.reports.service import ReportService
from cti.reports.views import REPORTS, to_csv

ServiceFactory = Callable[[argparse.Namespace], ReportService]


def add_commands(subparsers: Any, make_service: ServiceFactory) -> None:
    report = subparsers.add_parser("report", help="call-center reports and piece-rate statements")
    sub = report.add_subparsers(dest="report_command", required=True)

    imp = sub.add_parser("import", help="import queue_log and CDR (idempotent)")
    imp.add_argument("--log-dir", type=Path, help="Asterisk log directory (queue_log, cdr-custom/hotline-cdr.csv)")
    imp.add_argument("--sandbox", metavar="INSTANCE", help="the log directory of a sandbox instance")
    imp.add_argument("--queue-log", type=Path, help="a queue_log file")
    imp.add_argument("--cdr", type=Path, help="a hotline CDR file (cdr_custom CSV)")
    imp.add_argument("--rules", type=Path, help=argparse.SUPPRESS)
    imp.set_defaults(func=_handler(_import, make_service))

    def period_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--month", help="YYYY-MM")
        p.add_argument("--from", dest="first", help="first day YYYY-MM-DD")
        p.add_argument("--to", dest="last", help="last day YYYY-MM-DD (inclusive)")
        p.add_argument("--csv", action="store_true", help="CSV of the main table instead of JSON")
        p.add_argument("--rules", type=Path, help="report rules YAML")

    for name in REPORTS:
        p = sub.add_parser(name, help=f"the {name} report")
        period_args(p)
        p.set_defaults(func=_handler(_report, make_service), report_name=name)

    st = sub.add_parser("statement", help="an agent's monthly piece-rate statement")
    st.add_argument("agent")
    period_args(st)
    st.set_defaults(func=_handler(_statement, make_service))


def _handler(command: Callable[[argparse.Namespace, ReportService], int], make: ServiceFactory) -> Callable[..., int]:
    def run(args: argparse.Namespace, *_: object) -> int:
        try:
            return command(args, make(args))
        except (RulesError, PeriodError) as exc:
            print(f"hotline report: {exc}", file=sys.stderr)
            return 2

    return run


def _print(body: dict[str, Any], as_csv: bool) -> None:
    if as_csv:
        sys.stdout.write(to_csv(body))
    else:
        print(json.dumps(body, ensure_ascii=False, indent=2))


def _report(args: argparse.Namespace, service: ReportService) -> int:
    period = service.period(args.month, args.first, args.last)
    _print(service.report(args.report_name, period), args.csv)
    return 0


def _statement(args: argparse.Namespace, service: ReportService) -> int:
    if not args.month:
        raise PeriodError("statements are monthly: give --month YYYY-MM")
    _print(service.statement(args.agent, args.month), args.csv)
    return 0


def _import(args: argparse.Namespace, service: ReportService) -> int:
    results: list[ImportResult] = []
    try:
        if args.queue_log:
            results.append(import_queue_log(service.sessions, args.queue_log.read_bytes(), str(args.queue_log)))
        if args.cdr:
            results.append(import_cdr(service.sessions, args.cdr.read_bytes(), str(args.cdr)))
        if args.log_dir or not (args.queue_log or args.cdr):
            results += service.import_logs(args.log_dir)
    except OSError as exc:
        print(f"hotline report: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    if not results:
        print("hotline report: no queue_log or CDR file found", file=sys.stderr)
        return 2
    rejected = 0
    for r in results:
        print(f"{r.source}: {r.added} added, {r.already_imported} already imported, {len(r.rejected)} rejected"
              + (f", {r.unfinished_tail_bytes} bytes of an unfinished line left for later"
                 if r.unfinished_tail_bytes else ""))
        for bad in r.rejected:
            print(f"  line {bad['line']}: {bad['reason']}: {bad['text']!r}", file=sys.stderr)
        rejected += len(r.rejected)
    return 1 if rejected else 0


__all__ = ["add_commands"]
