"""Per-field value encryption (docs/architecture.md: field encryption).

Every stored field value has its own random 256-bit data key and is sealed with
XChaCha20-Poly1305-IETF (libsodium through PyNaCl) under a random 192-bit nonce.
The associated data binds the ciphertext to its place,
``childvault/1|vault_id|record_id|field|field_version``, so a ciphertext moved
to another record, field, version or vault fails to open.

There is deliberately no public way to pass a nonce or a key: :func:`seal_field`
draws both and returns the key for the caller to wrap. The private
:func:`_seal_from_parts` exists only so known-answer vectors can pin the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import nacl.bindings
import nacl.utils

# PyNaCl's cffi module: the libsodium functions themselves. The wrappers in
# nacl.bindings check their arguments with several Python calls and copy the
# result twice, which cost ~9 us a field on large imports, four times the
# cipher itself (docs/benchmarks.md, third round). The calls below check the
# same lengths once, here; the known-answer vectors (tests/vectors) pin the
# bytes, so a change in PyNaCl's internals cannot go unnoticed.
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from childvault._i18n import _t
from childvault.keys import DecryptionFailed, FieldKey

_NONCE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_KEY = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
_TAG = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
_AD_PREFIX = b"childvault/1|"


def associated_data(vault_id: str, record_id: str, field: str, version: int) -> bytes:
    """The associated data binding a field ciphertext to its place."""
    # Components never contain "|": ids are hex, field names are [a-z0-9_].
    return _AD_PREFIX + f"{vault_id}|{record_id}|{field}|{version}".encode("ascii")


def seal_field(
    plaintext: bytes, *, vault_id: str, record_id: str, field: str, version: int
) -> tuple[bytes, FieldKey]:
    """Encrypt one field value under a fresh key; return ``(nonce||ciphertext||tag, key)``."""
    # One draw for key and nonce: a system call less per field on large imports.
    fresh = nacl.utils.random(_KEY + _NONCE)
    key, nonce = fresh[:_KEY], fresh[_KEY:]
    sealed = _seal_from_parts(
        plaintext, key, nonce, vault_id=vault_id, record_id=record_id, field=field, version=version
    )
    return sealed, FieldKey(version, key)


def seal_fields(
    values: Sequence[tuple[str, bytes]], *, vault_id: str, record_id: str, version: int
) -> list[tuple[str, bytes, FieldKey]]:
    """:func:`seal_field` of each ``(field, plaintext)`` of one record version:
    ``(field, nonce||ciphertext||tag, key)`` in the same order.

    The same bytes as :func:`_seal_from_parts` (a fresh key and nonce per field,
    the same associated data), with one draw from the system's generator for
    the whole record and the per-record part of the associated data built
    once: on an import this loop runs for every field of every row.
    """
    if not values:
        return []
    step = _KEY + _NONCE
    fresh = nacl.utils.random(step * len(values))
    head = _AD_PREFIX + f"{vault_id}|{record_id}|".encode("ascii")
    tail = f"|{version}".encode("ascii")
    total = 0
    for _, plaintext in values:
        if not isinstance(plaintext, bytes):
            raise TypeError(_t("the field value must be bytes"))
        total += len(plaintext) + _TAG
    # One C buffer for the record's ciphertexts (each field's ciphertext||tag at
    # its own offset), and the nonce prepended when each is copied out: cffi's
    # slice assignment and pointer arithmetic on a buffer a field cost more than
    # the cipher itself (docs/benchmarks.md, round 2 session 7). Keys and
    # nonces are still fresh, distinct slices of the one random draw.
    buf = _ffi.new("unsigned char[]", total)
    view = _ffi.buffer(buf)
    encrypt, null = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt, _ffi.NULL
    out: list[tuple[str, bytes, FieldKey]] = []
    append = out.append
    at = pos = 0
    for field, plaintext in values:
        key = fresh[at : at + _KEY]
        nonce = fresh[at + _KEY : at + step]
        at += step
        ad = head + field.encode("ascii") + tail
        size = len(plaintext)
        rc = encrypt(buf + pos, null, plaintext, size, ad, len(ad), null, nonce, key)
        if rc != 0:  # libsodium documents no failure here; never return a partial buffer
            raise RuntimeError(_t("XChaCha20-Poly1305 encryption failed"))
        end = pos + size + _TAG
        append((field, nonce + view[pos:end], FieldKey(version, key)))
        pos = end
    return out


def _seal_from_parts(
    plaintext: bytes,
    key: bytes,
    nonce: bytes,
    *,
    vault_id: str,
    record_id: str,
    field: str,
    version: int,
) -> bytes:
    """Seal with a given key and nonce; return ``nonce||ciphertext||tag``.

    Private on purpose (like pyca/cryptography's ``_encrypt_from_parts``): only
    :func:`seal_field` and the frozen known-answer vectors (tests/vectors) call
    it. A caller choosing nonces could repeat one under a key, which breaks
    both secrecy and integrity, so the public API never takes a nonce.
    """
    if len(key) != _KEY or len(nonce) != _NONCE:
        raise ValueError(_t("field key or nonce has the wrong length"))
    if not isinstance(plaintext, bytes):
        raise TypeError(_t("the field value must be bytes"))
    ad = associated_data(vault_id, record_id, field, version)
    size = len(plaintext)
    # nonce || ciphertext || tag, written in place: one buffer, one copy out.
    out = _ffi.new("unsigned char[]", _NONCE + size + _TAG)
    _ffi.memmove(out, nonce, _NONCE)
    rc = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        out + _NONCE, _ffi.NULL, plaintext, size, ad, len(ad), _ffi.NULL, nonce, key
    )
    if rc != 0:  # libsodium documents no failure here; never return a partial buffer
        raise RuntimeError(_t("XChaCha20-Poly1305 encryption failed"))
    return bytes(_ffi.buffer(out))


def open_field(
    sealed: bytes, key: FieldKey, *, vault_id: str, record_id: str, field: str, version: int
) -> bytes:
    """Decrypt one field value; raise the opaque :class:`DecryptionFailed` on any mismatch."""
    if key.version != version or len(sealed) < _NONCE + _TAG or len(key.key) != _KEY:
        raise DecryptionFailed(f"field {field} of {record_id}: version or length mismatch")
    ad = associated_data(vault_id, record_id, field, version)
    size = len(sealed) - _NONCE - _TAG
    out = _ffi.new("unsigned char[]", max(size, 1))
    rc = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
        out,
        _ffi.NULL,
        _ffi.NULL,
        sealed[_NONCE:],
        size + _TAG,
        ad,
        len(ad),
        sealed[:_NONCE],
        bytes(key.key),
    )
    if rc != 0:
        raise DecryptionFailed(f"field {field} of {record_id}: authentication failed")
    return bytes(_ffi.buffer(out, size))
