"""Typed AMI events: one frozen dataclass per event family the service uses.

`parse_event(msg)` looks the `Event:` name up in one explicit table, `EVENT_TYPES`,
and builds that class; anything else becomes `UnknownEvent`. The raw `Message` is
always kept, so a consumer can read a header we did not model.

Missing headers: an event is never dropped or turned into `UnknownEvent` because a
header is absent or malformed (Asterisk versions differ, and a replay may come from
another version). The typed event is built with a neutral value ("" / 0 / None /
False) and the header name is listed in `event.missing`; `event.partial` is True
then. Headers that only some Asterisk versions send are typed `X | None` and are not
counted as missing.

Header names follow the Asterisk 22 AMI event documentation (docs.asterisk.org,
API_Documentation/AMI_Events); field names are their snake_case, and a channel
snapshot block (`Channel`, `ChannelState`, ..., `Linkedid`, optionally prefixed
`Dest`, `Transferer`, `LocalOne` ...) becomes a `ChannelInfo`.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from operator import itemgetter
from typing import Any, ClassVar

from cti.ami.protocol import Message, _Shape

__all__ = [
    "EVENT_TYPES", "AgentCalled", "AgentComplete", "AgentConnect", "AgentDump", "AgentEvent",
    "AgentRingNoAnswer", "AttendedTransfer", "BlindTransfer", "BridgeCreate", "BridgeDestroy",
    "BridgeEnter", "BridgeEvent", "BridgeInfo", "BridgeLeave", "Cdr", "ChanSpyStart", "ChanSpyStop",
    "ChannelEvent", "ChannelInfo", "CoreShowChannel", "DTMFEnd", "DialBegin", "DialEnd", "Event",
    "FullyBooted", "Hangup", "HangupRequest", "Hold", "LocalBridge", "MixMonitorStart",
    "MixMonitorStop", "NewCallerid", "NewConnectedLine", "Newchannel", "Newexten", "Newstate",
    "OriginateResponse", "QueueCallerAbandon", "QueueCallerJoin", "QueueCallerLeave", "QueueEntry",
    "QueueMember", "QueueMemberAdded", "QueueMemberEvent", "QueueMemberPause", "QueueMemberPenalty",
    "QueueMemberRemoved", "QueueMemberRinginuse", "QueueMemberStatus", "QueueParams", "Reload",
    "Response", "Shutdown", "SoftHangupRequest", "Unhold", "UnknownEvent", "UserEvent", "VarSet",
    "parse_event", "parse_response",
]

_TRUE = frozenset({"1", "true", "yes", "on", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "n", ""})
_FLAGS = {**dict.fromkeys(_FALSE, False), **dict.fromkeys(_TRUE, True)}  # exact spellings only


# -- shared blocks ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """The channel snapshot block AMI repeats in many events, optionally prefixed.

    Values are kept as Asterisk sends them: an unknown caller ID is "<unknown>" and
    state/priority stay strings (they are identifiers here, not arithmetic).
    """

    channel: str
    channel_state: str
    channel_state_desc: str
    caller_id_num: str
    caller_id_name: str
    connected_line_num: str
    connected_line_name: str
    language: str
    account_code: str
    context: str
    exten: str
    priority: str
    uniqueid: str
    linkedid: str

    @classmethod
    def from_message(cls, msg: Message, prefix: str = "") -> ChannelInfo | None:
        """The block under `prefix`, or None when it is absent.

        Absent is normal: DialBegin of an Originate has no caller side, VarSet of a
        global variable has no channel, ChanSpyStop may lack the spyee.
        """
        if cls is not ChannelInfo:
            info = _channel_info(_index_of(msg), msg.headers, prefix)
            return None if info is None else cls(*[getattr(info, name) for name in _CHANNEL_FIELDS])
        return _channel_info(_index_of(msg), msg.headers, prefix)


# The block's headers in ChannelInfo's field order.
_CHANNEL_HEADERS = (
    "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName", "ConnectedLineNum",
    "ConnectedLineName", "Language", "AccountCode", "Context", "Exten", "Priority", "Uniqueid", "Linkedid",
)
_CHANNEL_FIELDS = tuple(f.name for f in fields(ChannelInfo))
_CHANNEL_KEYS: dict[str, tuple[str, ...]] = {}  # prefix -> lower-cased prefixed header names


def _channel_info(index: dict[str, int], headers: tuple[tuple[str, str], ...], prefix: str) -> ChannelInfo | None:
    if type(index) is _Shape:
        # A layout the parser has seen before: where the block's 14 headers sit is
        # known (plan), and the same snapshot (a channel whose state, context and
        # priority did not change between two events) is built only once (memo).
        plan: Any = index.plans.get(prefix, _NO_PLAN)
        if plan is _NO_PLAN:
            plan = index.plans[prefix] = _channel_plan(index, prefix)
        if plan is not None:
            pairs = plan(headers)
            known = _CHANNEL_MEMO.get(pairs)
            if known is not None:
                return known
            values = tuple(map(_second, pairs))
            made: ChannelInfo = _make_channel_info(*values)
            if sum(map(len, values)) <= _MEMO_BLOCK_LENGTH:  # bounds the memo to a few megabytes
                if len(_CHANNEL_MEMO) >= _MEMO_BLOCKS:
                    _CHANNEL_MEMO.clear()
                _CHANNEL_MEMO[pairs] = made
            return made
    keys = _CHANNEL_KEYS.get(prefix)
    if keys is None:
        keys = _prefixed(_CHANNEL_KEYS, _CHANNEL_HEADERS, prefix)
    get = index.get
    # Channel and Uniqueid are fields 0 and 12 of the block.
    if get(keys[0]) is None and get(keys[12]) is None:
        return None
    # In field order; an absent header is "" like an empty one.
    info: ChannelInfo = _make_channel_info(*[headers[pos][1] if pos is not None else "" for pos in map(get, keys)])
    return info


_NO_PLAN = object()
_second = itemgetter(1)
# (header, value) pairs of a whole channel block -> its ChannelInfo (immutable, so one
# instance can serve every event with that snapshot: about 60% of the blocks of a
# hotline stream). The pairs come from the parser's line cache, so equal blocks hash
# and compare mostly by identity. Shared by all parsers; dict operations are atomic
# under the GIL, and a lost race only builds one ChannelInfo twice.
_CHANNEL_MEMO: dict[tuple[tuple[str, str], ...], ChannelInfo] = {}
_MEMO_BLOCKS = 2048
_MEMO_BLOCK_LENGTH = 1024  # characters of values; a real snapshot has about 150


def _channel_plan(index: dict[str, int], prefix: str) -> Any:
    """itemgetter of the block's 14 headers in field order, or None unless all are present."""
    keys = _CHANNEL_KEYS.get(prefix)
    if keys is None:
        keys = _prefixed(_CHANNEL_KEYS, _CHANNEL_HEADERS, prefix)
    positions = [index.get(key) for key in keys]
    if None in positions:
        return None  # absent or partial block: the general path decides
    return itemgetter(*positions)


