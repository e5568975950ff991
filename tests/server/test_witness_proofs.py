"""Witness proofs from cached subtree hashes agree with the O(n) builders (issue 13).

``SubtreeHashes`` keeps the aligned perfect subtrees of a growing tree so the
server's consistency proof for a witness reads O(log n) hashes and a bounded
number of leaves, not every leaf per checkpoint. Its proofs must be exactly
the RFC 9162 proofs of :func:`consistency_proof` / :func:`inclusion_proof`, for
every size, and verify.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from childvault.vault._merkle import (
    SubtreeHashes,
    consistency_proof,
    inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


class _Counted:
    """A leaf reader over a list that counts the leaves it hands out."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self.read = 0

    def __call__(self, lo: int, hi: int) -> list[bytes]:
        self.read += max(0, min(hi, len(self.leaves)) - lo)
        return self.leaves[lo:hi]


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=700),
    data=st.data(),
    low=st.integers(min_value=0, max_value=4),
)
def test_proofs_match_the_linear_builders(size: int, data: st.DataObject, low: int) -> None:
    leaves = _leaves(size)
    cache = SubtreeHashes(_Counted(leaves), low=low)
    old = data.draw(st.integers(min_value=0, max_value=size))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = cache.consistency_proof(old, size)
    assert proof == consistency_proof(old, leaves)
    assert verify_consistency(old, size, root_of(leaves[:old]), root_of(leaves), proof)
    path = cache.inclusion_proof(index, size)
    assert path == inclusion_proof(index, leaves)
    assert verify_inclusion(leaves[index], index, size, path, root_of(leaves))


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=8))
def test_a_growing_tree_keeps_agreeing(sizes: list[int]) -> None:
    # One cache over a log that grows between checkpoints, as the server's does.
    total = sum(sizes)
    leaves = _leaves(total)
    cache = SubtreeHashes(_Counted(leaves), low=3)
    size = 0
    for step in sizes:
        old, size = size, size + step
        assert cache.consistency_proof(old, size) == consistency_proof(old, leaves[:size])


def test_each_leaf_is_cached_once_and_a_proof_reads_a_bounded_number() -> None:
    reader = _Counted(_leaves(1 << 14))
    cache = SubtreeHashes(reader, low=6)
    cache.consistency_proof(100, 1 << 13)
    first = reader.read
    assert first <= (1 << 13) + 3 * 64  # every block once, plus the edges
    before = reader.read
    proof = cache.consistency_proof((1 << 13) - 5, (1 << 14) - 7)
    grown = reader.read - before
    # The new blocks once (8192 leaves), plus the leaves under the two edges.
    assert grown <= (1 << 13) + 3 * 64
    before = reader.read
    # The same tree again: only the edge blocks are read, not the log.
    assert cache.consistency_proof((1 << 13) - 5, (1 << 14) - 7) == proof
    assert reader.read - before <= 4 * 64


def test_a_short_log_and_bad_arguments_are_refused() -> None:
    cache = SubtreeHashes(_Counted(_leaves(10)), low=2)
    with pytest.raises(ValueError):
        cache.consistency_proof(3, 20)
    with pytest.raises(ValueError):
        cache.consistency_proof(5, 4)
    with pytest.raises(ValueError):
        cache.inclusion_proof(10, 10)
    with pytest.raises(ValueError):
        cache.subtree(4, 4)
    with pytest.raises(ValueError):
        SubtreeHashes(_Counted([]), low=-1)


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=90), st.integers(min_value=0, max_value=6)),
        min_size=1,
        max_size=12,
    ),
)
def test_a_checkpoint_root_reads_only_the_leaves_not_kept(steps: list[tuple[int, int]]) -> None:
    # As the server checks a checkpoint at each approval: the committed log is
    # kept (extend_to), the root is taken over it and the transaction's own
    # appends. Only those appends are read, whatever the size in a block.
    leaves = _leaves(sum(grow + extra for grow, extra in steps) + 1)
    reader = _Counted(leaves)
    cache = SubtreeHashes(reader, low=5)
    committed = 0
    for grow, extra in steps:
        committed += grow
        cache.extend_to(committed)
        before = reader.read
        size = committed + extra
        if size:
            assert cache.subtree(0, size) == root_of(leaves[:size])
            assert reader.read - before <= extra
    assert reader.read <= committed + sum(extra for _, extra in steps)
