"""Survey dialer throughput and limits against a real sandbox Asterisk.

    .venv/bin/python tests/bench/bench_survey_dialer.py [--jobs 300] [--pace 10 --pace 40 --pace 150]
        [--max-concurrent 60] [--port-offset 31000]

Each run creates one campaign of --jobs surveys whose "customers" are Local channels
(`Local/<number>@survey-sim`: answer, 1 s of silence, hang up) and runs the real
SurveyDialer (SQLite store, attempt row before every Originate, AMI Originate through
cti.originate.Originator with the attempt's ChannelId and the do-not-call check) until
every job is settled. Everything is measured from AMI events
(Newchannel / Hangup of the ;1 channels), not from the dialer's own counters:
sustained originate rate (first to last start), the most starts in any 1 s window,
the peak number of simultaneous survey channels, and the ratio of the achieved rate
to the configured pace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cti.ami.client import AMIClient  # noqa: E402
from cti.ami.events import Hangup, Newchannel  # noqa: E402
from cti.db import create_schema, make_engine, session_factory  # noqa: E402
from dialplans.definition import DEFAULT_PATH, load_definition  # noqa: E402
from hotline.sandbox import Sandbox, SandboxPorts, root_path  # noqa: E402
from ivr.survey import models  # noqa: E402
from ivr.survey.dialer import SurveyDialer  # noqa: E402
from ivr.survey.rules import SystemClock  # noqa: E402
from ivr.survey.store import SurveyStore  # noqa: E402
from tests.support.calls import wait_for  # noqa: E402

PROMPT_CACHE = Path.home() / ".cache" / "hotline" / "test-cache" / "prompts"


def peak(intervals: list[tuple[float, float]]) -> int:
    marks = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = top = 0
    for _, step in marks:
        level += step
        top = max(top, level)
    return top


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + 1.0:
            j += 1
        best = max(best, j - i)
    return best


async def one_run(store: SurveyStore, ami: AMIClient, name: str, jobs: int, pace: float, cap: int) -> dict[str, float]:
    store.create_campaign(name, rules={"window_start": "00:00", "window_end": "23:59", "max_attempts": 1,
                                       "dial": "Local/{number}@survey-sim", "context": "survey-sim", "exten": "s",
                                       "pace_per_second": pace, "max_concurrent": cap, "period_days": 0})
    prefix = {}
    base = 13100000000 + int(time.time()) % 1000 * 10000
    for i in range(jobs):
        result = store.enqueue(name, str(base + i), f"bench:{i}")
        assert result.job_id is not None, result
        prefix[f"survey-{result.job_id}-"] = True
    starts: list[float] = []
    spans: list[tuple[float, float]] = []
    opened: dict[str, float] = {}
    sub = ami.subscribe(maxsize=1_000_000)
    dialer = SurveyDialer(store, ami, campaigns=[name])
    wall = time.monotonic()
    task = asyncio.create_task(dialer.run())
    try:
        while len(spans) < jobs:
            event = await sub.get(timeout=120)
            uid = event.channel.uniqueid if isinstance(event, (Newchannel, Hangup)) and event.channel else ""
            if not uid.startswith("survey-") or ";" in uid or uid[: uid.index("-", 7) + 1] not in prefix:
                continue
            at = float(event.raw.get("Timestamp") or 0)
            if isinstance(event, Newchannel):
                starts.append(at)
                opened[uid] = at
            elif uid in opened:
                spans.append((opened.pop(uid), at))
        campaign_id = int(store.campaign(name)["id"])
        await wait_for(lambda: store.in_flight(campaign_id) == 0, 60, "every attempt settled", interval=0.1)
        elapsed = time.monotonic() - wall
    finally:
        task.cancel()
        await asyncio.wait({task})
        sub.close()
    starts.sort()
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    return {"jobs": jobs, "pace_limit": pace, "concurrency_limit": cap, "sustained_rate_per_s": round(rate, 2),
            "rate_to_pace": round(rate / pace, 3), "max_starts_in_1s": busiest_second(starts),
            "peak_concurrent": peak(spans), "wall_seconds": round(elapsed, 1)}


async def main(args: argparse.Namespace) -> None:
    root = root_path()
    if not (root / "usr/sbin/asterisk").exists():
        raise SystemExit(f"no sandbox root at {root}: run `bash .ci/setup` first")
    state = Path(tempfile.mkdtemp(prefix="hotline-bench-survey-"))
    sandbox = Sandbox(root, f"bench-survey-{os.getpid()}", SandboxPorts.offset(args.port_offset), state_dir=state)
    definition = load_definition(DEFAULT_PATH)
    sandbox.install(definition, cache_dir=PROMPT_CACHE)
    secret = str(sandbox.load_or_create_secrets(definition)["ami_secret"])
    sandbox.start()
    try:
        await sandbox.wait_booted(timeout=30)
        _ = models.SurveyJob
        engine = make_engine(f"sqlite:///{state / 'bench.sqlite3'}")
        create_schema(engine)
        store = SurveyStore(session_factory(engine), SystemClock())
        ami = AMIClient("127.0.0.1", sandbox.ports.ami, "hotline", secret)
        await ami.start()
        await ami.wait_ready(15)
        results = []
        for n, pace in enumerate(args.pace):
            result = await one_run(store, ami, f"bench-{n}", args.jobs, pace, args.max_concurrent)
            print(json.dumps(result), flush=True)
            results.append(result)
        await ami.stop()
        engine.dispose()
    finally:
        sandbox.stop()
        for inside in (sandbox.etc, sandbox.run, sandbox.log, sandbox.spool, sandbox.lib):
            shutil.rmtree(sandbox.host(inside), ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--pace", type=float, action="append", help="originates per second (repeatable)")
    ap.add_argument("--max-concurrent", type=int, default=60)
    ap.add_argument("--port-offset", type=int, default=31000)
    parsed = ap.parse_args()
    parsed.pace = parsed.pace or [10.0, 40.0, 150.0]
    asyncio.run(main(parsed))