def _values_plan(index: dict[str, int], groups: tuple[tuple[str, ...], ...]) -> Any:
    """itemgetter of the first present header of each group, or None if a group is absent."""
    positions = []
    for group in groups:
        pos = next((index[key.lower()] for key in group if key.lower() in index), None)
        if pos is None:
            return None
        positions.append(pos)
    return itemgetter(*positions)


def _prefixed(cache: dict[str, tuple[str, ...]], headers: tuple[str, ...], prefix: str) -> tuple[str, ...]:
    keys = tuple((prefix + header).lower() for header in headers)
    if len(cache) >= 256:  # prefixes are a handful of constants; bound it anyway
        cache.clear()
    cache[prefix] = keys
    return keys


def _index_of(msg: Message) -> dict[str, int]:
    """The message's lower-cased header name -> position map (built once per message,
    shared between messages of one shape by the parser)."""
    index = msg._index
    return index if index is not None else msg._lookup()


@dataclass(frozen=True, slots=True)
class BridgeInfo:
    """The bridge snapshot block (`BridgeUniqueid` ... optionally prefixed `Orig`/`Second`)."""

    bridge_uniqueid: str
    bridge_type: str
    bridge_technology: str
    bridge_creator: str
    bridge_name: str
    bridge_num_channels: int
    bridge_video_source_mode: str

    @classmethod
    def from_message(cls, msg: Message, prefix: str = "") -> BridgeInfo | None:
        uniqueid = msg.get(prefix + "BridgeUniqueid")
        if uniqueid is None:
            return None
        count = _to_int(msg.get(prefix + "BridgeNumChannels"))
        return cls(
            bridge_uniqueid=uniqueid,
            bridge_type=msg.get(prefix + "BridgeType") or "",
            bridge_technology=msg.get(prefix + "BridgeTechnology") or "",
            bridge_creator=msg.get(prefix + "BridgeCreator") or "",
            bridge_name=msg.get(prefix + "BridgeName") or "",
            bridge_num_channels=count if count is not None else 0,
            bridge_video_source_mode=msg.get(prefix + "BridgeVideoSourceMode") or "",
        )


def _to_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


_LOWER: dict[str, str] = {}  # header name as written in this module -> lower-cased


def _lower(key: str) -> str:
    lowered = _LOWER.get(key)
    if lowered is None:
        if len(_LOWER) >= 1024:  # the names are this module's constants; bound it anyway
            _LOWER.clear()
        lowered = _LOWER[key] = key.lower()
    return lowered


