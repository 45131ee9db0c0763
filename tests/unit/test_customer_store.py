"""Customer lookups and cards on SQLite: match / several / unknown / invalid, and what a card holds."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from cti.customers.models import ContactHistory, Customer, PhoneNumber, Product, ServiceOrder
from cti.customers.store import MAX_CARDS, RECENT_CONTACTS, CustomerNotFound, CustomerStore, full_address
from cti.db import create_schema, make_engine, session_factory

CST = timezone(timedelta(hours=8))
# 2025-06-10 17:00 UTC is already 2025-06-11 in China: days are counted in the customer's zone.
NOW = datetime(2025, 6, 10, 17, 0, tzinfo=UTC)


@pytest.fixture
def store(sessions: sessionmaker[Session]) -> CustomerStore:
    return CustomerStore(sessions, clock=lambda: NOW)


def add_customer(sessions: sessionmaker[Session], no: str, phones: list[str], **fields: Any) -> int:
    with sessions.begin() as session:
        customer = Customer(customer_no=no, name=fields.pop("name", f"客户{no}"), **fields)
        customer.phones = [PhoneNumber(e164=p, raw=p, kind="mobile") for p in phones]
        session.add(customer)
        session.flush()
        return customer.id


@pytest.fixture
def zhang(sessions: sessionmaker[Session]) -> int:
    """A customer with two products, an install, a closed and an open repair."""
    with sessions.begin() as session:
        customer = Customer(customer_no="C1", name="张伟", vip=True, region="华北", province="北京市",
                            city="北京市", district="朝阳区", address="建国路88号1502室", postal_code="100022")
        customer.phones = [PhoneNumber(e164="+8613800138000", raw="138-0013-8000", kind="mobile"),
                           PhoneNumber(e164="+861065661234", raw="010-65661234", kind="landline")]
        aircon = Product(model="KFR-35GW 空调", serial="AC1", installed_on=date(2023, 5, 6), installer="李师傅")
        heater = Product(model="JSQ25 热水器", serial="WH1", installed_on=date(2021, 11, 3), installer="王师傅")
        customer.products = [aircon, heater]
        customer.orders = [
            ServiceOrder(kind="install", status="closed", opened_at=datetime(2023, 5, 6, 10, tzinfo=CST),
                         closed_at=datetime(2023, 5, 6, 11, tzinfo=CST), technician="李师傅", product=aircon),
            ServiceOrder(kind="repair", status="open", opened_at=datetime(2025, 6, 2, 8, 45, tzinfo=CST),
                         technician="赵强", fault_description="外机噪音大", product=aircon),
            ServiceOrder(kind="repair", status="closed", opened_at=datetime(2024, 7, 15, 9, tzinfo=CST),
                         closed_at=datetime(2024, 7, 16, 15, tzinfo=CST), technician="赵强",
                         fault_description="不制冷", product=aircon),
        ]
        session.add(customer)
        session.flush()
        return customer.id


# -- statuses -----------------------------------------------------------------------------
@pytest.mark.parametrize("number", ["13800138000", "+86 138 0013 8000", "008613800138000", "013800138000"])
def test_match_in_any_notation(store: CustomerStore, zhang: int, number: str) -> None:
    result = store.lookup(number)
    assert result.status == "match"
    assert result.number_e164 == "+8613800138000"
    assert result.total == 1
    assert [c.id for c in result.cards] == [zhang]


def test_landline_match(store: CustomerStore, zhang: int) -> None:
    assert store.lookup("(010) 6566 1234").cards[0].id == zhang


def test_several_customers_share_a_number(store: CustomerStore, sessions: sessionmaker[Session]) -> None:
    first = add_customer(sessions, "A", ["+8613700137000"], name="王磊")
    second = add_customer(sessions, "B", ["+8613700137000", "+8613600136000"], name="王芳")
    add_customer(sessions, "C", ["+8613600136001"])
    result = store.lookup("13700137000")
    assert result.status == "several"
    assert result.total == 2
    assert [c.id for c in result.cards] == [first, second]
    assert [c.name for c in result.cards] == ["王磊", "王芳"]
    assert store.lookup("13600136000").status == "match"


def test_unknown_number(store: CustomerStore, zhang: int) -> None:
    result = store.lookup("13900139000")
    assert (result.status, result.number_e164, result.cards, result.total) == ("unknown", "+8613900139000", (), 0)


@pytest.mark.parametrize("number", ["", "<unknown>", "anonymous", "12345", "13800138000;", "x" * 500])
def test_invalid_number_never_reaches_the_database(number: str) -> None:
    def no_db() -> Session:
        raise AssertionError("an invalid number must not cost a query")

    store = CustomerStore(no_db)  # type: ignore[arg-type]
    result = store.lookup(number)
    assert result.status == "invalid"
    assert result.number_e164 is None and result.cards == ()
    assert result.reason


def test_number_shared_by_many_is_capped(store: CustomerStore, sessions: sessionmaker[Session]) -> None:
    for n in range(MAX_CARDS + 5):
        add_customer(sessions, f"S{n}", ["+862112345678"])
    result = store.lookup("021-12345678")
    assert result.status == "several"
    assert len(result.cards) == MAX_CARDS
    assert result.total == MAX_CARDS + 5


def test_unknown_region_is_refused_at_start(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError, match="unknown phone region"):
        CustomerStore(sessions, "ZZ")


# -- the card -----------------------------------------------------------------------------
def test_card_holds_address_products_and_repairs(store: CustomerStore, zhang: int) -> None:
    card = store.lookup("13800138000").cards[0]
    assert card.customer_no == "C1" and card.name == "张伟" and card.vip is True and card.region == "华北"
    assert card.address == "北京市朝阳区建国路88号1502室"
    assert card.street == "建国路88号1502室"
    assert [(p.e164, p.kind) for p in card.phones] == [("+8613800138000", "mobile"), ("+861065661234", "landline")]
    # Oldest installation first, with the days counted in China (already 2025-06-11 there).
    assert [(p.model, p.installed_on, p.installer) for p in card.products] == [
        ("JSQ25 热水器", date(2021, 11, 3), "王师傅"), ("KFR-35GW 空调", date(2023, 5, 6), "李师傅")]
    assert card.products[1].days_since_install == (date(2025, 6, 11) - date(2023, 5, 6)).days
    # Every service order, newest first, with the appliance named.
    assert [(o.kind, o.status) for o in card.service_orders] == [
        ("repair", "open"), ("repair", "closed"), ("install", "closed")]
    assert [o.opened_at for o in card.service_orders] == sorted((o.opened_at for o in card.service_orders),
                                                                reverse=True)
    assert all(o.opened_at.tzinfo is not None for o in card.service_orders)
    assert card.service_orders[0].fault_description == "外机噪音大"
    assert card.service_orders[0].product_model == "KFR-35GW 空调"
    assert card.open_repair is True


def test_card_to_dict_is_json(store: CustomerStore, zhang: int) -> None:
    store.add_contact(zhang, "call", NOW, "1718000000.12", "询问维修进度")
    data = store.lookup("13800138000").to_dict()
    assert json.loads(json.dumps(data, ensure_ascii=False)) == data
    card = data["cards"][0]
    assert card["products"][0] == {"id": card["products"][0]["id"], "model": "JSQ25 热水器", "serial": "WH1",
                                   "installed_on": "2021-11-03", "installer": "王师傅",
                                   "days_since_install": (date(2025, 6, 11) - date(2021, 11, 3)).days}
    assert card["service_orders"][0]["opened_at"] == "2025-06-02T00:45:00+00:00"
    assert card["service_orders"][0]["closed_at"] is None
    assert card["recent_contacts"][0]["linkedid"] == "1718000000.12"
    assert set(card) >= {"id", "customer_no", "name", "vip", "region", "address", "phones", "products",
                         "service_orders", "open_repair", "recent_contacts"}


def test_no_open_repair(store: CustomerStore, sessions: sessionmaker[Session]) -> None:
    cid = add_customer(sessions, "X", ["+8613500135000"])
    with sessions.begin() as session:
        session.add(ServiceOrder(customer_id=cid, kind="install", status="open",
                                 opened_at=datetime(2025, 1, 1, tzinfo=UTC)))
        session.add(ServiceOrder(customer_id=cid, kind="repair", status="cancelled",
                                 opened_at=datetime(2025, 2, 1, tzinfo=UTC)))
    card = store.card(cid)
    assert card is not None and card.open_repair is False
    assert card.products == () and len(card.service_orders) == 2


def test_product_without_install_date(store: CustomerStore, sessions: sessionmaker[Session]) -> None:
    cid = add_customer(sessions, "X", [])
    with sessions.begin() as session:
        session.add(Product(customer_id=cid, model="燃气灶"))
    card = store.card(cid)
    assert card is not None
    assert card.products[0].installed_on is None and card.products[0].days_since_install is None


def test_card_by_id(store: CustomerStore, zhang: int) -> None:
    card = store.card(zhang)
    assert card is not None and card.customer_no == "C1"
    assert card == store.lookup("13800138000").cards[0]


@pytest.mark.parametrize("bad", [0, -1, 999, 2**31, 2**70, True])
def test_card_missing(store: CustomerStore, zhang: int, bad: int) -> None:
    assert store.card(bad) is None


def test_cards_are_frozen(store: CustomerStore, zhang: int) -> None:
    card = store.card(zhang)
    with pytest.raises(AttributeError):
        card.name = "x"  # type: ignore[misc,union-attr]


# -- contacts ------------------------------------------------------------------------------
def test_recent_contacts_newest_first_per_customer(store: CustomerStore, sessions: sessionmaker[Session]) -> None:
    a = add_customer(sessions, "A", ["+8613700137000"])
    b = add_customer(sessions, "B", ["+8613700137000"])
    base = datetime(2025, 1, 1, 9, tzinfo=CST)
    for n in range(RECENT_CONTACTS + 3):
        store.add_contact(a, "call", base + timedelta(days=n), f"L{n}", f"第{n}次来电")
    store.add_contact(b, "survey", base, None, "满意度 5 分")
    cards = store.lookup("13700137000").cards
    assert [c.summary for c in cards[0].recent_contacts] == [f"第{n}次来电" for n in range(7, 2, -1)]
    assert [c.kind for c in cards[1].recent_contacts] == ["survey"]
    assert cards[1].recent_contacts[0].at == base


def test_add_contact_checks(store: CustomerStore, zhang: int, sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError, match="kind"):
        store.add_contact(zhang, "fax", NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.add_contact(zhang, "call", datetime(2025, 1, 1))
    with pytest.raises(CustomerNotFound):
        store.add_contact(zhang + 100, "call", NOW)
    contact_id = store.add_contact(zhang, "note", NOW, summary="客户要求周末上门")
    with sessions() as session:
        row = session.get(ContactHistory, contact_id)
        assert row is not None and row.kind == "note" and row.linkedid is None and row.at == NOW


# -- speed by construction -------------------------------------------------------------------
def test_lookup_is_a_fixed_number_of_queries(store: CustomerStore, engine: Engine,
                                              sessions: sessionmaker[Session]) -> None:
    for n in range(3):
        cid = add_customer(sessions, f"K{n}", ["+8613700137000"])
        with sessions.begin() as session:
            for k in range(10):
                product = Product(customer_id=cid, model=f"M{k}", serial=f"{n}-{k}")
                session.add(product)
                session.add(ServiceOrder(customer_id=cid, kind="repair", status="closed", product=product,
                                         opened_at=datetime(2024, 1, 1 + k, tzinfo=UTC)))
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith(("BEGIN", "PRAGMA")):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        result = store.lookup("13700137000")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert result.status == "several" and all(len(c.products) == 10 for c in result.cards)
    # customers by number, phones, products, orders, contacts: no query per customer or product.
    assert len(statements) == 5, statements


def test_number_lookup_uses_the_index(engine: Engine) -> None:
    with engine.connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.execute(text(
            "EXPLAIN QUERY PLAN SELECT customer_id FROM customer_phones WHERE e164 = '+8613800138000'")))
    assert "ix_customer_phones_e164_customer" in plan
    assert "COVERING INDEX" in plan


def test_schema_indexes(engine: Engine) -> None:
    from sqlalchemy import inspect

    insp = inspect(engine)
    indexed = {table: {tuple(ix["column_names"]) for ix in insp.get_indexes(table)}
               for table in ("customer_phones", "customer_products", "service_orders", "contact_history")}
    assert ("e164", "customer_id") in indexed["customer_phones"]
    assert ("customer_id",) in indexed["customer_products"]
    assert ("customer_id", "opened_at") in indexed["service_orders"]
    assert ("customer_id", "at") in indexed["contact_history"]
    with engine.connect() as conn:
        assert conn.scalar(select(Customer.id)) is None


@pytest.mark.parametrize(("parts", "expected"), [
    (("广东省", "深圳市", "南山区", "科技园路1号"), "广东省深圳市南山区科技园路1号"),
    (("北京市", "北京市", "朝阳区", "建国路88号"), "北京市朝阳区建国路88号"),
    (("广东省", "深圳市", "南山区", "广东省深圳市南山区科技园路1号"), "广东省深圳市南山区科技园路1号"),
    (("", "", "", "科技园路1号"), "科技园路1号"),
    (("四川省", "成都市", "", ""), "四川省成都市"),
])
def test_full_address(parts: tuple[str, str, str, str], expected: str) -> None:
    assert full_address(*parts) == expected


# -- demo data ---------------------------------------------------------------------------------
def test_demo_data_has_the_documented_numbers(store: CustomerStore, sessions: sessionmaker[Session]) -> None:
    from cti.customers.demo import generate

    assert generate(sessions, 300, seed=7, now=NOW) == 300
    open_repair = store.lookup("13800138000")
    assert open_repair.status == "match"
    card = open_repair.cards[0]
    assert card.open_repair is True and len(card.products) == 2
    assert all(p.installed_on and p.installer for p in card.products)
    assert store.lookup("13900139000").cards[0].vip is True
    shared = store.lookup("13700137000")
    assert shared.status == "several" and shared.total == 2

    # A second run with another seed adds customers but never doubles the fixed ones.
    assert generate(sessions, 50, seed=8, now=NOW) == 50
    assert store.lookup("13800138000").status == "match"
    with sessions() as session:
        numbers = session.scalars(select(Customer.customer_no)).all()
    assert len(numbers) == len(set(numbers)) == 350


def test_demo_data_is_realistic_and_consistent(store: CustomerStore, sessions: sessionmaker[Session]) -> None:
    from cti.customers.demo import PLACES, generate
    from cti.customers.phone import normalize

    generate(sessions, 2000, seed=3, now=NOW)
    with sessions() as session:
        phones = session.execute(select(PhoneNumber.e164, PhoneNumber.raw, PhoneNumber.kind)).all()
        customers = session.scalars(select(Customer)).all()
        orders = session.scalars(select(ServiceOrder)).all()
    # Every generated number is valid and stored exactly as a caller ID would be normalised.
    for e164, raw, _kind in phones:
        assert normalize(raw) == e164
    assert {kind for _e, _r, kind in phones} == {"mobile", "landline"}
    # Landlines carry the area code of the customer's city.
    area_of = {(p.province, p.city): p.area for p in PLACES}
    by_id = {c.id: c for c in customers}
    with sessions() as session:
        for customer_id, e164 in session.execute(
                select(PhoneNumber.customer_id, PhoneNumber.e164).where(PhoneNumber.kind == "landline")).all():
            c = by_id[customer_id]
            if not c.customer_no.startswith("DEMO"):
                shared = session.scalar(select(func.count()).where(PhoneNumber.e164 == e164)) or 0
                if shared == 1:
                    assert e164.startswith("+86" + area_of[(c.province, c.city)])
    assert 0.01 < sum(c.vip for c in customers) / len(customers) < 0.15
    assert any(o.kind == "repair" and o.fault_description for o in orders)
    assert all(o.closed_at is None or o.closed_at >= o.opened_at for o in orders)
    assert all(o.opened_at <= NOW for o in orders)
    assert all((o.status == "open") == (o.closed_at is None) for o in orders)
    shared_numbers = [e for e, _r, _k in phones if sum(1 for x, _, _ in phones if x == e) > 1]
    assert shared_numbers  # some households share a landline


def test_demo_is_deterministic(engine: Engine) -> None:
    from cti.customers.demo import generate

    def snapshot() -> list[tuple[Any, ...]]:
        eng = make_engine("sqlite://")
        create_schema(eng)
        generate(session_factory(eng), 200, seed=5, now=NOW)
        with eng.connect() as conn:
            rows = [tuple(r) for r in conn.execute(text(
                "SELECT c.customer_no, c.name, c.address, p.e164 FROM customers c "
                "JOIN customer_phones p ON p.customer_id = c.id ORDER BY p.id"))]
        eng.dispose()
        return rows

    assert snapshot() == snapshot()


def test_deleting_a_customer_removes_everything(store: CustomerStore, zhang: int,
                                                sessions: sessionmaker[Session]) -> None:
    store.add_contact(zhang, "call", NOW)
    with sessions.begin() as session:
        session.delete(session.get(Customer, zhang))
    with sessions() as session:
        for table in (PhoneNumber, Product, ServiceOrder, ContactHistory):
            assert session.scalar(select(func.count()).select_from(table)) == 0
    assert store.lookup("13800138000").status == "unknown"


def test_contacts_written_while_another_writer_is_busy(tmp_path: Any) -> None:
    """Calls ending together add contacts at once: none may fail with "database is locked".

    A DEFERRED read transaction that turns into a write cannot wait for the lock (SQLite
    refuses the upgrade at once), so writes go through sessions that begin IMMEDIATE.
    """
    import threading

    from cti.db import read_session_factory

    eng = make_engine(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    create_schema(eng)
    writes = session_factory(eng)
    store = CustomerStore(read_session_factory(eng), write_sessions=writes, clock=lambda: NOW)
    customer = add_customer(writes, "C-1", ["13800138000"])
    errors: list[BaseException] = []

    def note(n: int) -> None:
        try:
            for i in range(20):
                store.add_contact(customer, "call", NOW, linkedid=f"{n}.{i}")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=note, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eng.dispose()
    assert errors == []
    with writes() as session:
        assert session.scalar(select(func.count()).select_from(ContactHistory)) == 120
