"""Phone normalisation: every way of writing one number gives one E.164; garbage is refused cleanly."""

from __future__ import annotations

import pytest

from cti.customers.phone import (
    MAX_INPUT_LENGTH,
    InvalidPhoneNumber,
    check_region,
    normalize,
    normalize_with_kind,
)

MOBILE = "+8613800138000"
BEIJING = "+861012345678"
SHANGHAI = "+862187654321"


@pytest.mark.parametrize("raw", [
    "13800138000",
    "+8613800138000",
    "008613800138000",
    "86 138 0013 8000",
    "8613800138000",
    "138-0013-8000",
    "138 0013 8000",
    "(138) 0013-8000",
    "+86 138.0013.8000",
    " 13800138000 ",
    "013800138000",  # caller ID: a mobile presented with the trunk prefix (call from another area)
    "+86 (0) 138 0013 8000",
    "１３８００１３８０００",  # full-width digits from a Chinese input method
])
def test_mobile_notations_meet(raw: str) -> None:
    assert normalize(raw) == MOBILE


@pytest.mark.parametrize(("raw", "expected"), [
    ("010-12345678", BEIJING),
    ("01012345678", BEIJING),
    ("(010) 1234 5678", BEIJING),
    ("+86 10 12345678", BEIJING),
    ("(021) 8765 4321", SHANGHAI),
    ("（021）8765 4321", SHANGHAI),  # full-width brackets
    ("+86 21 87654321", SHANGHAI),
    ("02187654321", SHANGHAI),
    ("008602187654321", SHANGHAI),
    ("0755-87654321", "+8675587654321"),
    ("400-800-1234", "+864008001234"),
])
def test_landline_notations(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_foreign_numbers_keep_their_country() -> None:
    assert normalize("+1 650 253 0000") == "+16502530000"
    assert normalize("001 650 253 0000") == "+16502530000"  # China's international prefix
    assert normalize("+852 2123 4567") == "+85221234567"


def test_default_region_reads_national_numbers() -> None:
    assert normalize("(650) 253-0000", "US") == "+16502530000"
    assert normalize("+8613800138000", "US") == MOBILE


@pytest.mark.parametrize(("raw", "kind"), [
    ("13800138000", "mobile"),
    ("010-12345678", "landline"),
    ("400-800-1234", "other"),
])
def test_kind(raw: str, kind: str) -> None:
    assert normalize_with_kind(raw)[1] == kind


HOSTILE = [
    "",
    "   ",
    "<unknown>",
    "unknown",
    "anonymous",
    "Anonymous",
    "restricted",
    "1-800-FLOWERS",
    "138001380OO",
    '"13800138000"',
    "13800138000;drop table customers",
    "13800138000'--",
    "13800138000\n",
    "138\x0000138000",
    "13800138000\r\nAction: Originate",
    "sip:13800138000@carrier",
    "+",
    "++8613800138000",
    "86+13800138000",
    "---",
    "()",
    "0",
    "12345",
    "1380013800",  # one digit short
    "138001380001",  # one digit long
    "1" * 15,
    "9" * (MAX_INPUT_LENGTH + 1),
    "1" * 10_000,
    "\u202e13800138000",  # right-to-left override
    "１３８abc",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_garbage_is_invalid_phone_number(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize(raw)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert message.startswith("invalid phone number")
    assert len(message) < 200  # an over-long caller ID is not echoed back whole


@pytest.mark.parametrize("raw", [None, 13800138000, b"13800138000", ["13800138000"]])
def test_non_text_is_invalid_phone_number(raw: object) -> None:
    with pytest.raises(InvalidPhoneNumber):
        normalize(raw)  # type: ignore[arg-type]


def test_unknown_default_region_fails_only_national_numbers() -> None:
    assert normalize("+8613800138000", "XX") == MOBILE
    with pytest.raises(InvalidPhoneNumber):
        normalize("13800138000", "XX")


def test_check_region() -> None:
    assert check_region("CN") == "CN"
    with pytest.raises(ValueError, match="unknown phone region"):
        check_region("China")
