"""The wire encoding of backend calls (``_remote/_codec.py``): exact round trips of
every row type, and refusal of anything a hostile peer could send instead.

The encoder and decoder dispatch the common exact types first (an import batch
is tens of thousands of values, issue 13); these tests pin that the fast paths
give what the general path gives and refuse what it refuses.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from typing import Any

import pytest

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
from childvault.vault._remote._codec import MAX_DEPTH, decode, encode, encode_twice

_ROW = RecordRow(
    "a" * 32,
    "child",
    2,
    "2026-11-30T00:00:00Z",
    "worker1",
    "2026-11-30T00:00:00Z",
    {"purposes": ["case_management"], "retain_until": "2032-01-01"},
    "2032-01-01",
    {"来源": "表格"},
)


def _wire(value: Any) -> Any:
    """``value`` encoded, through JSON text (as it crosses the wire), and decoded."""
    return decode(json.loads(json.dumps(encode(value))))


def test_every_row_type_and_value_kind_round_trips_exactly() -> None:
    values: list[Any] = [
        None,
        True,
        0,
        -7,
        1.5,
        "名字",
        b"\x00\xff",
        (1, "x", b""),
        [],
        {},
        {1: "int key", "s": (b"v", None)},
        _ROW,
        NewRecord(_ROW, [("name", 1, b"sealed"), ("dob", 3, b"")], b"blob", "src.csv", 4),
        UserRow("worker1", ("staff",), b"e" * 32, b"s" * 32, "2026-11-30", "admin"),
        RequestRow(
            "b" * 32, "worker1", ("a" * 32,), ("name",), "case_management", "r", "t", "pending"
        ),
        GrantRow("c" * 32, "b" * 32, "officer1", "worker1", "t", "e", 1, 0, None, None, None),
        CheckpointRow(1, 3, b"h" * 32, "note", "officer1", "t"),
        {"a" * 32: {"name": (1, b"ct")}, "b" * 32: {}},
    ]
    for value in values:
        got = _wire(value)
        assert got == value and type(got) is type(value), value
    assert _wire(values) == values


def test_encode_twice_is_encode_of_encode() -> None:
    # An operation's inputs are each read's answer encoded, and that list encoded
    # again (docs/server.md); the server builds that form in one pass.
    class Level(enum.IntEnum):
        ONE = 1

    class Name(str):
        pass

    values: list[Any] = [
        None,
        True,
        -7,
        1.5,
        "名字",
        b"",
        b"\x00\xff" * 40,
        (1, "x", b"", (b"z", [None])),
        [],
        {},
        {1: "int key", "s": (b"v", None), "t": [b"a", {}]},
        _ROW,
        NewRecord(_ROW, [("name", 1, b"sealed"), ("dob", 3, b"")], b"blob", "src.csv", 4),
        UserRow("worker1", ("staff",), b"e" * 32, b"s" * 32, "2026-11-30", "admin"),
        GrantRow("c" * 32, "b" * 32, "officer1", "worker1", "t", "e", 1, 0, None, None, None),
        CheckpointRow(1, 3, b"h" * 32, "note", "officer1", "t"),
        {"a" * 32: {"name": (1, b"ct")}, "b" * 32: {}},
        # Not on a fast path: the two passes.
        [Level.ONE, Name("x"), bytearray(b"ab"), memoryview(b"cd"), (Name("y"), Level.ONE)],
    ]
    for value in [*values, values]:
        twice = encode_twice(value)
        assert twice == encode(encode(value)), value
        # The same JSON text, member order included, and it decodes back twice.
        assert json.dumps(twice) == json.dumps(encode(encode(value)))
        assert decode(decode(json.loads(json.dumps(twice)))) == value
    with pytest.raises(TypeError):
        encode_twice([{1, 2}])


def test_subclasses_of_plain_types_encode_as_before() -> None:
    class Level(enum.IntEnum):
        ONE = 1

    class Name(str):
        pass

    assert encode([Level.ONE, Name("x"), bytearray(b"ab"), memoryview(b"cd")]) == [
        Level.ONE,
        "x",
        {"$b": "YWI="},
        {"$b": "Y2Q="},
    ]
    with pytest.raises(TypeError):
        encode({1, 2})


@pytest.mark.parametrize(
    "hostile",
    [
        {"$b": "not base64!"},
        {"$b": 5},
        {"$t": 5},
        {"$t": [1], "x": 2},
        {"$o": [[1]]},
        {"$o": [[[1], 2]]},
        {"$d": "Evil", "v": {}},
        {"$d": "RecordRow", "v": {"nope": 1}},
        {"$d": "UserRow", "v": {"name": "x"}},  # missing fields
        {"$x": 1},
        {"a": 1, "b": 2, "c": 3},
        [[{"$b": "%%"}]],
        ("a", "tuple"),
    ],
)
def test_malformed_values_are_refused(hostile: Any) -> None:
    with pytest.raises(IntegrityError):
        decode(hostile)


def test_deep_nesting_is_refused() -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH + 2):
        deep = {"$t": [deep]}
    with pytest.raises(IntegrityError, match="too deeply"):
        decode(deep)
    deep = 1
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(IntegrityError, match="too deeply"):
        decode(deep)


def _nested(levels: int, leaf: Any, wrap: Any) -> Any:
    value = leaf
    for _ in range(levels):
        value = wrap(value)
    return value


@pytest.mark.parametrize(
    "wrap",
    [
        lambda v: [v],
        lambda v: {"$t": [v]},
        lambda v: {"$o": [["k", v]]},
        lambda v: {
            "$d": "NewRecord",
            "v": {"row": None, "fields": [], "blob": None, "source": v, "source_row": None},
        },
    ],
)
def test_the_nesting_bound_is_exact_for_every_container(wrap: Callable[[Any], Any]) -> None:
    # A plain member is taken without a call of its own (round 2 session 9), yet
    # counts as one level deeper, as before: MAX_DEPTH containers hold a plain
    # value, one more is refused, whatever the container.
    assert decode(_nested(MAX_DEPTH, 7, wrap)) is not None
    with pytest.raises(IntegrityError, match="too deeply"):
        decode(_nested(MAX_DEPTH + 1, 7, wrap))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "YQ==",
        "YWI=",
        "YWJj",
        "YQ",
        "YQ=",
        "YQ===",
        "Y Q==",
        "YQ==\n",
        "=YQ=",
        "YQ==YQ==",
        "-_==",
        "YW\u00e9=",
        "YQ==\x00",
        "++//",
    ],
)
def test_binary_values_are_decoded_as_strictly_as_unb64(text: str) -> None:
    try:
        expected: Any = unb64(text)
    except ValueError:
        expected = IntegrityError
    if expected is IntegrityError:
        with pytest.raises(IntegrityError):
            decode({"$b": text})
        with pytest.raises(IntegrityError):
            decode([[{"$b": text}]])
    else:
        assert decode({"$b": text}) == expected
        assert decode({"$t": [{"$b": text}]}) == (expected,)
        assert encode(expected) == {"$b": b64(expected)}
