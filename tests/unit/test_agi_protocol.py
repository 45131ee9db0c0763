"""AGI parser and encoder: every parser case whole, byte by byte, and with trailing bytes."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from ivr.agi import protocol
from ivr.agi.errors import (
    AGIDeadChannel,
    AGIError,
    AGIInvalidCommand,
    AGIProtocolError,
    AGIResultError,
    AGIUsageError,
    check_response,
)
from ivr.agi.protocol import (
    MAX_ARGS,
    MAX_COMMAND_BYTES,
    AGIEnvironment,
    AGIItem,
    AGIParser,
    AGIResponse,
    HangupNotice,
    check_app_name,
    encode_app_args,
    encode_command,
)
from tests.support.fake_asterisk_agi import asterisk_parse_args, env_block

MINIMAL_ENV = b"agi_network: yes\n\n"
#: The start of the next response, not yet complete: must stay buffered.
TRAILING = b"200 resu"


def _whole(parser: AGIParser, data: bytes) -> list[AGIItem]:
    return parser.feed(data)


def _bytewise(parser: AGIParser, data: bytes) -> list[AGIItem]:
    items: list[AGIItem] = []
    for i in range(len(data)):
        items.extend(parser.feed(data[i : i + 1]))
    return items


def _trailing(parser: AGIParser, data: bytes) -> list[AGIItem]:
    items = parser.feed(data + TRAILING)
    assert parser.buffered == len(TRAILING)
    return items


FEEDS = pytest.mark.parametrize("feed", [_whole, _bytewise, _trailing], ids=["whole", "bytewise", "trailing"])
Feed = Callable[[AGIParser, bytes], list[AGIItem]]


def responses(feed: Feed, data: bytes, **limits: int) -> list[AGIItem]:
    """Parse `data` as what follows a minimal environment block."""
    parser = AGIParser(**limits)
    assert isinstance(parser.feed(MINIMAL_ENV)[0], AGIEnvironment)
    assert not parser.in_environment
    return feed(parser, data)


def one(feed: Feed, line: str) -> AGIResponse:
    items = responses(feed, line.encode() + b"\n")
    assert len(items) == 1
    item = items[0]
    assert isinstance(item, AGIResponse)
    return item


# -- environment ---------------------------------------------------------------------------


@FEEDS
def test_environment_block(feed: Feed) -> None:
    parser = AGIParser()
    items = feed(parser, env_block("hotline?lang=zh"))
    assert len(items) == 1
    env = items[0]
    assert isinstance(env, AGIEnvironment)
    assert env.network_script == "hotline?lang=zh"
    assert env.channel == "PJSIP/carrier-00000001"
    assert env.uniqueid == "1700000000.1"
    assert env.caller_id_num == "13800138000"
    assert env.caller_id_name == "张三"  # multibyte, split across feeds in the bytewise run
    assert env.context == "hotline" and env.extension == "4008001234"
    assert env.request == "agi://127.0.0.1:4573/hotline?lang=zh"
    assert env.language == "zh"
    assert env.variables["accountcode"] == ""  # "agi_accountcode: " (empty value)
    assert env.get("missing", "x") == "x"
    assert env.arguments == ()
    assert not parser.in_environment


@FEEDS
def test_environment_arguments_in_order(feed: Feed) -> None:
    env = feed(AGIParser(), env_block(arg_1="a", arg_2="b c", arg_3="", arg_5="skipped"))[0]
    assert isinstance(env, AGIEnvironment)
    assert env.arguments == ("a", "b c", "")


@FEEDS
def test_environment_then_response_in_one_buffer(feed: Feed) -> None:
    items = feed(AGIParser(), MINIMAL_ENV + b"HANGUP\n200 result=0\n")
    assert isinstance(items[0], AGIEnvironment)
    assert items[1:] == [HangupNotice(), AGIResponse(200, "0", None, None, "200 result=0")]


@FEEDS
def test_environment_values_verbatim(feed: Feed) -> None:
    data = (b"agi_calleridname: a: b \"c\"; d \\ e \n"
            b"agi_callerid:\n"
            b"agi_dnid:  two spaces\n\n")
    env = feed(AGIParser(), data)[0]
    assert isinstance(env, AGIEnvironment)
    assert env.caller_id_name == 'a: b "c"; d \\ e '
    assert env.caller_id_num == ""
    assert env.variables["dnid"] == " two spaces"


ODD_ENVIRONMENTS = [
    env_block(calleridname="a: b: c", accountcode=""),  # colons in a value, an empty value
    b"agi_network:yes\nagi_x:  two blanks\nagi_x: last wins\nagi_y: cr\r\n\n",
    b"agi_network: yes\nagi_calleridname: \xe5\xbc\xa0\xff\xfe\n\n",  # invalid UTF-8
    b"agi_network: yes\n\n200 result=1\n200 res",  # environment, a response, a partial line
]


@pytest.mark.parametrize("data", ODD_ENVIRONMENTS)
def test_environment_whole_block_matches_line_by_line(data: bytes) -> None:
    # A block in one read takes the parser's whole-block path; byte by byte, the line path.
    whole, bytewise = AGIParser(), AGIParser()
    items = whole.feed(data)
    assert items == _bytewise(bytewise, data)
    assert isinstance(items[0], AGIEnvironment) and whole.buffered == bytewise.buffered


@pytest.mark.parametrize("bad", [b"agi_ok: 1\nnot agi\nagi_x: 2\n\n", b"agi_ok: 1\nagi_bad-key: 2\n\n",
                                 b"agi_ok: 1\nagi_nocolon\n\n", b"agi_ok: 1\n: x\n\n"])
def test_environment_bad_line_same_error_either_way(bad: bytes) -> None:
    with pytest.raises(AGIProtocolError) as whole:
        AGIParser().feed(bad)
    with pytest.raises(AGIProtocolError) as bytewise:
        _bytewise(AGIParser(), bad)
    assert str(whole.value) == str(bytewise.value)


def test_environment_is_immutable() -> None:
    source = {"channel": "PJSIP/x"}
    env = AGIEnvironment(source)
    source["channel"] = "changed"
    assert env.channel == "PJSIP/x"
    with pytest.raises(TypeError):
        env.variables["channel"] = "y"  # type: ignore[index]


def test_split_utf8_character_in_caller_name() -> None:
    data = env_block(calleridname="张三")
    cut = data.index("张".encode()) + 1  # inside the 3-byte sequence
    parser = AGIParser()
    assert parser.feed(data[:cut]) == []
    env = parser.feed(data[cut:])[0]
    assert isinstance(env, AGIEnvironment) and env.caller_id_name == "张三"


@FEEDS
def test_invalid_utf8_is_replaced(feed: Feed) -> None:
    env = feed(AGIParser(), b"agi_calleridname: bad\xff\xfename\n\n")[0]
    assert isinstance(env, AGIEnvironment)
    assert env.caller_id_name == "bad\ufffd\ufffdname"


# -- responses -----------------------------------------------------------------------------

RESPONSES = [
    # ANSWER, SET VARIABLE, SET CONTEXT ...
    ("200 result=0", AGIResponse(200, "0", None, None, "200 result=0")),
    # STREAM FILE played to the end / interrupted by "1" (ASCII 49)
    ("200 result=0 endpos=8000", AGIResponse(200, "0", None, 8000, "200 result=0 endpos=8000")),
    ("200 result=49 endpos=1234", AGIResponse(200, "49", None, 1234, "200 result=49 endpos=1234")),
    # STREAM FILE of a missing file, or the caller hung up
    ("200 result=-1 endpos=0", AGIResponse(200, "-1", None, 0, "200 result=-1 endpos=0")),
    # SPEECH RECOGNIZE
    ("200 result=1 (speech) endpos=12345",
     AGIResponse(200, "1", "speech", 12345, "200 result=1 (speech) endpos=12345")),
    ("200 result=1 (speech) endpos=0 results=1 score0=900 text0=hello grammar0=yesno",
     AGIResponse(200, "1", "speech", 0,
                 "200 result=1 (speech) endpos=0 results=1 score0=900 text0=hello grammar0=yesno")),
    # RECORD FILE
    ("200 result=0 (timeout) endpos=8000",
     AGIResponse(200, "0", "timeout", 8000, "200 result=0 (timeout) endpos=8000")),
    # GET DATA: digits then timeout; nothing typed; digits ended by "#"
    ("200 result=123 (timeout)", AGIResponse(200, "123", "timeout", None, "200 result=123 (timeout)")),
    ("200 result= (timeout)", AGIResponse(200, "", "timeout", None, "200 result= (timeout)")),
    ("200 result=123", AGIResponse(200, "123", None, None, "200 result=123")),
    # GET VARIABLE: set (spaces, parentheses, an endpos look-alike, empty, Chinese), unset
    ("200 result=1 (value with spaces)",
     AGIResponse(200, "1", "value with spaces", None, "200 result=1 (value with spaces)")),
    ("200 result=1 (f(x) = (1, 2))", AGIResponse(200, "1", "f(x) = (1, 2)", None, "200 result=1 (f(x) = (1, 2))")),
    ("200 result=1 (x) endpos=5)", AGIResponse(200, "1", "x) endpos=5", None, "200 result=1 (x) endpos=5)")),
    ("200 result=1 ()", AGIResponse(200, "1", "", None, "200 result=1 ()")),
    ("200 result=1 (张三)", AGIResponse(200, "1", "张三", None, "200 result=1 (张三)")),
    ("200 result=0", AGIResponse(200, "0", None, None, "200 result=0")),
    # Near misses of the parser's fast path ("200 result=<digits>[ endpos=<digits>]"): same
    # answers as the general path.
    ("200 result=1\r", AGIResponse(200, "1", None, None, "200 result=1\r")),
    ("200 result=\u0661 endpos=5", AGIResponse(200, "\u0661", None, 5, "200 result=\u0661 endpos=5")),
    ("200 result=0 endpos=", AGIResponse(200, "0", None, None, "200 result=0 endpos=")),
    ("200 result=0 endpos=12 x=1", AGIResponse(200, "0", None, 12, "200 result=0 endpos=12 x=1")),
    ("200 result=0 endpos=12 ", AGIResponse(200, "0", None, 12, "200 result=0 endpos=12 ")),
    ("200 result=--5", AGIResponse(200, "--5", None, None, "200 result=--5")),
    ("200 result=-", AGIResponse(200, "-", None, None, "200 result=-")),
    # errors
    ("510 Invalid or unknown command", AGIResponse(510, None, None, None, "510 Invalid or unknown command")),
    ("511 Command Not Permitted on a dead channel or intercept routine",
     AGIResponse(511, None, None, None, "511 Command Not Permitted on a dead channel or intercept routine")),
    ("520 Invalid command syntax.  Proper usage not available.",
     AGIResponse(520, None, None, None, "520 Invalid command syntax.  Proper usage not available.")),
]


@FEEDS
@pytest.mark.parametrize(("line", "expected"), RESPONSES, ids=[r[0][:40] for r in RESPONSES])
def test_response(feed: Feed, line: str, expected: AGIResponse) -> None:
    assert one(feed, line) == expected


@FEEDS
def test_hangup_notice(feed: Feed) -> None:
    assert responses(feed, b"HANGUP\n") == [HangupNotice()]


@FEEDS
def test_response_then_hangup_in_order(feed: Feed) -> None:
    # What Asterisk sends when the caller hangs up during STREAM FILE.
    items = responses(feed, b"200 result=-1 endpos=2400\nHANGUP\n")
    assert items == [AGIResponse(200, "-1", None, 2400, "200 result=-1 endpos=2400"), HangupNotice()]


USAGE = (b"520-Invalid command syntax.  Proper usage follows:\n"
         b" Usage: STREAM FILE <filename> <escape_digits> [sample offset]\n"
         b"\n"
         b"  Send the given file, allowing playback to be interrupted by the given digits.\n"
         b"520 End of proper usage.\n")


@FEEDS
def test_multiline_520_usage(feed: Feed) -> None:
    items = responses(feed, USAGE + b"200 result=0\n")
    assert len(items) == 2
    usage = items[0]
    assert isinstance(usage, AGIResponse) and usage.code == 520
    assert usage.text == USAGE.decode().rstrip("\n")
    assert usage.data is not None and "Usage: STREAM FILE" in usage.data and "520" not in usage.data
    assert items[1] == AGIResponse(200, "0", None, None, "200 result=0")
    with pytest.raises(AGIUsageError) as info:
        check_response(usage)
    assert "Usage: STREAM FILE" in info.value.usage


@FEEDS
def test_variable_value_with_newline(feed: Feed) -> None:
    # GET VARIABLE writes "200 result=1 (%s)\n" with the raw value: a newline in it
    # continues the response on the next line, up to the first line ending in ")"
    # (so an inner line ending in ")" would end it early: best effort, bounded).
    items = responses(feed, b"200 result=1 (first line\n200 result=0 endpos=1\nlast)\nHANGUP\n")
    assert items[0] == AGIResponse(200, "1", "first line\n200 result=0 endpos=1\nlast", None,
                                   "200 result=1 (first line\n200 result=0 endpos=1\nlast)")
    assert items[1] == HangupNotice()


@FEEDS
def test_result_int(feed: Feed) -> None:
    assert one(feed, "200 result=49").result_int == 49
    assert one(feed, "200 result=-1").result_int == -1
    assert one(feed, "200 result= (timeout)").result_int is None
    assert one(feed, "510 Invalid or unknown command").result_int is None


# -- limits and garbage ----------------------------------------------------------------------


def _raises(feed: Feed, parser: AGIParser, data: bytes) -> None:
    with pytest.raises(AGIProtocolError):
        feed(parser, data)
    # A failed parser stays failed: the session must be closed.
    with pytest.raises(AGIProtocolError):
        parser.feed(b"200 result=0\n")


@FEEDS
def test_oversize_env_line(feed: Feed) -> None:
    _raises(feed, AGIParser(max_line_bytes=100), b"agi_calleridname: " + b"x" * 100)


@FEEDS
def test_oversize_line_detected_without_newline(feed: Feed) -> None:
    parser = AGIParser(max_line_bytes=100)
    parser.feed(MINIMAL_ENV)
    _raises(feed, parser, b"200 result=1 (" + b"y" * 200)


def test_line_at_the_limit_is_fine() -> None:
    line = b"agi_calleridname: " + b"x" * 82
    assert len(line) == 100
    env = AGIParser(max_line_bytes=100).feed(line + b"\n\n")[0]
    assert isinstance(env, AGIEnvironment) and len(env.caller_id_name) == 82


@FEEDS
def test_oversize_env_bytes(feed: Feed) -> None:
    data = b"".join(f"agi_var{i}: {'v' * 50}\n".encode() for i in range(40))
    _raises(feed, AGIParser(max_env_bytes=1024), data)


@FEEDS
def test_too_many_env_lines(feed: Feed) -> None:
    data = b"".join(f"agi_v{i}: x\n".encode() for i in range(20))
    _raises(feed, AGIParser(max_env_lines=10), data)


@FEEDS
def test_oversize_multiline_response(feed: Feed) -> None:
    parser = AGIParser(max_response_bytes=500)
    parser.feed(MINIMAL_ENV)
    _raises(feed, parser, b"520-Invalid command syntax.\n" + b"usage line\n" * 100)


@FEEDS
@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\n",
    b"hello\n",
    b"agi_\n",
    b": value\n",
    b"agi_bad key: value\n",
], ids=["http", "word", "empty-key", "no-key", "space-in-key"])
def test_garbage_environment(feed: Feed, garbage: bytes) -> None:
    _raises(feed, AGIParser(), garbage)


@FEEDS
@pytest.mark.parametrize("garbage", [b"hello world\n", b"20 result=0\n", b"2000 result=0\n", b"HANGUP now\n",
                                     b"\x00\x01\x02\n"])
def test_garbage_response(feed: Feed, garbage: bytes) -> None:
    parser = AGIParser()
    parser.feed(MINIMAL_ENV)
    _raises(feed, parser, garbage)


def test_common_responses_are_parsed_once_and_shared() -> None:
    # Every call of an IVR gets the same few answers: a second session reuses the first's.
    line = b"200 result=0 endpos=31337\n"
    first, second = AGIParser(), AGIParser()
    first.feed(MINIMAL_ENV)
    second.feed(MINIMAL_ENV)
    (a,) = first.feed(line)
    (b,) = second.feed(line)
    assert a is b and a == AGIResponse(200, "0", None, 31337, "200 result=0 endpos=31337")


def test_common_response_memo_keeps_every_rule() -> None:
    line = b"200 result=1\n"
    warm = AGIParser()
    warm.feed(MINIMAL_ENV)
    assert warm.feed(line) == [AGIResponse(200, "1", None, None, "200 result=1")]
    # Not an environment line: refused even though the line is remembered.
    with pytest.raises(AGIProtocolError):
        AGIParser().feed(line)
    # Over this parser's line limit.
    small = AGIParser(max_line_bytes=10)
    small.feed(b"agi_a: b\n\n")
    with pytest.raises(AGIProtocolError):
        small.feed(line)
    # A failed parser stays failed.
    failed = AGIParser()
    failed.feed(MINIMAL_ENV)
    with pytest.raises(AGIProtocolError):
        failed.feed(b"hello\n")
    with pytest.raises(AGIProtocolError):
        failed.feed(line)
    # The remembered line completes a partial one like any other bytes.
    partial = AGIParser()
    partial.feed(MINIMAL_ENV)
    assert partial.feed(b"200 result=0 endpos=") == []
    assert partial.feed(line) == [AGIResponse(200, "0", None, 200, "200 result=0 endpos=200 result=1")]


def test_common_response_memo_is_bounded() -> None:
    parser = AGIParser()
    parser.feed(MINIMAL_ENV)
    for endpos in range(protocol.COMMON_RESPONSES_MAX + 50):
        (item,) = parser.feed(b"200 result=0 endpos=%d\n" % endpos)
        assert isinstance(item, AGIResponse) and item.endpos == endpos
    assert 0 < len(protocol._COMMON_RESPONSES) <= protocol.COMMON_RESPONSES_MAX


# -- check_response --------------------------------------------------------------------------


def test_check_response_maps_codes() -> None:
    ok = AGIResponse(200, "1", None, None, "200 result=1")
    assert check_response(ok) is ok
    assert check_response(AGIResponse(200, "", "timeout", None, "200 result= (timeout)")).data == "timeout"
    cases: list[tuple[AGIResponse, type[AGIError]]] = [
        (AGIResponse(510, None, None, None, "510 Invalid or unknown command"), AGIInvalidCommand),
        (AGIResponse(511, None, None, None, "511 Command Not Permitted"), AGIDeadChannel),
        (AGIResponse(520, None, "usage", None, "520 ..."), AGIUsageError),
        (AGIResponse(200, "-1", None, 0, "200 result=-1 endpos=0"), AGIResultError),
        (AGIResponse(200, "-2", None, None, "200 result=-2"), AGIResultError),  # EXEC: no such app
        (AGIResponse(500, None, None, None, "500 what"), AGIProtocolError),
    ]
    for resp, kind in cases:
        with pytest.raises(kind) as info:
            check_response(resp)
        assert info.value.response is resp


# -- encode_command --------------------------------------------------------------------------

HOSTILE = [
    'evil"; EXEC System rm -rf /',
    'Evil"; EXEC System(touch /tmp/pwned) ;\\ |,$(x)',
    '"',
    '""',
    "\\",
    "trailing backslash\\",
    '\\"',
    'a\\"b"c',
    "semi;colon",
    "com,ma",
    "pi|pe",
    "${SHELL(rm -rf /)}",
    "张三",
    "tab\tinside",
    "  leading and trailing  ",
    "",
    " ",
    "(paren) [bracket] {brace}",
    "'single'",
    "\u00a0\u3000unicode spaces",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_encode_round_trips_through_asterisk_parse_args(value: str) -> None:
    line = encode_command("SET VARIABLE", "CALLER_NAME", value)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert asterisk_parse_args(line[:-1].decode()) == ["SET", "VARIABLE", "CALLER_NAME", value]


def test_encode_fuzz_round_trip() -> None:
    rng = random.Random(20240607)
    alphabet = ' \t"\\;,|()[]${}=\'ab张三'
    for _ in range(2000):
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))) for _ in range(rng.randrange(1, 5))]
        line = encode_command("EXEC", *words)
        assert asterisk_parse_args(line[:-1].decode()) == ["EXEC", *words]


def test_encode_command_name_is_bare_keywords() -> None:
    assert encode_command("STREAM FILE", "welcome", "") == b'STREAM FILE "welcome" ""\n'
    assert encode_command("ANSWER") == b"ANSWER\n"
    assert asterisk_parse_args('STREAM FILE "welcome" ""') == ["STREAM", "FILE", "welcome", ""]


@pytest.mark.parametrize("value", ["a\nHANGUP", "a\rb", "nul\x00byte", "\n", "end\r"])
def test_encode_refuses_line_breaks_and_nul(value: str) -> None:
    with pytest.raises(ValueError):
        encode_command("SET VARIABLE", "X", value)
    with pytest.raises(ValueError):
        encode_command("VERBOSE", value)


@pytest.mark.parametrize("name", ["", "SET VARIABLE\n", 'SET "VARIABLE"', "SET  VARIABLE", " ANSWER", "EXEC;", "A1"])
def test_encode_refuses_bad_command_names(name: str) -> None:
    with pytest.raises(ValueError):
        encode_command(name, "x")


def test_encode_refuses_nothing() -> None:
    with pytest.raises(ValueError):
        encode_command()


def test_encode_refuses_lines_asterisk_would_split() -> None:
    # SET VARIABLE "X" "<value>"\n = 21 bytes of framing
    at_limit = "v" * (MAX_COMMAND_BYTES - len(b'SET VARIABLE "X" ""\n'))
    assert len(encode_command("SET VARIABLE", "X", at_limit)) == MAX_COMMAND_BYTES
    with pytest.raises(ValueError):
        encode_command("SET VARIABLE", "X", at_limit + "v")
    # Escaping counts too: 1000 quotes become 2000 bytes.
    with pytest.raises(ValueError):
        encode_command("SET VARIABLE", "X", '"' * 1100)
    # Bytes, not characters: a 3-byte character.
    with pytest.raises(ValueError):
        encode_command("SET VARIABLE", "X", "张" * 700)


def test_encode_refuses_too_many_words() -> None:
    encode_command("NOOP", *["w"] * (MAX_ARGS - 2))
    with pytest.raises(ValueError):
        encode_command("NOOP", *["w"] * (MAX_ARGS - 1))


def test_encode_memo_still_refuses_every_time() -> None:
    # encode_command memoises lines; a refused value must be refused on every call.
    first = encode_command("SET VARIABLE", "HOTLINE_CHOICE", "1")
    assert encode_command("SET VARIABLE", "HOTLINE_CHOICE", "1") == first == b'SET VARIABLE "HOTLINE_CHOICE" "1"\n'
    for _ in range(2):
        with pytest.raises(ValueError):
            encode_command("SET VARIABLE", "X", "a\nHANGUP")


def test_encode_refuses_lone_surrogates() -> None:
    with pytest.raises(ValueError):
        encode_command("VERBOSE", "\ud800")


# -- application arguments -------------------------------------------------------------------


def app_separate_args(data: str) -> list[str]:
    """main/app.c __ast_app_separate_args() with remove_chars, as AST_STANDARD_APP_ARGS uses it.

    "," separates unless inside quotes, parentheses or brackets; `"` toggles quoting
    and is removed; a backslash is removed and the next character taken literally.
    """
    args: list[str] = []
    current: list[str] = []
    paren = bracket = 0
    quote = False
    i = 0
    while i < len(data):
        ch = data[i]
        if ch == "(":
            paren += 1
        elif ch == ")" and paren:
            paren -= 1
        elif ch == "[":
            bracket += 1
        elif ch == "]" and bracket:
            bracket -= 1
        elif ch == '"':
            quote = not quote
            i += 1
            continue
        elif ch == "\\":
            if i + 1 < len(data):
                current.append(data[i + 1])
            i += 2
            continue
        elif ch == "," and not (paren or quote or bracket):
            args.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    args.append("".join(current))
    return args


APP_VALUES = ["plain", "a,b", 'say "hi", then', "back\\slash", "open(", "close)", "[x", "x]", "a|b", "张三", "",
              "f(a,b)", ' "quoted, comma" ']


@pytest.mark.parametrize("value", APP_VALUES)
def test_app_args_stay_one_argument(value: str) -> None:
    data = encode_app_args(value, "next")
    assert app_separate_args(data) == [value, "next"]
    # And the whole data string still travels as one AGI argument.
    line = encode_command("EXEC", "Playback", data)
    assert asterisk_parse_args(line[:-1].decode()) == ["EXEC", "Playback", data]


def test_app_args_join_with_commas() -> None:
    assert encode_app_args("a", "b", "c") == "a,b,c"
    assert app_separate_args(encode_app_args(*APP_VALUES)) == APP_VALUES


@pytest.mark.parametrize("value", ["${CALLERID(name)}", "x$[1+1]", "${SHELL(id)}"])
def test_app_args_refuse_variable_references(value: str) -> None:
    with pytest.raises(ValueError):
        encode_app_args(value)


def test_app_args_keep_plain_dollar() -> None:
    assert encode_app_args("$(x) costs $5") == "$\\(x\\) costs $5"


@pytest.mark.parametrize("name", ["Playback", "Set", "MixMonitor", "Queue", "my_app2"])
def test_app_name_ok(name: str) -> None:
    assert check_app_name(name) == name


@pytest.mark.parametrize("name", ["", "Play back", "System(rm)", "1abc", "Dial,x", "Verbose\n"])
def test_app_name_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_app_name(name)
