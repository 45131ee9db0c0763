"""Asterisk CPU per call, with and without the service's AMI session.

    .venv/bin/python tests/bench/bench_asterisk_cpu.py [--calls 300] [--rate 20] [--rounds 3] [--read-all]

Starts its own sandbox Asterisk 22 (instance `bench-<pid>`, port offset 40000: SIP
45060, AMI 45038, FastAGI 44573, RTP 50000-50999) with the default hotline definition,
and a FastAGI responder (our `ivr.agi.FastAGIServer`) whose handler only sets
HOTLINE_ACTION=hangup HOTLINE_TARGET=normal, so every call runs the real [hotline]
context (Answer, MixMonitor of three legs, AGI) and ends in Hangup(16). SIPp (inside
the root) places `--calls` short calls at `--rate` calls/s through the carrier trunk
(INVITE to 4000 with `X-Hotline-Trunk: carrier`, no RTP, BYE from Asterisk).

Asterisk's CPU is utime+stime of its pid (/proc/PID/stat, all threads, exited ones
included) across the run plus a short settle, minus its idle rate (measured over
long windows before and after all runs), divided by the calls SIPp completed.
Conditions, interleaved over `--rounds` rounds (the order alternates):

  none        no AMI client connected
  filtered    the service's AMIClient (+ CallTracker) as user `hotline`, whose
              manager.conf section is the compiler's, with its eventfilter lines
  unfiltered  the same client as a second user with the same read classes and no
              eventfilter (written into this instance's manager.conf by this script)
  read-all    (--read-all) as unfiltered, with read = all (TestEvent, DTMF ... too)

Everything stays on loopback; Asterisk is stopped by pid and the instance's
directories are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cti.ami.client import AMIClient  # noqa: E402
from cti.ami.events import Event  # noqa: E402
from cti.tracker import CallTracker  # noqa: E402
from dialplans.definition import DEFAULT_PATH, load_definition  # noqa: E402
from hotline.sandbox import Sandbox, SandboxPorts, root_path  # noqa: E402
from ivr.agi.server import AGIChannel, FastAGIServer  # noqa: E402

PORT_OFFSET = 40000
SIPP_PORT = PORT_OFFSET + 5070  # SIPp's own SIP port
SIPP_MEDIA_PORT = PORT_OFFSET + 5200  # advertised in SDP; SIPp sends no RTP
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROMPT_CACHE = Path(os.environ.get("HOTLINE_BENCH_CACHE", Path.home() / ".cache" / "hotline" / "bench-cache"))

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="hotline short call via the carrier trunk">
  <send retrans="500">
    <![CDATA[
      INVITE sip:4000@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "bench" <sip:13800138000@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:4000@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:13800138000@[local_ip]:[local_port]>
      Max-Forwards: 70
      X-Hotline-Trunk: carrier
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:4000@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "bench" <sip:13800138000@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:4000@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:13800138000@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv request="BYE" timeout="20000"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:13800138000@[local_ip]:[local_port]>
      Content-Length: 0
    ]]>
  </send>
</scenario>
"""


# -- measurements -----------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


@dataclass
class Run:
    condition: str
    calls: int
    failed: int
    wall: float
    cpu: float  # Asterisk CPU seconds during the run and settle
    idle_rate: float  # Asterisk CPU seconds per second while idle, just before
    events: int = 0
    ami_bytes: int = 0

    @property
    def ms_per_call(self) -> float:
        return (self.cpu - self.idle_rate * self.wall) / self.calls * 1000 if self.calls else float("nan")

    @property
    def raw_ms_per_call(self) -> float:
        return self.cpu / self.calls * 1000 if self.calls else float("nan")


@dataclass
class Session:
    """An AMI consumer like the service's: AMIClient -> CallTracker, counting what arrives."""

    client: AMIClient
    tracker: CallTracker = field(default_factory=CallTracker)
    events: int = 0
    wire_bytes: int = 0
    ended: int = 0

    def on_event(self, event: Event) -> None:
        self.events += 1
        # The message's size on the wire (CRLF lines and the blank line).
        self.wire_bytes += sum(len(k) + len(v) + 4 for k, v in event.raw.headers) + 2
        for call_event in self.tracker.feed(event):
            self.ended += call_event.kind == "call_ended"


