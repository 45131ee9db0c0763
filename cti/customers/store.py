"""Caller number -> customer cards: what the agent's screen shows while the phone rings.

A lookup is a bounded, fixed number of indexed queries whatever the database size:
the customers owning the number (``customer_phones (e164, customer_id)`` joined to
``customers``), then phones, products and service orders by ``customer_id``
(selectin eager loading) and the last few contacts (one window query). On
PostgreSQL the same card is one statement (correlated ``json_agg`` subqueries): the
screen pop waits for it while the agent's phone rings, and there five round trips
and the ORM's object loading were most of the time. Both paths build the card with
the same function, and a PostgreSQL test checks they agree card for card. The result
is plain frozen dataclasses, safe to hand to another thread or serialise as JSON.

All methods block (SQLAlchemy sessions); the web layer and the screen pop call
them from worker threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, TextClause, bindparam, func, select, text
from sqlalchemy.orm import Session, selectinload, sessionmaker

from cti.customers.models import CONTACT_KINDS, LEN_LINKEDID, ContactHistory, Customer, PhoneNumber
from cti.customers.phone import InvalidPhoneNumber, check_region, normalize

LookupStatus = Literal["match", "several", "unknown", "invalid"]

#: A number shared by more customers than this (a company switchboard) shows this
#: many cards; `Lookup.total` still says how many matched.
MAX_CARDS = 20
#: Contacts shown on a card, newest first.
RECENT_CONTACTS = 5
DEFAULT_TIMEZONE = "Asia/Shanghai"
# Integer primary keys are 32-bit on PostgreSQL; a larger id cannot exist and
# would make the server raise instead of returning "not found".
_MAX_ID = 2**31 - 1


class CustomerNotFound(LookupError):
    """No customer with that id."""


def _iso(value: date | datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class PhoneInfo:
    e164: str
    raw: str
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return {"e164": self.e164, "raw": self.raw, "kind": self.kind}


@dataclass(frozen=True)
class ProductInfo:
    id: int
    model: str
    serial: str
    installed_on: date | None
    installer: str
    #: Counted in the customer's time zone; None without an install date.
    days_since_install: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "serial": self.serial, "installed_on": _iso(self.installed_on),
                "installer": self.installer, "days_since_install": self.days_since_install}


@dataclass(frozen=True)
class OrderInfo:
    id: int
    kind: str
    status: str
    opened_at: datetime
    closed_at: datetime | None
    technician: str
    fault_description: str
    product_id: int | None
    #: The model of `product_id`, so the agent sees which appliance without a second look.
    product_model: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": self.status, "opened_at": _iso(self.opened_at),
                "closed_at": _iso(self.closed_at), "technician": self.technician,
                "fault_description": self.fault_description, "product_id": self.product_id,
                "product_model": self.product_model}


@dataclass(frozen=True)
class ContactInfo:
    id: int
    kind: str
    at: datetime
    linkedid: str | None
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "at": _iso(self.at), "linkedid": self.linkedid,
                "summary": self.summary}


@dataclass(frozen=True)
class CustomerCard:
    """Everything the agent sees about one customer; `to_dict` is the JSON form."""

    id: int
    customer_no: str
    name: str
    vip: bool
    region: str
    #: Full postal address, province first (Chinese order), ready to read out.
    address: str
    province: str
    city: str
    district: str
    #: The street part alone (road, building, room).
    street: str
    postal_code: str
    timezone: str
    language: str
    notes: str
    phones: tuple[PhoneInfo, ...]
    #: Oldest installation first.
    products: tuple[ProductInfo, ...]
    #: Newest first.
    service_orders: tuple[OrderInfo, ...]
    #: A repair order is still open: the caller is probably calling about it.
    open_repair: bool
    #: The last `RECENT_CONTACTS` contacts, newest first.
    recent_contacts: tuple[ContactInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "customer_no": self.customer_no, "name": self.name, "vip": self.vip,
            "region": self.region, "address": self.address, "province": self.province, "city": self.city,
            "district": self.district, "street": self.street, "postal_code": self.postal_code,
            "timezone": self.timezone, "language": self.language, "notes": self.notes,
            "phones": [p.to_dict() for p in self.phones],
            "products": [p.to_dict() for p in self.products],
            "service_orders": [o.to_dict() for o in self.service_orders],
            "open_repair": self.open_repair,
            "recent_contacts": [c.to_dict() for c in self.recent_contacts],
        }


@dataclass(frozen=True)
class Lookup:
    """The answer for one caller number.

    ``match``: exactly one customer; ``several``: the number belongs to more than one
    (the agent asks who is calling); ``unknown``: a valid number nobody owns;
    ``invalid``: not a phone number at all (anonymous, garbage), see `reason`.
    """

    status: LookupStatus
    number_e164: str | None
    cards: tuple[CustomerCard, ...]
    #: Customers owning the number; more than ``len(cards)`` when capped at `MAX_CARDS`.
    total: int = 0
    #: Why the number is invalid (status ``invalid`` only).
    reason: str | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "number_e164": self.number_e164, "total": self.total,
                "reason": self.reason, "cards": [c.to_dict() for c in self.cards]}


def full_address(province: str, city: str, district: str, street: str) -> str:
    """``广东省深圳市南山区科技园路1号``: parts joined in Chinese order, without repeats.

    Municipalities repeat themselves (北京市 / 北京市) and people often type the
    whole address into the street field; neither should be read out twice.
    """
    out = ""
    for part in (province, city, district):
        part = part.strip()
        if part and not out.endswith(part) and part not in street:
            out += part
    return out + street.strip()


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CustomerStore:
    """Customer lookups and cards over the service database (SQLite or PostgreSQL)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        default_region: str = "CN",
        *,
        clock: Callable[[], datetime] = _utc_now,
        write_sessions: sessionmaker[Session] | None = None,
    ) -> None:
        self.sessions = sessions
        # Writes need sessions that take the write lock up front: on SQLite a DEFERRED
        # read transaction that later writes fails at once with "database is locked"
        # when another writer is active (the lock upgrade does not wait).
        self.write_sessions = write_sessions if write_sessions is not None else sessions
        self.default_region = check_region(default_region)
        self._clock = clock

    # -- reads ----------------------------------------------------------------------
    def lookup(self, number: str) -> Lookup:
        """The customers owning `number` (any notation, or a caller ID as Asterisk gives it)."""
        return self._lookup(number, single_statement=None)

    def lookup_orm(self, number: str) -> Lookup:
        """`lookup` through the ORM path on any backend: the reference the PostgreSQL
        single-statement path is tested against."""
        return self._lookup(number, single_statement=False)

    def _lookup(self, number: str, *, single_statement: bool | None) -> Lookup:
        """`single_statement` None: one statement on PostgreSQL, the ORM elsewhere."""
        try:
            e164 = normalize(number, self.default_region)
        except InvalidPhoneNumber as exc:
            return Lookup("invalid", None, (), 0, exc.reason)
        with self.sessions() as session:
            if single_statement is None:
                single_statement = session.get_bind().dialect.name == "postgresql"
            if single_statement:
                cards, total = self._pg_cards(session, _PG_CARDS_BY_NUMBER, {"e164": e164, "limit": MAX_CARDS + 1})
            else:
                customers = session.scalars(_BY_NUMBER, {"e164": e164}).all()
                cards, total = self._cards(session, customers[:MAX_CARDS]), len(customers)
            if total > MAX_CARDS:
                cards = cards[:MAX_CARDS]
                total = session.scalar(_COUNT_BY_NUMBER, {"e164": e164}) or total
        if not cards:
            return Lookup("unknown", e164, (), 0)
        return Lookup("match" if total == 1 else "several", e164, cards, total)

    def card(self, customer_id: int) -> CustomerCard | None:
        """One customer's card by id; None when there is no such customer."""
        if isinstance(customer_id, bool) or not isinstance(customer_id, int) or not 0 < customer_id <= _MAX_ID:
            return None
        with self.sessions() as session:
            customer = session.scalars(_BY_ID, {"id": customer_id}).one_or_none()
            if customer is None:
                return None
            return self._cards(session, [customer])[0]

    # -- writes ---------------------------------------------------------------------
    def add_contact(
        self, customer_id: int, kind: str, at: datetime, linkedid: str | None = None, summary: str = ""
    ) -> int:
        """Record a call, survey or note for the customer; returns the new contact's id."""
        if kind not in CONTACT_KINDS:
            raise ValueError(f"contact kind must be one of {', '.join(CONTACT_KINDS)}, not {kind!r}")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("contact time must be timezone-aware")
        if linkedid is not None and len(linkedid) > LEN_LINKEDID:
            raise ValueError(f"linkedid longer than {LEN_LINKEDID} characters")
        with self.write_sessions.begin() as session:
            if not 0 < customer_id <= _MAX_ID or session.get(Customer, customer_id) is None:
                raise CustomerNotFound(f"no customer with id {customer_id}")
            contact = ContactHistory(customer_id=customer_id, kind=kind, at=at, linkedid=linkedid or None,
                                     summary=summary)
            session.add(contact)
            session.flush()
            return contact.id

    # -- building cards -------------------------------------------------------------
    def _cards(self, session: Session, customers: Sequence[Customer]) -> tuple[CustomerCard, ...]:
        contacts = self._recent_contacts(session, [c.id for c in customers])
        now = self._clock()
        return tuple(self._card(c, contacts.get(c.id, ()), now) for c in customers)

    @staticmethod
    def _recent_contacts(session: Session, ids: list[int]) -> dict[int, tuple[ContactInfo, ...]]:
        """The last few contacts of each customer in one query (contacts grow without bound)."""
        if not ids:
            return {}
        rows = session.execute(_RECENT_CONTACTS, {"ids": ids}).all()
        out: dict[int, list[ContactInfo]] = {}
        for row in rows:
            out.setdefault(row.customer_id, []).append(
                ContactInfo(row.id, row.kind, row.at, row.linkedid, row.summary))
        return {k: tuple(v) for k, v in out.items()}

    def _pg_cards(self, session: Session, statement: TextClause,
                  params: dict[str, Any]) -> tuple[tuple[CustomerCard, ...], int]:
        """Cards from `_PG_CARDS_BY_NUMBER`: one row per customer, children as JSON arrays."""
        rows = session.execute(statement, params).all()
        now = self._clock()
        cards = tuple(
            _build_card(
                row,
                [PhoneInfo(*phone) for phone in row.phones or ()],
                [(pid, model, serial, None if installed is None else date.fromisoformat(installed), installer)
                 for pid, model, serial, installed, installer in row.products or ()],
                [(oid, kind, status, _utc(opened), None if closed is None else _utc(closed), technician, fault,
                  product_id)
                 for oid, kind, status, opened, closed, technician, fault, product_id in row.orders or ()],
                tuple(ContactInfo(cid, kind, _utc(at), linkedid, summary)
                      for cid, kind, at, linkedid, summary in row.contacts or ()),
                now,
            )
            for row in rows
        )
        return cards, len(rows)

    @staticmethod
    def _card(customer: Customer, contacts: tuple[ContactInfo, ...], now: datetime) -> CustomerCard:
        return _build_card(
            customer,
            [PhoneInfo(p.e164, p.raw, p.kind) for p in customer.phones],
            [(p.id, p.model, p.serial, p.installed_on, p.installer) for p in customer.products],
            [(o.id, o.kind, o.status, o.opened_at, o.closed_at, o.technician, o.fault_description, o.product_id)
             for o in customer.orders],
            contacts,
            now,
        )


