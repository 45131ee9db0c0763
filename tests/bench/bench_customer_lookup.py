"""Screen-pop lookup benchmark: caller number -> full customer cards, with a million customers.

    .venv/bin/python tests/bench/bench_customer_lookup.py [--customers 1000000] [--lookups 20000]
        [--backend sqlite --backend postgres] [--keep DIR]

For each backend the demo generator (`cti.customers.demo`) fills an empty database
(SQLite: a file in a temporary directory; PostgreSQL: a private server started by
tests/support/postgres.py), then `CustomerStore.lookup` is timed for random stored
numbers, given as a caller ID would be (national notation, e.g. ``13812345678`` or
``0755-87654321``), so every timing includes normalisation, the indexed number
query, loading phones, products, service orders and recent contacts (SQLite: ORM
eager loading, five queries; PostgreSQL: one statement) and building the cards. 500
untimed lookups warm up first. Single thread, one lookup at a time: latency, not
throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import Engine, func, select, text  # noqa: E402

from cti.customers.demo import generate  # noqa: E402
from cti.customers.models import Customer, PhoneNumber, Product, ServiceOrder  # noqa: E402
from cti.customers.store import CustomerStore  # noqa: E402
from cti.db import create_schema, default_sqlite_url, make_engine, session_factory  # noqa: E402

WARMUP = 500


@contextlib.contextmanager
def database(backend: str, keep: Path | None) -> Iterator[str]:
    if backend == "sqlite":
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            yield default_sqlite_url(keep)
            return
        with tempfile.TemporaryDirectory(prefix="bench-customers-") as tmp:
            yield default_sqlite_url(Path(tmp))
        return
    from tests.support.postgres import postgres_server

    with postgres_server() as url:
        yield url


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sample_numbers(engine: Engine, count: int, seed: int) -> list[str]:
    """`count` stored numbers, as written at the source (the way a caller ID arrives)."""
    with engine.connect() as conn:
        top = conn.scalar(select(func.max(PhoneNumber.id))) or 0
        rng = random.Random(seed)
        ids = rng.sample(range(1, top + 1), min(count, top))
        raws: list[str] = []
        for start in range(0, len(ids), 5000):
            chunk = ids[start:start + 5000]
            raws += conn.scalars(select(PhoneNumber.raw).where(PhoneNumber.id.in_(chunk))).all()
    rng.shuffle(raws)
    return raws[:count]


def run(backend: str, customers: int, lookups: int, keep: Path | None, url: str | None = None) -> dict[str, object]:
    with contextlib.nullcontext(url) if url else database(backend, keep) as url:
        engine = make_engine(url)
        create_schema(engine)
        sessions = session_factory(engine)
        started = time.perf_counter()
        have = 0
        with sessions() as session:
            have = session.scalar(select(func.count()).select_from(Customer)) or 0
        if have < customers:
            generate(sessions, customers - have, seed=1)
        generated = time.perf_counter() - started
        with engine.begin() as conn:  # planner statistics after the bulk load, as autovacuum would
            conn.execute(text("ANALYZE"))
        with sessions() as session:
            rows = {t.__tablename__: session.scalar(select(func.count()).select_from(t)) or 0
                    for t in (Customer, PhoneNumber, Product, ServiceOrder)}
        store = CustomerStore(sessions)
        numbers = sample_numbers(engine, lookups + WARMUP, seed=2)
        for number in numbers[:WARMUP]:
            store.lookup(number)
        timings: list[float] = []
        statuses: Counter[str] = Counter()
        cards = products = orders = 0
        for number in numbers[WARMUP:]:
            t0 = time.perf_counter()
            result = store.lookup(number)
            timings.append((time.perf_counter() - t0) * 1000)
            statuses[result.status] += 1
            cards += len(result.cards)
            products += sum(len(c.products) for c in result.cards)
            orders += sum(len(c.service_orders) for c in result.cards)
        size = ""
        if engine.dialect.name == "sqlite" and engine.url.database:
            size = f"{os.path.getsize(engine.url.database) / 1e6:.0f} MB file"
        engine.dispose()
    return {
        "backend": backend, "customers": rows["customers"], "rows": rows, "generate_s": round(generated, 1),
        "lookups": len(timings), "statuses": dict(statuses),
        "avg_cards": round(cards / len(timings), 2), "avg_products": round(products / len(timings), 2),
        "avg_orders": round(orders / len(timings), 2),
        "p50_ms": round(percentile(timings, 0.50), 3), "p90_ms": round(percentile(timings, 0.90), 3),
        "p99_ms": round(percentile(timings, 0.99), 3), "max_ms": round(max(timings), 3),
        "mean_ms": round(statistics.fmean(timings), 3), "size": size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgres"))
    parser.add_argument("--keep", type=Path, help="SQLite only: keep (and reuse) the database in this directory")
    parser.add_argument("--url", help="use this database (SQLAlchemy URL) instead of starting one; "
                        "customers are added only if it holds fewer than --customers")
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgres"]:
        result = run(backend, args.customers, args.lookups, args.keep, args.url)
        print(f"{result['backend']:>8}: {result['customers']:,} customers "
              f"(generated in {result['generate_s']} s{', ' + str(result['size']) if result['size'] else ''}), "
              f"{result['lookups']:,} lookups: p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms, "
              f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms", flush=True)
        print(f"          rows {result['rows']}; statuses {result['statuses']}; per lookup "
              f"{result['avg_cards']} cards, {result['avg_products']} products, {result['avg_orders']} orders",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
