"""The schema file loader: TOML to checked declarations, naming the offending key.

Strict: an unknown key, a bad name or a contradictory combination (a blind
index on a low-entropy field, a highly sensitive field kept in clear) is a
:class:`UsageError`, so a typo can never silently weaken the protection a
schema author meant to declare.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date, datetime, time
from types import MappingProxyType
from typing import Any

from childvault._i18n import _t, join
from childvault.keys._errors import UsageError
from childvault.vault._schema_types import (
    _BAD_CHAR_RE,
    _DEFAULT_TEXT_LENGTH,
    _FIXED_LENGTH,
    _GENERALISE_TYPES,
    _MAX_ALIAS_LENGTH,
    _MAX_BINARY_BYTES,
    _MAX_TEXT_LENGTH,
    _NAME_RE,
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


def _kind(value: object) -> str:
    # A Message (the English word) for the kinds a person reads in a schema error.
    if isinstance(value, bool):
        return _t("a boolean")
    if isinstance(value, int):
        return _t("an integer")
    if isinstance(value, float):
        return _t("a float")
    if isinstance(value, str):
        return _t("a string")
    if isinstance(value, list):
        return _t("an array")
    if isinstance(value, dict):
        return _t("a table")
    if isinstance(value, datetime | date | time):
        return _t("a date/time")
    return type(value).__name__


def _keys(
    table: dict[str, Any], path: str, allowed: tuple[str, ...], required: tuple[str, ...]
) -> None:
    for key in table:
        if key not in allowed:
            raise UsageError(
                _t(
                    "schema: unknown key {key!r}; allowed here: {allowed}",
                    key=_join(path, key),
                    allowed=join(", ", allowed),
                )
            )
    for key in required:
        if key not in table:
            raise UsageError(_t("schema: missing key {key!r}", key=_join(path, key)))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(table: dict[str, Any], path: str, key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise UsageError(
            _t(
                "schema: {key!r} must be a string, not {kind}",
                key=_join(path, key),
                kind=_kind(value),
            )
        )
    if _BAD_CHAR_RE.search(value):
        raise UsageError(_t("schema: {key!r} contains a control character", key=_join(path, key)))
    return value


def _bool(table: dict[str, Any], path: str, key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise UsageError(
            _t(
                "schema: {key!r} must be true or false, not {kind}",
                key=_join(path, key),
                kind=_kind(value),
            )
        )
    return value


def _int(table: dict[str, Any], path: str, key: str, low: int, high: int) -> int:
    value = table.get(key)
    # bool is a subclass of int in Python; `version = true` is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(
            _t(
                "schema: {key!r} must be an integer, not {kind}",
                key=_join(path, key),
                kind=_kind(value),
            )
        )
    if not low <= value <= high:
        raise UsageError(
            _t(
                "schema: {key!r} must be between {low} and {high}",
                key=_join(path, key),
                low=low,
                high=high,
            )
        )
    return value


def _choice(
    table: dict[str, Any], path: str, key: str, choices: tuple[str, ...], default: str | None
) -> str:
    value = _str(table, path, key, default)
    if value not in choices:
        raise UsageError(
            _t(
                "schema: {key!r} must be one of: {choices}",
                key=_join(path, key),
                choices=join(", ", choices),
            )
        )
    return value


def _name(value: str, what: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise UsageError(
            _t(
                "schema: bad {what} name {name}: expected a lower-case ASCII letter "
                "followed by at most 62 lower-case letters, digits or underscores",
                what=what,
                name=_show(value),
            )
        )
    return value


def _table(doc: dict[str, Any], path: str, key: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise UsageError(
            _t(
                "schema: {key!r} must be a table, not {kind}",
                key=_join(path, key),
                kind=_kind(value),
            )
        )
    return value


def _str_list(table: dict[str, Any], path: str, key: str) -> list[str]:
    value = table.get(key)
    where = _join(path, key)
    if not isinstance(value, list) or not value:
        raise UsageError(_t("schema: {where!r} must be a non-empty array of strings", where=where))
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str):
            raise UsageError(
                _t(
                    "schema: {where!r} must contain strings, not {kind}",
                    where=where,
                    kind=_kind(item),
                )
            )
        if item in seen:
            raise UsageError(
                _t("schema: {where!r} lists {item} twice", where=where, item=_show(item))
            )
        seen.add(item)
    return value


def build_schema(doc: dict[str, Any], source: bytes) -> dict[str, Any]:
    """The fields of a :class:`~._schema.Schema` from a parsed TOML document."""
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
        raise UsageError(_t("schema: 'types' must declare at least one record type"))
    types: dict[str, RecordType] = {}
    for type_name in types_table:
        _name(type_name, "record type")
        path = f"types.{type_name}"
        types[type_name] = _build_type(
            type_name, _table(types_table, "types", type_name), path, purposes
        )
    return {
        "name": name,
        "version": version,
        "purposes": purposes,
        "types": MappingProxyType(types),
        "digest": hashlib.sha256(source).hexdigest(),
        "source": source,
        "description": description,
    }


def _build_type(
    type_name: str, table: dict[str, Any], path: str, purposes: tuple[str, ...]
) -> RecordType:
    _keys(table, path, ("description", "fields", "purpose_fields"), ("fields",))
    description = _str(table, path, "description", "")
    fields_table = _table(table, path, "fields")
    if not fields_table:
        raise UsageError(
            _t("schema: {key!r} must declare at least one field", key=path + ".fields")
        )
    fields: dict[str, FieldSpec] = {}
    for field_name in fields_table:
        _name(field_name, "field")
        if field_name in RESERVED_FIELD_NAMES:
            raise UsageError(
                _t(
                    "schema: field name {field_name!r} is reserved for the consent columns "
                    "of the import format; choose another name",
                    field_name=field_name,
                )
            )
        field_path = f"{path}.fields.{field_name}"
        fields[field_name] = _build_field(
            field_name, _table(fields_table, f"{path}.fields", field_name), field_path
        )
    _check_references(fields, path)
    purpose_fields = (
        _purpose_fields(table, path, purposes, fields) if "purpose_fields" in table else None
    )
    return RecordType(
        name=type_name,
        fields=MappingProxyType(fields),
        description=description,
        purpose_fields=purpose_fields,
    )


def _purpose_fields(
    table: dict[str, Any], path: str, purposes: tuple[str, ...], fields: Mapping[str, FieldSpec]
) -> Mapping[str, tuple[str, ...]]:
    """The ``purpose_fields`` table of a record type: every purpose, declared fields only.

    Every purpose of the schema must be listed, so a purpose added later is
    never silently given every field; an empty list (``statistics = []``)
    means the purpose releases no field to a person (P-11, P-14).
    """
    where = f"{path}.purpose_fields"
    lists = _table(table, path, "purpose_fields")
    result: dict[str, tuple[str, ...]] = {}
    for purpose in lists:
        if purpose not in purposes:
            raise UsageError(
                _t(
                    "schema: {where!r} names {purpose}, which is not one of the "
                    "schema's purposes: {purposes}",
                    where=where,
                    purpose=_show(purpose),
                    purposes=join(", ", purposes),
                )
            )
        value = lists[purpose]
        item_path = f"{where}.{purpose}"
        if not isinstance(value, list):
            raise UsageError(
                _t("schema: {item_path!r} must be an array of field names", item_path=item_path)
            )
        seen: list[str] = []
        for name in value:
            if not isinstance(name, str) or name not in fields:
                shown = _show(name) if isinstance(name, str) else _kind(name)
                raise UsageError(
                    _t(
                        "schema: {item_path!r} names {shown}, which is not a field of this type",
                        item_path=item_path,
                        shown=shown,
                    )
                )
            if name in seen:
                raise UsageError(
                    _t(
                        "schema: {item_path!r} lists {name} twice",
                        item_path=item_path,
                        name=_show(name),
                    )
                )
            seen.append(name)
        result[purpose] = tuple(seen)
    missing = [p for p in purposes if p not in result]
    if missing:
        raise UsageError(
            _t(
                "schema: {where!r} must list every purpose (an empty array releases no field); "
                "missing: {missing}",
                where=where,
                missing=join(", ", missing),
            )
        )
    return MappingProxyType(result)


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
                _t(
                    "schema: {key!r} applies only to fields of type {types}",
                    key=_join(path, key),
                    types=join(" or ", types),
                )
            )

    # Enumerations and dates have few possible values: a blind index over one
    # alone is a lookup table, so they are always low-entropy.
    inherently_low = ftype in ("enum", "date")
    low_entropy = _bool(table, path, "low_entropy", inherently_low)
    if inherently_low and not low_entropy:
        raise UsageError(
            _t(
                "schema: {key!r} cannot be false for a field of type "
                "{ftype}: it has too few possible values",
                key=_join(path, "low_entropy"),
                ftype=ftype,
            )
        )

    generalise: str | None = None
    if identifier == "quasi":
        if "generalise" not in table:
            raise UsageError(
                _t(
                    "schema: missing key {key!r} (required for a quasi identifier: {choices})",
                    key=_join(path, "generalise"),
                    choices=join(", ", GENERALISATIONS),
                )
            )
        generalise = _choice(table, path, "generalise", GENERALISATIONS, None)
        if _GENERALISE_TYPES[generalise] != ftype:
            raise UsageError(
                _t(
                    "schema: {key!r} = {generalise!r} needs a field of type {needed}, not {ftype}",
                    key=_join(path, "generalise"),
                    generalise=generalise,
                    needed=_GENERALISE_TYPES[generalise],
                    ftype=ftype,
                )
            )
    elif "generalise" in table:
        raise UsageError(
            _t(
                "schema: {key!r} applies only to quasi identifiers",
                key=_join(path, "generalise"),
            )
        )

    if searchable:
        if ftype not in ("text", "id_number", "phone"):
            raise UsageError(
                _t(
                    "schema: {key!r}: a field of type {ftype} cannot have "
                    "a blind index (only text, id_number and phone can)",
                    key=_join(path, "searchable"),
                    ftype=ftype,
                )
            )
        if low_entropy:
            raise UsageError(
                _t(
                    "schema: {key!r} and 'low_entropy' together: a blind "
                    "index over a low-entropy field alone reveals its value",
                    key=_join(path, "searchable"),
                )
            )
        if metadata:
            raise UsageError(
                _t(
                    "schema: {key!r} and 'metadata' together: a metadata "
                    "field is stored in clear and needs no blind index",
                    key=_join(path, "searchable"),
                )
            )
    if metadata:
        if sensitivity == "high":
            raise UsageError(
                _t(
                    "schema: {key!r} with sensitivity 'high': a highly "
                    "sensitive field must be encrypted, not kept in clear",
                    key=_join(path, "metadata"),
                )
            )
        if identifier == "direct":
            raise UsageError(
                _t(
                    "schema: {key!r} on a direct identifier: a field that "
                    "identifies a child must be encrypted, not kept in clear",
                    key=_join(path, "metadata"),
                )
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
                _t(
                    "schema: missing key {key!r} (bytes after base64 "
                    "decoding; required for a binary field)",
                    key=_join(path, "max_length"),
                )
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
        raise UsageError(
            _t(
                "schema: {where!r} must be a table of alias = value, not {kind}",
                where=where,
                kind=_kind(raw),
            )
        )
    # Every accepted spelling, compared as input is compared, must map to one
    # value only; otherwise the same input could mean two things.
    seen = {_enum_key(v): v for v in values}
    result: list[tuple[str, str]] = []
    for alias, target in raw.items():
        if not isinstance(target, str) or target not in values:
            raise UsageError(
                _t(
                    "schema: {key!r} must name one of the values: {values}",
                    key=_join(where, alias),
                    values=join(", ", values),
                )
            )
        key = _enum_key(alias)
        if not key or len(alias) > _MAX_ALIAS_LENGTH or _BAD_CHAR_RE.search(alias):
            raise UsageError(
                _t(
                    "schema: bad alias {alias} in {where!r}: expected 1 to "
                    "{n} printable characters",
                    alias=_show(alias),
                    where=where,
                    n=_MAX_ALIAS_LENGTH,
                )
            )
        if key in seen:
            raise UsageError(
                _t(
                    "schema: alias {alias} in {where!r} duplicates the value or alias "
                    "{seen} (aliases are compared ignoring case and width)",
                    alias=_show(alias),
                    where=where,
                    seen=_show(seen[key]),
                )
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
                    _t(
                        "schema: {key!r} must name a field of type date in the same record type",
                        key=field_path + ".birth_date_field",
                    )
                )
        if spec.sex_field is not None:
            target = fields.get(spec.sex_field)
            if (
                target is None
                or target.type != "enum"
                or not {"male", "female"} <= set(target.values)
            ):
                raise UsageError(
                    _t(
                        "schema: {key!r} must name an enum field of the "
                        "same record type whose values include male and female",
                        key=field_path + ".sex_field",
                    )
                )
