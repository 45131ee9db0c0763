"""Customer import from CSV: all rows are checked first, then written in one transaction.

File format
===========

UTF-8 (a byte-order mark, as Excel writes it, is fine); files that are not valid
UTF-8 are read as GB18030, the encoding Excel uses for "CSV" on Chinese Windows.
Comma-separated with Excel-style quoting (``"`` around a cell, ``""`` inside one),
so cells may contain commas, quotes and line breaks. The first row is the header;
column order is free and names are case-insensitive. One row per customer.

=============== ======== ==========================================================
column          required meaning
=============== ======== ==========================================================
customer_no     yes      the customer's number (key; up to 32 characters, no spaces)
name            yes      person or company name
vip             no       ``1/0``, ``true/false``, ``yes/no``, ``y/n``, ``是/否``; empty = no
region          no       service region, e.g. ``华东`` or a region code
province        no       ``广东省``
city            no       ``深圳市``
district        no       ``南山区``
address         no       street part: ``科技园路1号3栋502``
postal_code     no       ``518057``
phones          no       numbers separated by ``;`` (or ``；``), any notation:
                         ``138-0013-8000; (0755) 8765 4321``. Mobile/landline is
                         derived from the number.
products        no       products separated by ``;``, each ``model|serial|installed_on|installer``;
                         only the model is required: ``KFR-35GW 空调|SN001|2023-05-06|王师傅``.
                         Dates are ``YYYY-MM-DD`` (``YYYY/M/D`` also accepted).
orders          no       service history separated by ``;``, each
                         ``kind|status|opened_at|closed_at|technician|fault_description|product_serial``:
                         kind ``install``/``repair``, status ``open``/``closed``/``cancelled``,
                         times ``YYYY-MM-DD[ HH:MM[:SS]]`` (in the row's time zone unless an
                         offset such as ``+08:00`` is given), closed_at/technician/fault/serial
                         may be empty; product_serial refers to a serial in the row's products.
timezone        no       IANA zone, default ``Asia/Shanghai``
language        no       ``zh`` (default), ``en``, ...
notes           no       free text
=============== ======== ==========================================================

``;`` and ``|`` are separators inside the list columns, so they cannot appear in a
product model, serial, installer, technician or fault description.

Errors
======

Every row is validated before anything is written. If any row is bad,
`CustomerImportError` lists every problem as ``row N, column X: message`` (N is
the spreadsheet row: the header is row 1) and the database is not touched.

Re-import
=========

A ``customer_no`` already in the database is updated, not duplicated:

* columns present in the file overwrite the stored value (an empty cell clears
  it); columns absent from the header leave the stored value alone, so a file with
  just ``customer_no,name,phones`` only changes names and numbers;
* ``phones`` replaces the customer's numbers;
* ``products`` replaces the customer's products; a product with the same serial
  (or, without a serial, the same model and install date) is updated in place, so
  service orders keep pointing at it; orders of a removed product keep their
  history with no product;
* ``orders`` adds or updates orders (same kind and opening time = same order);
  importing never deletes service history.

All rows are written in one transaction: new customers with bulk executemany
(`cti.customers.models.BulkRows`), existing ones reconciled through the ORM. Measured
on SQLite: 20,000 new customers (2 phones, 2 products, 2 orders each) in about 7 s,
most of it phone-number validation; re-importing them as updates in about 25 s.
"""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from cti.customers import models as m
from cti.customers.models import BulkRows, Customer, PhoneNumber, Product, ServiceOrder
from cti.customers.phone import InvalidPhoneNumber, check_region, normalize_with_kind

REQUIRED = ("customer_no", "name")
COLUMNS = ("customer_no", "name", "vip", "region", "province", "city", "district", "address", "postal_code",
           "phones", "products", "orders", "timezone", "language", "notes")
#: Limits that keep one row from becoming a denial of service.
MAX_PHONES = 20
MAX_PRODUCTS = 200
MAX_ORDERS = 1000
MAX_NOTES = 10_000
#: Rows read and written per batch (one transaction still covers them all).
BATCH = 1000
DEFAULT_TIMEZONE = "Asia/Shanghai"

