"""Customer tables: who calls, where they live, what they own, what we did for them.

The screen pop reads everything about one caller in a handful of indexed queries:
``customer_phones (e164, customer_id)`` finds the customers, then each child table
is read by its ``customer_id`` index (selectin eager loading). One number may
belong to several customers (a family landline, a shop): the lookup says so
instead of guessing.

Install dates are plain `date`s (what the paperwork says, no time zone); every
moment in time is a `UTCDateTime` (aware in, aware UTC out).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Connection,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cti.db import Base, UTCDateTime

PHONE_KINDS = ("mobile", "landline", "other")
ORDER_KINDS = ("install", "repair")
ORDER_STATUSES = ("open", "closed", "cancelled")
CONTACT_KINDS = ("call", "survey", "note")

# Column sizes, shared with the importer so it can refuse an over-long cell up front
# (SQLite would store it, PostgreSQL would fail the whole transaction).
LEN_CUSTOMER_NO = 32
LEN_NAME = 128
LEN_REGION = 32
LEN_PLACE = 64
LEN_ADDRESS = 255
LEN_POSTAL_CODE = 16
LEN_TIMEZONE = 64
LEN_LANGUAGE = 16
LEN_E164 = 20
LEN_RAW_PHONE = 64
LEN_MODEL = 128
LEN_SERIAL = 64
LEN_PERSON = 64
LEN_LINKEDID = 64


def _now() -> datetime:
    return datetime.now(UTC)


def _check_in(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


class Customer(Base):
    """One customer (household or company), keyed for people by `customer_no`."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The number on the customer's paperwork; unique, the key for imports.
    customer_no: Mapped[str] = mapped_column(String(LEN_CUSTOMER_NO), unique=True)
    name: Mapped[str] = mapped_column(String(LEN_NAME))
    vip: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: Sales/service region, e.g. 华东, 华北 or a region code used for routing.
    region: Mapped[str] = mapped_column(String(LEN_REGION), default="", server_default="")
    province: Mapped[str] = mapped_column(String(LEN_PLACE), default="", server_default="")
    city: Mapped[str] = mapped_column(String(LEN_PLACE), default="", server_default="")
    district: Mapped[str] = mapped_column(String(LEN_PLACE), default="", server_default="")
    #: Street address below the district (road, number, building, unit, room).
    address: Mapped[str] = mapped_column(String(LEN_ADDRESS), default="", server_default="")
    postal_code: Mapped[str] = mapped_column(String(LEN_POSTAL_CODE), default="", server_default="")
    #: IANA zone for calling hours and "days since install".
    timezone: Mapped[str] = mapped_column(String(LEN_TIMEZONE), default="Asia/Shanghai",
                                          server_default="Asia/Shanghai")
    language: Mapped[str] = mapped_column(String(LEN_LANGUAGE), default="zh", server_default="zh")
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now, onupdate=_now)

    phones: Mapped[list[PhoneNumber]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="PhoneNumber.id")
    products: Mapped[list[Product]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="Product.id")
    orders: Mapped[list[ServiceOrder]] = relationship(
        back_populates="customer", cascade="all, delete-orphan",
        order_by="(ServiceOrder.opened_at.desc(), ServiceOrder.id.desc())")
    # No eager list of contacts: it grows with every call; the store reads the last few.
    contacts: Mapped[list[ContactHistory]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", lazy="raise_on_sql", passive_deletes=True)

    def __repr__(self) -> str:
        return f"Customer(id={self.id!r}, customer_no={self.customer_no!r})"


class PhoneNumber(Base):
    """A number that reaches a customer; the same E.164 may appear under several customers."""

    __tablename__ = "customer_phones"
    __table_args__ = (
        UniqueConstraint("customer_id", "e164", name="uq_customer_phones_customer_e164"),
        # The lookup path: number -> customer ids, answered from the index alone.
        Index("ix_customer_phones_e164_customer", "e164", "customer_id"),
        _check_in("kind", PHONE_KINDS, "ck_customer_phones_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    e164: Mapped[str] = mapped_column(String(LEN_E164))
    #: As it was written in the source (spreadsheet, agent input), for display.
    raw: Mapped[str] = mapped_column(String(LEN_RAW_PHONE), default="", server_default="")
    kind: Mapped[str] = mapped_column(String(16), default="other", server_default="other")

    customer: Mapped[Customer] = relationship(back_populates="phones")


class Product(Base):
    """One installed appliance (air conditioner, water heater, ...) at the customer's address."""

    __tablename__ = "customer_products"
    __table_args__ = (Index("ix_customer_products_customer", "customer_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(LEN_MODEL))
    serial: Mapped[str] = mapped_column(String(LEN_SERIAL), default="", server_default="", index=True)
    installed_on: Mapped[date | None] = mapped_column(Date)
    installer: Mapped[str] = mapped_column(String(LEN_PERSON), default="", server_default="")

    customer: Mapped[Customer] = relationship(back_populates="products")


class ServiceOrder(Base):
    """An installation or repair job; the card lists them newest first."""

    __tablename__ = "service_orders"
    __table_args__ = (
        Index("ix_service_orders_customer_opened", "customer_id", "opened_at"),
        _check_in("kind", ORDER_KINDS, "ck_service_orders_kind"),
        _check_in("status", ORDER_STATUSES, "ck_service_orders_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    #: The appliance concerned; kept as NULL if the product record is removed.
    product_id: Mapped[int | None] = mapped_column(
        ForeignKey("customer_products.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    technician: Mapped[str] = mapped_column(String(LEN_PERSON), default="", server_default="")
    fault_description: Mapped[str] = mapped_column(Text, default="", server_default="")

    customer: Mapped[Customer] = relationship(back_populates="orders")
    product: Mapped[Product | None] = relationship()


class ContactHistory(Base):
    """A call, survey or note about the customer; `linkedid` ties a call to the calls table."""

    __tablename__ = "contact_history"
    __table_args__ = (
        Index("ix_contact_history_customer_at", "customer_id", "at"),
        _check_in("kind", CONTACT_KINDS, "ck_contact_history_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    linkedid: Mapped[str | None] = mapped_column(String(LEN_LINKEDID), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    summary: Mapped[str] = mapped_column(Text, default="", server_default="")

    customer: Mapped[Customer] = relationship(back_populates="contacts")


# -- bulk inserts (demo data, CSV import of new customers) ------------------------------------------
def lock_for_bulk_insert(conn: Connection) -> None:
    """Keep other writers out of the id ranges `BulkRows` picks, until the transaction ends.

    SQLite: nothing to do, the service's transactions start with ``BEGIN IMMEDIATE``
    (cti.db), which already excludes other writers. PostgreSQL: lock the two tables
    whose ids we choose (readers are not blocked).
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE customers, customer_products IN EXCLUSIVE MODE")


def next_ids(conn: Connection) -> tuple[int, int]:
    """The next free customer id and product id (call `lock_for_bulk_insert` first)."""
    return ((conn.scalar(select(func.max(Customer.id))) or 0) + 1,
            (conn.scalar(select(func.max(Product.id))) or 0) + 1)


class BulkRows:
    """Whole customers (with phones, products, orders, contacts) for one executemany round.

    Children refer to their parent by position in this batch; `write` hands out ids
    itself and inserts with plain executemany. Letting the database assign ids would
    need ``INSERT ... RETURNING`` with the ids in input order, which SQLite can only
    do one row per statement: ten times slower for a million customers.

    Row dicts must all have the same keys per table (executemany); columns left out
    get their defaults.
    """

    def __init__(self) -> None:
        self.customers: list[dict[str, Any]] = []
        self.phones: list[tuple[int, dict[str, Any]]] = []
        self.products: list[tuple[int, dict[str, Any]]] = []
        #: (customer position, product position or None, row)
        self.orders: list[tuple[int, int | None, dict[str, Any]]] = []
        self.contacts: list[tuple[int, dict[str, Any]]] = []

    def write(self, conn: Connection) -> None:
        """Insert everything in the caller's transaction."""
        if not self.customers:
            return
        lock_for_bulk_insert(conn)
        first_customer, first_product = next_ids(conn)
        conn.execute(insert(Customer), [{**row, "id": first_customer + pos} for pos, row in enumerate(self.customers)])
        if self.phones:
            conn.execute(insert(PhoneNumber),
                         [{**row, "customer_id": first_customer + pos} for pos, row in self.phones])
        if self.products:
            conn.execute(insert(Product), [
                {**row, "id": first_product + index, "customer_id": first_customer + pos}
                for index, (pos, row) in enumerate(self.products)
            ])
        if self.orders:
            conn.execute(insert(ServiceOrder), [
                {**row, "customer_id": first_customer + pos,
                 "product_id": None if prod is None else first_product + prod}
                for pos, prod, row in self.orders
            ])
        if self.contacts:
            conn.execute(insert(ContactHistory),
                         [{**row, "customer_id": first_customer + pos} for pos, row in self.contacts])
        if conn.dialect.name == "postgresql":
            # Ordinary inserts draw ids from the sequences: move them past ours.
            for table in ("customers", "customer_products"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"))