class _Reader:
    """Reads typed headers from one message and records what was absent or malformed."""

    __slots__ = ("msg", "missing", "_index", "_headers")

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.missing: list[str] = []
        self._index = _index_of(msg)
        self._headers = msg.headers

    # The hot accessors below inline _get(): a method call costs as much as the lookup.
    def _get(self, key: str) -> str | None:
        pos = self._index.get(_LOWER.get(key) or _lower(key))
        return None if pos is None else self._headers[pos][1]

    def opt(self, key: str, *fallbacks: str) -> str | None:
        pos = self._index.get(_LOWER.get(key) or _lower(key))
        if pos is not None:
            return self._headers[pos][1]
        for alt in fallbacks:
            value = self._get(alt)
            if value is not None:
                return value
        return None

    def text(self, key: str, *fallbacks: str) -> str:
        pos = self._index.get(_LOWER.get(key) or _lower(key))
        if pos is not None:
            return self._headers[pos][1]
        for alt in fallbacks:
            value = self._get(alt)
            if value is not None:
                return value
        self.missing.append(key)
        return ""

    def opt_int(self, key: str) -> int | None:
        pos = self._index.get(_LOWER.get(key) or _lower(key))
        if pos is None:
            return None
        raw = self._headers[pos][1]
        if raw == "":
            return None
        try:
            return int(raw.strip())
        except ValueError:
            self.missing.append(key)
            return None

    def int(self, key: str) -> int:
        pos = self._index.get(_LOWER.get(key) or _lower(key))
        if pos is not None:
            try:
                return int(self._headers[pos][1].strip())
            except ValueError:
                pass
        self.missing.append(key)
        return 0

    def opt_float(self, key: str) -> float | None:
        raw = self._get(key)
        if raw is None or raw == "":
            return None
        try:
            return float(raw)
        except ValueError:
            self.missing.append(key)
            return None

    def opt_flag(self, key: str) -> bool | None:
        pos = self._index.get(_LOWER.get(key) or _lower(key))
        if pos is None:
            return None
        raw = self._headers[pos][1]
        # Asterisk sends "0"/"1" (or true/false): the common spellings skip strip/lower.
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered not in _FALSE:
            self.missing.append(key)
        return False

    def flag(self, key: str) -> bool:
        value = self.opt_flag(key)
        if value is None:
            self.missing.append(key)
            return False
        return value

    def planned(self, owner: Any) -> tuple[str, ...] | None:
        """Values of `owner._plan_groups()` (the first present header of each group), if
        this is a parsed layout that has them all; else None."""
        index = self._index
        if type(index) is not _Shape:
            return None
        plan = index.plans.get(owner, _NO_PLAN)
        if plan is _NO_PLAN:
            plan = index.plans[owner] = _values_plan(index, owner._plan_groups())
        if plan is None:
            return None
        values: tuple[str, ...] = tuple(map(_second, plan(self._headers)))  # type: ignore[operator]
        return values

    def channel(self, prefix: str = "", *, required: bool = True) -> ChannelInfo | None:
        info = _channel_info(self._index, self._headers, prefix)
        if info is None and required:
            self.missing.append(prefix + "Channel")
        return info

    def bridge(self, prefix: str = "", *, required: bool = True) -> BridgeInfo | None:
        info = BridgeInfo.from_message(self.msg, prefix)
        if info is None and required:
            self.missing.append(prefix + "BridgeUniqueid")
        return info


_Fields = dict[str, Any]


# -- base ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Event:
    """Base of every AMI event: the `Event:` name and the raw message.

    `missing` names headers this family expects but the message lacked (or had in a
    form we could not parse); see the module docstring.
    """

    name: str
    raw: Message
    missing: tuple[str, ...] = field(default=(), kw_only=True)

    @property
    def partial(self) -> bool:
        return bool(self.missing)

    @property
    def action_id(self) -> str | None:
        """Set on list-action events and on OriginateResponse (async Originate)."""
        return self.raw.action_id

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {}


@dataclass(frozen=True, slots=True)
class UnknownEvent(Event):
    """An event without a typed family here; read `raw`."""


# -- system ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class FullyBooted(Event):
    """Sent after login and after an Asterisk (re)start: state must be resynced."""

    status: str
    uptime: int | None  # seconds; Asterisk 13.2+
    last_reload: int | None

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"status": r.text("Status"), "uptime": r.opt_int("Uptime"), "last_reload": r.opt_int("LastReload")}


@dataclass(frozen=True, slots=True, kw_only=True)
class Shutdown(Event):
    shutdown: str  # "Cleanly" | "Uncleanly"
    restart: bool

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"shutdown": r.text("Shutdown"), "restart": r.flag("Restart")}


@dataclass(frozen=True, slots=True, kw_only=True)
class Reload(Event):
    module: str
    status: str  # numeric code since Asterisk 12 ("0" success), words before

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"module": r.text("Module"), "status": r.text("Status")}


