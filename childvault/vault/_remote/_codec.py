"""The JSON encoding of backend calls between the remote backend and the server.

Backend methods take and return plain values and the row dataclasses of
:mod:`childvault.vault._backend`. JSON has no bytes, tuples, integer keys or
dataclasses, so those are tagged: ``{"$b": base64}``, ``{"$t": [...]}``,
``{"$o": [[key, value], ...]}`` (every mapping, so keys keep their type) and
``{"$d": "RecordRow", "v": {...}}``. Decoding accepts only the row types listed
here: a peer cannot make the other side build an arbitrary object.
"""

from __future__ import annotations

import binascii
import dataclasses
from typing import Any

from childvault._i18n import _t
from childvault.keys import IntegrityError
from childvault.keys._encoding import b64, unb64
from childvault.vault._backend import (
    CheckpointRow,
    GrantRow,
    NewRecord,
    RecordRow,
    RequestRow,
    UserRow,
)

#: The dataclasses that may cross the wire, by name.
ROW_TYPES: dict[str, type[Any]] = {
    t.__name__: t for t in (UserRow, RecordRow, NewRecord, RequestRow, GrantRow, CheckpointRow)
}
#: Nesting bound: backend values are shallow; a deeper document is hostile.
MAX_DEPTH = 32
#: Field names of each row type, by type and by name (looked up once, not per value).
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    t: tuple(f.name for f in dataclasses.fields(t)) for t in ROW_TYPES.values()
}
_NAMES: dict[str, frozenset[str]] = {t.__name__: frozenset(n) for t, n in _FIELDS.items()}
#: Types sent and received as they are. An import batch is ~50,000 values: the
#: common exact types are dispatched on ``type()`` first; anything else (a
#: subclass) takes the general path below, with the same result.
_PLAIN = frozenset({type(None), bool, int, float, str})
_a2b, _b2a = binascii.a2b_base64, binascii.b2a_base64


def encode(value: Any) -> Any:
    """``value`` as a JSON-ready structure (see the module doc)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is bytes:
        # b64() without base64's Python layer (the same text).
        return {"$b": _b2a(value, newline=False).decode("ascii")}
    # Plain members (most of an import batch's values) without a call each.
    if kind is tuple:
        return {"$t": [v if type(v) in _PLAIN else encode(v) for v in value]}
    if kind is list:
        return [v if type(v) in _PLAIN else encode(v) for v in value]
    if kind is dict:
        # A row's consent and metadata (two a record): as _encode_other's mapping.
        return {
            "$o": [
                [
                    k if type(k) in _PLAIN else encode(k),
                    v if type(v) in _PLAIN else encode(v),
                ]
                for k, v in value.items()
            ]
        }
    names = _FIELDS.get(kind)
    if names is not None:
        members = [getattr(value, n) for n in names]
        return {
            "$d": kind.__name__,
            "v": {
                n: v if type(v) in _PLAIN else encode(v)
                for n, v in zip(names, members, strict=True)
            },
        }
    return _encode_other(value)


def encode_twice(value: Any) -> Any:
    """``encode(encode(value))``, built in one pass.

    An operation's inputs are sent so: each read's answer encoded, and the
    list of them encoded again as the call's result (docs/server.md,
    "Operation inputs"). The second pass walked and copied the whole first
    tree, its ``{"$b": ...}`` of every binary value becoming
    ``{"$o": [["$b", ...]]}``; this builds that form directly. Anything its
    fast paths do not cover takes the two passes.
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is bytes:
        return {"$o": [["$b", _b2a(value, newline=False).decode("ascii")]]}
    if kind is tuple:
        return {"$o": [["$t", [v if type(v) in _PLAIN else encode_twice(v) for v in value]]]}
    if kind is list:
        return [v if type(v) in _PLAIN else encode_twice(v) for v in value]
    if kind is dict:
        pairs = [
            [
                k if type(k) in _PLAIN else encode_twice(k),
                v if type(v) in _PLAIN else encode_twice(v),
            ]
            for k, v in value.items()
        ]
        return {"$o": [["$o", pairs]]}
    names = _FIELDS.get(kind)
    if names is not None:
        members = [getattr(value, n) for n in names]
        fields = [
            [n, v if type(v) in _PLAIN else encode_twice(v)]
            for n, v in zip(names, members, strict=True)
        ]
        return {"$o": [["$d", kind.__name__], ["v", {"$o": fields}]]}
    return encode(encode(value))


