"""Schemas: which record types and fields a vault accepts, and record validation.

A schema is a TOML file (format in ``docs/schema.md``; the default is
``vault/schemas/child.toml``). It declares every field a record may hold and
every purpose data may be used for; anything else is refused (P-11, M-10).
Loading is strict (:mod:`._schema_toml`): an unknown key, a bad name or a
contradictory combination is a :class:`UsageError` naming the key.

Validation turns the text people type (CLI ``NAME=VALUE``, CSV or JSONL cells)
into canonical values. Error messages name the field and say what is expected
but never repeat the value: at most its length is mentioned.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.resources
import re
import tomllib
import unicodedata
from collections.abc import Callable, Container, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date
from operator import mul
from pathlib import Path
from types import MappingProxyType
from typing import NoReturn

from childvault._i18n import Message, _t, join
from childvault.keys._errors import UsageError, ValidationError
from childvault.vault._schema_toml import build_schema
from childvault.vault._schema_types import (
    _BAD_CHAR_RE,
    _BAD_TEXT_CHAR_RE,
    _BASE64_RE,
    _WHITESPACE_RE,
    FIELD_TYPES,
    GENERALISATIONS,
    IDENTIFIERS,
    RESERVED_FIELD_NAMES,
    SENSITIVITIES,
    FieldSpec,
    RecordType,
    _enum_key,
    _show,
)
from childvault.vault._validators import (
    _EARLIEST_BIRTH,
    _ID_CHECK,
    _ID_WEIGHTS,
    check_date,
    check_id_number,
    check_mainland_phone,
)

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

_MAX_SCHEMA_BYTES = 1 << 20


#: The legal date (the vault's time zone) an identity number's birth date may
#: not pass, set by :meth:`Schema.validate_record` / :meth:`Schema.validate_field`
#: for the call. Why a context variable: the compiled normalisers take the raw
#: value only (their cost is benchmarked), and the date changes per call, not
#: per schema. Unset (a caller with no vault): the machine's local date.
_LEGAL_TODAY: ContextVar[date | None] = ContextVar("childvault_legal_today", default=None)


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
                _t(
                    "cannot read the schema file {path!r}: {why}",
                    path=str(path),
                    why=exc.strerror or str(exc),
                )
            ) from None
        return cls.loads(data)

    @classmethod
    def loads(cls, data: bytes) -> Schema:
        """Parse and check schema TOML bytes; UsageError naming the offending key."""
        if not isinstance(data, bytes | bytearray):
            raise UsageError(_t("schema: expected the bytes of a TOML file"))
        data = bytes(data)
        if len(data) > _MAX_SCHEMA_BYTES:
            raise UsageError(
                _t(
                    "schema: file too large (more than {n} bytes)",
                    n=_MAX_SCHEMA_BYTES,
                )
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                _t("schema: not UTF-8 text (bad byte at offset {start})", start=exc.start)
            ) from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(_t("schema: not valid TOML: {exc}", exc=str(exc))) from None
        except RecursionError:
            # tomllib recurses on nested arrays and inline tables.
            raise UsageError(_t("schema: not valid TOML: nesting too deep")) from None
        return cls(**build_schema(doc, data))

    def record_type(self, name: str) -> RecordType:
        """The record type called ``name``; UsageError listing the known types."""
        rtype = self.types.get(name) if isinstance(name, str) else None
        if rtype is None:
            raise UsageError(
                _t(
                    "unknown record type {name}; the schema {schema!r} declares: {types}",
                    name=_show(name),
                    schema=self.name,
                    types=join(", ", self.types),
                )
            )
        return rtype

    def check_purpose(self, purpose: str) -> str:
        """Return ``purpose`` if the schema declares it; UsageError listing the purposes."""
        if isinstance(purpose, str) and purpose in self.purposes:
            return purpose
        raise UsageError(
            _t(
                "unknown purpose {purpose}; the schema {schema!r} declares: {purposes}",
                purpose=_show(purpose),
                schema=self.name,
                purposes=join(", ", self.purposes),
            )
        )

    def validate_record(
        self, type_name: str, values: Mapping[str, str], *, today: date | None = None
    ) -> dict[str, str]:
        """Check a whole record and return its normalised values in declaration order.

        Refuses unknown fields, missing or empty required fields, values of the
        wrong type or format, values too long, control characters, and
        cross-field contradictions (identity number vs date of birth and sex).
        An empty optional field is dropped from the result, not stored.
        ``today``: the legal date no birth date may pass (a vault gives the date
        in its time zone; default the machine's local date).
        """
        if today is None:
            return self.validator(type_name)(values)
        token = _LEGAL_TODAY.set(today)
        try:
            return self.validator(type_name)(values)
        finally:
            _LEGAL_TODAY.reset(token)

    def validator(self, type_name: str) -> RecordValidator:
        """The compiled validator of record type ``type_name`` (built once per schema).

        UsageError listing the known types, as :meth:`record_type`. Why compiled:
        an import validates every row with the same schema, and deciding per
        value what its field's type asks for was most of the validation's cost.
        """
        validator = self._compiled.get(type_name) if isinstance(type_name, str) else None
        if validator is None:
            validator = RecordValidator(self.record_type(type_name))
            # A race between threads builds the same validator twice: harmless.
            self._compiled[type_name] = validator
        return validator

    @functools.cached_property
    def _compiled(self) -> dict[str, RecordValidator]:
        # Outside the dataclass fields (equality and repr ignore it); a schema
        # never changes after loading, so its validators never go stale.
        return {}

    def validate_field(
        self,
        type_name: str,
        field: str,
        value: str,
        *,
        others: Mapping[str, str] = MappingProxyType({}),
        today: date | None = None,
    ) -> str:
        """Check one field's new value (a correction) and return it normalised.

        ``others`` are the record's other current values, if known: the cross
        checks that involve this field are run against them (a value in
        ``others`` that is itself invalid is left out of the checks). Returns
        ``""`` for an empty value of an optional field, meaning "remove it".
        ``today``: as in :meth:`validate_record`.
        """
        if today is not None:
            token = _LEGAL_TODAY.set(today)
            try:
                return self.validate_field(type_name, field, value, others=others)
            finally:
                _LEGAL_TODAY.reset(token)
        validator = self.validator(type_name)
        rtype = validator.rtype
        spec = _known_field(rtype, field)
        normalised = validator.normalisers[field](value)
        if normalised is None:
            if spec.required:
                raise ValidationError(
                    _t(
                        "{field}: required field cannot be emptied; expected {expected}",
                        field=field,
                        expected=_expectation(spec),
                    ),
                    field=field,
                )
            return ""
        current: dict[str, str] = {}
        for name in _cross_partners(rtype, field):
            other = others.get(name)
            if other is None:
                continue
            try:
                checked = validator.normalisers[name](other)
            except ValidationError:
                continue
            if checked is not None:
                current[name] = checked
        current[field] = normalised
        _cross_check(validator.id_specs, current, focus=field)
        return normalised


@functools.cache
def _default_schema() -> Schema:
    data = importlib.resources.files("childvault.vault").joinpath("schemas/child.toml").read_bytes()
    return Schema.loads(data)


# --------------------------------------------------------------------------
# Value normalisation


def _known_field(rtype: RecordType, key: object) -> FieldSpec:
    if not isinstance(key, str):
        raise ValidationError(
            _t(
                "a value has no field name (a row with more cells than the header?); "
                "record type {type!r} allows: {fields}",
                type=rtype.name,
                fields=join(", ", rtype.fields),
            ),
        )
    spec = rtype.fields.get(key)
    if spec is None:
        shown = _show(key)
        raise ValidationError(
            _t(
                "unknown field {field} for record type {type!r}; allowed fields: {fields}",
                field=shown,
                type=rtype.name,
                fields=join(", ", rtype.fields),
            ),
            field=key[:64],
        )
    return spec


def _expectation(spec: FieldSpec) -> Message:
    if spec.type == "text":
        return _t("text of at most {n} characters", n=spec.max_length)
    if spec.type == "date":
        return _t("a date as YYYY-MM-DD")
    if spec.type == "enum":
        return _t("one of: {values}", values=join(", ", spec.values))
    if spec.type == "id_number":
        return _t("an 18-character resident identity number")
    if spec.type == "phone":
        return _t("a mainland mobile or landline number")
    return _t("base64 data of at most {n} bytes", n=spec.max_length)


def _raw_limit(spec: FieldSpec) -> int:
    # A cheap bound on the raw input, checked before any per-character work so
    # that a huge value cannot make validation slow. NFC can compose up to
    # three code points into one (Hangul jamo), hence the factor for text.
    if spec.type == "text":
        return 3 * spec.max_length + 1024
    if spec.type == "binary":
        return 2 * (4 * -(-spec.max_length // 3)) + 1024
    return 256


#: A field's compiled normaliser: the canonical form of a raw value, None if empty.
Normaliser = Callable[[object], "str | None"]


class RecordValidator:
    """One record type's validation, compiled once per schema (:meth:`Schema.validator`).

    ``normalisers`` maps each field to its :data:`Normaliser`; calling the
    validator checks a whole record as :meth:`Schema.validate_record`
    documents, with the same errors in the same order. ``id_specs`` are the
    type's identity-number fields (the cross checks).
    """

    __slots__ = ("_plan", "id_specs", "normalisers", "rtype")

    def __init__(self, rtype: RecordType) -> None:
        """Compile every field of ``rtype``."""
        self.rtype = rtype
        self.normalisers: Mapping[str, Normaliser] = MappingProxyType(
            {name: _compile_field(spec) for name, spec in rtype.fields.items()}
        )
        self._plan = tuple(
            (name, self.normalisers[name], spec.required) for name, spec in rtype.fields.items()
        )
        self.id_specs = tuple(s for s in rtype.fields.values() if s.type == "id_number")

    def __call__(
        self, values: Mapping[str, object], *, skip: Container[str] = ()
    ) -> dict[str, str]:
        """The normalised values of a record in declaration order; ValidationError
        naming the first problem. Keys in ``skip`` are left out (an import row's
        consent columns, which no field may be named: RESERVED_FIELD_NAMES)."""
        fields = self.rtype.fields
        for key in values:
            if key not in fields and key not in skip:
                _known_field(self.rtype, key)  # raises: unknown or unnamed
        result: dict[str, str] = {}
        for name, normalise, required in self._plan:
            raw = values.get(name)
            value = None if raw is None else normalise(raw)
            if value is None:
                if required:
                    spec = fields[name]
                    raise ValidationError(
                        _t(
                            "{name}: required field is missing or empty; expected {expected}",
                            name=name,
                            expected=_expectation(spec),
                        ),
                        field=name,
                    )
                continue
            result[name] = value
        if self.id_specs:
            _cross_check(self.id_specs, result, focus=None)
        return result


def _compile_field(spec: FieldSpec) -> Normaliser:
    """The normaliser of ``spec``: every check of a value, in a fixed order.

    First the value's type and a cheap bound on its raw length (before any
    per-character work, so that a huge value cannot make validation slow),
    then forbidden characters, emptiness, and the type's own rule. What depends
    only on the declaration (the bound, the pattern, the check, the enum's
    accepted spellings) is worked out here, once per schema.
    """
    name = spec.name
    limit = _raw_limit(spec)
    kind = spec.type
    # str.isprintable() is False for every character the patterns refuse
    # (controls, bidirectional controls, surrogates): a printable value, nearly
    # every cell, skips the search; any other is searched as before.
    if kind == "binary":

        def binary(raw: object) -> str | None:
            if not isinstance(raw, str) or len(raw) > limit:
                _refuse_raw(spec, raw)
            return _normalise_binary(spec, raw)

        return binary
    if kind == "text":
        search_text = _BAD_TEXT_CHAR_RE.search
        max_length = spec.max_length

        def text(raw: object) -> str | None:
            if not isinstance(raw, str) or len(raw) > limit:
                _refuse_raw(spec, raw)
            # Windows line endings (CSV from a spreadsheet) become plain line breaks.
            raw = raw.replace("\r\n", "\n")
            if not raw.isprintable():
                bad = search_text(raw)
                if bad is not None:
                    _refuse_char(spec, bad.group())
            stripped = raw.strip()
            if not stripped:
                return None
            # ASCII is NFC already (every normal form maps ASCII to itself).
            value = stripped if raw.isascii() else unicodedata.normalize("NFC", raw).strip()
            if len(value) > max_length:
                raise ValidationError(
                    _t(
                        "{name}: too long ({n} characters); at most {max_length}",
                        name=name,
                        n=len(value),
                        max_length=max_length,
                    ),
                    field=name,
                )
            return value

        return text
    search = _BAD_CHAR_RE.search
    if kind == "enum":
        # The accepted spellings, compared as _enum_key gives them: the canonical
        # values first, then the aliases (the first spelling of a key wins).
        table: dict[str, str] = {}
        for value in spec.values:
            table.setdefault(_enum_key(value), value)
        for alias, value in spec.aliases:
            table.setdefault(_enum_key(alias), value)

        def enum(raw: object) -> str | None:
            if not isinstance(raw, str) or len(raw) > limit:
                _refuse_raw(spec, raw)
            if not raw.isprintable():
                bad = search(raw)
                if bad is not None:
                    _refuse_char(spec, bad.group())
            stripped = raw.strip()
            if not stripped:
                return None
            # _enum_key without NFKC for ASCII (stable under every normal form).
            found = table.get(stripped.casefold() if raw.isascii() else _enum_key(raw))
            if found is None:
                _refuse_enum(spec)
            return found

        return enum
    if kind == "id_number":
        return _compile_id_number(spec, limit, search)
    check: Callable[..., str] = {
        "date": check_date,
        "phone": check_mainland_phone,
    }[kind]

    def checked(raw: object) -> str | None:
        if not isinstance(raw, str) or len(raw) > limit:
            _refuse_raw(spec, raw)
        if not raw.isprintable():
            bad = search(raw)
            if bad is not None:
                _refuse_char(spec, bad.group())
        if not raw.strip():
            return None
        return check(raw, field=name)

    return checked


#: What the GB 11643-1999 weights add to a sum over ASCII codes ("0" is 48)
#: instead of digit values.
_ID_ASCII_BIAS = 48 * sum(_ID_WEIGHTS)


def _compile_id_number(
    spec: FieldSpec, limit: int, search: Callable[[str], re.Match[str] | None]
) -> Normaliser:
    """An identity number's normaliser: :func:`check_id_number` of the value,
    with a shortcut for the common cell (ASCII, 18 characters, every rule met).

    Why: one identity number a row of an import, and the reference's digit by
    digit conversion and three-part date were ~2.5 us of a row's ~7 us of
    validation. The shortcut only ever accepts what the reference accepts,
    with the same result; any other value goes to the reference, which gives
    the refusal (tests/test_schema_compiled.py pins the two equal).
    """
    name = spec.name

    def id_number(raw: object) -> str | None:
        if not isinstance(raw, str) or len(raw) > limit:
            _refuse_raw(spec, raw)
        if not raw.isprintable():
            bad = search(raw)
            if bad is not None:
                _refuse_char(spec, bad.group())
        if not raw.strip():
            return None
        if raw.isascii():
            # check_id_number's own steps for ASCII text (NFKC maps no ASCII).
            text = raw.strip().upper()
            last = text[17:]
            if (
                len(text) == 18
                and text[:17].isdigit()
                and (last.isdigit() or last == "X")
                # The check character: ASCII codes weighted, less 48 a weight.
                and _ID_CHECK[
                    (sum(map(mul, text[:17].encode("ascii"), _ID_WEIGHTS)) - _ID_ASCII_BIAS) % 11
                ]
                == last
            ):
                try:
                    # Eight digits: YYYYMMDD (date.fromisoformat, Python >= 3.11).
                    birth = date.fromisoformat(text[6:14])
                except ValueError:
                    birth = None
                latest = _LEGAL_TODAY.get() or date.today()
                if birth is not None and _EARLIEST_BIRTH <= birth <= latest:
                    return text
        return check_id_number(raw, field=name, today=_LEGAL_TODAY.get())

    return id_number


def _refuse_raw(spec: FieldSpec, raw: object) -> NoReturn:
    """Refuse a value that is not text, or whose raw length exceeds :func:`_raw_limit`."""
    name = spec.name
    if not isinstance(raw, str):
        raise ValidationError(
            _t(
                "{name}: expected text, got {kind}; expected {expected}",
                name=name,
                kind=type(raw).__name__,
                expected=_expectation(spec),
            ),
            field=name,
        )
    raise ValidationError(
        _t(
            "{name}: too long ({n} characters); expected {expected}",
            name=name,
            n=len(raw),
            expected=_expectation(spec),
        ),
        field=name,
    )


def _refuse_char(spec: FieldSpec, char: str) -> NoReturn:
    """Refuse a value holding the forbidden character ``char``."""
    raise ValidationError(
        _t("{name}: {problem}", name=spec.name, problem=_describe_bad_char(char, spec)),
        field=spec.name,
    )


def _describe_bad_char(char: str, spec: FieldSpec) -> Message:
    code = f"U+{ord(char):04X}"
    if "\ud800" <= char <= "\udfff":
        return _t(
            "contains an unpaired surrogate {code}, which is not valid Unicode text", code=code
        )
    if "\u202a" <= char <= "\u202e" or "\u2066" <= char <= "\u2069":
        return _t(
            "contains the bidirectional control character {code}, which can make "
            "text display differently from what is stored; remove it",
            code=code,
        )
    if spec.type == "text":
        return _t(
            "contains the control character {code} (only line breaks and tabs are allowed); "
            "remove it",
            code=code,
        )
    return _t("contains the control character {code} (none allowed); remove it", code=code)


def _refuse_enum(spec: FieldSpec) -> NoReturn:
    """Refuse a value that is none of the enum's values or aliases."""
    accepted = join(", ", spec.values)
    if spec.aliases:
        raise ValidationError(
            _t(
                "{name}: not an allowed value; expected one of: {values} (or {aliases})",
                name=spec.name,
                values=accepted,
                aliases=join(", ", (alias for alias, _ in spec.aliases)),
            ),
            field=spec.name,
        )
    raise ValidationError(
        _t(
            "{name}: not an allowed value; expected one of: {values}",
            name=spec.name,
            values=accepted,
        ),
        field=spec.name,
    )


