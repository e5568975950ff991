"""Schema loading (strict TOML) and record validation."""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib.util
import unicodedata
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from childvault.keys._errors import ChildVaultError, UsageError, ValidationError
from childvault.vault._consent import (
    ALL_CONSENT_COLUMNS,
    CONSENT_COLUMNS,
    age_on,
    check_consent,
    parse_consent_columns,
)
from childvault.vault._schema import RESERVED_FIELD_NAMES, FieldSpec, Schema
from childvault.vault._validators import make_id_number

ROOT = Path(__file__).resolve().parents[1]
CHILD_TOML = ROOT / "childvault" / "vault" / "schemas" / "child.toml"
SAMPLE = ROOT / "childvault" / "vault" / "data" / "sample.csv"

CHILD_FIELDS = (
    "name",
    "sex",
    "date_of_birth",
    "id_number",
    "address",
    "school",
    "guardian_name",
    "guardian_phone",
    "difficulty_category",
    "health",
    "disability",
    "case_notes",
    "photo",
)
PURPOSES = (
    "case_management",
    "social_assistance",
    "education_support",
    "medical_care",
    "legal_protection",
    "statistics",
)

ID = make_id_number("990101", date(2015, 3, 9), 123)  # male (3 is odd)
PHONE = "13912345678"


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.default()


def child(**extra: str) -> dict[str, str]:
    values = {"name": "王小明", "date_of_birth": "2015-03-09"}
    values.update(extra)
    return values


# -- the default schema ---------------------------------------------------------------


def test_default_schema_shape(schema: Schema) -> None:
    assert schema.name == "child"
    assert schema.version == 1
    assert schema.purposes == PURPOSES
    assert list(schema.types) == ["child"]
    assert tuple(schema.record_type("child").fields) == CHILD_FIELDS


def test_default_schema_digest_is_of_the_packaged_bytes(schema: Schema) -> None:
    data = CHILD_TOML.read_bytes()
    assert schema.source == data
    assert schema.digest == hashlib.sha256(data).hexdigest()
    assert Schema.load(CHILD_TOML) == schema
    assert Schema.loads(data).digest == schema.digest


def test_default_schema_field_properties(schema: Schema) -> None:
    f = schema.record_type("child").fields
    assert not any(spec.metadata for spec in f.values()), "everything is encrypted"
    assert {n for n, s in f.items() if s.searchable} == {"id_number", "guardian_phone"}
    assert {n for n, s in f.items() if s.low_entropy} == {
        "sex",
        "date_of_birth",
        "difficulty_category",
    }
    assert {n for n, s in f.items() if s.required} == {"name", "date_of_birth"}
    assert {n: s.generalise for n, s in f.items() if s.identifier == "quasi"} == {
        "sex": "keep",
        "date_of_birth": "age_band",
        "address": "district",
        "difficulty_category": "keep",
    }
    assert all(s.identifier == "direct" for n, s in f.items() if s.generalise is None)
    assert f["sex"].values == ("male", "female")
    assert ("男", "male") in f["sex"].aliases and ("女", "female") in f["sex"].aliases
    assert f["difficulty_category"].values == (
        "poverty",
        "disability",
        "guardianship_failure",
        "orphan",
        "de_facto_unattended",
    )
    assert {f[n].sensitivity for n in ("health", "disability", "case_notes")} == {"high"}
    assert f["photo"].type == "binary" and f["photo"].max_length == 2 * 1024 * 1024
    assert f["case_notes"].max_length >= 10000
    assert f["id_number"].birth_date_field == "date_of_birth"
    assert f["id_number"].sex_field == "sex"
    for spec in f.values():
        assert spec.description, spec.name


