"""The sans-I/O AMI framing: every parser test runs three ways (whole buffer, byte by
byte, and with the first bytes of a following message appended), after h11's
tests/test_io.py."""

from __future__ import annotations

import pytest

from cti.ami.protocol import AMIParser, Message, ProtocolError, encode_action, encode_message

MODES = ("whole", "bytewise", "trailing")
# The start of a next message, cut mid-header: it must stay buffered, not be emitted.
TRAILING = b"Event: Trailing\r\nChann"
TRAILING_REST = b"el: PJSIP/9-1\r\n\r\n"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def parse(data: bytes, mode: str, *, max_message_bytes: int = 256 * 1024) -> tuple[list[Message], AMIParser]:
    """Feed `data` the way `mode` says; return the messages and the parser."""
    parser = AMIParser(max_message_bytes)
    out: list[Message] = []
    if mode == "whole":
        out += parser.feed(data)
    elif mode == "bytewise":
        for i in range(len(data)):
            out += parser.feed(data[i : i + 1])
    elif mode == "trailing":
        out += parser.feed(data + TRAILING)
        assert parser.buffered_bytes > 0
        rest = parser.feed(TRAILING_REST)
        assert [m.headers for m in rest] == [(("Event", "Trailing"), ("Channel", "PJSIP/9-1"))]
    else:  # pragma: no cover
        raise AssertionError(mode)
    return out, parser


def test_event_and_response(mode: str) -> None:
    data = (
        b"Response: Success\r\nActionID: host-1-1\r\nMessage: Authentication accepted\r\n\r\n"
        b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/1001-00000001\r\n"
        b"Uniqueid: 1700000000.1\r\n\r\n"
    )
    messages, parser = parse(data, mode)
    assert parser.greeting is None
    assert len(messages) == 2
    response, event = messages
    assert response.kind == "response" and response.name == "Success"
    assert response.action_id == "host-1-1"
    assert response.get("message") == "Authentication accepted"  # case-insensitive
    assert event.kind == "event" and event.name == "Newchannel"
    assert event.action_id is None
    assert event.headers == (
        ("Event", "Newchannel"), ("Privilege", "call,all"), ("Channel", "PJSIP/1001-00000001"),
        ("Uniqueid", "1700000000.1"),
    )
    assert event.get("Missing") is None and event.get("Missing", "x") == "x"
    assert "CHANNEL" in event and "Nope" not in event


def test_greeting_is_consumed_before_messages(mode: str) -> None:
    data = b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nActionID: a\r\n\r\n"
    messages, parser = parse(data, mode)
    assert parser.greeting == "Asterisk Call Manager/11.0.0"
    assert [m.name for m in messages] == ["Success"]


def test_greeting_only_at_stream_start() -> None:
    parser = AMIParser()
    parser.feed(b"Event: A\r\n\r\n")
    assert parser.feed(b"Asterisk Call Manager/11.0.0\r\n\r\n")[0].headers == (("", "Asterisk Call Manager/11.0.0"),)
    assert parser.greeting is None


def test_bare_lf_and_mixed_line_endings(mode: str) -> None:
    data = b"Event: A\nKey: 1\n\nEvent: B\r\nKey: 2\n\r\nEvent: C\nKey: 3\r\n\r\n"
    messages, _ = parse(data, mode)
    assert [(m.name, m.get("Key")) for m in messages] == [("A", "1"), ("B", "2"), ("C", "3")]


def test_stray_blank_lines_are_skipped(mode: str) -> None:
    data = b"\r\n\r\nEvent: A\r\n\r\n\r\n\n\r\nEvent: B\r\n\r\n"
    messages, _ = parse(data, mode)
    assert [m.name for m in messages] == ["A", "B"]


def test_repeated_headers_kept_in_order(mode: str) -> None:
    data = (b"Event: Newexten\r\nChanVariable: HOTLINE_TEST=qa-7\r\nChannel: PJSIP/1-1\r\n"
            b"ChanVariable: HOTLINE_DIALED=400\r\n\r\n")
    (message,), _ = parse(data, mode)
    assert message.get("ChanVariable") == "HOTLINE_TEST=qa-7"
    assert message.get_all("chanvariable") == ["HOTLINE_TEST=qa-7", "HOTLINE_DIALED=400"]
    assert message.get_all("Nope") == []


