"""A record's life after it is added: corrections, consent, deletion, retention,
decommissioning, key rotation and Vault-mode salt collection.

One facet of :class:`~._facade.Vault`, kept apart so each area of the API reads on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from childvault.vault import _check as check
from childvault.vault._consent import Consent
from childvault.vault._facade_base import VaultBase
from childvault.vault._svc_rights import RightsService

if TYPE_CHECKING:
    # The result types are imported where a method builds one (issue 18: lazy loading).
    from childvault.vault._results import (
        DecommissionContacts,
        DecommissionCosign,
        DecommissionReport,
        GcReport,
        RotationReport,
        SweepReport,
    )


class LifecycleFacet(VaultBase):
    """The lifecycle methods of :class:`Vault`: correct, consent, delete, retain, rotate."""

    def correct(
        self,
        record_id: str,
        field: str,
        value: str,
        *,
        rights_request: str | None = None,
        now: datetime | None = None,
    ) -> int:
        """Officer: store a corrected value as a new field version (P-19).

        The new value gets a new key; the record's wrapped keys are replaced so
        the old version's key is gone (local: resealed without it; Vault: its
        salt destroyed). The log records that a correction happened, never the
        values. Returns the new field version. ``rights_request``: the open
        correction request (``rights_open``) this answers; it is annotated (and
        so no longer overdue), and stays open for an officer to close.
        """
        w = self._live("Vault.correct")
        check.str_arg(w, "record_id", record_id)
        check.str_arg(w, "field", field)
        check.str_arg(w, "value", value, data=True)
        check.str_arg(w, "rights_request", rights_request, optional=True)
        check.datetime_arg(w, "now", now)
        rights = RightsService(self._session)
        if rights_request is not None:
            rights.check_link(rights_request, "record.correct", record_id)
        version = self._lifecycle.correct(record_id, field, value, now=now)
        if rights_request is not None:
            rights.link(rights_request, "record.correct", record_id, now=now)
        return version

    def delete(
        self,
        record_id: str,
        reason: str,
        *,
        category: str = "request",
        rights_request: str | None = None,
        now: datetime | None = None,
    ) -> None:
        """Officer or admin: crypto-shred a record, leaving a tombstone (P-20).

        The rows (sealed values, wrapped keys, index tags) are removed and the
        tombstone and log entry written in one transaction; then the provider
        destroys what it holds outside the database (Vault: the record's salts).
        ``reason`` stays in the tombstone only; the log gets the ``category``.
        ``rights_request``: the open deletion request this answers; it is
        annotated and closed as ``done``.
        """
        w = self._live("Vault.delete")
        check.str_arg(w, "record_id", record_id)
        check.str_arg(w, "reason", reason)
        check.str_arg(w, "category", category)
        check.str_arg(w, "rights_request", rights_request, optional=True)
        check.datetime_arg(w, "now", now)
        rights = RightsService(self._session)
        if rights_request is not None:
            rights.check_link(rights_request, "record.delete", record_id)
        self._lifecycle.delete(record_id, reason, category=category, now=now)
        if rights_request is not None:
            rights.link(rights_request, "record.delete", record_id, now=now)

    def withdraw_consent(
        self, record_id: str, *, reason: str = "consent withdrawn", now: datetime | None = None
    ) -> None:
        """Officer or admin: consent withdrawn, so the record is crypto-shredded (P-20)."""
        w = self._live("Vault.withdraw_consent")
        check.str_arg(w, "record_id", record_id)
        check.str_arg(w, "reason", reason)
        check.datetime_arg(w, "now", now)
        self._lifecycle.withdraw_consent(record_id, reason=reason, now=now)

    def update_consent(
        self, record_id: str, consent: Consent, *, now: datetime | None = None
    ) -> None:
        """Officer: record a new consent (more purposes, or a new notice version).

        The age rule (M-12) is checked against the record's date of birth, which
        the officer's process decrypts for that purpose only; the check and the
        consent change are logged.
        """
        w = self._live("Vault.update_consent")
        check.str_arg(w, "record_id", record_id)
        check.consent_arg(w, "consent", consent)
        check.datetime_arg(w, "now", now)
        self._lifecycle.update_consent(record_id, consent, now=now)

    def consent_of(self, record_id: str) -> Consent:
        """The record's current consent."""
        w = self._live("Vault.consent_of")
        check.str_arg(w, "record_id", record_id)
        return self._lifecycle.consent_of(record_id)

    def retention_sweep(self, *, dry_run: bool = False, now: datetime | None = None) -> SweepReport:
        """Admin or officer: crypto-shred every record past its retention date (P-12).

        Also completes deletions whose provider-side destruction was interrupted.
        """
        w = self._live("Vault.retention_sweep")
        check.bool_arg(w, "dry_run", dry_run)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import SweepReport

        return SweepReport.from_json(self._lifecycle.retention_sweep(dry_run=dry_run, now=now))

    def decommission(self, *, confirm: bool, now: datetime | None = None) -> DecommissionReport:
        """Admin: stop collection, shred every record, sign a final checkpoint (P-23).

        Writes ``decommission-report.json`` into the home (no child data).
        """
        w = self._live("Vault.decommission")
        check.bool_arg(w, "confirm", confirm)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import DecommissionReport

        return DecommissionReport.from_json(self._lifecycle.decommission(confirm=confirm, now=now))

    def cosign_decommission(
        self, contacts: Path | str, *, now: datetime | None = None
    ) -> DecommissionCosign:
        """Officer: co-sign decommissioning, first writing the guardian contact list
        (sealed to this officer) to ``contacts`` for the P-23 notice."""
        w = self._live("Vault.cosign_decommission")
        path = check.path_arg(w, "contacts", contacts)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import DecommissionCosign

        return DecommissionCosign.from_json(self._lifecycle.cosign_decommission(path, now=now))

    def open_decommission_contacts(
        self, path: Path | str, *, out: Path | str | None = None, now: datetime | None = None
    ) -> DecommissionContacts:
        """Officer who co-signed: open the guardian contact list of a decommissioning.

        ``path`` must be the very file the co-signature this decommissioning
        counts logged (this vault, its SHA-256, sealed to the acting officer);
        anything else is refused with one error, logged. Works after the vault
        is decommissioned (the list exists for the P-23 notice). The opening is
        logged (``decommission.read_contacts``) before anything is shown or
        written; ``out``: also write the rows as CSV there (mode 0600, never
        over an existing file).
        """
        w = self._live("Vault.open_decommission_contacts")
        source = check.path_arg(w, "path", path)
        target = check.opt_path(w, "out", out)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import DecommissionContacts

        return DecommissionContacts.from_json(
            self._lifecycle.open_decommission_contacts(source, out=target, now=now)
        )

    def rotate_keys(
        self,
        *,
        progress: Callable[[int, int], None] | None = None,
        now: datetime | None = None,
        trim: bool = False,
        rekey: bool = False,
    ) -> RotationReport:
        """Rotate the key that wraps every record's keys; resumable.

        Local provider (an officer): a new custodian key pair is sealed to every
        officer, every record box is resealed to it, then the old pair is
        destroyed, so backups taken before become unreadable. Vault provider
        (an admin): the Transit key is rotated, every wrapped key is rewrapped
        inside Vault (no plaintext), then older key versions are retired, and
        with ``trim`` deleted from Vault (docs/vault.md, key rotation).
        ``rekey`` (local provider): then re-encrypt every live field under a new
        field key, so earlier approval tokens open nothing stored from then on.
        """
        w = self._live("Vault.rotate_keys")
        check.callable_arg(w, "progress", progress)
        check.datetime_arg(w, "now", now)
        check.bool_arg(w, "trim", trim)
        check.bool_arg(w, "rekey", rekey)
        report = self._rotation.rotate_keys(progress=progress, now=now, trim=trim, rekey=rekey)
        from childvault.vault._results import RotationReport

        return RotationReport.from_json(report)

    def vault_gc(
        self, *, grace: timedelta, destroy: bool = False, now: datetime | None = None
    ) -> GcReport:
        """Admin, Vault mode: the salt documents in Vault that no record (live or
        deleted) accounts for and that are older than ``grace``; with ``destroy``
        they are destroyed like shredded salts and the destruction is logged
        (``vault gc``; docs/vault.md)."""
        w = self._live("Vault.vault_gc")
        check.timedelta_arg(w, "grace", grace, optional=False)
        check.bool_arg(w, "destroy", destroy)
        check.datetime_arg(w, "now", now)
        # Imported here: only Vault-mode administration needs it.
        from childvault.vault._results import GcReport
        from childvault.vault._svc_vaultgc import VaultGcService

        return GcReport.from_json(
            VaultGcService(self._session).gc(grace=grace, destroy=destroy, now=now)
        )
