"""The wire codec's fast paths, given what a hostile peer sends (review RV11).

``decode`` dispatches exact types first (``$b`` through ``binascii``, ``$t``
and rows without a call a member); ``_decode_other`` is the general path it
falls back to. For each value below, JSON text as a signed-in user may send
it (duplicate members, non-canonical base64, NaN, huge numbers, lone
surrogates, tags with extra members), both give the same value or both refuse
it with :class:`IntegrityError`: no input means one thing to a fast path and
another to the checks written against the general one.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from childvault.keys import IntegrityError
from childvault.vault._backend import GrantRow, UserRow
from childvault.vault._remote._codec import (
    MAX_DEPTH,
    _decode_other,
    decode,
    decode_twice,
    encode,
    encode_twice,
)

HOSTILE = [
    '{"$b":"QR=="}',  # non-zero padding bits: the same byte as "QQ=="
    '{"$b":"QQ"}',
    '{"$b":"Q Q=="}',
    '{"$b":"QQ==\\n"}',
    '{"$b":"=QQ="}',
    '{"$b":"QQ===="}',
    '{"$b":"\\u00e9"}',
    '{"$b":"\\ud800"}',
    '{"$b":5}',
    '{"$b":"QQ==","$b":"QR=="}',  # a member twice: the last, on both paths
    '{"$b":"QQ==","x":1}',
    '{"$t":{"a":1}}',
    '{"$t":[1,{"$b":"QQ=="}]}',
    '{"$t":[NaN,Infinity,-Infinity,1e400]}',
    '{"$t":[123456789012345678901234567890123456789]}',
    '{"$t":["\\ud800"]}',
    '{"$o":[["a",1],["a",2]]}',
    '{"$o":[[1.5,1]]}',
    '{"$o":[[true,1]]}',
    '{"$o":[["a"]]}',
    '{"$o":[1]}',
    '{"$o":{}}',
    '{"$o":[["a",1]],"x":1}',
    '{"$o":[[{"$b":"QQ=="},1]]}',  # a binary key
    '{"$o":[[{"$t":[]},1]]}',
    '{"$o":[[null,1]]}',
    '{"$o":[["a",{"$o":[["b",{"$b":"QR=="}]]}]]}',
    '{"$o":[["a",1,2]]}',
    '{"$d":"GrantRow","v":{"id":1}}',
    '{"$d":"GrantRow","v":{"bogus":1}}',
    '{"$d":"GrantRow","v":[]}',
    '{"$d":"GrantRow","v":{"id":"x"},"$x":1}',
    '{"$d":"Nope","v":{}}',
    '{"$d":"__class__","v":{}}',
    '{"$d":1,"v":{}}',
    '{"$d":"GrantRow","$d":"UserRow","v":{"name":"x"}}',
]


def _outcome(fn: Any, value: Any) -> Any:
    try:
        result = fn(value)
    except IntegrityError as exc:
        return ("refused", str(exc))
    return ("value", repr(result), _nans(result))


def _nans(value: Any) -> int:
    """NaN is unequal to itself: counted, so both reprs compare as text."""
    if isinstance(value, float):
        return int(math.isnan(value))
    if isinstance(value, list | tuple):
        return sum(map(_nans, value))
    return 0


@pytest.mark.parametrize("text", HOSTILE)
def test_the_fast_paths_decode_as_the_general_path(text: str) -> None:
    value = json.loads(text)
    assert _outcome(decode, value) == _outcome(lambda v: _decode_other(v, 0), value)


@pytest.mark.parametrize("text", HOSTILE)
def test_inside_a_list_too(text: str) -> None:
    """The list fast path decodes its non-plain members through ``decode``."""
    value = json.loads(text)
    fast, slow = _outcome(decode, [1, value]), _outcome(lambda v: _decode_other(v, 0), [1, value])
    assert fast == slow


#: JSON values shaped like the wire's tags, well-formed or not: every tag, with
#: members of every kind (keys of every JSON type, pairs of the wrong length,
#: extra members, base64 valid and not), nested.
_B64 = st.sampled_from(["QQ==", "QR==", "QQ", "", "AAEC", "Q Q==", "=QQ=", "\u00e9"])
_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    _B64,
)
_TAG = st.sampled_from(["$b", "$t", "$o", "$d", "v", "x"])


def _tagged(children: Any) -> Any:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_TAG, children, max_size=2),
        st.builds(lambda text: {"$b": text}, _B64),
        st.builds(lambda items: {"$t": items}, st.lists(children, max_size=4)),
        st.builds(
            lambda pairs: {"$o": pairs},
            st.lists(
                st.one_of(st.lists(children, min_size=2, max_size=2), st.lists(children)),
                max_size=4,
            ),
        ),
        st.builds(
            lambda name, fields: {"$d": name, "v": fields},
            st.sampled_from(["GrantRow", "UserRow", "Nope"]),
            st.dictionaries(
                st.sampled_from(["id", "name", "roles", "bogus"]), children, max_size=3
            ),
        ),
    )


_WIRE = st.recursive(_SCALAR, _tagged, max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(_WIRE)
def test_any_tagged_json_decodes_as_the_general_path(value: Any) -> None:
    """The mapping fast path (``$o``, and each path before it) against the general
    path, on values built from the tags: the same value or the same refusal."""
    assert _outcome(decode, value) == _outcome(lambda v: _decode_other(v, 0), value)


_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4), st.binary(max_size=6)),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), children, max_size=3),
        st.builds(UserRow, *[children] * 6),
        st.builds(GrantRow, *[children] * 10),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_VALUES)
def test_twice_encoded_values_decode_as_the_general_path(value: Any) -> None:
    """An operation's inputs are encoded twice (every member inside a mapping):
    both layers decode through the fast paths as through the general one."""
    twice = json.loads(json.dumps(encode_twice(value)))
    once = _decode_other(twice, 0)
    assert decode(twice) == once
    assert decode(once) == _decode_other(once, 0) == value


def _both(value: Any) -> Any:
    """``decode(decode(value))``, the two passes :func:`decode_twice` fuses."""
    return decode(decode(value))


def _verdict(fn: Any, value: Any) -> Any:
    """As :func:`_outcome`, a refusal's message aside: of several malformed
    members, the one pass may meet another first than the two."""
    outcome = _outcome(fn, value)
    return outcome[:1] if outcome[0] == "refused" else outcome


@settings(max_examples=300, deadline=None)
@given(_VALUES)
def test_decode_twice_gives_the_two_passes_value(value: Any) -> None:
    """What an operation's inputs carry (encode_twice, through JSON text)."""
    twice = json.loads(json.dumps(encode_twice(value)))
    assert decode_twice(twice) == _both(twice) == value