# -- the sandbox ------------------------------------------------------------------------
def add_manager_user(sandbox: Sandbox, name: str, secret: str, read: str) -> None:
    """A manager.conf section without eventfilter lines, appended to this instance only."""
    path = sandbox.host(sandbox.etc) / "manager.conf"
    text = path.read_text()
    section = re.search(r"^\[hotline\]\n(.*?)(?=^\[|\Z)", text, re.S | re.M)
    if section is None:
        raise SystemExit("manager.conf has no [hotline] section")
    lines = [line for line in section.group(1).splitlines()
             if line.strip() and not line.startswith(("eventfilter", "secret", "read"))]
    path.write_text(text.rstrip("\n") + f"\n\n; added by {Path(__file__).name}: no eventfilter\n[{name}]\n"
                    f"secret = {secret}\nread = {read}\n" + "\n".join(lines) + "\n")


def bind_rtp_to_media_address(sandbox: Sandbox) -> None:
    """`bind_rtp_to_media_address = yes` on every endpoint of this instance's pjsip.conf.

    As generated, RTP binds to 0.0.0.0, and then res_rtp_asterisk looks up "our" address
    for every call (ast_find_ourip: the host name, then A.ROOT-SERVERS.NET) from a PJSIP
    thread. Inside the root neither resolves; a few per cent of those DNS queries time
    out after 5 s here, stalling INVITEs, and at 20 calls/s a third of the calls fail.
    """
    path = sandbox.host(sandbox.etc) / "pjsip.conf"
    text = path.read_text()
    if "media_address = " not in text:
        raise SystemExit("pjsip.conf has no media_address: nothing to bind RTP to")
    if "bind_rtp_to_media_address = yes" in text:
        return  # the compiler writes it since the DNS stall was found
    path.write_text(re.sub(r"^(media_address = .*)$", r"\1\nbind_rtp_to_media_address = yes", text, flags=re.M))


async def hangup_handler(channel: AGIChannel) -> None:
    await channel.set_variable("HOTLINE_ACTION", "hangup")
    await channel.set_variable("HOTLINE_TARGET", "normal")


async def run_sipp(root: Path, scenario_inside: str, sandbox: Sandbox, calls: int, rate: int,
                   workdir_inside: str) -> tuple[int, int, str]:
    """Place the calls; returns (successful, failed, SIPp's output tail)."""
    budget = calls / rate + 60
    cmd = ["chroot", str(root), "sipp", f"127.0.0.1:{sandbox.ports.sip}", "-sf", scenario_inside,
           "-i", "127.0.0.1", "-p", str(SIPP_PORT), "-mp", str(SIPP_MEDIA_PORT), "-m", str(calls),
           "-r", str(rate), "-rp", "1000", "-l", str(max(50, rate * 5)), "-nostdin",
           "-timeout", f"{int(budget)}s", "-trace_stat", "-stf", f"{workdir_inside}/stat.csv",
           "-fd", "1", "-trace_err", "-error_file", f"{workdir_inside}/errors.log"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(budget + 30):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    stat = (root / workdir_inside.lstrip("/") / "stat.csv").read_text().splitlines()
    header, last = stat[0].split(";"), stat[-1].split(";")
    row = dict(zip(header, last, strict=False))
    ok, failed = int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))
    return ok, failed, out.decode(errors="replace")[-2000:]


async def idle_rate(pid: int, seconds: float) -> float:
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)


async def one_run(condition: str, args: argparse.Namespace, sandbox: Sandbox, pid: int,
                  users: dict[str, tuple[str, str]], workdir_inside: str) -> Run:
    session: Session | None = None
    if condition != "none":
        username, secret = users[condition]
        session = Session(AMIClient("127.0.0.1", sandbox.ports.ami, username, secret, ping_interval=3600))
        session.client.on_event = session.on_event
        await session.client.start()
        await session.client.wait_ready(10)
    try:
        await asyncio.sleep(1.0)  # login burst (FullyBooted, QueueMemberStatus ...) out of the way
        events_before = session.events if session else 0
        bytes_before = session.wire_bytes if session else 0
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        ok, failed, output = await run_sipp(sandbox.root, f"{workdir_inside}/call.xml", sandbox, args.calls,
                                            args.rate, workdir_inside)
        await asyncio.sleep(args.settle)  # hangups, MixMonitor closing files, CDRs
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        if ok == 0:
            print(output, file=sys.stderr)
        return Run(condition, ok, failed, t1 - t0, cpu1 - cpu0, 0.0,
                   events=(session.events - events_before) if session else 0,
                   ami_bytes=(session.wire_bytes - bytes_before) if session else 0)
    finally:
        if session is not None:
            await session.client.stop()


