"""CSV import: good files land completely, a single bad row keeps the whole file out."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session, sessionmaker

from cti.customers import importer
from cti.customers.importer import CustomerImportError, RowError, import_csv
from cti.customers.models import BulkRows, ContactHistory, Customer, PhoneNumber, Product, ServiceOrder
from cti.customers.store import CustomerStore

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "customers" / "sample.csv"
TABLES = (Customer, PhoneNumber, Product, ServiceOrder, ContactHistory)
HEADER = "customer_no,name,vip,phones,products,orders\n"


@pytest.fixture
def store(sessions: sessionmaker[Session]) -> CustomerStore:
    return CustomerStore(sessions)


def counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        return {t.__tablename__: session.scalar(select(func.count()).select_from(t)) or 0 for t in TABLES}


def errors_of(text: str | bytes, sessions: sessionmaker[Session]) -> list[RowError]:
    with pytest.raises(CustomerImportError) as caught:
        import_csv(text, sessions)
    return caught.value.errors


# -- good files -----------------------------------------------------------------------------
def test_sample_file(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    report = import_csv(SAMPLE, sessions)
    assert report.to_dict() == {"rows": 6, "created": 6, "updated": 0, "phones": 9, "products": 7, "orders": 5}
    assert counts(sessions) == {"customers": 6, "customer_phones": 9, "customer_products": 7,
                                "service_orders": 5, "contact_history": 0}
    zhang = store.lookup("13800138000").cards[0]
    assert zhang.name == "张伟" and zhang.vip is False and zhang.open_repair is True
    assert zhang.address == "北京市朝阳区建国路88号SOHO现代城3号楼1502室"
    assert [(p.serial, p.installed_on) for p in zhang.products] == [
        ("WH2021110302", date(2021, 11, 3)), ("AC2023050601", date(2023, 5, 6))]
    assert [o.kind for o in zhang.service_orders] == ["repair", "repair", "install"]
    assert {o.product_model for o in zhang.service_orders} == {"KFR-35GW/BP3 变频挂式空调"}
    # Times without an offset are China time.
    assert zhang.service_orders[0].opened_at == datetime(2025, 6, 2, 0, 45, tzinfo=UTC)
    assert store.lookup("+86 139 0013 9000").cards[0].vip is True
    shared = store.lookup("13700137000")
    assert shared.status == "several" and [c.customer_no for c in shared.cards] == ["C0003", "C0004"]
    # Excel quoting: a comma and doubled quotes inside cells.
    company = store.lookup("0571-88889999").cards[0]
    assert company.street == '江南大道3850号创新大厦"云帆"办公室'
    assert company.language == "en"
    assert [p.kind for p in company.phones] == ["landline", "other"]
    assert store.lookup("13800138000").cards[0].notes == "老客户，上门前请先电话联系"
    assert store.lookup("028-85551234").cards[0].products[1].serial == ""


def test_bom_crlf_and_text_input(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    data = "\ufeffCustomer_No,Name,Phones\r\nB1,刘备,13800138000\r\nB2,关羽,13900139000\r\n".encode()
    assert import_csv(data, sessions).created == 2
    assert store.lookup("13800138000").cards[0].name == "刘备"
    # The same as text (a str with a line break is the CSV itself), BOM and all.
    assert import_csv(data.decode("utf-8"), sessions).updated == 2


def test_gb18030_from_chinese_excel(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    data = "customer_no,name,province,phones\nG1,诸葛亮,四川省,028-85551234\n".encode("gb18030")
    import_csv(data, sessions)
    card = store.lookup("02885551234").cards[0]
    assert (card.name, card.province) == ("诸葛亮", "四川省")


def test_path_and_str_path(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("customer_no,name\nP1,甲\n", encoding="utf-8-sig")
    assert import_csv(path, sessions).created == 1
    assert import_csv(str(path), sessions).updated == 1


def test_multiline_cells_and_blank_lines(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    text = 'customer_no,name,phones,notes\nM1,张三,13800138000,"第一行\n第二行, 有逗号"\n\n,,,\n'
    assert import_csv(text, sessions).rows == 1
    assert store.lookup("13800138000").cards[0].notes == "第一行\n第二行, 有逗号"


def test_header_only_imports_nothing(sessions: sessionmaker[Session]) -> None:
    assert import_csv("customer_no,name\n", sessions).rows == 0


# -- bad files: everything reported, nothing written ----------------------------------------------------
BAD = (
    "customer_no,name,vip,postal_code,timezone,language,phones,products,orders\n"
    "OK1,好客户,是,100022,Asia/Shanghai,zh,13800138000,KFR空调|S1|2023-05-06|李师傅,repair|closed|2024-01-02 10:00|"
    "2024-01-03|赵强|不制冷|S1\n"                                                      # row 2: fine
    ",无编号,,,,,,,\n"                                                                  # 3 customer_no
    "B4,,,,,,,,\n"                                                                      # 4 name
    "B5,坏电话,,,,,13800138000; <unknown>; 12345,,\n"                                   # 5 phones
    "B6,坏VIP,maybe,,,,,,\n"                                                            # 6 vip
    "B7,坏日期,,,,,,空调|S7|2023-02-30|李师傅,\n"                                        # 7 products
    "B8,未来,,,,,,空调|S8|2999-01-01|李师傅,\n"                                          # 8 products
    "B9,字段多,,,,,,空调|S9|2023-01-01|李师傅|多余,\n"                                    # 9 products
    "B10,坏工单,,,,,,,fix|closed|2024-01-01\n"                                          # 10 orders
    "B11,先关后开,,,,,,,repair|closed|2024-01-05|2024-01-01\n"                          # 11 orders
    "B12,序列号,,,,,,空调|S12|2023-01-01|,repair|open|2024-01-01||赵强|漏水|NOPE\n"       # 12 orders
    "OK1,重复,,,,,,,\n"                                                                 # 13 customer_no
    "B14,少一列\n"                                                                      # 14 cell count
    f"B15,{'长' * 200},,,,,,,\n"                                                         # 15 name
    "B16,邮编,,10 00#22,,,,,\n"                                                          # 16 postal_code
    "B17,时区,,,Mars/Olympus,,,,\n"                                                      # 17 timezone
    "B18,语言,,,,中文,,,\n"                                                              # 18 language
    "B19,控制\x07字符,,,,,,,\n"                                                           # 19 name
    "B20,重复产品,,,,,,空调|S20|2023-01-01|; 冰箱|S20|2023-01-01|,\n"                     # 20 products
    "B 21,空格,,,,,,,\n"                                                                 # 21 customer_no
    "B22,时间,,,,,,,repair|open|昨天\n"                                                   # 22 orders
    "B23,开着的单有关闭时间,,,,,,,repair|open|2024-01-01|2024-01-02\n"                     # 23 orders
)


def test_every_bad_row_is_reported_and_nothing_written(sessions: sessionmaker[Session]) -> None:
    import_csv("customer_no,name,phones\nOLD,老客户,13900139000\n", sessions)
    before = counts(sessions)
    errors = errors_of(BAD, sessions)
    assert [(e.row, e.column) for e in errors] == [
        (3, "customer_no"), (4, "name"), (5, "phones"), (6, "vip"), (7, "products"), (8, "products"),
        (9, "products"), (10, "orders"), (11, "orders"), (12, "orders"), (13, "customer_no"), (14, "-"),
        (15, "name"), (16, "postal_code"), (17, "timezone"), (18, "language"), (19, "name"), (20, "products"),
        (21, "customer_no"), (22, "orders"), (23, "orders"),
    ]
    messages = {e.row: e.message for e in errors}
    assert "'<unknown>'" in messages[5] and "'12345'" in messages[5] and "13800138000" not in messages[5]
    assert "day is out of range" in messages[7]
    assert "future" in messages[8]
    assert "found 5 fields" in messages[9]
    assert "kind 'fix'" in messages[10]
    assert "before opened_at" in messages[11]
    assert "NOPE" in messages[12]
    assert "row 2" in messages[13]
    assert "expected 9 cells, found 2" in messages[14]
    assert str(errors[0]) == "row 3, column customer_no: required, but empty"
    assert counts(sessions) == before


def test_error_message_lists_rows(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(CustomerImportError) as caught:
        import_csv(HEADER + "X1,,,,,\nX2,名,?,,,\n", sessions)
    message = str(caught.value)
    assert "2 error(s) in 2 row(s), nothing imported" in message
    assert "row 2, column name: required, but empty" in message
    assert "row 3, column vip: expected yes/no" in message


def test_bad_header_is_reported_with_the_rows(sessions: sessionmaker[Session]) -> None:
    errors = errors_of("customer_no,nmae,phones,phones\nH1,甲,abc,abc\n", sessions)
    assert [(e.row, e.column) for e in errors] == [(1, "nmae"), (1, "phones"), (1, "name"), (2, "phones")]
    assert counts(sessions)["customers"] == 0


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty"),
    (b"", "empty"),
    ('customer_no,name\nQ1,"unterminated\n', "malformed CSV"),
    (b"customer_no,name\nX,\xff\xfe\xfd\xfc\n", "neither UTF-8 nor GB18030"),
])
def test_unreadable_files(sessions: sessionmaker[Session], text: str | bytes, fragment: str) -> None:
    errors = errors_of(text, sessions)
    assert fragment in errors[-1].message


def test_failure_while_writing_rolls_everything_back(sessions: sessionmaker[Session],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a failure after earlier batches were flushed leaves the database untouched."""
    monkeypatch.setattr(importer, "BATCH", 2)
    import_csv("customer_no,name,phones\nR0,老客户,13900139000\n", sessions)
    before = counts(sessions)
    writes = 0

    class FailingBulkRows(BulkRows):
        def write(self, conn: Connection) -> None:
            nonlocal writes
            writes += 1
            if writes == 3:
                raise RuntimeError("disk full")
            super().write(conn)

    monkeypatch.setattr(importer, "BulkRows", FailingBulkRows)
    rows = "".join(f"R{n},客户{n},1380013800{n}\n" for n in range(6))  # R0 is an update
    with pytest.raises(RuntimeError, match="disk full"):
        import_csv("customer_no,name,phones\n" + rows, sessions)
    assert writes == 3
    assert counts(sessions) == before
    with sessions() as session:
        assert session.scalar(select(Customer.name).where(Customer.customer_no == "R0")) == "老客户"


