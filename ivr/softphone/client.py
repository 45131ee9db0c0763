"""asyncio control of a scripted SIP softphone that runs in its own process.

The pjsua2 endpoint lives in `ivr.softphone.worker` (a child process), so a pjsua2
crash costs one phone, never the test run or the QA runner driving it. This side
only writes JSON-line commands and reads JSON-line events (`ivr.softphone.wire`);
every wait is a predicate over state fed by those events, re-checked whenever an
event arrives: no sleeps, no polling. If the worker dies, every pending command and
wait fails at once with a `SoftphoneError` naming the exit code and the log's tail.

    phone = await Softphone.start(PhoneConfig(name="caller"))
    call = await phone.call("sip:4000@127.0.0.1:5060", headers={"X-Hotline-Test": "t1"})
    await call.wait_state("CONFIRMED", timeout=10)
    await call.send_dtmf("1")
    await phone.stop()

Agents' phones also hold (`hold`/`unhold`, re-INVITE) and transfer: `transfer(uri)` sends
REFER (blind), `transfer_to(other_call)` REFER with Replaces (attended); `wait_transfer`
returns the final NOTIFY status. Calls pjsua starts by itself (a REFER received, an
INVITE with Replaces) are adopted by the worker and appear in `phone.calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ivr.softphone import wire
from ivr.softphone.wire import CALL_STATES, PhoneConfig

__all__ = ["Call", "PhoneConfig", "Softphone", "SoftphoneError"]

log = logging.getLogger(__name__)

T = TypeVar("T")

COMMAND_TIMEOUT = 10.0  # a command is answered within one poll; this only bounds a hung worker
STOP_GRACE = 6.0  # the worker's shutdown (hangups, un-REGISTER, WAV close) is bounded to about 4 s
LOG_TAIL_LINES = 20
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class SoftphoneError(Exception):
    """The phone could not do what was asked: a command failed, a wait timed out or
    was overtaken (call ended), or the worker process died (message says why)."""


class Call:
    """One call on a softphone. Attributes mirror the worker's events for it."""

    def __init__(self, phone: Softphone, call_id: int, *, incoming: bool = False) -> None:
        self.phone = phone
        self.call_id = call_id  # the worker's handle; pjsua's own ids are recycled slots
        self.incoming = incoming
        self.remote_uri = ""
        self.sip_call_id = ""
        self.state = "INCOMING" if incoming else "CALLING"
        self.last_status_code: int | None = None
        self.last_reason = ""
        self.dtmf_received = ""
        self.incoming_headers: dict[str, str] = {}
        self.media_active = False
        self.media_status = "none"  # active | local_hold | remote_hold | none | error
        self.transfer_codes: list[int] = []  # NOTIFY sipfrag codes for our REFER, in order
        self.transfer_final: int | None = None
        self._seen_states: set[str] = {self.state}
        self._play_id: int | None = None
        self._play_loop = False
        self._play_done = False
        self._play_stopped = False

    def __repr__(self) -> str:
        return f"<Call {self.phone.name}#{self.call_id} {self.state} {self.remote_uri}>"

    @property
    def ended(self) -> bool:
        return "DISCONNECTED" in self._seen_states

    def header(self, name: str) -> str | None:
        """An INVITE header of an incoming call, by case-insensitive name (as SIP wants)."""
        wanted = name.lower()
        return next((v for k, v in self.incoming_headers.items() if k.lower() == wanted), None)

    def _ended_error(self, what: str) -> SoftphoneError:
        return SoftphoneError(f"{self.phone.name}: call {self.call_id} ended "
                              f"({self.last_status_code} {self.last_reason}) while waiting for {what}")

    async def _cmd(self, name: str, **args: Any) -> dict[str, Any]:
        return await self.phone._command(name, call=self.call_id, **args)

    # -- actions ------------------------------------------------------------------------
    async def answer(self, code: int = 200) -> None:
        """Answer an incoming call (200), or reject it with a final code (e.g. 486)."""
        await self._cmd("answer", code=code)

    async def hangup(self) -> None:
        """CANCEL, decline or BYE as fits the state; a no-op once the call has ended."""
        if not self.ended:
            await self._cmd("hangup", code=0)

    async def transfer(self, uri: str) -> None:
        """Blind transfer: send REFER asking the far end to call `uri` (see wait_transfer)."""
        wire.check_uri(uri)
        self.transfer_codes, self.transfer_final = [], None
        await self._cmd("transfer", uri=uri)

    async def transfer_to(self, other: Call) -> None:
        """Attended transfer: REFER this call's far end to `other`'s far end, with
        Replaces naming `other` (a call of the same phone, usually the consultation)."""
        if other.phone is not self.phone:
            raise ValueError("attended transfer needs two calls of the same phone")
        if other is self:
            raise ValueError("a call cannot be transferred to itself")
        self.transfer_codes, self.transfer_final = [], None
        await self._cmd("transfer_replaces", target=other.call_id)

    async def wait_transfer(self, timeout: float) -> int:
        """Until the REFER's final NOTIFY; returns its status (200: transferred)."""

        def final() -> int | None:
            if self.transfer_final is not None:
                return self.transfer_final
            if self.ended and not self.transfer_codes:
                raise self._ended_error("the transfer result")
            return None

        return await self.phone._wait_for(final, timeout, f"transfer result of call {self.call_id}",
                                          detail=lambda: f"NOTIFY codes so far {self.transfer_codes}")

    async def hold(self) -> None:
        """Put the far end on hold (re-INVITE, sendonly); see wait_media_status."""
        await self._cmd("hold")

    async def unhold(self) -> None:
        """Take the call off hold (re-INVITE, sendrecv)."""
        await self._cmd("unhold")

    async def wait_media_status(self, status: str, timeout: float) -> None:
        """Until the call's audio is in `status` (active, local_hold, remote_hold)."""

        def reached() -> bool | None:
            if self.media_status == status:
                return True
            if self.ended:
                raise self._ended_error(f"media {status}")
            return None

        await self.phone._wait_for(reached, timeout, f"media {status} on call {self.call_id}",
                                   detail=lambda: f"media is {self.media_status}")

    async def send_dtmf(self, digits: str) -> None:
        """Queue RFC 4733 digits on the call's RTP stream (media must be active)."""
        if not digits or not set(digits) <= wire.DTMF_DIGITS:
            raise ValueError(f"invalid DTMF digits {digits!r}")
        await self._cmd("dtmf", digits=digits)

    async def play(self, wav: Path, *, loop: bool = False) -> None:
        """Start sending a 16-bit mono WAV into the call, replacing any running playback.
        Before media is up the worker holds it and starts it with the media."""
        path = _absolute(wav)  # the worker checks that it exists
        cmd_id = self.phone._next_command_id()
        # Known before sending: play_done may be dispatched before our ack is resumed.
        self._play_id, self._play_loop, self._play_done, self._play_stopped = cmd_id, loop, False, False
        await self._cmd_with_id(cmd_id, "play", path=path, loop=loop)

    async def _cmd_with_id(self, cmd_id: int, name: str, **args: Any) -> dict[str, Any]:
        return await self.phone._command(name, cmd_id=cmd_id, call=self.call_id, **args)

    async def wait_play_done(self, timeout: float) -> None:
        """Until the current (non-looping) playback reached its end or was stopped."""
        if self._play_id is None:
            raise SoftphoneError(f"{self.phone.name}: nothing was played on call {self.call_id}")
        if self._play_loop:
            raise SoftphoneError(f"{self.phone.name}: a looping playback never ends; use stop_play")

        def done() -> bool | None:
            if self._play_done:
                return True
            if self.ended:
                raise self._ended_error("the end of playback")
            return None

        await self.phone._wait_for(done, timeout, f"end of playback on call {self.call_id}")

    async def stop_play(self) -> None:
        await self._cmd("stop_play")

    async def record(self, wav: Path) -> None:
        """Record what this phone receives on the call (from media start) into a WAV at
        the phone's clock rate, 16-bit mono."""
        path = _absolute(wav)
        _ensure_parent(path)
        await self._cmd("record", path=path)

    async def stop_record(self) -> None:
        """Finalise the recording: when this returns the WAV header is written.
        (Hangup finalises it too, before DISCONNECTED is reported.)"""
        await self._cmd("stop_record")

    # -- waits --------------------------------------------------------------------------
    async def wait_state(self, state: str, timeout: float) -> None:
        """Until the call has reached `state` (also if it passed through it already).
        Fails early if the call ends first."""
        if state not in CALL_STATES:
            raise ValueError(f"unknown call state {state!r}; one of {CALL_STATES}")

        def reached() -> bool | None:
            if state in self._seen_states:
                return True
            if self.ended:
                raise self._ended_error(f"state {state}")
            return None

        await self.phone._wait_for(reached, timeout, f"state {state} of call {self.call_id}",
                                   detail=lambda: f"call is {self.state}")

    async def wait_media(self, timeout: float) -> None:
        """Until the call's audio stream is active (needed for DTMF, play, record)."""

        def active() -> bool | None:
            if self.media_active:
                return True
            if self.ended:
                raise self._ended_error("active media")
            return None

        await self.phone._wait_for(active, timeout, f"active media on call {self.call_id}")

    async def wait_dtmf(self, count: int, timeout: float) -> str:
        """Until at least `count` digits arrived on this call in total; returns them all."""

        def enough() -> str | None:
            if len(self.dtmf_received) >= count:
                return self.dtmf_received
            if self.ended:
                raise self._ended_error(f"{count} DTMF digits (got {self.dtmf_received!r})")
            return None

        return await self.phone._wait_for(enough, timeout, f"{count} DTMF digits on call {self.call_id}",
                                          detail=lambda: f"got {self.dtmf_received!r}")

    # -- fed by the phone's event dispatch -------------------------------------------------
    def _on_state(self, event: wire.Event) -> None:
        self.state = str(event["state"])
        self._seen_states.add(self.state)
        if event["code"] is not None:
            self.last_status_code = int(event["code"])
        self.last_reason = str(event["reason"])
        self.remote_uri = str(event["remote_uri"]) or self.remote_uri
        self.sip_call_id = str(event["sip_call_id"]) or self.sip_call_id
        if self.state == "DISCONNECTED":
            self.media_active = False


