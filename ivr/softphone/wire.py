"""The softphone's wire format: JSON lines between the asyncio client and the pjsua2 worker.

Pure (sans-I/O): both sides only move bytes and call these functions, so the message
shapes are tested without starting pjsua2. Every line is one JSON object:

  commands (client -> worker stdin):  {"id": 7, "cmd": "call", "uri": "sip:...", "headers": {...}}
  events   (worker stdout -> client): {"event": "ack", "id": 7, "result": {"call": 1}}
                                      {"event": "call_state", "call": 1, "state": "CONFIRMED", ...}

Each command gets exactly one `ack` or `error` event carrying its id; everything else
is an unsolicited event. The schema below is checked on both sides so that a bug on
one side shows up as a clear `WireError` instead of a KeyError deep in a callback.
Hostile text (SIP header values, display names) is validated here, in one place,
before it can reach pjsua2's message printer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# A generous bound: the largest real line is an `incoming` event carrying the INVITE's
# headers (a few KB). Anything bigger is a bug or garbage, not a message to buffer.
MAX_LINE = 256 * 1024

# Call states as reported by pjsua2's pjsip_inv_state, named by us: pjsip's own
# `stateText` spells DISCONNECTED as "DISCONNCTD", so the worker maps the enum instead.
CALL_STATES = ("NULL", "CALLING", "INCOMING", "EARLY", "CONNECTING", "CONFIRMED", "DISCONNECTED")

DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")

# Field kinds used by the schema: "int" (never bool), "int?" (int or null), "str", "bool",
# "num" (int or float), "dict" (object), "strdict" (object of str -> str).
_COMMANDS: dict[str, dict[str, str]] = {
    "configure": {"config": "dict"},
    "register": {},
    "unregister": {},
    "call": {"uri": "str", "headers": "strdict"},
    "answer": {"call": "int", "code": "int"},
    "hangup": {"call": "int", "code": "int"},
    "dtmf": {"call": "int", "digits": "str"},
    "play": {"call": "int", "path": "str", "loop": "bool"},
    "stop_play": {"call": "int"},
    "record": {"call": "int", "path": "str"},
    "stop_record": {"call": "int"},
    # Transfers (REFER) and hold (re-INVITE with sendonly / sendrecv).
    "transfer": {"call": "int", "uri": "str"},
    "transfer_replaces": {"call": "int", "target": "int"},
    "hold": {"call": "int"},
    "unhold": {"call": "int"},
    "shutdown": {},
}

_EVENTS: dict[str, dict[str, str]] = {
    "ready": {"port": "int", "uri": "str"},
    "ack": {"id": "int", "result": "dict"},
    "error": {"id": "int?", "message": "str"},
    "reg_state": {"code": "int", "reason": "str", "active": "bool"},
    "incoming": {"call": "int", "remote_uri": "str", "sip_call_id": "str", "headers": "strdict"},
    "call_state": {"call": "int", "state": "str", "code": "int?", "reason": "str",
                   "remote_uri": "str", "sip_call_id": "str"},
    "media_state": {"call": "int", "active": "bool"},
    "dtmf": {"call": "int", "digit": "str"},
    "play_done": {"call": "int", "play": "int", "stopped": "bool"},
    # NOTIFY progress of a REFER we sent: sipfrag status code (100, 180, 200, 503 ...).
    "transfer_status": {"call": "int", "code": "int", "reason": "str", "final": "bool"},
    "log": {"level": "str", "message": "str"},
}

COMMAND_NAMES = frozenset(_COMMANDS)
EVENT_NAMES = frozenset(_EVENTS)


class WireError(ValueError):
    """A line that is not a valid message; `command_id` is set when the id was readable."""

    def __init__(self, message: str, command_id: int | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


@dataclass(frozen=True, slots=True)
class Command:
    """One request to the worker; `args` holds the schema fields for `name`."""

    id: int
    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """One message from the worker; `data` holds the schema fields (and any extras)."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