# -- re-import ---------------------------------------------------------------------------------
def test_reimport_updates_the_customer(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    import_csv(SAMPLE, sessions)
    zhang = store.lookup("13800138000").cards[0]
    aircon = next(p for p in zhang.products if p.serial == "AC2023050601")
    heater = next(p for p in zhang.products if p.serial == "WH2021110302")
    store.add_contact(zhang.id, "call", datetime(2025, 6, 3, tzinfo=UTC), "L1", "催修")
    before = counts(sessions)

    update = (
        "customer_no,name,vip,phones,products,orders\n"
        "C0001,张伟（已更新）,是,13800138000; 13811112222,"
        "KFR-35GW/BP3 变频挂式空调|AC2023050601|2023-05-06|李师傅; XQB80 洗衣机|WM9|2025-01-01|陈师傅,"
        "repair|closed|2025-06-02 08:45|2025-06-04 10:00|赵强|外机噪音大，已更换风扇电机|AC2023050601\n"
    )
    report = import_csv(update, sessions)
    assert (report.created, report.updated) == (0, 1)
    card = store.card(zhang.id)
    assert card is not None
    assert card.name == "张伟（已更新）" and card.vip is True
    # Columns absent from the file keep their values.
    assert card.address == zhang.address and card.notes == zhang.notes
    assert [p.e164 for p in card.phones] == ["+8613800138000", "+8613811112222"]
    assert store.lookup("010-65661234").status == "unknown"
    # The air conditioner is the same record (matched by serial); the heater is gone; orders survive.
    assert {p.serial: p.id for p in card.products} == {"AC2023050601": aircon.id, "WM9": card.products[1].id}
    assert heater.id not in {p.id for p in card.products}
    assert len(card.service_orders) == 3  # updated in place, none lost, none doubled
    newest = card.service_orders[0]
    assert (newest.status, newest.fault_description) == ("closed", "外机噪音大，已更换风扇电机")
    assert card.open_repair is False
    assert len(card.recent_contacts) == 1
    after = counts(sessions)
    assert after["customers"] == before["customers"]
    assert after["service_orders"] == before["service_orders"]

    # Importing the same file again changes nothing.
    import_csv(update, sessions)
    assert counts(sessions) == after


def test_removed_product_keeps_its_orders(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    import_csv(HEADER + "R1,甲,,13800138000,空调|S1|2023-01-01|李,install|closed|2023-01-01 10:00||李||S1\n",
               sessions)
    import_csv("customer_no,name,products\nR1,甲,冰箱|S2|2024-01-01|王\n", sessions)
    card = store.lookup("13800138000").cards[0]
    assert [p.serial for p in card.products] == ["S2"]
    assert [(o.kind, o.product_id) for o in card.service_orders] == [("install", None)]


def test_empty_cell_clears_a_present_column(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    import_csv("customer_no,name,phones,notes\nE1,甲,13800138000,备注\n", sessions)
    import_csv("customer_no,name,phones,notes\nE1,甲,13900139000,\n", sessions)
    card = store.lookup("13900139000").cards[0]
    assert card.notes == "" and [p.e164 for p in card.phones] == ["+8613900139000"]


def test_duplicate_numbers_in_one_row_are_merged(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    import_csv("customer_no,name,phones\nD1,甲,13800138000；+86 138 0013 8000; 138-0013-8000\n", sessions)
    assert [p.raw for p in store.lookup("13800138000").cards[0].phones] == ["13800138000"]


def test_file_over_batches(sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
                           store: CustomerStore) -> None:
    monkeypatch.setattr(importer, "BATCH", 3)
    rows = "".join(f"N{n},客户{n},13700137000\n" for n in range(10))
    assert import_csv("customer_no,name,phones\n" + rows, sessions).created == 10
    assert store.lookup("13700137000").total == 10
    assert import_csv("customer_no,name,phones\n" + rows, sessions).updated == 10
    assert counts(sessions)["customer_phones"] == 10


# -- command line ----------------------------------------------------------------------------
def run_cli(sessions: sessionmaker[Session], *argv: str, settings: object = None) -> int:
    import argparse

    from cti.customers.cli import add_commands

    parser = argparse.ArgumentParser(prog="hotline")
    add_commands(parser.add_subparsers(dest="command", required=True), lambda: sessions)
    args = parser.parse_args(argv)
    return int(args.func(args, settings))


def test_cli_import_and_lookup(sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert run_cli(sessions, "customers", "import", str(SAMPLE)) == 0
    assert "imported 6 customers (6 new" in capsys.readouterr().out
    assert run_cli(sessions, "customers", "lookup", "138-0013-8000") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "match" and data["cards"][0]["name"] == "张伟"
    assert run_cli(sessions, "customers", "lookup", "13500135000") == 1
    assert json.loads(capsys.readouterr().out)["status"] == "unknown"
    assert run_cli(sessions, "customers", "lookup", "anonymous") == 2
    assert json.loads(capsys.readouterr().out)["status"] == "invalid"


def test_cli_import_refuses_bad_file(sessions: sessionmaker[Session], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "A,甲,,13800138000,,\nB,,,,,\nC,丙,maybe,abc,,\n", encoding="utf-8")
    assert run_cli(sessions, "customers", "import", str(bad)) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "row 3, column name: required, but empty",
        "row 4, column vip: expected yes/no (1/0, true/false, 是/否), got 'maybe'",
        "row 4, column phones: invalid phone number 'abc': only digits, spaces, '+', '-', '(', ')', '.' and '/' "
        "are allowed",
        "3 error(s) in 2 row(s); nothing was imported",
    ]
    assert counts(sessions)["customers"] == 0
    assert run_cli(sessions, "customers", "import", str(tmp_path / "missing.csv")) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_region_from_settings_or_flag(sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    import_csv("customer_no,name,phones\nUS1,Bob,+1 650 253 0000\n", sessions)
    us = SimpleNamespace(default_region="US")
    assert run_cli(sessions, "customers", "lookup", "(650) 253-0000", settings=us) == 0
    assert run_cli(sessions, "customers", "lookup", "(650) 253-0000", "--region", "US") == 0
    assert run_cli(sessions, "customers", "lookup", "(650) 253-0000") == 2  # read as a Chinese number
    capsys.readouterr()


def test_cli_demo(sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(sessions, "customers", "demo", "--count", "25") == 0
    assert "inserted 25 demo customers" in capsys.readouterr().out
    assert counts(sessions)["customers"] == 25
    with pytest.raises(SystemExit):
        run_cli(sessions, "customers", "demo", "--count", "-1")
    capsys.readouterr()


def test_new_and_existing_customers_in_one_batch(sessions: sessionmaker[Session], store: CustomerStore) -> None:
    """Updated customers get ORM-inserted products, new ones bulk-inserted: ids must not collide."""
    import_csv(SAMPLE, sessions)
    text = (HEADER
            + "NEW1,新甲,,13511111111,冰箱|N1|2024-01-01|李,repair|open|2025-01-01 09:00||赵||N1\n"
            + "C0001,张伟,,13800138000,空调|AC2023050601|2023-05-06|李; 洗衣机|NEWWM|2024-02-02|王,\n"
            + "NEW2,新乙,,13522222222,油烟机|N2|2024-03-03|周,\n")
    report = import_csv(text, sessions)
    assert (report.created, report.updated) == (2, 1)
    new1 = store.lookup("13511111111").cards[0]
    assert [p.serial for p in new1.products] == ["N1"]
    assert new1.open_repair and new1.service_orders[0].product_model == "冰箱"
    assert [p.serial for p in store.lookup("13522222222").cards[0].products] == ["N2"]
    assert {p.serial for p in store.lookup("13800138000").cards[0].products} == {"AC2023050601", "NEWWM"}
    with sessions() as session:
        ids = session.scalars(select(Product.id)).all()
    assert len(ids) == len(set(ids))
