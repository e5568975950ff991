"""Schemas: which record types and fields a vault accepts, and record validation.

A schema is a TOML file (format in ``docs/schema.md``; the default is
``vault/schemas/child.toml``). It declares every field a record may hold and
every purpose data may be used for; anything else is refused (P-11, M-10).
Loading is strict: an unknown key, a bad name or a contradictory combination
(a blind index on a low-entropy field, a highly sensitive field kept in clear)
is a :class:`UsageError` naming the key, so a typo can never silently weaken
the protection a schema author meant to declare.

Validation turns the text people type (CLI ``NAME=VALUE``, CSV or JSONL cells)
into canonical values. Error messages name the field and say what is expected
but never repeat the value: at most its length is mentioned.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import importlib.resources
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from childvault.keys._errors import UsageError, ValidationError
from childvault.vault._consent import CONSENT_COLUMNS
from childvault.vault._validators import check_date, check_id_number, check_mainland_phone

__all__ = [
    "FIELD_TYPES",
    "GENERALISATIONS",
    "IDENTIFIERS",
    "RESERVED_FIELD_NAMES",
    "SENSITIVITIES",
    "FieldSpec",
    "RecordType",
    "Schema",
]

#: The value types a field may have.
FIELD_TYPES = ("text", "date", "enum", "id_number", "phone", "binary")
#: Sensitivity levels, from least to most sensitive.
SENSITIVITIES = ("low", "medium", "high")
#: Identifier classes used by anonymised exports.
IDENTIFIERS = ("direct", "quasi", "none")
#: How an anonymised export generalises a quasi identifier.
GENERALISATIONS = ("age_band", "district", "keep")
#: Names no field may take: the import format uses them for the consent columns.
RESERVED_FIELD_NAMES = frozenset(CONSENT_COLUMNS)

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
_MAX_SCHEMA_BYTES = 1 << 20
_MAX_TEXT_LENGTH = 1_000_000
_MAX_BINARY_BYTES = 16 << 20
_DEFAULT_TEXT_LENGTH = 200
_MAX_ALIAS_LENGTH = 64
# Canonical forms have a fixed size for these types; the schema may not set one.
_FIXED_LENGTH = {"date": 10, "id_number": 18, "phone": 13}
# Generalisations that make sense for each type: an age band needs a date, a
# district needs an address, and only a closed set of values may be kept as is.
_GENERALISE_TYPES = {"age_band": "date", "district": "text", "keep": "enum"}

# Characters refused in every value: C0/C1 controls, unpaired surrogates (not
# encodable as UTF-8) and the bidirectional embedding/override/isolate controls,
# which make displayed text differ from stored text (CVE-2021-42574).
_BAD_CHAR_RE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# In text, line breaks and tabs are legitimate (case notes have paragraphs).
_BAD_TEXT_CHAR_RE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class FieldSpec:
    """One declared field of a record type.

    ``max_length`` counts characters of the normalised value (bytes after
    base64 decoding for ``binary``). ``values`` holds the canonical enum values;
    ``aliases`` maps further accepted spellings (compared case-insensitively) to
    them. ``birth_date_field`` and ``sex_field``, set only on an ``id_number``
    field, name the fields the identity number must agree with.
    """

    name: str
    type: str
    required: bool
    sensitivity: str
    identifier: str
    generalise: str | None
    searchable: bool
    low_entropy: bool
    metadata: bool
    max_length: int
    values: tuple[str, ...]
    description: str
    aliases: tuple[tuple[str, str], ...] = ()
    birth_date_field: str | None = None
    sex_field: str | None = None


@dataclass(frozen=True)
class RecordType:
    """A record type: its name and its fields in declaration order."""

    name: str
    fields: Mapping[str, FieldSpec]
    description: str


@dataclass(frozen=True)
class Schema:
    """A loaded schema: record types, purposes, and the digest of its source bytes.

    Build one with :meth:`default`, :meth:`load` or :meth:`loads`; the
    constructor itself does not validate.
    """

    name: str
    version: int
    purposes: tuple[str, ...]
    types: Mapping[str, RecordType]
    digest: str
    source: bytes
    description: str = ""

    @classmethod
    def default(cls) -> Schema:
        """The packaged default schema (``vault/schemas/child.toml``)."""
        return _default_schema()

    @classmethod
    def load(cls, path: Path) -> Schema:
        """Load and check a schema file; UsageError if unreadable or invalid."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(_MAX_SCHEMA_BYTES + 1)
        except OSError as exc:
            raise UsageError(
                f"cannot read the schema file {str(path)!r}: {exc.strerror or exc}"
            ) from None
        return cls.loads(data)

    @classmethod
    def loads(cls, data: bytes) -> Schema:
        """Parse and check schema TOML bytes; UsageError naming the offending key."""
        if not isinstance(data, bytes | bytearray):
            raise UsageError("schema: expected the bytes of a TOML file")
        data = bytes(data)
        if len(data) > _MAX_SCHEMA_BYTES:
            raise UsageError(f"schema: file too large (more than {_MAX_SCHEMA_BYTES} bytes)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"schema: not UTF-8 text (bad byte at offset {exc.start})") from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"schema: not valid TOML: {exc}") from None
        except RecursionError:
            # tomllib recurses on nested arrays and inline tables.
            raise UsageError("schema: not valid TOML: nesting too deep") from None
        return _build_schema(doc, data)

    def record_type(self, name: str) -> RecordType:
        """The record type called ``name``; UsageError listing the known types."""
        rtype = self.types.get(name) if isinstance(name, str) else None
        if rtype is None:
            raise UsageError(
                f"unknown record type {_show(name)}; the schema {self.name!r} declares: "
                + ", ".join(self.types)
            )
        return rtype

    def check_purpose(self, purpose: str) -> str:
        """Return ``purpose`` if the schema declares it; UsageError listing the purposes."""
        if isinstance(purpose, str) and purpose in self.purposes:
            return purpose
        raise UsageError(
            f"unknown purpose {_show(purpose)}; the schema {self.name!r} declares: "
            + ", ".join(self.purposes)
        )

    def validate_record(self, type_name: str, values: Mapping[str, str]) -> dict[str, str]:
        """Check a whole record and return its normalised values in declaration order.

        Refuses unknown fields, missing or empty required fields, values of the
        wrong type or format, values too long, control characters, and
        cross-field contradictions (identity number vs date of birth and sex).
        An empty optional field is dropped from the result, not stored.
        """
        rtype = self.record_type(type_name)
        for key in values:
            _known_field(rtype, key)
        result: dict[str, str] = {}
        for name, spec in rtype.fields.items():
            raw = values.get(name)
            value = _normalise(spec, raw) if raw is not None else None
            if value is None:
                if spec.required:
                    raise ValidationError(
                        f"{name}: required field is missing or empty; expected "
                        + _expectation(spec),
                        field=name,
                    )
                continue
            result[name] = value
        _cross_check(rtype, result, focus=None)
        return result

    def validate_field(
        self,
        type_name: str,
        field: str,
        value: str,
        *,
        others: Mapping[str, str] = MappingProxyType({}),
    ) -> str:
        """Check one field's new value (a correction) and return it normalised.

        ``others`` are the record's other current values, if known: the cross
        checks that involve this field are run against them (a value in
        ``others`` that is itself invalid is left out of the checks). Returns
        ``""`` for an empty value of an optional field, meaning "remove it".
        """
        rtype = self.record_type(type_name)
        spec = _known_field(rtype, field)
        normalised = _normalise(spec, value)
        if normalised is None:
            if spec.required:
                raise ValidationError(
                    f"{field}: required field cannot be emptied; expected " + _expectation(spec),
                    field=field,
                )
            return ""
        current: dict[str, str] = {}
        for name in _cross_partners(rtype, field):
            other = others.get(name)
            other_spec = rtype.fields[name]
            if other is None:
                continue
            try:
                checked = _normalise(other_spec, other)
            except ValidationError:
                continue
            if checked is not None:
                current[name] = checked
        current[field] = normalised
        _cross_check(rtype, current, focus=field)
        return normalised


@functools.cache
def _default_schema() -> Schema:
    data = importlib.resources.files("childvault.vault").joinpath("schemas/child.toml").read_bytes()
    return Schema.loads(data)


# --------------------------------------------------------------------------
# Value normalisation


def _show(name: object) -> str:
    # Names given by a user may be anything; show a bounded, escaped form.
    text = name if isinstance(name, str) else str(type(name).__name__)
    return repr(text[:64]) + ("…" if len(text) > 64 else "")


def _known_field(rtype: RecordType, key: object) -> FieldSpec:
    if not isinstance(key, str):
        raise ValidationError(
            f"a value has no field name (a row with more cells than the header?); "
            f"record type {rtype.name!r} allows: " + ", ".join(rtype.fields),
        )
    spec = rtype.fields.get(key)
    if spec is None:
        shown = _show(key)
        raise ValidationError(
            f"unknown field {shown} for record type {rtype.name!r}; allowed fields: "
            + ", ".join(rtype.fields),
            field=key[:64],
        )
    return spec


def _expectation(spec: FieldSpec) -> str:
    if spec.type == "text":
        return f"text of at most {spec.max_length} characters"
    if spec.type == "date":
        return "a date as YYYY-MM-DD"
    if spec.type == "enum":
        return "one of: " + ", ".join(spec.values)
    if spec.type == "id_number":
        return "an 18-character resident identity number"
    if spec.type == "phone":
        return "a mainland mobile or landline number"
    return f"base64 data of at most {spec.max_length} bytes"


def _raw_limit(spec: FieldSpec) -> int:
    # A cheap bound on the raw input, checked before any per-character work so
    # that a huge value cannot make validation slow. NFC can compose up to
    # three code points into one (Hangul jamo), hence the factor for text.
    if spec.type == "text":
        return 3 * spec.max_length + 1024
    if spec.type == "binary":
        return 2 * (4 * -(-spec.max_length // 3)) + 1024
    return 256


def _normalise(spec: FieldSpec, raw: object) -> str | None:
    """The canonical value of ``raw`` for ``spec``, or None if it is empty."""
    name = spec.name
    if not isinstance(raw, str):
        raise ValidationError(
            f"{name}: expected text, got {type(raw).__name__}; expected " + _expectation(spec),
            field=name,
        )
    if len(raw) > _raw_limit(spec):
        raise ValidationError(
            f"{name}: too long ({len(raw)} characters); expected " + _expectation(spec),
            field=name,
        )
    if spec.type == "binary":
        return _normalise_binary(spec, raw)
    if spec.type == "text":
        # Windows line endings (CSV from a spreadsheet) become plain line breaks.
        raw = raw.replace("\r\n", "\n")
        bad = _BAD_TEXT_CHAR_RE.search(raw)
    else:
        bad = _BAD_CHAR_RE.search(raw)
    if bad is not None:
        raise ValidationError(f"{name}: {_describe_bad_char(bad.group(), spec)}", field=name)
    if not raw.strip():
        return None
    if spec.type == "text":
        text = unicodedata.normalize("NFC", raw).strip()
        if len(text) > spec.max_length:
            raise ValidationError(
                f"{name}: too long ({len(text)} characters); at most {spec.max_length}",
                field=name,
            )
        return text
    if spec.type == "date":
        return check_date(raw, field=name)
    if spec.type == "id_number":
        return check_id_number(raw, field=name)
    if spec.type == "phone":
        return check_mainland_phone(raw, field=name)
    return _normalise_enum(spec, raw)


def _describe_bad_char(char: str, spec: FieldSpec) -> str:
    code = f"U+{ord(char):04X}"
    if "\ud800" <= char <= "\udfff":
        return f"contains an unpaired surrogate {code}, which is not valid Unicode text"
    if "\u202a" <= char <= "\u202e" or "\u2066" <= char <= "\u2069":
        return (
            f"contains the bidirectional control character {code}, which can make "
            "text display differently from what is stored; remove it"
        )
    allowed = "only line breaks and tabs are allowed" if spec.type == "text" else "none allowed"
    return f"contains the control character {code} ({allowed}); remove it"


def _enum_key(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


def _normalise_enum(spec: FieldSpec, raw: str) -> str:
    key = _enum_key(raw)
    for value in spec.values:
        if _enum_key(value) == key:
            return value
    for alias, value in spec.aliases:
        if _enum_key(alias) == key:
            return value
    accepted = ", ".join(spec.values)
    if spec.aliases:
        accepted += " (or " + ", ".join(alias for alias, _ in spec.aliases) + ")"
    raise ValidationError(
        f"{spec.name}: not an allowed value; expected one of: {accepted}", field=spec.name
    )


def _normalise_binary(spec: FieldSpec, raw: str) -> str | None:
    name = spec.name
    # Line-wrapped base64 (MIME, `base64` tool output) is accepted.
    compact = _WHITESPACE_RE.sub("", raw)
    if not compact:
        return None
    if not _BASE64_RE.fullmatch(compact) or len(compact) % 4:
        raise ValidationError(
            f"{name}: not valid base64 ({len(raw)} characters); expected standard "
            "base64 (A-Z a-z 0-9 + /, padded with =)",
            field=name,
        )
    try:
        decoded = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        raise ValidationError(
            f"{name}: not valid base64; expected standard padded base64", field=name
        ) from None
    if not decoded:
        return None
    if len(decoded) > spec.max_length:
        raise ValidationError(
            f"{name}: too large ({len(decoded)} bytes after base64 decoding); "
            f"at most {spec.max_length} bytes",
            field=name,
        )
    return base64.b64encode(decoded).decode("ascii")


# --------------------------------------------------------------------------
# Cross-field checks


def _cross_partners(rtype: RecordType, field: str) -> set[str]:
    """Fields whose values take part in a cross check with ``field``."""
    partners: set[str] = set()
    for spec in rtype.fields.values():
        if spec.type != "id_number":
            continue
        group = {spec.name, spec.birth_date_field, spec.sex_field} - {None}
        if field in group:
            partners |= {name for name in group if name is not None and name != field}
    return partners


def _cross_check(rtype: RecordType, values: Mapping[str, str], *, focus: str | None) -> None:
    """Check that each identity number agrees with its birth date and sex fields."""
    for spec in rtype.fields.values():
        if spec.type != "id_number" or spec.name not in values:
            continue
        id_value = values[spec.name]
        birth_field = spec.birth_date_field
        # Both are canonical: YYYYMMDD at positions 7-14 vs YYYY-MM-DD.
        if (
            birth_field
            and birth_field in values
            and id_value[6:14] != values[birth_field].replace("-", "")
        ):
            raise ValidationError(
                f"{spec.name} and {birth_field} disagree: the birth date inside the "
                f"identity number (characters 7-14) differs from {birth_field}; "
                "correct whichever is wrong",
                field=focus or spec.name,
            )
        sex_field = spec.sex_field
        sex = values.get(sex_field) if sex_field else None
        # Only male/female can be checked: a schema may add values such as
        # "unknown" that the identity number says nothing about.
        if sex in ("male", "female"):
            id_sex = "male" if int(id_value[16]) % 2 else "female"
            if id_sex != sex:
                raise ValidationError(
                    f"{spec.name} and {sex_field} disagree: the 17th digit of the identity "
                    f"number (odd = male, even = female) contradicts {sex_field}; "
                    "correct whichever is wrong",
                    field=focus or spec.name,
                )


# --------------------------------------------------------------------------
# Schema file parsing


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date/time"
    return type(value).__name__


def _keys(
    table: dict[str, Any], path: str, allowed: tuple[str, ...], required: tuple[str, ...]
) -> None:
    for key in table:
        if key not in allowed:
            raise UsageError(
                f"schema: unknown key {_join(path, key)!r}; allowed here: " + ", ".join(allowed)
            )
    for key in required:
        if key not in table:
            raise UsageError(f"schema: missing key {_join(path, key)!r}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(table: dict[str, Any], path: str, key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise UsageError(f"schema: {_join(path, key)!r} must be a string, not {_kind(value)}")
    if _BAD_CHAR_RE.search(value):
        raise UsageError(f"schema: {_join(path, key)!r} contains a control character")
    return value


def _bool(table: dict[str, Any], path: str, key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise UsageError(f"schema: {_join(path, key)!r} must be true or false, not {_kind(value)}")
    return value


def _int(table: dict[str, Any], path: str, key: str, low: int, high: int) -> int:
    value = table.get(key)
    # bool is a subclass of int in Python; `version = true` is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"schema: {_join(path, key)!r} must be an integer, not {_kind(value)}")
    if not low <= value <= high:
        raise UsageError(f"schema: {_join(path, key)!r} must be between {low} and {high}")
    return value


def _choice(
    table: dict[str, Any], path: str, key: str, choices: tuple[str, ...], default: str | None
) -> str:
    value = _str(table, path, key, default)
    if value not in choices:
        raise UsageError(f"schema: {_join(path, key)!r} must be one of: " + ", ".join(choices))
    return value


def _name(value: str, what: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise UsageError(
            f"schema: bad {what} name {_show(value)}: expected a lower-case ASCII letter "
            "followed by at most 62 lower-case letters, digits or underscores"
        )
    return value


def _table(doc: dict[str, Any], path: str, key: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise UsageError(f"schema: {_join(path, key)!r} must be a table, not {_kind(value)}")
    return value


def _str_list(table: dict[str, Any], path: str, key: str) -> list[str]:
    value = table.get(key)
    where = _join(path, key)
    if not isinstance(value, list) or not value:
        raise UsageError(f"schema: {where!r} must be a non-empty array of strings")
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str):
            raise UsageError(f"schema: {where!r} must contain strings, not {_kind(item)}")
        if item in seen:
            raise UsageError(f"schema: {where!r} lists {_show(item)} twice")
        seen.add(item)
    return value


def _build_schema(doc: dict[str, Any], source: bytes) -> Schema:
    _keys(
        doc,
        "",
        ("name", "version", "description", "purposes", "types"),
        ("name", "version", "purposes", "types"),
    )
    name = _name(_str(doc, "", "name"), "schema")
    version = _int(doc, "", "version", 1, 2**31 - 1)
    description = _str(doc, "", "description", "")
    purposes = tuple(_name(p, "purpose") for p in _str_list(doc, "", "purposes"))
    types_table = _table(doc, "", "types")
    if not types_table:
        raise UsageError("schema: 'types' must declare at least one record type")
    types: dict[str, RecordType] = {}
    for type_name in types_table:
        _name(type_name, "record type")
        path = f"types.{type_name}"
        types[type_name] = _build_type(type_name, _table(types_table, "types", type_name), path)
    return Schema(
        name=name,
        version=version,
        purposes=purposes,
        types=MappingProxyType(types),
        digest=hashlib.sha256(source).hexdigest(),
        source=source,
        description=description,
    )


def _build_type(type_name: str, table: dict[str, Any], path: str) -> RecordType:
    _keys(table, path, ("description", "fields"), ("fields",))
    description = _str(table, path, "description", "")
    fields_table = _table(table, path, "fields")
    if not fields_table:
        raise UsageError(f"schema: {path + '.fields'!r} must declare at least one field")
    fields: dict[str, FieldSpec] = {}
    for field_name in fields_table:
        _name(field_name, "field")
        if field_name in RESERVED_FIELD_NAMES:
            raise UsageError(
                f"schema: field name {field_name!r} is reserved for the consent columns "
                "of the import format; choose another name"
            )
        field_path = f"{path}.fields.{field_name}"
        fields[field_name] = _build_field(
            field_name, _table(fields_table, f"{path}.fields", field_name), field_path
        )
    _check_references(fields, path)
    return RecordType(name=type_name, fields=MappingProxyType(fields), description=description)


_FIELD_KEYS = (
    "type",
    "description",
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
)


def _build_field(name: str, table: dict[str, Any], path: str) -> FieldSpec:
    _keys(table, path, _FIELD_KEYS, ("type", "sensitivity", "identifier"))
    ftype = _choice(table, path, "type", FIELD_TYPES, None)
    description = _str(table, path, "description", "")
    required = _bool(table, path, "required", False)
    sensitivity = _choice(table, path, "sensitivity", SENSITIVITIES, None)
    identifier = _choice(table, path, "identifier", IDENTIFIERS, None)
    searchable = _bool(table, path, "searchable", False)
    metadata = _bool(table, path, "metadata", False)

    def only_for(key: str, types: tuple[str, ...]) -> None:
        if key in table and ftype not in types:
            raise UsageError(
                f"schema: {_join(path, key)!r} applies only to fields of type " + " or ".join(types)
            )

    # Enumerations and dates have few possible values: a blind index over one
    # alone is a lookup table, so they are always low-entropy.
    inherently_low = ftype in ("enum", "date")
    low_entropy = _bool(table, path, "low_entropy", inherently_low)
    if inherently_low and not low_entropy:
        raise UsageError(
            f"schema: {_join(path, 'low_entropy')!r} cannot be false for a field of type "
            f"{ftype}: it has too few possible values"
        )

    generalise: str | None = None
    if identifier == "quasi":
        if "generalise" not in table:
            raise UsageError(
                f"schema: missing key {_join(path, 'generalise')!r} (required for a quasi "
                "identifier: " + ", ".join(GENERALISATIONS) + ")"
            )
        generalise = _choice(table, path, "generalise", GENERALISATIONS, None)
        if _GENERALISE_TYPES[generalise] != ftype:
            raise UsageError(
                f"schema: {_join(path, 'generalise')!r} = {generalise!r} needs a field of "
                f"type {_GENERALISE_TYPES[generalise]}, not {ftype}"
            )
    elif "generalise" in table:
        raise UsageError(f"schema: {_join(path, 'generalise')!r} applies only to quasi identifiers")

    if searchable:
        if ftype not in ("text", "id_number", "phone"):
            raise UsageError(
                f"schema: {_join(path, 'searchable')!r}: a field of type {ftype} cannot have "
                "a blind index (only text, id_number and phone can)"
            )
        if low_entropy:
            raise UsageError(
                f"schema: {_join(path, 'searchable')!r} and 'low_entropy' together: a blind "
                "index over a low-entropy field alone reveals its value"
            )
        if metadata:
            raise UsageError(
                f"schema: {_join(path, 'searchable')!r} and 'metadata' together: a metadata "
                "field is stored in clear and needs no blind index"
            )
    if metadata:
        if sensitivity == "high":
            raise UsageError(
                f"schema: {_join(path, 'metadata')!r} with sensitivity 'high': a highly "
                "sensitive field must be encrypted, not kept in clear"
            )
        if identifier == "direct":
            raise UsageError(
                f"schema: {_join(path, 'metadata')!r} on a direct identifier: a field that "
                "identifies a child must be encrypted, not kept in clear"
            )

    only_for("max_length", ("text", "binary"))
    if ftype == "text":
        max_length = (
            _int(table, path, "max_length", 1, _MAX_TEXT_LENGTH)
            if "max_length" in table
            else _DEFAULT_TEXT_LENGTH
        )
    elif ftype == "binary":
        if "max_length" not in table:
            raise UsageError(
                f"schema: missing key {_join(path, 'max_length')!r} (bytes after base64 "
                "decoding; required for a binary field)"
            )
        max_length = _int(table, path, "max_length", 1, _MAX_BINARY_BYTES)
    else:
        max_length = _FIXED_LENGTH.get(ftype, 0)

    only_for("values", ("enum",))
    only_for("aliases", ("enum",))
    values: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()
    if ftype == "enum":
        values = tuple(_name(v, "enum value") for v in _str_list(table, path, "values"))
        aliases = _build_aliases(table, path, values)
        max_length = max(len(v) for v in values)

    only_for("birth_date_field", ("id_number",))
    only_for("sex_field", ("id_number",))
    birth_date_field = (
        _str(table, path, "birth_date_field") if "birth_date_field" in table else None
    )
    sex_field = _str(table, path, "sex_field") if "sex_field" in table else None

    return FieldSpec(
        name=name,
        type=ftype,
        required=required,
        sensitivity=sensitivity,
        identifier=identifier,
        generalise=generalise,
        searchable=searchable,
        low_entropy=low_entropy,
        metadata=metadata,
        max_length=max_length,
        values=values,
        description=description,
        aliases=aliases,
        birth_date_field=birth_date_field,
        sex_field=sex_field,
    )


def _build_aliases(
    table: dict[str, Any], path: str, values: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    where = _join(path, "aliases")
    raw = table.get("aliases", {})
    if not isinstance(raw, dict):
        raise UsageError(f"schema: {where!r} must be a table of alias = value, not {_kind(raw)}")
    # Every accepted spelling, compared as input is compared, must map to one
    # value only; otherwise the same input could mean two things.
    seen = {_enum_key(v): v for v in values}
    result: list[tuple[str, str]] = []
    for alias, target in raw.items():
        if not isinstance(target, str) or target not in values:
            raise UsageError(
                f"schema: {_join(where, alias)!r} must name one of the values: " + ", ".join(values)
            )
        key = _enum_key(alias)
        if not key or len(alias) > _MAX_ALIAS_LENGTH or _BAD_CHAR_RE.search(alias):
            raise UsageError(
                f"schema: bad alias {_show(alias)} in {where!r}: expected 1 to "
                f"{_MAX_ALIAS_LENGTH} printable characters"
            )
        if key in seen:
            raise UsageError(
                f"schema: alias {_show(alias)} in {where!r} duplicates the value or alias "
                f"{_show(seen[key])} (aliases are compared ignoring case and width)"
            )
        seen[key] = alias
        result.append((alias, target))
    return tuple(result)


def _check_references(fields: Mapping[str, FieldSpec], path: str) -> None:
    for spec in fields.values():
        field_path = f"{path}.fields.{spec.name}"
        if spec.birth_date_field is not None:
            target = fields.get(spec.birth_date_field)
            if target is None or target.type != "date":
                raise UsageError(
                    f"schema: {field_path + '.birth_date_field'!r} must name a field of type "
                    "date in the same record type"
                )
        if spec.sex_field is not None:
            target = fields.get(spec.sex_field)
            if (
                target is None
                or target.type != "enum"
                or not {"male", "female"} <= set(target.values)
            ):
                raise UsageError(
                    f"schema: {field_path + '.sex_field'!r} must name an enum field of the "
                    "same record type whose values include male and female"
                )
