"""Compile the hotline definition into the Asterisk config files it runs on.

The same output drives the sandbox and production: pjsip (transport, agent
endpoints, the carrier trunk), extensions (hotline entry, recording, FastAGI,
routing, failsafe), queues, manager (AMI user with event filters), modules
(a minimal explicit list), rtp, musiconhold, logger (with queue_log), cdr.
Every generated value goes through `escaping.escape`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from cti import channel_vars as cv
from dialplans.definition import HotlineDefinition
from dialplans.escaping import escape
from ivr.model import Flow, Transfer, Voicemail

HOTLINE_CONTEXT = "hotline"
ROUTE_CONTEXT = "hotline-route"
FAILSAFE_CONTEXT = "hotline-failsafe"
TRUNK_CONTEXT = "from-trunk"
PHONES_CONTEXT = "from-phones"
RECORDINGS_SUBDIR = "hotline"
SURVEY_CONTEXT = "survey-call"
AGENT_REC_CONTEXT = "hotline-rec-agent"
#: Set on an answering agent's channel: the base name of that agent's own leg (recordings.lifecycle).
AGENT_REC_VAR = f"{cv.RECORDING}_AGENT"

# AMI events the service consumes; everything else is filtered in Asterisk itself
# (an unfiltered AMI session costs Asterisk about 20% more CPU per call, measured on
# Asterisk 22.10: VarSet, TestEvent, Newexten and RTCP dominate the stream).
AMI_EVENTS = (
    "FullyBooted", "Shutdown", "Reload",
    "Newchannel", "Newstate", "NewCallerid", "NewConnectedLine", "Hangup",
    # Queued by the channel driver when that side hangs up (SIP BYE/CANCEL): who ended
    # the call, and a queue abandon (caller hung up) told from a queue timeout.
    "HangupRequest",
    "DialBegin", "DialEnd",
    "BridgeCreate", "BridgeDestroy", "BridgeEnter", "BridgeLeave",
    "BlindTransfer", "AttendedTransfer", "LocalBridge", "Hold", "Unhold",
    "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon",
    "AgentCalled", "AgentConnect", "AgentComplete", "AgentRingNoAnswer", "AgentDump",
    "QueueMemberStatus", "QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause",
    "OriginateResponse", "MixMonitorStart", "MixMonitorStop",
    "ChanSpyStart", "ChanSpyStop", "UserEvent", "Cdr",
)

# Explicit module list (autoload=no): boots in ~0.6 s instead of ~0.9 s and loads no
# module we did not choose. Non-obvious dependencies on Asterisk 22: chan_pjsip needs
# res_pjsip_pubsub, res_agi needs res_speech; keep res_timing_timerfd for MOH/queues.
MODULES = (
    "res_timing_timerfd.so",
    "res_sorcery_astdb.so", "res_sorcery_config.so", "res_sorcery_memory.so",
    "res_sorcery_memory_cache.so",
    "res_pjproject.so", "res_pjsip.so", "res_pjsip_session.so", "res_pjsip_pubsub.so",
    "res_pjsip_authenticator_digest.so", "res_pjsip_outbound_authenticator_digest.so",
    "res_pjsip_endpoint_identifier_user.so", "res_pjsip_endpoint_identifier_ip.so",
    "res_pjsip_registrar.so", "res_pjsip_caller_id.so", "res_pjsip_header_funcs.so",
    "res_pjsip_sdp_rtp.so", "res_pjsip_nat.so", "res_pjsip_rfc3326.so",
    "res_pjsip_dtmf_info.so", "res_pjsip_logger.so", "res_pjsip_acl.so",
    "res_pjsip_refer.so", "res_pjsip_diversion.so",
    "res_rtp_asterisk.so", "chan_pjsip.so",
    "codec_ulaw.so", "codec_alaw.so", "codec_a_mu.so", "codec_resample.so",
    "format_wav.so", "format_pcm.so", "format_sln.so", "format_gsm.so",
    "bridge_simple.so", "bridge_native_rtp.so", "bridge_softmix.so", "bridge_holding.so",
    "bridge_builtin_features.so",
    "pbx_config.so",
    "app_dial.so", "app_playback.so", "app_queue.so", "app_mixmonitor.so",
    "app_chanspy.so", "app_stack.so", "app_verbose.so", "app_userevent.so",
    "app_exec.so", "app_originate.so", "app_senddtmf.so", "app_read.so",
    "app_record.so", "app_echo.so", "app_transfer.so", "app_softhangup.so",
    "res_speech.so", "res_agi.so", "res_musiconhold.so",
    "func_callerid.so", "func_channel.so", "func_strings.so", "func_logic.so",
    "func_global.so", "func_cut.so", "func_math.so", "func_timeout.so",
    "func_db.so", "func_hangupcause.so", "func_uri.so", "func_shell.so",
    "cdr_csv.so", "cdr_manager.so",
    # Reports read CDRs from cdr_custom (our own column list, with linkedid and exact
    # epoch times); on Asterisk 22.10 cdr_custom is a front end of res_cdrel_custom.
    "res_cdrel_custom.so", "cdr_custom.so", "func_cdr.so",
)

#: The CDR file the reports import: {astlogdir}/cdr-custom/<CDR_CUSTOM_FILE>, one CSV row
#: per CDR, columns in this order (cti.reports.sources parses the same names; a unit test
#: keeps the two lists equal). Times are epoch seconds ("u"), durations fractional ("f").
CDR_CUSTOM_FILE = "hotline-cdr.csv"
CDR_CUSTOM_FIELDS = (
    ("linkedid", "linkedid"), ("uniqueid", "uniqueid"), ("sequence", "sequence"),
    ("channel", "channel"), ("dstchannel", "dstchannel"), ("src", "src"), ("dst", "dst"),
    ("dcontext", "dcontext"), ("clid", "clid"), ("lastapp", "lastapp"), ("lastdata", "lastdata"),
    ("start", "start,u"), ("answer", "answer,u"), ("end", "end,u"),
    ("duration", "duration,f"), ("billsec", "billsec,f"), ("disposition", "disposition"),
    ("userfield", "userfield"), ("accountcode", "accountcode"),
)


@dataclass(frozen=True, slots=True)
class AsteriskSettings:
    """Where Asterisk listens and where it finds things, as Asterisk sees them."""

    ami_secret: str
    agent_passwords: Mapping[str, str] = field(default_factory=dict)
    sip_bind: str = "127.0.0.1"
    sip_port: int = 5060
    ami_bind: str = "127.0.0.1"
    ami_port: int = 5038
    ami_username: str = "hotline"
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    rtp_start: int = 10000
    rtp_end: int = 10999
    sounds_dir: str = "/var/lib/hotline/sounds"
    moh_dir: str = "/var/lib/hotline/moh"
    recordings_dir: str = "/var/spool/asterisk/monitor"
    trunk_header_value: str = "carrier"
    #: Address put in SDP; None lets Asterisk choose (the sandbox pins 127.0.0.1).
    media_address: str | None = None
    #: asterisk.conf [directories] overrides (the sandbox isolates each instance).
    directories: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CompiledHotline:
    """Config file name -> text, plus the flow with prompt ids resolved to sounds."""

    files: Mapping[str, str]
    flow: Flow


def compile_hotline(defn: HotlineDefinition, settings: AsteriskSettings) -> CompiledHotline:
    """Pure: the same definition and settings always give byte-identical files."""
    sounds = {
        pid: f"{settings.sounds_dir}/{escape(defn.language, 'identifier')}/{escape(pid, 'identifier')}"
        for pid in sorted(defn.prompts)
    }
    files = {
        "asterisk.conf": _asterisk_conf(settings),
        "modules.conf": _modules_conf(),
        "logger.conf": _logger_conf(),
        "pjsip.conf": _pjsip_conf(defn, settings),
        "extensions.conf": _extensions_conf(defn, settings, sounds),
        "queues.conf": _queues_conf(defn, sounds),
        "manager.conf": _manager_conf(settings),
        "rtp.conf": _rtp_conf(settings),
        "musiconhold.conf": _moh_conf(settings, defn),
        "cdr.conf": _cdr_conf(),
        "cdr_custom.conf": _cdr_custom_conf(),
        "indications.conf": _indications_conf(),
        "cdr_manager.conf": _lines(HEADER, "[general]", "enabled = yes"),
        "features.conf": _lines(HEADER, "[general]", "transferdigittimeout = 3"),
        # Present but empty so Asterisk does not log an error for each at boot.
        **{name: _lines(HEADER) for name in ("cel.conf", "acl.conf", "udptl.conf", "pjproject.conf", "ccss.conf")},
    }
    localized = {
        lang: {pid: f"{settings.sounds_dir}/{escape(lang, 'identifier')}/{escape(pid, 'identifier')}"
               for pid, p in sorted(defn.prompts.items()) if lang in p.variants}
        for lang in defn.languages[1:]
    }
    return CompiledHotline(files=files, flow=replace(defn.flow, prompts=sounds, localized=localized))


def _lines(*parts: str) -> str:
    return "\n".join(parts) + "\n"


HEADER = "; Generated by the hotline service from the hotline definition. Do not edit."


def _asterisk_conf(s: AsteriskSettings) -> str:
    dirs = [f"{escape(k, 'identifier')} => {escape(v, 'value')}" for k, v in sorted(s.directories.items())]
    return _lines(
        HEADER,
        *(["[directories]", *dirs] if dirs else []),
        "[options]",
        "verbose = 3",
        "debug = 0",
        "documentation_language = en_US",
        "transmit_silence = yes",
        "hideconnect = yes",
    )


def _modules_conf() -> str:
    return _lines(HEADER, "[modules]", "autoload = no", *(f"load = {m}" for m in MODULES))


def _logger_conf() -> str:
    return _lines(
        HEADER,
        "[general]",
        "queue_log = yes",
        "queue_log_to_file = yes",
        "queue_log_name = queue_log",
        "dateformat = %F %T.%3q",
        "[logfiles]",
        "console = notice,warning,error",
        "messages.log = notice,warning,error,verbose",
    )


def _pjsip_conf(defn: HotlineDefinition, s: AsteriskSettings) -> str:
    out = [
        HEADER,
        "[global]",
        "type = global",
        "user_agent = hotline-asterisk",
        # Phones are identified by their SIP user first; anything else must carry the
        # carrier header to be accepted as a PSTN caller (the sandbox's trunk).
        "endpoint_identifier_order = username,header,ip",
        "",
        "[transport-udp]",
        "type = transport",
        "protocol = udp",
        f"bind = {escape(s.sip_bind, 'identifier')}:{int(s.sip_port)}",
        "",
        "[phone-defaults](!)",
        "type = endpoint",
        f"context = {PHONES_CONTEXT}",
        "disallow = all",
        "allow = ulaw,alaw",
        "direct_media = no",
        "dtmf_mode = rfc4733",
        "rtp_symmetric = yes",
        "force_rport = yes",
        "rewrite_contact = yes",
        "send_rpid = yes",
        *([f"media_address = {escape(s.media_address, 'identifier')}"] if s.media_address else []),
        # RTP on the media address, not 0.0.0.0: a wildcard bind makes Asterisk 22 look up
        # its own host name for every call (5 s stalls when it does not resolve).
        *(["bind_rtp_to_media_address = yes"] if s.media_address else []),
        "",
        "[aor-defaults](!)",
        "type = aor",
        "max_contacts = 1",
        "remove_existing = yes",
        "qualify_frequency = 0",
        "",
    ]
    for aid, agent in sorted(defn.agents.items()):
        ext = escape(aid, "identifier")
        password = s.agent_passwords.get(aid)
        if password is None:
            raise ValueError(f"no SIP password for agent {aid}")
        out += [
            f"[{ext}](phone-defaults)",
            f"auth = {ext}",
            f"aors = {ext}",
            f'callerid = "{escape(agent.name, "quoted")}" <{ext}>',
            "",
            f"[{ext}]",
            "type = auth",
            "auth_type = userpass",
            f"username = {ext}",
            f"password = {escape(password, 'value')}",
            "",
            f"[{ext}](aor-defaults)",
            "",
        ]
    out += [
        "[carrier]",
        "type = endpoint",
        f"context = {TRUNK_CONTEXT}",
        "disallow = all",
        "allow = ulaw,alaw",
        "direct_media = no",
        "dtmf_mode = rfc4733",
        "rtp_symmetric = yes",
        "force_rport = yes",
        *([f"media_address = {escape(s.media_address, 'identifier')}"] if s.media_address else []),
        # RTP on the media address, not 0.0.0.0: a wildcard bind makes Asterisk 22 look up
        # its own host name for every call (5 s stalls when it does not resolve).
        *(["bind_rtp_to_media_address = yes"] if s.media_address else []),
        "",
        "[carrier]",
        "type = identify",
        "endpoint = carrier",
        f"match_header = {cv.TRUNK_HEADER}: {escape(s.trunk_header_value, 'identifier')}",
        "",
    ]
    return _lines(*out)


def _extensions_conf(defn: HotlineDefinition, s: AsteriskSettings, sounds: Mapping[str, str]) -> str:
    rec_dir = f"{s.recordings_dir}/{RECORDINGS_SUBDIR}"
    agi_url = f"agi://{escape(s.agi_host, 'identifier')}:{int(s.agi_port)}/hotline"
    failsafe_sound = sounds[defn.failsafe_prompt]
    failsafe_queue = escape(defn.failsafe_queue, "identifier")
    out = [
        HEADER,
        "[general]",
        "static = yes",
        "writeprotect = yes",
        "clearglobalvars = yes",
        "",
        "[globals]",
        "",
        "[hotline-numbers]",
    ]
    for number in defn.numbers:
        n = escape(number, "identifier")
        out.append(f"exten => {n},1,Set(__{cv.DIALED}={n})")
        out.append(f" same => n,Goto({HOTLINE_CONTEXT},s,1)")
    out += [
        "",
        f"[{TRUNK_CONTEXT}]",
        "include => hotline-numbers",
        "exten => i,1,Hangup(1)",
        "",
        f"[{PHONES_CONTEXT}]",
        "include => hotline-numbers",
    ]
    for aid in sorted(defn.agents):
        ext = escape(aid, "identifier")
        out.append(f"exten => {ext},1,Dial(PJSIP/{ext},30,U({AGENT_REC_CONTEXT}))")
        out.append(" same => n,Hangup()")
    out += [
        "",
        f"[{HOTLINE_CONTEXT}]",
        "exten => s,1,NoOp(hotline call)",
        # The tag comes from an untrusted SIP header: keep only a safe charset. FILTER reads
        # an unescaped '-' as a range, so a literal '-' is written '\-' (Asterisk 22).
        f" same => n,Set(__{cv.TEST_TAG}=${{FILTER(A-Za-z0-9_.\\-,${{PJSIP_HEADER(read,{cv.TEST_HEADER})}})}})",
        " same => n,Answer()",
        # Linkedid + Uniqueid cannot collide and stay meaningful after transfers.
        f" same => n,Set(__{cv.RECORDING}={RECORDINGS_SUBDIR}/${{STRFTIME(${{EPOCH}},UTC,%Y/%m/%d)}}"
        f"/${{CHANNEL(linkedid)}}-${{UNIQUEID}})",
        f" same => n,MixMonitor({s.recordings_dir}/${{{cv.RECORDING}}}-mix.wav,"
        f"r({s.recordings_dir}/${{{cv.RECORDING}}}-rx.wav)t({s.recordings_dir}/${{{cv.RECORDING}}}-tx.wav))",
        f" same => n,AGI({agi_url})",
        # AGISTATUS is FAILURE when the service is unreachable: the caller still gets
        # an apology and the operator queue, never silence.
        f' same => n,GotoIf($["${{AGISTATUS}}" != "SUCCESS"]?{ROUTE_CONTEXT},failsafe,1)',
        f" same => n,Goto({ROUTE_CONTEXT},${{{cv.ACTION}}}-${{{cv.TARGET}}},1)",
        "",
        f"[{ROUTE_CONTEXT}]",
    ]
    for qid, q in sorted(defn.queues.items()):
        name = escape(qid, "identifier")
        out.append(f"exten => queue-{name},1,Queue({name},,,,{int(q.max_wait)},,{AGENT_REC_CONTEXT})")
        out.append(" same => n,Goto(failsafe-after-queue,1)")
    out += _ivr_exits(defn, s)
    out += [
        "exten => hangup-normal,1,Hangup(16)",
        f"exten => failsafe,1,Set(__{cv.ROUTE_REASON}=failsafe)",
        f" same => n,Playback({failsafe_sound})",
        f" same => n,Queue({failsafe_queue},,,,{int(defn.queues[defn.failsafe_queue].max_wait)},,{AGENT_REC_CONTEXT})",
        " same => n,Hangup(16)",
        # After a queue gives up (max wait, no agents) the caller hears an apology.
        f"exten => failsafe-after-queue,1,Playback({failsafe_sound})",
        " same => n,Hangup(16)",
        # Goto to an unknown route (bad HOTLINE_ACTION) lands here: failsafe, not silence.
        "exten => i,1,Goto(failsafe,1)",
        "",
        f"[{FAILSAFE_CONTEXT}]",
        f"exten => s,1,Goto({ROUTE_CONTEXT},failsafe,1)",
        f"exten => _X.,1,Goto({ROUTE_CONTEXT},failsafe,1)",
        "",
        *_agent_recording_context(s),
        *_survey_contexts(s),
        f"; recordings: {rec_dir}/YYYY/MM/DD/<linkedid>-<uniqueid>-{{mix,rx,tx}}.wav",
        ";   and <linkedid>-<uniqueid>-agent-<ext>-<agent uniqueid>.wav per answering agent",
    ]
    return _lines(*out)


def _agent_recording_context(s: AsteriskSettings) -> list[str]:
    """Pre-bridge gosub (Queue's gosub argument, Dial's U()) run on an answering agent's channel.

    Records the agent's own voice (MixMonitor ``r`` only, no mixed file) into a file named
    after the call's recording and the agent's channel, so it cannot collide and every agent
    of a transferred call gets one. Independent of the caller's ``tx`` leg, which Asterisk
    22.10 can stop filling after a blind transfer. Calls without HOTLINE_REC are not recorded.
    """
    return [
        f"[{AGENT_REC_CONTEXT}]",
        f'exten => s,1,GotoIf($["${{{cv.RECORDING}}}" = ""]?done)',
        f" same => n,Set({AGENT_REC_VAR}=${{{cv.RECORDING}}}-agent-${{CHANNEL(endpoint)}}-${{UNIQUEID}})",
        f" same => n,MixMonitor(,r({s.recordings_dir}/${{{AGENT_REC_VAR}}}.wav))",
        " same => n(done),Return()",
        "",
    ]


def _survey_contexts(s: AsteriskSettings) -> list[str]:
    """Outbound survey calls (ivr.survey): the answered customer runs the survey over FastAGI.

    `survey-sim` gives dialer load tests Local-channel "customers": `Local/<number>@survey-sim`
    answers, stays silent for 1 s and hangs up; the answered side waits in `s`.
    """
    agi = f"agi://{escape(s.agi_host, 'identifier')}:{int(s.agi_port)}/survey"
    return [
        f"[{SURVEY_CONTEXT}]",
        "exten => s,1,NoOp(survey call)",
        f" same => n,Set({cv.SURVEY_SOUNDS}={s.sounds_dir}/survey)",
        f" same => n,Set({cv.SURVEY_RECDIR}={s.recordings_dir})",
        f" same => n,AGI({agi})",
        " same => n,Hangup(16)",
        "",
        "[survey-sim]",
        "exten => _X.,1,Answer()",
        " same => n,Wait(1)",
        " same => n,Hangup(16)",
        "exten => s,1,Wait(30)",
        " same => n,Hangup(16)",
        "",
    ]


def _ivr_exits(defn: HotlineDefinition, s: AsteriskSettings) -> list[str]:
    """Route extensions for the IVR's voicemail and transfer nodes (queues are above).

    A message is recorded beside the call's MixMonitor legs (`<HOTLINE_REC>-message.wav`,
    so it is found with the call's recordings); Record() beeps, stops after 3 s of
    silence or `max_seconds`, and keeps the file when the caller hangs up (`k`).
    Only numbers named in the definition are dialable: an unknown target lands in `i`;
    a transfer nobody answers ends in the failsafe (apology + operator queue).
    """
    out: list[str] = []
    longest: dict[str, int] = {}
    numbers: dict[str, int] = {}  # number -> ring seconds (the longest of its transfer nodes)
    for node in defn.flow.nodes.values():
        if isinstance(node, Voicemail):
            longest[node.queue] = max(longest.get(node.queue, 0), node.max_seconds)
        elif isinstance(node, Transfer):
            numbers[node.number] = max(numbers.get(node.number, 0), node.timeout)
    for qid, seconds in sorted(longest.items()):
        name = escape(qid, "identifier")
        out.append(f"exten => voicemail-{name},1,Record({s.recordings_dir}/${{{cv.RECORDING}}}-message.wav,"
                   f"3,{int(seconds)},k)")
        out.append(" same => n,Hangup(16)")
    for number in sorted(numbers):
        n = escape(number, "identifier")
        # An agent extension rings the phone; any other number leaves through the carrier trunk.
        dial = f"PJSIP/{n}" if number in defn.agents else f"PJSIP/{n}@carrier"
        out.append(f"exten => transfer-{n},1,Dial({dial},{int(numbers[number])})")
        # Not reached (busy, no answer, trunk down): the operator queue, never a dead line.
        out.append(' same => n,GotoIf($["${DIALSTATUS}" = "ANSWER"]?hangup-normal,1:failsafe,1)')
    return out


def _queues_conf(defn: HotlineDefinition, sounds: Mapping[str, str]) -> str:
    out = [
        HEADER,
        "[general]",
        "persistentmembers = no",
        "autofill = yes",
        "monitor-type = MixMonitor",
        "shared_lastcall = yes",
        "log_membername_as_agent = yes",
        "",
    ]
    for qid, q in sorted(defn.queues.items()):
        out += [
            f"[{escape(qid, 'identifier')}]",
            f"strategy = {escape(q.strategy, 'identifier')}",
            f"timeout = {int(q.ring_timeout)}",
            f"retry = {int(q.retry)}",
            f"wrapuptime = {int(q.wrapup)}",
            "ringinuse = no",
            "joinempty = yes",
            "leavewhenempty = no",
            f"announce-frequency = {int(q.announce_frequency)}",
            f"announce-position = {'yes' if q.announce_position else 'no'}",
            f"announce-holdtime = {'yes' if q.announce_holdtime else 'no'}",
            *([f"periodic-announce = {sounds[q.periodic_announce]}"] if q.periodic_announce else []),
            f"periodic-announce-frequency = {int(q.periodic_announce_frequency)}",
            "setinterfacevar = yes",
            "setqueuevar = yes",
            "setqueueentryvar = yes",
            "reportholdtime = no",
            f"musicclass = {escape(q.music_on_hold, 'identifier')}",
        ]
        for m in q.members:
            ext = escape(m, "identifier")
            # member => interface,penalty,membername,state_interface
            out.append(f"member => PJSIP/{ext},0,{ext},PJSIP/{ext}")
        out.append("")
    return _lines(*out)


def _manager_conf(s: AsteriskSettings) -> str:
    out = [
        HEADER,
        "[general]",
        "enabled = yes",
        "webenabled = no",
        f"bindaddr = {escape(s.ami_bind, 'identifier')}",
        f"port = {int(s.ami_port)}",
        "displayconnects = no",
        "timestampevents = yes",
        "",
        f"[{escape(s.ami_username, 'identifier')}]",
        f"secret = {escape(s.ami_secret, 'value')}",
        "deny = 0.0.0.0/0.0.0.0",
        "permit = 127.0.0.1/255.255.255.255",
        "read = system,call,agent,user,dtmf,reporting,cdr,dialplan,originate",
        "write = system,call,agent,user,originate,reporting",
        "writetimeout = 5000",
    ]
    for name in AMI_EVENTS:
        out.append(f"eventfilter(action(include),name({name})) =")
    # Only our own channel variables, not the dialplan's internal ones. Inherited
    # variables (Set(__NAME=...)) are reported with their underscores (Asterisk 22).
    out.append(f"eventfilter(action(include),name(VarSet),header(Variable),method(regex)) = ^_{{0,2}}{cv.PREFIX}")
    return _lines(*out)


def _rtp_conf(s: AsteriskSettings) -> str:
    return _lines(HEADER, "[general]", f"rtpstart = {int(s.rtp_start)}", f"rtpend = {int(s.rtp_end)}")


def _moh_conf(s: AsteriskSettings, defn: HotlineDefinition) -> str:
    # An absolute directory: a relative one resolves under /usr/share/asterisk, which
    # has no moh folder in Debian, and MOH would then be silently disabled.
    out = [HEADER]
    for name, folder in sorted(defn.music_on_hold.items(), key=lambda kv: (kv[0] != "default", kv[0])):
        directory = f"{s.moh_dir}/{escape(folder, 'identifier')}" if folder else s.moh_dir
        out += [f"[{escape(name, 'identifier')}]", "mode = files", f"directory = {directory}", "sort = alpha"]
    return _lines(*out)


def _cdr_conf() -> str:
    return _lines(
        HEADER, "[general]", "enable = yes", "unanswered = yes", "congestion = yes",
        "[csv]", "usegmtime = yes", "loguniqueid = yes", "loguserfield = yes", "accountlogs = no",
    )


def _cdr_custom_conf() -> str:
    columns = ",".join(f"${{CSV_QUOTE(${{CDR({spec})}})}}" for _name, spec in CDR_CUSTOM_FIELDS)
    return _lines(HEADER, "[mappings]", f"{CDR_CUSTOM_FILE} => {columns}")


def _indications_conf() -> str:
    return _lines(
        HEADER, "[general]", "country = cn",
        "[cn]", "description = China",
        "ringcadence = 1000,4000",
        "dial = 450", "busy = 450/350,0/350", "ring = 450/1000,0/4000",
        "congestion = 450/700,0/700", "callwaiting = 450/400,0/4000",
        "dialrecall = 450", "record = 950/400,0/10000",
        "info = 450/100,0/100,450/100,0/100,450/100,0/100,450/400,0/400",
    )
