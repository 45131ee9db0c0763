"""Screen-pop latency: AMI event in -> customer card out on the agent's websocket.

    .venv/bin/python tests/bench/bench_screen_pop.py [--customers 1000000] [--calls 2000]
        [--backend sqlite --backend postgres] [--keep DIR]

The whole service path runs in one process: AMI wire bytes -> AMIParser -> typed
events -> CallTracker -> ScreenPop (customer lookup in a worker thread against the
real store holding --customers demo customers) -> EventHub -> the aiohttp websocket
(cti.web) -> an aiohttp websocket client logged in as the ringing agent. For each
call, Newchannel (the caller's number) and AgentCalled are fed back to back, so the
lookup has not started earlier than the ring: the worst case (in a real call the IVR
gives the lookup seconds of head start). Latency is measured from feeding the
AgentCalled bytes to the client receiving that call's screen_pop. Target: p99 under
20 ms on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for path in (REPO, REPO / "tests" / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402
from bench_customer_lookup import database, percentile, sample_numbers  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from cti.ami.events import parse_event  # noqa: E402
from cti.ami.protocol import AMIParser, encode_message  # noqa: E402
from cti.auth import TokenStore  # noqa: E402
from cti.customers.demo import generate  # noqa: E402
from cti.customers.models import Customer  # noqa: E402
from cti.customers.store import CustomerStore  # noqa: E402
from cti.db import create_schema, make_engine, session_factory  # noqa: E402
from cti.screenpop import ScreenPop  # noqa: E402
from cti.stream import EventHub  # noqa: E402
from cti.tracker import CallTracker  # noqa: E402
from cti.web import HUB, SNAPSHOT, TOKENS, auth_middleware, websocket  # noqa: E402

AGENT = "1001"


def call_bytes(n: int, number: str) -> tuple[bytes, bytes]:
    """(Newchannel of the caller, AgentCalled ringing agent 1001) as Asterisk 22 sends them."""
    uid = f"1795400000.{n}"
    chan = f"PJSIP/carrier-{n:08x}"
    common = [("Channel", chan), ("ChannelState", "4"), ("ChannelStateDesc", "Ring"), ("CallerIDNum", number),
              ("CallerIDName", ""), ("ConnectedLineNum", ""), ("ConnectedLineName", ""), ("Language", "en"),
              ("AccountCode", ""), ("Context", "from-trunk"), ("Exten", "4000"), ("Priority", "1"),
              ("Uniqueid", uid), ("Linkedid", uid)]
    newchannel = encode_message([("Event", "Newchannel"), ("Privilege", "call,all"), *common])
    dest = [("Dest" + k, v) for k, v in common]
    dest = [(k, f"PJSIP/{AGENT}-{n:08x}" if k == "DestChannel" else f"1795400000.{n}9" if k == "DestUniqueid"
             else v) for k, v in dest]
    agent_called = encode_message([("Event", "AgentCalled"), ("Privilege", "agent,all"), *common, *dest,
                                   ("Queue", "repair"), ("MemberName", AGENT), ("Interface", f"PJSIP/{AGENT}")])
    return newchannel, agent_called


async def measure(url: str, numbers: list[str]) -> list[float]:
    engine = make_engine(url)
    create_schema(engine)
    sessions = session_factory(engine)
    store = CustomerStore(sessions)
    tokens = TokenStore(sessions)
    token = tokens.issue("bench-agent", "agent", AGENT)
    hub = EventHub()
    pop = ScreenPop(hub, lambda number: store.lookup(number).to_dict())
    tracker = CallTracker()
    parser = AMIParser()
    parser.feed(b"Asterisk Call Manager/11.0.0\r\n")
    app = web.Application(middlewares=[auth_middleware])
    app[TOKENS], app[HUB], app[SNAPSHOT] = tokens, hub, (lambda p: {"calls": []})
    app.router.add_get("/ws", websocket)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    await pop.start()
    received: dict[str, float] = {}
    arrived = asyncio.Event()
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(server.make_url("/ws").with_query({"token": token}))
            await ws.receive_json()  # snapshot

            async def reader() -> None:
                async for msg in ws:
                    data = msg.json()
                    if data["type"] == "screen_pop":
                        received[data["linkedid"]] = time.perf_counter()
                        arrived.set()

            read_task = asyncio.create_task(reader())

            def feed(raw: bytes) -> None:
                for message in parser.feed(raw):
                    for call_event in tracker.feed(parse_event(message)):
                        pop.on_call_event(call_event)

            for n, number in enumerate(numbers):
                linkedid = f"1795400000.{n}"
                newchannel, agent_called = call_bytes(n, number)
                feed(newchannel)
                started = time.perf_counter()
                feed(agent_called)
                while linkedid not in received:
                    arrived.clear()
                    await asyncio.wait_for(arrived.wait(), 5)
                latencies.append((received.pop(linkedid) - started) * 1000)
            read_task.cancel()
            await ws.close()
    finally:
        await pop.stop()
        await server.close()
        engine.dispose()
    return latencies


def prepare(url: str, customers: int, calls: int) -> list[str]:
    engine = make_engine(url)
    create_schema(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        have = session.scalar(select(func.count()).select_from(Customer)) or 0
    if have < customers:
        generate(sessions, customers - have, seed=1)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    numbers = sample_numbers(engine, calls, seed=3)
    engine.dispose()
    # As a carrier presents them: national digits only.
    return ["".join(ch for ch in n if ch.isdigit()) for n in numbers]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgres"))
    parser.add_argument("--keep", type=Path, help="SQLite only: keep (and reuse) the database in this directory")
    parser.add_argument("--url", help="use this database (SQLAlchemy URL) instead of starting one; "
                        "customers are added only if it holds fewer than --customers")
    args = parser.parse_args()
    print(f"machine: nproc={os.cpu_count()} python={sys.version.split()[0]}")
    print(f"{'backend':<10} {'customers':>10} {'calls':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for backend in args.backend or ["sqlite", "postgres"]:
        with contextlib.nullcontext(args.url) if args.url else database(backend, args.keep) as url:
            numbers = prepare(url, args.customers, args.calls + 200)
            random.Random(4).shuffle(numbers)
            asyncio.run(measure(url, numbers[:200]))  # warm-up: caches, connection pool
            lat = asyncio.run(measure(url, numbers[200:]))
        print(f"{backend:<10} {args.customers:>10} {len(lat):>6} {percentile(lat, .5):>8.2f} "
              f"{percentile(lat, .9):>8.2f} {percentile(lat, .99):>8.2f} {max(lat):>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