def _encode_other(value: Any) -> Any:
    """:func:`encode` of what its fast paths do not cover (subclasses, mappings ...)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": b64(bytes(value))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if ROW_TYPES.get(name) is not type(value):
            raise TypeError(_t("cannot send a {name}", name=name))
        return {
            "$d": name,
            "v": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)},
        }
    if isinstance(value, tuple):
        return {"$t": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"$o": [[encode(k), encode(v)] for k, v in value.items()]}
    raise TypeError(_t("cannot send a {name}", name=type(value).__name__))


def decode(value: Any, depth: int = 0) -> Any:
    """The value :func:`encode` encoded; :class:`IntegrityError` for anything else."""
    if depth > MAX_DEPTH:
        raise IntegrityError(_t("a remote value is nested too deeply"))
    kind = type(value)
    if kind in _PLAIN:
        return value
    if depth >= MAX_DEPTH:
        return _decode_other(value, depth)  # its members are too deep: refused there
    deeper = depth + 1
    if kind is list:
        # Plain members (most of an import batch's values) without a call each.
        return [v if type(v) in _PLAIN else decode(v, deeper) for v in value]
    if kind is dict:
        size = len(value)
        if size == 1:
            text = value.get("$b")
            if type(text) is str:
                try:
                    # What unb64 does (b64decode with validate=True: the same
                    # accepted strings and bytes), without its Python layers:
                    # an import batch carries ~18 binary values a record.
                    return _a2b(text, strict_mode=True)
                except (binascii.Error, ValueError) as exc:
                    raise IntegrityError(_t("a remote value is malformed")) from exc
            items = value.get("$t")
            if type(items) is list:
                return tuple([v if type(v) in _PLAIN else decode(v, deeper) for v in items])
            pairs = value.get("$o")
            if type(pairs) is list:
                return _decode_mapping(pairs, deeper)
        elif size == 2:
            row = _decode_row(value, deeper)
            if row is not None:
                return row
    return _decode_other(value, depth)


def _decode_mapping(pairs: list[Any], depth: int) -> dict[Any, Any]:
    """A ``{"$o": pairs}`` mapping, members at ``depth``: what :func:`_decode_other`
    gives or refuses, without its general checks on every member.

    Every mapping crosses the wire so (and an operation's inputs, encoded twice,
    wrap each binary value, tuple and row in one): ~2,000 a read's answer.
    """
    out: dict[Any, Any] = {}
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise IntegrityError(_t("a remote mapping is malformed"))
        k, v = pair
        kind = type(k)
        if kind is str or kind is int:
            key = k
        else:
            key = decode(k, depth)
            if not isinstance(key, str | int):
                raise IntegrityError(_t("a remote mapping key is malformed"))
        out[key] = v if type(v) in _PLAIN else decode(v, depth)
    return out


def _decode_row(value: dict[str, Any], depth: int) -> Any:
    """A row dataclass (``{"$d": name, "v": {...}}``) of a known type, or None
    (anything else: :func:`_decode_other` decides)."""
    name, fields = value.get("$d"), value.get("v")
    kind = ROW_TYPES.get(name) if type(name) is str else None
    if kind is None or type(fields) is not dict:
        return None
    if not _NAMES[kind.__name__].issuperset(fields):
        raise IntegrityError(_t("a remote {kind} has unknown fields", kind=kind.__name__))
    try:
        return kind(**{k: v if type(v) in _PLAIN else decode(v, depth) for k, v in fields.items()})
    except (TypeError, ValueError) as exc:
        raise IntegrityError(_t("a remote value is malformed")) from exc


def _decode_other(value: Any, depth: int) -> Any:
    """:func:`decode` of what its fast paths do not cover (mappings, rows, refusals)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [decode(v, depth + 1) for v in value]
    if not isinstance(value, dict) or len(value) not in (1, 2):
        raise IntegrityError(_t("a remote value is malformed"))
    try:
        if "$b" in value and len(value) == 1:
            return unb64(value["$b"])
        if "$t" in value and len(value) == 1 and isinstance(value["$t"], list):
            return tuple(decode(v, depth + 1) for v in value["$t"])
        if "$o" in value and len(value) == 1 and isinstance(value["$o"], list):
            out: dict[Any, Any] = {}
            for pair in value["$o"]:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise IntegrityError(_t("a remote mapping is malformed"))
                key = decode(pair[0], depth + 1)
                if not isinstance(key, str | int):
                    raise IntegrityError(_t("a remote mapping key is malformed"))
                out[key] = decode(pair[1], depth + 1)
            return out
        if "$d" in value and "v" in value and isinstance(value["v"], dict):
            kind = ROW_TYPES.get(str(value["$d"]))
            if kind is None:
                raise IntegrityError(
                    _t("a remote value names an unknown type {kind!r}", kind=value["$d"])
                )
            names = _NAMES[kind.__name__]
            fields = value["v"]
            if not names.issuperset(fields):
                raise IntegrityError(_t("a remote {kind} has unknown fields", kind=kind.__name__))
            return kind(**{k: decode(v, depth + 1) for k, v in fields.items()})
    except (TypeError, ValueError) as exc:
        raise IntegrityError(_t("a remote value is malformed")) from exc
    raise IntegrityError(_t("a remote value is malformed"))


