"""LocalProvider: the embedded default, no server (docs/architecture.md, "Providers").

Field DEKs of one record version are sealed together to the institution's
*custodian* X25519 public key (libsodium sealed box). Anyone with the database
can seal (write); only a holder of the custodian secret can open. The custodian
secret is itself sealed to each officer's identity key ("custodian slots").

Blob layout: ``b"CVL1" || generation (4 bytes, big endian) || sealed box``. The
generation names the custodian key pair, so ``keys rotate`` can reseal records
to a new pair while old and new coexist, and resume after an interruption.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import nacl.exceptions
from nacl.public import PrivateKey, PublicKey, SealedBox

from childvault._i18n import _t
from childvault.keys._encoding import b64
from childvault.keys._errors import AccessDenied, ApprovalInvalid, DecryptionFailed
from childvault.keys._identity import Identity, PublicIdentity
from childvault.keys._provider import FieldKey, RecordKeys, ReleasedKeys, Selection, WrappedRecord

_MAGIC = b"CVL1"
_HEADER = struct.Struct(">4sI")
_DEK_LEN = 32


def _keys_to_json(fields: Mapping[str, FieldKey]) -> dict[str, list[Any]]:
    return {name: [fk.version, b64(fk.key)] for name, fk in fields.items()}


def _keys_from_json(obj: Any) -> dict[str, FieldKey]:
    if not isinstance(obj, dict):
        raise ValueError("keys must be an object")
    out: dict[str, FieldKey] = {}
    for name, pair in obj.items():
        if not (isinstance(name, str) and isinstance(pair, list) and len(pair) == 2):
            raise ValueError("bad key entry")
        version, key_b64 = pair
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError("bad field version")
        key = base64.b64decode(key_b64, validate=True)
        if len(key) != _DEK_LEN:
            raise ValueError("bad key length")
        out[name] = FieldKey(version, key)
    return out


class CustodianSecret:
    """An unlocked custodian key pair of one generation."""

    def __init__(self, generation: int, secret: PrivateKey) -> None:
        self.generation = generation
        self._secret = secret
        self.public = bytes(secret.public_key)

    def __repr__(self) -> str:
        return f"CustodianSecret(generation={self.generation})"

    @classmethod
    def generate(cls, generation: int) -> CustodianSecret:
        """A fresh random custodian key pair."""
        return cls(generation, PrivateKey.generate())

    def secret_bytes(self) -> bytes:
        """The raw secret, for sealing into officers' key slots. Never store it in clear."""
        return bytes(self._secret)

    @classmethod
    def from_bytes(cls, generation: int, secret: bytes) -> CustodianSecret:
        """Rebuild a custodian key pair from a key-slot entry."""
        try:
            return cls(generation, PrivateKey(secret))
        except (ValueError, TypeError, nacl.exceptions.CryptoError) as exc:
            raise DecryptionFailed("custodian key-slot entry is malformed") from exc

    def open(self, sealed: bytes) -> bytes:
        """Open a sealed box addressed to this custodian key."""
        try:
            return SealedBox(self._secret).decrypt(sealed)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise DecryptionFailed("record box did not open with the custodian key") from exc