_ProductRow = tuple[int, str, str, date | None, str]
_OrderRow = tuple[int, str, str, datetime, datetime | None, str, str, int | None]


def _utc(value: str) -> datetime:
    """A timestamptz as PostgreSQL writes it in JSON (ISO 8601, session offset) -> aware UTC."""
    return datetime.fromisoformat(value).astimezone(UTC)


def _build_card(customer: Any, phones: Sequence[PhoneInfo], product_rows: Sequence[_ProductRow],
                order_rows: Sequence[_OrderRow], contacts: tuple[ContactInfo, ...], now: datetime) -> CustomerCard:
    """The card from a customer's columns (ORM object or row) and its children as plain tuples."""
    today = now.astimezone(_zone(customer.timezone or DEFAULT_TIMEZONE)).date()
    products = sorted(product_rows, key=lambda p: (p[3] or date.max, p[0]))
    models = {p[0]: p[1] for p in products}
    orders = sorted(order_rows, key=lambda o: (o[3], o[0]), reverse=True)
    return CustomerCard(
        id=customer.id,
        customer_no=customer.customer_no,
        name=customer.name,
        vip=bool(customer.vip),
        region=customer.region,
        address=full_address(customer.province, customer.city, customer.district, customer.address),
        province=customer.province,
        city=customer.city,
        district=customer.district,
        street=customer.address,
        postal_code=customer.postal_code,
        timezone=customer.timezone,
        language=customer.language,
        notes=customer.notes,
        phones=tuple(phones),
        products=tuple(
            ProductInfo(pid, model, serial, installed, installer,
                        None if installed is None else (today - installed).days)
            for pid, model, serial, installed, installer in products
        ),
        service_orders=tuple(
            OrderInfo(oid, kind, status, opened, closed, technician, fault, product_id,
                      models.get(product_id) if product_id is not None else None)
            for oid, kind, status, opened, closed, technician, fault, product_id in orders
        ),
        open_repair=any(o[1] == "repair" and o[2] == "open" for o in orders),
        recent_contacts=contacts,
    )


