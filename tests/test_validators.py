"""Value validators: GB 11643-1999 identity numbers, phone numbers, dates, districts."""

from __future__ import annotations

import contextlib
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from childvault.keys._errors import ValidationError
from childvault.vault._validators import (
    check_date,
    check_id_number,
    check_mainland_phone,
    district_of,
    id_number_birth_date,
    id_number_sex,
    make_id_number,
)

# The example printed in GB 11643-1999 itself and in most references.
PUBLISHED = "11010519491231002X"


# -- identity numbers ---------------------------------------------------------


def test_published_example_is_valid() -> None:
    assert check_id_number(PUBLISHED) == PUBLISHED
    assert id_number_birth_date(PUBLISHED) == date(1949, 12, 31)
    assert id_number_sex(PUBLISHED) == "female"  # 17th digit 2 is even


def test_make_id_number_reproduces_the_published_check_character() -> None:
    assert make_id_number("110105", date(1949, 12, 31), 2) == PUBLISHED


@pytest.mark.parametrize(
    ("first17", "check"),
    [
        # Hand-computed with ISO 7064 MOD 11-2 (weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2).
        ("11010519491231002", "X"),
        ("99010120150101001", "5"),
        ("99010120150101002", "3"),
        ("00000019000101000", "9"),
    ],
)
def test_check_characters(first17: str, check: str) -> None:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(c) * w for c, w in zip(first17, weights, strict=True))
    assert "10X98765432"[total % 11] == check
    assert check_id_number(first17 + check) == first17 + check


def test_lower_case_x_whitespace_and_full_width_are_normalised() -> None:
    assert check_id_number("11010519491231002x") == PUBLISHED
    assert check_id_number("  11010519491231002X\t") == PUBLISHED
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in PUBLISHED)
    assert check_id_number(full_width) == PUBLISHED


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1101051949123100",  # 16
        "11010519491231002",  # 17
        "11010519491231002XX",  # 19
        "110105194912310021",  # wrong check character
        "11010519491231002Y",
        "1101051949123100X2",  # X not last
        "A1010519491231002X",
        "110105 19491231 002X",  # interior spaces are not accepted
        "١١٠١٠٥١٩٤٩١٢٣١٠٠٢X",  # Arabic-Indic digits: str.isdigit() would say yes
    ],
)
def test_malformed_identity_numbers(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_id_number(bad)
    assert info.value.field is None
    if bad.strip():
        assert bad not in str(info.value)


def test_embedded_birth_date_must_be_real() -> None:
    first17 = "99010120230229001"  # 2023 is not a leap year
    with pytest.raises(ValidationError, match="not a real date"):
        check_id_number(first17 + _check(first17))
    leap = "99010120240229001"
    assert check_id_number(leap + _check(leap)).startswith(leap)


def test_embedded_birth_date_not_future_nor_before_1900() -> None:
    today = date(2026, 11, 24)
    ok = make_id_number("990101", today, 1)
    assert check_id_number(ok, today=today) == ok
    future = make_id_number("990101", today + timedelta(days=1), 1)
    with pytest.raises(ValidationError, match="future"):
        check_id_number(future, today=today)
    old = "99010118991231001"
    with pytest.raises(ValidationError, match="before 1900"):
        check_id_number(old + _check(old), today=today)
    assert check_id_number(make_id_number("990101", date(1900, 1, 1), 0))


def test_error_names_the_field_and_never_the_value() -> None:
    value = "110105194912310021"
    with pytest.raises(ValidationError) as info:
        check_id_number(value, field="id_number")
    assert info.value.field == "id_number"
    assert str(info.value).startswith("id_number:")
    assert value not in str(info.value)
    assert value[:10] not in str(info.value)


def test_sex_digit() -> None:
    assert id_number_sex(make_id_number("990101", date(2015, 1, 1), 1)) == "male"
    assert id_number_sex(make_id_number("990101", date(2015, 1, 1), 998)) == "female"


def test_make_id_number_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_id_number("99010", date(2015, 1, 1), 1)
    with pytest.raises(ValueError):
        make_id_number("99010a", date(2015, 1, 1), 1)
    with pytest.raises(ValueError):
        make_id_number("990101", date(2015, 1, 1), 1000)
    with pytest.raises(ValueError):
        make_id_number("990101", date(2015, 1, 1), -1)


def _check(first17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, weights, strict=True)) % 11]


ids = st.builds(
    make_id_number,
    st.from_regex(r"[0-9]{6}", fullmatch=True),
    st.dates(min_value=date(1900, 1, 1), max_value=date.today()),
    st.integers(min_value=0, max_value=999),
)


@given(st.text(max_size=40))
def test_check_id_number_raises_only_validation_error(text: str) -> None:
    try:
        result = check_id_number(text)
    except ValidationError as exc:
        digits = text.strip()
        if len(digits) >= 6 and digits.isascii() and digits.isdigit():
            assert digits not in str(exc)
    else:
        assert len(result) == 18


@given(
    st.from_regex(r"[0-9]{6}", fullmatch=True),
    st.dates(min_value=date(1900, 1, 1), max_value=date.today()),
    st.integers(min_value=0, max_value=999),
)
def test_generated_identity_numbers_round_trip(region: str, birth: date, seq: int) -> None:
    number = make_id_number(region, birth, seq)
    assert check_id_number(number) == number
    assert check_id_number(number.lower()) == number
    assert id_number_birth_date(number) == birth
    assert id_number_sex(number) == ("male" if seq % 2 else "female")
    assert number[:6] == region


