"""The backend seam: what the vault needs from wherever its rows live.

A :class:`Backend` is a transaction plus narrow repositories (users,
custodians, records, access, audit log, checkpoints, settings). Every method
takes and returns plain Python values and the row dataclasses below; no SQL
leaves an implementation. The SQLCipher store (:mod:`childvault.vault._sqlcipher`)
is the first implementation; a PostgreSQL store implements the same protocols
(docs/architecture.md).

Transactions: :meth:`Backend.transaction` is all or nothing and serialises
writers (one linear audit chain); a nested use joins the outer transaction.
Every write method must be called inside one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# ---------------------------------------------------------------------- rows


@dataclass(frozen=True)
class UserRow:
    """A registered user: public keys and roles (never secrets)."""

    name: str
    roles: tuple[str, ...]
    enc_key: bytes
    sign_key: bytes
    created_at: str
    created_by: str


@dataclass(frozen=True)
class RecordRow:
    """Clear-text bookkeeping of a record (no child data)."""

    id: str
    type: str
    version: int
    created_at: str
    created_by: str
    updated_at: str
    consent: dict[str, Any]
    retain_until: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class NewRecord:
    """Everything inserted for one new record, in one call."""

    row: RecordRow
    fields: Sequence[tuple[str, int, bytes]]  # (name, field version, sealed value)
    blob: bytes
    source: str | None = None
    source_row: int | None = None


@dataclass(frozen=True)
class RequestRow:
    """An access request and its decision."""

    id: str
    requester: str
    records: tuple[str, ...]
    fields: tuple[str, ...]
    purpose: str
    reason: str
    created_at: str
    status: str
    decided_by: str | None = None
    decided_at: str | None = None
    decision_reason: str | None = None


@dataclass(frozen=True)
class GrantRow:
    """Server-side state of an issued approval token."""

    id: str
    request_id: str
    officer: str
    requester: str
    issued_at: str
    expires_at: str
    max_uses: int
    uses: int
    revoked_at: str | None
    revoked_by: str | None
    cache: bytes | None


@dataclass(frozen=True)
class CheckpointRow:
    """A stored signed checkpoint."""

    id: int
    size: int
    root: bytes
    note: str
    signer: str
    created_at: str


#: (seq, entry bytes, entry hash) of one audit log entry.
AuditRow = tuple[int, bytes, bytes]

# -------------------------------------------------------------- repositories


class MetaRepo(Protocol):
    """The vault's settings table (limits, ids, notice register)."""

    def get(self, key: str) -> str | None:
        """A value, or None."""
        ...

    def set(self, key: str, value: str) -> None:
        """Set a value."""
        ...

    def delete(self, key: str) -> None:
        """Remove a value."""
        ...

    def replace(self, key: str, old: str, new: str) -> bool:
        """Set ``key`` to ``new`` only if it still holds ``old`` (compare-and-set);
        whether it did. Used by the server on its own rows (not a remote method)."""
        ...


class UserRepo(Protocol):
    """Registered users (public keys and roles)."""

    def add(self, user: UserRow) -> None:
        """Register a user."""
        ...

    def get(self, name: str) -> UserRow | None:
        """A registered user, or None."""
        ...

    def all(self) -> list[UserRow]:
        """Every registered user, by name."""
        ...

    def set_keys(self, name: str, enc_key: bytes, sign_key: bytes) -> None:
        """Replace a user's public keys (``keys renew``, after the signed statement)."""
        ...


class CustodianRepo(Protocol):
    """Public halves of the local provider's custodian keys and who holds them."""

    def add(self, generation: int, public_key: bytes, state: str, at: str) -> None:
        """Register a custodian generation (``current``, ``pending`` or ``retired``)."""
        ...

    def set_state(self, generation: int, state: str) -> None:
        """Change a generation's state."""
        ...

    def all(self) -> list[tuple[int, bytes, str]]:
        """(generation, public key, state) of every generation, oldest first."""
        ...

    def add_holder(self, generation: int, officer: str) -> None:
        """Note that ``officer``'s key slot holds that generation's secret."""
        ...

    def holders(self, generation: int) -> list[str]:
        """Officers holding the secret of ``generation``."""
        ...

    def delete(self, generation: int) -> None:
        """Forget a generation and its holders."""
        ...


