"""``hotline recordings ...``: search, inspect, mark cases, hold, reconcile and purge.

    recordings list [--agent A --queue Q --customer C --since D --until D --flagged
                     --outcome O --case K --limit N]          JSON list of recording sets
    recordings show ID                                       one set (any leg id) + access log
    recordings mark ID --case praise|complaint|none --note TEXT
    recordings library [--case praise|complaint]             the QA case library
    recordings hold ID --reason TEXT | --release             legal hold
    recordings reconcile                                     exit 1 if index and disk disagree
    recordings purge [--dry-run] [--policy TEXT]             apply the retention policy

IDs are leg ids (as listed); a mark or hold applies to the whole call. The composition
layer passes `open_catalog(settings)`, so the database is opened only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from recordings.catalog import CASE_KINDS, RecordingCatalog, SetFilter, set_view
from recordings.retention import RetentionPolicy, purge, purge_plan, reconcile

#: settings -> the catalog and the retention policy text
OpenCatalog = Callable[[Any], tuple[RecordingCatalog, str]]


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _date(raw: str) -> datetime:
    value = datetime.fromisoformat(raw)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def add_commands(subparsers: Any, open_catalog: OpenCatalog) -> None:
    """Register ``recordings list|show|mark|library|hold|reconcile|purge``."""
    rec = subparsers.add_parser("recordings", help="call recordings: search, QA cases, retention")
    sub = rec.add_subparsers(dest="recordings_command", required=True)

    def handler(fn: Callable[[argparse.Namespace, RecordingCatalog, str], int]) -> Callable[..., int]:
        def run(args: argparse.Namespace, settings: Any) -> int:
            catalog, policy = open_catalog(settings)
            try:
                return fn(args, catalog, policy)
            except (LookupError, ValueError) as exc:
                print(f"hotline recordings: {exc}", file=sys.stderr)
                return 2
        return run

    ls = sub.add_parser("list", help="recording sets, newest first")
    for name in ("agent", "queue", "customer", "outcome"):
        ls.add_argument(f"--{name}")
    ls.add_argument("--since", type=_date)
    ls.add_argument("--until", type=_date)
    ls.add_argument("--flagged", action="store_true", help="only calls flagged for QA")
    ls.add_argument("--case", choices=(*CASE_KINDS, "any"))
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(func=handler(_list))

    show = sub.add_parser("show", help="one call's recordings, analysis and access log")
    show.add_argument("id", type=int)
    show.set_defaults(func=handler(_show))

    mark = sub.add_parser("mark", help="put a call into the case library (or take it out)")
    mark.add_argument("id", type=int)
    mark.add_argument("--case", required=True, choices=(*CASE_KINDS, "none"))
    mark.add_argument("--note", default="")
    mark.add_argument("--by", default="cli")
    mark.set_defaults(func=handler(_mark))

    lib = sub.add_parser("library", help="the case library")
    lib.add_argument("--case", choices=(*CASE_KINDS, "any"), default="any")
    lib.set_defaults(func=handler(_library))

    hold = sub.add_parser("hold", help="legal hold: keep a call regardless of retention")
    hold.add_argument("id", type=int)
    group = hold.add_mutually_exclusive_group(required=True)
    group.add_argument("--reason")
    group.add_argument("--release", action="store_true")
    hold.set_defaults(func=handler(_hold))

    rc = sub.add_parser("reconcile", help="files without index rows and rows without files")
    rc.set_defaults(func=handler(_reconcile))

    pg = sub.add_parser("purge", help="delete recordings whose retention has run out")
    pg.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    pg.add_argument("--policy", help="override the recordings_retention setting, e.g. default=90,abandoned=30")
    pg.set_defaults(func=handler(_purge))


def _list(args: argparse.Namespace, catalog: RecordingCatalog, _policy: str) -> int:
    f = SetFilter(agent=args.agent, queue=args.queue, customer=args.customer, since=args.since, until=args.until,
                  flagged=True if args.flagged else None, outcome=args.outcome, case=args.case, limit=args.limit)
    _print(catalog.search(f))
    return 0


def _show(args: argparse.Namespace, catalog: RecordingCatalog, _policy: str) -> int:
    found = catalog.set_of(args.id)
    if found is None:
        raise LookupError(f"no recording {args.id}")
    _print({**set_view(*found), "access": catalog.access_log(args.id)})
    return 0


def _mark(args: argparse.Namespace, catalog: RecordingCatalog, _policy: str) -> int:
    kind = None if args.case == "none" else args.case
    catalog.mark_case(args.id, kind, args.note, args.by, datetime.now(UTC))
    found = catalog.set_of(args.id)
    assert found is not None
    _print(set_view(*found))
    return 0


def _library(args: argparse.Namespace, catalog: RecordingCatalog, _policy: str) -> int:
    _print(catalog.search(SetFilter(case=args.case, limit=1000)))
    return 0


def _hold(args: argparse.Namespace, catalog: RecordingCatalog, _policy: str) -> int:
    rs = catalog.set_legal_hold(args.id, not args.release, args.reason or "")
    _print({"linkedid": rs.linkedid, "legal_hold": rs.legal_hold, "reason": rs.legal_hold_reason})
    return 0


def _reconcile(args: argparse.Namespace, catalog: RecordingCatalog, _policy: str) -> int:
    report = reconcile(catalog)
    _print(report)
    return 1 if any(report.values()) else 0


def _purge(args: argparse.Namespace, catalog: RecordingCatalog, policy_text: str) -> int:
    policy = RetentionPolicy.parse(args.policy or policy_text)
    now = datetime.now(UTC)
    plan = purge_plan(catalog, policy, now)
    if args.dry_run:
        _print({"dry_run": True, "would_purge": [item.to_dict() for item in plan],
                "bytes": sum(item.bytes for item in plan)})
        return 0
    result = purge(catalog, plan, now)
    _print({"dry_run": False, "purged": [item.linkedid for item in plan], **result})
    return 1 if result["errors"] else 0