def decode_twice(value: Any) -> Any:
    """``decode(decode(value))`` in one pass: the value an :func:`encode_twice`
    form holds.

    An operation's inputs carry each read's answer encoded twice (docs/server.md
    "Operation inputs"); decoding both layers built and walked the whole
    once-encoded tree in between. This gives the value the two passes give, or
    refuses what they refuse (:class:`IntegrityError`, its message possibly
    that of another malformed member): its fast paths cover exactly the forms
    :func:`encode_twice` builds, anything else takes the two passes there.
    """
    return _twice(value, 0, 0)


def _twice(value: Any, outer: int, inner: int) -> Any:
    """:func:`decode_twice` of a member the first pass meets at depth ``outer``
    and the second at ``inner``."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if outer >= MAX_DEPTH - 4:
        # Near the nesting bound: the two passes, refusing exactly where they do.
        return decode(decode(value, outer), inner)
    if kind is list:
        return [v if type(v) in _PLAIN else _twice(v, outer + 1, inner + 1) for v in value]
    pairs = value.get("$o") if kind is dict and len(value) == 1 else None
    if type(pairs) is not list or not pairs or len(pairs) > 2:
        return decode(decode(value, outer), inner)
    first = pairs[0]
    if type(first) is not list or len(first) != 2:
        return decode(decode(value, outer), inner)
    tag, payload = first
    if len(pairs) == 1:
        if tag == "$b" and type(payload) is str:
            try:
                return _a2b(payload, strict_mode=True)  # as decode's "$b"
            except (binascii.Error, ValueError) as exc:
                raise IntegrityError(_t("a remote value is malformed")) from exc
        if tag == "$t" and type(payload) is list:
            return tuple(
                [v if type(v) in _PLAIN else _twice(v, outer + 2, inner + 1) for v in payload]
            )
        if tag == "$o" and type(payload) is list:
            out: dict[Any, Any] = {}
            for pair in payload:
                if type(pair) is not list or len(pair) != 2:
                    return decode(decode(value, outer), inner)
                key = _twice(pair[0], outer + 3, inner + 1)
                if not isinstance(key, str | int):
                    raise IntegrityError(_t("a remote mapping key is malformed"))
                out[key] = _twice(pair[1], outer + 3, inner + 1)
            return out
        return decode(decode(value, outer), inner)
    second = pairs[1]
    if (
        tag != "$d"
        or type(payload) is not str
        or type(second) is not list
        or len(second) != 2
        or second[0] != "v"
        or type(second[1]) is not dict
        or len(second[1]) != 1
        or type(second[1].get("$o")) is not list
    ):
        return decode(decode(value, outer), inner)
    row = ROW_TYPES.get(payload)
    if row is None:
        return decode(decode(value, outer), inner)
    fields: dict[str, Any] = {}
    for pair in second[1]["$o"]:
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
            return decode(decode(value, outer), inner)
        fields[pair[0]] = _twice(pair[1], outer + 2, inner + 1)
    if not _NAMES[payload].issuperset(fields):
        raise IntegrityError(_t("a remote {kind} has unknown fields", kind=payload))
    try:
        return row(**fields)
    except (TypeError, ValueError) as exc:
        raise IntegrityError(_t("a remote value is malformed")) from exc
