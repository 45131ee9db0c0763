"""The softphone process: one pjsua2 endpoint, driven by JSON lines (`python -m ivr.softphone.worker`).

Why a process of its own: a pjsua2 fault (assert, segfault in a SWIG director, a
destructor run in the wrong order) kills the whole process. Here it kills only this
phone; the asyncio client sees EOF and fails its waits with the exit code and log tail.

Why one thread: pjsua2 runs with `threadCnt=0` and `mainThreadOnly=True`, and media
shares the SIP ioqueue (`medConfig.hasIoqueue=False`), so SIP, RTP and DTMF callbacks
all run inside our own `libHandleEvents(10)` poll. The one thread pjsua2 still starts
is the null sound device's clock, which drives the conference bridge (players and
recorders); we never run Python on it (see `Player`).

Protocol: the first line on stdin is a `configure` command; the worker answers with an
`ack` and a `ready` event carrying the bound SIP port, then serves commands until
`shutdown` or EOF on stdin (the client died). Events go to a private duplicate of the
original stdout; fd 1 itself is pointed at stderr (the log file) because pjlib prints
its first lines to stdout before `libInit` applies our log settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import heapq
import itertools
import os
import selectors
import signal
import sys
import threading
import time
import traceback
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pjsua2 as pj

from ivr.softphone import wire

STATES = {
    pj.PJSIP_INV_STATE_NULL: "NULL",
    pj.PJSIP_INV_STATE_CALLING: "CALLING",
    pj.PJSIP_INV_STATE_INCOMING: "INCOMING",
    pj.PJSIP_INV_STATE_EARLY: "EARLY",
    pj.PJSIP_INV_STATE_CONNECTING: "CONNECTING",
    pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
    pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED",
}

MEDIA_STATUS = {
    pj.PJSUA_CALL_MEDIA_NONE: "none",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "active",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local_hold",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold",
    pj.PJSUA_CALL_MEDIA_ERROR: "error",
}

POLL_MS = 10  # libHandleEvents timeout: the worst-case command latency
TRANSPORT_RETRY_SECONDS = 2.0
SHUTDOWN_SECONDS = 2.0
FINALIZE_SECONDS = 2.0


def wav_finalized(path: str) -> bool:
    """True once pjmedia's WAV writer has closed the file (its header sizes are filled in).

    pjmedia 2.15's conference bridge removes ports asynchronously: destroying a
    recorder only queues the removal, and the clock thread later destroys the port,
    which is when the writer flushes and writes the RIFF/data sizes (0 until then).
    So "recorder object deleted" does not mean "file complete"; the header does.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(44)
    except OSError:
        return True  # nothing there to wait for
    if len(head) < 44 or head[:4] != b"RIFF":
        return False
    riff = int.from_bytes(head[4:8], "little")
    data = int.from_bytes(head[40:44], "little")
    return riff == size - 8 and data == size - 44


def wav_format(path: str) -> tuple[int, int, int]:
    """(rate, channels, sample width) of a PCM WAV; CommandError if it is not one."""
    try:
        with wave.open(path, "rb") as wav:
            return wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
    except (OSError, EOFError, wave.Error) as exc:
        raise CommandError(f"cannot play {path}: {exc}") from None


class Deferred:
    """A command result sent only when `ready()` holds (or after a timeout)."""

    def __init__(self, ready: Callable[[], bool], result: dict[str, Any]) -> None:
        self.ready = ready
        self.result = result


F = TypeVar("F", bound=Callable[..., Any])


class CommandError(Exception):
    """A command that cannot be carried out; the message goes back in the `error` event."""


def pj_message(exc: pj.Error) -> str:
    return f"{exc.title}: {exc.reason} (status {exc.status})"


