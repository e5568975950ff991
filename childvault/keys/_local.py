"""LocalProvider: the embedded default, no server (docs/architecture.md, "Providers").

Field DEKs of one record version are sealed together to the institution's
*custodian* X25519 public key (libsodium sealed box). Anyone with the database
can seal (write); only a holder of the custodian secret can open. The custodian
secret is itself sealed to each officer's identity key ("custodian slots").

Blob layout: ``b"CVL1" || generation (4 bytes, big endian) || sealed box``. The
generation names the custodian key pair, so ``keys rotate`` can reseal records
to a new pair while old and new coexist, and resume after an interruption.

Batch layout (issue 18, written since; ``CVL1`` blobs stay readable):
``b"CVL2" || generation || epk (32) || nonce (24) || XChaCha20-Poly1305``. One
ephemeral X25519 key pair per :meth:`LocalProvider.wrap` call (a batch of an
import) replaces one per record: each record's key is BLAKE2b of the shared
secret keyed over the ephemeral and custodian public keys and the record's
binding (vault, record id, version), and the associated data is the blob's
prefix and that binding. So a blob only opens for the record and version it
was written for, and a writer who dropped the ephemeral secret opens nothing
(docs/decisions.md, "One KEM per batch of records").
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.utils
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib
from nacl.public import PrivateKey, PublicKey, SealedBox

from childvault._i18n import _t
from childvault.keys._encoding import b64
from childvault.keys._errors import AccessDenied, ApprovalInvalid, DecryptionFailed
from childvault.keys._identity import Identity, PublicIdentity
from childvault.keys._provider import FieldKey, RecordKeys, ReleasedKeys, Selection, WrappedRecord

_MAGIC = b"CVL1"
_MAGIC_BATCH = b"CVL2"
_HEADER = struct.Struct(">4sI")
_DEK_LEN = 32
_EPK = 32
_NONCE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_KEM_DOMAIN = b"childvault/record-kem/1\x00"
_TAG = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
_ZERO16 = bytes(16)
#: Strings ``json.dumps`` writes unchanged between quotes (nothing to escape).
_JSON_SAFE = re.compile(r"[A-Za-z0-9_-]*").fullmatch
_ONLY_STR = frozenset({str}).issuperset
_ONLY_INT = frozenset({int}).issuperset
_VERSION_OF = attrgetter("version")


def _binding(vault_id: str, record_id: str, version: int) -> bytes:
    """What a batch blob is bound to: its vault, record and version."""
    return f"{vault_id}|{record_id}|{version}".encode()


def _record_key(shared: bytes, epk: bytes, custodian_public: bytes, binding: bytes) -> bytes:
    """One record's key from the batch's shared secret (BLAKE2b keyed by it)."""
    return nacl.bindings.crypto_generichash_blake2b_salt_personal(
        _KEM_DOMAIN + epk + custodian_public + binding, digest_size=32, key=shared
    )


def _seal_batch_from_parts(
    prefix: bytes,
    shared: bytes,
    custodian_public: bytes,
    nonce: bytes,
    binding: bytes,
    inner: bytes,
) -> bytes:
    """One batch blob: ``prefix`` (magic, generation, epk), the nonce and the AEAD.

    Private, like :func:`childvault.vault._fieldcrypto._seal_from_parts`: only
    :meth:`LocalProvider.wrap` and the frozen vectors choose the nonce.

    libsodium is called through PyNaCl's cffi module directly, as in
    ``_fieldcrypto.seal_fields``: the ``nacl.bindings`` wrappers' argument
    checks and copies were about half of this function's time on an import.
    The lengths those wrappers check are fixed here (``shared`` and the key
    32 bytes, the nonce 24); the frozen vectors (tests/vectors/local_batch.json)
    pin the bytes.
    """
    if len(shared) != _DEK_LEN or len(nonce) != _NONCE:
        raise ValueError(_t("batch key or nonce has the wrong length"))
    epk = prefix[_HEADER.size :]
    # _record_key, inlined: BLAKE2b-256 keyed by the shared secret, zero salt and
    # personalisation (what PyNaCl passes when none is given).
    material = _KEM_DOMAIN + epk + custodian_public + binding
    key = _ffi.new("unsigned char[]", _DEK_LEN)
    if _lib.crypto_generichash_blake2b_salt_personal(
        key, _DEK_LEN, material, len(material), shared, _DEK_LEN, _ZERO16, _ZERO16
    ):
        raise RuntimeError(_t("BLAKE2b failed"))
    ad = prefix + binding
    size = len(inner)
    out = _ffi.new("unsigned char[]", size + _TAG)
    rc = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        out, _ffi.NULL, inner, size, ad, len(ad), _ffi.NULL, nonce, key
    )
    if rc != 0:  # libsodium documents no failure here; never return a partial buffer
        raise RuntimeError(_t("XChaCha20-Poly1305 encryption failed"))
    return prefix + nonce + bytes(_ffi.buffer(out))


def _keys_to_json(fields: Mapping[str, FieldKey]) -> dict[str, list[Any]]:
    return {name: [fk.version, b64(fk.key)] for name, fk in fields.items()}


def _inner_json(
    vault_id: str, record_id: str, version: int, fields: Mapping[str, FieldKey]
) -> bytes:
    """The plaintext of a record's box: exactly ``json.dumps`` of
    ``{"v": 1, "vault", "rec", "ver", "k": _keys_to_json(fields)}`` with
    ``separators=(",", ":")``.

    Built by formatting when every string in it is one ``json.dumps`` writes
    as is (letters, digits, ``_`` and ``-``: field names, hex ids, base64 has
    none to escape either) and every number an exact ``int``; else by
    ``json.dumps`` itself. One box a record on an import, and the encoder's
    generic walk was a fifth of wrapping (tests pin the equality).
    """
    # One pattern match for all the strings: joined by "_" (itself safe), they
    # match exactly when each does; map(type, ...) checks every type in C, the
    # versions' too (no set built a record).
    plain = (
        type(version) is int
        and type(vault_id) is str
        and type(record_id) is str
        and _ONLY_STR(map(type, fields))
        and _ONLY_INT(map(type, map(_VERSION_OF, fields.values())))
        and _JSON_SAFE("_".join([vault_id, record_id, *fields])) is not None
    )
    if not plain:
        return json.dumps(
            {
                "v": 1,
                "vault": vault_id,
                "rec": record_id,
                "ver": version,
                "k": _keys_to_json(fields),
            },
            separators=(",", ":"),
        ).encode()
    b2a = binascii.b2a_base64
    k = ",".join(
        [
            f'"{name}":[{fk.version},"{b2a(fk.key, newline=False).decode()}"]'
            for name, fk in fields.items()
        ]
    )
    return (
        f'{{"v":1,"vault":"{vault_id}","rec":"{record_id}","ver":{version},"k":{{{k}}}}}'.encode()
    )


def _keys_from_json(obj: Any) -> dict[str, FieldKey]:
    if not isinstance(obj, dict):
        raise ValueError(_t("keys must be an object"))
    out: dict[str, FieldKey] = {}
    for name, pair in obj.items():
        if not (isinstance(name, str) and isinstance(pair, list) and len(pair) == 2):
            raise ValueError(_t("bad key entry"))
        version, key_b64 = pair
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(_t("bad field version"))
        key = base64.b64decode(key_b64, validate=True)
        if len(key) != _DEK_LEN:
            raise ValueError(_t("bad key length"))
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

    def shared(self, epk: bytes) -> bytes:
        """The X25519 secret shared with the ephemeral public key of a batch blob."""
        try:
            return nacl.bindings.crypto_scalarmult(self.secret_bytes(), epk)
        except (nacl.exceptions.CryptoError, ValueError, TypeError, RuntimeError) as exc:
            raise DecryptionFailed("record box did not open with the custodian key") from exc

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
        self._public_key = bytes(public_key)
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

    def _inner(self, record_id: str, version: int, fields: Mapping[str, FieldKey]) -> bytes:
        return _inner_json(self._vault_id, record_id, version, fields)

    def _seal(self, record_id: str, version: int, fields: Mapping[str, FieldKey]) -> bytes:
        return self.wrap([RecordKeys(record_id, version, dict(fields))])[0]

    def wrap(self, records: Sequence[RecordKeys]) -> list[bytes]:
        """Seal each record's field keys to the current custodian key: one ephemeral
        X25519 exchange for the whole call, a key per record derived from it."""
        if not records:
            return []
        _epk, esk = nacl.bindings.crypto_box_keypair()
        # The ephemeral secret lives only in this call: the writer keeps nothing
        # that opens the blobs (module docstring).
        return self._wrap_from_parts(records, esk, nacl.utils.random(_NONCE * len(records)))

    def _wrap_from_parts(
        self, records: Sequence[RecordKeys], esk: bytes, nonces: bytes
    ) -> list[bytes]:
        """:meth:`wrap` with a given ephemeral secret and nonces (``CVL2`` blobs).

        Private on purpose: only :meth:`wrap` and the frozen known-answer vectors
        (tests/vectors/local_batch.json) call it; reusing an ephemeral secret
        across calls would tie batches together.
        """
        epk = nacl.bindings.crypto_scalarmult_base(esk)
        shared = nacl.bindings.crypto_scalarmult(esk, self._public_key)
        prefix = _HEADER.pack(_MAGIC_BATCH, self._generation) + epk
        return [
            _seal_batch_from_parts(
                prefix,
                shared,
                self._public_key,
                nonces[i * _NONCE : (i + 1) * _NONCE],
                _binding(self._vault_id, r.record_id, r.version),
                self._inner(r.record_id, r.version, r.fields),
            )
            for i, r in enumerate(records)
        ]

    # -- officer operations -------------------------------------------------

    def open(self, record: WrappedRecord) -> dict[str, FieldKey]:
        """Officer only: open a blob and check it belongs to this record and version."""
        blob = record.blob
        if len(blob) < _HEADER.size:
            raise DecryptionFailed("record box too short")
        magic, generation = _HEADER.unpack_from(blob)
        if magic not in (_MAGIC, _MAGIC_BATCH):
            raise DecryptionFailed("record box has an unknown format")
        custodian = self._secrets.get(generation)
        if custodian is None:
            raise AccessDenied(
                _t(
                    "this needs the custodian key, which only officers can unlock; run it as an"
                    " officer"
                )
            )
        if magic == _MAGIC_BATCH:
            inner = self._open_batch(custodian, blob, record)
        else:
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

    def _open_batch(self, custodian: CustodianSecret, blob: bytes, record: WrappedRecord) -> bytes:
        """Open a ``CVL2`` blob for ``record``: a blob written for another record,
        version or vault derives another key and fails to authenticate."""
        start = _HEADER.size + _EPK
        if len(blob) < start + _NONCE + 16:
            raise DecryptionFailed("record box too short")
        prefix, nonce, ct = blob[:start], blob[start : start + _NONCE], blob[start + _NONCE :]
        epk = prefix[_HEADER.size :]
        binding = _binding(self._vault_id, record.record_id, record.version)
        key = _record_key(custodian.shared(epk), epk, custodian.public, binding)
        try:
            return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                ct, prefix + binding, nonce, key
            )
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise DecryptionFailed(
                "record box did not open: bound to another record, version or vault, or "
                "not sealed to this custodian key"
            ) from exc

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
                raise ValueError(_t("keys must be an object"))
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
    if magic not in (_MAGIC, _MAGIC_BATCH):
        raise DecryptionFailed("record box has an unknown format")
    return int(generation)