# Statements are built once: constructing them per call cost more than running them.
_CARD_LOADS = (selectinload(Customer.phones), selectinload(Customer.products), selectinload(Customer.orders))
_BY_NUMBER = (
    select(Customer)
    .join(PhoneNumber, PhoneNumber.customer_id == Customer.id)
    .where(PhoneNumber.e164 == bindparam("e164"))
    .order_by(Customer.id)
    .limit(MAX_CARDS + 1)
    .options(*_CARD_LOADS)
)
_COUNT_BY_NUMBER = select(func.count()).select_from(PhoneNumber).where(PhoneNumber.e164 == bindparam("e164"))
_BY_ID = select(Customer).where(Customer.id == bindparam("id")).options(*_CARD_LOADS)


def _recent_contacts_statement() -> Select[Any]:
    """The last `RECENT_CONTACTS` contacts per customer, for a list of customer ids, in one query."""
    rank = func.row_number().over(
        partition_by=ContactHistory.customer_id,
        order_by=(ContactHistory.at.desc(), ContactHistory.id.desc()),
    ).label("rank")
    ranked = (
        select(ContactHistory.id, ContactHistory.customer_id, ContactHistory.kind, ContactHistory.at,
               ContactHistory.linkedid, ContactHistory.summary, rank)
        .where(ContactHistory.customer_id.in_(bindparam("ids", expanding=True)))
        .subquery()
    )
    return (
        select(ranked.c.id, ranked.c.customer_id, ranked.c.kind, ranked.c.at, ranked.c.linkedid, ranked.c.summary)
        .where(ranked.c.rank <= RECENT_CONTACTS)
        .order_by(ranked.c.customer_id, ranked.c.rank)
    )