def enable_bundled_digests() -> str:
    """Register OpenSSL's digests in the libcrypto bundled with the pjsua2-python wheel.

    The wheel (2.15.1) ships OpenSSL 1.0.2k in `pjsua2_python.libs/`. In 1.0.2 the
    digest-by-name table is empty until `OpenSSL_add_all_digests()` runs, and pjsip's
    digest auth looks MD5 up by name: on some machines REGISTER/INVITE auth then fails
    with PJ_ENOTSUP ("MD5 not supported"), on others something else already filled the
    table. Calling it ourselves is idempotent, so we always do, before any account
    exists. dlopen() of the same path returns the copy pjsua2 already loaded.
    Returns what happened, for the log; absence of the library is fine (other builds).
    """
    site = Path(pj.__file__).resolve().parent.parent  # auditwheel puts libs beside the package
    found = sorted(p for libs in site.glob("pjsua2*.libs") for p in libs.glob("libcrypto*"))
    if not found:
        return f"no bundled libcrypto in {site}/pjsua2*.libs: digests left to pjsua2"
    done = []
    for path in found:
        try:
            lib = ctypes.CDLL(str(path))
            init = getattr(lib, "OpenSSL_add_all_digests", None)
            if init is None:
                continue
            init.restype = None
            init()
            done.append(path.name)
        except OSError as exc:
            return f"cannot load {path}: {exc}"
    return f"OpenSSL_add_all_digests() called on {', '.join(done) or 'nothing'}"


class Emitter:
    """Writes events to the private event fd; a broken pipe means the client is gone."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.broken = False

    def __call__(self, name: str, **data: Any) -> None:
        if self.broken:
            return
        line = wire.encode_event(wire.Event(name, data))
        try:
            view = memoryview(line)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except OSError:
            self.broken = True


#: A playback whose end was never seen is reported done this long after its duration.
PLAYBACK_OVERDUE_S = 1.0


def playback_ended(pos: int, samples: int, elapsed: float, duration: float) -> bool:
    """Has a non-looping WAV player sent its whole file, `elapsed` s after it started?

    With PJMEDIA_FILE_NO_LOOP the player's position rewinds to 0 once its last
    buffer is loaded (a buffer, up to 0.25 s of audio, before the sound ends). But
    the position is two fields that the bridge's clock thread updates without a
    lock while it refills the buffer, so a poll that lands mid-refill reads a value
    off by a whole buffer, down to 0 at the first refill. On a loaded machine that
    ended playbacks after 0.5 s. So the position is trusted only once the file's
    duration has passed; a playback the bridge never finished is done when overdue.
    """
    if elapsed > duration + PLAYBACK_OVERDUE_S:
        return True
    if elapsed < duration:
        return False
    return pos == 0 or (samples > 0 and pos >= samples)


class Player:
    """A WAV player feeding one call; EOF is detected by polling, never by callback.

    `AudioMediaPlayer.onEof2` is invoked on the null device's clock thread even with
    mainThreadOnly=True (measured, pjsua2 2.15.1), while that thread holds the bridge
    lock: Python there risks a GIL/bridge-lock deadlock. Polling `getPos()` from the
    main loop is cheap; `playback_ended` decides from the position and the clock.
    """

    def __init__(self, play_id: int, path: str, loop: bool) -> None:
        self.play_id = play_id
        self.path = path
        self.loop = loop
        self.media: pj.AudioMediaPlayer | None = None
        self.samples = 0
        self.rate = 8000
        self.started_at = 0.0

    def start(self, sink: pj.AudioMedia) -> None:
        if self.media is None:
            media = pj.AudioMediaPlayer()
            media.createPlayer(self.path, 0 if self.loop else pj.PJMEDIA_FILE_NO_LOOP)
            info = media.getInfo()
            self.samples = int(info.sizeSamples)
            # The file's own rate, not the bridge's: positions count file samples.
            self.rate = wav_format(self.path)[0]
            self.media = media
            self.started_at = time.monotonic()
        self.media.startTransmit(sink)

    def finished(self) -> bool:
        if self.media is None or self.loop:
            return False
        return playback_ended(int(self.media.getPos()), self.samples,
                              time.monotonic() - self.started_at, self.samples / self.rate)

    def stop(self, sink: pj.AudioMedia | None) -> None:
        if self.media is not None and sink is not None:
            with contextlib.suppress(pj.Error):
                self.media.stopTransmit(sink)
        self.media = None  # the SWIG destructor removes the port from the bridge


MAIN_THREAD = threading.get_ident()


def guarded(method: F) -> F:
    """pjsua2 callbacks must not raise: an exception escaping a SWIG director unwinds
    through C and can abort the process. Report it as a `log` event instead.
    Also checks the one-thread design: a callback on another thread is reported."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != MAIN_THREAD:
            self.phone.emit("log", level="warning", message=f"{method.__name__} called off the main thread")
        try:
            return method(self, *args, **kwargs)
        except Exception:
            self.phone.emit("log", level="error",
                            message=f"{method.__name__} failed:\n{traceback.format_exc()}")
            return None

    return wrapper  # type: ignore[return-value]


