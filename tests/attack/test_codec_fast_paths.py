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

from childvault.keys import IntegrityError
from childvault.vault._remote._codec import _decode_other, decode

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