def test_default_is_cached_and_immutable(schema: Schema) -> None:
    assert Schema.default() is Schema.default()
    with pytest.raises(TypeError):
        schema.types["x"] = schema.types["child"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        schema.name = "other"  # type: ignore[misc]


def test_record_type_and_purpose_lookup(schema: Schema) -> None:
    assert schema.record_type("child").name == "child"
    with pytest.raises(UsageError, match="child") as info:
        schema.record_type("adult")
    assert "adult" in str(info.value)
    assert not isinstance(info.value, ValidationError)
    assert schema.check_purpose("statistics") == "statistics"
    with pytest.raises(UsageError) as info2:
        schema.check_purpose("marketing")
    for purpose in PURPOSES:
        assert purpose in str(info2.value)


# -- strict loading ------------------------------------------------------------------------

MINIMAL = """\
name = "mini"
version = 2
purposes = ["care", "statistics"]

[types.person]
description = "a person"

[types.person.fields.name]
type = "text"
sensitivity = "medium"
identifier = "direct"
"""


def load(text: str) -> Schema:
    return Schema.loads(text.encode("utf-8"))


def with_field(body: str, name: str = "extra", type_name: str = "person") -> str:
    return MINIMAL + f"\n[types.{type_name}.fields.{name}]\n" + body


def test_minimal_schema_and_defaults() -> None:
    s = load(MINIMAL)
    spec = s.record_type("person").fields["name"]
    assert spec == FieldSpec(
        name="name",
        type="text",
        required=False,
        sensitivity="medium",
        identifier="direct",
        generalise=None,
        searchable=False,
        low_entropy=False,
        metadata=False,
        max_length=200,
        values=(),
        description="",
    )
    assert s.version == 2
    assert s.purposes == ("care", "statistics")


def test_metadata_field_allowed_when_low_sensitivity() -> None:
    s = load(
        with_field('type = "text"\nsensitivity = "low"\nidentifier = "none"\nmetadata = true\n')
    )
    assert s.record_type("person").fields["extra"].metadata


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (MINIMAL + "colour = 1\n", "colour"),
        (MINIMAL.replace('description = "a person"', 'descripton = "a person"'), "descripton"),
        (
            with_field('type = "text"\nsensitivity = "low"\nidentifier = "none"\nrequred = true\n'),
            "requred",
        ),
        (MINIMAL.replace('name = "mini"\n', ""), "name"),
        (MINIMAL.replace("version = 2\n", ""), "version"),
        (MINIMAL.replace("version = 2", "version = true"), "version"),
        (MINIMAL.replace("version = 2", "version = 0"), "version"),
        (MINIMAL.replace("version = 2", 'version = "2"'), "version"),
        (MINIMAL.replace('name = "mini"', 'name = "Mini"'), "Mini"),
        (MINIMAL.replace('purposes = ["care", "statistics"]', "purposes = []"), "purposes"),
        (
            MINIMAL.replace('purposes = ["care", "statistics"]', 'purposes = ["care", "care"]'),
            "care",
        ),
        (MINIMAL.replace('purposes = ["care", "statistics"]', 'purposes = ["Care"]'), "Care"),
        (
            MINIMAL.replace('purposes = ["care", "statistics"]', 'purposes = ["care", 1]'),
            "purposes",
        ),
        (MINIMAL.replace('purposes = ["care", "statistics"]', 'purposes = "care"'), "purposes"),
        (
            MINIMAL.replace("[types.person]", "[types.Person]").replace(
                "types.person.", "types.Person."
            ),
            "Person",
        ),
        (
            with_field('type = "text"\nsensitivity = "low"\nidentifier = "none"\n', name="Bad"),
            "Bad",
        ),
        (
            with_field('type = "text"\nsensitivity = "low"\nidentifier = "none"\n', name="a" * 64),
            "aaaa",
        ),
        (with_field('type = "text"\nsensitivity = "low"\nidentifier = "none"\n', name="9a"), "9a"),
        (with_field('type = "number"\nsensitivity = "low"\nidentifier = "none"\n'), "type"),
        (with_field('sensitivity = "low"\nidentifier = "none"\n'), "type"),
        (with_field('type = "text"\nidentifier = "none"\n'), "sensitivity"),
        (with_field('type = "text"\nsensitivity = "low"\n'), "identifier"),
        (with_field('type = "text"\nsensitivity = "secret"\nidentifier = "none"\n'), "sensitivity"),
        (
            with_field('type = "text"\nsensitivity = "low"\nidentifier = "none"\nrequired = 1\n'),
            "required",
        ),
    ],
)
def test_strict_loading_names_the_key(text: str, named: str) -> None:
    with pytest.raises(UsageError) as info:
        load(text)
    assert named in str(info.value)
    assert not isinstance(info.value, ValidationError)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        # a blind index over a low-entropy value is a lookup table
        (
            'type = "text"\nsensitivity = "low"\nidentifier = "none"\nsearchable = true\n'
            "low_entropy = true\n",
            "searchable",
        ),
        (
            'type = "date"\nsensitivity = "low"\nidentifier = "none"\nsearchable = true\n',
            "searchable",
        ),
        (
            'type = "enum"\nvalues = ["a", "b"]\nsensitivity = "low"\nidentifier = "none"\n'
            "searchable = true\n",
            "searchable",
        ),
        (
            'type = "binary"\nmax_length = 10\nsensitivity = "low"\nidentifier = "none"\n'
            "searchable = true\n",
            "searchable",
        ),
        (
            'type = "date"\nsensitivity = "low"\nidentifier = "none"\nlow_entropy = false\n',
            "low_entropy",
        ),
        # nothing highly sensitive or directly identifying in clear
        ('type = "text"\nsensitivity = "high"\nidentifier = "none"\nmetadata = true\n', "metadata"),
        (
            'type = "text"\nsensitivity = "low"\nidentifier = "direct"\nmetadata = true\n',
            "metadata",
        ),
        (
            'type = "text"\nsensitivity = "low"\nidentifier = "none"\nmetadata = true\n'
            "searchable = true\n",
            "searchable",
        ),
        # generalisation
        ('type = "date"\nsensitivity = "low"\nidentifier = "quasi"\n', "generalise"),
        (
            'type = "date"\nsensitivity = "low"\nidentifier = "none"\ngeneralise = "age_band"\n',
            "generalise",
        ),
        (
            'type = "date"\nsensitivity = "low"\nidentifier = "quasi"\ngeneralise = "district"\n',
            "generalise",
        ),
        (
            'type = "text"\nsensitivity = "low"\nidentifier = "quasi"\ngeneralise = "keep"\n',
            "generalise",
        ),
        (
            'type = "text"\nsensitivity = "low"\nidentifier = "quasi"\ngeneralise = "blur"\n',
            "generalise",
        ),
        # lengths
        ('type = "date"\nsensitivity = "low"\nidentifier = "none"\nmax_length = 5\n', "max_length"),
        ('type = "binary"\nsensitivity = "low"\nidentifier = "none"\n', "max_length"),
        ('type = "text"\nsensitivity = "low"\nidentifier = "none"\nmax_length = 0\n', "max_length"),
        (
            'type = "text"\nsensitivity = "low"\nidentifier = "none"\nmax_length = 1.5\n',
            "max_length",
        ),
        # enums and aliases
        ('type = "enum"\nsensitivity = "low"\nidentifier = "none"\n', "values"),
        ('type = "enum"\nvalues = []\nsensitivity = "low"\nidentifier = "none"\n', "values"),
        (
            'type = "enum"\nvalues = ["a", "a"]\nsensitivity = "low"\nidentifier = "none"\n',
            "values",
        ),
        ('type = "enum"\nvalues = ["A"]\nsensitivity = "low"\nidentifier = "none"\n', "'A'"),
        ('type = "text"\nvalues = ["a"]\nsensitivity = "low"\nidentifier = "none"\n', "values"),
        (
            'type = "enum"\nvalues = ["a"]\naliases = { "x" = "b" }\nsensitivity = "low"\n'
            'identifier = "none"\n',
            "aliases.x",
        ),
        (
            'type = "enum"\nvalues = ["a", "b"]\naliases = { "A" = "b" }\nsensitivity = "low"\n'
            'identifier = "none"\n',
            "aliases",
        ),
        (
            'type = "enum"\nvalues = ["a", "b"]\naliases = { "x" = "a", "X" = "b" }\n'
            'sensitivity = "low"\nidentifier = "none"\n',
            "aliases",
        ),
        (
            'type = "enum"\nvalues = ["a"]\naliases = { " " = "a" }\nsensitivity = "low"\n'
            'identifier = "none"\n',
            "alias",
        ),
        (
            'type = "enum"\nvalues = ["a"]\naliases = ["a"]\nsensitivity = "low"\n'
            'identifier = "none"\n',
            "aliases",
        ),
        # cross-check references
        (
            'type = "id_number"\nsensitivity = "high"\nidentifier = "direct"\n'
            'birth_date_field = "name"\n',
            "birth_date_field",
        ),
        (
            'type = "id_number"\nsensitivity = "high"\nidentifier = "direct"\n'
            'sex_field = "nobody"\n',
            "sex_field",
        ),
        (
            'type = "text"\nsensitivity = "high"\nidentifier = "direct"\nsex_field = "name"\n',
            "sex_field",
        ),
        (
            'type = "text"\nsensitivity = "low"\nidentifier = "none"\ndescription = "a\\u0000b"\n',
            "description",
        ),
    ],
)
def test_field_rules(body: str, named: str) -> None:
    with pytest.raises(UsageError) as info:
        load(with_field(body))
    assert named in str(info.value)


