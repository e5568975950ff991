"""``_statements.batch_proofs`` builds every inclusion proof of a batch at once: the
same root and proofs as ``_merkle`` (RFC 9162) builds one at a time."""

from __future__ import annotations

import hashlib

import pytest

from childvault.keys import UsageError
from childvault.vault import _merkle
from childvault.vault._statements import batch_proofs


@pytest.mark.parametrize("n", [*range(1, 34), 500, 513])
def test_batch_proofs_are_rfc9162s(n: int) -> None:
    leaves = [_merkle.leaf_hash(hashlib.sha256(b"%d" % i).digest()) for i in range(n)]
    root, proofs = batch_proofs(leaves)
    assert root == _merkle.root_of(leaves)
    for i in sorted({0, 1, n // 2, n - 2, n - 1} & set(range(n))):
        assert proofs[i] == _merkle.inclusion_proof(i, leaves)
    for i in range(n):
        assert _merkle.verify_inclusion(leaves[i], i, n, proofs[i], root)
    if n > 1:
        assert not _merkle.verify_inclusion(leaves[0], 1, n, proofs[0], root)


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(UsageError):
        batch_proofs([])