class Softphone:
    """A pjsua2 softphone in a child process. Create with `await Softphone.start(config)`,
    always end with `await phone.stop()` (or use `async with`)."""

    def __init__(self, config: PhoneConfig, proc: asyncio.subprocess.Process, log_file: Path,
                 temp_dir: Path | None) -> None:
        self.config = config
        self.name = config.name
        self.log_file = log_file
        self.sip_port = 0
        self.uri = ""
        self.registered = False
        self.last_reg_code: int | None = None
        self.last_reg_reason = ""
        self._proc = proc
        self._temp_dir = temp_dir
        self._calls: dict[int, Call] = {}
        self._unclaimed: deque[Call] = deque()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._ids = 0
        self._reg_events = 0
        self._ready = False
        self._dead: SoftphoneError | None = None
        self._stopped = False
        self._reader = asyncio.get_running_loop().create_task(self._read_events(), name=f"softphone-{self.name}")

    # -- lifecycle --------------------------------------------------------------------------
    @classmethod
    async def start(cls, config: PhoneConfig, *, ready_timeout: float = 15.0) -> Softphone:
        """Spawn the worker and wait for its `ready` (SIP port bound, pjsua2 started).
        Invalid configuration raises ValueError (wire.WireError) before any process."""
        config.validate()
        temp_dir = None
        if config.log_dir is None:
            temp_dir = Path(tempfile.mkdtemp(prefix="softphone-"))
        log_file = _new_log_file(config.log_dir or temp_dir or Path("."), config.name)
        env = dict(os.environ)
        # The worker is started as a module; make sure it imports this very tree.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        stderr = os.open(log_file, os.O_WRONLY | os.O_APPEND)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ivr.softphone.worker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env,
            )
        except BaseException:
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        finally:
            os.close(stderr)
        phone = cls(config, proc, log_file, temp_dir)
        try:
            # Secrets travel on stdin, not argv (visible in ps).
            await phone._command("configure", timeout=ready_timeout, config=config.to_wire(log_file))
            await phone._wait_for(lambda: phone._ready or None, ready_timeout, "ready")
        except BaseException as exc:
            await phone.stop()
            if isinstance(exc, SoftphoneError):
                raise SoftphoneError(f"softphone {config.name} did not start: {exc}") from None
            raise
        return phone

    async def stop(self) -> None:
        """Hang up, unregister, end the worker (killed after a grace period) and reap it.
        Idempotent; safe after the worker died."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._dead is None and self._proc.returncode is None:
                with contextlib.suppress(SoftphoneError, TimeoutError):
                    await self._command("shutdown", timeout=STOP_GRACE)
            if self._proc.stdin is not None and not self._proc.stdin.is_closing():
                self._proc.stdin.close()  # EOF: the worker leaves even if `shutdown` got lost
            try:
                await asyncio.wait_for(self._proc.wait(), STOP_GRACE)
            except TimeoutError:
                log.warning("softphone %s: no exit after %.0fs, killing pid %s", self.name, STOP_GRACE, self._proc.pid)
        finally:
            if self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                await self._proc.wait()
            # The reader ends by itself at EOF (the pipe closes with the process), which
            # also closes the subprocess transport; cancel only if it hangs.
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 2.0)
            except TimeoutError:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
            if self._dead is None:
                self._die(SoftphoneError(f"softphone {self.name} is stopped"))
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)

    async def __aenter__(self) -> Softphone:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    @property
    def calls(self) -> list[Call]:
        return list(self._calls.values())

    # -- SIP --------------------------------------------------------------------------------
    async def register(self, timeout: float = 10.0) -> None:
        """REGISTER (digest auth with username/password, realm "*") and await the answer."""
        if not self.config.registrar:
            raise SoftphoneError(f"{self.name}: no registrar configured")
        seen = self._reg_events
        await self._command("register")
        await self._wait_for(lambda: self._reg_events > seen or None, timeout,
                             f"an answer to REGISTER at {self.config.registrar}")
        if not (self.last_reg_code is not None and 200 <= self.last_reg_code < 300 and self.registered):
            raise SoftphoneError(f"{self.name}: REGISTER at {self.config.registrar} failed: "
                                 f"{self.last_reg_code} {self.last_reg_reason}")

    async def unregister(self, timeout: float = 5.0) -> None:
        """Remove the registration and await the registrar's answer."""
        if not self.registered:
            return
        seen = self._reg_events
        await self._command("unregister")
        await self._wait_for(lambda: self._reg_events > seen or None, timeout, "an answer to un-REGISTER")

    async def call(self, uri: str, *, headers: Mapping[str, str] | None = None) -> Call:
        """Send an INVITE to `uri` with optional extra headers (e.g. X-Hotline-Test)."""
        extra = dict(headers or {})
        for name, value in extra.items():
            wire.check_header(name, value)
        result = await self._command("call", uri=uri, headers=extra)
        call = self._call(int(result["call"]))
        call.remote_uri = call.remote_uri or uri
        call.sip_call_id = call.sip_call_id or str(result.get("sip_call_id", ""))
        return call

    async def wait_incoming(self, timeout: float) -> Call:
        """The next incoming call not yet returned by this method."""
        return await self._wait_for(lambda: self._unclaimed.popleft() if self._unclaimed else None,
                                    timeout, "an incoming call")

    # -- plumbing ---------------------------------------------------------------------------
    def _next_command_id(self) -> int:
        self._ids += 1
        return self._ids

    async def _command(self, name: str, *, cmd_id: int | None = None, timeout: float = COMMAND_TIMEOUT,
                       **args: Any) -> dict[str, Any]:
        if self._dead is not None:
            raise SoftphoneError(str(self._dead))
        command = wire.Command(cmd_id if cmd_id is not None else self._next_command_id(), name, args)
        line = wire.encode_command(command)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command.id] = future
        try:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(line)
                await self._proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                # The reader will tell why (exit code, log) in a moment.
                await self._wait_for(lambda: None, 2.0, "worker exit")
            try:
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError:
                raise SoftphoneError(f"{self.name}: timed out after {timeout}s waiting for the answer to {name}"
                                     ) from None
        finally:
            self._pending.pop(command.id, None)

    async def _wait_for(self, predicate: Callable[[], T | None], timeout: float, what: str,
                        detail: Callable[[], str] | None = None) -> T:
        """Re-check `predicate` after every event until it returns non-None (or raises)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value is not None:
                return value
            if self._dead is not None:
                raise SoftphoneError(f"{self._dead} (while waiting for {what})")
            remaining = deadline - loop.time()
            if remaining <= 0:
                extra = f"; {detail()}" if detail is not None else ""
                raise SoftphoneError(f"{self.name}: timed out after {timeout}s waiting for {what}{extra}")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                pass  # re-check once more, then report the timeout
            finally:
                self._waiters.discard(waiter)

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _call(self, call_id: int) -> Call:
        call = self._calls.get(call_id)
        if call is None:
            # Events for an outgoing call can precede the ack that names it.
            call = self._calls[call_id] = Call(self, call_id)
        return call

    async def _read_events(self) -> None:
        assert self._proc.stdout is not None
        splitter = wire.LineSplitter()
        problem = ""
        try:
            while chunk := await self._proc.stdout.read(65536):
                try:
                    lines = splitter.feed(chunk)
                except wire.WireError as exc:
                    log.warning("softphone %s: %s", self.name, exc)
                    continue
                for line in lines:
                    try:
                        self._dispatch(wire.decode_event(line))
                    except wire.WireError as exc:
                        log.warning("softphone %s: bad event %r: %s", self.name, line[:200], exc)
                self._notify()
        except Exception as exc:  # a bug here must still fail the waits, not hang them
            log.exception("softphone %s: event reader failed", self.name)
            problem = f" (event reader failed: {exc!r})"
        code = await self._proc.wait()
        if self._dead is None:
            why = "was stopped" if self._stopped else "died"
            self._die(SoftphoneError(f"softphone {self.name} worker {why}: exit code {code}{problem}"
                                     f"{self._log_tail()}"))

    def _die(self, error: SoftphoneError) -> None:
        self._dead = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SoftphoneError(str(error)))
        self._notify()

    def _log_tail(self) -> str:
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                lines = fh.read().decode("utf-8", "replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            return ""
        return f"; log {self.log_file} ends:\n" + "\n".join(lines) if lines else f"; log {self.log_file} is empty"

    def _dispatch(self, event: wire.Event) -> None:
        name = event.name
        if name in ("ack", "error"):
            future = self._pending.get(event["id"]) if event["id"] is not None else None
            if future is None or future.done():
                if name == "error":
                    log.warning("softphone %s: %s", self.name, event["message"])
                return
            if name == "ack":
                future.set_result(dict(event["result"]))
            else:
                future.set_exception(SoftphoneError(f"{self.name}: {event['message']}"))
        elif name == "ready":
            self.sip_port = int(event["port"])
            self.uri = str(event["uri"])
            self._ready = True
        elif name == "reg_state":
            self.last_reg_code = int(event["code"])
            self.last_reg_reason = str(event["reason"])
            self.registered = bool(event["active"])
            self._reg_events += 1
        elif name == "incoming":
            call = self._calls[int(event["call"])] = Call(self, int(event["call"]), incoming=True)
            call.remote_uri = str(event["remote_uri"])
            call.sip_call_id = str(event["sip_call_id"])
            call.incoming_headers = dict(event["headers"])
            self._unclaimed.append(call)
        elif name == "call_state":
            self._call(int(event["call"]))._on_state(event)
        elif name == "media_state":
            call = self._call(int(event["call"]))
            call.media_active = bool(event["active"])
            status = event.get("status")
            call.media_status = str(status) if status is not None else ("active" if call.media_active else "none")
        elif name == "transfer_status":
            call = self._call(int(event["call"]))
            call.transfer_codes.append(int(event["code"]))
            if event["final"]:
                call.transfer_final = int(event["code"])
        elif name == "dtmf":
            call = self._call(int(event["call"]))
            call.dtmf_received += str(event["digit"])
        elif name == "play_done":
            call = self._call(int(event["call"]))
            if event["play"] == call._play_id:
                call._play_done = True
                call._play_stopped = bool(event["stopped"])
        elif name == "log":
            level = logging.WARNING if event["level"] in ("error", "warning") else logging.DEBUG
            log.log(level, "softphone %s: %s", self.name, event["message"])


def _absolute(path: Path | str) -> str:
    """The worker may run elsewhere (cwd), so paths travel absolute."""
    return os.path.abspath(path)


def _ensure_parent(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)


def _new_log_file(directory: Path, name: str) -> Path:
    """A fresh log file per worker, even for same-named phones in one directory."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "phone"
    for n in range(1, 1000):
        path = directory / (f"{stem}.log" if n == 1 else f"{stem}.{n}.log")
        try:
            with open(path, "x"):
                return path
        except FileExistsError:
            continue
    raise SoftphoneError(f"no free log file name for {name} in {directory}")
