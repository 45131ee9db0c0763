"""Realistic Chinese demo customers, fast enough to fill a database with a million of them.

Random customers live in real provinces, cities and districts with the matching
landline area code and postal code, own 1-3 appliances (air conditioners, water
heaters, washing machines...) with install dates and installers, and have install
and repair orders with fault descriptions; about 5 % are VIPs and some households
share a landline (a lookup with several matches).

Fixed customers, the same whatever the seed, created once (skipped if present),
so demos and tests can dial them:

==============  ==================================================================
number          who
==============  ==================================================================
13800138000     DEMO-0001 张建国, Beijing: 2 products (air conditioner, water
                heater), an OPEN repair order on the air conditioner, a closed one
13900139000     DEMO-0002 李秀英, Shanghai, VIP, a washing machine
13700137000     shared by DEMO-0003 王磊 and DEMO-0004 王芳 (same Shenzhen household)
==============  ==================================================================

Random numbers never use these three. Rows go in with Core executemany in batches
of 5,000 customers (`cti.customers.models.BulkRows`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cti.customers.models import BulkRows, Customer, lock_for_bulk_insert, next_ids

#: The fixed demo numbers (E.164) documented above.
OPEN_REPAIR_NUMBER = "+8613800138000"
VIP_NUMBER = "+8613900139000"
SHARED_NUMBER = "+8613700137000"
FIXED_NUMBERS = frozenset({OPEN_REPAIR_NUMBER, VIP_NUMBER, SHARED_NUMBER})

BATCH = 5000
T = TypeVar("T")
# China has had no daylight saving time since 1991: a fixed offset is exact and much
# cheaper than a ZoneInfo lookup per generated row.
CST = timezone(timedelta(hours=8))


@dataclass(frozen=True)
class Place:
    region: str
    province: str
    city: str
    districts: tuple[str, ...]
    #: Trunk-prefix-free area code ("10" for Beijing, "755" for Shenzhen).
    area: str
    postal: str
    #: Digits in a local landline number (Xiamen still has 7).
    local_digits: int = 8


PLACES: tuple[Place, ...] = (
    Place("华北", "北京市", "北京市", ("朝阳区", "海淀区", "东城区", "西城区", "丰台区"), "10", "100"),
    Place("华北", "天津市", "天津市", ("和平区", "南开区", "河西区"), "22", "300"),
    Place("华北", "河北省", "石家庄市", ("长安区", "桥西区"), "311", "050"),
    Place("华东", "上海市", "上海市", ("浦东新区", "徐汇区", "静安区", "闵行区"), "21", "200"),
    Place("华东", "江苏省", "南京市", ("鼓楼区", "玄武区", "建邺区"), "25", "210"),
    Place("华东", "江苏省", "苏州市", ("姑苏区", "工业园区"), "512", "215"),
    Place("华东", "浙江省", "杭州市", ("西湖区", "滨江区", "余杭区"), "571", "310"),
    Place("华东", "山东省", "济南市", ("历下区", "市中区"), "531", "250"),
    Place("华东", "山东省", "青岛市", ("市南区", "崂山区"), "532", "266"),
    Place("华东", "福建省", "厦门市", ("思明区", "湖里区"), "592", "361", 7),
    Place("华南", "广东省", "广州市", ("天河区", "越秀区", "海珠区"), "20", "510"),
    Place("华南", "广东省", "深圳市", ("南山区", "福田区", "宝安区"), "755", "518"),
    Place("华中", "湖北省", "武汉市", ("武昌区", "洪山区", "江汉区"), "27", "430"),
    Place("华中", "湖南省", "长沙市", ("岳麓区", "芙蓉区"), "731", "410"),
    Place("华中", "河南省", "郑州市", ("金水区", "二七区"), "371", "450"),
    Place("西南", "四川省", "成都市", ("武侯区", "锦江区", "高新区"), "28", "610"),
    Place("西南", "重庆市", "重庆市", ("渝中区", "江北区", "南岸区"), "23", "400"),
    Place("西北", "陕西省", "西安市", ("雁塔区", "碑林区"), "29", "710"),
    Place("东北", "辽宁省", "沈阳市", ("和平区", "沈河区"), "24", "110"),
    Place("东北", "黑龙江省", "哈尔滨市", ("南岗区", "道里区"), "451", "150"),
)

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国志文斌海燕鹏飞宇浩然欣怡子涵梓轩晨"
ROADS = ("人民路", "解放路", "中山路", "建设路", "长江路", "和平街", "文化路", "科技园路", "新华路",
         "滨江大道", "光明街")
COMMUNITIES = ("阳光花园", "锦绣家园", "翠湖小区", "金色港湾", "绿城公寓", "幸福里", "碧桂园", "万科城", "华府小区")
MOBILE_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155",
                   "157", "158", "159", "166", "176", "177", "180", "181", "182", "183", "185", "186", "187",
                   "188", "189", "198", "199")
INSTALLERS = ("李师傅", "王师傅", "张师傅", "刘师傅", "陈师傅", "赵师傅", "周师傅", "吴师傅", "孙师傅", "郑师傅")
TECHNICIANS = ("赵强", "孙磊", "钱峰", "周涛", "吴斌", "郑凯", "冯刚", "陈亮", "褚明", "卫东")


@dataclass(frozen=True)
class ProductLine:
    category: str
    serial_prefix: str
    models: tuple[str, ...]
    faults: tuple[str, ...]


PRODUCT_LINES: tuple[ProductLine, ...] = (
    ProductLine("空调", "AC", ("KFR-35GW/BP3 变频挂式空调", "KFR-26GW/N1 挂式空调", "KFR-72LW/BP2 立式柜机"),
                ("不制冷", "外机噪音大", "室内机漏水", "遥控器失灵", "显示E1故障码", "制热效果差")),
    ProductLine("热水器", "WH", ("JSQ25-13 燃气热水器", "F60-21A 电热水器", "JSQ30-16 零冷水燃气热水器"),
                ("无法点火", "水温忽冷忽热", "漏水", "显示E4故障码", "出水量小")),
    ProductLine("洗衣机", "WM", ("XQG100-BD14 滚筒洗衣机", "XQB80-2208 波轮洗衣机", "TG100V 洗烘一体机"),
                ("不脱水", "排水慢", "运行时震动大", "显示E21故障码", "门锁打不开")),
    ProductLine("冰箱", "RF", ("BCD-470WDPG 十字对开门冰箱", "BCD-216 三门冰箱"),
                ("冷藏室不制冷", "结霜严重", "压缩机异响", "冷冻室温度高")),
    ProductLine("油烟机", "HD", ("CXW-200-E900C 油烟机", "CXW-260 侧吸油烟机"), ("吸力不足", "噪音大", "灯不亮")),
    ProductLine("净水器", "WP", ("MRO-1781 净水器", "RO-600G 反渗透净水器"), ("出水慢", "滤芯提示更换", "漏水")),
)
CONTACT_SUMMARIES = ("咨询保修政策", "预约清洗保养", "询问维修进度", "投诉上门迟到", "咨询新品购买", "回访满意度调查")


def _fixed_customers() -> list[dict[str, Any]]:
    """The documented demo customers; values are the same on every run."""
    def at(y: int, mo: int, d: int, h: int = 10, mi: int = 0) -> datetime:
        return datetime(y, mo, d, h, mi, tzinfo=CST)

    return [
        {"customer": {"customer_no": "DEMO-0001", "name": "张建国", "vip": False, "region": "华北",
                      "province": "北京市", "city": "北京市", "district": "海淀区",
                      "address": "中关村大街27号中关村大厦1201室", "postal_code": "100080",
                      "notes": "演示客户：有一张未完成的维修单"},
         "phones": [(OPEN_REPAIR_NUMBER, "13800138000", "mobile"), ("+861062345678", "010-62345678", "landline")],
         "products": [("KFR-35GW/BP3 变频挂式空调", "AC2023050601", date(2023, 5, 6), "李师傅"),
                      ("JSQ25-13 燃气热水器", "WH2021110302", date(2021, 11, 3), "王师傅")],
         "orders": [(0, "install", "closed", at(2023, 5, 6), at(2023, 5, 6, 11, 30), "李师傅", "首次安装"),
                    (1, "install", "closed", at(2021, 11, 3), at(2021, 11, 3, 12), "王师傅", "首次安装"),
                    (0, "repair", "closed", at(2024, 7, 15, 9, 20), at(2024, 7, 16, 15), "赵强", "不制冷，已加氟"),
                    (0, "repair", "open", at(2025, 6, 2, 8, 45), None, "赵强", "外机噪音大")]},
        {"customer": {"customer_no": "DEMO-0002", "name": "李秀英", "vip": True, "region": "华东",
                      "province": "上海市", "city": "上海市", "district": "浦东新区",
                      "address": "世纪大道100号45层", "postal_code": "200120", "notes": "演示客户：VIP"},
         "phones": [(VIP_NUMBER, "13900139000", "mobile")],
         "products": [("XQG100-BD14 滚筒洗衣机", "WM2022081501", date(2022, 8, 15), "陈师傅")],
         "orders": [(0, "install", "closed", at(2022, 8, 15), at(2022, 8, 15, 11), "陈师傅", "首次安装"),
                    (0, "repair", "closed", at(2023, 12, 1, 14), at(2023, 12, 2, 10), "孙磊", "不脱水")]},
        {"customer": {"customer_no": "DEMO-0003", "name": "王磊", "vip": False, "region": "华南",
                      "province": "广东省", "city": "深圳市", "district": "南山区",
                      "address": "科技园路1号3栋502", "postal_code": "518057", "notes": "演示客户：与王芳共用号码"},
         "phones": [(SHARED_NUMBER, "13700137000", "mobile"), ("+8675587654321", "0755-87654321", "landline")],
         "products": [("BCD-470WDPG 十字对开门冰箱", "RF2020031001", date(2020, 3, 10), "刘师傅")],
         "orders": [(0, "install", "closed", at(2020, 3, 10), at(2020, 3, 10, 11), "刘师傅", "首次安装")]},
        {"customer": {"customer_no": "DEMO-0004", "name": "王芳", "vip": False, "region": "华南",
                      "province": "广东省", "city": "深圳市", "district": "南山区",
                      "address": "科技园路1号3栋502", "postal_code": "518057", "notes": "演示客户：与王磊共用号码"},
         "phones": [(SHARED_NUMBER, "13700137000", "mobile")],
         "products": [("F60-21A 电热水器", "WH2024020801", date(2024, 2, 8), "周师傅")],
         "orders": [(0, "install", "closed", at(2024, 2, 8), at(2024, 2, 8, 11), "周师傅", "首次安装")]},
    ]


class _Rng(random.Random):
    """`random.Random` with cheaper integer and choice draws (a million customers make ~50M draws)."""

    def between(self, low: int, high: int) -> int:
        """Uniform integer in [low, high), like `randrange` but several times faster."""
        return low + int(self.random() * (high - low))

    def pick(self, seq: Sequence[T]) -> T:
        return seq[int(self.random() * len(seq))]

    def weighted(self, cumulative: Sequence[float]) -> int:
        """Index i drawn with probability cumulative[i] - cumulative[i - 1] (last entry 1.0)."""
        roll = self.random()
        for index, bound in enumerate(cumulative):
            if roll < bound:
                return index
        return len(cumulative) - 1


class _Generator:
    def __init__(self, seed: int, now: datetime) -> None:
        self.rng = _Rng(seed)
        self.now = now
        self.today = now.astimezone(CST).date()
        self.last_landline: tuple[str, str] | None = None

    def mobile(self) -> tuple[str, str]:
        rng = self.rng
        while True:
            national = rng.pick(MOBILE_PREFIXES) + f"{rng.between(0, 100_000_000):08d}"
            e164 = "+86" + national
            if e164 not in FIXED_NUMBERS:
                return e164, national

    def landline(self, place: Place) -> tuple[str, str]:
        # Local numbers starting 2-7 are ordinary subscriber lines in every area we use.
        rest = place.local_digits - 1
        local = f"{self.rng.between(2, 8)}{self.rng.between(0, 10 ** rest):0{rest}d}"
        return "+86" + place.area + local, f"0{place.area}-{local}"

    def customer(self, batch: BulkRows, customer_no: str) -> None:
        rng = self.rng
        place = rng.pick(PLACES)
        district = rng.pick(place.districts)
        name = rng.pick(SURNAMES) + "".join(rng.pick(GIVEN) for _ in range(rng.pick((1, 2, 2))))
        street = (f"{rng.pick(ROADS)}{rng.between(1, 999)}号{rng.pick(COMMUNITIES)}"
                  f"{rng.between(1, 30)}栋{rng.between(1, 6)}单元{rng.between(1, 33)}{rng.between(1, 5):02d}室")
        pos = len(batch.customers)
        batch.customers.append({
            "customer_no": customer_no, "name": name, "vip": rng.random() < 0.05, "region": place.region,
            "province": place.province, "city": place.city, "district": district, "address": street,
            "postal_code": place.postal + f"{rng.between(0, 1000):03d}", "timezone": "Asia/Shanghai",
            "language": "zh" if rng.random() < 0.97 else "en", "notes": "", "created_at": self.now,
            "updated_at": self.now,
        })
        numbers: dict[str, tuple[str, str]] = {}
        if rng.random() < 0.96:
            e164, raw = self.mobile()
            numbers[e164] = (raw, "mobile")
        roll = rng.random()
        if roll < 0.03 and self.last_landline is not None:
            # Another household member with their own customer record: a shared landline.
            numbers.setdefault(self.last_landline[0], (self.last_landline[1], "landline"))
        elif roll < 0.30 or not numbers:
            e164, raw = self.landline(place)
            numbers.setdefault(e164, (raw, "landline"))
            self.last_landline = (e164, raw)
        if rng.random() < 0.05:
            e164, raw = self.mobile()
            numbers.setdefault(e164, (raw, "mobile"))
        for e164, (raw, kind) in numbers.items():
            batch.phones.append((pos, {"e164": e164, "raw": raw, "kind": kind}))

        for _ in range(1 + rng.weighted((0.55, 0.87, 1.0))):
            self._product(batch, pos, place)
        if rng.random() < 0.2:
            for _ in range(rng.pick((1, 1, 2))):
                at = self.now - timedelta(days=rng.between(1, 700), minutes=rng.between(0, 1440))
                batch.contacts.append((pos, {"kind": "call", "linkedid": None, "at": at,
                                             "summary": rng.pick(CONTACT_SUMMARIES)}))

    def _product(self, batch: BulkRows, pos: int, place: Place) -> None:
        rng = self.rng
        line = rng.pick(PRODUCT_LINES)
        installed = self.today - timedelta(days=rng.between(10, 8 * 365))
        installer = rng.pick(INSTALLERS)
        product_pos = len(batch.products)
        batch.products.append((pos, {
            "model": rng.pick(line.models),
            "serial": f"{line.serial_prefix}{installed:%Y%m%d}{rng.between(0, 1_000_000):06d}",
            "installed_on": installed, "installer": installer,
        }))
        opened = datetime(installed.year, installed.month, installed.day, rng.between(8, 17),
                          rng.pick((0, 15, 30, 45)), tzinfo=CST)
        batch.orders.append((pos, product_pos, {
            "kind": "install", "status": "closed", "opened_at": opened,
            "closed_at": opened + timedelta(minutes=rng.between(40, 180)), "technician": installer,
            "fault_description": "首次安装",
        }))
        age_days = (self.today - installed).days
        repairs = rng.weighted((0.60, 0.87, 0.97, 1.0))
        for _ in range(repairs):
            opened = (datetime(installed.year, installed.month, installed.day, tzinfo=CST)
                      + timedelta(days=rng.between(1, max(2, age_days)), hours=rng.between(8, 19),
                                  minutes=rng.between(0, 60)))
            recent = (self.now - opened) < timedelta(days=20)
            # Both draws always happen, so the random stream does not depend on `now`.
            open_roll, cancel_roll = rng.random(), rng.random()
            status = "open" if recent and open_roll < 0.6 else ("cancelled" if cancel_roll < 0.03 else "closed")
            closed = None if status == "open" else min(
                opened + timedelta(hours=rng.between(2, 96)), self.now)
            batch.orders.append((pos, product_pos, {
                "kind": "repair", "status": status, "opened_at": opened, "closed_at": closed,
                "technician": rng.pick(TECHNICIANS), "fault_description": rng.pick(line.faults),
            }))


def _add_fixed(batch: BulkRows, spec: dict[str, Any], now: datetime) -> None:
    pos = len(batch.customers)
    batch.customers.append({"timezone": "Asia/Shanghai", "language": "zh", "created_at": now, "updated_at": now,
                            **spec["customer"]})
    for e164, raw, kind in spec["phones"]:
        batch.phones.append((pos, {"e164": e164, "raw": raw, "kind": kind}))
    first = len(batch.products)
    for model, serial, installed, installer in spec["products"]:
        batch.products.append((pos, {"model": model, "serial": serial, "installed_on": installed,
                                     "installer": installer}))
    for product, kind, status, opened, closed, technician, fault in spec["orders"]:
        batch.orders.append((pos, first + product, {
            "kind": kind, "status": status, "opened_at": opened, "closed_at": closed, "technician": technician,
            "fault_description": fault}))


def generate(sessions: sessionmaker[Session], count: int, seed: int = 1, *, now: datetime | None = None) -> int:
    """Insert `count` demo customers (the fixed ones first, if missing); returns how many were inserted.

    Deterministic for a given seed and `now`; customer numbers continue after the
    rows already present, so running it twice adds more customers.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    now = now or datetime.now(UTC)
    gen = _Generator(seed, now)
    inserted = 0
    with sessions.begin() as session:
        conn = session.connection()
        lock_for_bulk_insert(conn)
        first_id, _ = next_ids(conn)
        fixed = _fixed_customers()
        present = set(session.scalars(select(Customer.customer_no).where(
            Customer.customer_no.in_([f["customer"]["customer_no"] for f in fixed]))))
        batch = BulkRows()
        for spec in fixed:
            if inserted < count and spec["customer"]["customer_no"] not in present:
                _add_fixed(batch, spec, now)
                inserted += 1
        # Customer numbers follow the ids, so a second run continues instead of colliding.
        for n in range(first_id + inserted, first_id + count):
            gen.customer(batch, f"DM{n:09d}")
            if len(batch.customers) >= BATCH:
                batch.write(conn)
                batch = BulkRows()
        batch.write(conn)
    return count