@pytest.mark.parametrize("reserved", sorted(RESERVED_FIELD_NAMES))
def test_consent_column_names_are_reserved(reserved: str) -> None:
    assert set(ALL_CONSENT_COLUMNS) == RESERVED_FIELD_NAMES
    with pytest.raises(UsageError, match=reserved):
        load(with_field('type = "text"\nsensitivity = "low"\nidentifier = "none"\n', reserved))


def test_duplicate_field_is_refused() -> None:
    body = 'type = "text"\nsensitivity = "low"\nidentifier = "none"\n'
    with pytest.raises(UsageError, match="name"):
        load(with_field(body, name="name"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe\x00n",
        b"name = ",
        b"[types\n",
        b'name = "x"\nversion = 1\npurposes = ["a"]\ntypes = 3\n',
        b'name = "x"\nversion = 1\npurposes = ["a"]\n[types]\n',
        b'name = "x"\nversion = 1\npurposes = ["a"]\n[types.t]\n',
        b'name = "x"\nversion = 1\npurposes = ["a"]\n[types.t.fields]\n',
        b'name = "x"\nversion = 1\npurposes = ["a"]\n[types.t.fields.f]\n',
        b"a = " + b"[" * 5000 + b"]" * 5000,
        b"#" * (2 << 20),
    ],
)
def test_malformed_files(data: bytes) -> None:
    with pytest.raises(UsageError):
        Schema.loads(data)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        Schema.load(tmp_path / "nope.toml")