def test_value_keeps_later_separators_and_empty_values(mode: str) -> None:
    data = b"Response: Error\r\nMessage: Channel: not found: x\r\nAccountCode: \r\nPad:  two spaces\r\n\r\n"
    (message,), _ = parse(data, mode)
    assert message.get("Message") == "Channel: not found: x"
    assert message.get("AccountCode") == ""
    assert message.get("Pad") == " two spaces"


def test_split_utf8_character(mode: str) -> None:
    name = "张三"
    data = f"Event: Newchannel\r\nCallerIDName: {name}\r\nCallerIDNum: 13800138000\r\n\r\n".encode()
    (message,), _ = parse(data, mode)
    assert message.get("CallerIDName") == name


@pytest.mark.parametrize("cut", range(1, 6))
def test_utf8_split_at_every_byte_of_the_character(cut: int) -> None:
    head = b"Event: NewCallerid\r\nCallerIDName: "
    encoded = "张三".encode()  # 6 bytes, two characters
    parser = AMIParser()
    assert parser.feed(head + encoded[:cut]) == []
    (message,) = parser.feed(encoded[cut:] + b"\r\n\r\n")
    assert message.get("CallerIDName") == "张三"


def test_invalid_utf8_becomes_replacement_characters(mode: str) -> None:
    gbk_name = "张三".encode("gbk")  # a carrier sending GBK instead of UTF-8
    data = b"Event: Newchannel\r\nCallerIDName: " + gbk_name + b"\r\nJunk: \xff\xfe\x00\r\n\r\n"
    (message,), _ = parse(data, mode)
    assert "\ufffd" in (message.get("CallerIDName") or "")
    assert message.get("Junk") is not None


def test_line_without_separator_is_kept_with_empty_key(mode: str) -> None:
    data = b"Response: Success\r\nActionID: c-1\r\nOutput: Name/username\r\nOutput: 1001/1001\r\nraw line\r\n\r\n"
    (message,), _ = parse(data, mode)
    assert message.get_all("Output") == ["Name/username", "1001/1001"]  # Asterisk 14+ Command output
    assert message.headers[-1] == ("", "raw line")


def test_follows_block_keeps_blank_lines_until_end_marker(mode: str) -> None:
    # Asterisk <= 13 `Action: Command`: raw CLI output, blank lines included.
    data = (b"Response: Follows\r\nPrivilege: Command\r\nActionID: c-2\r\n"
            b"Peers:\n\nfoo bar\nlast line--END COMMAND--\r\n\r\n"
            b"Event: After\r\n\r\n")
    messages, _ = parse(data, mode)
    assert [m.name for m in messages] == ["Follows", "After"]
    follows = messages[0]
    assert follows.action_id == "c-2"
    assert follows.headers[3:] == (
        ("", "Peers:"), ("", ""), ("", "foo bar"), ("", "last line"), ("", "--END COMMAND--"),
    )


def test_originate_response_is_an_event(mode: str) -> None:
    # It carries both Event: and Response:; the first header decides.
    data = b"Event: OriginateResponse\r\nActionID: x-9\r\nResponse: Failure\r\nReason: 5\r\n\r\n"
    (message,), _ = parse(data, mode)
    assert message.kind == "event"
    assert message.name == "OriginateResponse"
    assert message.action_id == "x-9"


def test_other_message_kind(mode: str) -> None:
    (message,), _ = parse(b"Foo: bar\r\n\r\n", mode)
    assert message.kind == "other" and message.name == ""


def test_oversize_frame_raises(mode: str) -> None:
    body = b"".join(b"ChanVariable: X%d=%s\r\n" % (i, b"v" * 50) for i in range(100))
    data = b"Event: Huge\r\n" + body + b"\r\n"
    with pytest.raises(ProtocolError):
        parse(data, mode, max_message_bytes=2048)


def test_oversize_line_without_newline_raises(mode: str) -> None:
    with pytest.raises(ProtocolError):
        parse(b"Event: X\r\nGarbage: " + b"\xff" * 5000, mode, max_message_bytes=1024)


def test_cap_is_per_message(mode: str) -> None:
    data = b"".join(b"Event: Small\r\nSeq: %d\r\n\r\n" % i for i in range(200))
    messages, _ = parse(data, mode, max_message_bytes=64)
    assert [m.get("Seq") for m in messages] == [str(i) for i in range(200)]


