"""The softphone's JSON-lines wire format and the SIP text it lets through (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ivr.softphone import wire
from ivr.softphone.wire import (
    Command,
    Event,
    LineSplitter,
    PhoneConfig,
    WireError,
    account_id_uri,
    check_header,
    decode_command,
    decode_event,
    encode_command,
    encode_event,
    escape_user,
    parse_sip_headers,
    quote_display_name,
)

COMMANDS = [
    Command(1, "configure", {"config": {"name": "a"}}),
    Command(2, "register"),
    Command(3, "unregister"),
    Command(4, "call", {"uri": "sip:4000@127.0.0.1:5060", "headers": {"X-Hotline-Test": "t-1"}}),
    Command(5, "answer", {"call": 1, "code": 200}),
    Command(6, "hangup", {"call": 1, "code": 0}),
    Command(7, "dtmf", {"call": 1, "digits": "1234#"}),
    Command(8, "play", {"call": 1, "path": "/tmp/x.wav", "loop": True}),
    Command(9, "stop_play", {"call": 1}),
    Command(10, "record", {"call": 1, "path": "/tmp/y.wav"}),
    Command(11, "stop_record", {"call": 1}),
    Command(12, "shutdown"),
    Command(13, "transfer", {"call": 1, "uri": "sip:1003@127.0.0.1:5060"}),
    Command(14, "transfer_replaces", {"call": 1, "target": 2}),
    Command(15, "hold", {"call": 1}),
    Command(16, "unhold", {"call": 1}),
]

EVENTS = [
    Event("ready", {"port": 5070, "uri": "sip:a@127.0.0.1:5070"}),
    Event("ack", {"id": 4, "result": {"call": 1}}),
    Event("error", {"id": None, "message": "bad line"}),
    Event("reg_state", {"code": 200, "reason": "OK", "active": True}),
    Event("incoming", {"call": 1, "remote_uri": "<sip:b@127.0.0.1>", "sip_call_id": "abc",
                       "headers": {"X-Hotline-Test": "t-1"}}),
    Event("call_state", {"call": 1, "state": "CONFIRMED", "code": 200, "reason": "OK",
                         "remote_uri": "<sip:b@127.0.0.1>", "sip_call_id": "abc"}),
    Event("call_state", {"call": 1, "state": "CALLING", "code": None, "reason": "",
                         "remote_uri": "", "sip_call_id": ""}),
    Event("media_state", {"call": 1, "active": True}),
    Event("dtmf", {"call": 1, "digit": "#"}),
    Event("play_done", {"call": 1, "play": 8, "stopped": False}),
    Event("log", {"level": "info", "message": "hello"}),
    Event("transfer_status", {"call": 1, "code": 200, "reason": "OK", "final": True}),
    Event("media_state", {"call": 1, "active": False, "status": "local_hold"}),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_round_trips(command: Command) -> None:
    line = encode_command(command)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_command(line) == command


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.name)
def test_every_event_round_trips(event: Event) -> None:
    line = encode_event(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_event(line) == event


def test_schema_covers_every_name() -> None:
    assert {c.name for c in COMMANDS} == wire.COMMAND_NAMES
    assert {e.name for e in EVENTS} == wire.EVENT_NAMES


def test_lines_are_ascii_even_for_chinese_text() -> None:
    line = encode_event(Event("log", {"level": "info", "message": "您好，报修请按1\n"}))
    assert line.isascii()
    assert decode_event(line)["message"] == "您好，报修请按1\n"


@pytest.mark.parametrize(("line", "why"), [
    (b'{"cmd": "call", "uri": "sip:x", "headers": {}}', "integer id"),
    (b'{"id": true, "cmd": "register"}', "integer id"),
    (b'{"id": 3, "cmd": "call", "headers": {}}', "missing field 'uri'"),
    (b'{"id": 3, "cmd": "answer", "call": 1, "code": "200"}', "must be int"),
    (b'{"id": 3, "cmd": "answer", "call": true, "code": 200}', "must be int"),
    (b'{"id": 3, "cmd": "call", "uri": "sip:x", "headers": {"X-A": 1}}', "strdict"),
    (b'{"id": 3, "cmd": "play", "call": 1, "path": "/x", "loop": 1}', "must be bool"),
    (b'{"id": 3, "cmd": "format_disk"}', "unknown command"),
    (b"[1, 2]", "JSON object"),
    (b"{not json", "not JSON"),
    (b'{"id": 1, "cmd": "register"}\xff', "not JSON"),
])
def test_bad_commands_are_refused(line: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        decode_command(line)


def test_command_id_is_kept_for_the_error_reply() -> None:
    with pytest.raises(WireError) as info:
        decode_command(b'{"id": 42, "cmd": "dtmf", "call": 1}')
    assert info.value.command_id == 42


def test_encoding_validates_too() -> None:
    with pytest.raises(WireError, match="missing field 'digits'"):
        encode_command(Command(1, "dtmf", {"call": 1}))
    with pytest.raises(WireError, match="unknown event"):
        encode_event(Event("gossip", {}))


def test_events_with_wrong_shape_are_refused_and_unknown_ones_kept() -> None:
    with pytest.raises(WireError, match="missing field 'state'"):
        decode_event(b'{"event": "call_state", "call": 1}')
    with pytest.raises(WireError, match="event without a name"):
        decode_event(b'{"call": 1}')
    future = decode_event(b'{"event": "video_state", "call": 1}')
    assert future.name == "video_state" and future["call"] == 1


def _split_all(splitter: LineSplitter, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    return out


STREAM = b"".join(encode_event(e) for e in EVENTS)


def test_splitter_whole_buffer() -> None:
    lines = _split_all(LineSplitter(), [STREAM])
    assert [decode_event(x) for x in lines] == EVENTS


def test_splitter_byte_by_byte() -> None:
    splitter = LineSplitter()
    lines = _split_all(splitter, [STREAM[i:i + 1] for i in range(len(STREAM))])
    assert [decode_event(x) for x in lines] == EVENTS
    assert splitter.pending == 0


def test_splitter_keeps_trailing_partial_line() -> None:
    splitter = LineSplitter()
    tail = b'{"event": "dtmf", "ca'
    lines = _split_all(splitter, [STREAM + tail])
    assert len(lines) == len(EVENTS)
    assert splitter.pending == len(tail)
    assert splitter.feed(b'll": 1, "digit": "5"}\r\n\n') == [b'{"event": "dtmf", "call": 1, "digit": "5"}']


def test_splitter_split_utf8_character() -> None:
    raw = json.dumps({"event": "log", "level": "info", "message": "报修"}, ensure_ascii=False).encode() + b"\n"
    cut = raw.index("报".encode()) + 1  # in the middle of a 3-byte character
    lines = _split_all(LineSplitter(), [raw[:cut], raw[cut:]])
    assert decode_event(lines[0])["message"] == "报修"


def test_splitter_bounds_lines() -> None:
    splitter = LineSplitter(max_line=64)
    with pytest.raises(WireError, match="unterminated"):
        splitter.feed(b"x" * 65)
    assert splitter.pending == 0
    with pytest.raises(WireError, match="exceeds"):
        splitter.feed(b"y" * 70 + b"\n")
    assert splitter.feed(b'{"ok": 1}\n') == [b'{"ok": 1}']
    with pytest.raises(WireError, match="exceeds"):
        decode_event(b" " * (wire.MAX_LINE + 1))


HOSTILE = 'Evil"; EXEC System(touch /tmp/pwned) ;\\ |,$(x) <sip:x@y>'


def _unquote(quoted: str) -> str:
    assert quoted[0] == quoted[-1] == '"'
    out, i, body = [], 0, quoted[1:-1]
    while i < len(body):
        if body[i] == "\\":
            i += 1
        else:
            assert body[i] != '"', "unescaped quote inside quoted-string"
        out.append(body[i])
        i += 1
    return "".join(out)


@pytest.mark.parametrize("name", ["Agent 1001", HOSTILE, '"', "\\", "张三 (VIP)", "a;b=c,d<e>f:g", ""])
def test_display_name_quoting_round_trips(name: str) -> None:
    quoted = quote_display_name(name)
    assert _unquote(quoted) == name


@pytest.mark.parametrize("name", ["line\r\nVia: evil", "nul\x00", "bell\x07"])
def test_display_name_with_controls_is_refused(name: str) -> None:
    with pytest.raises(WireError, match="control character"):
        quote_display_name(name)


def test_account_id_uri() -> None:
    assert account_id_uri("agent1", "127.0.0.1") == "<sip:agent1@127.0.0.1>"
    assert account_id_uri("13800138000", "127.0.0.1", "Zhang") == '"Zhang" <sip:13800138000@127.0.0.1>'
    assert account_id_uri("a b@c", "h") == "<sip:a%20b%40c@h>"
    assert escape_user("+8613800138000") == "+8613800138000"
    assert escape_user("张") == "%E5%BC%A0"
    with pytest.raises(WireError):
        account_id_uri("a", "bad domain")
    with pytest.raises(WireError):
        escape_user("")


@pytest.mark.parametrize(("name", "value", "ok"), [
    ("X-Hotline-Test", "qa-42", True),
    ("X-Hotline-Test", "tab\tok", True),
    ("X Bad", "v", False),
    ("X-Bad:", "v", False),
    ("", "v", False),
    ("X-Inject", "v\r\nVia: SIP/2.0/UDP evil", False),
    ("X-Inject", "v\nBYE", False),
])
def test_header_checks(name: str, value: str, ok: bool) -> None:
    if ok:
        check_header(name, value)
    else:
        with pytest.raises(WireError):
            check_header(name, value)


def test_parse_sip_headers() -> None:
    msg = ("INVITE sip:b@127.0.0.1:5062 SIP/2.0\r\n"
           "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK1\r\n"
           'From: "Evil\\"; x" <sip:a@127.0.0.1>;tag=1\r\n'
           "X-Hotline-Test: qa-42\r\n"
           "X-Long: first\r\n"
           "  second\r\n"
           "Record-Route: <sip:p1>\r\n"
           "Record-Route: <sip:p2>\r\n"
           "\r\n"
           "v=0\r\nX-Not-A-Header: body\r\n")
    headers = parse_sip_headers(msg)
    assert headers["X-Hotline-Test"] == "qa-42"
    assert headers["From"] == '"Evil\\"; x" <sip:a@127.0.0.1>;tag=1'
    assert headers["X-Long"] == "first second"
    assert headers["Record-Route"] == "<sip:p1>, <sip:p2>"
    assert "X-Not-A-Header" not in headers and "v" not in headers


def test_phone_config_round_trip_and_validation(tmp_path: Path) -> None:
    config = PhoneConfig(name="agent1001", registrar="sip:127.0.0.1:5060", username="1001", password="pw",
                         display_name='A "B"', auto_answer=True, answer_delay=0.5, log_dir=tmp_path)
    data = config.to_wire(tmp_path / "a.log")
    assert "log_dir" not in data and data["log_file"] == str(tmp_path / "a.log")
    back, log_file = PhoneConfig.from_wire(json.loads(json.dumps(data)))
    assert log_file == tmp_path / "a.log"
    assert back.user == "1001" and back.display_name == 'A "B"' and back.log_dir is None
    assert PhoneConfig(name="caller").user == "caller"

    for bad in (PhoneConfig(name=""), PhoneConfig(name="a", clock_rate=44100), PhoneConfig(name="a", reject_code=200),
                PhoneConfig(name="a", sip_port=70000), PhoneConfig(name="a", answer_delay=-1),
                PhoneConfig(name="a", registrar="127.0.0.1"), PhoneConfig(name="a", display_name="x\ny"),
                PhoneConfig(name="a", registrar="sip:r", username="u")):
        with pytest.raises(WireError):
            bad.validate()
    with pytest.raises(WireError, match="unknown config fields"):
        PhoneConfig.from_wire({"name": "a", "log_file": "/x", "evil": 1})


@pytest.mark.parametrize(("uri", "ok"), [
    ("sip:1003@127.0.0.1:5060", True),
    ("sips:agent@example.com;transport=tls", True),
    ("sip:1003@127.0.0.1\r\nX-Evil: 1", False),
    ("sip:a b@host", False),
    ("<sip:1003@127.0.0.1>", False),
    ("tel:+8613800138000", False),
    ("", False),
])
def test_refer_target_uri_checks(uri: str, ok: bool) -> None:
    if ok:
        wire.check_uri(uri)
    else:
        with pytest.raises(WireError):
            wire.check_uri(uri)
