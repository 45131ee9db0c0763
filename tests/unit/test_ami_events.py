"""Typed AMI events: recorded traffic replayed through the real parser, plus one
synthetic Asterisk 22-format message per family the recordings lack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cti.ami import events as ev
from cti.ami.events import EVENT_TYPES, ChannelInfo, UnknownEvent, parse_event, parse_response
from cti.ami.protocol import AMIParser, Message, encode_message
from tests.support.fake_ami import channel_headers

FIXTURES = Path("/work/shared/fixtures/ami/cacofonisk")
FIXTURE_FILES = sorted(FIXTURES.glob("**/*.json"))


def wire(records: list[dict[str, str]]) -> bytes:
    """Fixture dicts -> AMI wire bytes. 'content' is the recorder's (panoramisk) body field, not a header."""
    return b"".join(encode_message([(k, v) for k, v in r.items() if k != "content"]) for r in records)


def replay(path: Path) -> tuple[list[dict[str, str]], list[ev.Event]]:
    records = json.loads(path.read_text())
    parser = AMIParser()
    data = wire(records)
    messages = []
    for start in range(0, len(data), 1500):  # in TCP-sized chunks that cut through messages
        messages += parser.feed(data[start : start + 1500])
    return records, [parse_event(m) for m in messages]


def msg(*pairs: tuple[str, str], **headers: str) -> Message:
    return Message(tuple(pairs) + tuple(headers.items()))


def chan(prefix: str = "", uniqueid: str = "1700000000.1", name: str = "PJSIP/1001-00000001",
         linkedid: str | None = None) -> tuple[tuple[str, str], ...]:
    return tuple(channel_headers(uniqueid, name, linkedid=linkedid, prefix=prefix).items())


def test_fixtures_present() -> None:
    assert len(FIXTURE_FILES) >= 40


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_replay_recorded_traffic(path: Path) -> None:
    records, events = replay(path)
    assert len(events) == len(records)
    for record, event in zip(records, events, strict=True):
        assert event.name == record["Event"]
        expected = EVENT_TYPES.get(record["Event"], UnknownEvent)
        assert type(event) is expected
        # Real Asterisk traffic must type completely: nothing we call mandatory is absent.
        assert not event.partial, (event.name, event.missing)
        assert event.raw.get("Event") == record["Event"]


def test_spot_check_queue_simple() -> None:
    _, events = replay(FIXTURES / "queue/queue_simple.json")
    dial = next(e for e in events if isinstance(e, ev.DialBegin) and e.dest and e.dest.channel.startswith("SIP/"))
    assert dial.channel is not None
    assert dial.channel.channel == "Local/ID730151@osvpi_route_phoneaccount-00000016;2"
    assert dial.channel.linkedid == "195176c06ab8-1529939196.518"
    assert dial.dest is not None
    assert dial.dest.channel == "SIP/150010002-00000026"
    assert dial.dest.uniqueid == "195176c06ab8-1529939198.548"
    assert dial.dest.caller_id_num == "+31150010004"
    assert dial.dial_string == "150010002/150010002/172.20.0.13!!0150010001"

    hangup = next(e for e in events if isinstance(e, ev.Hangup))
    assert hangup.cause == 19 and hangup.cause_txt == "User alerting, no answer"

    enter = next(e for e in events if isinstance(e, ev.BridgeEnter))
    assert enter.bridge_uniqueid == "a2246edb-75ff-485e-af6c-89dbabfbb86d"
    assert enter.bridge_technology == "softmix" and enter.bridge_num_channels == 1
    assert enter.channel is not None and enter.channel.channel == "SIP/150010002-00000026"

    local = next(e for e in events if isinstance(e, ev.LocalBridge))
    assert local.local_optimization is True
    assert local.local_one is not None and local.local_one.channel.endswith(";1")
    assert local.local_two is not None and local.local_two.channel.endswith(";2")

    booted = events[0]
    assert isinstance(booted, ev.FullyBooted) and booted.status == "Fully Booted" and booted.uptime is None


