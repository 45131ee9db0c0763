"""FastAGI benchmark: our server against pyst2 (threaded) and panoramisk.fast_agi, in one run.

    .venv/bin/python tests/bench/bench_fastagi.py [--seconds 5] [--concurrency 1,100,1000]
    .venv/bin/python tests/bench/bench_fastagi.py --profile 100     # cProfile our server

The load generator plays Asterisk's side over loopback TCP, one closed loop per
concurrent call: connect, send the environment block Asterisk 22 writes for
`AGI(agi://127.0.0.1:4573/hotline)` (setup_env() order, a fresh channel name and
uniqueid per call), then answer every command line with the `200 result=...` line
res_agi.c writes, and wait for the server to close the connection. The script is
the 8 commands our engine sends for a menu call where the caller presses 1 after
the prompts (ivr.engine.FlowRunner on the default hotline menu, then
publish_outcome):

    STREAM FILE <welcome> 0123456789*#       200 result=0 endpos=...
    STREAM FILE <menu> 0123456789*#          200 result=0 endpos=...
    WAIT FOR DIGIT 5000                      200 result=49
    STREAM FILE <connecting> ""              200 result=0 endpos=...
    SET VARIABLE HOTLINE_CHOICE 1            200 result=1
    SET VARIABLE HOTLINE_ROUTE_REASON menu:1 200 result=1
    SET VARIABLE HOTLINE_TARGET repair       200 result=1
    SET VARIABLE HOTLINE_ACTION queue        200 result=1

Every command is checked (split the way res_agi.c parse_args() does) before it is
answered; a wrong one ends that call as an error.

Servers, each in its own process pinned to one CPU (the load generator, one process,
is pinned to the other); all are started first and the runs interleaved:
* floor: a bare asyncio protocol writing the expected lines blindly (no parsing, no
  tasks): what the event loop + the kernel cost on this machine;
* ours: ivr.agi.server.FastAGIServer with AGIChannel's typed commands, on the event
  loop the service runs (settings.event_loop: uvloop unless HOTLINE_EVENT_LOOP=asyncio);
* pyst2: socketserver.ThreadingTCPServer (a thread per call) with pyst2's
  asterisk.agi.AGI reading/writing the socket's file objects (its __init__ is
  bypassed: it installs a SIGHUP handler, which only works in the main thread);
* panoramisk: panoramisk.fast_agi.Application on asyncio.start_server;
* "+asyncio" / "+uvloop" after an asyncio server's name picks its loop (floor and
  panoramisk default to asyncio's): ours+asyncio, floor+uvloop, panoramisk+uvloop.
Every server gets the same listen backlog (BACKLOG).

The generator stands in for Asterisk's C code, so it is kept as cheap as it can be
while checking every line exactly as before: uvloop's loop when installed
(--gen-loop), a buffered protocol per call, no timer and no waiting coroutine per call
(each caller slot starts its next call from connection_lost; one sweeper aborts calls
older than CALL_TIMEOUT), answers as precomputed bytes; latencies are taken at the
same points as before. On asyncio's loop it needed about 500 us of CPU per call and was
at 90% of its core at 2,000 calls/s, which capped every server and added its own
queueing to the latencies; on uvloop about 280 us.

Reported per server and concurrency: completed calls/s; command latency p50/p99/max,
i.e. the time from writing a response (or the environment block) to receiving the
next command, as Asterisk sees it; the whole call's duration p99 (connect to the
server's close); the server's CPU use (share of one core, CPU µs per call, the
kernel's share of it); "srv wait", the time the server was runnable but waiting for
a CPU (/proc/PID/task/*/schedstat: other processes on a shared machine); the
generator's CPU use; errors. Before the TCP runs, our stack alone (no sockets: a
transport that answers in the next loop pass) gives our Python cost per call.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import cProfile
import functools
import importlib.util
import logging
import os
import pstats
import signal
import socketserver
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cti import channel_vars as cv  # noqa: E402
from ivr.agi.eventloop import tune_gc  # noqa: E402
from ivr.agi.server import AGIChannel, FastAGIServer, _Link  # noqa: E402
from tests.support.fake_asterisk_agi import asterisk_parse_args, env_block  # noqa: E402

#: `ours` runs on the service's event loop (uvloop unless HOTLINE_EVENT_LOOP=asyncio);
#: "+asyncio" / "+uvloop" after an asyncio server's name picks the loop (default: asyncio's).
SERVERS = ("floor", "ours", "ours+asyncio", "pyst2", "panoramisk")
UVLOOP_SERVERS = ("floor+uvloop", "panoramisk+uvloop")
DTMF = "0123456789*#"
SOUNDS = "/var/lib/hotline/sounds/zh/"
PROMPTS = {name: SOUNDS + name for name in ("welcome", "menu", "connecting", "invalid", "timeout")}
CHOICES = {"1": "repair", "2": "installation", "3": "complaint", "0": "operator"}
#: The argv Asterisk must see for each command, and what it answers.
SCRIPT: tuple[tuple[list[str], bytes], ...] = (
    (["STREAM", "FILE", PROMPTS["welcome"], DTMF], b"200 result=0 endpos=28800\n"),
    (["STREAM", "FILE", PROMPTS["menu"], DTMF], b"200 result=0 endpos=61440\n"),
    (["WAIT", "FOR", "DIGIT", "5000"], b"200 result=49\n"),
    (["STREAM", "FILE", PROMPTS["connecting"], ""], b"200 result=0 endpos=12800\n"),
    (["SET", "VARIABLE", cv.CHOICE, "1"], b"200 result=1\n"),
    (["SET", "VARIABLE", cv.ROUTE_REASON, "menu:1"], b"200 result=1\n"),
    (["SET", "VARIABLE", cv.TARGET, "repair"], b"200 result=1\n"),
    (["SET", "VARIABLE", cv.ACTION, "queue"], b"200 result=1\n"),
)
COMMANDS = len(SCRIPT)
#: The same listen queue for every server (asyncio's default is 100, socketserver's 5).
BACKLOG = 1024


# -- the servers ---------------------------------------------------------------------------


async def _our_script(channel: AGIChannel) -> None:
    # What ivr.engine.FlowRunner + publish_outcome send for this call, written out
    # like the other servers' scripts so that only the FastAGI layer is compared.
    digit = None
    for prompt in ("welcome", "menu"):
        digit = await channel.stream_file(PROMPTS[prompt], DTMF)
        if digit:
            break
    if not digit:
        digit = await channel.wait_for_digit(5000)
    target = CHOICES[digit or ""]
    await channel.stream_file(PROMPTS["connecting"])
    await channel.set_variable(cv.CHOICE, digit or "")
    await channel.set_variable(cv.ROUTE_REASON, f"menu:{digit}")
    await channel.set_variable(cv.TARGET, target)
    await channel.set_variable(cv.ACTION, "queue")


def serve_ours(port_fd: int, profile: bool) -> None:
    # Overload makes every command "slow" (> 1 s): that warning per command is noise here.
    logging.getLogger("ivr.agi.server").setLevel(logging.ERROR)
    tune_gc()  # as the service does at start-up (hotline/cli.py)

    async def main() -> None:
        server = FastAGIServer({"hotline": _our_script}, host="127.0.0.1", port=0, backlog=BACKLOG)
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        _announce(port_fd, server.port)
        await stop.wait()
        await server.stop()
        if server.failures or server.sessions_rejected:
            print(f"ours: {server.failures} failures, {server.sessions_rejected} rejected", file=sys.stderr)

    if profile:
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(main())
        prof.disable()
        stats = pstats.Stats(prof, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(25)
    else:
        asyncio.run(main())


def serve_pyst2(port_fd: int) -> None:
    from asterisk import agi as pyst2_agi

    class _Discard:
        def write(self, text: str) -> None:
            pass

        def flush(self) -> None:
            pass

    class SocketAGI(pyst2_agi.AGI):  # type: ignore[misc]
        """pyst2's AGI on a socket: its __init__ installs a SIGHUP handler (main thread
        only) and logs to stderr, so the adapter sets the same fields itself."""

        def __init__(self, rfile: Any, wfile: Any) -> None:
            self.stdin, self.stdout, self.stderr = rfile, wfile, _Discard()
            self._got_sighup = False
            self.env: dict[str, str] = {}
            self._get_agi_env()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            wfile = self.connection.makefile("w", encoding="utf-8", newline="\n")
            try:
                call = SocketAGI(self.rfile, wfile)
                digit = ""
                for prompt in ("welcome", "menu"):
                    digit = call.stream_file(PROMPTS[prompt], escape_digits=DTMF)
                    if digit:
                        break
                if not digit:
                    digit = call.wait_for_digit(5000)
                target = CHOICES[digit]
                call.stream_file(PROMPTS["connecting"])
                call.set_variable(cv.CHOICE, digit)
                call.set_variable(cv.ROUTE_REASON, f"menu:{digit}")
                call.set_variable(cv.TARGET, target)
                call.set_variable(cv.ACTION, "queue")
            finally:
                wfile.close()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = BACKLOG  # the default (5) drops SYNs at 100 calls

    with Server(("127.0.0.1", 0), Handler) as server:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        _announce(port_fd, server.server_address[1])
        server.serve_forever()


def serve_panoramisk(port_fd: int) -> None:
    from panoramisk.fast_agi import Application, Request

    async def hotline(request: Request) -> None:
        digit = ""
        for prompt in ("welcome", "menu"):
            reply = await request.send_command(f'STREAM FILE {PROMPTS[prompt]} "{DTMF}"')
            code = int(reply["result"][0])
            if code > 0:
                digit = chr(code)
                break
        if not digit:
            reply = await request.send_command("WAIT FOR DIGIT 5000")
            digit = chr(int(reply["result"][0]))
        target = CHOICES[digit]
        await request.send_command(f'STREAM FILE {PROMPTS["connecting"]} ""')
        await request.send_command(f"SET VARIABLE {cv.CHOICE} {digit}")
        await request.send_command(f"SET VARIABLE {cv.ROUTE_REASON} menu:{digit}")
        await request.send_command(f"SET VARIABLE {cv.TARGET} {target}")
        await request.send_command(f"SET VARIABLE {cv.ACTION} queue")

    async def main() -> None:
        app = Application()
        app.add_route("hotline", hotline)
        server = await asyncio.start_server(app.handler, "127.0.0.1", 0, backlog=BACKLOG)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        _announce(port_fd, server.sockets[0].getsockname()[1])
        await stop.wait()
        server.close()

    asyncio.run(main())


def serve_floor(port_fd: int) -> None:
    """The I/O floor: an asyncio protocol that writes the script's lines back blindly."""
    lines = [_floor_line(argv) for argv, _ in SCRIPT]

    class Floor(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.step = -1  # -1: reading the environment
            self.transport: asyncio.Transport | None = None
            self.buffer = memoryview(bytearray(4096))

        def get_buffer(self, sizehint: int) -> memoryview:
            return self.buffer

        def buffer_updated(self, nbytes: int) -> None:
            self.data_received(self.buffer[:nbytes].tobytes())

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)

        def data_received(self, data: bytes) -> None:
            assert self.transport is not None
            if self.step < 0 and not data.endswith(b"\n\n"):
                return
            self.step += 1
            if self.step < COMMANDS:
                self.transport.write(lines[self.step])
            else:
                self.transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", 0, backlog=BACKLOG)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        _announce(port_fd, server.sockets[0].getsockname()[1])
        await stop.wait()
        server.close()

    asyncio.run(main())