# -- channel lifecycle -----------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelEvent(Event):
    """Events carrying one (unprefixed) channel snapshot."""

    channel: ChannelInfo | None

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Newchannel(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Newstate(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class NewCallerid(ChannelEvent):
    cid_calling_pres: str | None

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(), "cid_calling_pres": r.opt("CID-CallingPres")}


@dataclass(frozen=True, slots=True, kw_only=True)
class NewConnectedLine(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Newexten(ChannelEvent):
    application: str
    app_data: str
    extension: str | None  # deprecated duplicate of Exten, still sent by Asterisk 22

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(), "application": r.text("Application"), "app_data": r.text("AppData"),
                "extension": r.opt("Extension")}


@dataclass(frozen=True, slots=True, kw_only=True)
class VarSet(ChannelEvent):
    """`channel` is None for a global variable."""

    variable: str
    value: str

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(required=False), "variable": r.text("Variable"), "value": r.text("Value")}


@dataclass(frozen=True, slots=True, kw_only=True)
class Hangup(ChannelEvent):
    cause: int  # Q.850 cause code
    cause_txt: str

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(), "cause": r.int("Cause"), "cause_txt": r.text("Cause-txt")}


@dataclass(frozen=True, slots=True, kw_only=True)
class HangupRequest(ChannelEvent):
    cause: int | None  # absent when the requester gave none

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(), "cause": r.opt_int("Cause")}


@dataclass(frozen=True, slots=True, kw_only=True)
class SoftHangupRequest(HangupRequest):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold(ChannelEvent):
    music_class: str | None

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(), "music_class": r.opt("MusicClass")}


@dataclass(frozen=True, slots=True, kw_only=True)
class Unhold(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class DTMFEnd(ChannelEvent):
    digit: str
    duration_ms: int
    direction: str  # "Received" | "Sent"

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(), "digit": r.text("Digit"), "duration_ms": r.int("DurationMs"),
                "direction": r.text("Direction")}


@dataclass(frozen=True, slots=True, kw_only=True)
class MixMonitorStart(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class MixMonitorStop(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class UserEvent(ChannelEvent):
    """UserEvent from the dialplan (has a channel) or the UserEvent action (none); extra headers in `raw`."""

    user_event: str

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(required=False), "user_event": r.text("UserEvent")}


# -- dialing ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class DialBegin(ChannelEvent):
    """`channel` is the caller (None for an Originate), `dest` the dialed channel."""

    dest: ChannelInfo | None
    dial_string: str

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(required=False), "dest": r.channel("Dest"),
                "dial_string": r.text("DialString")}


@dataclass(frozen=True, slots=True, kw_only=True)
class DialEnd(ChannelEvent):
    dest: ChannelInfo | None
    dial_status: str  # ANSWER, BUSY, NOANSWER, CANCEL, CONGESTION, CHANUNAVAIL ...
    forward: str | None

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(required=False), "dest": r.channel("Dest"),
                "dial_status": r.text("DialStatus"), "forward": r.opt("Forward")}


# -- bridges and transfers ----------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeEvent(Event):
    bridge_uniqueid: str
    bridge_type: str
    bridge_technology: str
    bridge_creator: str
    bridge_name: str
    bridge_num_channels: int

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return _bridge_fields(r)


def _bridge_fields(r: _Reader) -> _Fields:
    return {"bridge_uniqueid": r.text("BridgeUniqueid"), "bridge_type": r.text("BridgeType"),
            "bridge_technology": r.text("BridgeTechnology"), "bridge_creator": r.opt("BridgeCreator") or "",
            "bridge_name": r.opt("BridgeName") or "", "bridge_num_channels": r.int("BridgeNumChannels")}


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeCreate(BridgeEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeDestroy(BridgeEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeEnter(BridgeEvent):
    channel: ChannelInfo | None
    swap_uniqueid: str | None

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {**_bridge_fields(r), "channel": r.channel(), "swap_uniqueid": r.opt("SwapUniqueid")}


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeLeave(BridgeEvent):
    channel: ChannelInfo | None

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {**_bridge_fields(r), "channel": r.channel()}


@dataclass(frozen=True, slots=True, kw_only=True)
class BlindTransfer(Event):
    result: str  # "Success", "Fail", "Invalid", "Not Permitted"
    transferer: ChannelInfo | None
    transferee: ChannelInfo | None
    bridge: BridgeInfo | None
    is_external: bool
    context: str
    extension: str

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"result": r.text("Result"), "transferer": r.channel("Transferer"),
                "transferee": r.channel("Transferee", required=False), "bridge": r.bridge(required=False),
                "is_external": r.flag("IsExternal"), "context": r.text("Context"),
                "extension": r.text("Extension")}


@dataclass(frozen=True, slots=True, kw_only=True)
class AttendedTransfer(Event):
    """Which leg is "Orig" and which "Second" follows creation order, not roles (see AMI docs).

    `dest_type` says how it completed: Bridge (bridges merged, `dest_bridge_uniqueid`),
    App (`dest_app`), Link (two Local channels, `local_one`/`local_two`), Threeway
    (`dest_transferer_channel`, `dest_bridge_uniqueid`) or Fail.
    """

    result: str
    orig_transferer: ChannelInfo | None
    orig_bridge: BridgeInfo | None
    second_transferer: ChannelInfo | None
    second_bridge: BridgeInfo | None
    transferee: ChannelInfo | None
    transfer_target: ChannelInfo | None
    dest_type: str
    dest_bridge_uniqueid: str | None
    dest_app: str | None
    local_one: ChannelInfo | None
    local_two: ChannelInfo | None
    dest_transferer_channel: str | None
    is_external: bool

    @property
    def transferer(self) -> ChannelInfo | None:
        """The transferring party's first leg (the tracker's view of "who transferred")."""
        return self.orig_transferer or self.second_transferer

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {
            "result": r.text("Result"),
            "orig_transferer": r.channel("OrigTransferer"),
            "orig_bridge": r.bridge("Orig", required=False),
            "second_transferer": r.channel("SecondTransferer"),
            "second_bridge": r.bridge("Second", required=False),
            "transferee": r.channel("Transferee", required=False),
            "transfer_target": r.channel("TransferTarget", required=False),
            "dest_type": r.text("DestType"),
            "dest_bridge_uniqueid": r.opt("DestBridgeUniqueid"),
            "dest_app": r.opt("DestApp"),
            "local_one": r.channel("LocalOne", required=False),
            "local_two": r.channel("LocalTwo", required=False),
            "dest_transferer_channel": r.opt("DestTransfererChannel"),
            "is_external": r.flag("IsExternal"),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalBridge(Event):
    """The two halves of a Local channel were bridged (Local/... in queues and transfers)."""

    local_one: ChannelInfo | None
    local_two: ChannelInfo | None
    context: str
    exten: str
    local_optimization: bool

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"local_one": r.channel("LocalOne"), "local_two": r.channel("LocalTwo"),
                "context": r.text("Context"), "exten": r.text("Exten"),
                "local_optimization": r.flag("LocalOptimization")}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChanSpyStart(Event):
    spyer: ChannelInfo | None
    spyee: ChannelInfo | None

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"spyer": r.channel("Spyer"), "spyee": r.channel("Spyee")}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChanSpyStop(ChanSpyStart):
    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        # The spyee may already be gone when spying stops.
        return {"spyer": r.channel("Spyer"), "spyee": r.channel("Spyee", required=False)}