def test_spot_check_queue_abandon() -> None:
    _, events = replay(FIXTURES / "queue/queue_a_cancel.json")
    (abandon,) = [e for e in events if isinstance(e, ev.QueueCallerAbandon)]
    assert abandon.queue == "670100-540100"
    assert (abandon.position, abandon.original_position, abandon.hold_time) == (1, 1, 11)
    assert abandon.channel is not None
    assert abandon.channel.channel == "SIP/voipgrid-siproute-docker-00000019"
    assert abandon.channel.linkedid == "40a7a1f2a669-1585318545.326"
    assert abandon.channel.caller_id_name == "<unknown>"  # kept as sent


def test_spot_check_transfers() -> None:
    _, events = replay(FIXTURES / "xfer_attended/xfer_abacbc.json")
    (attended,) = [e for e in events if isinstance(e, ev.AttendedTransfer)]
    assert attended.result == "Success" and attended.dest_type == "Bridge"
    assert attended.dest_bridge_uniqueid == "712d2860-799a-4762-9ff2-814e68fc4529"
    assert attended.orig_transferer is not None
    assert attended.orig_transferer.channel == "SIP/150010001-00000028"
    assert attended.transferer == attended.orig_transferer
    assert attended.second_transferer is not None and attended.second_transferer.exten == "203"
    assert attended.orig_bridge is not None
    assert attended.orig_bridge.bridge_uniqueid == "04f60dd3-e9d4-41e4-98fe-4ab47aa300d8"
    assert attended.orig_bridge.bridge_num_channels == 2
    assert attended.is_external is False and attended.dest_app is None

    _, events = replay(FIXTURES / "xfer_blind/xfer_blind_abbcac.json")
    (blind,) = [e for e in events if isinstance(e, ev.BlindTransfer)]
    assert (blind.result, blind.context, blind.extension, blind.is_external) == (
        "Success", "osvpi_account_transfer", "203", True)
    assert blind.transferer is not None and blind.transferer.channel == "SIP/150010002-00000004"
    assert blind.transferee is not None and blind.transferee.caller_id_name == "Andrew Garza"
    assert blind.bridge is not None and blind.bridge.bridge_technology == "simple_bridge"


def test_spot_check_user_event() -> None:
    _, events = replay(FIXTURES / "var_set/user_events.json")
    user = next(e for e in events if isinstance(e, ev.UserEvent))
    assert user.user_event == "NotifyCallstate"
    assert user.raw.get("Direction") == "outbound"  # custom headers stay in raw
    assert user.channel is not None and user.channel.channel == "SIP/260010001-00000026"


# -- synthetic Asterisk 22 messages for families the recordings lack --------------------
def test_agent_events() -> None:
    base = (("Event", "AgentConnect"), *chan(), *chan("Dest", "1700000000.5", "PJSIP/8001-00000005", "1700000000.1"),
            ("Queue", "repair"), ("MemberName", "张工"), ("Interface", "PJSIP/8001"))
    connect = parse_event(Message(base + (("RingTime", "4"), ("HoldTime", "37"))))
    assert isinstance(connect, ev.AgentConnect) and not connect.partial
    assert (connect.queue, connect.member_name, connect.interface) == ("repair", "张工", "PJSIP/8001")
    assert (connect.hold_time, connect.ring_time) == (37, 4)
    assert connect.channel is not None and connect.channel.uniqueid == "1700000000.1"
    assert connect.dest is not None and connect.dest.channel == "PJSIP/8001-00000005"
    assert connect.dest.linkedid == "1700000000.1"

    def typed(name: str, *extra: tuple[str, str]) -> ev.Event:
        return parse_event(Message((("Event", name),) + base[1:] + extra))

    called = typed("AgentCalled")
    assert isinstance(called, ev.AgentCalled) and not called.partial
    complete = typed("AgentComplete", ("HoldTime", "37"), ("TalkTime", "125"), ("Reason", "caller"))
    assert isinstance(complete, ev.AgentComplete)
    assert (complete.talk_time, complete.reason) == (125, "caller")
    rna = typed("AgentRingNoAnswer", ("RingTime", "15000"))
    assert isinstance(rna, ev.AgentRingNoAnswer) and rna.ring_time == 15000
    assert isinstance(typed("AgentDump"), ev.AgentDump)


def test_queue_caller_events() -> None:
    join = parse_event(msg(("Event", "QueueCallerJoin"), *chan(), Queue="vip", Position="2", Count="3"))
    assert isinstance(join, ev.QueueCallerJoin) and (join.queue, join.position, join.count) == ("vip", 2, 3)
    leave = parse_event(msg(("Event", "QueueCallerLeave"), *chan(), Queue="vip", Position="1", Count="0"))
    assert isinstance(leave, ev.QueueCallerLeave) and leave.count == 0 and not leave.partial