def _kind_ok(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "int?":
        return value is None or (isinstance(value, int) and not isinstance(value, bool))
    if kind == "num":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "dict":
        return isinstance(value, dict)
    if kind == "strdict":
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    raise AssertionError(f"unknown schema kind {kind!r}")


def _check_fields(what: str, schema: Mapping[str, str], obj: Mapping[str, Any], command_id: int | None) -> None:
    for key, kind in schema.items():
        if key not in obj:
            raise WireError(f"{what}: missing field {key!r}", command_id)
        if not _kind_ok(obj[key], kind):
            raise WireError(f"{what}: field {key!r} must be {kind}, got {type(obj[key]).__name__}", command_id)


def _load(line: bytes | str) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise WireError(f"line of {len(line)} bytes exceeds {MAX_LINE}")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError("a message must be a JSON object")
    return obj


def _dump(obj: Mapping[str, Any]) -> bytes:
    # ensure_ascii keeps every line 7-bit: a display name in Chinese cannot be split
    # into invalid UTF-8 by a chunked read, and no raw newline can appear inside a line.
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def encode_command(command: Command) -> bytes:
    """One command as a JSON line; validates it first so bad input fails at the caller."""
    schema = _COMMANDS.get(command.name)
    if schema is None:
        raise WireError(f"unknown command {command.name!r}", command.id)
    _check_fields(f"command {command.name}", schema, command.args, command.id)
    return _dump({**command.args, "id": command.id, "cmd": command.name})


def decode_command(line: bytes | str) -> Command:
    """Parse and validate one command line (worker side)."""
    obj = _load(line)
    command_id = obj.pop("id", None)
    if not _kind_ok(command_id, "int"):
        raise WireError("command without an integer id")
    name = obj.pop("cmd", None)
    if not isinstance(name, str) or name not in _COMMANDS:
        raise WireError(f"unknown command {name!r}", command_id)
    _check_fields(f"command {name}", _COMMANDS[name], obj, command_id)
    return Command(command_id, name, obj)


def encode_event(event: Event) -> bytes:
    """One event as a JSON line (worker side)."""
    schema = _EVENTS.get(event.name)
    if schema is None:
        raise WireError(f"unknown event {event.name!r}")
    _check_fields(f"event {event.name}", schema, event.data, None)
    return _dump({**event.data, "event": event.name})


def decode_event(line: bytes | str) -> Event:
    """Parse and validate one event line (client side). Unknown event names are kept
    (a newer worker may say more); known ones must match their schema."""
    obj = _load(line)
    name = obj.pop("event", None)
    if not isinstance(name, str):
        raise WireError("event without a name")
    schema = _EVENTS.get(name)
    if schema is not None:
        _check_fields(f"event {name}", schema, obj, None)
    return Event(name, obj)


class LineSplitter:
    """Cuts a byte stream into lines; bounded, so a peer that never sends a newline
    cannot make us buffer without limit."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buf = bytearray()
        self._max = max_line

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete lines (without newline, blank lines dropped)."""
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while (end := self._buf.find(b"\n", start)) >= 0:
            line = bytes(self._buf[start:end]).rstrip(b"\r")
            if len(line) > self._max:
                del self._buf[:end + 1]
                raise WireError(f"line of {len(line)} bytes exceeds {self._max}")
            if line.strip():
                lines.append(line)
            start = end + 1
        del self._buf[:start]
        if len(self._buf) > self._max:
            size = len(self._buf)
            self._buf.clear()
            raise WireError(f"unterminated line of {size} bytes exceeds {self._max}")
        return lines

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line (non-zero at EOF means a truncated message)."""
        return len(self._buf)


# --- SIP text that we put into pjsua2 --------------------------------------------------

_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")  # RFC 3261 `token`, the header-name grammar
_CTL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 3261 `user`: unreserved / escaped / user-unreserved. Everything else is %-escaped.
_USER_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/")


def check_header(name: str, value: str) -> None:
    """Reject header text that would break (or inject into) the SIP message."""
    if not _TOKEN.match(name):
        raise WireError(f"invalid SIP header name {name!r}")
    if _CTL.search(value.replace("\t", " ")):
        raise WireError(f"control character in value of SIP header {name!r}")


_SIP_URI = re.compile(r"^sips?:[^\s<>\"]+$")


def check_uri(uri: str) -> None:
    """A bare sip:/sips: URI without whitespace, controls or angle brackets (REFER targets)."""
    if not isinstance(uri, str) or _CTL.search(uri) or not _SIP_URI.match(uri):
        raise WireError(f"invalid SIP URI {uri!r}")


def quote_display_name(name: str) -> str:
    """The display name as an RFC 3261 quoted-string: backslash and quote escaped.

    Always quoted, so `;`, `<`, `,` and `:` inside the name stay part of the name. CR,
    LF and other controls cannot be represented in a quoted-string and are refused.
    pjsip keeps the escapes verbatim when it prints the From header (pjproject 2.15).
    """
    if _CTL.search(name.replace("\t", " ")):
        raise WireError("control character in display name")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def escape_user(user: str) -> str:
    """The user part of a SIP URI, %-escaping what the grammar does not allow."""
    if not user:
        raise WireError("empty SIP user part")
    out = []
    for ch in user:
        if ch in _USER_SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def account_id_uri(user: str, domain: str, display_name: str | None = None) -> str:
    """The account's identity (used as From): `"Name" <sip:user@domain>`."""
    if not domain or _CTL.search(domain) or any(c in domain for c in ' <>"@;'):
        raise WireError(f"invalid SIP domain {domain!r}")
    uri = f"sip:{escape_user(user)}@{domain}"
    if display_name is None:
        return f"<{uri}>"
    return f"{quote_display_name(display_name)} <{uri}>"


def parse_sip_headers(message: str) -> dict[str, str]:
    """Header fields of a raw SIP message (pjsua2 gives us only `rdata.wholeMsg`).

    Folded lines are joined; repeated fields are joined with ", " as RFC 3261 allows
    for list headers. Names keep the spelling the sender used.
    """
    head = re.split(r"\r?\n\r?\n", message, maxsplit=1)[0]
    lines = head.splitlines()[1:]  # skip the request line
    headers: dict[str, str] = {}
    last: str | None = None
    for line in lines:
        if line[:1] in (" ", "\t") and last is not None:
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name, value = name.strip(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
        last = name
    return headers


# --- configuration ------------------------------------------------------------------------

@dataclass
class PhoneConfig:
    """One softphone. `name` is the SIP user part unless `username` (registration) is set."""

    name: str
    sip_port: int = 0
    registrar: str | None = None
    username: str | None = None
    password: str | None = None
    domain: str = "127.0.0.1"
    display_name: str | None = None
    auto_answer: bool = False
    answer_delay: float = 0.0
    reject_code: int | None = None
    log_dir: Path | None = None
    # The conference bridge and null device rate. 8000 matches the hotline's prompts
    # and G.711, so nothing is resampled; use 16000 for 16 kHz WAVs / G.722.
    clock_rate: int = 8000

    @property
    def user(self) -> str:
        return self.username or self.name

    def validate(self) -> None:
        """Fail early in the caller, not later inside the worker."""
        if not self.name:
            raise WireError("phone name must not be empty")
        if not 0 <= self.sip_port <= 65535:
            raise WireError(f"sip_port out of range: {self.sip_port}")
        if self.clock_rate not in (8000, 16000):
            raise WireError(f"clock_rate must be 8000 or 16000, not {self.clock_rate}")
        if self.reject_code is not None and not 300 <= self.reject_code <= 699:
            raise WireError(f"reject_code must be a final non-2xx code, not {self.reject_code}")
        if self.answer_delay < 0:
            raise WireError("answer_delay must not be negative")
        if self.registrar is not None and not self.registrar.startswith(("sip:", "sips:")):
            raise WireError(f"registrar must be a SIP URI, not {self.registrar!r}")
        if (self.username is None) != (self.password is None) and self.registrar is not None:
            raise WireError("registration needs both username and password")
        account_id_uri(self.user, self.domain, self.display_name)

    def to_wire(self, log_file: Path) -> dict[str, Any]:
        """The `configure` payload: everything but the client-side log_dir."""
        data = asdict(self)
        data.pop("log_dir")
        data["log_file"] = str(log_file)
        return data

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> tuple[PhoneConfig, Path]:
        """Inverse of to_wire (worker side)."""
        known = {f for f in cls.__dataclass_fields__ if f != "log_dir"}
        unknown = set(data) - known - {"log_file"}
        if unknown:
            raise WireError(f"unknown config fields: {sorted(unknown)}")
        try:
            config = cls(**{k: v for k, v in data.items() if k in known})
            log_file = Path(data["log_file"])
        except (TypeError, KeyError) as exc:
            raise WireError(f"bad config: {exc}") from None
        config.validate()
        return config, log_file