# -- queues ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class QueueCallerJoin(ChannelEvent):
    queue: str
    position: int
    count: int

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(), "queue": r.text("Queue"), "position": r.int("Position"),
                "count": r.int("Count")}


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueCallerLeave(QueueCallerJoin):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueCallerAbandon(ChannelEvent):
    queue: str
    position: int
    original_position: int
    hold_time: int  # seconds

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(), "queue": r.text("Queue"), "position": r.int("Position"),
                "original_position": r.int("OriginalPosition"), "hold_time": r.int("HoldTime")}


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentEvent(ChannelEvent):
    """Agent* events: `channel` is the caller in the queue, `dest` the member's channel."""

    dest: ChannelInfo | None
    queue: str
    member_name: str
    interface: str

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return _agent_fields(r)


def _agent_fields(r: _Reader) -> _Fields:
    return {"channel": r.channel(), "dest": r.channel("Dest"), "queue": r.text("Queue"),
            "member_name": r.text("MemberName"), "interface": r.text("Interface")}


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentCalled(AgentEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConnect(AgentEvent):
    hold_time: int  # caller's wait in the queue, seconds
    ring_time: int  # how long the member's phone rang, seconds

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {**_agent_fields(r), "hold_time": r.int("HoldTime"), "ring_time": r.int("RingTime")}


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentComplete(AgentEvent):
    hold_time: int
    talk_time: int
    reason: str  # "caller" | "agent" | "transfer"

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {**_agent_fields(r), "hold_time": r.int("HoldTime"), "talk_time": r.int("TalkTime"),
                "reason": r.text("Reason")}


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRingNoAnswer(AgentEvent):
    ring_time: int  # as sent; documented as seconds, app_queue has sent milliseconds here

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {**_agent_fields(r), "ring_time": r.int("RingTime")}


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentDump(AgentEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueMemberEvent(Event):
    """Queue member state, shared by the QueueMember* events and the QueueMember list entry."""

    queue: str
    member_name: str
    interface: str
    state_interface: str
    membership: str  # "static" | "dynamic" | "realtime"
    penalty: int
    calls_taken: int
    last_call: int  # epoch seconds, 0 = never
    last_pause: int | None
    login_time: int | None
    in_call: bool
    status: int  # AST_DEVICE_* (1 not in use, 2 in use, 6 ringing ...)
    paused: bool
    paused_reason: str
    ringinuse: bool | None
    wrapuptime: int | None

    # QueueMember (the QueueStatus list entry) names the first two "Name" and
    # "Location" (Asterisk 12+); every QueueMember* event says MemberName/Interface.
    _NAME_KEYS: ClassVar[tuple[str, str]] = ("MemberName", "Name")
    _INTERFACE_KEYS: ClassVar[tuple[str, str]] = ("Interface", "Location")

    @classmethod
    def _plan_groups(cls) -> tuple[tuple[str, ...], ...]:
        """The headers _fields reads, in field order, each with its fallbacks."""
        return (("Queue",), cls._NAME_KEYS, cls._INTERFACE_KEYS, ("StateInterface",), ("Membership",),
                ("Penalty",), ("CallsTaken",), ("LastCall",), ("LastPause",), ("LoginTime",), ("InCall",),
                ("Status",), ("Paused",), ("PausedReason", "Reason"), ("Ringinuse",), ("Wrapuptime",))

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        # The most frequent event of a call center (every member of every queue, on
        # every device state change): a layout with all 16 headers and well-formed
        # values is read in one go; anything else takes the general path below.
        values = r.planned(cls)
        if values is not None:
            quick = _member_fields(values)
            if quick is not None:
                return quick
        return {
            "queue": r.text("Queue"),
            "member_name": r.text(*cls._NAME_KEYS),
            "interface": r.text(*cls._INTERFACE_KEYS),
            "state_interface": r.opt("StateInterface") or "",
            "membership": r.text("Membership"),
            "penalty": r.int("Penalty"),
            "calls_taken": r.int("CallsTaken"),
            "last_call": r.int("LastCall"),
            "last_pause": r.opt_int("LastPause"),
            "login_time": r.opt_int("LoginTime"),
            "in_call": bool(r.opt_flag("InCall")),
            "status": r.int("Status"),
            "paused": r.flag("Paused"),
            # Asterisk 13-16 QueueMemberPause carried the reason as "Reason".
            "paused_reason": r.opt("PausedReason", "Reason") or "",
            "ringinuse": r.opt_flag("Ringinuse"),
            "wrapuptime": r.opt_int("Wrapuptime"),
        }


def _member_fields(values: tuple[str, ...]) -> _Fields | None:
    """QueueMemberEvent fields from the 16 header values, or None unless every one is
    well-formed (the general path then decides and records what is missing)."""
    (queue, member_name, interface, state_interface, membership, penalty, calls_taken, last_call, last_pause,
     login_time, in_call, status, paused, paused_reason, ringinuse, wrapuptime) = values
    in_call_flag = _FLAGS.get(in_call)
    paused_flag = _FLAGS.get(paused)
    ringinuse_flag = _FLAGS.get(ringinuse)
    if in_call_flag is None or paused_flag is None or ringinuse_flag is None:
        return None
    try:  # int() skips the same surrounding whitespace as str.strip()
        return {
            "queue": queue, "member_name": member_name, "interface": interface,
            "state_interface": state_interface, "membership": membership, "penalty": int(penalty),
            "calls_taken": int(calls_taken), "last_call": int(last_call),
            "last_pause": int(last_pause) if last_pause else None,
            "login_time": int(login_time) if login_time else None,
            "in_call": in_call_flag, "status": int(status), "paused": paused_flag,
            "paused_reason": paused_reason, "ringinuse": ringinuse_flag,
            "wrapuptime": int(wrapuptime) if wrapuptime else None,
        }
    except ValueError:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueMemberStatus(QueueMemberEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueMemberAdded(QueueMemberEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueMemberRemoved(QueueMemberEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueMemberPause(QueueMemberEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueMemberPenalty(QueueMemberEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueMemberRinginuse(QueueMemberEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueMember(QueueMemberEvent):
    """A QueueStatus list entry."""

    _NAME_KEYS: ClassVar[tuple[str, str]] = ("Name", "MemberName")
    _INTERFACE_KEYS: ClassVar[tuple[str, str]] = ("Location", "Interface")


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueParams(Event):
    """A QueueStatus list entry: one queue's counters."""

    queue: str
    max: int
    strategy: str
    calls: int
    holdtime: int
    talk_time: int | None
    completed: int
    abandoned: int
    service_level: int
    service_level_perf: float | None
    service_level_perf2: float | None
    weight: int | None

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"queue": r.text("Queue"), "max": r.int("Max"), "strategy": r.opt("Strategy") or "",
                "calls": r.int("Calls"), "holdtime": r.int("Holdtime"), "talk_time": r.opt_int("TalkTime"),
                "completed": r.int("Completed"), "abandoned": r.int("Abandoned"),
                "service_level": r.int("ServiceLevel"), "service_level_perf": r.opt_float("ServicelevelPerf"),
                "service_level_perf2": r.opt_float("ServicelevelPerf2"), "weight": r.opt_int("Weight")}


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueEntry(ChannelEvent):
    """A QueueStatus list entry: one waiting caller.

    `channel` is built from the reduced block this event carries (Channel, Uniqueid,
    CallerID*, ConnectedLine*); fields it lacks, e.g. linkedid, are "".
    """

    queue: str
    position: int
    wait: int  # seconds
    priority: int | None

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(), "queue": r.text("Queue"), "position": r.int("Position"),
                "wait": r.int("Wait"), "priority": r.opt_int("Priority")}


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreShowChannel(ChannelEvent):
    """A CoreShowChannels list entry: a live channel, used to resync after a reconnect."""

    bridge_id: str
    application: str
    application_data: str
    duration: str  # "HH:MM:SS"

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"channel": r.channel(), "bridge_id": r.opt("BridgeId") or "",
                "application": r.text("Application"), "application_data": r.text("ApplicationData"),
                "duration": r.text("Duration")}


# -- originate, CDR ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class OriginateResponse(Event):
    """Result of an async Originate; `action_id` is the Originate's ActionID.

    Not a channel snapshot: `channel` is the channel *name* string, as in the AMI header.
    """

    response: str  # "Success" | "Failure"
    reason: int  # AST_CONTROL_* of the outbound leg: 4 answered, 5 busy, 8 congestion, 3 no answer ...
    channel: str
    context: str
    exten: str
    application: str
    data: str
    uniqueid: str
    caller_id_num: str
    caller_id_name: str

    @property
    def success(self) -> bool:
        return self.response.lower() == "success"

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        return {"response": r.text("Response"), "reason": r.int("Reason"), "channel": r.text("Channel"),
                "context": r.opt("Context") or "", "exten": r.opt("Exten") or "",
                "application": r.opt("Application") or "", "data": r.opt("Data") or "",
                "uniqueid": r.opt("Uniqueid") or "", "caller_id_num": r.opt("CallerIDNum") or "",
                "caller_id_name": r.opt("CallerIDName") or ""}


@dataclass(frozen=True, slots=True, kw_only=True)
class Cdr(Event):
    """cdr_manager record; extra fields configured in cdr_manager.conf stay in `raw`."""

    account_code: str
    source: str
    destination: str
    destination_context: str
    caller_id: str
    channel: str  # channel name (not a snapshot)
    destination_channel: str
    last_application: str
    last_data: str
    start_time: str
    answer_time: str
    end_time: str
    duration: int
    billable_seconds: int
    disposition: str
    ama_flags: str
    uniqueid: str
    user_field: str

    @classmethod
    def _fields(cls, r: _Reader) -> _Fields:
        def s(key: str) -> str:
            return r.opt(key) or ""

        return {"account_code": s("AccountCode"), "source": s("Source"), "destination": s("Destination"),
                "destination_context": s("DestinationContext"), "caller_id": s("CallerID"),
                "channel": r.text("Channel"), "destination_channel": s("DestinationChannel"),
                "last_application": s("LastApplication"), "last_data": s("LastData"),
                "start_time": s("StartTime"), "answer_time": s("AnswerTime"), "end_time": s("EndTime"),
                "duration": r.int("Duration"), "billable_seconds": r.int("BillableSeconds"),
                "disposition": s("Disposition"), "ama_flags": s("AMAFlags"), "uniqueid": r.text("UniqueID"),
                "user_field": s("UserField")}


# -- the table -------------------------------------------------------------------------
EVENT_TYPES: dict[str, type[Event]] = {
    "FullyBooted": FullyBooted,
    "Shutdown": Shutdown,
    "Reload": Reload,
    "Newchannel": Newchannel,
    "Newstate": Newstate,
    "NewCallerid": NewCallerid,
    "NewConnectedLine": NewConnectedLine,
    "Newexten": Newexten,
    "VarSet": VarSet,
    "Hangup": Hangup,
    "HangupRequest": HangupRequest,
    "SoftHangupRequest": SoftHangupRequest,
    "Hold": Hold,
    "Unhold": Unhold,
    "DTMFEnd": DTMFEnd,
    "MixMonitorStart": MixMonitorStart,
    "MixMonitorStop": MixMonitorStop,
    "UserEvent": UserEvent,
    "DialBegin": DialBegin,
    "DialEnd": DialEnd,
    "BridgeCreate": BridgeCreate,
    "BridgeDestroy": BridgeDestroy,
    "BridgeEnter": BridgeEnter,
    "BridgeLeave": BridgeLeave,
    "BlindTransfer": BlindTransfer,
    "AttendedTransfer": AttendedTransfer,
    "LocalBridge": LocalBridge,
    "ChanSpyStart": ChanSpyStart,
    "ChanSpyStop": ChanSpyStop,
    "QueueCallerJoin": QueueCallerJoin,
    "QueueCallerLeave": QueueCallerLeave,
    "QueueCallerAbandon": QueueCallerAbandon,
    "AgentCalled": AgentCalled,
    "AgentConnect": AgentConnect,
    "AgentComplete": AgentComplete,
    "AgentRingNoAnswer": AgentRingNoAnswer,
    "AgentDump": AgentDump,
    "QueueMemberStatus": QueueMemberStatus,
    "QueueMemberAdded": QueueMemberAdded,
    "QueueMemberRemoved": QueueMemberRemoved,
    "QueueMemberPause": QueueMemberPause,
    "QueueMemberPenalty": QueueMemberPenalty,
    "QueueMemberRinginuse": QueueMemberRinginuse,
    "QueueMember": QueueMember,
    "QueueParams": QueueParams,
    "QueueEntry": QueueEntry,
    "CoreShowChannel": CoreShowChannel,
    "OriginateResponse": OriginateResponse,
    "Cdr": Cdr,
}

# Event names are matched case-insensitively: Asterisk has respelled a few over the
# years (e.g. "CDR" in some docs, "Cdr" on the wire).
_BY_LOWER: dict[str, type[Event]] = {name.lower(): cls for name, cls in EVENT_TYPES.items()}


# -- construction ------------------------------------------------------------------------
# The generated __init__ of a frozen dataclass sets every field through
# object.__setattr__ (about 100 ns a field here, 2 us for a ChannelInfo); an event and
# its one or two ChannelInfos are built for every AMI event. These makers set the
# same slots through their descriptors instead, like __init__ without the frozen
# check, and are generated the way dataclasses generates __init__. Only for the
# classes in this module, whose instances they build completely (no defaults are
# left out, no __post_init__ exists).
def _slot_setters(cls: type) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for f in fields(cls):
        owner = next(k for k in cls.__mro__ if f.name in k.__dict__.get("__slots__", ()))
        out.append((f.name, owner.__dict__[f.name].__set__))
    return out


def _event_maker(cls: type[Event]) -> Any:
    """make(name, raw, missing, values) -> cls, `values` being what cls._fields returns."""
    setters = _slot_setters(cls)
    assert [name for name, _ in setters[:3]] == ["name", "raw", "missing"], cls
    assert all(f.default is MISSING for f in fields(cls)[3:]), cls
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_count": len(setters) - 3}
    lines = ["def make(name, raw, missing, values):",
             "    if len(values) != _count:",
             "        raise TypeError(f'{_cls.__name__} needs {_count} fields, got {sorted(values)}')",
             "    o = _new(_cls)"]
    for i, (field_name, setter) in enumerate(setters):
        namespace[f"_set{i}"] = setter
        value = field_name if i < 3 else f"values[{field_name!r}]"
        lines.append(f"    _set{i}(o, {value})")
    lines.append("    return o")
    exec("\n".join(lines), namespace)  # generated from our own field names only
    return namespace["make"]


def _positional_maker(cls: type) -> Any:
    """make(*fields in order) -> cls."""
    setters = _slot_setters(cls)
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    params = ", ".join(name for name, _ in setters)
    lines = [f"def make({params}):", "    o = _new(_cls)"]
    for i, (field_name, setter) in enumerate(setters):
        namespace[f"_set{i}"] = setter
        lines.append(f"    _set{i}(o, {field_name})")
    lines.append("    return o")
    exec("\n".join(lines), namespace)  # generated from our own field names only
    return namespace["make"]


_MAKERS: dict[type[Event], Any] = {cls: _event_maker(cls) for cls in EVENT_TYPES.values()}
_make_unknown = _event_maker(UnknownEvent)
_make_channel_info = _positional_maker(ChannelInfo)
_NO_FIELDS: _Fields = {}


def parse_event(msg: Message) -> Event:
    """Type an event message. Never raises for a parsed `Message`; see `Event.missing`."""
    headers = msg.headers
    if headers and headers[0][0] == "Event":
        name = headers[0][1]  # what msg.name returns, without the lookups
    else:
        name = msg.name
    cls = EVENT_TYPES.get(name) or _BY_LOWER.get(name.lower())
    if cls is None:
        unknown: Event = _make_unknown(name, msg, (), _NO_FIELDS)
        return unknown
    reader = _Reader(msg)
    values = cls._fields(reader)
    missing = tuple(reader.missing) if reader.missing else ()
    make = _MAKERS.get(cls)
    if make is None:  # a family added to EVENT_TYPES at run time
        return cls(name, msg, missing=missing, **values)
    event: Event = make(name, msg, missing, values)
    return event


# -- responses -------------------------------------------------------------------------
_SUCCESS_RESPONSES = frozenset({"success", "goodbye", "follows", "pong"})


@dataclass(frozen=True, slots=True)
class Response:
    """A reply to an action: Success, Error, Goodbye (Logoff) or Follows (Command, Asterisk <= 13)."""

    success: bool
    message: str
    action_id: str | None
    raw: Message

    @property
    def response(self) -> str:
        return self.raw.name

    @property
    def is_list(self) -> bool:
        """True when list events follow ("EventList: start")."""
        return (self.raw.get("EventList") or "").lower() == "start"

    @property
    def output(self) -> list[str]:
        """Command output lines: `Output:` headers (Asterisk 14+) or raw lines (older)."""
        lines = self.raw.get_all("Output")
        if lines:
            return lines
        return [value for key, value in self.raw.headers if key == "" and value != "--END COMMAND--"]


def parse_response(msg: Message) -> Response:
    """Type a response message; `success` is False only for Error (and anything unknown)."""
    return Response(
        success=msg.name.lower() in _SUCCESS_RESPONSES,
        message=msg.get("Message") or "",
        action_id=msg.action_id,
        raw=msg,
    )