MEMBER = (("Queue", "repair"), ("MemberName", "Agent 8001"), ("Interface", "PJSIP/8001"),
          ("StateInterface", "PJSIP/8001"), ("Membership", "dynamic"), ("Penalty", "1"), ("CallsTaken", "4"),
          ("LastCall", "1700000100"), ("LastPause", "0"), ("LoginTime", "1700000000"), ("InCall", "1"),
          ("Status", "2"), ("Paused", "1"), ("PausedReason", "午饭"), ("Ringinuse", "0"), ("Wrapuptime", "15"))


@pytest.mark.parametrize("name", ["QueueMemberStatus", "QueueMemberAdded", "QueueMemberRemoved",
                                  "QueueMemberPause", "QueueMemberPenalty", "QueueMemberRinginuse"])
def test_queue_member_events(name: str) -> None:
    event = parse_event(Message((("Event", name),) + MEMBER))
    assert type(event) is EVENT_TYPES[name]
    assert isinstance(event, ev.QueueMemberEvent) and not event.partial
    assert (event.queue, event.member_name, event.interface, event.state_interface) == (
        "repair", "Agent 8001", "PJSIP/8001", "PJSIP/8001")
    assert (event.membership, event.penalty, event.calls_taken, event.last_call) == ("dynamic", 1, 4, 1700000100)
    assert (event.in_call, event.status, event.paused, event.paused_reason) == (True, 2, True, "午饭")
    assert (event.ringinuse, event.wrapuptime, event.login_time, event.last_pause) == (False, 15, 1700000000, 0)


def test_queue_status_list_entries() -> None:
    member = parse_event(msg(("Event", "QueueMember"), ActionID="h-1-3", Queue="repair", Name="Agent 8001",
                             Location="PJSIP/8001", StateInterface="PJSIP/8001", Membership="static",
                             Penalty="0", CallsTaken="0", LastCall="0", LastPause="0", LoginTime="0",
                             InCall="0", Status="1", Paused="0", PausedReason="", Wrapuptime="0"))
    assert isinstance(member, ev.QueueMember) and not member.partial
    assert (member.member_name, member.interface, member.paused, member.in_call) == (
        "Agent 8001", "PJSIP/8001", False, False)
    assert member.action_id == "h-1-3"
    assert member.ringinuse is None  # not in this list entry

    params = parse_event(msg(("Event", "QueueParams"), Queue="repair", Max="0", Strategy="rrmemory", Calls="2",
                             Holdtime="31", TalkTime="120", Completed="40", Abandoned="3", ServiceLevel="60",
                             ServicelevelPerf="95.0", ServicelevelPerf2="93.5", Weight="0"))
    assert isinstance(params, ev.QueueParams) and not params.partial
    assert (params.calls, params.holdtime, params.completed, params.abandoned) == (2, 31, 40, 3)
    assert params.service_level_perf == 95.0 and params.service_level_perf2 == 93.5

    entry = parse_event(msg(("Event", "QueueEntry"), Queue="repair", Position="1", Channel="PJSIP/trunk-0001",
                            Uniqueid="1700000000.9", CallerIDNum="13800138000", CallerIDName="张三",
                            ConnectedLineNum="<unknown>", ConnectedLineName="<unknown>", Wait="42", Priority="0"))
    assert isinstance(entry, ev.QueueEntry) and not entry.partial
    assert entry.channel is not None
    channel = entry.channel
    assert (channel.uniqueid, channel.caller_id_name, channel.linkedid) == ("1700000000.9", "张三", "")
    assert (entry.position, entry.wait, entry.priority) == (1, 42, 0)


def test_core_show_channel() -> None:
    event = parse_event(msg(("Event", "CoreShowChannel"), ("ActionID", "h-1-2"), *chan(), BridgeId="",
                            Application="AGI", ApplicationData="agi://127.0.0.1/hotline", Duration="00:01:05"))
    assert isinstance(event, ev.CoreShowChannel) and not event.partial
    assert event.channel is not None and event.channel.channel == "PJSIP/1001-00000001"
    assert (event.application, event.duration) == ("AGI", "00:01:05")


