"""The shared do-not-call list (cti.suppression) in a real SQLite database, and the
Originator refusing customer-facing calls to listed numbers (scripted AMI peer)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.orm import Session, sessionmaker

from cti.ami.client import AMIClient
from cti.ami.protocol import Message
from cti.db import create_schema, make_engine, session_factory
from cti.originate import InvalidOriginateRequest, OriginateRequest, Originator
from cti.suppression import InvalidSuppressionNumber, SuppressionList
from tests.support.fake_ami import FakeAMI, FakeSession


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'dnc.sqlite3'}")
    create_schema(engine)
    assert "outbound_suppression" in inspect(engine).get_table_names()  # the name the survey package used
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def dnc(sessions: sessionmaker[Session]) -> SuppressionList:
    return SuppressionList(sessions, "CN")


def test_one_entry_per_number_however_it_is_written(dnc: SuppressionList) -> None:
    at = datetime(2026, 9, 29, 2, 0, tzinfo=UTC)
    assert dnc.add("138 0013 8000", "asked on the phone", now=at) == "+8613800138000"
    assert dnc.add("+86 138-0013-8000", "second request") == "+8613800138000"  # idempotent
    for written in ("13800138000", "013800138000", "008613800138000", "+8613800138000"):
        assert dnc.contains(written), written
    assert not dnc.contains("13900139000")
    assert dnc.entries() == [{"number": "+8613800138000", "reason": "asked on the phone",
                              "added_at": at.isoformat()}]
    assert dnc.remove("013800138000") is True
    assert dnc.remove("13800138000") is False
    assert not dnc.contains("13800138000") and dnc.entries() == []


def test_bad_input_is_refused_and_writes_nothing(dnc: SuppressionList) -> None:
    for bad in ("", "abc", "12", "138001380001234567"):
        with pytest.raises(InvalidSuppressionNumber, match="not a phone number"):
            dnc.add(bad)
        with pytest.raises(InvalidSuppressionNumber):
            dnc.contains(bad)  # an unreadable number is never reported as "may call"
    with pytest.raises(InvalidSuppressionNumber, match="reason"):
        dnc.add("13800138000", "x" * 1001)
    assert dnc.entries() == []


def test_the_list_is_shared_with_the_survey_store(sessions: sessionmaker[Session]) -> None:
    from ivr.survey.rules import ManualClock
    from ivr.survey.store import SurveyError, SurveyStore

    store = SurveyStore(sessions, ManualClock(datetime(2026, 9, 29, 2, 0, tzinfo=UTC)))
    store.suppress("13700137000", "survey opt-out")
    assert SuppressionList(sessions).contains("+8613700137000")
    SuppressionList(sessions).add("13600136000", "complaint")
    assert store.is_suppressed("13600136000")
    with pytest.raises(SurveyError, match="not a phone number"):
        store.suppress("nope")


# -- the Originator enforces it ---------------------------------------------------------
def _answer(session: FakeSession, action: Message) -> None:
    session.respond(action, Message="Originate successfully queued")
    session.event("OriginateResponse", ActionID=action.action_id or "", Response="Success",
                  Channel=action.get("Channel") or "", Context="", Exten="", Application="Wait", Data="1",
                  Reason="4", Uniqueid=action.get("ChannelId") or "", CallerIDNum="", CallerIDName="")


async def test_customer_facing_originate_to_a_suppressed_number_sends_nothing(
    server: FakeAMI, ami: AMIClient, dnc: SuppressionList,
) -> None:
    async def answer(session: FakeSession, action: Message) -> None:
        _answer(session, action)

    server.handlers["Originate"] = answer
    dnc.add("13800138000", "do not call")
    async with Originator(ami, suppression=dnc) as originator:
        refused = await originator.originate(
            OriginateRequest("PJSIP/carrier/sip:13800138000@127.0.0.1", application="Wait", data="1",
                             customer_number="013800138000"), channel_id="survey-1-1")
        allowed = await originator.originate(
            OriginateRequest("PJSIP/carrier/sip:13900139000@127.0.0.1", application="Wait", data="1",
                             customer_number="13900139000"))
        internal = await originator.originate(  # not customer-facing: the list does not apply
            OriginateRequest("PJSIP/13800138000", application="Wait", data="1"))
        with pytest.raises(InvalidOriginateRequest, match="customer_number"):
            await originator.originate(OriginateRequest("PJSIP/1", application="Wait", data="1",
                                                        customer_number="not a number"))
    assert refused.outcome == "suppressed" and not refused.success and not refused.must_reconcile
    assert refused.uniqueid == "survey-1-1" and "do-not-call" in refused.message
    assert allowed.outcome == "answered" and internal.outcome == "answered"
    sent = server.all_actions("Originate")
    assert [a.get("Channel") for a in sent] == ["PJSIP/carrier/sip:13900139000@127.0.0.1", "PJSIP/13800138000"]
    assert originator.sent == 2 and originator.outcomes["suppressed"] == 1


async def test_without_a_list_customer_numbers_are_only_validated(server: FakeAMI, ami: AMIClient) -> None:
    async def answer(session: FakeSession, action: Message) -> None:
        _answer(session, action)

    server.handlers["Originate"] = answer
    with pytest.raises(InvalidOriginateRequest, match="customer_number"):
        OriginateRequest("PJSIP/1", application="Wait", data="1", customer_number="1\r\nAction: Hangup")
    async with Originator(ami) as originator:
        result = await originator.originate(OriginateRequest("PJSIP/1", application="Wait", data="1",
                                                             customer_number="13800138000"))
    assert result.outcome == "answered" and len(server.all_actions("Originate")) == 1
