"""The AGI wire protocol, sans-I/O: environment block, responses, command encoding.

A FastAGI session as Asterisk 22 (res_agi.c) speaks it:

* Asterisk connects and sends `agi_name: value` lines (`agi_network: yes`,
  `agi_network_script: hotline`, `agi_request: agi://...`, `agi_channel: ...`,
  ... `agi_arg_1: ...`), then one empty line.
* We send one command line; Asterisk answers with one response line (a 520 usage
  error takes several). One command at a time: see `encode_command`.
* Over FastAGI, with AGISIGHUP not set to "no", Asterisk writes a bare `HANGUP`
  line when the caller hangs up (res_agi.c run_agi(), where a local script would
  get SIGHUP). It comes between responses, never inside one.

Everything here is pure: bytes in, items out; bytes back from `encode_command`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from ivr.agi.errors import AGIProtocolError

#: res_agi.c reads a command line into `char buf[AGI_BUF_LEN]` (2048 since 1.4,
#: still in 22). A longer line is cut there and the rest is run as a *second
#: command*, so an over-long value would be an injection vector: we refuse it.
AGI_BUF_LEN: Final = 2048
MAX_COMMAND_BYTES: Final = AGI_BUF_LEN - 1  # the line including its "\n"
#: res_agi.c parse_args() keeps at most MAX_ARGS - 1 words and drops the rest.
MAX_ARGS: Final = 128


# -- items -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AGIEnvironment:
    """The `agi_*` block Asterisk sends first; keys without the `agi_` prefix.

    Values are exactly what Asterisk sent. Asterisk writes "unknown" for a missing
    caller ID number or name (setup_env(), every version up to 22).
    """

    variables: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))

    def get(self, key: str, default: str = "") -> str:
        return self.variables.get(key, default)

    @property
    def network_script(self) -> str:
        """Path part of agi://host[:port]/<script>; absent when the URL has none."""
        return self.get("network_script")

    @property
    def request(self) -> str:
        return self.get("request")

    @property
    def channel(self) -> str:
        return self.get("channel")

    @property
    def uniqueid(self) -> str:
        return self.get("uniqueid")

    @property
    def language(self) -> str:
        return self.get("language")

    @property
    def caller_id_num(self) -> str:
        return self.get("callerid")

    @property
    def caller_id_name(self) -> str:
        return self.get("calleridname")

    @property
    def context(self) -> str:
        return self.get("context")

    @property
    def extension(self) -> str:
        return self.get("extension")

    @property
    def arguments(self) -> tuple[str, ...]:
        """AGI(url,arg1,arg2,...) arguments, in order (agi_arg_1 ... agi_arg_n)."""
        args: list[str] = []
        while (value := self.variables.get(f"arg_{len(args) + 1}")) is not None:
            args.append(value)
        return tuple(args)


@dataclass(frozen=True, slots=True)
class AGIResponse:
    """One response: `code`, `result=` value, the "(...)" data, `endpos=`, raw text."""

    code: int
    result: str | None
    data: str | None
    endpos: int | None
    text: str

    @property
    def result_int(self) -> int | None:
        if self.result is None:
            return None
        try:
            return int(self.result)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class HangupNotice:
    """Asterisk's `HANGUP` line: the caller is gone (AGISIGHUP, FastAGI only)."""


AGIItem = AGIEnvironment | AGIResponse | HangupNotice

_ENV_KEY = re.compile(r"agi_([A-Za-z0-9_]+)\Z")
#: Every line of a block at once: the same key rule, value after ":" minus one leading blank.
_ENV_LINES = re.compile(r"^agi_([A-Za-z0-9_]+): ?(.*)$", re.MULTILINE)
_CODE_LINE = re.compile(r"(\d{3})(?:([ -])(.*))?\Z", re.DOTALL)
_RESULT = re.compile(r"result=(\S*)(.*)\Z", re.DOTALL)


@dataclass(slots=True)
class _Multiline:
    """A response that spans lines: a 520 usage text, or data containing a newline."""

    code: int
    lines: list[str]
    size: int
    result: str | None = None
    kind: str = "usage"  # "usage" | "data"
    extra: list[str] = field(default_factory=list)


