"""Survey HTTP endpoints (aiohttp test client, real SQLite file): bad input gets one error
shape and writes nothing; CSV triggers and exports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.orm import Session, sessionmaker

from cti.db import create_schema, make_engine, session_factory
from ivr.survey import models
from ivr.survey.rules import ManualClock
from ivr.survey.store import SurveyStore
from ivr.survey.web import add_routes

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    _ = models.SurveyJob
    engine = make_engine(f"sqlite:///{tmp_path / 'web.sqlite3'}")
    create_schema(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def store(sessions: sessionmaker[Session]) -> SurveyStore:
    return SurveyStore(sessions, ManualClock(datetime(2026, 9, 29, 2, 0, tzinfo=UTC)))


@pytest.fixture
async def client(store: SurveyStore) -> AsyncIterator[Client]:
    app = web.Application()
    add_routes(app, store)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def error_of(resp: Any, status: int, error_id: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    data: dict[str, Any] = await resp.json()
    assert set(data) == {"status", "error_id", "message", "details"} and data["error_id"] == error_id
    return data


async def test_campaign_creation_and_bad_input(client: Client, store: SurveyStore) -> None:
    resp = await client.post("/surveys/campaigns", json={"name": "c1", "trigger": "order_closed",
                                                         "rules": {"max_attempts": 2}})
    assert resp.status == 201 and (await resp.json())["rules"]["max_attempts"] == 2
    await error_of(await client.post("/surveys/campaigns", json={"name": "c1"}), 400, "invalid-survey")  # exists
    data = await error_of(await client.post("/surveys/campaigns", json={"name": "c2", "rules": {"window_end": "8"}}),
                          400, "invalid-survey")
    assert "window_end" in data["message"]
    await error_of(await client.post("/surveys/campaigns", data=b"{not json", headers={
        "Content-Type": "application/json"}), 400, "invalid-json")
    await error_of(await client.get("/surveys/campaigns/nope"), 404, "campaign-not-found")
    assert [c["name"] for c in store.campaigns()] == ["c1"]


async def test_orders_json_and_csv_then_results_csv(client: Client, store: SurveyStore) -> None:
    store.create_campaign("c1", "order_closed")
    resp = await client.post("/surveys/campaigns/c1/orders", json={"order": "SO-1", "number": "13800138000",
                                                                   "technician": "张师傅"})
    assert resp.status == 201 and (await resp.json())["status"] == "queued"
    bad = "order,number\nSO-2,12\nSO-3,13800138001\n"
    data = await error_of(await client.post("/surveys/campaigns/c1/orders", data=bad.encode(),
                                            headers={"Content-Type": "text/csv"}), 400, "invalid-survey")
    assert "row 2, column number" in data["message"]
    assert len(store.jobs("c1")) == 1  # the bad file wrote nothing
    good = "order,number,technician\nSO-2,13800138002,李师傅\nSO-3,13800138000,王师傅\n"
    resp = await client.post("/surveys/campaigns/c1/orders", data=good.encode(), headers={"Content-Type": "text/csv"})
    assert await resp.json() == {"rows": 2, "queued": 1, "recently_surveyed": 1}
    ticket = store.claim_next(int(store.campaign("c1")["id"]))
    assert ticket is not None
    ctx = store.survey_started(ticket.attempt_id)
    store.save_answer(ctx, "overall", "2", score=2, low_score=True)
    resp = await client.get("/surveys/campaigns/c1/results?format=csv")
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = (await resp.text()).splitlines()
    assert rows[1].split(",")[1:4] == ["+8613800138000", "SO-1", "张师傅"]
    followups = (await (await client.get("/surveys/followups")).json())["followups"]
    assert followups[0]["service_order"] == "SO-1" and "low score" in followups[0]["reason"]
    status = await (await client.get("/surveys/campaigns/c1")).json()
    assert status["jobs"] == {"pending": 1, "dialing": 1}


async def test_suppression_add_and_remove(client: Client, store: SurveyStore) -> None:
    resp = await client.post("/surveys/suppression", json={"number": "+86 139 0013 9000", "reason": "asked"})
    assert resp.status == 201 and (await resp.json())["number"] == "+8613900139000"
    assert store.is_suppressed("13900139000")
    await error_of(await client.post("/surveys/suppression", json={"number": "call me"}), 400, "invalid-survey")
    await client.post("/surveys/suppression", json={"number": "010-6566 1234"})
    listed = (await (await client.get("/surveys/suppression")).json())["suppressed"]
    assert [(e["number"], e["reason"]) for e in listed] == [("+861065661234", ""), ("+8613900139000", "asked")]
    assert all(e["added_at"].endswith("+00:00") for e in listed)
    resp = await client.delete("/surveys/suppression/13900139000")
    assert (await resp.json()) == {"removed": True} and not store.is_suppressed("13900139000")


async def test_campaign_rules_changed_in_part_and_bad_changes_refused(client: Client, store: SurveyStore) -> None:
    store.create_campaign("c1", "order_closed", rules={"max_concurrent": 1, "max_attempts": 2})
    resp = await client.patch("/surveys/campaigns/c1", json={"rules": {"max_concurrent": 4}})
    assert resp.status == 200, await resp.text()
    rules = (await resp.json())["rules"]
    assert (rules["max_concurrent"], rules["max_attempts"]) == (4, 2)
    before = store.campaign("c1")["rules_json"]
    for body, status, error_id, words in (
        ({"rules": {"max_concurrent": 0}}, 400, "invalid-survey", "max_concurrent"),
        ({"rules": {"colour": "red"}}, 400, "invalid-survey", "colour"),
        ({"rules": {}}, 400, "invalid-survey", "at least one"),
        ({"rules": [1]}, 400, "invalid-survey", "object"),
        ({"rules": {"max_concurrent": "4"}}, 400, "invalid-survey", "rules"),
        ({"rules": {"weekdays": 5}}, 400, "invalid-survey", "rules"),
        ({"rules": {"retry_delays": "soon"}}, 400, "invalid-survey", "rules"),
    ):
        data = await error_of(await client.patch("/surveys/campaigns/c1", json=body), status, error_id)
        assert words in data["message"], data
    await error_of(await client.patch("/surveys/campaigns/c1", data=b"{max_concurrent",
                                      headers={"Content-Type": "application/json"}), 400, "invalid-json")
    assert store.campaign("c1")["rules_json"] == before
    await error_of(await client.patch("/surveys/campaigns/nope", json={"rules": {"max_concurrent": 2}}),
                   404, "campaign-not-found")
