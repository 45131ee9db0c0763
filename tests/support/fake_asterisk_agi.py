"""A scripted fake Asterisk for FastAGI server tests: Asterisk's side of one session.

It does what a real Asterisk cannot be made to do on demand: send half an
environment block, garbage, an oversize line, a HANGUP in the middle of a command,
or nothing at all. It splits our command lines exactly as Asterisk 22 does
(`asterisk_parse_args`, a re-implementation of res_agi.c parse_args() written from
reading that function), so tests see the argv Asterisk would see.

Default answers follow res_agi.c (Asterisk 22) for the commands the IVR uses; set
`fake.answers["STREAM FILE"] = "200 result=49 endpos=8000"` (a string, a list of
lines, or a callable taking argv) to script anything else. The fake keeps the
channel state those commands change (variables, context, extension, priority).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Final

AGI_BUF_LEN: Final = 2048  # res_agi.c: the command line buffer
MAX_ARGS: Final = 128  # res_agi.c: parse_args() keeps MAX_ARGS - 1 words

Answer = str | Sequence[str] | Callable[[list[str]], "str | Sequence[str] | None"]


def asterisk_parse_args(line: str) -> list[str]:
    """Split one command line the way res_agi.c parse_args() does (1.4 .. 22).

    Blanks and tabs separate words unless inside double quotes or right after a
    backslash; an unescaped `"` toggles quoting and is dropped; a backslash makes
    the next character literal and is dropped; opening a quote after whitespace
    starts a (possibly empty) word; characters of words past MAX_ARGS - 1 are lost.
    """
    words: list[list[str]] = []
    quoted = escaped = False
    between = True  # Asterisk's "whitespace" flag: not inside a word
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and between:
                words.append([])
                between = False
            continue
        if ch in " \t" and not quoted and not escaped:
            between = True
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if between:
            if len(words) >= MAX_ARGS - 1:
                continue  # "Too many arguments, truncating"
            words.append([])
            between = False
        words[-1].append(ch)
        escaped = False
    return ["".join(word) for word in words]


def env_block(script: str | None = "hotline", **overrides: str) -> bytes:
    """An environment block in the order setup_env() writes it (Asterisk 22).

    `overrides` replace or add `agi_<key>` lines; `script=None` leaves out
    agi_network_script, as Asterisk does for agi://host/ without a path.
    """
    path = "" if script is None else script
    values: dict[str, str] = {"network": "yes"}
    if script is not None:
        values["network_script"] = script
    values.update({
        "request": f"agi://127.0.0.1:4573/{path}",
        "channel": "PJSIP/carrier-00000001",
        "language": "zh",
        "type": "PJSIP",
        "uniqueid": "1700000000.1",
        "version": "22.0.0",
        "callerid": "13800138000",
        "calleridname": "张三",
        "callingpres": "0",
        "callingani2": "0",
        "callington": "0",
        "callingtns": "0",
        "dnid": "4008001234",
        "rdnis": "unknown",
        "context": "hotline",
        "extension": "4008001234",
        "priority": "3",
        "enhanced": "0.0",
        "accountcode": "",
        "threadid": "140000000000001",
    })
    values.update(overrides)
    return "".join(f"agi_{key}: {value}\n" for key, value in values.items()).encode() + b"\n"


#: Commands still allowed on a dead channel (res_agi.c command table, "dead" flag).
DEAD_OK: Final = frozenset({
    "CHANNEL STATUS", "DATABASE DEL", "DATABASE DELTREE", "DATABASE GET", "DATABASE PUT",
    "GET FULL VARIABLE", "GET VARIABLE", "HANGUP", "NOOP", "SET CONTEXT", "SET EXTENSION",
    "SET PRIORITY", "SET VARIABLE", "VERBOSE", "SPEECH DESTROY", "SPEECH UNLOAD GRAMMAR",
})


class FakeAsterisk:
    """One FastAGI connection, driven by a test as Asterisk would drive it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.raw_lines: list[bytes] = []  # every command line received, as sent
        self.commands: list[list[str]] = []  # the same, split like Asterisk does
        self.answers: dict[str, Answer] = {}
        self.variables: dict[str, str] = {}
        self.context = "hotline"
        self.extension = "4008001234"
        self.priority = "3"
        self.answered = False
        self.dead = False
        self.eof = False
        self._buffer = b""

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> FakeAsterisk:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    # -- sending ---------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def send_env(self, script: str | None = "hotline", **overrides: str) -> None:
        self.send_raw(env_block(script, **overrides))
        await self.writer.drain()

    def reply(self, *lines: str) -> None:
        for line in lines:
            self.send_raw(line.encode() + b"\n")

    def hangup_notice(self) -> None:
        """The caller hung up: Asterisk writes HANGUP and serves the rest as a dead channel."""
        self.dead = True
        self.send_raw(b"HANGUP\n")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    # -- receiving -------------------------------------------------------------------
    async def read_line(self, timeout: float = 5.0) -> bytes | None:
        """One command line (without "\\n"), or None when the server closed."""
        async with asyncio.timeout(timeout):
            while b"\n" not in self._buffer:
                try:
                    chunk = await self.reader.read(65536)
                except ConnectionError:
                    chunk = b""
                if not chunk:
                    self.eof = True
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        self.raw_lines.append(line)
        return line

    async def read_command(self, timeout: float = 5.0) -> list[str] | None:
        line = await self.read_line(timeout)
        if line is None:
            return None
        argv = asterisk_parse_args(line.decode("utf-8", "replace"))
        self.commands.append(argv)
        return argv

    async def expect(self, *prefix: str, timeout: float = 5.0) -> list[str]:
        """Read one command and check it starts with `prefix` (keywords case-insensitive)."""
        argv = await self.read_command(timeout)
        assert argv is not None, f"server closed while {prefix} was expected"
        head = [w.upper() for w in argv[: len(prefix)]]
        assert head == [p.upper() for p in prefix], f"expected {prefix}, got {argv}"
        return argv

    async def wait_closed(self, timeout: float = 5.0) -> bool:
        """True once the server closed the connection (reading and dropping anything else)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.read_command(timeout) is not None:
                    pass
        except TimeoutError:
            return False
        return True

    # -- Asterisk's behaviour --------------------------------------------------------
    async def serve(self, timeout: float = 10.0) -> None:
        """Answer every command like Asterisk would, until the server closes."""
        while True:
            argv = await self.read_command(timeout)
            if argv is None:
                return
            self.reply(*self.respond(argv))
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    def respond(self, argv: list[str]) -> list[str]:
        name, args = _split_command(argv)
        scripted = self.answers.get(name)
        if scripted is not None:
            answer = scripted(argv) if callable(scripted) else scripted
            if answer is None:
                return []
            return [answer] if isinstance(answer, str) else list(answer)
        return self.default_answer(argv)

    def default_answer(self, argv: list[str]) -> list[str]:
        """What Asterisk 22 would answer, ignoring `answers`."""
        name, args = _split_command(argv)
        if name not in _ARITY:
            return ["510 Invalid or unknown command"]
        if self.dead and name not in DEAD_OK:
            return ["511 Command Not Permitted on a dead channel or intercept routine"]
        low, high = _ARITY[name]
        if not low <= len(args) <= high:
            return ["520-Invalid command syntax.  Proper usage follows:",
                    f" Usage: {name} ...", "520 End of proper usage."]
        return self._default(name, args)

    def _default(self, name: str, args: list[str]) -> list[str]:
        if name == "ANSWER":
            self.answered = True
            return ["200 result=0"]
        if name == "STREAM FILE":
            return ["200 result=0 endpos=8000"]
        if name == "WAIT FOR DIGIT":
            return ["200 result=0"]
        if name == "GET DATA":
            return ["200 result= (timeout)"]
        if name == "SET VARIABLE":
            self.variables[args[0]] = args[1] if len(args) > 1 else ""
            return ["200 result=1"]
        if name == "GET VARIABLE":
            value = self.variables.get(args[0])
            return ["200 result=0"] if value is None else [f"200 result=1 ({value})"]
        if name == "GET FULL VARIABLE":
            return [f"200 result=1 ({args[0]})"]
        if name == "SET CONTEXT":
            self.context = args[0]
            return ["200 result=0"]
        if name == "SET EXTENSION":
            self.extension = args[0]
            return ["200 result=0"]
        if name == "SET PRIORITY":
            self.priority = args[0]
            return ["200 result=0"]
        if name == "HANGUP":
            # Answer first; the HANGUP notice follows once the channel is down.
            self.dead = True
            return ["200 result=1", "HANGUP"]
        return ["200 result=0"] if name == "EXEC" else ["200 result=1"]


# Words after the command name: (min, max), from the usage checks in res_agi.c.
_ARITY: Final[Mapping[str, tuple[int, int]]] = {
    "ANSWER": (0, 0),
    "STREAM FILE": (2, 3),
    "WAIT FOR DIGIT": (1, 1),
    "GET DATA": (1, 3),
    "SET VARIABLE": (2, 2),
    "GET VARIABLE": (1, 1),
    "GET FULL VARIABLE": (1, 2),
    "SET CONTEXT": (1, 1),
    "SET EXTENSION": (1, 1),
    "SET PRIORITY": (1, 1),
    "EXEC": (1, 2),
    "VERBOSE": (1, 2),
    "HANGUP": (0, 1),
    "NOOP": (0, 100),
}
_NAMES: Final = sorted(_ARITY, key=lambda n: -len(n.split()))


def _split_command(argv: list[str]) -> tuple[str, list[str]]:
    """Longest known command name matching the first words (case-insensitive, like find_command)."""
    upper = [w.upper() for w in argv]
    for name in _NAMES:
        words = name.split()
        if upper[: len(words)] == words:
            return name, argv[len(words):]
    return " ".join(upper[:1]), argv[1:]
