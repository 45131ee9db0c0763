"""FastAGI server against a fake Asterisk: normal calls, hangups, garbage, timeouts, load."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import socket
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cti import channel_vars as cv
from ivr.agi import server as agi_server
from ivr.agi.errors import AGIHangup, AGIProtocolError, AGIResultError, AGITimeout, AGIUsageError
from ivr.agi.protocol import AGIEnvironment
from ivr.agi.server import AGIChannel, FastAGIServer, script_name
from tests.support.agi_servers import AGITestBed, Connect, MakeServer
from tests.support.fake_asterisk_agi import FakeAsterisk, asterisk_parse_args, env_block
from tests.unit.test_agi_protocol import app_separate_args

FAILSAFE = ("hotline-failsafe", "s", "1")


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    bed = AGITestBed()
    try:
        yield bed.make_server
    finally:
        await bed.stop_servers()


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    bed = AGITestBed()
    try:
        yield bed.connect
    finally:
        await bed.close_fakes()


async def settle(server: FastAGIServer, timeout: float = 5.0) -> None:
    """Wait until every session task has finished."""
    while server._tasks:
        done, _ = await asyncio.wait(set(server._tasks), timeout=timeout)
        assert done, "sessions still running"


def assert_failsafe(fake: FakeAsterisk) -> None:
    assert fake.variables.get(cv.AGI_FAILED) == "1"
    assert (fake.context, fake.extension, fake.priority) == FAILSAFE
    tail = [argv[:2] for argv in fake.commands[-4:]]
    assert tail == [["SET", "VARIABLE"], ["SET", "CONTEXT"], ["SET", "EXTENSION"], ["SET", "PRIORITY"]]


def failsafe_sent(fake: FakeAsterisk) -> bool:
    return any(argv[:2] == ["SET", "CONTEXT"] for argv in fake.commands)


# -- normal sessions -----------------------------------------------------------------------------


async def test_normal_session(make_server: MakeServer, connect: Connect) -> None:
    seen: dict[str, Any] = {}

    async def hotline(ch: AGIChannel) -> None:
        seen["env"] = ch.env
        await ch.answer()
        seen["digit"] = await ch.stream_file("welcome", "123")
        await ch.set_variable("HOTLINE_CHOICE", "2")
        await ch.verbose("hotline call", 3)

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    await fake.expect("ANSWER")
    fake.reply("200 result=0")
    argv = await fake.expect("STREAM", "FILE")
    assert argv == ["STREAM", "FILE", "welcome", "123"]
    fake.reply("200 result=50 endpos=4000")  # "2"
    assert await fake.expect("SET", "VARIABLE") == ["SET", "VARIABLE", "HOTLINE_CHOICE", "2"]
    fake.reply("200 result=1")
    assert await fake.expect("VERBOSE") == ["VERBOSE", "hotline call", "3"]
    fake.reply("200 result=1")
    assert await fake.wait_closed()
    await settle(server)

    env = seen["env"]
    assert isinstance(env, AGIEnvironment)
    assert env.caller_id_name == "张三" and env.network_script == "hotline"
    assert seen["digit"] == "2"
    assert (server.sessions_total, server.sessions_active, server.failures) == (1, 0, 0)
    assert not failsafe_sent(fake)


async def test_typed_commands(make_server: MakeServer, connect: Connect) -> None:
    got: dict[str, Any] = {}

    async def hotline(ch: AGIChannel) -> None:
        got["unset"] = await ch.get_variable("NOPE")
        await ch.set_variable("GREETING", "hello (world)")
        got["set"] = await ch.get_variable("GREETING")
        got["full"] = await ch.get_full_variable("${CALLERID(num)}")
        got["data_timeout"] = await ch.get_data("enter-account", 3000, 6)
        fake.answers["GET DATA"] = "200 result=1234"
        got["data"] = await ch.get_data("enter-account", 3000, 4)
        fake.answers["WAIT FOR DIGIT"] = "200 result=35"  # "#"
        got["digit"] = await ch.wait_for_digit(5000)
        fake.answers["WAIT FOR DIGIT"] = "200 result=0"
        got["no_digit"] = await ch.wait_for_digit(100)
        got["stream"] = await ch.stream_file("menu")
        await ch.set_context("hotline-queues")
        await ch.set_extension("repair")
        await ch.set_priority(1)
        got["exec"] = await ch.exec("Playback", "beep")
        await ch.hangup()
        got["after_hangup"] = ch.hung_up
        await ch.verbose("never sent")

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    await fake.serve()
    await settle(server)
    assert got["unset"] is None
    assert got["set"] == "hello (world)"
    assert got["full"] == "${CALLERID(num)}"  # the fake echoes the expression
    assert got["data_timeout"] == ("", True)
    assert got["data"] == ("1234", False)
    assert got["digit"] == "#" and got["no_digit"] is None and got["stream"] is None
    assert (fake.context, fake.extension, fake.priority) == ("hotline-queues", "repair", "1")
    assert got["exec"].code == 200
    assert got["after_hangup"] is True
    assert fake.commands[-1] == ["HANGUP"]  # VERBOSE after HANGUP raised AGIHangup instead
    assert server.failures == 0


@pytest.mark.parametrize("script", ["hotline", "/hotline", "hotline?lang=zh&x=1", "/hotline/"])
async def test_routing_by_script_path(make_server: MakeServer, connect: Connect, script: str) -> None:
    called: list[str] = []

    async def hotline(ch: AGIChannel) -> None:
        called.append(ch.env.network_script)

    async def survey(ch: AGIChannel) -> None:
        raise AssertionError("wrong handler")

    server = await make_server({"hotline": hotline, "survey": survey})
    fake = await connect(server, script)
    assert await fake.wait_closed()
    assert called == [script]


@pytest.mark.parametrize(("variables", "expected"), [
    ({"network_script": "hotline"}, "hotline"),
    ({"network_script": "/survey?id=7"}, "survey"),
    ({"request": "agi://10.0.0.1:4573/hotline?x=1"}, "hotline"),
    ({"request": "agi://10.0.0.1/"}, ""),
    ({}, ""),
])
def test_script_name(variables: dict[str, str], expected: str) -> None:
    assert script_name(AGIEnvironment(variables)) == expected


# -- failures send the caller to the failsafe ------------------------------------------------------


async def test_handler_exception_sends_failsafe(make_server: MakeServer, connect: Connect,
                                                caplog: pytest.LogCaptureFixture) -> None:
    async def hotline(ch: AGIChannel) -> None:
        await ch.answer()
        raise RuntimeError("database down")

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    with caplog.at_level(logging.ERROR, logger="ivr.agi.server"):
        await fake.serve()
        await settle(server)
    assert_failsafe(fake)
    assert fake.commands[0] == ["ANSWER"]
    assert server.failures == 1
    failed = [r for r in caplog.records if r.name == "ivr.agi.server" and "failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None and "database down" in caplog.text
    assert "PJSIP/carrier-00000001" in failed[0].getMessage()


async def test_unknown_script_sends_failsafe(make_server: MakeServer, connect: Connect) -> None:
    async def hotline(ch: AGIChannel) -> None:
        raise AssertionError("not this one")

    server = await make_server({"hotline": hotline})
    fake = await connect(server, "no-such-script?x=1")
    await fake.serve()
    await settle(server)
    assert_failsafe(fake)
    assert len(fake.commands) == 4
    assert server.failures == 1


async def test_missing_script_path_sends_failsafe(make_server: MakeServer, connect: Connect) -> None:
    server = await make_server({"hotline": lambda ch: asyncio.sleep(0)})
    fake = await connect(server, None)
    await fake.serve()
    assert_failsafe(fake)


async def test_custom_failsafe_location(make_server: MakeServer, connect: Connect) -> None:
    async def hotline(ch: AGIChannel) -> None:
        raise ValueError("bad flow")

    server = await make_server({"hotline": hotline}, failsafe=("emergency", "operator", "first"))
    fake = await connect(server)
    await fake.serve()
    assert (fake.context, fake.extension, fake.priority) == ("emergency", "operator", "first")


async def test_usage_error_is_a_failure(make_server: MakeServer, connect: Connect) -> None:
    errors: list[BaseException] = []

    async def hotline(ch: AGIChannel) -> None:
        try:
            await ch.command("STREAM FILE", "only-one-arg")
        except AGIUsageError as exc:
            errors.append(exc)
            raise

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    await fake.serve()
    assert isinstance(errors[0], AGIUsageError) and "Usage: STREAM FILE" in errors[0].usage
    assert server.failures == 1
    assert_failsafe(fake)


async def test_failed_command_without_hangup_is_a_failure(make_server: MakeServer, connect: Connect) -> None:
    # STREAM FILE of a missing prompt: "200 result=-1 endpos=0" and no HANGUP after it.
    errors: list[BaseException] = []

    async def hotline(ch: AGIChannel) -> None:
        try:
            await ch.stream_file("missing-prompt")
        except AGIResultError as exc:
            errors.append(exc)
            raise

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    fake.answers["STREAM FILE"] = "200 result=-1 endpos=0"
    await fake.serve()
    assert len(errors) == 1
    assert server.failures == 1
    assert_failsafe(fake)


# -- hangups end the session quietly --------------------------------------------------------------


async def test_hangup_notice_mid_command(make_server: MakeServer, connect: Connect,
                                         caplog: pytest.LogCaptureFixture) -> None:
    raised: list[BaseException] = []

    async def hotline(ch: AGIChannel) -> None:
        await ch.answer()
        try:
            await ch.stream_file("welcome", "0123456789")
        except AGIHangup as exc:
            raised.append(exc)
            raise

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    await fake.expect("ANSWER")
    fake.reply("200 result=0")
    await fake.expect("STREAM", "FILE")
    with caplog.at_level(logging.DEBUG, logger="ivr.agi.server"):
        fake.hangup_notice()  # the answer to STREAM FILE never comes
        assert await fake.wait_closed()
        await settle(server)
    assert len(raised) == 1
    assert server.failures == 0
    assert not failsafe_sent(fake)
    assert "caller hung up" in caplog.text
    # Only the AGI server's records: the session's service may log on the shared loop.
    assert not [r for r in caplog.records if r.name.startswith("ivr.agi") and r.levelno >= logging.WARNING]


async def test_failed_command_then_hangup_is_a_hangup(make_server: MakeServer, connect: Connect) -> None:
    # Asterisk's usual order: the failed answer first, then HANGUP.
    raised: list[BaseException] = []

    async def hotline(ch: AGIChannel) -> None:
        try:
            await ch.stream_file("welcome")
        except AGIHangup as exc:
            raised.append(exc)
            raise

    server = await make_server({"hotline": hotline}, hangup_grace=2.0)
    fake = await connect(server)
    await fake.expect("STREAM", "FILE")
    fake.reply("200 result=-1 endpos=2400")
    await asyncio.sleep(0.05)
    fake.hangup_notice()
    assert await fake.wait_closed()
    await settle(server)
    assert len(raised) == 1
    assert isinstance(raised[0], AGIHangup) and raised[0].response is not None and raised[0].response.endpos == 2400
    assert server.failures == 0 and not failsafe_sent(fake)


async def test_hangup_while_handler_idle(make_server: MakeServer, connect: Connect) -> None:
    # HANGUP arrives between commands: the next command raises without being sent.
    hung_up = asyncio.Event()
    raised: list[BaseException] = []

    async def hotline(ch: AGIChannel) -> None:
        await ch.answer()
        await hung_up.wait()
        async with asyncio.timeout(5):
            await ch._ended.wait()  # the connection saw the HANGUP line
        assert ch.hung_up and not ch.alive
        try:
            await ch.set_variable("X", "1")
        except AGIHangup as exc:
            raised.append(exc)
            raise

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    await fake.expect("ANSWER")
    fake.reply("200 result=0")
    fake.hangup_notice()
    hung_up.set()
    assert await fake.wait_closed()
    await settle(server)
    assert len(raised) == 1
    assert fake.commands == [["ANSWER"]]
    assert server.failures == 0


async def test_eof_mid_command(make_server: MakeServer, connect: Connect) -> None:
    raised: list[BaseException] = []

    async def hotline(ch: AGIChannel) -> None:
        try:
            await ch.wait_for_digit(10000)
        except AGIHangup as exc:
            raised.append(exc)
            raise

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    await fake.expect("WAIT", "FOR", "DIGIT")
    await fake.close()
    await settle(server)
    assert len(raised) == 1 and "closed" in str(raised[0])
    assert server.failures == 0 and server.sessions_active == 0


async def test_dead_channel_is_a_hangup(make_server: MakeServer, connect: Connect) -> None:
    async def hotline(ch: AGIChannel) -> None:
        await ch.stream_file("welcome")

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    fake.dead = True  # AGISIGHUP=no: no HANGUP line, only 511 answers
    await fake.serve()
    await settle(server)
    assert fake.commands == [["STREAM", "FILE", "welcome", ""]]
    assert server.failures == 0


# -- garbage and timeouts --------------------------------------------------------------------------


async def _still_serves(server: FastAGIServer, connect: Connect) -> None:
    fake = await connect(server)
    await fake.serve()
    assert fake.commands and fake.commands[0] == ["ANSWER"]


async def _answer(ch: AGIChannel) -> None:
    await ch.answer()


async def test_eof_before_environment_complete(make_server: MakeServer, connect: Connect) -> None:
    server = await make_server({"hotline": _answer})
    fake = await connect(server, env=False)
    fake.send_raw(env_block()[:100])
    await fake.writer.drain()
    await fake.close()
    await settle(server)
    assert server.sessions_active == 0 and server.failures == 0
    await _still_serves(server, connect)


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"agi_calleridname: " + b"A" * 20000,  # oversize line, no newline needed
    b"".join(b"agi_v%d: x\n" % i for i in range(300)),  # too many lines
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",  # a TLS hello
], ids=["http", "oversize-line", "too-many-lines", "tls"])
async def test_garbage_environment_closes_connection(make_server: MakeServer, connect: Connect,
                                                     garbage: bytes) -> None:
    server = await make_server({"hotline": _answer}, env_timeout=30)
    fake = await connect(server, env=False)
    fake.send_raw(garbage)
    assert await fake.wait_closed(timeout=5)  # long before env_timeout
    assert fake.commands == []
    await _still_serves(server, connect)


async def test_environment_timeout(make_server: MakeServer, connect: Connect) -> None:
    server = await make_server({"hotline": _answer}, env_timeout=0.2)
    silent = await connect(server, env=False)
    half = await connect(server, env=False)
    half.send_raw(env_block()[:50])
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await silent.wait_closed(timeout=5)
    assert await half.wait_closed(timeout=5)
    assert loop.time() - started < 3
    await _still_serves(server, connect)


async def test_garbage_mid_session(make_server: MakeServer, connect: Connect) -> None:
    raised: list[BaseException] = []

    async def hotline(ch: AGIChannel) -> None:
        try:
            await ch.answer()
        except AGIProtocolError as exc:
            raised.append(exc)
            raise

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    await fake.expect("ANSWER")
    fake.send_raw(b"this is not AGI\n")
    assert await fake.wait_closed()
    await settle(server)
    assert len(raised) == 1
    assert server.failures == 1
    assert fake.commands == [["ANSWER"]]  # no failsafe over a broken stream
    await _still_serves(server, connect)


async def test_idle_handler_gets_failsafe(make_server: MakeServer, connect: Connect,
                                          caplog: pytest.LogCaptureFixture) -> None:
    cancelled = asyncio.Event()

    async def hotline(ch: AGIChannel) -> None:
        await ch.answer()
        try:
            await asyncio.sleep(60)  # a stuck lookup: the caller hears silence
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await make_server({"hotline": hotline}, idle_timeout=0.2)
    fake = await connect(server)
    with caplog.at_level(logging.ERROR, logger="ivr.agi.server"):
        await fake.serve()
        await settle(server)
    assert cancelled.is_set()
    assert_failsafe(fake)
    assert server.failures == 1
    assert "sent no AGI command" in caplog.text


async def test_long_command_is_not_idle(make_server: MakeServer, connect: Connect) -> None:
    async def hotline(ch: AGIChannel) -> None:
        assert await ch.stream_file("long-prompt", "1") == "1"

    server = await make_server({"hotline": hotline}, idle_timeout=0.1)
    fake = await connect(server)
    await fake.expect("STREAM", "FILE")
    await asyncio.sleep(0.4)  # the prompt plays longer than idle_timeout
    fake.reply("200 result=49 endpos=16000")
    assert await fake.wait_closed()
    await settle(server)
    assert server.failures == 0 and not failsafe_sent(fake)


async def test_command_timeout_then_failsafe(make_server: MakeServer, connect: Connect) -> None:
    raised: list[BaseException] = []

    async def hotline(ch: AGIChannel) -> None:
        try:
            await ch.set_variable("X", "1")
        except AGITimeout as exc:
            raised.append(exc)
        # The session is out of step now: further commands are refused.
        await ch.set_variable("Y", "2")

    server = await make_server({"hotline": hotline}, command_timeout=0.2)
    fake = await connect(server)
    # Asterisk never answers SET VARIABLE X; everything else as usual.
    fake.answers["SET VARIABLE"] = lambda argv: None if argv[2] == "X" else fake.default_answer(argv)
    await fake.serve()
    await settle(server)
    assert len(raised) == 1 and isinstance(raised[0], TimeoutError)
    assert server.failures == 1
    assert ["SET", "VARIABLE", "Y", "2"] not in fake.commands
    assert_failsafe(fake)


async def test_slow_answers_within_the_timeout_never_expire(make_server: MakeServer, connect: Connect) -> None:
    # Each answer takes 2/3 of command_timeout, four in a row: longer than the timeout in
    # all. One deadline timer serves the whole session and is re-armed lazily; an early
    # arming must never expire a later command. The fifth gets no answer: AGITimeout.
    raised: list[BaseException] = []
    answered: list[str] = []

    async def hotline(ch: AGIChannel) -> None:
        for i in range(4):
            await ch.set_variable(f"V{i}", "1")
            answered.append(f"V{i}")
        try:
            await ch.set_variable("NEVER", "1")
        except AGITimeout as exc:
            raised.append(exc)
            raise

    server = await make_server({"hotline": hotline}, command_timeout=0.3)
    fake = await connect(server)
    loop = asyncio.get_running_loop()
    for _ in range(4):
        await fake.expect("SET", "VARIABLE")
        await asyncio.sleep(0.2)
        fake.reply("200 result=1")
    await fake.expect("SET", "VARIABLE", "NEVER")
    asked = loop.time()
    await fake.serve()  # the failsafe's commands
    await settle(server)
    assert answered == ["V0", "V1", "V2", "V3"]
    assert len(raised) == 1 and loop.time() - asked >= 0.29
    assert server.failures == 1
    assert_failsafe(fake)


async def test_idle_timeout_runs_from_the_last_command(make_server: MakeServer, connect: Connect) -> None:
    # Commands keep the handler from being idle; the idle timeout counts from the last one.
    times: dict[str, float] = {}

    async def hotline(ch: AGIChannel) -> None:
        loop = asyncio.get_running_loop()
        for i in range(4):
            await ch.set_variable(f"V{i}", "1")
            times["last"] = loop.time()
            await asyncio.sleep(0.15)  # shorter than idle_timeout each time, longer in all
        await asyncio.sleep(60)

    server = await make_server({"hotline": hotline}, idle_timeout=0.3)
    fake = await connect(server)
    await fake.serve()
    failsafe_at = asyncio.get_running_loop().time()
    await settle(server)
    assert [argv[2] for argv in fake.commands[:4]] == ["V0", "V1", "V2", "V3"]
    assert_failsafe(fake)
    assert server.failures == 1
    assert failsafe_at - times["last"] >= 0.29


async def test_late_answer_is_discarded(make_server: MakeServer, connect: Connect) -> None:
    # An answer that arrives when no command is pending is dropped, not an error.
    seen: list[BaseException] = []

    async def hotline(ch: AGIChannel) -> None:
        try:
            await ch.command("NOOP")
        except AGITimeout as exc:
            seen.append(exc)
        await asyncio.sleep(0.5)  # the late answer arrives now
        assert ch.alive

    server = await make_server({"hotline": hotline}, command_timeout=0.1)
    fake = await connect(server)
    await fake.expect("NOOP")
    await asyncio.sleep(0.15)
    fake.reply("200 result=0")
    assert await fake.wait_closed()
    await settle(server)
    assert len(seen) == 1
    assert server.failures == 0 and fake.commands == [["NOOP"]]


async def test_late_answer_does_not_derail_failsafe(make_server: MakeServer, connect: Connect) -> None:
    # Timed out, then the handler gives up. The stale answer arrives while the failsafe
    # runs; it cannot be told apart from the next answer (Asterisk sends no ids), so
    # the failsafe accepts any answer per command and still completes.
    async def hotline(ch: AGIChannel) -> None:
        await ch.command("NOOP")

    server = await make_server({"hotline": hotline}, command_timeout=0.2)
    fake = await connect(server)
    await fake.expect("NOOP")
    await asyncio.sleep(0.3)
    fake.reply("200 result=0")  # late
    await fake.serve()
    await settle(server)
    assert_failsafe(fake)
    assert server.failures == 1


async def test_slow_command_is_logged(make_server: MakeServer, connect: Connect,
                                      caplog: pytest.LogCaptureFixture) -> None:
    async def hotline(ch: AGIChannel) -> None:
        await ch.set_variable("X", "1")
        await ch.stream_file("prompt")  # long by nature: not reported

    server = await make_server({"hotline": hotline}, slow_command=0.05)
    fake = await connect(server)
    with caplog.at_level(logging.WARNING, logger="ivr.agi.server"):
        await fake.expect("SET", "VARIABLE")
        await asyncio.sleep(0.1)
        fake.reply("200 result=1")
        await fake.expect("STREAM", "FILE")
        await asyncio.sleep(0.1)
        fake.reply("200 result=0 endpos=100")
        assert await fake.wait_closed()
    slow = [r.getMessage() for r in caplog.records if "slow AGI command" in r.getMessage()]
    assert len(slow) == 1 and "SET VARIABLE" in slow[0] and "[PJSIP/carrier-00000001 1700000000.1]" in slow[0]


async def test_commands_are_never_pipelined(make_server: MakeServer, connect: Connect) -> None:
    async def hotline(ch: AGIChannel) -> None:
        await asyncio.gather(ch.set_variable("A", "1"), ch.set_variable("B", "2"), ch.set_variable("C", "3"))

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    for _ in range(3):
        argv = await fake.expect("SET", "VARIABLE")
        with pytest.raises(TimeoutError):
            await fake.read_line(timeout=0.1)  # nothing more until we answer
        fake.reply("200 result=1")
        fake.variables[argv[2]] = argv[3]
    assert await fake.wait_closed()
    assert fake.variables == {"A": "1", "B": "2", "C": "3"}


# -- hostile input ---------------------------------------------------------------------------------

HOSTILE_NAMES = [
    'Evil"; EXEC System(touch /tmp/pwned) ;\\ |,$(x)',
    '"',
    "\\",
    'a\\"b',
    "  spaced  ",
    "tab\tname",
    '张三"; HANGUP',
    'x" "y',
    "${SHELL(rm -rf /)}",
    "agi_network: yes",
    "",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_hostile_caller_id_is_one_argument(make_server: MakeServer, connect: Connect, name: str) -> None:
    async def hotline(ch: AGIChannel) -> None:
        await ch.set_variable("CALLER_NAME", ch.env.caller_id_name)
        await ch.verbose(f"hotline call from {ch.env.caller_id_name} <{ch.env.caller_id_num}>")

    server = await make_server({"hotline": hotline})
    fake = await connect(server, calleridname=name, callerid='1380013;8000"')
    await fake.serve()
    assert len(fake.raw_lines) == 2  # exactly two command lines, nothing smuggled
    assert fake.commands[0] == ["SET", "VARIABLE", "CALLER_NAME", name]
    assert fake.commands[1] == ["VERBOSE", f'hotline call from {name} <1380013;8000">', "1"]
    assert fake.variables == {"CALLER_NAME": name}
    assert server.failures == 0


async def test_exec_arguments_cannot_break_out(make_server: MakeServer, connect: Connect) -> None:
    values = ["a,b", 'quote" ,x', "(unbalanced", "back\\slash", "张三"]

    async def hotline(ch: AGIChannel) -> None:
        await ch.exec("Playback", *values)

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    await fake.serve()
    argv = fake.commands[0]
    assert argv[:2] == ["EXEC", "Playback"] and len(argv) == 3
    assert app_separate_args(argv[2]) == values


async def test_unsendable_value_is_our_bug(make_server: MakeServer, connect: Connect) -> None:
    async def hotline(ch: AGIChannel) -> None:
        await ch.set_variable("X", "line\nHANGUP")

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    await fake.serve()
    assert server.failures == 1
    assert not [line for line in fake.raw_lines if b"HANGUP" in line]
    assert_failsafe(fake)


# -- load, limits, lifecycle ------------------------------------------------------------------------


async def test_500_concurrent_sessions(make_server: MakeServer, connect: Connect) -> None:
    async def hotline(ch: AGIChannel) -> None:
        await ch.answer()
        digit = await ch.stream_file("welcome", "12")
        await ch.set_variable("CHOICE", digit or "none")
        await ch.set_variable("UID", ch.env.uniqueid)

    server = await make_server({"hotline": hotline})

    async def call(i: int) -> FakeAsterisk:
        fake = await connect(server, uniqueid=f"1700000000.{i}")
        fake.answers["STREAM FILE"] = "200 result=49 endpos=10"
        await fake.serve(timeout=30)
        return fake

    fakes = await asyncio.gather(*(call(i) for i in range(500)))
    await settle(server, timeout=30)
    assert all(f.variables == {"CHOICE": "1", "UID": f"1700000000.{i}"} for i, f in enumerate(fakes))
    assert (server.sessions_total, server.sessions_active, server.failures) == (500, 0, 0)


async def test_finished_session_is_freed_without_the_garbage_collector(make_server: MakeServer,
                                                                     connect: Connect) -> None:
    # No reference cycles per call: at hundreds of calls a second, cycles would leave
    # every session's objects to the cyclic collector, whose pauses delay all calls.
    refs: list[weakref.ref[AGIChannel]] = []

    async def hotline(ch: AGIChannel) -> None:
        refs.append(weakref.ref(ch))
        await ch.set_variable("X", "1")

    server = await make_server({"hotline": hotline})
    gc.collect()
    gc.disable()
    try:
        fake = await connect(server)
        await fake.serve()
        await settle(server)
        await asyncio.sleep(0)  # the transport's connection_lost runs on the next pass
        assert len(refs) == 1 and refs[0]() is None
    finally:
        gc.enable()


async def test_max_sessions_excess_gets_failsafe(make_server: MakeServer, connect: Connect) -> None:
    release = asyncio.Event()

    async def hotline(ch: AGIChannel) -> None:
        await ch.answer()
        await release.wait()

    server = await make_server({"hotline": hotline}, max_sessions=2)
    first, second = await connect(server), await connect(server)
    await first.expect("ANSWER")
    await second.expect("ANSWER")
    first.reply("200 result=0")
    second.reply("200 result=0")
    assert server.sessions_active == 2
    third = await connect(server)
    await third.serve()
    assert_failsafe(third)
    assert server.sessions_rejected == 1 and server.failures == 0
    release.set()
    assert await first.wait_closed() and await second.wait_closed()
    await settle(server)
    assert server.sessions_active == 0
    await _still_serves(server, connect)


async def test_stop_with_sessions_in_flight(make_server: MakeServer, connect: Connect) -> None:
    cancelled: list[str] = []
    entered: list[str] = []
    all_in = asyncio.Event()

    async def hotline(ch: AGIChannel) -> None:
        await ch.answer()
        entered.append(ch.env.uniqueid)
        if len(entered) == 3:
            all_in.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(ch.env.uniqueid)
            raise

    server = await make_server({"hotline": hotline}, idle_timeout=600)
    fakes = [await connect(server, uniqueid=f"u{i}") for i in range(3)]
    serving = [asyncio.create_task(f.serve()) for f in fakes]
    async with asyncio.timeout(5):
        await all_in.wait()
    assert server.sessions_active == 3
    await server.stop()
    assert sorted(cancelled) == ["u0", "u1", "u2"]
    assert server.sessions_active == 0 and not server._tasks
    await asyncio.gather(*serving)
    for fake in fakes:
        assert_failsafe(fake)
        assert fake.eof
    # Stopped means stopped: no new connections.
    with pytest.raises(OSError):
        await FakeAsterisk.connect(server.port)


async def test_cancellation_propagates(make_server: MakeServer, connect: Connect) -> None:
    entered = asyncio.Event()

    async def hotline(ch: AGIChannel) -> None:
        entered.set()
        await asyncio.sleep(60)

    server = await make_server({"hotline": hotline}, idle_timeout=600)
    fake = await connect(server)
    serving = asyncio.create_task(fake.serve())
    await entered.wait()
    (task,) = server._tasks
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()  # never swallowed, even though the failsafe ran first
    await serving
    assert_failsafe(fake)
    assert server.failures == 0


async def test_cancellation_during_command_still_reaches_failsafe(make_server: MakeServer,
                                                                  connect: Connect) -> None:
    async def hotline(ch: AGIChannel) -> None:
        await ch.stream_file("long-prompt")

    server = await make_server({"hotline": hotline})
    fake = await connect(server)
    await fake.expect("STREAM", "FILE")
    (task,) = server._tasks
    task.cancel()
    # Asterisk aborts STREAM FILE without an answer when a new command arrives.
    await fake.serve()
    await asyncio.wait({task})
    assert task.cancelled()
    assert_failsafe(fake)


async def test_every_waiting_connection_is_accepted_in_one_pass(make_server: MakeServer,
                                                               connect: Connect) -> None:
    # libuv (uvloop) accepts one connection per loop pass: at 1,000 callers most of them
    # waited in the listen queue. Our accept pass takes all that are waiting.
    server = await make_server({"hotline": _answer})
    assert server._listeners is not None
    listener = server._listeners[0]
    waiting = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]
    try:
        server._accept_ready(listener)  # what the loop calls when the listener is readable
        assert server.sessions_total == 50 and len(server._tasks) == 50
    finally:
        for sock in waiting:
            sock.close()
    await settle(server)
    assert server.sessions_active == 0
    await _still_serves(server, connect)


@pytest.mark.parametrize("code", [errno.EMFILE, errno.EPERM], ids=["out-of-descriptors", "unexpected-error"])
async def test_accept_pauses_when_out_of_descriptors(make_server: MakeServer, connect: Connect,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture, code: int) -> None:
    monkeypatch.setattr(agi_server, "ACCEPT_PAUSE", 0.05)
    server = await make_server({"hotline": _answer})
    assert server._listeners is not None
    listener = server._listeners[0]

    class OutOfDescriptorsOnce:
        """The listener, except that its first accept() fails with `code`."""

        failed = False

        def fileno(self) -> int:
            return listener.fileno()

        def accept(self) -> tuple[socket.socket, Any]:
            if not self.failed:
                self.failed = True
                raise OSError(code, os.strerror(code))
            return listener.accept()

    with caplog.at_level(logging.ERROR, logger="ivr.agi.server"):
        server._accept_ready(OutOfDescriptorsOnce())  # type: ignore[arg-type]
    assert "pausing for 0.05 s" in caplog.text
    await _still_serves(server, connect)  # accepting resumed after the pause
    assert server.sessions_total == 1


async def test_stop_closes_the_listener(make_server: MakeServer) -> None:
    server = await make_server({"hotline": _answer})
    port = server.port
    await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_start_twice_refused(make_server: MakeServer) -> None:
    server = await make_server({})
    assert server.port > 0
    with pytest.raises(RuntimeError):
        await server.start()


def test_parse_args_model_matches_known_asterisk_splits() -> None:
    # Spot checks of the model the hostile-input tests rely on (res_agi.c parse_args).
    assert asterisk_parse_args('SET VARIABLE X "a b"') == ["SET", "VARIABLE", "X", "a b"]
    assert asterisk_parse_args("SET VARIABLE X a b") == ["SET", "VARIABLE", "X", "a", "b"]
    assert asterisk_parse_args('A "x"y"z"') == ["A", "xyz"]
    assert asterisk_parse_args("A a\\ b") == ["A", "a b"]
    assert asterisk_parse_args('A ""') == ["A", ""]
    assert asterisk_parse_args("A \\\\") == ["A", "\\"]
    assert asterisk_parse_args("  A\t\tB  ") == ["A", "B"]
