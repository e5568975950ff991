"""Frontier.extend folds a batch level by level: pin that it is the per-leaf append."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from childvault.vault._merkle import Frontier, leaf_hash, root_of


def _one_by_one(leaves: list[bytes]) -> Frontier:
    f = Frontier()
    for leaf in leaves:
        f.append(leaf)
    return f


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_extend_in_any_chunks_equals_append_one_by_one(chunks: list[int]) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(sum(chunks))]
    ref = Frontier()
    batched = Frontier()
    done = 0
    for size in chunks:
        for leaf in leaves[done : done + size]:
            ref.append(leaf)
        batched.extend(leaves[done : done + size])
        done += size
        # The whole state, not only the root: later appends build on it.
        assert batched._hashes == ref._hashes
        assert batched.size == ref.size == done
        assert batched.root() == ref.root()
    assert batched.root() == root_of(leaves)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=70), st.integers(min_value=0, max_value=70))
def test_extend_then_append_matches_reference(before: int, after: int) -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(before + after + 1)]
    f = Frontier()
    f.extend(leaves[:before])
    f.extend(iter(leaves[before : before + after]))  # any iterable
    f.append(leaves[-1])
    assert f._hashes == _one_by_one(leaves)._hashes


def test_extend_with_a_bad_leaf_keeps_the_good_ones_before_it() -> None:
    good = [leaf_hash(bytes([i])) for i in range(5)]
    f = Frontier()
    with pytest.raises(ValueError):
        f.extend([*good, b"short", good[0]])
    assert f.size == 5 and f._hashes == _one_by_one(good)._hashes
