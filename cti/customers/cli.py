"""``hotline customers ...``: import a CSV, look a number up, fill the database with demo data.

    customers import FILE.csv     exit 0 and a count; exit 2 with every bad row on stderr
                                  (nothing is imported then)
    customers lookup NUMBER       the Lookup as JSON; exit 1 when unknown, 2 when not a number
    customers demo --count N      insert N demo customers (see cti.customers.demo)

The composition layer passes `get_sessions`, so the database is opened only when
one of these commands runs. Handlers are called as ``func(args, settings)`` by the
hotline CLI; a settings object with ``default_region`` supplies the phone region
unless ``--region`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cti.customers.demo import generate
from cti.customers.importer import CustomerImportError, import_csv
from cti.customers.store import CustomerStore

SessionsFactory = Callable[[], sessionmaker[Session]]

EXIT_OK = 0
EXIT_UNKNOWN = 1
EXIT_REFUSED = 2


def add_commands(subparsers: Any, get_sessions: SessionsFactory) -> None:
    """Register ``customers import|lookup|demo`` on an argparse subparsers object."""
    customers = subparsers.add_parser("customers", help="customer records for the screen pop")
    sub = customers.add_subparsers(dest="customers_command", required=True)

    imp = sub.add_parser("import", help="import customers from a CSV file (all rows or none)")
    imp.add_argument("file", metavar="FILE.csv")
    imp.add_argument("--region", help="phone region for national numbers (default: settings, else CN)")
    imp.set_defaults(func=_handler(_import, get_sessions))

    look = sub.add_parser("lookup", help="show the customers owning a phone number, as JSON")
    look.add_argument("number")
    look.add_argument("--region", help="phone region for national numbers (default: settings, else CN)")
    look.set_defaults(func=_handler(_lookup, get_sessions))

    demo = sub.add_parser("demo", help="insert realistic demo customers")
    demo.add_argument("--count", type=_non_negative, default=1000)
    demo.add_argument("--seed", type=int, default=1)
    demo.set_defaults(func=_handler(_demo, get_sessions))


Command = Callable[[argparse.Namespace, SessionsFactory, str], int]


def _handler(command: Command, get_sessions: SessionsFactory) -> Callable[..., int]:
    def run(args: argparse.Namespace, settings: object = None, *_: object) -> int:
        region = getattr(args, "region", None) or getattr(settings, "default_region", None) or "CN"
        return command(args, get_sessions, str(region))

    return run


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return number


def _import(args: argparse.Namespace, get_sessions: SessionsFactory, region: str) -> int:
    try:
        report = import_csv(args.file if args.file != "-" else sys.stdin.buffer.read(), get_sessions(), region)
    except CustomerImportError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        rows = len({e.row for e in exc.errors})
        print(f"{len(exc.errors)} error(s) in {rows} row(s); nothing was imported", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"imported {report.rows} customers ({report.created} new, {report.updated} updated; "
          f"{report.phones} phones, {report.products} products, {report.orders} orders)")
    return EXIT_OK


def _lookup(args: argparse.Namespace, get_sessions: SessionsFactory, region: str) -> int:
    result = CustomerStore(get_sessions(), region).lookup(args.number)
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    if result.status == "invalid":
        return EXIT_REFUSED
    return EXIT_UNKNOWN if result.status == "unknown" else EXIT_OK


def _demo(args: argparse.Namespace, get_sessions: SessionsFactory, _region: str) -> int:
    started = time.perf_counter()
    count = generate(get_sessions(), args.count, seed=args.seed)
    print(f"inserted {count} demo customers in {time.perf_counter() - started:.1f} s "
          "(try: customers lookup 13800138000)")
    return EXIT_OK