@settings(max_examples=400, deadline=None)
@given(_WIRE)
def test_decode_twice_of_any_tagged_json(value: Any) -> None:
    """A hostile outer layer: the same value or a refusal, as the two passes."""
    assert _verdict(decode_twice, value) == _verdict(_both, value)


@settings(max_examples=400, deadline=None)
@given(_WIRE)
def test_decode_twice_of_a_sound_outer_layer_round_a_hostile_inner_one(value: Any) -> None:
    """A well-formed outer layer (what the server's encode_twice builds) round
    any inner one: the inner refusals are met on the fast paths."""
    wrapped = json.loads(json.dumps(encode(value), allow_nan=True))
    assert _verdict(decode_twice, wrapped) == _verdict(_both, wrapped)


@pytest.mark.parametrize("text", HOSTILE)
def test_decode_twice_of_each_hostile_value_wrapped(text: str) -> None:
    wrapped = encode(json.loads(text))
    assert _verdict(decode_twice, wrapped) == _verdict(_both, wrapped)


@pytest.mark.parametrize("levels", [MAX_DEPTH // 4 - 1, MAX_DEPTH // 4, MAX_DEPTH // 2, MAX_DEPTH])
def test_decode_twice_keeps_the_nesting_bound(levels: int) -> None:
    """Nested tuples and mappings: refused exactly where the two passes refuse."""
    value: Any = b"x"
    for i in range(levels):
        value = (value,) if i % 2 else {"k": value}
    twice = json.loads(json.dumps(encode_twice(value)))
    assert _verdict(decode_twice, twice) == _verdict(_both, twice)