def keep_logs(keep: Path, *sources: Path) -> None:
    keep.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if source.is_file():
            shutil.copy(source, keep / source.name)


async def bench(args: argparse.Namespace) -> list[Run]:
    root = root_path()
    if not (root / "usr/sbin/asterisk").exists():
        raise SystemExit(f"no sandbox root at {root}: run `bash .ci/setup` (or docker/sandbox/build-root.sh) first")
    if not (root / "usr/bin/sipp").exists():
        raise SystemExit(f"{root} has no sipp (package sip-tester): rebuild the root")
    state_dir = Path(tempfile.mkdtemp(prefix="hotline-bench-state-"))
    sandbox = Sandbox(root, f"bench-{os.getpid()}", SandboxPorts.offset(PORT_OFFSET), state_dir=state_dir)
    workdir_inside = f"/tmp/hotline-bench-{os.getpid()}"
    workdir = root / workdir_inside.lstrip("/")
    agi = FastAGIServer({"hotline": hangup_handler}, host="127.0.0.1", port=sandbox.ports.agi)
    runs: list[Run] = []
    try:
        definition = load_definition(DEFAULT_PATH)
        sandbox.install(definition, cache_dir=PROMPT_CACHE / "prompts")
        secret = str(sandbox.load_or_create_secrets(definition)["ami_secret"])
        users = {"filtered": ("hotline", secret)}
        for condition, read in (("unfiltered", None), ("read-all", "all")):
            if condition == "read-all" and not args.read_all:
                continue
            name, user_secret = f"bench-{condition}", secrets.token_urlsafe(12)
            hotline_read = re.search(r"^\[hotline\]\n(?:.*\n)*?read = (.*)$", (sandbox.host(sandbox.etc) /
                                     "manager.conf").read_text(), re.M)
            add_manager_user(sandbox, name, user_secret, read or (hotline_read.group(1) if hotline_read else "all"))
            users[condition] = (name, user_secret)
        if not args.as_generated:
            bind_rtp_to_media_address(sandbox)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "call.xml").write_text(SCENARIO)
        await agi.start()
        pid = sandbox.start()
        await sandbox.wait_booted(timeout=30)
        comm = Path(f"/proc/{pid}/comm").read_text().strip()  # noqa: ASYNC240 - procfs, instant
        print(f"Asterisk pid {pid} ({comm}), instance {sandbox.instance}, "
              f"SIP {sandbox.ports.sip}, AMI {sandbox.ports.ami}, FastAGI {sandbox.ports.agi}", flush=True)
        conditions = ["none", "filtered", "unfiltered"] + (["read-all"] if args.read_all else [])
        if args.conditions:
            conditions = [c for c in args.conditions.split(",") if c in conditions]
        # A warm-up run (first calls page in code, fill caches, create astdb rows).
        warm = await one_run("none", argparse.Namespace(**{**vars(args), "calls": min(60, args.calls)}),
                             sandbox, pid, users, workdir_inside)
        print(f"warm-up: {warm.calls} calls, {warm.ms_per_call:.2f} ms CPU/call", flush=True)
        # Asterisk's own background CPU (timers, PJSIP, taskprocessors): /proc/PID/stat
        # counts in clock ticks (10 ms), so it is measured over long windows, before
        # and after the runs, and subtracted from every run pro rata.
        idle_before = await idle_rate(pid, args.idle)
        for round_no in range(args.rounds):
            order = conditions if round_no % 2 == 0 else conditions[::-1]
            for condition in order:
                run = await one_run(condition, args, sandbox, pid, users, workdir_inside)
                runs.append(run)
                print(f"round {round_no + 1} {condition:<10} {run.calls} ok / {run.failed} failed, "
                      f"{run.raw_ms_per_call:.2f} ms CPU/call before idle correction, "
                      f"AMI {run.events / max(run.calls, 1):.1f} events/call", flush=True)
        idle_after = await idle_rate(pid, args.idle)
        idle = (idle_before + idle_after) / 2
        print(f"Asterisk idle: {idle_before * 1000:.1f} ms/s before, {idle_after * 1000:.1f} ms/s after "
              f"({args.idle:.0f} s each)", flush=True)
        for run in runs:
            run.idle_rate = idle
    finally:
        await agi.stop()
        cleanup(sandbox, workdir, state_dir, args.keep_logs)
    return runs


