"""Validation compiled per schema (issue 18, third round, session 6) equals the
per-value rules it replaced: the same canonical values, and the same errors
(English and zh_CN text, and the field named) in the same order.

The oracle below is the reference normaliser as it stood before compilation
(one dispatch on the field type per value), kept here only as the test's
judge; the error helpers it calls are the module's own.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import date

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from childvault._i18n import Message
from childvault.keys._errors import ValidationError
from childvault.vault import _schema, _validators
from childvault.vault._schema import Schema
from childvault.vault._schema_types import (
    _BAD_CHAR_RE,
    _BAD_TEXT_CHAR_RE,
    CONSENT_COLUMNS,
    FieldSpec,
    RecordType,
    _enum_key,
)
from childvault.vault._validators import (
    check_date,
    check_id_number,
    check_mainland_phone,
    make_id_number,
)

# -- the reference (the pre-compilation rules) --------------------------------------------


def _reference_normalise(spec: FieldSpec, raw: object) -> str | None:
    name = spec.name
    if not isinstance(raw, str):
        raise ValidationError(
            _schema._t(
                "{name}: expected text, got {kind}; expected {expected}",
                name=name,
                kind=type(raw).__name__,
                expected=_schema._expectation(spec),
            ),
            field=name,
        )
    if len(raw) > _schema._raw_limit(spec):
        raise ValidationError(
            _schema._t(
                "{name}: too long ({n} characters); expected {expected}",
                name=name,
                n=len(raw),
                expected=_schema._expectation(spec),
            ),
            field=name,
        )
    if spec.type == "binary":
        return _schema._normalise_binary(spec, raw)
    if spec.type == "text":
        raw = raw.replace("\r\n", "\n")
        bad = _BAD_TEXT_CHAR_RE.search(raw)
    else:
        bad = _BAD_CHAR_RE.search(raw)
    if bad is not None:
        raise ValidationError(
            _schema._t(
                "{name}: {problem}",
                name=name,
                problem=_schema._describe_bad_char(bad.group(), spec),
            ),
            field=name,
        )
    if not raw.strip():
        return None
    if spec.type == "text":
        text = unicodedata.normalize("NFC", raw).strip()
        if len(text) > spec.max_length:
            raise ValidationError(
                _schema._t(
                    "{name}: too long ({n} characters); at most {max_length}",
                    name=name,
                    n=len(text),
                    max_length=spec.max_length,
                ),
                field=name,
            )
        return text
    if spec.type == "date":
        return check_date(raw, field=name)
    if spec.type == "id_number":
        return check_id_number(raw, field=name)
    if spec.type == "phone":
        return check_mainland_phone(raw, field=name)
    key = _enum_key(raw)
    for value in spec.values:
        if _enum_key(value) == key:
            return value
    for alias, value in spec.aliases:
        if _enum_key(alias) == key:
            return value
    _schema._refuse_enum(spec)


def _reference_record(rtype: RecordType, values: Mapping[str, object]) -> dict[str, str]:
    for key in values:
        _schema._known_field(rtype, key)
    result: dict[str, str] = {}
    for name, spec in rtype.fields.items():
        raw = values.get(name)
        value = _reference_normalise(spec, raw) if raw is not None else None
        if value is None:
            if spec.required:
                raise ValidationError(
                    _schema._t(
                        "{name}: required field is missing or empty; expected {expected}",
                        name=name,
                        expected=_schema._expectation(spec),
                    ),
                    field=name,
                )
            continue
        result[name] = value
    ids = [s for s in rtype.fields.values() if s.type == "id_number"]
    _schema._cross_check(ids, result, focus=None)
    return result


def _outcome(fn: object, *args: object) -> tuple[str, ...]:
    """What a call gives: its value, or its error in both languages and its field."""
    try:
        return ("ok", repr(fn(*args)))  # type: ignore[operator]
    except ValidationError as exc:
        message = exc.args[0]
        assert isinstance(message, Message), "every refusal is a translatable Message"
        return ("error", str(message), message.in_locale("zh_CN"), repr(exc.field))


# -- inputs ---------------------------------------------------------------------------------

SCHEMA = Schema.default()
CHILD = SCHEMA.record_type("child")
ID = make_id_number("110105", __import__("datetime").date(2015, 3, 9), 123)

# Characters that exercise every branch: controls (allowed in text or not),
# bidirectional controls, surrogates, NFC/NFKC-sensitive forms, full-width
# digits, whitespace of other scripts, base64 and separators.
_TRICKY = (
    "\x00\t\n\r\x0b\x1f\x7f\x85\x9f\u202a\u202e\u2066\u2069\ud800\udfff"
    "\u00a0\u2000\u2001\u3000\u0301\u00e9e\u212b\uff11\uff38x Xx+/=-()"
    "男女性孤儿贫困MFmf０１２３４５６７８９"
)
_cells = (
    st.text(max_size=30)
    | st.text(alphabet=_TRICKY + "0123456789abcdefAB", max_size=30)
    | st.sampled_from(
        [
            "",
            "   ",
            "male",
            " FEMALE ",
            "男",
            "ｍａｌｅ",
            "orphan",
            "孤儿",
            "2015-03-09",
            "２０１５-０３-０９",
            "2023-02-29",
            "1899-12-31",
            ID,
            ID.lower(),
            ID[:-1] + "0",
            "13812345678",
            "+86 138 1234 5678",
            "(010) 1234 5678",
            "QUJD",
            "QUJ D\n",
            "A===",
            "a\r\nb",
            "x" * 201,
            "é" * 200,
            "e\u0301" * 150,
        ]
    )
)
_values = _cells | st.integers() | st.none() | st.binary(max_size=4)
_field_names = st.sampled_from(list(CHILD.fields)) | st.sampled_from(["bogus", "姓名"])


def _valid_child() -> dict[str, str]:
    return {
        "name": "张小明",
        "sex": "male",
        "date_of_birth": "2015-03-09",
        "id_number": ID,
        "guardian_phone": "13812345678",
        "difficulty_category": "orphan",
    }


@st.composite
def _rows(draw: st.DrawFn) -> dict[str, object]:
    row: dict[str, object] = dict(_valid_child()) if draw(st.booleans()) else {}
    row.update(draw(st.dictionaries(_field_names, _values, max_size=6)))
    return row


# -- the tests --------------------------------------------------------------------------------


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(CHILD.fields.values())), _values)
@example(CHILD.fields["name"], "a\r\n\x0bb")
@example(CHILD.fields["name"], " \u2000abc\u3000")
@example(CHILD.fields["sex"], "Ｍ")
@example(CHILD.fields["photo"], "QUJD\n")
def test_each_field_normalises_as_the_reference(spec: FieldSpec, raw: object) -> None:
    compiled = SCHEMA.validator("child").normalisers[spec.name]
    assert _outcome(compiled, raw) == _outcome(_reference_normalise, spec, raw)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(_rows())
def test_whole_records_validate_as_the_reference(row: dict[str, object]) -> None:
    got = _outcome(SCHEMA.validate_record, "child", row)
    assert got == _outcome(_reference_record, CHILD, row)
    # An import row carries its consent columns beside the fields: skipped, and
    # nothing else changes.
    with_consent = {**row, **dict.fromkeys(CONSENT_COLUMNS, "x")}
    validator = SCHEMA.validator("child")
    assert _outcome(lambda r: validator(r, skip=CONSENT_COLUMNS), with_consent) == got


_ALL_TYPES = """
name = "every_type"
version = 1
purposes = ["case_management"]

