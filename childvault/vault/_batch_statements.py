"""Batch record statements: one signature over the Merkle root of many new records.

Separate from single record statements: the batch envelope, each record's
member (position and inclusion proof), their wire packing and their check.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from childvault._i18n import _t
from childvault.keys._errors import IntegrityError, UsageError
from childvault.vault._merkle import leaf_hash, node_hash, verify_inclusion
from childvault.vault._record_statements import (
    ALTERED,
    LeafItem,
    RecordVersion,
    _not_entitled,
    record_statement,
    record_statement_bytes,
    record_statement_leaf,
)
from childvault.vault._statement_envelope import (
    _HEX_KEY,
    _TIME,
    MAX_ENVELOPE_BYTES,
    PAYLOAD_TYPE,
    Envelope,
    Signer,
    _bad,
    _keys,
    _verify,
    pae,
    sign,
)
from childvault.vault._trust_state import TrustState

# ------------------------------------------------------ batch record statements


#: The kind of the one statement an import batch signs (docs/trust.md, "Record statements").
BATCH_KIND = "record.batch"
#: The kind of the document kept beside each record of a batch.
MEMBER_KIND = "record.member"
#: Most records one batch statement covers (an import batch is 500).
MAX_BATCH = 1 << 16
#: Longest inclusion proof of a batch of at most MAX_BATCH records.
_MAX_PROOF = 16


def batch_statement(*, vault_id: str, at: str, size: int, root: bytes) -> dict[str, Any]:
    """The statement a writer signs once for a batch of new records: the RFC 6962
    Merkle root over the leaf hashes of the batch's ``record.version`` payloads."""
    return {
        "v": 1,
        "kind": BATCH_KIND,
        "vault": vault_id,
        "at": at,
        "size": size,
        "root": root.hex(),
    }


