"""The contract every key provider implements (LocalProvider, VaultProvider), and the
capabilities some of them add.

A provider wraps the per-field data keys (DEKs) of records and, for an officer,
releases exactly the approved DEKs to a requester. It knows nothing of records,
SQL or the audit log: the ``vault`` package passes it ids, versions and opaque
wrapped blobs, and stores what it returns.

A provider instance acts with the credentials it was built with: a staff
member's provider can wrap but not release; an officer's can release.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from childvault.keys._identity import Identity, PublicIdentity


@dataclass(frozen=True)
class FieldKey:
    """The data key of one stored field value, and the field version it encrypts."""

    version: int
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class RecordKeys:
    """All current field keys of one record version, as handed to :meth:`KeyProvider.wrap`."""

    record_id: str
    version: int
    fields: Mapping[str, FieldKey]
    #: True when the record is new (a Vault provider then creates its salt once).
    new: bool = True


@dataclass(frozen=True)
class WrappedRecord:
    """What the store holds for a record: its version and the provider's opaque blob."""

    record_id: str
    version: int
    blob: bytes


@dataclass(frozen=True)
class Selection:
    """The fields of one wrapped record that an approval releases."""

    record: WrappedRecord
    fields: Sequence[str]


#: record id -> field name -> key, as redeemed from a grant.
ReleasedKeys = dict[str, dict[str, FieldKey]]


@runtime_checkable
class KeyProvider(Protocol):
    """Operations the vault needs from a key provider.

    Implementations must fail closed: any doubt about a blob or a grant raises
    :class:`keys.DecryptionFailed` or :class:`keys.ApprovalInvalid`, never
    returns partial key material.
    """

    #: ``"local"`` or ``"vault"``.
    kind: str

    def wrap(self, records: Sequence[RecordKeys]) -> list[bytes]:
        """Wrap each record's field keys; return one blob per record, in order."""
        ...

    def release(
        self,
        selections: Sequence[Selection],
        requester: PublicIdentity,
        grant_id: str,
        *,
        wrap_ttl: int | str | None = None,
    ) -> bytes:
        """Officer only: key material for exactly ``selections``, sealed to ``requester``.

        ``wrap_ttl`` (seconds) is how long the material stays redeemable where
        the provider can enforce it (Vault response wrapping); others ignore it.
        """
        ...

    def redeem(self, material: bytes, requester: Identity, grant_id: str) -> ReleasedKeys:
        """Requester: open the material of grant ``grant_id`` and return the released keys."""
        ...

    def replace(
        self, record: WrappedRecord, new_version: int, changes: Mapping[str, FieldKey]
    ) -> bytes:
        """Officer only: a new blob for ``new_version`` with ``changes`` replacing old keys.

        The old keys of the changed fields are not carried over, so dropping the
        old blob destroys them.
        """
        ...

    def shred(self, record_ids: Sequence[str]) -> None:
        """Destroy whatever key material outside the database these records depend on."""
        ...


# -- capabilities ------------------------------------------------------------
#
# What a provider can do beyond :class:`KeyProvider`. The vault asks these
# (``isinstance`` on an instance, ``issubclass`` on a provider class before one
# is built), never the provider's name. Each protocol has only methods, so
# ``issubclass`` works on it.


@runtime_checkable
class BlindIndexer(Protocol):
    """Computes blind-index MACs itself (the key never leaves the provider).

    Providers without it leave blind indexing to the vault's own index key.
    """

    def hmac(self, field: str, values: Sequence[bytes]) -> list[bytes]:
        """Full-length keyed MACs of ``values`` for ``field``, in order."""
        ...


@runtime_checkable
class Diagnosable(Protocol):
    """Reports its own health (reachability, mounts, the caller's capabilities)."""

    def diagnose(self) -> dict[str, Any]:
        """A JSON-friendly description of the provider's state, for ``doctor``."""
        ...


@runtime_checkable
class ServerSideRotation(Protocol):
    """Rotates the key that wraps record keys inside the provider, no plaintext outside.

    Rotation is: :meth:`rotate_key`, then :meth:`rekey` every blob older than
    the new version, then :meth:`finish_rotation`.
    """

    def rotate_key(self) -> int:
        """Create a new wrapping key version; return it."""
        ...

    def blob_key_version(self, blob: bytes) -> int:
        """The wrapping key version a stored blob was written with."""
        ...

    def rekey(self, records: Sequence[WrappedRecord]) -> list[bytes]:
        """The blobs rewrapped under the latest key version, in order."""
        ...

    def finish_rotation(self, *, trim: bool = False) -> int:
        """Retire older key versions once no blob uses them; return the minimum kept."""
        ...


@runtime_checkable
class ExternalKeyMaterial(Protocol):
    """Keeps per-record key material outside the database, behind a connection.

    Deleting a record's rows does not destroy that material: :meth:`shred`
    must be called after the rows are gone (and is retried until it
    succeeds), and the connection is closed with the session.
    """

    def shred(self, record_ids: Sequence[str]) -> None:
        """Destroy the key material outside the database of these records."""
        ...

    def close(self) -> None:
        """Close the connection to where the material lives."""
        ...


@runtime_checkable
class CustodianSealing(Protocol):
    """The local custodian behaviour: record keys sealed to a custodian key pair.

    The key material is the sealed box in the record's row (deleting the row
    is the shred); the custodian secret lives in officers' key slots, so an
    officer must hold it to release; rotation reseals every box to a new
    custodian generation; release material is a sealed box the requester can
    open again for every use of a grant.
    """

    def holds(self, generation: int) -> bool:
        """Whether the custodian secret of ``generation`` is unlocked here."""
        ...

    def retarget(self, generation: int, public_key: bytes) -> CustodianSealing:
        """The same unlocked custodians, sealing new blobs to ``generation``."""
        ...

    def open(self, record: WrappedRecord) -> dict[str, FieldKey]:
        """The field keys in a record's box (officers only)."""
        ...