def test_protocol_error_keeps_earlier_messages_and_poisons_parser() -> None:
    parser = AMIParser(max_message_bytes=256)
    with pytest.raises(ProtocolError) as info:
        parser.feed(b"Event: Good\r\n\r\nEvent: Bad\r\nX: " + b"y" * 1000)
    assert [m.name for m in info.value.messages] == ["Good"]
    with pytest.raises(ProtocolError):
        parser.feed(b"Event: Later\r\n\r\n")


def test_parser_rejects_nonpositive_cap() -> None:
    with pytest.raises(ValueError):
        AMIParser(0)


def test_message_is_frozen_hashable_and_compares_by_headers() -> None:
    a = Message((("Event", "A"), ("K", "v")))
    b = Message((("Event", "A"), ("K", "v")))
    assert a.get("k") == "v"  # builds the private index on a only
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.headers = ()  # type: ignore[misc]
    assert a.to_dict() == {"Event": "A", "K": "v"}


# -- encoding ---------------------------------------------------------------------------
def test_encode_action_format() -> None:
    data = encode_action("Originate", "host-1-7", {
        "Channel": "PJSIP/13800138000@carrier",
        "Variable": ["HOTLINE_SURVEY=1", "HOTLINE_JOB=42"],
        "CallerID": "热线 <4008>",
    })
    assert data == (
        "Action: Originate\r\nActionID: host-1-7\r\nChannel: PJSIP/13800138000@carrier\r\n"
        "Variable: HOTLINE_SURVEY=1\r\nVariable: HOTLINE_JOB=42\r\nCallerID: 热线 <4008>\r\n\r\n"
    ).encode()


def test_encode_action_round_trip(mode: str) -> None:
    data = encode_action("Setvar", "a-1", {"Variable": "X", "Value": "张三: a=b"}) + encode_action("Ping", "a-2")
    messages, _ = parse(data, mode)
    assert [m.headers for m in messages] == [
        (("Action", "Setvar"), ("ActionID", "a-1"), ("Variable", "X"), ("Value", "张三: a=b")),
        (("Action", "Ping"), ("ActionID", "a-2")),
    ]


@pytest.mark.parametrize("headers", [
    {"Channel": "PJSIP/1\r\nAction: Hangup"},
    {"Channel": "PJSIP/1\nX: y"},
    {"Channel": "PJSIP/1\rX: y"},
    {"Variable": ["ok=1", "bad=2\r\nAction: Redirect"]},
    {"Bad\r\nKey": "v"},
    {"Nul": "a\x00b"},
])
def test_encode_action_rejects_injection(headers: dict[str, str | list[str]]) -> None:
    with pytest.raises(ValueError):
        encode_action("Originate", "a-1", headers)


@pytest.mark.parametrize(("action", "action_id", "headers"), [
    ("Ping\r\nAction: Hangup", "a-1", {}),
    ("Ping", "a-1\r\nChannel: x", {}),
    ("", "a-1", {}),
    ("Ping", "", {}),
    ("Ping", "a-1", {"ActionID": "other"}),
    ("Ping", "a-1", {"action": "Hangup"}),
    ("Ping", "a-1", {"Key: x": "v"}),
    ("Ping", "a-1", {"": "v"}),
])
def test_encode_action_rejects_misuse(action: str, action_id: str, headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        encode_action(action, action_id, headers)


def test_encode_errors_never_echo_values() -> None:
    with pytest.raises(ValueError) as info:
        encode_action("Login", "a-1", {"Username": "hotline", "Secret": "top\r\nsecret"})
    assert "top" not in str(info.value) and "Secret" in str(info.value)


@pytest.mark.parametrize("headers", [{"Timeout": 30000}, {"Variable": ["a=1", 2]}, {"Flag": None}])
def test_encode_action_rejects_non_strings(headers: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        encode_action("Originate", "a-1", headers)  # type: ignore[arg-type]


def test_encode_message_round_trip(mode: str) -> None:
    pairs = [("Event", "UserEvent"), ("UserEvent", "Survey"), ("Answer", "5"), ("Answer", "3")]
    (message,), _ = parse(encode_message(pairs), mode)
    assert message.headers == tuple(pairs)


def test_encode_message_needs_headers() -> None:
    with pytest.raises(ValueError):
        encode_message([])