class LocalProvider:
    """Key provider that seals record keys to the custodian key (no server).

    Built with the custodian *public* key it can only wrap: that is what staff
    get. Built with custodian secrets (``custodians=``) it can also open,
    release and replace: that is what an officer gets after opening a slot.
    It has the :class:`~childvault.keys.CustodianSealing` capability.
    """

    kind = "local"

    def __init__(
        self,
        vault_id: str,
        generation: int,
        public_key: bytes,
        custodians: Sequence[CustodianSecret] = (),
    ) -> None:
        self._vault_id = vault_id
        self._generation = generation
        self._public = SealedBox(PublicKey(public_key))
        self._secrets = {c.generation: c for c in custodians}

    @property
    def generation(self) -> int:
        """The custodian generation new blobs are sealed to."""
        return self._generation

    def holds(self, generation: int) -> bool:
        """Whether the custodian secret of ``generation`` is unlocked here."""
        return generation in self._secrets

    def retarget(self, generation: int, public_key: bytes) -> LocalProvider:
        """The same unlocked custodians, sealing new blobs to ``generation`` (rotation)."""
        return LocalProvider(self._vault_id, generation, public_key, list(self._secrets.values()))

    # -- writing (anyone with the database) --------------------------------

    def _seal(self, record_id: str, version: int, fields: Mapping[str, FieldKey]) -> bytes:
        inner = json.dumps(
            {
                "v": 1,
                "vault": self._vault_id,
                "rec": record_id,
                "ver": version,
                "k": _keys_to_json(fields),
            },
            separators=(",", ":"),
        ).encode()
        return _HEADER.pack(_MAGIC, self._generation) + self._public.encrypt(inner)

    def wrap(self, records: Sequence[RecordKeys]) -> list[bytes]:
        """Seal each record's field keys to the current custodian key."""
        return [self._seal(r.record_id, r.version, r.fields) for r in records]

    # -- officer operations -------------------------------------------------

    def open(self, record: WrappedRecord) -> dict[str, FieldKey]:
        """Officer only: open a blob and check it belongs to this record and version."""
        blob = record.blob
        if len(blob) < _HEADER.size:
            raise DecryptionFailed("record box too short")
        magic, generation = _HEADER.unpack_from(blob)
        if magic != _MAGIC:
            raise DecryptionFailed("record box has an unknown format")
        custodian = self._secrets.get(generation)
        if custodian is None:
            raise AccessDenied(
                _t(
                    "this needs the custodian key, which only officers can unlock; run it as an"
                    " officer"
                )
            )
        inner = custodian.open(blob[_HEADER.size :])
        try:
            doc = json.loads(inner)
            bound = (
                doc["v"] == 1
                and doc["vault"] == self._vault_id
                and doc["rec"] == record.record_id
                and doc["ver"] == record.version
            )
            keys = _keys_from_json(doc["k"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DecryptionFailed("record box content is malformed") from exc
        if not bound:
            # A box moved from another record, version or vault.
            raise DecryptionFailed("record box bound to another record, version or vault")
        return keys

    def release(
        self,
        selections: Sequence[Selection],
        requester: PublicIdentity,
        grant_id: str,
        *,
        wrap_ttl: int | str | None = None,
    ) -> bytes:
        """Open each selected record and seal exactly the selected keys to the requester.

        ``wrap_ttl`` is ignored: the token's own expiry bounds the grant.
        """
        released: dict[str, dict[str, list[Any]]] = {}
        for sel in selections:
            keys = self.open(sel.record)
            # An optional field the record does not have has no key: nothing to release.
            released[sel.record.record_id] = _keys_to_json(
                {f: keys[f] for f in sel.fields if f in keys}
            )
        inner = json.dumps(
            {"v": 1, "vault": self._vault_id, "grant": grant_id, "keys": released},
            separators=(",", ":"),
        ).encode()
        return requester.seal(inner)

    def redeem(self, material: bytes, requester: Identity, grant_id: str) -> ReleasedKeys:
        """Open grant material sealed to ``requester`` and check its grant and vault."""
        try:
            inner = requester.unseal(material)
            doc = json.loads(inner)
            if doc["v"] != 1 or doc["vault"] != self._vault_id or doc["grant"] != grant_id:
                raise ApprovalInvalid("grant material bound to another grant or vault")
            keys = doc["keys"]
            if not isinstance(keys, dict):
                raise ValueError("keys must be an object")
            return {str(rid): _keys_from_json(fields) for rid, fields in keys.items()}
        except DecryptionFailed as exc:
            raise ApprovalInvalid("grant material is not sealed to this requester") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ApprovalInvalid("grant material is malformed") from exc

    def replace(
        self, record: WrappedRecord, new_version: int, changes: Mapping[str, FieldKey]
    ) -> bytes:
        """Reseal the record's keys for ``new_version`` with ``changes`` applied."""
        keys = self.open(record)
        keys.update(changes)
        return self._seal(record.record_id, new_version, keys)

    def rekey(self, record: WrappedRecord) -> bytes:
        """Reseal a blob of any unlocked generation to the current generation."""
        return self._seal(record.record_id, record.version, self.open(record))

    def shred(self, record_ids: Sequence[str]) -> None:
        """Nothing outside the database: deleting the record's box is the shred.

        Copies of the box in older backups stay openable with the custodian key
        until ``keys rotate`` replaces and destroys that key (see SECURITY.md).
        """
        return None


def blob_generation(blob: bytes) -> int:
    """The custodian generation a LocalProvider blob is sealed to."""
    if len(blob) < _HEADER.size:
        raise DecryptionFailed("record box too short")
    magic, generation = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise DecryptionFailed("record box has an unknown format")
    return int(generation)