def _floor_line(argv: list[str]) -> bytes:
    words = argv[:3] if argv[0] == "WAIT" else argv[:2]
    return (" ".join(words + [f'"{a}"' for a in argv[len(words):]]) + "\n").encode()


def _announce(fd: int, port: int) -> None:
    os.write(fd, f"{port}\n".encode())
    os.close(fd)


# -- the load generator (Asterisk's side) --------------------------------------------------


@dataclass
class Window:
    """What one measured run collected."""

    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    durations: array.array[float] = field(default_factory=lambda: array.array("d"))
    completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    recording: bool = False

    def error(self, kind: str) -> None:
        if self.recording:
            self.errors[kind] = self.errors.get(kind, 0) + 1


class Checker:
    """Validates command lines, memoised: every call of one server sends the same bytes."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, bytes], bytes | None] = {}

    def answer(self, step: int, line: bytes) -> bytes | None:
        key = (step, line)
        answer = self._seen.get(key, b"")
        if answer == b"":
            answer = self._check(step, line)
            self._seen[key] = answer
        return answer

    @staticmethod
    def _check(step: int, line: bytes) -> bytes | None:
        if step >= COMMANDS:
            return None
        argv = asterisk_parse_args(line.decode("utf-8").rstrip("\n"))
        expected, answer = SCRIPT[step]
        # pyst2 always sends STREAM FILE's optional sample offset ("0").
        if argv == expected or (expected[:2] == ["STREAM", "FILE"] and argv == [*expected, "0"]):
            return answer
        print(f"unexpected command {step + 1}: {line!r}, want {expected}", file=sys.stderr)
        return None


#: Shared by every run: a line's verdict depends only on the step and the bytes.
CHECKER = Checker()


class AsteriskLeg(asyncio.BufferedProtocol):
    """One FastAGI call as Asterisk runs it: environment, then answer each command.

    Kept as cheap as it can be while still checking every line, because this one
    process stands in for Asterisk's C code for every call: when it saturates its
    core it caps every server and its own queueing shows up as server latency.
    Buffered (a plain Protocol costs a 256 KiB allocation per recv() on asyncio), no
    timer and no waiting coroutine per call (the caller slot chains the next call from
    connection_lost; a sweeper aborts calls older than CALL_TIMEOUT).
    """

    __slots__ = ("env", "slot", "window", "transport", "buffer", "step", "sent_at", "started")

    read_buffer = memoryview(bytearray(4096))  # shared: each read is consumed at once

    def __init__(self, env: bytes, slot: CallerSlot, window: Window) -> None:
        self.env = env
        self.slot = slot
        self.window = window
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.step = 0
        self.sent_at = 0.0
        self.started = time.perf_counter()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.read_buffer[:nbytes].tobytes())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.env)
        self.sent_at = time.perf_counter()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        transport = self.transport
        assert transport is not None
        window = self.window
        while (end := buffer.find(b"\n")) >= 0:
            now = time.perf_counter()
            if window.recording:
                window.latencies.append(now - self.sent_at)
            line, buffer = buffer[: end + 1], buffer[end + 1 :]
            answer = CHECKER.answer(self.step, line)
            if answer is None:
                self.slot.finish(self, "wrong command")
                transport.abort()
                return
            self.step += 1
            transport.write(answer)
            self.sent_at = time.perf_counter()
        self.buffer = buffer

    def eof_received(self) -> bool:
        return False  # the server ended the AGI session: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.slot.finish(self, f"connection lost: {type(exc).__name__}")
        elif self.step != COMMANDS:
            self.slot.finish(self, f"closed after {self.step} commands")
        else:
            self.slot.finish(self, "")


#: A call still running after this long counts as an error and is aborted.
CALL_TIMEOUT = 60.0


class CallerSlot:
    """One concurrent caller: a closed loop of calls, each started when the last ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, envs: EnvBlocks, window: Window,
                 live: set[AsteriskLeg]) -> None:
        self.loop, self.port, self.envs, self.window, self.live = loop, port, envs, window, live
        self.leg: AsteriskLeg | None = None
        self.stopping = False
        self.stopped: asyncio.Future[None] = loop.create_future()

    def start(self) -> None:
        if self.stopping:
            if not self.stopped.done():
                self.stopped.set_result(None)
            return
        leg = self.leg = AsteriskLeg(self.envs.next(), self, self.window)
        self.live.add(leg)
        connect = self.loop.create_task(self.loop.create_connection(functools.partial(_same, leg),
                                                                     "127.0.0.1", self.port))
        connect.add_done_callback(functools.partial(self._connected, leg))

    def _connected(self, leg: AsteriskLeg, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return  # the run is over
        exc = task.exception()
        if exc is not None:
            self.finish(leg, f"connect: {type(exc).__name__}")

    def finish(self, leg: AsteriskLeg, outcome: str) -> None:
        """A call ended ("" when it ran the whole script): count it, start the next one."""
        if self.leg is not leg:
            return  # already counted (aborted by the sweeper, then connection_lost)
        self.leg = None
        self.live.discard(leg)
        window = self.window
        if window.recording:
            if outcome:
                window.error(outcome)
            else:
                window.completed += 1
                window.durations.append(time.perf_counter() - leg.started)
        self.loop.call_soon(self.start)  # not from inside the transport's callback


class EnvBlocks:
    """Asterisk 22's environment block with a fresh channel and uniqueid per call."""

    def __init__(self, port: int) -> None:
        template = env_block("hotline", request=f"agi://127.0.0.1:{port}/hotline",
                             channel="PJSIP/carrier-@SEQ@", uniqueid="1764370000.@N@")
        self._head, rest = template.split(b"@SEQ@")
        self._mid, self._tail = rest.split(b"@N@")
        self._n = 0

    def next(self) -> bytes:
        self._n += 1
        return b"%s%08x%s%d%s" % (self._head, self._n, self._mid, self._n, self._tail)


async def load(port: int, concurrency: int, warmup: float, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    window = Window()
    envs = EnvBlocks(port)
    live: set[AsteriskLeg] = set()
    slots = [CallerSlot(loop, port, envs, window, live) for _ in range(concurrency)]

    def sweep() -> None:
        cutoff = time.perf_counter() - CALL_TIMEOUT
        for leg in [leg for leg in live if leg.started < cutoff]:
            leg.slot.finish(leg, "timeout")
            if leg.transport is not None:
                leg.transport.abort()
        sweeper[0] = loop.call_later(1.0, sweep)

    sweeper = [loop.call_later(1.0, sweep)]
    for slot in slots:
        slot.start()
    await asyncio.sleep(warmup)  # connections ramp up, caches warm; nothing is recorded
    window.recording = True
    server_pid = _SERVER_PID[port]
    cpu0, wall0, server0 = time.process_time(), time.perf_counter(), _cpu_seconds(server_pid)
    sys0 = _cpu_split(server_pid)[1]
    wait0 = _runqueue_ns(server_pid)
    await asyncio.sleep(seconds)
    window.recording = False
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    server_cpu = _cpu_seconds(server_pid) - server0
    server_sys = _cpu_split(server_pid)[1] - sys0
    server_wait = _runqueue_delta(wait0, _runqueue_ns(server_pid))
    for slot in slots:
        slot.stopping = True
    await asyncio.wait([slot.stopped for slot in slots], timeout=CALL_TIMEOUT + 30)
    sweeper[0].cancel()
    lat = sorted(window.latencies)
    dur = sorted(window.durations)
    return {
        "concurrency": concurrency,
        "sessions_per_s": window.completed / wall,
        "completed": window.completed,
        "commands": len(lat),
        "p50_ms": _pct(lat, 50) * 1e3,
        "p99_ms": _pct(lat, 99) * 1e3,
        "max_ms": (lat[-1] if lat else float("nan")) * 1e3,
        "call_p99_ms": _pct(dur, 99) * 1e3,
        "server_cpu": server_cpu / wall,
        "server_us_per_call": server_cpu / window.completed * 1e6 if window.completed else float("nan"),
        "server_wait": server_wait / wall,
        "server_sys_share": server_sys / server_cpu if server_cpu else float("nan"),
        "gen_cpu": cpu / wall,
        "errors": window.errors,
    }


def _same(leg: AsteriskLeg) -> AsteriskLeg:
    return leg


_SERVER_PID: dict[int, int] = {}


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    user, system = _cpu_split(pid)
    return user + system


def _cpu_split(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _runqueue_ns(pid: int) -> dict[str, int]:
    """Per thread: time spent runnable but waiting for a CPU (schedstat, ns)."""
    waits = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            waits[task.name] = int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return waits


def _runqueue_delta(before: dict[str, int], after: dict[str, int]) -> float:
    """Seconds waited in between; NaN when threads came and went (a thread per call)."""
    if set(before) != set(after):
        return float("nan")
    return sum(after[tid] - before[tid] for tid in after) / 1e9


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


# -- driver --------------------------------------------------------------------------------


def in_memory(calls: int, concurrency: int) -> float:
    """CPU µs per call of our stack alone: _Link + AGIChannel + parser on the asyncio loop,
    with a transport that answers each command in the next loop pass (no sockets)."""

    class Answering(asyncio.Transport):
        def __init__(self, link: _Link, done: asyncio.Future[int]) -> None:
            super().__init__()
            self.link, self.done, self.step, self.closing = link, done, 0, False

        def write(self, data: bytes | bytearray | memoryview) -> None:
            answer = SCRIPT[self.step][1]
            self.step += 1
            self.link.loop.call_soon(self.link.data_received, answer)

        def is_closing(self) -> bool:
            return self.closing

        def close(self) -> None:
            self.closing = True
            self.link.loop.call_soon(self._lost)
            self.done.set_result(self.step)

        def _lost(self) -> None:
            self.link.connection_lost(None)
            del self.link  # as asyncio's transports drop their protocol

        def get_write_buffer_size(self) -> int:
            return 0

        def pause_reading(self) -> None:
            pass

    async def main() -> float:
        server = FastAGIServer({"hotline": _our_script})
        envs = EnvBlocks(4573)
        loop = asyncio.get_running_loop()

        async def caller(n: int) -> None:
            for _ in range(n):
                done: asyncio.Future[int] = loop.create_future()
                link = _Link(server)
                link.connection_made(Answering(link, done))
                server._start_session(link, None)  # as _accept() does for a connected socket
                link.data_received(envs.next())
                if await done != COMMANDS:
                    raise RuntimeError("in-memory call did not run the script")

        per_caller = calls // concurrency
        started = time.process_time()
        await asyncio.gather(*(caller(per_caller) for _ in range(concurrency)))
        if server.failures:
            raise RuntimeError(f"{server.failures} in-memory calls failed")
        return (time.process_time() - started) / (per_caller * concurrency) * 1e6

    return asyncio.run(main())


def service_loop() -> str:
    """The event loop the service runs on (settings.event_loop, ivr.agi.eventloop): `ours` uses it."""
    from hotline.settings import load_settings
    from ivr.agi.eventloop import loop_name, new_event_loop

    loop = new_event_loop(load_settings().event_loop)
    try:
        return loop_name(loop)
    finally:
        loop.close()


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


class ServerProcess:
    """A server in its own process, pinned to `cpu`; stopped by its pid."""

    def __init__(self, name: str, cpu: int | None, profile: bool = False) -> None:
        read_fd, write_fd = os.pipe()
        cmd = [sys.executable, __file__, "--serve", name, "--port-fd", str(write_fd)]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        if profile:
            cmd.append("--profile-server")
        self.proc = subprocess.Popen(cmd, pass_fds=(write_fd,), stderr=subprocess.PIPE, text=True)
        os.close(write_fd)
        with os.fdopen(read_fd) as ready:
            line = ready.readline()
        if not line:
            raise RuntimeError(f"{name} server did not start: {self.proc.communicate()[1][-2000:]}")
        self.port = int(line)
        _SERVER_PID[self.port] = self.proc.pid

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def run_all(args: argparse.Namespace, gen_cpu: int | None, server_cpu: int | None) -> list[dict[str, Any]]:
    """Every server is started first; runs are interleaved (concurrency, run, server) so
    that a noisy minute on the shared machine hits every server alike."""
    names = args.servers.split(",")
    servers: dict[str, ServerProcess] = {}
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for name in names:
            servers[name] = ServerProcess(name, server_cpu)
        for concurrency in args.concurrency:
            for run in range(args.runs):
                for name in names if run % 2 == 0 else reversed(names):
                    result = asyncio.run(load(servers[name].port, concurrency, args.warmup, args.seconds))
                    results.setdefault((name, concurrency), []).append(result)
                    if args.runs > 1:
                        print_row({"server": f"  {name} #{run + 1}", **result})
            for name in names:
                print_row({"server": name, **_median(results[(name, concurrency)])})
    finally:
        for name, server in servers.items():
            err = server.stop()
            if err.strip():
                print(f"  [{name} stderr] {err.strip()[-500:]}")
    return [{"server": name, **_median(runs)} for (name, _), runs in results.items()]


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number's median over the runs (NaN-safe); errors summed."""
    row: dict[str, Any] = {}
    for key, value in runs[0].items():
        if key == "errors":
            errors: dict[str, int] = {}
            for run in runs:
                for kind, count in run["errors"].items():
                    errors[kind] = errors.get(kind, 0) + count
            row[key] = errors
        elif isinstance(value, (int, float)):
            values = sorted(run[key] for run in runs if run[key] == run[key])
            row[key] = values[len(values) // 2] if values else float("nan")
        else:
            row[key] = value
    return row


HEADER = (f"{'server':<17} {'calls':>5} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'call p99':>8} {'srv cpu':>7} {'us/call':>7} {'kernel':>6} {'srv wait':>8} {'gen cpu':>7}  errors")


def print_row(row: dict[str, Any]) -> None:
    errors = ", ".join(f"{k}: {v}" for k, v in row["errors"].items()) or "-"
    print(f"{row['server']:<17} {row['concurrency']:>5} {row['sessions_per_s']:>8,.0f} {row['p50_ms']:>7.2f} "
          f"{row['p99_ms']:>7.2f} {row['max_ms']:>7.1f} {row['call_p99_ms']:>8.1f} {row['server_cpu']:>7.0%} "
          f"{row['server_us_per_call']:>7.0f} {row['server_sys_share']:>6.0%} {row['server_wait']:>8.0%} "
          f"{row['gen_cpu']:>7.0%}  {errors}", flush=True)


def print_summary(rows: list[dict[str, Any]]) -> None:
    by = {(r["server"], r["concurrency"]): r for r in rows}
    print("\nratios (calls/s: ours / theirs; p99: theirs / ours; > 1 means ours is better)")
    pairs = (("ours", ("pyst2", "panoramisk", "panoramisk+uvloop")), ("ours+asyncio", ("pyst2", "panoramisk")),
             ("ours+uvloop", ("pyst2", "panoramisk+uvloop")))
    for concurrency in sorted({r["concurrency"] for r in rows}):
        for ours_name, others in pairs:
            ours = by.get((ours_name, concurrency))
            if ours is None or not ours["sessions_per_s"]:
                continue
            parts = []
            for other in others:
                theirs = by.get((other, concurrency))
                if theirs is None or not theirs["sessions_per_s"]:
                    continue
                parts.append(f"vs {other}: calls/s x{ours['sessions_per_s'] / theirs['sessions_per_s']:.2f}, "
                             f"p99 x{theirs['p99_ms'] / ours['p99_ms']:.2f}")
            print(f"  {concurrency:>5} calls, {ours_name}: " + ("; ".join(parts) or "-"))
    print("\ntargets: >= 2,000 calls/s with p99 < 15 ms at 100 concurrent; p99 < 250 ms at 1,000")
    for ours_name, _ in pairs:
        for concurrency, min_rate, max_p99 in ((100, 2000.0, 15.0), (1000, 0.0, 250.0)):
            row = by.get((ours_name, concurrency))
            if row is not None:
                met = row["sessions_per_s"] >= min_rate and row["p99_ms"] < max_p99 and not row["errors"]
                print(f"  {ours_name:<12} {concurrency:>5} calls: {row['sessions_per_s']:,.0f} calls/s, "
                      f"p99 {row['p99_ms']:.2f} ms, errors {sum(row['errors'].values())}: "
                      f"{'met' if met else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    servers = SERVERS + (UVLOOP_SERVERS if importlib.util.find_spec("uvloop") else ())
    ap.add_argument("--servers", default=",".join(servers), help="comma-separated subset of " + ",".join(servers))
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100, 1000])
    ap.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured time before each run")
    ap.add_argument("--runs", type=int, default=1, help="runs per row (each number's median is shown)")
    ap.add_argument("--profile", type=int, metavar="CONCURRENCY",
                    help="cProfile our server under this load and print its top functions")
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    ap.add_argument("--gen-loop", choices=("asyncio", "uvloop") if have_uvloop else ("asyncio",),
                    default="uvloop" if have_uvloop else "asyncio",
                    help="the load generator's event loop (default: uvloop when installed)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port-fd", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--profile-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-in-memory", action="store_true", help="skip measuring our stack without sockets")
    ap.add_argument("--in-memory", type=int, metavar="CONCURRENCY", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.in_memory is not None:  # child: our stack without sockets, best of 3
        _pin(args.cpu)
        tune_gc()
        if service_loop() == "uvloop":
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        print(min(in_memory(5000, args.in_memory) for _ in range(3)))
        return

    if args.serve:
        _pin(args.cpu)
        base, _, loop_kind = args.serve.partition("+")
        if loop_kind == "uvloop" or (base == "ours" and not loop_kind and service_loop() == "uvloop"):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        serve: dict[str, Callable[[], None]] = {
            "ours": lambda: serve_ours(args.port_fd, args.profile_server),
            "pyst2": lambda: serve_pyst2(args.port_fd),
            "panoramisk": lambda: serve_panoramisk(args.port_fd),
            "floor": lambda: serve_floor(args.port_fd),
        }
        serve[base]()
        return

    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    gen_cpu, server_cpu = (allowed[0], allowed[-1]) if len(allowed) >= 2 else (None, None)
    _pin(gen_cpu)
    if args.gen_loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    pinning = (f"load generator pinned to CPU {gen_cpu}, each server process to CPU {server_cpu}"
               if gen_cpu is not None else "one CPU: generator and server share it (not pinned)")
    load_at_start = os.getloadavg()
    print(f"machine: nproc={os.cpu_count()}, Python {sys.version.split()[0]}, {os.uname().machine}; {pinning}")
    print(f"load generator on {args.gen_loop}'s event loop; ours on {service_loop()}'s (the service's)")
    print(f"script: {COMMANDS} commands per call (menu call, digit 1 -> queue repair); "
          f"{args.warmup:g}s warm-up + {args.seconds:g}s measured per row; loopback TCP")

    if args.profile is not None:
        server = ServerProcess("ours", server_cpu, profile=True)
        try:
            print(HEADER)
            print_row({"server": "ours+prof", **asyncio.run(load(server.port, args.profile, args.warmup,
                                                                   args.seconds))})
        finally:
            print(server.stop())
        return

    if "ours" in args.servers.split(",") and not args.no_in_memory:
        costs = []
        for concurrency in (1, 100):
            cmd = [sys.executable, __file__, "--in-memory", str(concurrency)]
            if server_cpu is not None:
                cmd += ["--cpu", str(server_cpu)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
            costs.append(f"{float(out):.0f} us at {concurrency} concurrent")
        print(f"ours in memory (AGIChannel + parser + {service_loop()}, no sockets), CPU per call: "
              + ", ".join(costs))
    print(HEADER)
    rows = run_all(args, gen_cpu, server_cpu)
    print_summary(rows)
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"(at the start: {', '.join(f'{x:.1f}' for x in load_at_start)})")


if __name__ == "__main__":
    main()
