"""Release after logging (server mode): grant material the requester cannot open alone.

In server mode the officer's client wraps the grant material (already sealed
to the requester) once more, under a per-grant *release key* that only the
server holds (``release.new``). The token therefore carries material nobody
can open without the server: the requester must ask the server to redeem
(``release.redeem``), and the server hands out the release key only to the
grant's requester, while the grant is neither revoked nor expired, and only
as many times as the requester's signed ``grant.read`` entries were committed
(at most the approval's signed number of uses). The server decides on the
signed log, not the ``grants`` row, and keeps the release keys under a secret
of its own, so people who open the database can neither read them nor reset
their counts (docs/server.md, "Release after logging"). The server never sees
the requester's private key, so the release key alone opens nothing either.

The server answers a release key only in a request that also commits its
count (a read's comes with the commit of its logged use: docs/server.md). An
approval's new key is asked with the request that commits the grant, and the
material is wrapped once that answer is in (:class:`PendingWrap`).

The wrapping: ``MAGIC || nonce || XChaCha20-Poly1305(release key, material)``
with the vault id and grant id as associated data.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import nacl.bindings
import nacl.exceptions

from childvault._i18n import _t
from childvault.keys import (
    ApprovalInvalid,
    Identity,
    IntegrityError,
    KeyProvider,
    PublicIdentity,
    ReleasedKeys,
    Selection,
)
from childvault.vault._keyring import Keyring

#: Prefix of doubly wrapped grant material.
MAGIC = b"cvrel1\x00"
_NONCE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES


def _ad(vault_id: str, grant_id: str) -> bytes:
    return b"childvault/release/1|%s|%s" % (vault_id.encode(), grant_id.encode())


def wrap(material: bytes, key: bytes, vault_id: str, grant_id: str) -> bytes:
    """``material`` under the release ``key``."""
    nonce = secrets.token_bytes(_NONCE)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        material, _ad(vault_id, grant_id), nonce, key
    )
    return MAGIC + nonce + ct


def unwrap(wrapped: bytes, key: bytes, vault_id: str, grant_id: str) -> bytes:
    """The material inside :func:`wrap`'s output; :class:`ApprovalInvalid` if it does not open."""
    body = wrapped[len(MAGIC) :]
    try:
        return bytes(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                body[_NONCE:], _ad(vault_id, grant_id), body[:_NONCE], key
            )
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise ApprovalInvalid("grant material does not open with the released key") from exc


class PendingWrap(bytes):
    """Grant material whose release key the server answers with a later request
    (:meth:`RemoteKeyring.wrap`); empty bytes until :func:`settle` wraps it."""

    material: bytes
    holder: Any
    vault_id: str
    grant_id: str

    def __new__(cls, material: bytes, holder: Any, vault_id: str, grant_id: str) -> PendingWrap:
        """Hold ``material`` until ``holder.value`` has the key."""
        self = super().__new__(cls, b"")
        self.material, self.holder = material, holder
        self.vault_id, self.grant_id = vault_id, grant_id
        return self

    def settle(self) -> bytes:
        """The material under the key the server answered (after the request)."""
        key = self.holder.value
        if not isinstance(key, bytes) or len(key) != 32:
            raise IntegrityError(_t("the server answered no release key"))
        return wrap(self.material, key, self.vault_id, self.grant_id)


def settle(material: bytes) -> bytes:
    """``material`` itself, or a :class:`PendingWrap` wrapped once its key is known."""
    return material.settle() if isinstance(material, PendingWrap) else material


class _Guarded:
    """A key provider whose releases are wrapped, and whose redemptions ask the server."""

    def __init__(self, inner: KeyProvider, ring: RemoteKeyring) -> None:
        self._inner = inner
        self._ring = ring

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def release(
        self,
        selections: Sequence[Selection],
        requester: PublicIdentity,
        grant_id: str,
        *,
        wrap_ttl: int | str | None = None,
    ) -> bytes:
        """The provider's material for the grant, wrapped under a new server-held key."""
        material = self._inner.release(selections, requester, grant_id, wrap_ttl=wrap_ttl)
        return self._ring.wrap(material, grant_id)

    def redeem(self, material: bytes, requester: Identity, grant_id: str) -> ReleasedKeys:
        """Ask the server for the release key (after the read is logged), then redeem."""
        if material.startswith(MAGIC):
            material = self._ring.unwrap(material, grant_id)
        return self._inner.redeem(material, requester, grant_id)


class _GuardedWithReceipt(_Guarded):
    """:class:`_Guarded` for a provider that reports receipts (only then: services
    check for the method's presence)."""

    def release_with_receipt(self, *args: Any, **kwargs: Any) -> tuple[bytes, Any]:
        """As :meth:`release`, for a provider that reports a receipt (Vault)."""
        material, receipt = self._inner.release_with_receipt(*args, **kwargs)  # type: ignore[attr-defined]
        grant_id = args[2] if len(args) > 2 else kwargs["grant_id"]
        return self._ring.wrap(material, str(grant_id)), receipt


def _guard(inner: KeyProvider, ring: RemoteKeyring) -> KeyProvider:
    kind = _GuardedWithReceipt if hasattr(inner, "release_with_receipt") else _Guarded
    return kind(inner, ring)


class RemoteKeyring(Keyring):
    """The keyring of a client in server mode: releases go through the server."""

    def wrap(self, material: bytes, grant_id: str) -> bytes:
        """Wrap under a release key the server makes (and keeps) for ``grant_id``.

        Inside a transaction the key is asked with the transaction's next request
        (an approval's commit): the answer is a :class:`PendingWrap`, wrapped by
        :func:`settle` once that request was answered.
        """
        later = getattr(self._db, "release_later", None)
        holder = later(grant_id) if later is not None else None
        if holder is not None:
            return PendingWrap(material, holder, self.vault_id, grant_id)
        key = self._db.release.new(grant_id)  # type: ignore[attr-defined]
        return wrap(material, key, self.vault_id, grant_id)

    def unwrap(self, material: bytes, grant_id: str) -> bytes:
        """Redeem: the server checks the grant and the logged use, then gives the key."""
        key = self._db.release.redeem(grant_id)  # type: ignore[attr-defined]
        return unwrap(material, key, self.vault_id, grant_id)

    def writer(self) -> KeyProvider:
        """See :meth:`Keyring.writer`; releases and redemptions guarded."""
        return _guard(super().writer(), self)

    def officer(self) -> KeyProvider:
        """See :meth:`Keyring.officer`; releases and redemptions guarded."""
        return _guard(super().officer(), self)

    def officer_to_self(self) -> KeyProvider:
        """See :meth:`Keyring.officer_to_self`: not wrapped (nothing to release to another)."""
        return super().officer()
