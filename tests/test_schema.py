"""Schema loading (strict TOML): the default schema, declarations, malformed files.

Record validation against a schema is in test_schema_validation.py.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from childvault.keys._errors import ChildVaultError, UsageError, ValidationError
from childvault.vault._consent import (
    ALL_CONSENT_COLUMNS,
)
from childvault.vault._schema import RESERVED_FIELD_NAMES, FieldSpec, Schema
from tests._schema_data import (
    CHILD_FIELDS,
    CHILD_TOML,
    MINIMAL,
    PURPOSES,
    load,
)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.default()


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
