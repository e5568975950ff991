"""``childvault vault gc``: destroy salt documents that no record accounts for.

Vault mode only. Adding records writes their salt documents to Vault first
and their rows to the database after; a batch that fails in between (a lost
connection, a refused import, a killed process) leaves salts in Vault with no
row. They hold no value, but they are key material for ids that will never
be used, and nothing else ever removes them. This service lists them (dry
run) and, when told, destroys them the way shredding does (every version
destroyed, a tombstone kept), and logs what it destroyed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from childvault._i18n import _t
from childvault.keys import UsageError
from childvault.vault._audit import Event
from childvault.vault._record_trust import Head, record_heads
from childvault.vault._session import Session
from childvault.vault._time import iso

__all__ = ["VaultGcService"]


@runtime_checkable
class _CollectsOrphanSalts(Protocol):
    """A provider that can list and destroy salt documents without records."""

    def orphan_salts(
        self, in_database: Callable[[str], bool], older_than: datetime
    ) -> list[dict[str, Any]]: ...

    def destroy_orphan_salts(self, record_ids: Sequence[str], when: str) -> int: ...

    def revived_salts(self, shredded: Callable[[str], bool]) -> list[dict[str, Any]]: ...


class VaultGcService:
    """Finds and destroys orphaned Vault salt documents (admin)."""

    def __init__(self, session: Session) -> None:
        """Operate on ``session``."""
        self.s = session
        self._heads: Mapping[str, Head] = {}

    def _load_heads(self) -> None:
        """What the verified log says of each record (looked up per id, lazily).

        The tombstone rows are any user's to delete; an insider who deleted one
        would otherwise hide a revived salt from this check (and make it look
        like a failed batch's orphan).
        """
        found = record_heads(self.s)
        self._heads = found[1].heads if found is not None else {}

    def _logged_deletion(self, record_id: str) -> bool:
        """Whether the verified log holds an officer's or admin's deletion of it."""
        head = self._heads.get(record_id)
        return head is not None and head.deleted is not None

    def _in_database(self, record_id: str) -> bool:
        records = self.s.db.records
        return (
            records.get(record_id) is not None
            or records.tombstone(record_id) is not None
            or self._logged_deletion(record_id)
        )

    def _shredded(self, record_id: str) -> bool:
        stone = self.s.db.records.tombstone(record_id)
        if stone is None:
            # Deleted by the log but no tombstone row: the row was removed since.
            return self._logged_deletion(record_id)
        # A tombstone whose key is not destroyed yet is a pending shred (finished by
        # `delete` or the next retention sweep), not a revival.
        return bool(stone[3]) and (
            self.s.db.records.get(record_id) is None or self._logged_deletion(record_id)
        )

    def gc(
        self,
        *,
        grace: timedelta,
        destroy: bool = False,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """List (and with ``destroy``, destroy) salts with no record, older than ``grace``.

        The age is measured against Vault's own creation time, so the cutoff
        is wall-clock time (``now`` overrides it), not the vault's clock.
        Every candidate is checked against the database again just before it
        is destroyed. Returns ``ok``, ``grace_seconds``, ``destroy``,
        ``orphans`` (``record_id``, ``created``, ``versions``) and
        ``destroyed`` (how many), and ``revived``: record ids the database
        or the verified log says were shredded whose salt has a live version again or lost its
        ``shredded`` mark (``ok`` is False then; nothing is changed for them).
        """
        moment = self.s.now(now)
        self.s.require(("admin",), "vault.gc", moment, _t("collecting orphaned Vault salts"))
        if grace < timedelta(0):
            raise UsageError(_t("the grace period cannot be negative"))
        provider = self.s.keys.shared() if not self.s.keys.custodial else None
        if not isinstance(provider, _CollectsOrphanSalts):
            raise UsageError(_t("vault gc is for vaults that use the Vault/OpenBao provider"))
        self._load_heads()
        cutoff = (now if now is not None else datetime.now(UTC)) - grace
        orphans = provider.orphan_salts(self._in_database, cutoff)
        destroyed = 0
        if destroy and orphans:
            # A record written since the listing keeps its salt.
            ids = [o["record_id"] for o in orphans if not self._in_database(o["record_id"])]
            destroyed = provider.destroy_orphan_salts(ids, iso(moment))
            detail = {"salts_destroyed": ids, "grace_seconds": int(grace.total_seconds())}
            self.s.log([Event(self.s.user, "vault.gc", detail=detail)], moment)
        revived = provider.revived_salts(self._shredded)
        return {
            "ok": not revived,
            "grace_seconds": int(grace.total_seconds()),
            "destroy": destroy,
            "orphans": orphans,
            "destroyed": destroyed,
            "revived": revived,
        }
