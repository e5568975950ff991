"""Record validation against the schema: normalisation, required fields, bad values
named, identity-number cross-checks, the packaged sample."""

from __future__ import annotations

import base64
import contextlib
import csv
import importlib.util
import unicodedata
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from childvault.keys._errors import UsageError, ValidationError
from childvault.vault._consent import (
    ALL_CONSENT_COLUMNS,
    CONSENT_COLUMNS,
    age_on,
    check_consent,
    parse_consent_columns,
)
from childvault.vault._schema import Schema
from childvault.vault._validators import make_id_number
from tests._schema_data import (
    CHILD_FIELDS,
    ID,
    MINIMAL,
    PHONE,
    ROOT,
    SAMPLE,
    child,
    load,
)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.default()


# -- record validation --------------------------------------------------------------------------


def test_minimal_record(schema: Schema) -> None:
    assert schema.validate_record("child", child()) == child()


def test_full_record_is_normalised_in_declaration_order(schema: Schema) -> None:
    photo = base64.b64encode(b"\x89PNG" + bytes(range(256))).decode()
    wrapped = "\n".join(photo[i : i + 76] for i in range(0, len(photo), 76))
    values = {
        "photo": wrapped,
        "case_notes": "第一段\r\n第二段\t缩进",
        "sex": " 男 ",
        "id_number": ID.lower(),
        "guardian_phone": "+86 139-1234-5678",
        "difficulty_category": "孤儿",
        "address": "  广东省深圳市南山区粤海街道  ",
        "name": "王小明",
        "date_of_birth": "2015-03-09",
        "school": "",
        "health": "   ",
    }
    result = schema.validate_record("child", values)
    assert list(result) == [
        "name",
        "sex",
        "date_of_birth",
        "id_number",
        "address",
        "guardian_phone",
        "difficulty_category",
        "case_notes",
        "photo",
    ]
    assert result["sex"] == "male"
    assert result["id_number"] == ID.upper()
    assert result["guardian_phone"] == PHONE
    assert result["difficulty_category"] == "orphan"
    assert result["address"] == "广东省深圳市南山区粤海街道"
    assert result["case_notes"] == "第一段\n第二段\t缩进"
    assert result["photo"] == photo
    assert "school" not in result and "health" not in result


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("male", "male"), ("MALE", "male"), ("女", "female"), ("F", "female"), ("女性", "female")],
)
def test_sex_aliases(schema: Schema, raw: str, canonical: str) -> None:
    assert schema.validate_record("child", child(sex=raw))["sex"] == canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("de_facto_unattended", "de_facto_unattended"),
        ("事实无人抚养儿童", "de_facto_unattended"),
        ("监护缺失", "guardianship_failure"),
        ("贫困", "poverty"),
        ("残疾", "disability"),
    ],
)
def test_difficulty_aliases(schema: Schema, raw: str, canonical: str) -> None:
    result = schema.validate_record("child", child(difficulty_category=raw))
    assert result["difficulty_category"] == canonical


def test_text_is_nfc_normalised(schema: Schema) -> None:
    decomposed = "Ame\u0301lie"
    result = schema.validate_record("child", child(name=decomposed))
    assert result["name"] == unicodedata.normalize("NFC", decomposed)


def test_unknown_field_is_named_and_allowed_fields_listed(schema: Schema) -> None:
    with pytest.raises(ValidationError) as info:
        schema.validate_record("child", child(religion="x"))
    assert info.value.field == "religion"
    message = str(info.value)
    assert "religion" in message
    for name in CHILD_FIELDS:
        assert name in message


def test_consent_columns_are_not_record_fields(schema: Schema) -> None:
    with pytest.raises(ValidationError, match="consent_by"):
        schema.validate_record("child", child(consent_by="guardian"))


def test_unknown_type(schema: Schema) -> None:
    with pytest.raises(UsageError, match="child"):
        schema.validate_record("adult", child())


