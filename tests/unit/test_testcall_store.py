"""Test-call results, the QA review form, schedules, and matching tracker events by tag."""

from __future__ import annotations

import asyncio

import pytest

from cti.db import create_schema, make_engine, session_factory
from cti.tracker import CallEvent
from ivr.testcall.runner import CallObserver, new_run_id
from ivr.testcall.store import ReviewError, TestCallStore, check_scores


@pytest.fixture
def store() -> TestCallStore:
    engine = make_engine("sqlite://")
    create_schema(engine)
    return TestCallStore(session_factory(engine))


def test_result_lifecycle_and_review(store: TestCallStore) -> None:
    store.start("tc_1", "repair", "number: '4000'", "api:qa")
    assert store.get("tc_1")["status"] == "running"  # type: ignore[index]
    store.finish("tc_1", {"passed": False, "failures": ["step 0: prompt welcome not heard"], "linkedid": "17.1",
                          "heard_audio": "/x/heard.wav"})
    row = store.get("tc_1")
    assert row is not None and row["status"] == "failed" and row["linkedid"] == "17.1"
    assert row["failures"] == ["step 0: prompt welcome not heard"] and row["heard_path"] == "/x/heard.wav"
    review = store.add_review("tc_1", "qa-anna", {"greeting": 5, "closing": 2}, "ok")
    assert review is not None and review["total"] == 7 and review["max_total"] == 10
    assert review["linkedid"] == "17.1"
    assert [r["reviewer"] for r in store.reviews("tc_1")] == ["qa-anna"]
    assert store.add_review("nope", "qa", {"greeting": 1}, "") is None
    assert [r["run_id"] for r in store.results()] == ["tc_1"]


@pytest.mark.parametrize("scores, problems", [
    ({}, 1), ([1, 2], 1), ({"greeting": 6}, 1), ({"greeting": True}, 1), ({"greeting": 2.5, "tone": 3}, 2),
])
def test_review_form_is_validated(scores: object, problems: int) -> None:
    with pytest.raises(ReviewError) as info:
        check_scores(scores)
    assert len(info.value.problems) == problems


def test_schedules(store: TestCallStore) -> None:
    view = store.add_schedule("hourly", "number: '4000'", 3600, "http://127.0.0.1:9/hook", "qa")
    assert [s.id for s in store.schedules(enabled_only=True)] == [view["id"]]
    store.schedule_ran(view["id"], "tc_2", "failed")
    assert store.schedules()[0].view()["last_status"] == "failed"
    assert store.disable_schedule(view["id"]) and store.schedules(enabled_only=True) == []
    assert not store.disable_schedule(999)


def _event(kind: str, linkedid: str, tag: str | None) -> CallEvent:
    return CallEvent(kind, linkedid, 1.0, {"linkedid": linkedid, "test_tag": tag})


async def test_observer_matches_a_tagged_call_and_its_untagged_first_events() -> None:
    observer = CallObserver()
    observer.feed(_event("call_started", "A", None))  # before the dialplan set the tag
    observer.feed(_event("call_started", "B", None))
    waiting = asyncio.ensure_future(observer.wait("tc_x", "agent_answered", 5))
    observer.feed(_event("ivr_decided", "A", "tc_x"))
    observer.feed(_event("agent_answered", "B", "tc_other"))
    assert not waiting.done()
    observer.feed(_event("agent_answered", "A", "tc_x"))
    found = await waiting
    assert found is not None and found.linkedid == "A"
    assert [e.kind for e in observer.events("tc_x")] == ["call_started", "ivr_decided", "agent_answered"]
    assert await observer.wait("tc_x", "call_ended", 0.05) is None


def test_run_ids_survive_the_dialplan_filter() -> None:
    run_id = new_run_id()
    assert run_id.replace("_", "").isalnum() and len(run_id) < 64