_RECENT_CONTACTS = _recent_contacts_statement()


# PostgreSQL: the whole card in one statement. Children come back as JSON arrays of
# arrays (dates and timestamps as ISO 8601 text) in the ORM path's column order;
# phones in id order, contacts newest first and capped, like the window query.
_PG_CARDS_BY_NUMBER = text(f"""
SELECT c.id, c.customer_no, c.name, c.vip, c.region, c.province, c.city, c.district, c.address,
       c.postal_code, c.timezone, c.language, c.notes,
       (SELECT json_agg(json_build_array(p.e164, p.raw, p.kind) ORDER BY p.id)
          FROM customer_phones p WHERE p.customer_id = c.id) AS phones,
       (SELECT json_agg(json_build_array(r.id, r.model, r.serial, r.installed_on, r.installer))
          FROM customer_products r WHERE r.customer_id = c.id) AS products,
       (SELECT json_agg(json_build_array(o.id, o.kind, o.status, o.opened_at, o.closed_at, o.technician,
                                         o.fault_description, o.product_id))
          FROM service_orders o WHERE o.customer_id = c.id) AS orders,
       (SELECT json_agg(json_build_array(h.id, h.kind, h.at, h.linkedid, h.summary) ORDER BY h.at DESC, h.id DESC)
          FROM (SELECT id, kind, at, linkedid, summary FROM contact_history
                 WHERE customer_id = c.id ORDER BY at DESC, id DESC LIMIT {RECENT_CONTACTS}) h) AS contacts
  FROM customers c JOIN customer_phones n ON n.customer_id = c.id
 WHERE n.e164 = :e164
 ORDER BY c.id
 LIMIT :limit
""")