def cleanup(sandbox: Sandbox, workdir: Path, state_dir: Path, keep: str | None) -> None:
    """Stop Asterisk by pid and remove everything of this instance (a second Ctrl-C waits)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sandbox.stop()
        if keep:
            keep_logs(Path(keep), sandbox.log_dir / "messages.log", workdir / "errors.log", workdir / "stat.csv")
        sandbox.remove_dirs()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(state_dir, ignore_errors=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def report(runs: list[Run], args: argparse.Namespace) -> None:
    by: dict[str, list[Run]] = {}
    for run in runs:
        by.setdefault(run.condition, []).append(run)
    base = statistics.mean(r.ms_per_call for r in by["none"])
    print(f"\nAsterisk CPU per call ({args.calls} calls at {args.rate}/s per run, {args.rounds} rounds; "
          "idle-corrected, mean of rounds):")
    print(f"  {'condition':<12} {'calls':>6} {'failed':>6} {'ms/call':>8} {'min..max':>13} {'raw':>6} "
          f"{'vs none':>8} {'AMI ev/call':>11} {'AMI KB/call':>11}")
    for condition, rs in by.items():
        values = [r.ms_per_call for r in rs]
        mean = statistics.mean(values)
        raw = statistics.mean(r.raw_ms_per_call for r in rs)
        calls = sum(r.calls for r in rs)
        events = sum(r.events for r in rs) / calls if calls else 0.0
        kbytes = sum(r.ami_bytes for r in rs) / calls / 1024 if calls else 0.0
        print(f"  {condition:<12} {calls:>6} {sum(r.failed for r in rs):>6} {mean:>8.2f} "
              f"{min(values):>6.2f}..{max(values):<6.2f} {raw:>6.2f} {mean / base:>7.2f}x {events:>11.1f} "
              f"{kbytes:>11.2f}")
    print("  (ms/call: Asterisk utime+stime during the run and a settle, minus its idle rate; raw: not minus)")
    # Paired with the "none" run of the same round: Asterisk's cost per call drifts up
    # slowly over a session (more recordings, CDR rows, log), so the rounds differ.
    rounds = [runs[i:i + len(by)] for i in range(0, len(runs), len(by))]
    print("\n  Paired with the round's no-AMI run (ms/call added by the session; per round, mean):")
    for condition in by:
        if condition == "none":
            continue
        deltas = []
        for round_runs in rounds:
            ms = {r.condition: r.ms_per_call for r in round_runs}
            if condition in ms and "none" in ms:
                deltas.append(ms[condition] - ms["none"])
        if deltas:
            per_round = " ".join(f"{d:+.2f}" for d in deltas)
            print(f"  {condition:<12} {per_round:<24} mean {statistics.mean(deltas):+.2f} ms/call "
                  f"({statistics.mean(deltas) / base:+.0%} of none)")
    if "filtered" in by and "unfiltered" in by:
        filtered = statistics.mean(r.ms_per_call for r in by["filtered"])
        unfiltered = statistics.mean(r.ms_per_call for r in by["unfiltered"])
        print(f"\n  AMI session cost: filtered +{filtered - base:.2f} ms/call ({(filtered / base - 1):+.0%}), "
              f"unfiltered +{unfiltered - base:.2f} ms/call ({(unfiltered / base - 1):+.0%}); "
              f"unfiltered/filtered = {unfiltered / filtered:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300, help="calls per run")
    ap.add_argument("--rate", type=int, default=20, help="calls per second")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over the conditions (order alternates)")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement, before and after")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds after SIPp ends, still measured")
    ap.add_argument("--read-all", action="store_true", help="add a 4th condition: unfiltered with read = all")
    ap.add_argument("--as-generated", action="store_true",
                    help="keep pjsip.conf exactly as generated (RTP bound to 0.0.0.0: see the README)")
    ap.add_argument("--conditions", help="comma-separated subset of none,filtered,unfiltered,read-all")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy messages.log and SIPp's error log here at the end")
    args = ap.parse_args()
    print(f"machine: nproc={os.cpu_count()}, Python {sys.version.split()[0]}, {os.uname().machine}", flush=True)
    runs = asyncio.run(bench(args))
    report(runs, args)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
