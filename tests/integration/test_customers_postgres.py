"""Customer store, import and demo data on a real PostgreSQL server (tests/support/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from cti.customers.demo import generate
from cti.customers.importer import CustomerImportError, import_csv
from cti.customers.models import ContactHistory, Customer, PhoneNumber, Product, ServiceOrder
from cti.customers.store import CustomerStore
from cti.db import Base, create_schema, make_engine, session_factory
from tests.support.postgres import postgres_server
from tests.unit.test_customer_import import BAD, SAMPLE

pytestmark = pytest.mark.postgres

NOW = datetime(2025, 6, 10, 17, 0, tzinfo=UTC)
TABLES = (Customer, PhoneNumber, Product, ServiceOrder, ContactHistory)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with postgres_server() as url:
        eng = make_engine(url)
        create_schema(eng)
        try:
            yield eng
        finally:
            Base.metadata.drop_all(eng)
            eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE customers, customer_phones, customer_products, service_orders, "
                             "contact_history RESTART IDENTITY CASCADE")
    yield session_factory(engine)


@pytest.fixture
def store(sessions: sessionmaker[Session]) -> CustomerStore:
    return CustomerStore(sessions, clock=lambda: NOW)


def counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        return {t.__tablename__: session.scalar(select(func.count()).select_from(t)) or 0 for t in TABLES}


def test_import_and_lookups(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    report = import_csv(SAMPLE, sessions)
    assert (report.created, report.phones, report.products, report.orders) == (6, 9, 7, 5)

    result = store.lookup("013800138000")
    assert result.status == "match" and result.number_e164 == "+8613800138000"
    card = result.cards[0]
    assert card.name == "张伟" and card.address == "北京市朝阳区建国路88号SOHO现代城3号楼1502室"
    assert [(p.serial, p.installed_on) for p in card.products] == [
        ("WH2021110302", date(2021, 11, 3)), ("AC2023050601", date(2023, 5, 6))]
    assert card.products[1].days_since_install == (date(2025, 6, 11) - date(2023, 5, 6)).days
    assert [(o.kind, o.status) for o in card.service_orders] == [
        ("repair", "open"), ("repair", "closed"), ("install", "closed")]
    assert card.service_orders[0].opened_at == datetime(2025, 6, 2, 0, 45, tzinfo=UTC)
    assert card.service_orders[0].opened_at.tzinfo is not None
    assert card.open_repair is True

    several = store.lookup("137 0013 7000")
    assert several.status == "several" and [c.customer_no for c in several.cards] == ["C0003", "C0004"]
    assert store.lookup("13500135000").status == "unknown"
    assert store.lookup("anonymous").status == "invalid"
    assert store.card(2**31) is None  # beyond PostgreSQL's integer: "not found", not a server error
    assert store.card(card.id) == card


def test_bad_file_writes_nothing(sessions: sessionmaker[Session]) -> None:
    import_csv(SAMPLE, sessions)
    before = counts(sessions)
    with pytest.raises(CustomerImportError) as caught:
        import_csv(BAD, sessions)
    assert len({e.row for e in caught.value.errors}) == 21
    assert counts(sessions) == before


def test_reimport_updates(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    import_csv(SAMPLE, sessions)
    first = store.lookup("13800138000").cards[0]
    import_csv("customer_no,name,phones,products\n"
               "C0001,张伟,13800138000,KFR-35GW/BP3 变频挂式空调|AC2023050601|2023-05-06|李师傅\n", sessions)
    card = store.card(first.id)
    assert card is not None
    assert [p.serial for p in card.products] == ["AC2023050601"]
    assert card.products[0].id == next(p.id for p in first.products if p.serial == "AC2023050601")
    assert len(card.service_orders) == len(first.service_orders)
    assert store.lookup("010-65661234").status == "unknown"


def test_recent_contacts_window(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    import_csv(SAMPLE, sessions)
    ids = [c.id for c in store.lookup("13700137000").cards]
    for n in range(8):
        store.add_contact(ids[0], "call", NOW - timedelta(hours=n), f"{n}.1", f"来电{n}")
    store.add_contact(ids[1], "survey", NOW, None, "满意")
    cards = store.lookup("13700137000").cards
    assert [c.summary for c in cards[0].recent_contacts] == [f"来电{n}" for n in range(5)]
    assert [c.kind for c in cards[1].recent_contacts] == ["survey"]


def test_demo_keeps_sequences_right(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    assert generate(sessions, 500, seed=2, now=NOW) == 500
    assert store.lookup("13800138000").cards[0].open_repair is True
    assert store.lookup("13700137000").total == 2
    # Ids were chosen by the generator: ordinary inserts afterwards must still get fresh ones.
    report = import_csv("customer_no,name,products\nNEW1,新客户,空调|X1|2024-01-01|李\n", sessions)
    assert report.created == 1
    assert generate(sessions, 100, seed=3, now=NOW) == 100
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Customer)) == 601
        assert session.scalar(select(func.count(func.distinct(Customer.customer_no)))) == 601
    with sessions.begin() as session:
        session.add(Customer(customer_no="NEW2", name="再来一个"))


def test_lookup_plan_uses_the_phone_index(engine: Engine, sessions: sessionmaker[Session]) -> None:
    generate(sessions, 3000, seed=4, now=NOW)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE customer_phones")
        plan = "\n".join(row[0] for row in conn.execute(text(
            "EXPLAIN SELECT customer_id FROM customer_phones WHERE e164 = '+8613800138000'")))
    assert "ix_customer_phones_e164_customer" in plan, plan


def test_import_mixes_updates_and_bulk_inserts(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    from tests.unit.test_customer_import import test_new_and_existing_customers_in_one_batch

    test_new_and_existing_customers_in_one_batch(sessions, store)
    # Sequences moved past the bulk-inserted ids: plain ORM inserts still work.
    with sessions.begin() as session:
        customer = Customer(customer_no="AFTER", name="之后")
        customer.products = [Product(model="燃气灶")]
        session.add(customer)


def test_single_statement_cards_equal_the_orm_path(engine: Engine, sessions: sessionmaker[Session]) -> None:
    """PostgreSQL builds cards in one statement (JSON children); they must equal the ORM
    path's card for card, whatever the session time zone, and need one query per lookup."""
    import_csv(SAMPLE, sessions)
    generate(sessions, 400, seed=5, now=NOW)
    store = CustomerStore(sessions, clock=lambda: NOW)
    several = store.lookup("13700137000").cards
    for n in range(7):
        store.add_contact(several[0].id, "call", NOW - timedelta(minutes=n, microseconds=n), f"{n}.9", f"第{n}次")
    # A switchboard number shared by more customers than a lookup shows.
    with sessions.begin() as session:
        for n in range(25):
            customer = Customer(customer_no=f"SW{n:03d}", name=f"分机{n}")
            customer.phones.append(PhoneNumber(e164="+861065669999", raw="010-65669999", kind="landline"))
            session.add(customer)
    with sessions() as session:
        numbers = session.scalars(select(PhoneNumber.raw).order_by(PhoneNumber.id)).all()
    numbers += ["13500135000", "anonymous", "010-65669999"]

    shanghai = create_engine(engine.url, connect_args={"options": "-c timezone=Asia/Shanghai"})
    executed: list[str] = []
    event.listen(shanghai, "before_cursor_execute", lambda *args: executed.append(args[2]))
    try:
        local_store = CustomerStore(session_factory(shanghai), clock=lambda: NOW)
        statuses = set()
        for number in numbers:
            executed.clear()
            fast = local_store.lookup(number)
            assert len(executed) == (0 if fast.status == "invalid" else 1 if fast.total <= 20 else 2), number
            reference = store.lookup_orm(number)
            assert fast == reference, number
            assert fast.to_dict() == reference.to_dict(), number
            statuses.add(fast.status)
        assert statuses == {"match", "several", "unknown", "invalid"}
        switchboard = local_store.lookup("010-65669999")
        assert (switchboard.total, len(switchboard.cards)) == (25, 20)
        contacts = local_store.lookup("13700137000").cards[0].recent_contacts
        assert [c.summary for c in contacts] == [f"第{n}次" for n in range(5)]
        assert all(c.at.utcoffset() == timedelta(0) for c in contacts)
    finally:
        shanghai.dispose()