class AGIParser:
    """Incremental parser for one FastAGI session, Asterisk's side of the wire.

    `feed()` returns the environment once (after its blank line), then responses
    and hangup notices in order. Lines are split on b"\\n" before decoding, so a
    multibyte UTF-8 character split across reads decodes correctly; invalid UTF-8
    becomes U+FFFD. Any AGIProtocolError leaves the parser failed: close the session.
    """

    def __init__(
        self,
        max_line_bytes: int = 8192,
        max_env_bytes: int = 64 * 1024,
        max_env_lines: int = 256,
        *,
        max_response_bytes: int = 64 * 1024,
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_env_bytes = max_env_bytes
        self.max_env_lines = max_env_lines
        self.max_response_bytes = max_response_bytes
        self._buffer = bytearray()
        self._env: dict[str, str] | None = {}
        self._env_bytes = 0
        self._env_lines = 0
        self._multi: _Multiline | None = None
        self._failed: AGIProtocolError | None = None

    @property
    def in_environment(self) -> bool:
        """True until the environment block has been parsed."""
        return self._env is not None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete line."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[AGIItem]:
        if self._env is None and self._multi is None and not self._buffer and self._failed is None:
            # The usual read: one whole, common response line, parsed before.
            item = _COMMON_RESPONSES.get(data)
            if item is not None and len(data) <= self.max_line_bytes:
                return [item]
        if self._failed is not None:
            raise AGIProtocolError(f"AGI parser already failed: {self._failed}")
        try:
            return self._feed(data)
        except AGIProtocolError as exc:
            self._failed = exc
            raise

    def _feed(self, data: bytes) -> list[AGIItem]:
        if (not self._buffer and self._env is None and self._multi is None and data[-1:] == b"\n"
                and data.count(b"\n") == 1 and len(data) <= self.max_line_bytes):
            # The usual read: exactly one response line.
            item = self._response_line(data[:-1].decode("utf-8", "replace"), len(data))
            if type(item) is AGIResponse and item.code == 200 and item.data is None and len(data) <= 64:
                _remember(data, item)
            return [] if item is None else [item]
        if self._buffer:
            if b"\n" not in data:
                self._buffer += data
                self._check_partial(len(self._buffer))
                return []
            data = bytes(self._buffer + data)
            self._buffer.clear()
        out: list[AGIItem] = []
        if self._env is not None:
            data = self._environment_block(data, out)
        lines = data.split(b"\n")
        partial = lines.pop()
        limit = self.max_line_bytes
        for raw in lines:
            if len(raw) > limit:
                raise AGIProtocolError(f"AGI line longer than {limit} bytes")
            item = self._line(raw.decode("utf-8", "replace"), len(raw) + 1)
            if item is not None:
                out.append(item)
        if partial:
            self._check_partial(len(partial))
            self._buffer += partial
        return out

    def _check_partial(self, size: int) -> None:
        if size > self.max_line_bytes:
            raise AGIProtocolError(f"AGI line longer than {self.max_line_bytes} bytes")

    def _environment_block(self, data: bytes, out: list[AGIItem]) -> bytes:
        """Fast path: a whole environment block in `data`, within every limit; the rest back.

        Asterisk writes the block in one go, so it usually arrives in one read. Anything
        else (split across reads, over a limit) takes the line-by-line path, which
        reports exactly which limit was hit.
        """
        end = data.find(b"\n\n")
        if end < 0 or self._env or data.startswith(b"\n"):
            return data
        head = data[:end]
        size = end + 2
        lines = head.count(b"\n") + 2  # the lines, then the blank one
        if size > self.max_env_bytes or lines > self.max_env_lines or (
                size > self.max_line_bytes and max(map(len, head.split(b"\n"))) > self.max_line_bytes):
            return data
        env = self._env
        assert env is not None
        text = head.decode("utf-8", "replace")
        pairs = _ENV_LINES.findall(text)
        if len(pairs) != lines - 1:
            for line in text.split("\n"):
                self._env_pair(env, line)  # raises on the first line that is not agi_*
        env.update(pairs)
        self._env_bytes, self._env_lines, self._env = size, lines, None
        out.append(AGIEnvironment(env))
        return data[size:]

    # -- environment ---------------------------------------------------------------------
    def _line(self, line: str, size: int) -> AGIItem | None:
        if self._env is not None:
            return self._env_line(self._env, line, size)
        if self._multi is not None:
            return self._continue(self._multi, line, size)
        return self._response_line(line, size)

    def _env_line(self, env: dict[str, str], line: str, size: int) -> AGIItem | None:
        self._env_bytes += size
        self._env_lines += 1
        if self._env_bytes > self.max_env_bytes:
            raise AGIProtocolError(f"AGI environment larger than {self.max_env_bytes} bytes")
        if self._env_lines > self.max_env_lines:
            raise AGIProtocolError(f"AGI environment longer than {self.max_env_lines} lines")
        if line == "":
            self._env = None
            return AGIEnvironment(env)
        # Asterisk writes "agi_%s: %s\n" (setup_env); an empty value leaves "agi_x: ".
        # Values are kept verbatim; a value with a newline in it (a caller name set
        # from dialplan) would show up here as a line without "agi_": refused.
        self._env_pair(env, line)
        return None

    @staticmethod
    def _env_pair(env: dict[str, str], line: str) -> None:
        key, sep, value = line.partition(":")
        match = _ENV_KEY.match(key)
        if not sep or match is None:
            raise AGIProtocolError(f"not an AGI environment line: {line[:80]!r}")
        env[match.group(1)] = value[1:] if value.startswith(" ") else value

    # -- responses -----------------------------------------------------------------------
    def _response_line(self, line: str, size: int) -> AGIItem | None:
        if line.startswith("200 result="):
            # Fast path for the usual answers: "200 result=1", "200 result=0 endpos=8000".
            result, _, tail = line[11:].partition(" ")
            if result.isascii() and result.lstrip("-").isdigit():
                if not tail:
                    return AGIResponse(200, result, None, None, line)
                if tail.startswith("endpos=") and tail[7:].isascii() and tail[7:].isdigit():
                    return AGIResponse(200, result, None, int(tail[7:]), line)
        if line.rstrip("\r") == "HANGUP":
            return HangupNotice()
        if line == "":
            return None  # Asterisk never sends one; harmless, so tolerated
        match = _CODE_LINE.match(line)
        if match is None:
            raise AGIProtocolError(f"not an AGI response: {line[:80]!r}")
        code = int(match.group(1))
        rest = match.group(3) or ""
        if match.group(2) == "-":
            # "520-Invalid command syntax.  Proper usage follows:" then the usage
            # text, then "520 End of proper usage." (agi_handle_command, 1.6 .. 22).
            self._multi = _Multiline(code, [line], size)
            return None
        if not rest.startswith("result="):
            # "510 Invalid or unknown command", "511 Command Not Permitted on a dead
            # channel or intercept routine", "520 Invalid command syntax.  Proper
            # usage not available." (one line when a command has no usage text).
            return AGIResponse(code, None, None, None, line)
        return self._result(code, line, rest, size)

    def _result(self, code: int, line: str, rest: str, size: int) -> AGIItem | None:
        match = _RESULT.match(rest)
        assert match is not None  # rest starts with "result="
        # GET DATA answers "200 result= (timeout)" when no digit came: empty result.
        result, tail = match.group(1), match.group(2)
        data: str | None = None
        if tail.startswith(" ("):
            body = tail[2:]
            if body.endswith(")"):
                # GET VARIABLE: "200 result=1 (%s)" with the raw value, which may hold
                # parentheses or " endpos=": everything up to the last ")" is data.
                data, tail = body[:-1], ""
            else:
                close = body.find(") ")
                if close < 0:
                    # A value with a newline in it continues on the next line(s).
                    self._multi = _Multiline(code, [line], size, result=result, kind="data", extra=[body])
                    return None
                # "200 result=1 (speech) endpos=12345 results=1 ..." (SPEECH RECOGNIZE),
                # "200 result=0 (timeout) endpos=8000" (RECORD FILE).
                data, tail = body[:close], body[close + 2 :]
        return AGIResponse(code, result, data, _endpos(tail), line)

    def _continue(self, multi: _Multiline, line: str, size: int) -> AGIItem | None:
        multi.lines.append(line)
        multi.size += size
        if multi.size > self.max_response_bytes:
            raise AGIProtocolError(f"AGI response longer than {self.max_response_bytes} bytes")
        if multi.kind == "usage":
            if not line.startswith(f"{multi.code} "):
                return None
            self._multi = None
            usage = "\n".join(multi.lines[1:-1])
            return AGIResponse(multi.code, None, usage, None, "\n".join(multi.lines))
        multi.extra.append(line)
        if not line.endswith(")"):
            return None
        self._multi = None
        data = "\n".join(multi.extra)[:-1]
        return AGIResponse(multi.code, multi.result, data, None, "\n".join(multi.lines))


#: Whole response lines ("200 result=1\n", "200 result=0 endpos=28800\n") already parsed,
#: shared by every session: an IVR gets the same few answers on every call, and an
#: AGIResponse is immutable. Bounded: emptied when full (endpos values vary).
_COMMON_RESPONSES: dict[bytes, AGIResponse] = {}
COMMON_RESPONSES_MAX: Final = 1024


def _remember(line: bytes, response: AGIResponse) -> None:
    if len(_COMMON_RESPONSES) >= COMMON_RESPONSES_MAX:
        _COMMON_RESPONSES.clear()
    _COMMON_RESPONSES[line] = response


def _endpos(tail: str) -> int | None:
    """`endpos=N` among the key=value words after the result (STREAM FILE etc.)."""
    for word in tail.split():
        key, sep, value = word.partition("=")
        if sep and key == "endpos":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# -- encoding ----------------------------------------------------------------------------

_COMMAND_NAME = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*\Z")
_FORBIDDEN = ("\r", "\n", "\x00")


def encode_command(*words: str) -> bytes:
    """Encode one AGI command line: `words[0]` is the command, the rest its arguments.

    res_agi.c parse_args() (unchanged from 1.4 to 22) splits on blanks and tabs,
    toggles quoting on `"` and takes the character after `\\` literally. So each
    argument is sent in double quotes with `\\` and `"` backslash-escaped: spaces,
    quotes, `;`, `,`, `|` and non-ASCII text all stay one inert argument, and an
    empty string stays an (empty) argument. Refused with ValueError:

    * CR, LF, NUL anywhere: LF ends the line (the rest would run as a new command),
      NUL ends the C string, and Asterisk does not strip CR.
    * a line over AGI_BUF_LEN - 1 bytes: Asterisk would split it into two commands.
    * more than MAX_ARGS - 1 words: Asterisk silently drops the extra ones.

    The command name ("STREAM FILE") is sent as bare keywords; letters only.
    """
    return _encode(words)


@functools.lru_cache(maxsize=4096)
def _encode(words: tuple[str, ...]) -> bytes:
    """encode_command's work, memoised: an IVR sends the same few lines on every call.

    Only successful encodings are kept (lru_cache does not store exceptions).
    """
    if not words:
        raise ValueError("empty AGI command")
    name, *args = words
    if _COMMAND_NAME.match(name) is None:
        raise ValueError(f"not an AGI command name: {name!r}")
    for word in args:
        if any(c in word for c in _FORBIDDEN):
            raise ValueError(f"AGI argument contains CR, LF or NUL: {word!r}")
    parts = name.split(" ")
    if len(parts) + len(args) > MAX_ARGS - 1:
        raise ValueError(f"more than {MAX_ARGS - 1} AGI words")
    parts.extend('"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"' for word in args)
    line = (" ".join(parts) + "\n").encode("utf-8")
    if len(line) > MAX_COMMAND_BYTES:
        raise ValueError(f"AGI command line of {len(line)} bytes exceeds {MAX_COMMAND_BYTES}")
    return line


_APP_SPECIAL = re.compile(r'([\\",()\[\]])')
_APP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def encode_app_args(*args: str) -> str:
    """Join dialplan application arguments with "," so each value stays one argument.

    Applications split their data with __ast_app_separate_args() (main/app.c): ","
    separates, `"` toggles quoting, `\\` escapes the next character, and "()"/"[]"
    nest (an unbalanced "(" would swallow the following commas). Every one of those
    characters is backslash-escaped. Variable references are refused: with
    AGIEXECFULL=yes set on the channel, EXEC substitutes `${...}` and `$[...]`
    before running the application (res_agi.c handle_exec, Asterisk 22).
    """
    for arg in args:
        if "${" in arg or "$[" in arg:
            raise ValueError(f"application argument contains a variable reference: {arg!r}")
    return ",".join(_APP_SPECIAL.sub(r"\\\1", arg) for arg in args)


def check_app_name(application: str) -> str:
    """Application names are identifiers; anything else is our bug."""
    if _APP_NAME.match(application) is None:
        raise ValueError(f"not a dialplan application name: {application!r}")
    return application