def test_originate_response() -> None:
    event = parse_event(msg(("Event", "OriginateResponse"), ActionID="h-1-9", Response="Failure",
                            Channel="PJSIP/13800138000@carrier", Context="survey", Exten="s", Application="",
                            Data="", Reason="5", Uniqueid="<null>", CallerIDNum="<unknown>",
                            CallerIDName="<unknown>"))
    assert isinstance(event, ev.OriginateResponse) and not event.partial
    assert (event.success, event.reason, event.channel, event.action_id) == (
        False, 5, "PJSIP/13800138000@carrier", "h-1-9")


def test_channel_families() -> None:
    cases: list[tuple[tuple[tuple[str, str], ...], type[ev.Event]]] = [
        ((("Event", "Newchannel"), *chan()), ev.Newchannel),
        ((("Event", "Newstate"), *chan()), ev.Newstate),
        ((("Event", "NewConnectedLine"), *chan()), ev.NewConnectedLine),
        ((("Event", "MixMonitorStart"), *chan()), ev.MixMonitorStart),
        ((("Event", "MixMonitorStop"), *chan()), ev.MixMonitorStop),
        ((("Event", "Unhold"), *chan()), ev.Unhold),
        ((("Event", "Hold"), *chan(), ("MusicClass", "default")), ev.Hold),
        ((("Event", "HangupRequest"), *chan(), ("Cause", "16")), ev.HangupRequest),
        ((("Event", "SoftHangupRequest"), *chan(), ("Cause", "32")), ev.SoftHangupRequest),
        ((("Event", "DTMFEnd"), *chan(), ("Digit", "#"), ("DurationMs", "120"), ("Direction", "Received")),
         ev.DTMFEnd),
        ((("Event", "Newexten"), *chan(), ("Extension", "400"), ("Application", "AGI"),
          ("AppData", "agi://127.0.0.1/hotline")), ev.Newexten),
        ((("Event", "VarSet"), *chan(), ("Variable", "HOTLINE_CHOICE"), ("Value", "2>1")), ev.VarSet),
    ]
    for headers, cls in cases:
        event = parse_event(Message(headers))
        assert type(event) is cls and not event.partial, (cls, event.missing)
        assert isinstance(event, ev.ChannelEvent) and event.channel is not None
        assert event.channel.uniqueid == "1700000000.1"
    dtmf = parse_event(Message(cases[9][0]))
    assert isinstance(dtmf, ev.DTMFEnd) and (dtmf.digit, dtmf.duration_ms, dtmf.direction) == ("#", 120, "Received")
    exten = parse_event(Message(cases[10][0]))
    assert isinstance(exten, ev.Newexten) and (exten.application, exten.app_data) == ("AGI", "agi://127.0.0.1/hotline")
    hangup_req = parse_event(Message(cases[7][0]))
    assert isinstance(hangup_req, ev.HangupRequest) and hangup_req.cause == 16


def test_optional_blocks_absent_is_not_partial() -> None:
    global_var = parse_event(msg(("Event", "VarSet"), Variable="GLOBAL_X", Value="1"))
    assert isinstance(global_var, ev.VarSet) and global_var.channel is None and not global_var.partial
    originate_dial = parse_event(msg(("Event", "DialBegin"), *chan("Dest"), DialString="PJSIP/8001"))
    assert isinstance(originate_dial, ev.DialBegin) and originate_dial.channel is None
    assert originate_dial.dest is not None and not originate_dial.partial
    spy_stop = parse_event(msg(("Event", "ChanSpyStop"), *chan("Spyer")))
    assert isinstance(spy_stop, ev.ChanSpyStop) and spy_stop.spyee is None and not spy_stop.partial
    spy_start = parse_event(msg(("Event", "ChanSpyStart"), *chan("Spyer"), *chan("Spyee", "1700000000.2")))
    assert isinstance(spy_start, ev.ChanSpyStart) and spy_start.spyee is not None and not spy_start.partial