[types.t]
description = "all field types"

[types.t.fields.note]
type = "text"
max_length = 5
required = true
sensitivity = "low"
identifier = "none"

[types.t.fields.kind]
type = "enum"
values = ["a", "b"]
aliases = { "甲" = "a", "Ｂｅｅ" = "b", "x" = "a" }
sensitivity = "low"
identifier = "none"

[types.t.fields.blob]
type = "binary"
max_length = 4
sensitivity = "low"
identifier = "none"

[types.t.fields.born]
type = "date"
sensitivity = "low"
identifier = "none"

[types.t.fields.phone]
type = "phone"
sensitivity = "low"
identifier = "none"
""".encode()


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["note", "kind", "blob", "born", "phone"]), _values)
@example("kind", "X")
@example("kind", "bee")
@example("note", "123456")
@example("blob", "QUJDREVG")
def test_other_schemas_compile_to_the_reference(field: str, raw: object) -> None:
    # A full-width alias, a short required text, a small binary: what the
    # default schema does not declare.
    schema = Schema.loads(_ALL_TYPES)
    spec = schema.record_type("t").fields[field]
    compiled = schema.validator("t").normalisers[field]
    assert _outcome(compiled, raw) == _outcome(_reference_normalise, spec, raw)


def test_the_validator_is_built_once_per_schema_and_type() -> None:
    schema = Schema.loads(_ALL_TYPES)
    assert schema.validator("t") is schema.validator("t")
    # The cache is not part of the schema's value.
    assert schema == Schema.loads(_ALL_TYPES)


def test_unknown_type_is_refused_as_before() -> None:
    from childvault.keys._errors import UsageError

    with pytest.raises(UsageError, match="unknown record type 'nope'"):
        SCHEMA.validator("nope")


@st.composite
def _id_cells(draw: st.DrawFn) -> str:
    """Identity numbers, valid or nearly: any birth date (before 1900, in the
    future, impossible), a right or wrong check character, case and spaces."""
    digits = draw(st.text("0123456789", min_size=17, max_size=17))
    if draw(st.booleans()):
        born = draw(st.dates(min_value=date(1800, 1, 1), max_value=date(2200, 12, 31)))
        digits = digits[:6] + f"{born:%Y%m%d}" + digits[14:]
    if draw(st.booleans()):
        digits = digits[:10] + draw(st.sampled_from(["0230", "1301", "0000", "0431"])) + digits[14:]
    check = draw(st.sampled_from(["right", *"0123456789Xx", "", "YZ", "１"]))
    if check == "right":
        total = sum(int(d) * w for d, w in zip(digits, _validators._ID_WEIGHTS, strict=True))
        check = _validators._ID_CHECK[total % 11]
    text = digits + check
    if draw(st.booleans()):
        text = text.lower()
    return (
        draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " ", "\u3000"]))
    )


@settings(max_examples=1500)
@given(_id_cells())
@example(ID)
@example(make_id_number("110105", date(1900, 1, 1), 1))
@example(make_id_number("110105", date(1899, 12, 31), 1))
def test_identity_numbers_normalise_as_the_reference(raw: str) -> None:
    """The compiled identity-number check's shortcut (issue 18, round 2 session 9)
    accepts exactly what check_id_number accepts, with the same value, and
    refuses with the same message otherwise."""
    spec = CHILD.fields["id_number"]
    compiled = SCHEMA.validator("child").normalisers["id_number"]
    assert _outcome(compiled, raw) == _outcome(_reference_normalise, spec, raw)
