"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.

The audit log's entry hashes are the leaves of this tree (docs/architecture.md,
"Audit log"), so a signed checkpoint (size, root) commits to the whole log, and anyone holding an
older checkpoint can check that the log only grew since (a consistency proof)
or that one entry is in it (an inclusion proof) with their own RFC 9162 code.

Functions that take ``leaves`` take *leaf hashes* (the output of
:func:`leaf_hash`), never raw entries. Builders (:func:`inclusion_proof`,
:func:`consistency_proof`) are called by us on our own data and raise
``ValueError`` on impossible arguments; verifiers are fed third-party input and
return ``False`` on anything malformed, never raise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from childvault._i18n import _t

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "SubtreeHashes",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

_sha256 = hashlib.sha256

#: Size in bytes of every hash in the tree (SHA-256).
HASH_SIZE = 32

#: MTH of the empty tree: SHA-256 of the empty string (RFC 9162 2.1.1).
EMPTY_ROOT: bytes = _sha256(b"").digest()

# Domain-separation prefixes of RFC 6962: a leaf can never be mistaken for an
# interior node, which is what makes second-preimage attacks on the tree fail.
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(entry: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 || entry)``."""
    return _sha256(_LEAF + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``."""
    return _sha256(_NODE + left + right).digest()


class Frontier:
    """Streaming Merkle tree: append leaf hashes one by one in O(log n) memory; root() at any time.

    The state is the list of roots of the perfect subtrees that make up the
    tree so far, largest (leftmost) first; their sizes are the set bits of
    ``size``, so no heights need storing. ``audit verify`` streams a million
    entries through :meth:`append`, hence the tight loop.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        """Start an empty tree."""
        self._hashes: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash (32 bytes, as returned by :func:`leaf_hash`)."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(_t("a Merkle leaf hash must be 32 bytes"))
        hashes = self._hashes
        n = self._size
        # Binary-counter carry: every trailing 1 bit of the old size is a
        # perfect subtree of the same height as the one being carried, so merge.
        while n & 1:
            leaf = _sha256(_NODE + hashes.pop() + leaf).digest()
            n >>= 1
        hashes.append(leaf)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append every leaf hash of ``leaves`` in order (same state as appending one by one).

        Folds level by level: at each height the pending left subtree of the
        frontier (if that bit of ``size`` is set) is put in front, the level is
        paired into the next one in one comprehension, and an odd node left over
        becomes the frontier's subtree of that height. Same hashes as
        :meth:`append`, without its per-leaf Python logic.
        """
        level = list(leaves)
        if not all(len(leaf) == HASH_SIZE for leaf in level):
            append = self.append
            for leaf in level:
                append(leaf)  # raises at the first bad leaf, after the good ones
            return
        hashes = self._hashes
        size = self._size
        count = len(level)
        bits = size
        spare: list[bytes] = []  # leftover subtree roots, lowest height first
        sha, node = _sha256, _NODE
        while level:
            if bits & 1:
                level.insert(0, hashes.pop())
            if len(level) & 1:
                spare.append(level.pop())
            pairs = iter(level)
            level = [
                sha(node + left + right).digest() for left, right in zip(pairs, pairs, strict=True)
            ]
            bits >>= 1
        spare.reverse()
        hashes.extend(spare)
        self._size = size + count

    def to_bytes(self) -> bytes:
        """The state as bytes: the subtree roots, largest first (see :meth:`from_bytes`)."""
        return b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        """Rebuild the frontier of a ``size``-leaf tree from :meth:`to_bytes`.

        Raises ValueError if the length does not fit ``size``. The state is only
        as trustworthy as where it came from: compare :meth:`root` with a
        signed root before relying on it.
        """
        if size < 0 or len(data) != HASH_SIZE * bin(size).count("1"):
            raise ValueError(_t("a Merkle frontier does not fit its tree size"))
        frontier = cls()
        frontier._hashes = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        frontier._size = size
        return frontier

    def root(self) -> bytes:
        """Return MTH of all leaves appended so far (:data:`EMPTY_ROOT` for none)."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        # RFC 9162 splits at the largest power of two below n, so the right
        # spine is folded first: the smallest subtrees combine before larger ones.
        root = hashes[-1]
        for h in reversed(hashes[:-1]):
            root = _sha256(_NODE + h + root).digest()
        return root

    def copy(self) -> Frontier:
        """Return an independent copy (appending to one does not change the other)."""
        other = Frontier()
        other._hashes = list(self._hashes)
        other._size = self._size
        return other

    def __repr__(self) -> str:
        return f"Frontier(size={self._size})"


def root_of(leaves: Sequence[bytes]) -> bytes:
    """Return MTH(D[0:n]) over the leaf hashes ``leaves`` (RFC 9162 2.1.1)."""
    frontier = Frontier()
    frontier.extend(leaves)
    return frontier.root()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (``n`` >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    return root_of(leaves[lo:hi])


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Return the RFC 9162 2.1.3 inclusion proof PATH(index, D[0:n]), n = ``len(leaves)``.

    The proof lists sibling subtree roots from the leaf upwards. Raises
    ``ValueError`` if ``index`` is not a leaf of the tree.
    """
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(_t("inclusion proof index is outside the tree"))
    return _inclusion_path(index, n, lambda lo, hi: _mth(leaves, lo, hi))