def test_system_and_cdr_events() -> None:
    shutdown = parse_event(msg(("Event", "Shutdown"), Shutdown="Cleanly", Restart="True"))
    assert isinstance(shutdown, ev.Shutdown) and shutdown.restart is True
    reload = parse_event(msg(("Event", "Reload"), Module="app_queue.so", Status="0"))
    assert isinstance(reload, ev.Reload) and (reload.module, reload.status) == ("app_queue.so", "0")
    cdr = parse_event(msg(("Event", "Cdr"), AccountCode="", Source="13800138000", Destination="400",
                          DestinationContext="hotline", CallerID='"张三" <13800138000>', Channel="PJSIP/trunk-01",
                          DestinationChannel="PJSIP/8001-02", LastApplication="Queue", LastData="repair",
                          StartTime="2026-11-23 10:00:00", AnswerTime="2026-11-23 10:00:30",
                          EndTime="2026-11-23 10:02:30", Duration="150", BillableSeconds="120",
                          Disposition="ANSWERED", AMAFlags="DOCUMENTATION", UniqueID="1700000000.1", UserField=""))
    assert isinstance(cdr, ev.Cdr) and not cdr.partial
    assert (cdr.duration, cdr.billable_seconds, cdr.disposition, cdr.caller_id) == (
        150, 120, "ANSWERED", '"张三" <13800138000>')


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_family_survives_a_bare_message(name: str) -> None:
    event = parse_event(msg(("Event", name)))
    assert type(event) is EVENT_TYPES[name]
    assert event.raw.name == name


def test_missing_and_malformed_headers_keep_the_type() -> None:
    event = parse_event(msg(("Event", "Hangup"), *chan(), Cause="sixteen"))
    assert isinstance(event, ev.Hangup)
    assert event.cause == 0 and event.cause_txt == ""
    assert event.partial and set(event.missing) == {"Cause", "Cause-txt"}
    no_channel = parse_event(msg(("Event", "Newchannel")))
    assert isinstance(no_channel, ev.Newchannel) and no_channel.channel is None
    assert no_channel.missing == ("Channel",)


def test_unknown_event_keeps_raw() -> None:
    raw = msg(("Event", "PeerStatus"), Peer="PJSIP/1001", PeerStatus="Reachable")
    event = parse_event(raw)
    assert type(event) is UnknownEvent and event.name == "PeerStatus" and event.raw is raw
    assert not event.partial


def test_event_names_match_case_insensitively() -> None:
    event = parse_event(msg(("Event", "CDR"), Channel="PJSIP/x", UniqueID="1", Duration="1", BillableSeconds="0"))
    assert isinstance(event, ev.Cdr) and event.name == "CDR"


def test_events_are_frozen() -> None:
    event = parse_event(msg(("Event", "Newchannel"), *chan()))
    with pytest.raises(AttributeError):
        event.name = "x"  # type: ignore[misc]


def test_channel_info_from_message() -> None:
    message = Message(chan() + chan("Dest", "1700000000.2", "PJSIP/8001-00000002", "1700000000.1"))
    assert ChannelInfo.from_message(message, "Transferer") is None
    dest = ChannelInfo.from_message(message, "Dest")
    assert dest is not None
    assert (dest.channel, dest.uniqueid, dest.linkedid, dest.channel_state_desc) == (
        "PJSIP/8001-00000002", "1700000000.2", "1700000000.1", "Up")
    main = ChannelInfo.from_message(message)
    assert main is not None and main.channel == "PJSIP/1001-00000001" and main.caller_id_num == "1001"


# -- responses --------------------------------------------------------------------------
def test_parse_response() -> None:
    ok = parse_response(msg(("Response", "Success"), ActionID="a-1", EventList="start",
                            Message="Channels will follow"))
    assert ok.success and ok.is_list and ok.action_id == "a-1" and ok.message == "Channels will follow"
    assert ok.response == "Success"
    error = parse_response(msg(("Response", "Error"), ActionID="a-2", Message="No such channel"))
    assert not error.success and error.message == "No such channel" and not error.is_list
    goodbye = parse_response(msg(("Response", "Goodbye"), Message="Thanks for all the fish."))
    assert goodbye.success and goodbye.action_id is None


def test_command_output_both_styles() -> None:
    new = parse_response(msg(("Response", "Success"), ("ActionID", "c-1"), ("Output", "a"), ("Output", "b")))
    assert new.output == ["a", "b"]
    parser = AMIParser()
    (old,) = parser.feed(b"Response: Follows\r\nPrivilege: Command\r\nActionID: c-2\r\n"
                         b"a\n\nb\n--END COMMAND--\r\n\r\n")
    response = parse_response(old)
    assert response.success and response.output == ["a", "", "b"]