def test_declaration_order_is_preserved() -> None:
    body = "".join(
        f'[types.person.fields.f{i}]\ntype = "text"\nsensitivity = "low"\nidentifier = "none"\n'
        for i in (3, 1, 2)
    )
    s = load(MINIMAL + body)
    assert list(s.record_type("person").fields) == ["name", "f3", "f1", "f2"]


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_loads_arbitrary_bytes_raises_only_childvault_errors(data: bytes) -> None:
    with contextlib.suppress(ChildVaultError):
        Schema.loads(data)


TOMLISH_KEYS = [
    "name",
    "version",
    "purposes",
    "types",
    "description",
    "type",
    "required",
    "sensitivity",
    "identifier",
    "generalise",
    "searchable",
    "low_entropy",
    "metadata",
    "max_length",
    "values",
    "aliases",
    "birth_date_field",
    "sex_field",
    "fields",
    "child",
]
TOMLISH_VALUES = [
    "true",
    "false",
    "0",
    "-1",
    "1",
    "99999999999",
    "1.5",
    '""',
    '"text"',
    '"enum"',
    '"date"',
    '"binary"',
    '"id_number"',
    '"quasi"',
    '"direct"',
    '"high"',
    '"keep"',
    '"district"',
    '"age_band"',
    '"sex"',
    '"date_of_birth"',
    "[]",
    '["a", "b"]',
    "[1, 2]",
    "{}",
    '{ "a" = "b" }',
    "1979-05-27",
    '"\\u0000"',
]
_TOML_LINES = CHILD_TOML.read_text(encoding="utf-8").splitlines()


@st.composite
def tomlish(draw: st.DrawFn) -> str:
    lines = list(_TOML_LINES)
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        op = draw(st.sampled_from(["delete", "duplicate", "replace", "insert", "header"]))
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        key = draw(st.sampled_from(TOMLISH_KEYS))
        value = draw(st.sampled_from(TOMLISH_VALUES) | st.text(max_size=8).map(repr))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "replace" and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "= " + value
        elif op == "insert":
            lines.insert(i, f"{key} = {value}")
        else:
            lines.insert(i, f"[types.child.fields.{key}]")
        if not lines:
            lines = [""]
    return "\n".join(lines)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(tomlish())
def test_loads_mutated_toml_raises_only_childvault_errors(text: str) -> None:
    try:
        s = Schema.loads(text.encode("utf-8", "surrogatepass"))
    except ChildVaultError:
        return
    # Whatever loads must still respect the invariants.
    for rtype in s.types.values():
        for spec in rtype.fields.values():
            assert not (spec.searchable and spec.low_entropy)
            assert not (spec.metadata and spec.sensitivity == "high")
            assert (spec.generalise is None) == (spec.identifier != "quasi")


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
