"""Phone numbers to E.164: the one key every customer lookup goes through.

Stored numbers (typed by people, imported from spreadsheets) and caller IDs (what
Asterisk hands us from the carrier) must meet on the same string, so both go
through `normalize`. Parsing and validation are Google's libphonenumber rules
(`phonenumbers`), which know Chinese trunk prefixes (``0``), the international
prefix (``00``) and which area codes and mobile ranges exist.

Caller IDs are attacker-controlled text (a SIP ``From`` header), so before the
library sees anything we insist on a short string of digits and the usual
punctuation; everything else is an `InvalidPhoneNumber`, never another exception.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

#: Longer input is refused before parsing: E.164 has at most 15 digits, and a
#: formatted number with prefix, spaces and brackets stays well below this.
MAX_INPUT_LENGTH = 32

# Digits with the punctuation people and carriers put between them. Letters are
# refused on purpose: libphonenumber would read "1-800-FLOWERS" as a vanity number,
# which a caller ID never is.
_ALLOWED = re.compile(r"[0-9+\-(). /]+")
_DIGITS = re.compile(r"[0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SEPARATORS = re.compile(r"[\s\-().\/]+")

KIND_MOBILE = "mobile"
KIND_LANDLINE = "landline"
KIND_OTHER = "other"


class InvalidPhoneNumber(ValueError):
    """The input is not a dialable phone number (garbage, hostile or anonymous caller ID)."""

    def __init__(self, raw: object, reason: str) -> None:
        self.raw = raw
        self.reason = reason
        shown = raw if isinstance(raw, str) and len(raw) <= MAX_INPUT_LENGTH else _shorten(raw)
        super().__init__(f"invalid phone number {shown!r}: {reason}")


def _shorten(raw: object) -> str:
    text = raw if isinstance(raw, str) else repr(raw)
    return text[:MAX_INPUT_LENGTH] + "..." if len(text) > MAX_INPUT_LENGTH else text


def _clean(raw: object) -> str:
    """The input as ASCII digits and punctuation, or `InvalidPhoneNumber`."""
    if not isinstance(raw, str):
        raise InvalidPhoneNumber(raw, f"expected text, got {type(raw).__name__}")
    # Full-width digits and brackets come from Chinese input methods and spreadsheets.
    text = unicodedata.normalize("NFKC", raw)
    if _CONTROL.search(text):
        # Line breaks and NULs in a caller ID are injection attempts, not formatting.
        raise InvalidPhoneNumber(raw, "contains control characters")
    text = text.strip(" ")
    if not text:
        raise InvalidPhoneNumber(raw, "empty")
    if len(text) > MAX_INPUT_LENGTH:
        raise InvalidPhoneNumber(raw, f"longer than {MAX_INPUT_LENGTH} characters")
    if not _ALLOWED.fullmatch(text):
        raise InvalidPhoneNumber(raw, "only digits, spaces, '+', '-', '(', ')', '.' and '/' are allowed")
    if "+" in text[1:] or text.count("+") > 1:
        raise InvalidPhoneNumber(raw, "'+' may only lead the number")
    if not _DIGITS.search(text):
        raise InvalidPhoneNumber(raw, "no digits")
    return _SEPARATORS.sub("", text)


def parse(raw: str, default_region: str = "CN") -> phonenumbers.PhoneNumber:
    """The validated libphonenumber object (use `normalize` unless you need its type)."""
    text = _clean(raw)
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as exc:
        raise InvalidPhoneNumber(raw, str(exc.args[0] if exc.args else exc)) from None
    except Exception as exc:  # the library must not leak its own failure modes to callers
        raise InvalidPhoneNumber(raw, f"unparseable ({type(exc).__name__})") from None
    if not phonenumbers.is_valid_number(number):
        region = phonenumbers.region_code_for_number(number) or default_region
        raise InvalidPhoneNumber(raw, f"not a valid number for region {region}")
    return number


def normalize(raw: str, default_region: str = "CN") -> str:
    """E.164 (``+8613800138000``) for any way of writing one number; `InvalidPhoneNumber` otherwise.

    National numbers are read in `default_region` (a CLDR region code, ``CN`` for
    mainland China): ``13800138000``, ``013800138000`` (a mobile dialled with the
    trunk prefix, as carriers present calls from another area), ``010-12345678``,
    ``(021) 8765 4321``, ``008613800138000`` and ``+86 21 87654321`` all work.
    """
    return phonenumbers.format_number(parse(raw, default_region), phonenumbers.PhoneNumberFormat.E164)


def normalize_with_kind(raw: str, default_region: str = "CN") -> tuple[str, str]:
    """(E.164, kind) with one parse; kind is ``mobile``, ``landline`` or ``other`` (400 numbers, VoIP)."""
    number = parse(raw, default_region)
    kind = phonenumbers.number_type(number)
    if kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE):
        # FIXED_LINE_OR_MOBILE: plans (e.g. the US) that do not tell them apart.
        label = KIND_MOBILE
    elif kind == PhoneNumberType.FIXED_LINE:
        label = KIND_LANDLINE
    else:
        label = KIND_OTHER
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), label


def check_region(region: str) -> str:
    """`region` if libphonenumber knows it (``CN``, ``HK``, ``US``...); ValueError otherwise.

    Called once at start-up, so a typo in the configuration fails loudly instead of
    turning every national caller ID into an "invalid" lookup.
    """
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {region!r} (expected a region code such as 'CN')")
    return region
