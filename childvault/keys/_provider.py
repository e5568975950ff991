"""The contract every key provider implements (LocalProvider, VaultProvider).

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
from typing import Protocol, runtime_checkable

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