def _normalise_binary(spec: FieldSpec, raw: str) -> str | None:
    name = spec.name
    # Line-wrapped base64 (MIME, `base64` tool output) is accepted.
    compact = _WHITESPACE_RE.sub("", raw)
    if not compact:
        return None
    if not _BASE64_RE.fullmatch(compact) or len(compact) % 4:
        raise ValidationError(
            _t(
                "{name}: not valid base64 ({n} characters); expected standard "
                "base64 (A-Z a-z 0-9 + /, padded with =)",
                name=name,
                n=len(raw),
            ),
            field=name,
        )
    try:
        decoded = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        raise ValidationError(
            _t("{name}: not valid base64; expected standard padded base64", name=name), field=name
        ) from None
    if not decoded:
        return None
    if len(decoded) > spec.max_length:
        raise ValidationError(
            _t(
                "{name}: too large ({n} bytes after base64 decoding); at most {max_length} bytes",
                name=name,
                n=len(decoded),
                max_length=spec.max_length,
            ),
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


def _cross_check(
    id_specs: Sequence[FieldSpec], values: Mapping[str, str], *, focus: str | None
) -> None:
    """Check that each identity number (``id_specs``: the type's id_number fields)
    agrees with its birth date and sex fields."""
    for spec in id_specs:
        if spec.name not in values:
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
                _t(
                    "{name} and {birth_field} disagree: the birth date inside the "
                    "identity number (characters 7-14) differs from {birth_field}; "
                    "correct whichever is wrong",
                    name=spec.name,
                    birth_field=birth_field,
                ),
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
                    _t(
                        "{name} and {sex_field} disagree: the 17th digit of the identity "
                        "number (odd = male, even = female) contradicts {sex_field}; "
                        "correct whichever is wrong",
                        name=spec.name,
                        sex_field=sex_field,
                    ),
                    field=focus or spec.name,
                )


# --------------------------------------------------------------------------
# Schema file parsing
