"""Sans-I/O Asterisk Manager Interface framing: bytes in, `Message`s out; actions to bytes.

Nothing here touches a socket or an event loop, so the same parser serves the live
client, the fake AMI server in the tests, fixture replays and benchmarks.

Wire format (manager.c): after connecting, Asterisk sends one greeting line
("Asterisk Call Manager/11.0.0" on Asterisk 22 -- the number is the AMI version,
not the Asterisk version). Then every message is a block of "Key: Value" lines,
each ended by CRLF, and the block is ended by an empty line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from types import MappingProxyType
from typing import Final, Literal

__all__ = [
    "ProtocolError",
    "Message",
    "AMIParser",
    "encode_action",
    "encode_message",
    "DEFAULT_MAX_MESSAGE_BYTES",
]

DEFAULT_MAX_MESSAGE_BYTES: Final = 256 * 1024

_GREETING_PREFIX: Final = b"Asterisk Call Manager"
# Asterisk <= 13 answers `Action: Command` with "Response: Follows", the raw CLI output
# (which may contain blank lines and "key: value"-looking lines) and this marker.
# Asterisk 14+ (and so 22) sends the output as ordinary "Output: ..." headers instead.
_END_COMMAND: Final = b"--END COMMAND--"
_NO_HEADERS: Final[Mapping[str, str | Sequence[str]]] = MappingProxyType({})


class ProtocolError(Exception):
    """Asterisk (or whatever is on the other end) sent something we cannot frame.

    Raised for an oversize message; the parser refuses further input afterwards and
    the connection must be dropped, since the stream position is no longer
    trustworthy. `messages` holds the messages completed earlier in the same
    `feed()` call, so a reader can still deliver them in order before it reconnects.
    """

    def __init__(self, text: str, messages: Sequence[Message] = ()) -> None:
        super().__init__(text)
        self.messages: list[Message] = list(messages)


@dataclass(frozen=True, slots=True)
class Message:
    """One AMI message: headers in wire order, duplicates kept.

    Duplicates matter: `ChanVariable` repeats on channel events, `Output` repeats on
    Command responses (Asterisk 14+), and `Variable` repeats on actions.
    """

    headers: tuple[tuple[str, str], ...]
    # Private: lower-cased header name -> position of its first occurrence in
    # `headers`. Built lazily here, or handed over by the parser, which shares one
    # such map between all messages with the same header names in the same order.
    _index: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False, hash=False)

    def _lookup(self) -> dict[str, int]:
        index = self._index
        if index is None:
            index = _positions(tuple(key for key, _ in self.headers))
            # Frozen for users; the lazily built index is a private cache.
            object.__setattr__(self, "_index", index)
        return index

    def get(self, key: str, default: str | None = None) -> str | None:
        """Value of the first header named `key` (case-insensitive), else `default`."""
        index = self._index
        if index is None:
            index = self._lookup()
        pos = index.get(key.lower())
        return default if pos is None else self.headers[pos][1]

    def get_all(self, key: str) -> list[str]:
        """Every value of header `key` in wire order (case-insensitive)."""
        wanted = key.lower()
        return [value for name, value in self.headers if name.lower() == wanted]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lookup()

    @property
    def kind(self) -> Literal["event", "response", "other"]:
        """"event" or "response" from the leading header.

        The first header decides because `OriginateResponse` events carry both
        `Event:` and `Response:`; Asterisk always writes the discriminator first.
        """
        headers = self.headers
        if headers:
            first = headers[0][0]
            # Exact spelling first: it is what Asterisk sends, and lower() costs.
            if first == "Event":
                return "event"
            if first == "Response":
                return "response"
            first = first.lower()
            if first == "event":
                return "event"
            if first == "response":
                return "response"
        lookup = self._lookup()
        if "event" in lookup:
            return "event"
        if "response" in lookup:
            return "response"
        return "other"

    @property
    def name(self) -> str:
        """The `Event:` or `Response:` value; "" for other messages."""
        kind = self.kind
        if kind == "other":
            return ""
        return self.get(kind) or ""

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def to_dict(self) -> dict[str, str]:
        """First value per header, for logging and JSON; loses duplicates."""
        out: dict[str, str] = {}
        for key, value in self.headers:
            out.setdefault(key, value)
        return out


def _positions(keys: tuple[str, ...]) -> dict[str, int]:
    """Lower-cased header name -> position of its first occurrence."""
    index: dict[str, int] = {}
    for pos, key in enumerate(keys):
        index.setdefault(key.lower(), pos)
    return index


class _Shape(dict[str, int]):
    """The _positions() map of one header layout, shared by every message the parser
    builds with exactly these header names in this order (Asterisk sends few layouts).

    `plans` is per-layout scratch space for `cti.ami.events`, which precomputes there
    where each header of a channel block sits, so that it is not looked up again for
    every event of the same layout.
    """

    __slots__ = ("plans",)

    def __init__(self, keys: tuple[str, ...]) -> None:
        super().__init__(_positions(keys))
        self.plans: dict[object, object] = {}


# Fast construction of parsed messages: the generated __init__ of a frozen dataclass
# goes through object.__setattr__ per field; the slot descriptors do the same work
# without it. Used only by the parser, for messages it has just built.
_new_message = object.__new__
_set_headers: Callable[[Message, tuple[tuple[str, str], ...]], None] = vars(Message)["headers"].__set__
_set_index: Callable[[Message, dict[str, int]], None] = vars(Message)["_index"].__set__
_first = itemgetter(0)


def _split_header(line: str) -> tuple[str, str]:
    key, sep, value = line.partition(": ")
    if not sep:
        # Raw text inside a message: Command output before Asterisk 14, or a
        # "--END COMMAND--" marker. Keep it, keyed "", so nothing is lost.
        return "", line
    return key, value


class _LineCache(dict[str, tuple[str, str]]):
    """Decoded header line -> (key, value), for one parser.

    Asterisk repeats most lines verbatim (Privilege, ChannelState, Context, the
    Uniqueid and Linkedid of every live channel ...), so most lines are split once.
    Emptied when full; with the line length cap below that bounds it to a few megabytes.
    """

    __slots__ = ()

    def __missing__(self, line: str) -> tuple[str, str]:
        if "\n" in line:
            # A bare LF ends a line (and maybe the message) earlier than the CRLF
            # framing assumed: the caller hands the block to the line path.
            raise _BareLF
        key, sep, value = line.partition(": ")
        pair = (key, value) if sep else ("", line)  # as _split_header()
        # With timestampevents=yes every event has a unique Timestamp line: storing
        # those would only push the reusable lines out. Long lines are not kept either
        # (whatever the peer sends, the cache stays small).
        if key != "Timestamp" and len(line) <= _CACHED_LINE_LENGTH:
            if len(self) >= _CACHED_LINES:
                self.clear()
            self[line] = pair
        return pair


class _BareLF(Exception):
    pass


_CACHED_LINES: Final = 4096
_CACHED_LINE_LENGTH: Final = 200
_CACHED_SHAPES: Final = 512
_CACHED_SHAPE_HEADERS: Final = 64


class AMIParser:
    """Incremental AMI deframer.

    `feed()` accepts any chunking of the stream and returns the messages completed
    by that chunk; the unconsumed tail is kept for the next call. Lines may end in
    CRLF (what Asterisk sends) or bare LF (hand-written peers, some proxies).

    Two paths, one behaviour: a message that is a plain block of CRLF lines ended by
    an empty CRLF line (every message Asterisk sends, except the greeting and pre-14
    Command output) is framed, decoded and split at once; anything else, and any
    tail that might be over the size cap, goes through the line-by-line state
    machine, which is the reference for every corner case.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if max_message_bytes <= 0:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self.greeting: str | None = None
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._message_bytes = 0
        self._at_stream_start = True
        self._follows = False  # inside a pre-Asterisk-14 "Response: Follows" block
        self._follows_ended = False
        self._broken = False
        self._split_line = _LineCache().__getitem__
        # Header names in order -> the _Shape shared by the messages with that layout.
        self._shapes: dict[tuple[str, ...], _Shape] = {}

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the message in progress (for metrics and tests)."""
        return self._message_bytes + len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes from the wire; return every message they complete, in order."""
        if self._broken:
            raise ProtocolError("parser unusable after an earlier ProtocolError")
        buffer = self._buffer
        buffer += data
        out: list[Message] = []
        start = 0
        by_line_until = 0  # bytes before this offset go through the line path
        limit = self.max_message_bytes
        block = self._block
        append = out.append
        try:
            while True:
                # The line path, until a message boundary leaves no state behind.
                while start < by_line_until or self._lines or self._follows or self._at_stream_start:
                    end = buffer.find(b"\n", start)
                    if end < 0:
                        break
                    line = bytes(buffer[start:end])
                    start = end + 1
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    message = self._line(line)
                    if message is not None:
                        append(message)
                else:
                    # The block path, while messages are plain CRLF blocks.
                    while (end := buffer.find(b"\r\n\r\n", start)) >= 0:
                        message = block(buffer, start, end)
                        if message is None:
                            break
                        append(message)
                        start = end + 4
                    if end >= 0:
                        by_line_until = end + 4
                        continue
                    # No CRLF-framed message left. Messages framed with a bare LF, or a
                    # partial message that the line path might count as over the cap
                    # (it counts a bare-LF line one byte longer), take the line path.
                    if (buffer.find(b"\n\n", start) >= 0 or buffer.find(b"\n\r\n", start) >= 0
                            or len(buffer) - start + buffer.count(b"\n", start) > limit):
                        by_line_until = len(buffer)
                        continue
                break
            if self._message_bytes + len(buffer) - start > limit:
                raise ProtocolError(f"AMI message exceeds {limit} bytes")
        except ProtocolError as exc:
            self._broken = True
            self._buffer = bytearray()
            self._lines = []
            raise ProtocolError(str(exc), out) from None
        if start:
            del buffer[:start]
        return out

    def _block(self, buffer: bytearray, start: int, end: int) -> Message | None:
        """The message in buffer[start:end] (CRLF lines, "\r\n\r\n" at end), or None
        when it is not a plain block and the line path must frame it."""
        if end - start + 2 > self.max_message_bytes:
            return None  # the line path raises at the same line as always
        # Decoding the block at once equals decoding it line by line: CR and LF never
        # occur inside a UTF-8 sequence, and they end any invalid one.
        text = buffer[start:end].decode("utf-8", "replace")
        lines = text.split("\r\n")
        first = lines[0]
        if not first or (len(first) == 17 and first.isascii() and first.lower() == "response: follows"):
            return None  # a stray blank line first, or pre-Asterisk-14 Command output
        try:
            headers = tuple(map(self._split_line, lines))
        except _BareLF:
            return None
        keys = tuple(map(_first, headers))
        index = self._shapes.get(keys)
        if index is None:
            index = _Shape(keys)
            if len(keys) <= _CACHED_SHAPE_HEADERS:  # long layouts are one-offs (Command output ...)
                if len(self._shapes) >= _CACHED_SHAPES:
                    self._shapes.clear()
                self._shapes[keys] = index
        message: Message = _new_message(Message)
        _set_headers(message, headers)
        _set_index(message, index)
        return message

    def _line(self, line: bytes) -> Message | None:
        if self._at_stream_start:
            self._at_stream_start = False
            # The greeting is a lone line, not a block. Only a line that looks like
            # one is taken, so the parser also works on streams without a greeting
            # (fixtures, the fake server parsing client actions).
            if line.startswith(_GREETING_PREFIX):
                self.greeting = line.decode("utf-8", "replace")
                return None
        if not line:
            if self._follows and not self._follows_ended:
                # Blank lines are part of the raw CLI output until the marker.
                self._append(line)
                return None
            if not self._lines:
                return None  # stray blank line between messages
            return self._complete()
        if not self._lines and line.lower() == b"response: follows":
            self._follows = True
        elif self._follows and line.endswith(_END_COMMAND):
            self._follows_ended = True
        self._append(line)
        return None

    def _append(self, line: bytes) -> None:
        self._lines.append(line)
        self._message_bytes += len(line) + 2
        if self._message_bytes > self.max_message_bytes:
            raise ProtocolError(f"AMI message exceeds {self.max_message_bytes} bytes")

    def _complete(self) -> Message:
        # Decode per line of a complete message: LF never occurs inside a UTF-8
        # multibyte sequence, so a character split across feed() calls is whole
        # here. Invalid UTF-8 (e.g. a GBK caller name from a carrier) becomes
        # U+FFFD instead of breaking the connection.
        headers: list[tuple[str, str]] = []
        for raw in self._lines:
            text = raw.decode("utf-8", "replace")
            if self._follows and raw.endswith(_END_COMMAND) and raw != _END_COMMAND:
                # Output without a final newline runs into the marker (Asterisk <= 13).
                headers.append(("", text[: -len(_END_COMMAND)]))
                headers.append(("", _END_COMMAND.decode()))
                continue
            headers.append(_split_header(text))
        self._lines = []
        self._message_bytes = 0
        self._follows = False
        self._follows_ended = False
        return Message(tuple(headers))