def _inclusion_path(index: int, n: int, mth: Callable[[int, int], bytes]) -> list[bytes]:
    proof: list[bytes] = []
    lo, hi, m = 0, n, index
    # Walk down from the root; each step records the sibling that the
    # recursive definition appends *after* the deeper path, hence the reverse.
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            proof.append(mth(lo + k, hi))
            hi = lo + k
        else:
            proof.append(mth(lo, lo + k))
            lo, m = lo + k, m - k
    proof.reverse()
    return proof


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Return the RFC 9162 2.1.4 consistency proof PROOF(old_size, D[0:n]), n = ``len(leaves)``.

    Empty when ``old_size`` is 0 or n (nothing to prove). Raises ``ValueError``
    if ``old_size`` is negative or larger than the tree.
    """
    n = len(leaves)
    if not 0 <= old_size <= n:
        raise ValueError(_t("consistency proof old size is outside the tree"))
    return _consistency_path(old_size, n, lambda lo, hi: _mth(leaves, lo, hi))


def _consistency_path(old_size: int, n: int, mth: Callable[[int, int], bytes]) -> list[bytes]:
    if old_size in (0, n):
        return []
    proof: list[bytes] = []
    lo, hi, m, complete = 0, n, old_size, True
    # Iterative SUBPROOF(m, D[lo:hi], complete); like PATH, the recursion
    # appends the sibling after the deeper part, so collect then reverse.
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(mth(lo + k, hi))
            hi = lo + k
        else:
            proof.append(mth(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(mth(lo, hi))
    proof.reverse()
    return proof


#: Reads the leaf hashes ``lo`` to ``hi`` (exclusive) of the log, in order.
LeafReader = Callable[[int, int], Sequence[bytes]]


class SubtreeHashes:
    """The hashes of a growing tree's aligned perfect subtrees, computed once, for proofs
    in O(log n) lookups (issue 13: a witness's consistency proof per checkpoint).

    Every node of an RFC 9162 proof is MTH(D[lo:hi]) of a range the recursive
    split produces: either an aligned perfect subtree (``hi - lo`` a power of
    two, ``lo`` a multiple of it) or one right edge ``[lo, n)`` that splits
    into an aligned perfect left part and a smaller right edge. The perfect
    subtrees of at least ``2**low`` leaves are kept here (about ``2 * n /
    2**low`` hashes); a smaller range is hashed from its leaves, read with
    ``leaves`` (at most ``2**low`` of them). So a proof costs O(log n) lookups
    and a bounded number of leaf reads, instead of reading every leaf.

    The hashes are only as good as the leaves read: whoever checks the proof
    (a witness, against its own stored root) is what makes a wrong one harmless.
    """

    def __init__(self, leaves: LeafReader, *, low: int = 8) -> None:
        """Start with nothing cached; ``leaves`` reads leaf hashes by range."""
        if low < 0:
            raise ValueError(_t("a Merkle node height must not be negative"))
        self._leaves = leaves
        self._low = low
        #: ``_levels[h][j]``: MTH of leaves ``[j * 2**(low+h), (j+1) * 2**(low+h))``.
        self._levels: list[list[bytes]] = []
        self._covered = 0  # leaves covered by ``_levels[0]`` (a multiple of 2**low)
        #: The leaves :meth:`extend_to` was given past the last whole block (fewer
        #: than ``2**low``), from ``_covered`` on: the log's root at a size in that
        #: last block then reads only the leaves past them (the server checks a
        #: checkpoint's root at every approval; it read up to 255 leaves each time).
        self._tail: list[bytes] = []

    @property
    def covered(self) -> int:
        """How many leaves the cached subtrees cover."""
        return self._covered

    def extend_to(self, size: int) -> None:
        """Cache the whole blocks of ``2**low`` leaves below ``size`` not cached yet,
        and keep the leaves after them up to ``size`` (reads only leaves not read
        before: each leaf is read once over the object's life)."""
        block = 1 << self._low
        end = size - size % block
        while self._covered < end:
            # A bounded read per step, so a first call on a long log does not
            # hold every leaf in memory at once.
            hi = min(end, self._covered + 4096 * block)
            kept = self._tail[: hi - self._covered]
            got = kept + self._read_new(self._covered + len(kept), hi)
            for i in range(0, len(got), block):
                self._add(root_of(got[i : i + block]))
            self._tail = self._tail[len(kept) :]
            self._covered = hi
        kept_to = self._covered + len(self._tail)
        if size > kept_to:
            self._tail += self._read_new(kept_to, size)

    def _read_new(self, lo: int, hi: int) -> list[bytes]:
        got = list(self._leaves(lo, hi)) if hi > lo else []
        if len(got) != hi - lo:
            raise ValueError(_t("the log is shorter than the Merkle tree asked for"))
        return got

    def _add(self, node: bytes) -> None:
        # Binary-counter carry, as Frontier.append, but every level is kept.
        height = 0
        while True:
            if height == len(self._levels):
                self._levels.append([])
            level = self._levels[height]
            level.append(node)
            if len(level) & 1:
                return
            node = node_hash(level[-2], level[-1])
            height += 1

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a range an RFC 9162 proof of a tree of at least ``hi``
        leaves uses (``lo`` a multiple of the largest power of two not above
        ``hi - lo``). Raises ValueError for an empty or unaligned range."""
        n = hi - lo
        if n <= 0:
            raise ValueError(_t("a Merkle subtree range is empty"))
        if n & (n - 1) == 0 and n >= 1 << self._low and hi <= self._covered:
            if lo % n:
                raise ValueError(_t("a Merkle subtree range is not aligned"))
            return self._levels[n.bit_length() - 1 - self._low][lo // n]
        if n <= 1 << self._low:
            return root_of(self._read(lo, hi))
        k = _split(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def _read(self, lo: int, hi: int) -> list[bytes]:
        start = lo - self._covered
        if not 0 <= start < len(self._tail):
            return self._read_new(lo, hi)
        # Kept leaves first; only those past them are read.
        got = self._tail[start : hi - self._covered]
        return got + self._read_new(lo + len(got), hi)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """:func:`inclusion_proof` of leaf ``index`` in the tree of the first ``size`` leaves."""
        if not 0 <= index < size:
            raise ValueError(_t("inclusion proof index is outside the tree"))
        self.extend_to(size)
        return _inclusion_path(index, size, self.subtree)

    def consistency_proof(self, old_size: int, size: int) -> list[bytes]:
        """:func:`consistency_proof` from ``old_size`` leaves to the first ``size`` leaves."""
        if not 0 <= old_size <= size:
            raise ValueError(_t("consistency proof old size is outside the tree"))
        self.extend_to(size)
        return _consistency_path(old_size, size, self.subtree)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_proof(proof: object) -> bool:
    # A tree of at most 2**64 leaves has paths of at most 64 hashes; the
    # bound also stops a hostile proof from costing unbounded hashing.
    if isinstance(proof, (str, bytes, bytearray)) or not isinstance(proof, Sequence):
        return False
    return len(proof) <= 130 and all(_is_hash(p) for p in proof)


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Check an RFC 9162 2.1.3.2 inclusion proof: is ``leaf`` at ``index`` in the tree ``root``?

    ``root`` must be the root of the tree of ``size`` leaves taken from a
    verified checkpoint: the proof binds the leaf to the root, the checkpoint
    binds the root to the size. Returns ``False`` (never raises) on any
    malformed input.
    """
    if not (_is_hash(leaf) and _is_hash(root) and _is_proof(proof)):
        return False
    if not (_is_size(index) and _is_size(size)) or index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # A right edge node with no sibling at some levels: skip the
            # levels where it is promoted unchanged.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check an RFC 9162 2.1.4.2 consistency proof: is tree ``old_root`` a prefix of ``new_root``?

    Equal sizes need equal roots and an empty proof; an old size of 0 needs
    ``old_root`` to be :data:`EMPTY_ROOT` and an empty proof (stricter than
    RFC 9162, which ignores the root: a size-0 checkpoint with another root is
    corrupt). Returns ``False`` (never raises) on any malformed input.
    """
    if not (_is_hash(old_root) and _is_hash(new_root) and _is_proof(proof)):
        return False
    if not (_is_size(old_size) and _is_size(new_size)) or old_size > new_size:
        return False
    if old_size == new_size:
        return len(proof) == 0 and old_root == new_root
    if old_size == 0:
        return len(proof) == 0 and old_root == EMPTY_ROOT
    if len(proof) == 0:
        return False
    path = list(proof)
    # When the old tree is a perfect subtree its root is omitted from the
    # proof (the verifier already has it), so put it back as the seed.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
