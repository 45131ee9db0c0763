"""AGI wire protocol, sans-I/O: the environment block, responses, and command encoding.

A FastAGI session starts with `agi_name: value` lines ending in a blank line, then
alternates our command lines with Asterisk's response lines (Asterisk 22 res_agi):
  200 result=1 (speech) endpos=12345
  510 Invalid or unknown command
  511 Command Not Permitted on a dead channel or intercept routine
  520-Invalid command syntax.  Proper usage follows:  ...  520 End of proper usage.
and, over FastAGI with AGISIGHUP unset, a bare `HANGUP` line when the caller hangs up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ivr.agi.errors import AGIProtocolError


@dataclass(frozen=True, slots=True)
class AGIEnvironment:
    variables: Mapping[str, str]

    def _get(self, key: str) -> str:
        return self.variables.get(key, "")

    @property
    def network_script(self) -> str:
        return self._get("network_script")

    @property
    def channel(self) -> str:
        return self._get("channel")

    @property
    def uniqueid(self) -> str:
        return self._get("uniqueid")

    @property
    def caller_id_num(self) -> str:
        return self._get("callerid")

    @property
    def caller_id_name(self) -> str:
        return self._get("calleridname")

    @property
    def context(self) -> str:
        return self._get("context")

    @property
    def extension(self) -> str:
        return self._get("extension")

    @property
    def arguments(self) -> tuple[str, ...]:
        args: list[str] = []
        n = 1
        while f"arg_{n}" in self.variables:
            args.append(self.variables[f"arg_{n}"])
            n += 1
        return tuple(args)


@dataclass(frozen=True, slots=True)
class AGIResponse:
    code: int
    result: str | None
    data: str | None
    endpos: int | None
    text: str

    @property
    def result_int(self) -> int | None:
        try:
            return None if self.result is None else int(self.result)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class HangupNotice:
    """Asterisk told us the channel hung up."""


_RESPONSE = re.compile(r"^(\d{3}) result=(\S*)(?: \((.*)\))?(?: endpos=(\d+))?")

AGIItem = AGIEnvironment | AGIResponse | HangupNotice


class AGIParser:
    """Incremental parser for one FastAGI session."""

    def __init__(self, max_line_bytes: int = 8192, max_env_bytes: int = 64 * 1024, max_env_lines: int = 256) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_env_bytes = max_env_bytes
        self.max_env_lines = max_env_lines
        self._buffer = bytearray()
        self._env: dict[str, str] | None = {}
        self._env_bytes = 0
        self._usage: list[str] | None = None

    @property
    def in_environment(self) -> bool:
        return self._env is not None

    def feed(self, data: bytes) -> list[AGIItem]:
        self._buffer += data
        out: list[AGIItem] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.max_line_bytes:
                    raise AGIProtocolError(f"AGI line longer than {self.max_line_bytes} bytes")
                return out
            if end > self.max_line_bytes:
                raise AGIProtocolError(f"AGI line longer than {self.max_line_bytes} bytes")
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            line = raw.decode("utf-8", "replace").rstrip("\r")
            item = self._line(line, len(raw) + 1)
            if item is not None:
                out.append(item)

    def _line(self, line: str, size: int) -> AGIItem | None:
        if self._env is not None:
            self._env_bytes += size
            if self._env_bytes > self.max_env_bytes or len(self._env) >= self.max_env_lines:
                raise AGIProtocolError("AGI environment block too large")
            if line == "":
                env = AGIEnvironment(dict(self._env))
                self._env = None
                return env
            key, sep, value = line.partition(": ")
            if not sep or not key.startswith("agi_"):
                raise AGIProtocolError(f"not an AGI environment line: {line[:80]!r}")
            self._env[key[4:]] = value
            return None
        if self._usage is not None:
            # 520 multi-line usage ends with "520 End of proper usage."
            if line.startswith("520 "):
                text = "\n".join([*self._usage, line])
                self._usage = None
                return AGIResponse(520, None, None, None, text)
            self._usage.append(line)
            return None
        if line == "HANGUP":
            return HangupNotice()
        if line.startswith("520-"):
            self._usage = [line]
            return None
        if line == "":
            return None
        match = _RESPONSE.match(line)
        if match:
            code, result, data, endpos = match.groups()
            return AGIResponse(int(code), result, data, int(endpos) if endpos else None, line)
        if line[:3].isdigit() and (len(line) == 3 or line[3] == " "):
            return AGIResponse(int(line[:3]), None, None, None, line)
        raise AGIProtocolError(f"not an AGI response: {line[:80]!r}")


def encode_command(*words: str) -> bytes:
    """One command line; every argument after the command name is double-quoted.

    res_agi's parse_args splits on blanks, honours double quotes and backslash
    escapes, so quoting each argument and escaping `"` and `\\` keeps a caller ID
    like `evil" EXEC ...` one inert argument. CR/LF/NUL would end the command line
    and start another: refused.
    """
    if not words:
        raise ValueError("empty AGI command")
    for word in words:
        if any(c in word for c in "\r\n\x00"):
            raise ValueError(f"AGI argument contains a line break or NUL: {word!r}")
    parts = [words[0]]
    for word in words[1:]:
        parts.append('"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return (" ".join(parts) + "\n").encode("utf-8")