_TRUE = {"1", "true", "yes", "y", "是", "vip", "t"}
_FALSE = {"", "0", "false", "no", "n", "否", "f"}
_LIST_SEP = re.compile(r"[;；]")
_CUSTOMER_NO = re.compile(r"[^\s\x00-\x1f\x7f]+")
_POSTAL = re.compile(r"[0-9A-Za-z][0-9A-Za-z \-]*")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
_DATE = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})")
_DATETIME = re.compile(
    r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?\s*(Z|[+-]\d{2}:?\d{2})?")
# Control characters break terminals, logs and PostgreSQL (NUL); notes may keep tabs and line breaks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_NOTES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class RowError:
    """One problem in the file: spreadsheet row (header = 1), column name, message."""

    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "message": self.message}


class CustomerImportError(ValueError):
    """The file was refused; `errors` lists every bad row. Nothing was written."""

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = errors
        shown = "\n".join(str(e) for e in errors[:20])
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        rows = len({e.row for e in errors})
        super().__init__(f"{len(errors)} error(s) in {rows} row(s), nothing imported:\n{shown}{more}")


@dataclass(frozen=True)
class ImportReport:
    """What one successful import wrote."""

    rows: int
    created: int
    updated: int
    phones: int
    products: int
    orders: int

    def to_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "created": self.created, "updated": self.updated, "phones": self.phones,
                "products": self.products, "orders": self.orders}


@dataclass(frozen=True)
class _Phone:
    e164: str
    raw: str
    kind: str


@dataclass(frozen=True)
class _Product:
    model: str
    serial: str
    installed_on: date | None
    installer: str

    @property
    def identity(self) -> tuple[str, str] | tuple[str, str, date | None]:
        return ("serial", self.serial) if self.serial else ("model", self.model, self.installed_on)


@dataclass(frozen=True)
class _Order:
    kind: str
    status: str
    opened_at: datetime
    closed_at: datetime | None
    technician: str
    fault_description: str
    product_serial: str


@dataclass
class _Row:
    """A validated row: the values of the columns present in the file."""

    number: int
    customer_no: str
    values: dict[str, Any] = field(default_factory=dict)
    phones: list[_Phone] | None = None
    products: list[_Product] | None = None
    orders: list[_Order] | None = None


# -- reading ---------------------------------------------------------------------------------
def _read_text(source: str | os.PathLike[str] | bytes) -> str:
    """The file's text; an empty `str` or one with a line break is the CSV itself, any other a path."""
    if isinstance(source, str) and (not source or "\n" in source or "\r" in source):
        return source.removeprefix("\ufeff")
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Excel on Chinese Windows saves "CSV" in the ANSI code page (GBK); GB18030 is its superset.
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            raise CustomerImportError([RowError(1, "-", "the file is neither UTF-8 nor GB18030 text")]) from None