@given(ids, st.integers(min_value=0, max_value=16), st.integers(min_value=1, max_value=9))
def test_any_single_digit_error_is_detected(number: str, position: int, delta: int) -> None:
    # MOD 11-2 detects every single substitution; the altered number must be
    # refused (by the check character, or earlier by the date check).
    digit = (int(number[position]) + delta) % 10
    altered = number[:position] + str(digit) + number[position + 1 :]
    with pytest.raises(ValidationError):
        check_id_number(altered)


# -- phones ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("13800138000", "13800138000"),
        ("138 0013 8000", "13800138000"),
        ("138-0013-8000", "13800138000"),
        ("+86 138 0013 8000", "13800138000"),
        ("+8613800138000", "13800138000"),
        ("8613800138000", "13800138000"),
        ("0086 13800138000", "13800138000"),
        ("１３８００１３８０００", "13800138000"),
        ("19912345678", "19912345678"),
        ("010-12345678", "010-12345678"),
        ("01012345678", "010-12345678"),
        ("(010) 1234 5678", "010-12345678"),
        ("021-87654321", "021-87654321"),
        ("0755-1234567", "0755-1234567"),
        ("0755 12345678", "0755-12345678"),
        ("07551234567", "0755-1234567"),
        ("+86 10 1234 5678", "010-12345678"),
        ("+86 755 1234567", "0755-1234567"),
    ],
)
def test_valid_phones(raw: str, canonical: str) -> None:
    assert check_mainland_phone(raw) == canonical


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "12345678901",  # 12x is not a mobile prefix
        "1380013800",  # 10 digits
        "138001380001",  # 12 digits
        "+1 415 555 0100",
        "010-0234567",  # local number starts with 0
        "010-123456",  # too short
        "010-123456789",  # too long
        "0755-12345",
        "13800l38000",
        "phone",
        "+86",
    ],
)
def test_invalid_phones(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_mainland_phone(bad, field="guardian_phone")
    assert info.value.field == "guardian_phone"
    # Long enough to be a number someone could recognise: never echoed.
    if len(bad) >= 11:
        assert bad not in str(info.value)


@given(st.text(max_size=30))
def test_check_mainland_phone_raises_only_validation_error(text: str) -> None:
    try:
        result = check_mainland_phone(text)
    except ValidationError:
        return
    assert result.replace("-", "").isdigit() and result.isascii()


# -- dates -----------------------------------------------------------------------


@pytest.mark.parametrize("good", ["2015-03-09", "2024-02-29", "1900-01-01", " 2015-03-09 "])
def test_valid_dates(good: str) -> None:
    assert check_date(good) == good.strip()


@pytest.mark.parametrize(
    "bad",
    ["", "2015-3-9", "2015/03/09", "20150309", "2023-02-29", "2015-13-01", "1899-12-31", "x"],
)
def test_invalid_dates(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_date(bad, field="date_of_birth")
    assert info.value.field == "date_of_birth"
    assert "date_of_birth" in str(info.value)


@given(st.text(max_size=20))
def test_check_date_raises_only_validation_error(text: str) -> None:
    with contextlib.suppress(ValidationError):
        date.fromisoformat(check_date(text))


# -- district --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "district"),
    [
        ("广东省深圳市南山区粤海街道科技路8号", "广东省深圳市南山区"),
        ("北京市朝阳区朝阳门外市场路1号", "北京市朝阳区"),
        ("上海市浦东新区张江路", "上海市浦东新区"),
        ("重庆市城口县东华乡青中村10组24号", "重庆市城口县"),
        ("新疆维吾尔自治区乌鲁木齐市天山区解放路", "新疆维吾尔自治区乌鲁木齐市天山区"),
        ("四川省凉山彝族自治州昭觉县新城镇", "四川省凉山彝族自治州昭觉县"),
        ("内蒙古自治区赤峰市敖汉旗新惠镇", "内蒙古自治区赤峰市敖汉旗"),
        ("广东省清远市连州市城南路3号", "广东省清远市连州市"),
        ("湖北省神农架林区松柏镇", "湖北省神农架林区"),
        ("黑龙江省大兴安岭地区漠河市北极镇", "黑龙江省大兴安岭地区漠河市"),
        ("南山区桃园路2号", "南山区"),
        # A unit name containing a suffix character falls back to the coarser unit.
        ("山东省济南市市中区经七路", "山东省济南市"),
        (" 广东省 深圳市 南山区 科技路 ", "广东省深圳市南山区"),
    ],
)
def test_district_of(address: str, district: str) -> None:
    assert district_of(address) == district


@pytest.mark.parametrize("address", ["", "幸福路12号", "123 Main Street", "某某"])
def test_district_unknown(address: str) -> None:
    assert district_of(address) is None


@given(st.text(max_size=80))
def test_district_is_a_prefix_without_digits(address: str) -> None:
    district = district_of(address)
    if district is not None:
        assert not any(c.isdigit() for c in district)
        assert len(district) <= len(address)
