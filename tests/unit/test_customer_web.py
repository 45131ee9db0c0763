"""Customer HTTP endpoints through aiohttp's test client, on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, func, select

from cti.customers import web as customers_web
from cti.customers.models import Customer
from cti.customers.store import CustomerStore
from cti.customers.web import CUSTOMER_STORE, add_routes
from cti.db import create_schema, default_sqlite_url, make_engine, session_factory

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "customers" / "sample.csv"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(default_sqlite_url(tmp_path))
    create_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: Engine) -> CustomerStore:
    return CustomerStore(session_factory(engine))


@pytest.fixture
async def client(store: CustomerStore) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app[CUSTOMER_STORE] = store
    add_routes(app)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def customer_count(store: CustomerStore) -> int:
    with store.sessions() as session:
        return session.scalar(select(func.count()).select_from(Customer)) or 0


async def post_csv(client: TestClient[web.Request, web.Application], body: bytes | str,
                   content_type: str = "text/csv; charset=utf-8") -> Any:
    data = body.encode() if isinstance(body, str) else body
    return await client.post("/customers/import", data=data, headers={"Content-Type": content_type})


def assert_error(data: dict[str, Any], status: int, error_id: str) -> None:
    assert set(data) == {"status", "error_id", "message", "details"}
    assert data["status"] == status and data["error_id"] == error_id and data["message"]


async def test_import_then_lookup(client: TestClient[web.Request, web.Application]) -> None:
    resp = await post_csv(client, SAMPLE.read_bytes())
    assert resp.status == 200
    assert (await resp.json())["created"] == 6

    resp = await client.get("/customers/lookup", params={"number": "+86 138 0013 8000"})
    assert resp.status == 200
    raw = await resp.text()
    assert "张伟" in raw  # readable UTF-8, not \u escapes
    data = await resp.json()
    assert data["status"] == "match" and data["number_e164"] == "+8613800138000"
    card = data["cards"][0]
    assert card["open_repair"] is True
    assert [p["installed_on"] for p in card["products"]] == ["2021-11-03", "2023-05-06"]
    assert [o["kind"] for o in card["service_orders"]] == ["repair", "repair", "install"]

    resp = await client.get(f"/customers/{card['id']}")
    assert resp.status == 200
    assert await resp.json() == card


async def test_several_and_unknown(client: TestClient[web.Request, web.Application]) -> None:
    await post_csv(client, SAMPLE.read_bytes())
    data = await (await client.get("/customers/lookup?number=13700137000")).json()
    assert data["status"] == "several" and len(data["cards"]) == 2 and data["total"] == 2
    resp = await client.get("/customers/lookup?number=13500135000")
    assert resp.status == 200
    assert await resp.json() == {"status": "unknown", "number_e164": "+8613500135000", "total": 0,
                                 "reason": None, "cards": []}


@pytest.mark.parametrize("number", ["anonymous", "<unknown>", "12345", "1;DROP TABLE customers", "9" * 300])
async def test_invalid_number_is_400(client: TestClient[web.Request, web.Application], number: str) -> None:
    resp = await client.get("/customers/lookup", params={"number": number})
    assert resp.status == 400
    data = await resp.json()
    assert_error(data, 400, "invalid-phone-number")
    assert data["details"]["number"] == number[:64]


@pytest.mark.parametrize("query", ["", "?number=", "?number=%20%20"])
async def test_missing_number_is_400(client: TestClient[web.Request, web.Application], query: str) -> None:
    resp = await client.get(f"/customers/lookup{query}")
    assert resp.status == 400
    assert_error(await resp.json(), 400, "missing-number")


@pytest.mark.parametrize("customer_id", ["999", "0", "abc", "99999999999999999999", "-1"])
async def test_unknown_customer_is_404(client: TestClient[web.Request, web.Application], customer_id: str) -> None:
    resp = await client.get(f"/customers/{customer_id}")
    assert resp.status == 404
    assert_error(await resp.json(), 404, "customer-not-found")


async def test_bad_import_is_400_with_every_row(client: TestClient[web.Request, web.Application],
                                                store: CustomerStore) -> None:
    await post_csv(client, "customer_no,name\nKEEP,保留\n")
    body = "customer_no,name,phones,vip\nA1,甲,13800138000,是\nA2,,13800138000,\nA3,丙,abc,maybe\n"
    resp = await post_csv(client, body)
    assert resp.status == 400
    data = await resp.json()
    assert_error(data, 400, "invalid-import")
    assert data["details"]["error_count"] == 3
    assert [(e["row"], e["column"]) for e in data["details"]["errors"]] == [
        (3, "name"), (4, "phones"), (4, "vip")]
    assert customer_count(store) == 1


async def test_import_accepts_bom_and_gbk(client: TestClient[web.Request, web.Application]) -> None:
    resp = await post_csv(client, "\ufeffcustomer_no,name\nU1,张三\n".encode())
    assert (await resp.json())["created"] == 1
    resp = await post_csv(client, "customer_no,name\nU2,李四\n".encode("gb18030"), "text/csv; charset=gbk")
    assert (await resp.json())["created"] == 1


async def test_import_needs_csv(client: TestClient[web.Request, web.Application]) -> None:
    resp = await post_csv(client, '{"customer_no": 1}', "application/json")
    assert resp.status == 415
    assert_error(await resp.json(), 415, "unsupported-media-type")


async def test_import_too_large(client: TestClient[web.Request, web.Application], store: CustomerStore,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(customers_web, "MAX_IMPORT_BYTES", 100)
    body = "customer_no,name\n" + "".join(f"L{n},名字{n}\n" for n in range(50))

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the size is checked while reading
        data = body.encode()
        for start in range(0, len(data), 40):
            yield data[start:start + 40]

    for payload in (body.encode(), chunks()):
        resp = await client.post("/customers/import", data=payload, headers={"Content-Type": "text/csv"})
        assert resp.status == 413
        assert_error(await resp.json(), 413, "import-too-large")
    assert customer_count(store) == 0


async def test_empty_import_is_400(client: TestClient[web.Request, web.Application]) -> None:
    resp = await post_csv(client, b"")
    assert resp.status == 400
    assert (await resp.json())["details"]["errors"][0]["row"] == 1
