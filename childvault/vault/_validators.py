"""Value validators for the field types of a schema.

Every checker takes the text a person typed (or a CSV/JSONL cell) and returns
the canonical form that is stored, or raises :class:`ValidationError`. Messages
never contain the value itself: identity numbers and phone numbers are personal
data, and an error message ends up on terminals, in logs and in bug reports.
At most the length of the value is mentioned.

Only the standard library is used: these rules are small and fixed, and a
dependency would widen the attack surface of the code that touches raw input.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from operator import mul

from childvault._i18n import _t
from childvault.keys._errors import ValidationError

__all__ = [
    "check_date",
    "check_id_number",
    "check_mainland_phone",
    "district_of",
    "id_number_birth_date",
    "id_number_sex",
    "make_id_number",
]

# GB 11643-1999 / ISO 7064 MOD 11-2: weight of position i (1-based, left to
# right over the first 17 characters) is 2**(18-i) mod 11.
_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
# Check character for (sum of weighted digits) mod 11.
_ID_CHECK = "10X98765432"
_EARLIEST_BIRTH = date(1900, 1, 1)

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MOBILE_RE = re.compile(r"1[3-9][0-9]{9}")
# Landline: trunk 0, area code (010 and 020-029 are three digits, every other
# area code four), then a seven- or eight-digit local number that never starts
# with 0 (the trunk prefix).
_LANDLINE3_RE = re.compile(r"(0(?:10|2[0-9]))([1-9][0-9]{6,7})")
_LANDLINE4_RE = re.compile(r"(0[3-9][0-9]{2})([1-9][0-9]{6,7})")
# Separators people write in phone numbers: spaces, hyphens, and parentheses
# around the area code ("(010) 1234 5678"). Compiled once: ``re.sub`` with a
# pattern string looks it up in re's cache on every call (one a row on imports).
_PHONE_SEPARATORS_RE = re.compile(r"[ ()-]")


def _label(field: str | None, default: str) -> str:
    return field or default


def _ascii_form(value: str) -> str:
    # NFKC turns full-width digits and letters (typed with a Chinese input
    # method: "１１０１０５…") into ASCII; everything else is then checked to
    # be ASCII explicitly, because str.isdigit() also accepts other scripts.
    # NFKC maps no ASCII character (ASCII is stable under every normal form),
    # so ASCII input, nearly every cell of an import, skips the normaliser.
    if value.isascii():
        return value.strip()
    return unicodedata.normalize("NFKC", value).strip()


def check_date(value: str, *, field: str | None = None) -> str:
    """Check an ISO 8601 calendar date ``YYYY-MM-DD`` and return it.

    The date must exist (no 2023-02-29) and its year must be 1900 or later,
    the same floor as for identity numbers: an earlier date in a child's
    record is a typing error. Surrounding whitespace and full-width digits
    are accepted and normalised away.
    """
    name = _label(field, "date")
    text = _ascii_form(value)
    if not _DATE_RE.fullmatch(text) or not text.isascii():
        raise ValidationError(
            _t(
                "{name}: not a date (got {n} characters); expected YYYY-MM-DD, for example "
                "2015-03-09",
                name=name,
                n=len(value),
            ),
            field=field,
        )
    try:
        parsed = date.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            _t("{name}: no such calendar date; expected a real date as YYYY-MM-DD", name=name),
            field=field,
        ) from None
    if parsed < _EARLIEST_BIRTH:
        raise ValidationError(
            _t("{name}: date before 1900-01-01; expected a date from 1900 on", name=name),
            field=field,
        )
    return text


def _id_check_char(first17: str) -> str:
    if len(first17) != 17:
        raise ValueError(_t("an identity number's check character covers exactly 17 digits"))
    # map() in C rather than a generator: one identity number a row on imports.
    total = sum(map(mul, map(int, first17), _ID_WEIGHTS))
    return _ID_CHECK[total % 11]


def check_id_number(value: str, *, field: str | None = None, today: date | None = None) -> str:
    """Check a resident identity number (GB 11643-1999) and return it normalised.

    18 characters: a six-digit region code, the birth date ``YYYYMMDD``, a
    three-digit sequence number whose last digit is odd for males, and a check
    character (0-9 or X) computed with ISO 7064 MOD 11-2. A lower-case ``x``
    is upper-cased; surrounding whitespace and full-width characters are
    normalised. The birth date must be a real date, not before 1900 and not
    after ``today`` (default: the local date). The region code is not checked
    against the administrative division list, which changes every year.
    The value never appears in the error message.
    """
    name = _label(field, "id_number")
    text = _ascii_form(value).upper()
    if len(text) != 18 or not text.isascii():
        raise ValidationError(
            _t(
                "{name}: an identity number has 18 characters (got {n}); expected 17 digits and"
                " a check character 0-9 or X",
                name=name,
                n=len(value),
            ),
            field=field,
        )
    first17, check = text[:17], text[17]
    if not first17.isdigit() or not (check.isdigit() or check == "X"):
        raise ValidationError(
            _t(
                "{name}: an identity number is 17 digits followed by a digit or X; it contains "
                "another character",
                name=name,
            ),
            field=field,
        )
    try:
        birth = date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        raise ValidationError(
            _t(
                "{name}: the birth date inside the identity number (characters 7-14) is not a "
                "real date",
                name=name,
            ),
            field=field,
        ) from None
    if birth < _EARLIEST_BIRTH or birth > (today or date.today()):
        raise ValidationError(
            _t(
                "{name}: the birth date inside the identity number (characters 7-14) is before "
                "1900 or in the future",
                name=name,
            ),
            field=field,
        )
    if _id_check_char(first17) != check:
        raise ValidationError(
            _t(
                "{name}: the check character does not match (GB 11643-1999, ISO 7064 MOD 11-2);"
                " the number was probably mistyped",
                name=name,
            ),
            field=field,
        )
    return text


def id_number_birth_date(value: str) -> date:
    """The birth date embedded in a (valid, normalised) identity number."""
    text = check_id_number(value)
    return date(int(text[6:10]), int(text[10:12]), int(text[12:14]))


def id_number_sex(value: str) -> str:
    """``"male"`` if the 17th digit of a valid identity number is odd, else ``"female"``."""
    text = check_id_number(value)
    return "male" if int(text[16]) % 2 == 1 else "female"


def make_id_number(region6: str, birth: date, seq3: int) -> str:
    """Build a valid identity number: region, birth date, sequence, check character.

    For the synthetic sample and for tests only. ``seq3`` is 0-999; its last
    digit carries the sex (odd = male).
    """
    if len(region6) != 6 or not (region6.isascii() and region6.isdigit()):
        raise ValueError(_t("region6 must be six ASCII digits"))
    if not 0 <= seq3 <= 999:
        raise ValueError(_t("seq3 must be between 0 and 999"))
    first17 = f"{region6}{birth:%Y%m%d}{seq3:03d}"
    return first17 + _id_check_char(first17)


def check_mainland_phone(value: str, *, field: str | None = None) -> str:
    """Check a mainland China phone number and return its canonical form.

    Mobile numbers (11 digits, ``1[3-9]…``) are returned as the bare 11 digits;
    an optional ``+86``, ``0086`` or ``86`` prefix and spaces, hyphens and
    parentheses are removed. Landlines are returned as ``AREA-LOCAL``, e.g. ``010-12345678`` or
    ``0755-1234567``: 010 and 020-029 are three-digit area codes, all others
    four, and the local number has 7 or 8 digits. A landline written in
    international form (``+86 10 1234 5678``) gets its trunk 0 back.
    The value never appears in the error message.
    """
    name = _label(field, "phone")
    text = _ascii_form(value)
    compact = _PHONE_SEPARATORS_RE.sub("", text)
    international = False
    if compact.startswith("+86"):
        compact, international = compact[3:], True
    elif compact.startswith("0086"):
        compact, international = compact[4:], True
    elif compact.startswith("86") and len(compact) == 13:
        # A bare 86 is only unambiguous in front of a mobile number: landlines
        # written nationally start with 0.
        compact, international = compact[2:], True
    if compact.isascii() and compact.isdigit():
        if _MOBILE_RE.fullmatch(compact):
            return compact
        if international and not compact.startswith("0"):
            compact = "0" + compact
        for pattern in (_LANDLINE3_RE, _LANDLINE4_RE):
            match = pattern.fullmatch(compact)
            if match:
                return f"{match.group(1)}-{match.group(2)}"
    raise ValidationError(
        _t(
            "{name}: not a mainland phone number (got {n} characters); expected a mobile number"
            " of 11 digits starting 13-19 (optionally +86) or a landline with area code such as"
            " 010-12345678 or 0755-1234567",
            name=name,
            n=len(value),
        ),
        field=field,
    )


# District derivation for anonymised exports (generalise = "district").
# A Chinese address is written from the largest unit down: province (省,
# 自治区, or one of the four municipalities), prefecture (市, 自治州, 地区, 盟),
# then the county-level unit (区, 县, 县级市 市, 旗, 自治县, 自治旗). Unit names
# are made of CJK characters other than the suffix characters themselves, so
# the match cannot run on into the street, and a house number (digits) never
# leaks into the result. A name that contains a suffix character (济南市市中区)
# falls back to the coarser unit (济南市), which errs on the side of privacy.
_UNIT_CHAR = "(?:(?![省市区县旗盟])[\u3400-\u4dbf\u4e00-\u9fff·])"
_DISTRICT_PATTERN = (
    rf"(?P<province>{_UNIT_CHAR}{{2,6}}?(?:省|自治区|特别行政区)|北京市|天津市|上海市|重庆市)?"
    rf"(?P<prefecture>{_UNIT_CHAR}{{2,12}}?(?:自治州|地区|盟|市))?"
    rf"(?P<county>{_UNIT_CHAR}{{1,14}}?(?:自治县|自治旗|林区|特区|区|县|旗|市))"
)


def district_of(address: str) -> str | None:
    """The county-level part of an address, with its province and city, or None.

    ``"广东省深圳市南山区粤海街道科技路8号"`` gives ``"广东省深圳市南山区"``;
    ``"北京市朝阳区…"`` gives ``"北京市朝阳区"``. The street, village, building
    and number are always cut off. None when no county-level unit is found at
    the start of the address (the export then writes the district as unknown
    rather than guess, because a guess could keep part of the street).
    """
    text = unicodedata.normalize("NFC", address).strip().replace(" ", "")
    # Compiled on first use (re caches it), not at import: only exports need it.
    match = re.compile(_DISTRICT_PATTERN).match(text)
    if match is None:
        return None
    return match.group(0)