def batch_proofs(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The RFC 6962 root over the leaf hashes ``leaves`` and every leaf's inclusion
    proof (RFC 9162 2.1.3 PATH, leaf upwards), in O(n log n) instead of one tree a proof."""
    if not leaves:
        raise UsageError(_t("a batch statement needs at least one record"))
    proofs: list[list[bytes]] = [[] for _ in leaves]

    def subtree(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaves[lo]
        k = 1 << ((hi - lo - 1).bit_length() - 1)  # largest power of two below hi - lo
        left, right = subtree(lo, lo + k), subtree(lo + k, hi)
        # Each leaf's sibling at this level, appended after the deeper ones.
        for i in range(lo, lo + k):
            proofs[i].append(right)
        for i in range(lo + k, hi):
            proofs[i].append(left)
        return node_hash(left, right)

    return subtree(0, len(leaves)), proofs


@dataclass(frozen=True)
class BatchMember:
    """What is kept beside one record of a batch (in ``statements``, under the seq
    of its ``record.create`` entry, which names :meth:`digest`): the batch's signed
    envelope, the record's position and its inclusion proof. With the record's
    rows it proves the record's ``record.version`` payload is a leaf of the
    signed root, so one record is checked alone, with one signature check per
    batch (cached) and at most 16 hashes."""

    batch: Envelope
    index: int
    proof: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes (what is stored and hashed)."""
        return self._bytes

    @functools.cached_property
    def _bytes(self) -> bytes:
        # RFC 8785's bytes by a template: members in sorted order, the envelope's
        # own canonical bytes, hex and an integer (nothing JSON escapes).
        proof = ",".join(f'"{p.hex()}"' for p in self.proof)
        return (
            b'{"batch":'
            + self.batch.to_bytes()
            + f',"index":{self.index},"kind":"{MEMBER_KIND}","proof":[{proof}],"v":1}}'.encode()
        )

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`to_bytes`: what the record's log entry names."""
        return self._digest

    @functools.cached_property
    def _digest(self) -> str:
        return hashlib.sha256(self._bytes).hexdigest()

    @classmethod
    def from_json(cls, obj: object) -> BatchMember:
        """Parse the JSON form strictly."""
        if not isinstance(obj, dict) or set(obj) != {"v", "kind", "batch", "index", "proof"}:
            raise _bad(_t("a batch member does not have exactly v, kind, batch, index, proof"))
        if obj["v"] != 1 or obj["kind"] != MEMBER_KIND:
            raise _bad(_t("not a batch member"))
        index, proof = obj["index"], obj["proof"]
        if type(index) is not int or not 0 <= index < MAX_BATCH:
            raise _bad(_t("a batch member's index is out of range"))
        if not isinstance(proof, list) or len(proof) > _MAX_PROOF:
            raise _bad(_t("a batch member's proof is too long"))
        if not all(isinstance(p, str) and _HEX_KEY.fullmatch(p) for p in proof):
            raise _bad(_t("a batch member's proof is not a list of SHA-256 hashes"))
        return cls(Envelope.from_json(obj["batch"]), index, tuple(bytes.fromhex(p) for p in proof))


#: Bytes of one hash of a member's inclusion proof on the wire (:func:`pack_members`).
_PROOF_HASH = 32


def pack_members(members: Sequence[BatchMember]) -> tuple[bytes, list[int], list[int], bytes]:
    """Members of one batch statement in their wire form (``statements.add_members``):
    the batch's envelope once, each member's index and proof length, and the
    proofs' hashes concatenated. :func:`unpack_members` rebuilds exactly the
    members (and so the stored bytes); 500 records' statements are then one
    envelope and 500 proofs, not 500 copies of the envelope (docs/server.md)."""
    if not members or any(m.batch != members[0].batch for m in members):
        raise UsageError(_t("the members packed together belong to one batch statement"))
    return (
        members[0].batch.to_bytes(),
        [m.index for m in members],
        [len(m.proof) for m in members],
        b"".join(h for m in members for h in m.proof),
    )


def unpack_members(
    envelope: object, indexes: object, lengths: object, proofs: object
) -> list[BatchMember]:
    """The members :func:`pack_members` packed, parsed strictly: an
    :class:`IntegrityError` for anything it cannot have made."""
    if not (
        isinstance(envelope, bytes)
        and isinstance(proofs, bytes)
        and isinstance(indexes, list)
        and isinstance(lengths, list)
        and 0 < len(indexes) == len(lengths) <= MAX_BATCH
        and all(type(i) is int and 0 <= i < MAX_BATCH for i in indexes)
        and all(type(n) is int and 0 <= n <= _MAX_PROOF for n in lengths)
        and sum(lengths) * _PROOF_HASH == len(proofs)
    ):
        raise _bad(_t("packed batch members are malformed"))
    batch = Envelope.from_bytes(envelope)
    out: list[BatchMember] = []
    at = 0
    for index, n in zip(indexes, lengths, strict=True):
        end = at + n * _PROOF_HASH
        proof = tuple(proofs[i : i + _PROOF_HASH] for i in range(at, end, _PROOF_HASH))
        out.append(BatchMember(batch, index, proof))
        at = end
    return out


def stored_statement(data: bytes) -> Envelope | BatchMember:
    """Parse what is kept beside a record's entry: its own envelope (one record, and
    every vault written before batch statements) or a :class:`BatchMember`."""
    if not isinstance(data, bytes) or len(data) > MAX_ENVELOPE_BYTES:
        raise _bad(_t("the envelope is not bytes or is too large"))
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(_t("the envelope is not JSON")) from exc
    if isinstance(obj, dict) and obj.get("kind") == MEMBER_KIND:
        return BatchMember.from_json(obj)
    return Envelope.from_json(obj)


def sign_batch(
    statements: Sequence[Mapping[str, Any]], signers: Sequence[Signer]
) -> list[BatchMember]:
    """Sign one ``record.batch`` statement over ``statements`` (each a
    :func:`record_statement` of a new record, all of one vault and one ``at``);
    return each record's :class:`BatchMember`, in order."""
    if not statements or len(statements) > MAX_BATCH:
        raise UsageError(_t("a batch statement covers 1 to {n} records", n=MAX_BATCH))
    vault_id, at = statements[0]["vault"], statements[0]["at"]
    if any(s["vault"] != vault_id or s["at"] != at or s["version"] != 1 for s in statements):
        raise UsageError(_t("a batch statement covers first versions of one vault and time"))
    return _sign_leaves(
        str(vault_id), str(at), [record_statement_bytes(s) for s in statements], signers
    )


def sign_first_versions(
    vault_id: str, at: str, items: Sequence[LeafItem], signers: Sequence[Signer]
) -> list[BatchMember]:
    """:func:`sign_batch` of the first versions ``items`` of ``vault_id`` written
    at ``at``, each statement built as its bytes (:func:`record_statement_leaf`)."""
    if not items or len(items) > MAX_BATCH:
        raise UsageError(_t("a batch statement covers 1 to {n} records", n=MAX_BATCH))
    if any(item[1] != 1 for item in items):
        raise UsageError(_t("a batch statement covers first versions of one vault and time"))
    leaves = [
        record_statement_leaf(
            vault_id=vault_id,
            at=at,
            record=record,
            version=version,
            type_name=type_name,
            consent=consent,
            metadata=metadata,
            fields=fields,
            keyblob=keyblob,
        )
        for record, version, type_name, consent, metadata, fields, keyblob in items
    ]
    return _sign_leaves(vault_id, at, leaves, signers)


def _sign_leaves(
    vault_id: str, at: str, statements: Sequence[bytes], signers: Sequence[Signer]
) -> list[BatchMember]:
    leaves = [leaf_hash(s) for s in statements]
    root, proofs = batch_proofs(leaves)
    envelope = sign(batch_statement(vault_id=vault_id, at=at, size=len(leaves), root=root), signers)
    return [BatchMember(envelope, i, tuple(p)) for i, p in enumerate(proofs)]


@functools.lru_cache(maxsize=4096)
def _verify_cached(public_key: bytes, message: bytes, signature: bytes) -> bool:
    # A batch statement is checked once per key, not once per record of the batch
    # (a pure function of its arguments: caching a result changes nothing else).
    return _verify(public_key, message, signature)


def _batch_signers(envelope: Envelope, state: TrustState, seq: int) -> set[str]:
    """Names whose key at position ``seq`` signed ``envelope`` (current or retired)."""
    message = pae(PAYLOAD_TYPE, envelope.payload)
    found: set[str] = set()
    for name, sig in envelope.signatures:
        user = state.users.get(name)
        if (
            user is not None
            and user.key_from <= seq
            and _verify_cached(user.sign_key, message, sig)
        ):
            found.add(name)
            continue
        for key_hex, start, end in state.retired_keys.get(name, ()):
            if start <= seq < end and _verify_cached(bytes.fromhex(key_hex), message, sig):
                found.add(name)
    return found


def verify_member(
    member: BatchMember,
    state: TrustState,
    *,
    written_at: int,
    record: str,
    version: int,
    type_name: str,
    consent: Mapping[str, Any],
    metadata: Mapping[str, str],
    fields: Iterable[tuple[str, int, bytes]],
    keyblob: bytes,
    first: bool | None = None,
) -> RecordVersion:
    """:func:`verify_record` for a record written in a batch: the ``record.version``
    payload rebuilt from the stored rows must be leaf ``member.index`` of the root
    the batch statement signs, and the batch statement signed by someone active as
    staff or officer at ``written_at``. A batch carries first versions only: a
    member that is not the record's first statement is refused (a later version
    needs an officer's own statement). Raises :class:`IntegrityError`."""
    obj = member.batch.statement()
    _keys(obj, {"v", "kind", "vault", "at", "size", "root"})
    if obj["v"] != 1 or obj["kind"] != BATCH_KIND or obj["vault"] != state.anchor.vault_id:
        raise _bad(_t("not a batch statement of this vault"))
    size, root, at = obj["size"], obj["root"], obj["at"]
    if type(size) is not int or not 1 <= size <= MAX_BATCH or not member.index < size:
        raise _bad(_t("a batch statement's size is out of range"))
    if not isinstance(root, str) or not _HEX_KEY.fullmatch(root):
        raise _bad(_t("a batch statement's root is not a SHA-256 hash"))
    if not isinstance(at, str) or not _TIME.fullmatch(at):
        raise _bad(_t("a batch statement's time is malformed"))
    if not (version == 1 if first is None else first) or version != 1:
        raise IntegrityError(
            _t(
                ALTERED,
                problem=_t(
                    "record {record} version {version} is logged with a batch statement, which "
                    "only carries first versions",
                    record=record,
                    version=version,
                ),
            )
        )
    signers = _batch_signers(member.batch, state, written_at)
    writers = sorted(
        s for s in signers if any(state.was_active(s, r, written_at) for r in ("staff", "officer"))
    )
    if not writers:
        raise _not_entitled(record, version)
    expected = record_statement(
        vault_id=state.anchor.vault_id,
        at=at,
        record=record,
        version=version,
        type_name=type_name,
        consent=consent,
        metadata=metadata,
        fields=fields,
        keyblob=keyblob,
    )
    leaf = leaf_hash(record_statement_bytes(expected))
    if not verify_inclusion(leaf, member.index, size, member.proof, bytes.fromhex(root)):
        raise IntegrityError(
            _t(
                ALTERED,
                problem=_t(
                    "record {record} version {version} differs from what its writer signed "
                    "(it is not in its batch statement)",
                    record=record,
                    version=version,
                ),
            )
        )
    return RecordVersion(
        record,
        version,
        type_name,
        str(expected["consent"]),
        str(expected["metadata"]),
        {n: (int(v[0]), str(v[1])) for n, v in expected["fields"].items()},
        str(expected["keyblob"]),
        writers[0],
    )