def _check(text: object, what: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"AMI {what} must be str, not {type(text).__name__}")
    # A CR or LF would end the header early and let a caller-controlled value (a
    # phone number, a variable) inject extra AMI headers or a whole new action.
    # The value itself is not echoed: it may be the Login secret.
    if "\r" in text or "\n" in text or "\x00" in text:
        raise ValueError(f"AMI {what} contains CR, LF or NUL")


def encode_message(headers: Iterable[tuple[str, str]]) -> bytes:
    """Frame `(key, value)` pairs as one AMI message (CRLF lines, blank-line end)."""
    parts: list[str] = []
    for key, value in headers:
        _check(key, f"header name {key!r}")
        _check(value, f"value of {key!r}")
        if not key or ":" in key or key != key.strip():
            raise ValueError(f"invalid AMI header name: {key!r}")
        parts.append(f"{key}: {value}\r\n")
    if not parts:
        raise ValueError("an AMI message needs at least one header")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8")


def encode_action(
    action: str,
    action_id: str,
    headers: Mapping[str, str | Sequence[str]] = _NO_HEADERS,
) -> bytes:
    """Frame an action. Sequence values repeat the header (`Variable: a=1`, `Variable: b=2`).

    Raises ValueError for our own misuse: CR/LF/NUL anywhere, an empty or
    colon-bearing header name, or `Action`/`ActionID` passed in `headers`.
    """
    pairs: list[tuple[str, str]] = [("Action", action), ("ActionID", action_id)]
    if not action:
        raise ValueError("empty AMI action name")
    if not action_id:
        raise ValueError("empty ActionID")
    for key, value in headers.items():
        if key.lower() in ("action", "actionid"):
            raise ValueError(f"{key!r} is set by encode_action itself")
        if isinstance(value, str):
            pairs.append((key, value))
        elif isinstance(value, Sequence):
            pairs.extend((key, item) for item in value)
        else:
            raise TypeError(f"AMI header {key!r} must be str or a sequence of str, not {type(value).__name__}")
    return encode_message(pairs)