@pytest.mark.parametrize("missing", ["name", "date_of_birth"])
def test_required_fields(schema: Schema, missing: str) -> None:
    values = child()
    del values[missing]
    with pytest.raises(ValidationError) as info:
        schema.validate_record("child", values)
    assert info.value.field == missing
    assert "required" in str(info.value)
    values[missing] = "  "
    with pytest.raises(ValidationError) as info:
        schema.validate_record("child", values)
    assert info.value.field == missing


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sex", "unknown"),
        ("sex", "1"),
        ("date_of_birth", "2015/03/09"),
        ("date_of_birth", "2015-02-30"),
        ("id_number", "110105194912310021"),
        ("guardian_phone", "12345"),
        ("difficulty_category", "rich"),
        ("photo", "not base64!"),
        ("photo", "QUJD="),
        ("photo", "QUJDRA"),
        ("name", "王" * 65),
        ("address", "路" * 201),
        ("case_notes", "x" * 50001),
        ("name", "x" * 100_000),
    ],
)
def test_bad_values_name_the_field(schema: Schema, field: str, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        schema.validate_record("child", child(**{field: value}))
    assert info.value.field == field
    assert str(info.value).startswith(field)
    if len(value) > 8:
        assert value not in str(info.value)


def test_too_long_message_gives_length_and_limit(schema: Schema) -> None:
    with pytest.raises(ValidationError, match=r"65 characters.*64"):
        schema.validate_record("child", child(name="王" * 65))


def test_photo_size_limit(schema: Schema) -> None:
    limit = 2 * 1024 * 1024
    ok = base64.b64encode(bytes(limit)).decode()
    assert schema.validate_record("child", child(photo=ok))["photo"] == ok
    too_big = base64.b64encode(bytes(limit + 1)).decode()
    with pytest.raises(ValidationError, match=r"2097153 bytes") as info:
        schema.validate_record("child", child(photo=too_big))
    assert info.value.field == "photo"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "王\x00明"),
        ("name", "王\x07明"),
        ("name", "王\r明"),
        ("name", "王\x85明"),
        ("name", "王\u202e明"),
        ("name", "王\u2066明"),
        ("name", "王\ud800明"),
        ("case_notes", "a\x1bb"),
        ("id_number", ID + "\x00"),
        ("id_number", ID + "\n"),
        ("date_of_birth", "2015-03-09\t"),
        ("sex", "male\x00"),
        ("guardian_phone", PHONE + "\x00"),
        ("photo", "QUJD\x00"),
    ],
)
def test_control_characters_are_refused(schema: Schema, field: str, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        schema.validate_record("child", child(**{field: value}))
    assert info.value.field == field


def test_line_breaks_and_tabs_allowed_in_text(schema: Schema) -> None:
    result = schema.validate_record("child", child(case_notes="一\n二\t三", name="王\t明"))
    assert result["case_notes"] == "一\n二\t三"


def test_id_number_must_match_date_of_birth(schema: Schema) -> None:
    other = make_id_number("990101", date(2015, 3, 10), 123)
    with pytest.raises(ValidationError) as info:
        schema.validate_record("child", child(id_number=other))
    assert info.value.field == "id_number"
    assert "date_of_birth" in str(info.value)
    assert other not in str(info.value)


def test_id_number_must_match_sex(schema: Schema) -> None:
    assert schema.validate_record("child", child(id_number=ID, sex="male"))
    with pytest.raises(ValidationError) as info:
        schema.validate_record("child", child(id_number=ID, sex="女"))
    assert info.value.field == "id_number"
    assert "sex" in str(info.value)
    assert ID not in str(info.value)
    # without the sex field there is nothing to contradict
    assert schema.validate_record("child", child(id_number=ID))


def test_sex_check_skips_values_other_than_male_and_female() -> None:
    s = load(
        MINIMAL + '[types.person.fields.dob]\ntype = "date"\nsensitivity = "low"\n'
        'identifier = "none"\n'
        '[types.person.fields.sex]\ntype = "enum"\nvalues = ["male", "female", "unknown"]\n'
        'sensitivity = "low"\nidentifier = "none"\n'
        '[types.person.fields.idn]\ntype = "id_number"\nsensitivity = "high"\n'
        'identifier = "direct"\nbirth_date_field = "dob"\nsex_field = "sex"\n'
        '[types.person.fields.guardian_idn]\ntype = "id_number"\nsensitivity = "high"\n'
        'identifier = "direct"\n'
    )
    guardian = make_id_number("990101", date(1980, 1, 1), 2)
    ok = s.validate_record(
        "person", {"dob": "2015-03-09", "sex": "unknown", "idn": ID, "guardian_idn": guardian}
    )
    assert ok["sex"] == "unknown"
    # an id_number without declared partners is not cross-checked
    assert s.validate_record("person", {"dob": "2015-03-09", "guardian_idn": guardian})


def test_non_text_values_and_keys(schema: Schema) -> None:
    with pytest.raises(ValidationError) as info:
        schema.validate_record("child", child(name=3))  # type: ignore[arg-type]
    assert info.value.field == "name"
    values: dict[Any, Any] = child()
    values[None] = ["extra cell"]
    with pytest.raises(ValidationError, match="no field name"):
        schema.validate_record("child", values)
    # a None value (a short CSV row) is an absent value
    assert schema.validate_record("child", child(school=None)) == child()  # type: ignore[arg-type]


def test_long_unknown_field_name_is_truncated(schema: Schema) -> None:
    with pytest.raises(ValidationError) as info:
        schema.validate_record("child", child(**{"z" * 1000: "x"}))
    assert len(str(info.value)) < 600


# -- single-field validation (corrections) --------------------------------------------------------


def test_validate_field(schema: Schema) -> None:
    assert schema.validate_field("child", "sex", "女") == "female"
    assert schema.validate_field("child", "school", "  ") == ""
    with pytest.raises(ValidationError) as info:
        schema.validate_field("child", "name", "")
    assert info.value.field == "name"
    with pytest.raises(ValidationError) as info:
        schema.validate_field("child", "nickname", "x")
    assert info.value.field == "nickname"
    with pytest.raises(UsageError):
        schema.validate_field("adult", "name", "x")


def test_validate_field_cross_checks_against_others(schema: Schema) -> None:
    current = {"date_of_birth": "2015-03-09", "sex": "male", "id_number": ID}
    assert schema.validate_field("child", "id_number", ID.lower(), others=current) == ID
    with pytest.raises(ValidationError) as info:
        schema.validate_field("child", "date_of_birth", "2015-03-10", others=current)
    assert info.value.field == "date_of_birth"
    with pytest.raises(ValidationError) as info:
        schema.validate_field("child", "sex", "female", others=current)
    assert info.value.field == "sex"
    other = make_id_number("990101", date(2014, 1, 1), 123)
    with pytest.raises(ValidationError) as info:
        schema.validate_field("child", "id_number", other, others=current)
    assert info.value.field == "id_number"
    # unknown others: no cross check possible
    assert schema.validate_field("child", "date_of_birth", "2015-03-10") == "2015-03-10"
    # an invalid other value is left out of the checks, not reported
    broken = {"id_number": "garbage", "sex": "?"}
    assert schema.validate_field("child", "date_of_birth", "2015-03-10", others=broken)


# -- property tests ----------------------------------------------------------------------------

field_names = st.sampled_from(CHILD_FIELDS) | st.text(max_size=12)
field_values = (
    st.text(max_size=40)
    | st.sampled_from(["男", "female", "2015-03-09", ID, PHONE, "QUJD", "孤儿"])
    | st.from_regex(r"[0-9]{17}[0-9Xx]", fullmatch=True)
)


@st.composite
def records(draw: st.DrawFn) -> dict[str, str]:
    # Mostly near-valid records (a valid base with some fields replaced), so
    # that both the accepting and the refusing paths are exercised.
    values = child() if draw(st.booleans()) else {}
    values.update(draw(st.dictionaries(st.sampled_from(CHILD_FIELDS), field_values, max_size=6)))
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        values.update(draw(st.dictionaries(field_names, field_values, max_size=3)))
    return values


@settings(max_examples=400)
@given(records())
def test_validate_record_raises_only_validation_error(values: dict[str, str]) -> None:
    schema = Schema.default()
    try:
        result = schema.validate_record("child", values)
    except ValidationError as exc:
        assert exc.field is None or isinstance(exc.field, str)
        return
    assert set(result) <= set(values)
    assert "name" in result and "date_of_birth" in result
    # normalisation is idempotent
    assert schema.validate_record("child", result) == result


@settings(max_examples=200)
@given(st.sampled_from(CHILD_FIELDS), field_values)
def test_validate_field_raises_only_validation_error(field: str, value: str) -> None:
    with contextlib.suppress(ValidationError):
        Schema.default().validate_field("child", field, value)


# -- the shipped sample --------------------------------------------------------------------------

TODAY = date(2026, 11, 24)


def _sample_rows() -> list[dict[str, str]]:
    with SAMPLE.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_sample_header() -> None:
    with SAMPLE.open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    # Issue 15: each row carries its signed form's digest (an officer imports
    # the back-dated register with --confirm-backdated).
    assert tuple(header) == CHILD_FIELDS[:-1] + CONSENT_COLUMNS + ("consent_form_sha256",)


def test_every_sample_row_is_valid(schema: Schema) -> None:
    rows = _sample_rows()
    assert len(rows) == 200
    bases = set()
    for row in rows:
        fields = {k: v for k, v in row.items() if k not in ALL_CONSENT_COLUMNS}
        record = schema.validate_record("child", fields)
        birth = date.fromisoformat(record["date_of_birth"])
        assert 0 <= age_on(birth, date(2026, 11, 1)) <= 17
        if "id_number" in record:
            assert record["id_number"].startswith("99"), "unassigned region code"
        consent = parse_consent_columns(row, default_notice="2026-1", today=TODAY)
        consent = check_consent(consent, date_of_birth=birth, schema=schema, today=TODAY)
        assert "case_management" in consent.purposes
        assert consent.notice_version == "2026-1"
        assert date(2030, 1, 1) <= consent.retain_until <= date(2035, 12, 31)
        bases.add((consent.by, consent.guardian_also))
    # all three consent bases occur
    assert bases == {("guardian", False), ("child", False), ("guardian", True)}


def test_sample_is_reproducible() -> None:
    spec = importlib.util.spec_from_file_location("make_sample", ROOT / "tools" / "make_sample.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == SAMPLE.read_bytes()