def _records(text: str, errors: list[RowError]) -> Iterator[tuple[int, list[str]]]:
    """(spreadsheet row, cells) for each CSV record; a broken record ends the file with an error."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    number = 0
    while True:
        number += 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            errors.append(RowError(number, "-", f"malformed CSV ({exc}); rows after this one were not read"))
            return
        yield number, cells


# -- cell checks -----------------------------------------------------------------------------
class _CellError(ValueError):
    pass


def _text(value: str, limit: int, *, required: bool = False, notes: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise _CellError("required, but empty")
    if len(value) > limit:
        raise _CellError(f"longer than {limit} characters")
    if (_CONTROL_IN_NOTES if notes else _CONTROL).search(value):
        raise _CellError("contains control characters")
    return value


def _bool(value: str) -> bool:
    folded = value.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise _CellError(f"expected yes/no (1/0, true/false, 是/否), got {value.strip()!r}")


def _date(value: str, today: date) -> date | None:
    value = value.strip()
    if not value:
        return None
    match = _DATE.fullmatch(value)
    if match is None:
        raise _CellError(f"date {value!r} is not YYYY-MM-DD")
    try:
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError as exc:
        raise _CellError(f"date {value!r}: {exc}") from None
    if day > today + timedelta(days=1):
        raise _CellError(f"date {value!r} is in the future")
    return day


def _moment(value: str, zone: ZoneInfo) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    match = _DATETIME.fullmatch(value)
    if match is None:
        raise _CellError(f"time {value!r} is not YYYY-MM-DD[ HH:MM[:SS]][+08:00]")
    year, month, day, hour, minute, second, offset = match.groups()
    tz: timezone | ZoneInfo = zone
    if offset == "Z":
        tz = UTC
    elif offset:
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                        tzinfo=tz)
    except ValueError as exc:
        raise _CellError(f"time {value!r}: {exc}") from None


def _zone(value: str) -> tuple[str, ZoneInfo]:
    name = value.strip() or DEFAULT_TIMEZONE
    try:
        return name, ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _CellError(f"unknown time zone {name!r} (expected e.g. Asia/Shanghai)") from None


def _split(value: str, limit: int, what: str) -> list[str]:
    items = [item.strip() for item in _LIST_SEP.split(value)]
    items = [item for item in items if item]
    if len(items) > limit:
        raise _CellError(f"more than {limit} {what}")
    return items


# -- one row ---------------------------------------------------------------------------------
class _RowParser:
    """Turns one record into a `_Row`, adding a `RowError` per bad cell."""

    def __init__(self, header: list[str], default_region: str, errors: list[RowError], now: datetime) -> None:
        self.header = header
        self.present = set(header)
        self.default_region = default_region
        self.errors = errors
        self.now = now

    def parse(self, number: int, cells: list[str]) -> _Row | None:
        if len(cells) != len(self.header):
            self.errors.append(RowError(number, "-", f"expected {len(self.header)} cells, found {len(cells)}"))
            return None
        raw = dict(zip(self.header, cells, strict=True))
        before = len(self.errors)
        row = _Row(number, "")

        def check(column: str, fn: Callable[[str], Any]) -> Any:
            if column not in self.present:
                return None
            try:
                return fn(raw[column])
            except _CellError as exc:
                self.errors.append(RowError(number, column, str(exc)))
                return None

        no = check("customer_no", self._customer_no)
        row.customer_no = no or ""
        texts: list[tuple[str, int, bool]] = [
            ("name", m.LEN_NAME, True), ("region", m.LEN_REGION, False), ("province", m.LEN_PLACE, False),
            ("city", m.LEN_PLACE, False), ("district", m.LEN_PLACE, False), ("address", m.LEN_ADDRESS, False),
        ]
        for column, limit, required in texts:
            value = check(column, partial(_text, limit=limit, required=required))
            if value is not None:
                row.values[column] = value
        for column, fn in (("vip", _bool), ("postal_code", self._postal), ("language", self._language),
                           ("notes", lambda v: _text(v, MAX_NOTES, notes=True))):
            value = check(column, fn)
            if value is not None:
                row.values[column] = value
        tz_name, zone = DEFAULT_TIMEZONE, ZoneInfo(DEFAULT_TIMEZONE)
        parsed_zone = check("timezone", _zone)
        if parsed_zone is not None:
            tz_name, zone = parsed_zone
            row.values["timezone"] = tz_name
        today = self.now.astimezone(zone).date()
        row.phones = check("phones", self._phones)
        row.products = check("products", lambda v: self._products(v, today))
        row.orders = check("orders", lambda v: self._orders(v, zone, row.products))
        return row if len(self.errors) == before else None

    @staticmethod
    def _customer_no(value: str) -> str:
        value = _text(value, m.LEN_CUSTOMER_NO, required=True)
        if not _CUSTOMER_NO.fullmatch(value):
            raise _CellError("must not contain spaces or control characters")
        return value

    @staticmethod
    def _postal(value: str) -> str:
        value = _text(value, m.LEN_POSTAL_CODE)
        if value and not _POSTAL.fullmatch(value):
            raise _CellError(f"postal code {value!r} may contain only letters, digits, spaces and '-'")
        return value

    @staticmethod
    def _language(value: str) -> str:
        value = _text(value, m.LEN_LANGUAGE) or "zh"
        if not _LANGUAGE.fullmatch(value):
            raise _CellError(f"language {value!r} is not a language tag such as zh or en")
        return value

    def _phones(self, value: str) -> list[_Phone]:
        phones: dict[str, _Phone] = {}
        bad: list[str] = []
        for item in _split(value, MAX_PHONES, "phone numbers"):
            try:
                e164, kind = normalize_with_kind(item, self.default_region)
            except InvalidPhoneNumber as exc:
                bad.append(str(exc))
                continue
            phones.setdefault(e164, _Phone(e164, item[: m.LEN_RAW_PHONE], kind))
        if bad:
            raise _CellError("; ".join(bad))
        return list(phones.values())

    @staticmethod
    def _products(value: str, today: date) -> list[_Product]:
        products: list[_Product] = []
        problems: list[str] = []
        seen: set[Any] = set()
        for index, item in enumerate(_split(value, MAX_PRODUCTS, "products"), 1):
            parts = [p.strip() for p in item.split("|")]
            if len(parts) > 4:
                problems.append(f"product {index}: expected model|serial|installed_on|installer, "
                                f"found {len(parts)} fields")
                continue
            parts += [""] * (4 - len(parts))
            try:
                product = _Product(
                    model=_text(parts[0], m.LEN_MODEL, required=True),
                    serial=_text(parts[1], m.LEN_SERIAL),
                    installed_on=_date(parts[2], today),
                    installer=_text(parts[3], m.LEN_PERSON),
                )
            except _CellError as exc:
                problems.append(f"product {index}: {exc}")
                continue
            if product.identity in seen:
                problems.append(f"product {index}: listed twice"
                                + (f" (serial {product.serial})" if product.serial else ""))
                continue
            seen.add(product.identity)
            products.append(product)
        if problems:
            raise _CellError("; ".join(problems))
        return products

    def _orders(self, value: str, zone: ZoneInfo, products: list[_Product] | None) -> list[_Order]:
        orders: list[_Order] = []
        problems: list[str] = []
        serials = {p.serial for p in products or () if p.serial}
        seen: set[tuple[str, datetime]] = set()
        latest = self.now + timedelta(days=1)
        for index, item in enumerate(_split(value, MAX_ORDERS, "orders"), 1):
            parts = [p.strip() for p in item.split("|")]
            if not 3 <= len(parts) <= 7:
                problems.append(f"order {index}: expected kind|status|opened_at|closed_at|technician|"
                                f"fault_description|product_serial, found {len(parts)} fields")
                continue
            parts += [""] * (7 - len(parts))
            kind, status, opened_raw, closed_raw, technician, fault, serial = parts
            try:
                if kind not in m.ORDER_KINDS:
                    raise _CellError(f"kind {kind!r} is not one of {', '.join(m.ORDER_KINDS)}")
                if status not in m.ORDER_STATUSES:
                    raise _CellError(f"status {status!r} is not one of {', '.join(m.ORDER_STATUSES)}")
                opened = _moment(opened_raw, zone)
                if opened is None:
                    raise _CellError("opened_at is required")
                closed = _moment(closed_raw, zone)
                if opened > latest:
                    raise _CellError(f"opened_at {opened_raw!r} is in the future")
                if closed is not None and closed < opened:
                    raise _CellError("closed_at is before opened_at")
                if closed is not None and status == "open":
                    raise _CellError("an open order cannot have closed_at")
                if serial and products is None:
                    raise _CellError(f"product serial {serial!r} needs the products column in the file")
                if serial and serial not in serials:
                    raise _CellError(f"product serial {serial!r} is not among this row's products")
                order = _Order(kind, status, opened, closed, _text(technician, m.LEN_PERSON),
                               _text(fault, MAX_NOTES), serial)
            except _CellError as exc:
                problems.append(f"order {index}: {exc}")
                continue
            key = (order.kind, order.opened_at.astimezone(UTC))
            if key in seen:
                problems.append(f"order {index}: same kind and opened_at as an earlier order")
                continue
            seen.add(key)
            orders.append(order)
        if problems:
            raise _CellError("; ".join(problems))
        return orders


def _header(cells: list[str], errors: list[RowError]) -> list[str]:
    names = [unicodedata.normalize("NFKC", c).strip().lower() for c in cells]
    seen: set[str] = set()
    for name in names:
        if name not in COLUMNS:
            errors.append(RowError(1, name or "(empty)", f"unknown column; expected some of {', '.join(COLUMNS)}"))
        elif name in seen:
            errors.append(RowError(1, name, "column appears twice"))
        seen.add(name)
    for name in REQUIRED:
        if name not in seen:
            errors.append(RowError(1, name, "required column is missing"))
    return names


def validate(text: str, default_region: str = "CN", *, now: datetime | None = None) -> list[_Row]:
    """Every row checked; raises `CustomerImportError` with all problems, touches no database."""
    errors: list[RowError] = []
    records = _records(text, errors)
    first = next(records, None)
    if first is None:
        raise CustomerImportError(errors or [RowError(1, "-", "the file is empty; expected a header row")])
    header = _header(first[1], errors)
    header_ok = not errors
    parser = _RowParser(header, default_region, errors, now or datetime.now(UTC))
    rows: list[_Row] = []
    first_row: dict[str, int] = {}
    for number, cells in records:
        if not cells or all(not c.strip() for c in cells):
            continue  # blank line: Excel leaves them at the end of a sheet
        # With a bad header the rows are still checked, so one run reports everything.
        row = parser.parse(number, cells)
        if row is None or not header_ok:
            continue
        if row.customer_no in first_row:
            errors.append(RowError(number, "customer_no",
                                   f"{row.customer_no!r} already appears in row {first_row[row.customer_no]}"))
            continue
        first_row[row.customer_no] = number
        rows.append(row)
    if errors:
        # File order: by row, then by the column's position in the header.
        position = {name: index for index, name in reversed(list(enumerate(header)))}
        raise CustomerImportError(sorted(errors, key=lambda e: (e.row, position.get(e.column, len(header)))))
    return rows


# -- writing ---------------------------------------------------------------------------------
def import_csv(
    path_or_text: str | os.PathLike[str] | bytes,
    sessions: sessionmaker[Session],
    default_region: str = "CN",
) -> ImportReport:
    """Import (create or update) the customers in a CSV file, all or nothing; see the module docstring.

    `path_or_text`: a path, the file's bytes, or its text (a `str` containing a line break).
    Raises `CustomerImportError` (nothing written) or `OSError` if the path cannot be read.
    """
    check_region(default_region)
    rows = validate(_read_text(path_or_text), default_region)
    counts = {"created": 0, "updated": 0, "phones": 0, "products": 0, "orders": 0}
    with sessions.begin() as session:
        for batch in _batches(rows, BATCH):
            existing = {
                c.customer_no: c
                for c in session.scalars(
                    select(Customer)
                    .where(Customer.customer_no.in_([r.customer_no for r in batch]))
                    .options(selectinload(Customer.phones), selectinload(Customer.products),
                             selectinload(Customer.orders))
                )
            }
            fresh = BulkRows()
            for row in batch:
                customer = existing.get(row.customer_no)
                if customer is None:
                    _add_new(fresh, row, counts)
                    counts["created"] += 1
                else:
                    _apply(customer, row, counts)
                    counts["updated"] += 1
            session.flush()  # updates first: the bulk insert picks ids after the current maximum
            fresh.write(session.connection())
            session.expunge_all()  # keep memory flat on large files; the transaction stays open
    return ImportReport(rows=len(rows), **counts)


def _batches(rows: list[_Row], size: int) -> Iterable[list[_Row]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


_NEW_CUSTOMER_DEFAULTS: dict[str, Any] = {
    "vip": False, "region": "", "province": "", "city": "", "district": "", "address": "", "postal_code": "",
    "timezone": DEFAULT_TIMEZONE, "language": "zh", "notes": "",
}


def _add_new(fresh: BulkRows, row: _Row, counts: dict[str, int]) -> None:
    """A customer not in the database yet: plain rows for the bulk insert (no ORM objects)."""
    now = datetime.now(UTC)
    pos = len(fresh.customers)
    fresh.customers.append({**_NEW_CUSTOMER_DEFAULTS, **row.values, "customer_no": row.customer_no,
                            "created_at": now, "updated_at": now})
    for phone in row.phones or ():
        fresh.phones.append((pos, {"e164": phone.e164, "raw": phone.raw, "kind": phone.kind}))
    serials: dict[str, int] = {}
    for product in row.products or ():
        if product.serial:
            serials[product.serial] = len(fresh.products)
        fresh.products.append((pos, {"model": product.model, "serial": product.serial,
                                     "installed_on": product.installed_on, "installer": product.installer}))
    for order in row.orders or ():
        fresh.orders.append((pos, serials.get(order.product_serial) if order.product_serial else None, {
            "kind": order.kind, "status": order.status, "opened_at": order.opened_at, "closed_at": order.closed_at,
            "technician": order.technician, "fault_description": order.fault_description}))
    counts["phones"] += len(row.phones or ())
    counts["products"] += len(row.products or ())
    counts["orders"] += len(row.orders or ())


def _apply(customer: Customer, row: _Row, counts: dict[str, int]) -> None:
    """A customer already in the database: reconcile the ORM object with the row."""
    for column, value in row.values.items():
        setattr(customer, column, value)
    if row.phones is not None:
        by_number = {p.e164: p for p in customer.phones}
        wanted = {p.e164 for p in row.phones}
        # Reconcile instead of replace: deleting and re-inserting one number in a
        # flush would trip the (customer_id, e164) unique constraint.
        customer.phones = [p for p in customer.phones if p.e164 in wanted]
        for phone in row.phones:
            stored = by_number.get(phone.e164)
            if stored is None:
                customer.phones.append(PhoneNumber(e164=phone.e164, raw=phone.raw, kind=phone.kind))
            else:
                stored.raw, stored.kind = phone.raw, phone.kind
        counts["phones"] += len(row.phones)
    serial_to_product: dict[str, Product] = {p.serial: p for p in customer.products if p.serial}
    if row.products is not None:
        stored_by_identity = {_identity(p): p for p in customer.products}
        kept: list[Product] = []
        for item in row.products:
            product = stored_by_identity.pop(item.identity, None)
            if product is None:
                product = Product(model=item.model, serial=item.serial)
            product.model, product.installed_on, product.installer = item.model, item.installed_on, item.installer
            kept.append(product)
        removed = {p.id for p in stored_by_identity.values()}
        for stored_order in customer.orders:
            if stored_order.product_id in removed:
                stored_order.product_id = None
        customer.products = kept
        serial_to_product = {p.serial: p for p in kept if p.serial}
        counts["products"] += len(kept)
    if row.orders is not None:
        stored_orders = {(o.kind, o.opened_at.astimezone(UTC)): o for o in customer.orders}
        for wanted_order in row.orders:
            order = stored_orders.get((wanted_order.kind, wanted_order.opened_at.astimezone(UTC)))
            if order is None:
                order = ServiceOrder(kind=wanted_order.kind, opened_at=wanted_order.opened_at)
                customer.orders.append(order)
            order.status, order.closed_at = wanted_order.status, wanted_order.closed_at
            order.technician, order.fault_description = wanted_order.technician, wanted_order.fault_description
            order.product = serial_to_product.get(wanted_order.product_serial) if wanted_order.product_serial else None
        counts["orders"] += len(row.orders)


def _identity(product: Product) -> tuple[str, str] | tuple[str, str, date | None]:
    return ("serial", product.serial) if product.serial else ("model", product.model, product.installed_on)