class RecordRepo(Protocol):
    """Records with their sealed fields, key blobs, blind index, tombstones and imports."""

    def insert(self, records: Sequence[NewRecord]) -> None:
        """Insert records with their sealed fields and key blobs."""
        ...

    def get(self, record_id: str) -> RecordRow | None:
        """A live record's bookkeeping, or None."""
        ...

    def page(self, *, after: str = "", limit: int = 1000) -> list[RecordRow]:
        """A page of records ordered by id, after ``after``."""
        ...

    def count(self) -> int:
        """How many live records there are."""
        ...

    def due(self, day: str, *, limit: int = 1000) -> list[str]:
        """Ids of records whose retention date is before ``day`` (ISO date)."""
        ...

    def update(
        self, record_id: str, *, version: int, updated_at: str, consent: dict[str, Any] | None
    ) -> None:
        """Bump a record's version (and optionally replace its consent)."""
        ...

    def fields(self, record_id: str, names: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        """Sealed values of the named fields present: name -> (version, sealed)."""
        ...

    def field_names(self, record_id: str) -> list[str]:
        """Names of the fields stored for a record."""
        ...

    def field_names_between(self, first: str, last: str) -> dict[str, list[str]]:
        """Names of the stored fields of every record whose id is in ``[first, last]``
        (one query for a page of :meth:`page`, instead of one a record)."""
        ...

    def put_field(self, record_id: str, name: str, version: int, sealed: bytes) -> None:
        """Store (or replace) one sealed field value."""
        ...

    def keyblob(self, record_id: str) -> tuple[int, bytes] | None:
        """(record version, wrapped blob), or None."""
        ...

    def replace_keyblob(
        self, record_id: str, old_version: int, new_version: int, blob: bytes
    ) -> bool:
        """Move a blob to ``new_version`` only if the record is still at ``old_version``."""
        ...

    def put_keyblob_if_version(self, record_id: str, version: int, blob: bytes) -> bool:
        """Replace a blob only if the record is still at ``version``."""
        ...

    def keyblob_page(self, *, after: str = "", limit: int = 500) -> list[tuple[str, int, bytes]]:
        """A page of (record id, version, blob) ordered by id."""
        ...

    def delete(self, record_id: str, *, at: str, by: str, reason: str) -> None:
        """Remove a record's rows (fields, keys, index) and leave a tombstone."""
        ...

    def tombstone(self, record_id: str) -> tuple[str, str, str, bool] | None:
        """(deleted_at, deleted_by, reason, key destroyed?) of a deleted record, or None."""
        ...

    def mark_key_destroyed(self, record_ids: Sequence[str]) -> None:
        """Note that the provider destroyed these records' key material."""
        ...

    def pending_shreds(self, *, limit: int = 1000) -> list[str]:
        """Deleted records whose external key material is not yet confirmed destroyed."""
        ...

    def add_index_tags(self, rows: Sequence[tuple[str, bytes, str]]) -> None:
        """Add (field, tag, record id) rows to the blind index."""
        ...

    def drop_index_tags(self, record_id: str, field: str) -> None:
        """Remove a record's tags for one field."""
        ...

    def find_by_tag(self, field: str, tag: bytes) -> list[str]:
        """Record ids whose tag for ``field`` equals ``tag`` (candidates)."""
        ...

    def find_by_tags(self, field: str, tags: Sequence[bytes]) -> list[list[str]]:
        """:meth:`find_by_tag` of each of ``tags``, in order (one list per tag)."""
        ...

    def get_many(self, record_ids: Sequence[str]) -> dict[str, RecordRow]:
        """:meth:`get` of each of ``record_ids``: id -> row (missing records left out)."""
        ...

    def keyblob_many(self, record_ids: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        """:meth:`keyblob` of each of ``record_ids`` (records without one left out)."""
        ...

    def fields_many(
        self, record_ids: Sequence[str], names: Sequence[str] | None = None
    ) -> dict[str, dict[str, tuple[int, bytes]]]:
        """:meth:`fields` of each of ``record_ids`` (all stored fields if ``names`` is
        None); every id asked for has an entry."""
        ...

    def import_progress(self, source: str) -> tuple[int, bool]:
        """(rows already processed, finished?) of an import source."""
        ...

    def set_import_progress(
        self, source: str, rows_done: int, *, at: str, finished: bool = False
    ) -> None:
        """Record how far an import got (in the same transaction as its rows)."""
        ...


class AccessRepo(Protocol):
    """Access requests and the grants issued for them."""

    def add_request(self, req: RequestRow) -> None:
        """Store a new request."""
        ...

    def request(self, request_id: str) -> RequestRow | None:
        """A request, or None."""
        ...

    def requests(self, status: str | None = "pending") -> list[RequestRow]:
        """Requests with ``status`` (all if None), oldest first."""
        ...

    def decide(self, request_id: str, *, status: str, by: str, at: str, reason: str | None) -> bool:
        """Mark a pending request approved or denied; False if it was not pending."""
        ...

    def add_grant(self, grant: GrantRow) -> None:
        """Record an issued grant (no use consumed yet)."""
        ...

    def grant(self, grant_id: str) -> GrantRow | None:
        """A grant's state, or None."""
        ...

    def use_grant(self, grant_id: str) -> bool:
        """Consume one use if any is left and the grant is not revoked."""
        ...

    def refund_use(self, grant_id: str) -> bool:
        """Give back a use consumed by a read that failed before any plaintext."""
        ...

    def set_grant_cache(self, grant_id: str, cache: bytes | None) -> None:
        """Keep redeemed key material (sealed to the requester) for later uses."""
        ...

    def revoke_grant(self, grant_id: str, *, at: str, by: str) -> bool:
        """Revoke a grant; False if unknown or already revoked."""
        ...

    def live_grants_of(self, requester: str) -> list[str]:
        """Ids of ``requester``'s grants that are not revoked."""
        ...


class AuditRepo(Protocol):
    """The append-only audit log (rows as stored; :mod:`._audit` gives them meaning)."""

    def head(self) -> tuple[int, bytes | None]:
        """(next sequence number, hash of the last entry or None)."""
        ...

    #: The acting user's identity (anything with ``name`` and ``sign``), or None:
    #: :func:`childvault.vault._audit.append` signs entries in that user's name.
    signer: Any

    def append(self, rows: Sequence[tuple[int, bytes, bytes, bytes | None]]) -> None:
        """Append (seq, entry, hash, actor's signature or None) rows, inside a transaction."""
        ...

    def signatures(self, first: int, last: int) -> dict[int, bytes]:
        """The actors' signatures of entries ``first`` to ``last`` (inclusive) that have one."""
        ...

    def size(self) -> int:
        """Number of entries (by count, not by the last sequence number)."""
        ...

    def pages(self, start: int = 0, *, batch: int = 5000) -> Iterator[Sequence[Any]]:
        """Unconverted (seq, entry, hash) rows from ``start``, a page at a time.

        Unconverted so ``audit verify`` checks a page in bulk; :meth:`row`
        converts one with checked types (a column of another type raises there).
        """
        ...

    def row(self, raw: Any) -> AuditRow:
        """One row of :meth:`pages` as (seq, entry, hash)."""
        ...

    def entries(self, start: int = 0, *, batch: int = 5000) -> Iterator[AuditRow]:
        """Every entry from ``start`` in sequence order, streamed."""
        ...

    def entries_by_action(self, actions: Sequence[str]) -> list[bytes]:
        """Entries whose action is one of ``actions`` (an index; callers re-check)."""
        ...

    def entries_by_ref(
        self, actions: Sequence[str], *, request: str | None = None, grant: str | None = None
    ) -> list[bytes]:
        """Entries of ``actions`` naming ``request`` or ``grant`` (an index; callers re-check)."""
        ...

    def entries_with_recipient(self, actions: Sequence[str]) -> list[bytes]:
        """Entries of ``actions`` whose detail names a recipient (an index; callers re-check)."""
        ...

    def entry_at(self, seq: int) -> tuple[bytes, bytes] | None:
        """(entry, hash) at ``seq``, or None."""
        ...


class CheckpointRepo(Protocol):
    """Signed checkpoints of the audit log."""

    def add(
        self, size: int, root: bytes, note: str, signer: str, at: str, resume_state: bytes
    ) -> int:
        """Store a checkpoint with the Merkle state it was signed over; return its id."""
        ...

    def add_at_head(
        self, size: int, root: bytes, note: str, signer: str, at: str, resume_state: bytes
    ) -> int | None:
        """:meth:`add` only while the log has exactly ``size`` entries (compare-and-set);
        None, and nothing stored, if it has more or fewer."""
        ...

    def latest_by(self, signer: str) -> tuple[str, bytes] | None:
        """(note, resume state) of ``signer``'s checkpoint of the largest tree.

        Only claims: the caller verifies the note with its own key.
        """
        ...

    def all(self) -> list[CheckpointRow]:
        """Every stored checkpoint, by tree size then id."""
        ...

    def since(self, size: int) -> list[CheckpointRow]:
        """The stored checkpoints of trees of ``size`` entries or more (of :meth:`all`)."""
        ...

    def after(self, last_id: int) -> list[CheckpointRow]:
        """The stored checkpoints with an id above ``last_id``, by id."""
        ...

    def through(self, last_id: int) -> tuple[int, str | None]:
        """(count of the checkpoints with an id of ``last_id`` or less, the note of
        the one with id ``last_id`` or None)."""
        ...


class StatementRepo(Protocol):
    """Signed statement envelopes and each verifier's saved trust state (docs/trust.md).

    Storage only: every envelope and saved state is verified by the reader.
    """

    def add(self, seq: int, envelope: bytes) -> None:
        """Keep the envelope carried by the log entry at ``seq``."""
        ...

    def get(self, seq: int) -> bytes | None:
        """The envelope of the entry at ``seq``, or None."""
        ...

    def get_many(self, seqs: Sequence[int]) -> dict[int, bytes]:
        """``{seq: envelope}`` of those of ``seqs`` that have one (:meth:`get` of each)."""
        ...

    def save_state(self, verifier: str, size: int, head: bytes, state: bytes, sig: bytes) -> None:
        """Keep ``verifier``'s last verified trust state (replacing the older one)."""
        ...

    def saved_state(self, verifier: str) -> tuple[int, bytes, bytes, bytes] | None:
        """(size, head, state, sig) last saved by ``verifier``, or None."""
        ...


class Backend(Protocol):
    """Where a vault's rows live: one transaction scope and its repositories."""

    @property
    def meta(self) -> MetaRepo:
        """The settings table."""
        ...

    @property
    def users(self) -> UserRepo:
        """Registered users."""
        ...

    @property
    def custodians(self) -> CustodianRepo:
        """Custodian public keys (local provider)."""
        ...

    @property
    def records(self) -> RecordRepo:
        """Records and everything stored per record."""
        ...

    @property
    def access(self) -> AccessRepo:
        """Access requests and grants."""
        ...

    @property
    def audit(self) -> AuditRepo:
        """The audit log."""
        ...

    @property
    def checkpoints(self) -> CheckpointRepo:
        """Signed checkpoints of the audit log."""
        ...

    @property
    def statements(self) -> StatementRepo:
        """Signed statements and saved trust states."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """All or nothing, serialised with other writers; nested use joins the outer one."""
        ...

    def compact(self) -> None:
        """Best effort: drop freed pages from journals so deleted data does not linger."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class LogSource(Protocol):
    """What log verification reads: the entries, a page at a time, and the checkpoints."""

    def pages(self, start: int = 0, *, batch: int = 5000) -> Iterator[Sequence[Any]]:
        """Unconverted (seq, entry, hash) rows from ``start``, a page at a time."""
        ...

    def row(self, raw: Any) -> AuditRow:
        """One unconverted row as (seq, entry, hash), types checked."""
        ...

    def entry_at(self, seq: int) -> tuple[bytes, bytes] | None:
        """(entry, hash) at ``seq``, or None."""
        ...

    def checkpoints(self) -> list[CheckpointRow]:
        """Every stored checkpoint."""
        ...

    def checkpoints_from(self, size: int) -> list[CheckpointRow]:
        """The stored checkpoints of trees of ``size`` entries or more."""
        ...


@dataclass(frozen=True)
class BackendLog:
    """A :class:`LogSource` over any backend's audit and checkpoint repositories."""

    backend: Backend

    def pages(self, start: int = 0, *, batch: int = 5000) -> Iterator[Sequence[Any]]:
        """See :meth:`LogSource.pages`."""
        return self.backend.audit.pages(start, batch=batch)

    def row(self, raw: Any) -> AuditRow:
        """See :meth:`LogSource.row`."""
        return self.backend.audit.row(raw)

    def entry_at(self, seq: int) -> tuple[bytes, bytes] | None:
        """See :meth:`LogSource.entry_at`."""
        return self.backend.audit.entry_at(seq)

    def checkpoints(self) -> list[CheckpointRow]:
        """See :meth:`LogSource.checkpoints`."""
        return self.backend.checkpoints.all()

    def checkpoints_from(self, size: int) -> list[CheckpointRow]:
        """See :meth:`LogSource.checkpoints_from`."""
        return self.backend.checkpoints.since(size)


# ------------------------------------------------------------- shared keys


#: Prefix of the meta keys indexing a request's statutory basis.
REQUEST_BASIS_PREFIX = "request_basis:"


def request_basis_key(request_id: str) -> str:
    """Meta key indexing the statutory basis of a request (an index only: the
    request's logged ``request.create`` entry is the authority). One definition
    for the access service, the remote backend's read-ahead and the server's
    operation inputs, so they cannot drift apart."""
    return REQUEST_BASIS_PREFIX + request_id