class PhoneCall(pj.Call):  # type: ignore[misc]  # pjsua2 is untyped SWIG
    """One call; `handle` is our own id, because pjsua recycles its call ids (slots)."""

    def __init__(self, phone: Phone, account: pj.Account, handle: int, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.phone = phone
        self.handle = handle
        self.audio: pj.AudioMedia | None = None
        self.player: Player | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.record_path: str | None = None
        self.ended = False

    # -- pjsua2 callbacks (main thread, inside libHandleEvents) ---------------------------
    @guarded
    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802 - pjsua2 name
        info = self.getInfo()
        state = STATES.get(info.state, str(info.state))
        code = int(info.lastStatusCode)
        event = {"call": self.handle, "state": state, "code": code or None, "reason": str(info.lastReason),
                 "remote_uri": str(info.remoteUri), "sip_call_id": str(info.callIdString)}
        if state != "DISCONNECTED":
            self.phone.emit("call_state", **event)
            return
        self.ended = True
        recording = self.release_media()
        if recording is None:
            self.phone.emit("call_state", **event)
        else:
            # Report the hangup only once the recording is complete on disk, so a
            # client that awaited DISCONNECTED can read the WAV at once.
            self.phone.when(lambda: wav_finalized(recording),
                            lambda finalized: self.phone.emit("call_state", **event))

    @guarded
    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        info = self.getInfo()
        audio = None
        status = "none"
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = MEDIA_STATUS.get(media.status, str(media.status))
            if media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(index)
                break
        self.audio = audio
        if audio is not None:
            # Re-connect on every media update (re-INVITE, hold/unhold): the call's
            # bridge slot can change; connecting twice is a no-op.
            if self.record_path is not None:
                self.start_recorder()
            if self.player is not None:
                self.player.start(audio)
        # `status` (extra field): active, local_hold (we hold), remote_hold, none, error.
        self.phone.emit("media_state", call=self.handle, active=audio is not None, status=status)

    @guarded
    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:  # noqa: N802
        # We were REFERred (blind transfer by the far end): pjsua dials prm.dstUri with
        # the object we give it, so the new leg gets its own handle and events.
        prm.newCall = self.phone.adopt_call(self.phone.account)
        self.phone.emit("log", level="info", message=f"call {self.handle} referred to {prm.dstUri}: "
                                                      f"new call {prm.newCall.handle}")

    @guarded
    def onCallReplaced(self, prm: pj.OnCallReplacedParam) -> None:  # noqa: N802
        # An INVITE with Replaces took over this call (attended transfer target side).
        prm.newCall = self.phone.adopt_call(self.phone.account, prm.newCallId)
        self.phone.emit("log", level="info", message=f"call {self.handle} replaced by call {prm.newCall.handle}")

    @guarded
    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:  # noqa: N802
        # NOTIFY (sipfrag) for a REFER we sent; Asterisk ends our leg after a final 200.
        self.phone.emit("transfer_status", call=self.handle, code=int(prm.statusCode), reason=str(prm.reason),
                        final=bool(prm.finalNotify))

    @guarded
    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:  # noqa: N802
        # RFC 4733 events arrive here once per digit (pjsua2 2.15.1 calls onDtmfDigit
        # when onDtmfEvent is not overridden), on the main thread since RTP shares the
        # SIP ioqueue.
        self.phone.emit("dtmf", call=self.handle, digit=str(prm.digit))

    # -- media helpers --------------------------------------------------------------------
    def start_recorder(self) -> None:
        assert self.record_path is not None and self.audio is not None
        if self.recorder is None:
            recorder = pj.AudioMediaRecorder()
            recorder.createRecorder(self.record_path)
            self.recorder = recorder
        self.audio.startTransmit(self.recorder)

    def stop_recorder(self) -> str | None:
        """Release the recorder; returns the path whose WAV will be finalised, if any."""
        path = self.record_path if self.recorder is not None else None
        if self.recorder is not None and self.audio is not None:
            with contextlib.suppress(pj.Error):
                self.audio.stopTransmit(self.recorder)
        # Dropping the last reference runs pjsua_recorder_destroy, which queues the
        # port's removal; the header is written when the bridge destroys it (see
        # wav_finalized). Nothing else may hold the recorder.
        self.recorder = None
        self.record_path = None
        return path

    def stop_player(self, *, report: bool) -> None:
        if self.player is not None:
            player, self.player = self.player, None
            player.stop(self.audio)
            if report:
                self.phone.emit("play_done", call=self.handle, play=player.play_id, stopped=True)

    def release_media(self) -> str | None:
        self.stop_player(report=False)
        path = self.stop_recorder()
        self.audio = None
        return path


class PhoneAccount(pj.Account):  # type: ignore[misc]  # pjsua2 is untyped SWIG
    def __init__(self, phone: Phone) -> None:
        super().__init__()
        self.phone = phone

    @guarded
    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802
        active = bool(self.getInfo().regIsActive)
        self.phone.registered = active
        self.phone.emit("reg_state", code=int(prm.code), reason=str(prm.reason), active=active)

    @guarded
    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        self.phone.incoming(self, prm)


class Phone:
    """The endpoint, its one account and its calls; owned by `main`."""

    def __init__(self, config: wire.PhoneConfig, log_file: Path, emit: Emitter) -> None:
        self.config = config
        self.emit = emit
        # Every call of this phone's life, ended ones too. pjsua2's `Call::~Call` clears
        # the user data of *its slot id* and hangs up whatever call is active there; pjsua
        # reuses slots at once, so destroying an ended call mid-session could detach or
        # hang up the next call in that slot. Ended calls die at shutdown, when no slot
        # is in use.
        self.calls: dict[int, PhoneCall] = {}
        self.handles = itertools.count(1)
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.timer_seq = itertools.count()
        # Failed outgoing calls: kept, like ended ones, until shutdown (see `calls`).
        self.failed_calls: list[PhoneCall] = []
        self.waiting: list[tuple[float, Callable[[], bool], Callable[[bool], None]]] = []
        self.registered = False
        self.stopping = False

        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 8
        cfg.uaConfig.userAgent = "hotline-softphone (pjsua2)"
        cfg.logConfig.filename = str(log_file)
        cfg.logConfig.fileFlags = pj.PJ_O_APPEND  # shares the file with our stderr
        cfg.logConfig.level = 4  # 4 includes every SIP message (msgLogging)
        cfg.logConfig.consoleLevel = 0
        cfg.logConfig.msgLogging = True
        med = cfg.medConfig
        # Bridge and null device run at the phone's clock rate (8000 by default: the
        # hotline's prompts and G.711 are 8 kHz, so nothing is resampled and recordings
        # come out as 8 kHz 16-bit mono, what webrtcvad and the prompt checks expect).
        med.clockRate = config.clock_rate
        med.sndClockRate = config.clock_rate
        med.channelCount = 1
        med.ecTailLen = 0  # no echo canceller: recordings must hold exactly what arrived
        med.noVad = True  # always send frames: silence is data for the dead-air checks
        med.hasIoqueue = False  # RTP (and RFC 4733 callbacks) on our polled main thread
        med.threadCnt = 0
        self.ep.libInit(cfg)
        self.port = self._create_transport(config.sip_port)
        self.ep.libStart()
        # After libStart: the null device replaces the (absent) sound card as the clock.
        self.ep.audDevManager().setNullDev()
        self._set_codecs()
        self.emit("log", level="info", message=enable_bundled_digests())
        self.account = PhoneAccount(self)
        self.account.create(self._account_config())

    def _create_transport(self, port: int) -> int:
        tcfg = pj.TransportConfig()
        tcfg.boundAddress = "127.0.0.1"
        tcfg.port = port
        # A phone restarted on the same port right after the old one exited can hit
        # "address in use" for a moment: retry briefly instead of failing the test.
        deadline = time.monotonic() + TRANSPORT_RETRY_SECONDS
        while True:
            try:
                tid = self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
                break
            except pj.Error as exc:
                if port == 0 or time.monotonic() > deadline:
                    raise CommandError(f"cannot bind SIP UDP 127.0.0.1:{port}: {pj_message(exc)}") from None
                time.sleep(0.1)
        local = str(self.ep.transportGetInfo(tid).localName)
        return int(local.rsplit(":", 1)[1])

    def _set_codecs(self) -> None:
        # G.711 only: what Asterisk's hotline endpoints allow, and lossless enough for
        # the VAD and prompt checks. telephone-event (RFC 4733) is not a codec entry.
        for codec in self.ep.codecEnum2():
            self.ep.codecSetPriority(codec.codecId, 0)
        self.ep.codecSetPriority("PCMU/8000", 255)
        self.ep.codecSetPriority("PCMA/8000", 254)

    def _account_config(self) -> pj.AccountConfig:
        c = self.config
        acfg = pj.AccountConfig()
        acfg.idUri = wire.account_id_uri(c.user, c.domain, c.display_name)
        if c.registrar:
            acfg.regConfig.registrarUri = c.registrar
            acfg.regConfig.registerOnAdd = False  # the client awaits `register` explicitly
            acfg.regConfig.timeoutSec = 300
        if c.username is not None and c.password is not None:
            acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", c.username, 0, c.password))
        # Everything is on loopback: no NAT rewriting, no SIP outbound (;ob, reg-id),
        # so Contact and Via stay exactly sip:user@127.0.0.1:port.
        acfg.natConfig.contactRewriteUse = 0
        acfg.natConfig.viaRewriteUse = 0
        acfg.natConfig.sdpNatRewriteUse = 0
        acfg.natConfig.sipOutboundUse = 0
        acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        return acfg

    @property
    def uri(self) -> str:
        return f"sip:{wire.escape_user(self.config.user)}@127.0.0.1:{self.port}"

    # -- calls ----------------------------------------------------------------------------
    def incoming(self, account: PhoneAccount, prm: pj.OnIncomingCallParam) -> None:
        call = PhoneCall(self, account, next(self.handles), prm.callId)
        self.calls[call.handle] = call
        info = call.getInfo()
        self.emit("incoming", call=call.handle, remote_uri=str(info.remoteUri),
                  sip_call_id=str(info.callIdString), headers=wire.parse_sip_headers(str(prm.rdata.wholeMsg)))
        if self.config.reject_code is not None:
            self._hangup(call, self.config.reject_code)
            return
        self._answer(call, 180)
        if self.config.auto_answer:
            self.later(self.config.answer_delay, lambda: self._auto_answer(call))

    def adopt_call(self, account: pj.Account, call_id: int = pj.PJSUA_INVALID_ID) -> PhoneCall:
        """A call pjsua starts by itself (REFER, Replaces): give it a handle and keep it."""
        call = PhoneCall(self, account, next(self.handles), call_id)
        self.calls[call.handle] = call
        return call

    def _auto_answer(self, call: PhoneCall) -> None:
        if call.ended:
            return
        try:
            self._answer(call, 200)
        except pj.Error as exc:  # e.g. the caller cancelled just now
            self.emit("log", level="warning", message=f"auto-answer of call {call.handle}: {pj_message(exc)}")

    def _answer(self, call: PhoneCall, code: int) -> None:
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        call.answer(prm)

    def _hangup(self, call: PhoneCall, code: int) -> None:
        prm = pj.CallOpParam()
        prm.statusCode = code  # 0: pjsua's default (603 unanswered, BYE/CANCEL otherwise)
        call.hangup(prm)

    def when(self, ready: Callable[[], bool], action: Callable[[bool], None],
             timeout: float = FINALIZE_SECONDS) -> None:
        """Run `action(True)` once `ready()` holds, or `action(False)` after `timeout`."""
        if ready():
            action(True)
        else:
            self.waiting.append((time.monotonic() + timeout, ready, action))

    def later(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (time.monotonic() + delay, next(self.timer_seq), action))

    def _call(self, handle: int, *, live: bool = True) -> PhoneCall:
        call = self.calls.get(handle)
        if call is None:
            raise CommandError(f"no call {handle}")
        if live and call.ended:
            raise CommandError(f"call {handle} has ended")
        return call

    # -- commands -------------------------------------------------------------------------
    def handle(self, cmd: wire.Command) -> dict[str, Any] | Deferred:
        method = getattr(self, f"cmd_{cmd.name}", None)
        if method is None:
            raise CommandError(f"command {cmd.name!r} not valid now")
        result: dict[str, Any] | Deferred = method(cmd)
        return result

    def cmd_register(self, cmd: wire.Command) -> dict[str, Any]:
        if not self.config.registrar:
            raise CommandError("no registrar configured")
        self.account.setRegistration(True)
        return {}

    def cmd_unregister(self, cmd: wire.Command) -> dict[str, Any]:
        if self.registered:
            self.account.setRegistration(False)
        return {}

    def cmd_call(self, cmd: wire.Command) -> dict[str, Any]:
        prm = pj.CallOpParam(True)  # True: default call settings (one audio stream)
        for name, value in cmd.args["headers"].items():
            wire.check_header(name, value)
            header = pj.SipHeader()
            header.hName = name
            header.hValue = value
            prm.txOption.headers.append(header)
        call = PhoneCall(self, self.account, next(self.handles))
        self.calls[call.handle] = call
        try:
            call.makeCall(cmd.args["uri"], prm)
        except pj.Error:
            del self.calls[call.handle]
            self.failed_calls.append(call)
            raise
        return {"call": call.handle, "sip_call_id": str(call.getInfo().callIdString)}

    def cmd_answer(self, cmd: wire.Command) -> dict[str, Any]:
        call = self._call(cmd.args["call"])
        code = cmd.args["code"]
        if code >= 300:
            self._hangup(call, code)  # a final non-2xx answer is a hangup in pjsua
        else:
            self._answer(call, code)
        return {}

    def cmd_hangup(self, cmd: wire.Command) -> dict[str, Any]:
        call = self._call(cmd.args["call"], live=False)
        if not call.ended:
            self._hangup(call, cmd.args["code"])
        return {}

    def cmd_dtmf(self, cmd: wire.Command) -> dict[str, Any]:
        call = self._call(cmd.args["call"])
        digits = cmd.args["digits"]
        if not digits or not set(digits) <= wire.DTMF_DIGITS:
            raise CommandError(f"invalid DTMF digits {digits!r}")
        if call.audio is None:
            raise CommandError("no active audio: RFC 4733 digits need the RTP stream")
        call.dialDtmf(digits)  # RFC 4733 (pjsua's default method), queued by the stream
        return {}

    def cmd_play(self, cmd: wire.Command) -> dict[str, Any]:
        call = self._call(cmd.args["call"])
        path = cmd.args["path"]
        if not os.path.isfile(path):
            raise CommandError(f"no such WAV file: {path}")
        rate, channels, width = wav_format(path)
        if channels != 1 or width != 2:
            # pjmedia's WAV player takes 16-bit PCM mono only (any rate: the bridge resamples).
            raise CommandError(f"{path}: need 16-bit mono PCM, got {channels} channel(s) of {8 * width} bit")
        call.stop_player(report=True)
        player = Player(cmd.id, path, cmd.args["loop"])
        if call.audio is not None:
            player.start(call.audio)  # else started by onCallMediaState
        call.player = player
        return {"play": cmd.id}

    def cmd_stop_play(self, cmd: wire.Command) -> dict[str, Any]:
        self._call(cmd.args["call"], live=False).stop_player(report=True)
        return {}

    def cmd_record(self, cmd: wire.Command) -> dict[str, Any]:
        call = self._call(cmd.args["call"])
        call.stop_recorder()
        call.record_path = cmd.args["path"]
        if call.audio is not None:
            call.start_recorder()  # else started by onCallMediaState
        return {}

    def cmd_stop_record(self, cmd: wire.Command) -> dict[str, Any] | Deferred:
        path = self._call(cmd.args["call"], live=False).stop_recorder()
        if path is None:
            return {}
        # The ack promises a complete file: wait for the bridge to close the writer.
        return Deferred(lambda: wav_finalized(path), {"path": path})

    def cmd_transfer(self, cmd: wire.Command) -> dict[str, Any]:
        """Blind transfer: REFER the far end of the call to `uri`."""
        call = self._call(cmd.args["call"])
        uri = cmd.args["uri"]
        try:
            wire.check_uri(uri)
        except wire.WireError as exc:
            raise CommandError(str(exc)) from None
        call.xfer(uri, pj.CallOpParam(True))
        return {}

    def cmd_transfer_replaces(self, cmd: wire.Command) -> dict[str, Any]:
        """Attended transfer: REFER the far end of `call` to the far end of `target`,
        with Replaces naming our dialog of `target` (both calls are this phone's)."""
        call = self._call(cmd.args["call"])
        target = self._call(cmd.args["target"])
        if target is call:
            raise CommandError("a call cannot be transferred to itself")
        call.xferReplaces(target, pj.CallOpParam(True))
        return {}

    def cmd_hold(self, cmd: wire.Command) -> dict[str, Any]:
        self._call(cmd.args["call"]).setHold(pj.CallOpParam(True))
        return {}

    def cmd_unhold(self, cmd: wire.Command) -> dict[str, Any]:
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD  # re-INVITE back to sendrecv
        self._call(cmd.args["call"]).reinvite(prm)
        return {}

    def cmd_shutdown(self, cmd: wire.Command) -> dict[str, Any]:
        self.stopping = True
        return {}

    # -- loop -----------------------------------------------------------------------------
    def tick(self) -> None:
        """Work between polls: due timers, pending finalisations, finished players."""
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, action = heapq.heappop(self.timers)
            action()
        if self.waiting:
            pending, self.waiting = self.waiting, []
            for deadline, ready, then in pending:
                if ready():
                    then(True)
                elif now > deadline:
                    self.emit("log", level="warning", message="gave up waiting for a recording to be finalised")
                    then(False)
                else:
                    self.waiting.append((deadline, ready, then))
        for call in list(self.calls.values()):
            if call.player is not None and call.player.finished():
                player, call.player = call.player, None
                player.stop(call.audio)
                self.emit("play_done", call=call.handle, play=player.play_id, stopped=False)

    def shutdown(self) -> None:
        """Hang up, unregister, and destroy pjsua2 objects before the library.

        Every Python reference to a pjsua2 Call/Account/player must be gone before
        libDestroy: `pj::Call::~Call` run afterwards asserts in
        pjsua_call_set_user_data (call_id < max_calls, which is 0 by then) and aborts
        the process (seen with pjsua2 2.15.1). Hence helpers whose locals die on return.
        """
        self._end_calls()
        self._drop_pjsua_objects()
        deadline = time.monotonic() + FINALIZE_SECONDS
        while self.waiting and time.monotonic() < deadline:  # let recordings close
            self.ep.libHandleEvents(POLL_MS)
            self.tick()
        self.waiting.clear()
        gc.collect()  # a stray cycle (e.g. a saved traceback) may still hold a Call
        # NO_RX_MSG: we already hung up and unregistered (and waited for the answers);
        # without it pjsua_destroy sleeps about 1 s "for unregistration" on every stop.
        self.ep.libDestroy(pj.PJSUA_DESTROY_NO_RX_MSG)

    def _end_calls(self) -> None:
        live = [c for c in self.calls.values() if not c.ended]
        for call in live:
            with contextlib.suppress(pj.Error):
                self._hangup(call, 0)
        if self.registered:
            with contextlib.suppress(pj.Error):
                self.account.setRegistration(False)
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        while time.monotonic() < deadline and (self.registered or any(not c.ended for c in live)):
            self.ep.libHandleEvents(POLL_MS)

    def _drop_pjsua_objects(self) -> None:
        for call in self.calls.values():
            path = call.release_media()
            if path is not None:
                self.when(functools.partial(wav_finalized, path), lambda finalized: None)
        self.calls.clear()
        self.failed_calls.clear()
        self.timers.clear()  # their closures hold calls too
        with contextlib.suppress(pj.Error):
            self.account.shutdown()
        del self.account


def read_configure(stdin_fd: int) -> tuple[wire.Command, wire.LineSplitter, list[bytes]] | None:
    """Block until the first command, which must be `configure`; None on EOF.
    Also returns the lines that arrived in the same read, to be served next."""
    splitter = wire.LineSplitter()
    while True:
        chunk = os.read(stdin_fd, 65536)
        if not chunk:
            return None
        lines = splitter.feed(chunk)
        if lines:
            cmd = wire.decode_command(lines[0])
            if cmd.name != "configure":
                raise wire.WireError("the first command must be configure", cmd.id)
            return cmd, splitter, lines[1:]


def serve(phone: Phone, stdin_fd: int, splitter: wire.LineSplitter, early: list[bytes],
          stop_flag: list[bool]) -> None:
    """The poll loop: pjsua2 events, then whatever stdin has, then timers."""
    for line in early:
        run_command(phone, line)
    os.set_blocking(stdin_fd, False)
    selector = selectors.DefaultSelector()
    selector.register(stdin_fd, selectors.EVENT_READ)
    try:
        while not (phone.stopping or stop_flag[0] or phone.emit.broken):
            phone.ep.libHandleEvents(POLL_MS)
            if selector.select(timeout=0):
                try:
                    chunk = os.read(stdin_fd, 65536)
                except BlockingIOError:
                    chunk = None
                if chunk == b"":
                    return  # the client closed stdin or died: hang up and leave
                lines: list[bytes] = []
                if chunk:
                    try:
                        lines = splitter.feed(chunk)
                    except wire.WireError as exc:
                        phone.emit("error", id=None, message=str(exc))
                for line in lines:
                    run_command(phone, line)
            phone.tick()
    finally:
        selector.close()


def run_command(phone: Phone, line: bytes) -> None:
    try:
        cmd = wire.decode_command(line)
    except wire.WireError as exc:
        phone.emit("error", id=exc.command_id, message=str(exc))
        return
    try:
        result = phone.handle(cmd)
        if isinstance(result, Deferred):
            deferred = result
            phone.when(deferred.ready, lambda ok: phone.emit("ack", id=cmd.id, result={**deferred.result,
                                                                                        "complete": ok}))
            return
    except pj.Error as exc:
        phone.emit("error", id=cmd.id, message=pj_message(exc))
    except (CommandError, wire.WireError) as exc:
        phone.emit("error", id=cmd.id, message=str(exc))
    except Exception as exc:  # a bug of ours: report it, keep the phone alive
        traceback.print_exc()
        phone.emit("error", id=cmd.id, message=f"{type(exc).__name__}: {exc}")
    else:
        phone.emit("ack", id=cmd.id, result=result)


def run() -> int:
    """The worker's life; returns its exit code (2: could not start)."""
    # The event channel is a private copy of stdout; fd 1 then points at stderr (the
    # log file) so that nothing pjlib or a C library prints can corrupt the protocol.
    emit = Emitter(os.dup(1))
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stop_flag = [False]

    def on_signal(signum: int, frame: object) -> None:
        stop_flag[0] = True  # leave the loop; hang up and unregister on the way out

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stdin_fd = sys.stdin.fileno()
    try:
        first = read_configure(stdin_fd)
    except wire.WireError as exc:
        emit("error", id=exc.command_id, message=str(exc))
        return 2
    if first is None:
        return 0
    cmd, splitter, early = first
    try:
        config, log_file = wire.PhoneConfig.from_wire(cmd.args["config"])
        phone = Phone(config, log_file, emit)
    except (wire.WireError, CommandError) as exc:
        emit("error", id=cmd.id, message=str(exc))
        return 2
    except pj.Error as exc:
        emit("error", id=cmd.id, message=f"pjsua2 start failed: {pj_message(exc)}")
        return 2
    emit("ack", id=cmd.id, result={"port": phone.port})
    emit("ready", port=phone.port, uri=phone.uri)
    try:
        serve(phone, stdin_fd, splitter, early, stop_flag)
    finally:
        phone.shutdown()
    return 0


def main() -> None:
    try:
        code = run()
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    # Leave without interpreter teardown: it would run pjsua2 destructors (Endpoint,
    # any stray Call) in arbitrary order, after libDestroy or without it, and e.g.
    # pj::Call::~Call after libDestroy aborts the process (pjsua2 2.15.1).
    os._exit(code)


if __name__ == "__main__":
    main()
