"""The audit log: checkpoints, verification, proofs, Vault-mode reconciliation, backup
and rebaseline (the :class:`AuditService` and its neighbours).

One facet of :class:`~._facade.Vault`, kept apart so each area of the API reads on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from childvault._i18n import _t
from childvault.vault import _check as check
from childvault.vault._audit import VerifyReport
from childvault.vault._facade_base import VaultBase

if TYPE_CHECKING:
    # The result types are imported where a method builds one (issue 18: lazy loading).
    from childvault.vault._results import (
        AuditReconciliation,
        BackupReport,
        RebaselineReport,
    )


class AuditFacet(VaultBase):
    """The audit-log methods of :class:`Vault`: checkpoints, verification, proofs, backup."""

    def checkpoint(self, *, now: datetime | None = None) -> str:
        """Officer or admin: sign a checkpoint of the whole log and witness it."""
        w = self._live("Vault.checkpoint")
        check.datetime_arg(w, "now", now)
        return self._audit.checkpoint(now=now)

    def backup(self, out: Path | str) -> BackupReport:
        """Officer or admin: a consistent copy of this vault in the new directory ``out``
        (database by the online backup API, key slots, config, schema, identities,
        witness); safe while other commands run. See docs/operators.md."""
        from childvault.vault._backup import backup

        w = self._live("Vault.backup")
        out = check.path_arg(w, "out", out)
        self._session.require(
            ("officer", "admin"),
            "vault.backup",
            self._session.now(None),
            _t("backing up the vault"),
        )
        from childvault.vault._results import BackupReport

        return BackupReport.from_json(backup(self._session, Path(out)))

    def rebaseline(self, *, now: datetime | None = None) -> RebaselineReport:
        """Officer: after restoring a backup, append a signed restore note to the
        witness (which entries were lost) so approvals resume; see docs/operators.md."""
        w = self._live("Vault.rebaseline")
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import RebaselineReport

        return RebaselineReport.from_json(self._audit.rebaseline(now=now))

    def verify_audit(
        self, *, progress: Callable[[int], None] | None = None, full: bool = False
    ) -> VerifyReport:
        """Verify the whole log against its stored and witnessed checkpoints, then
        check that every registered user and custodian key was put there by a
        logged operation (an insider editing those tables directly is caught).

        Actor signatures and signed statements already verified by this user
        (their own signed state, bound to the chain's hash) are not checked
        again unless ``full`` is true; the chain and checkpoints always are."""
        w = self._live("Vault.verify_audit")
        check.callable_arg(w, "progress", progress)
        check.bool_arg(w, "full", full)
        return self._audit.verify_audit(progress=progress, full=full)

    def verify_cosignatures(self, witness_keys: Sequence[str]) -> dict[str, int]:
        """Check the HTTP witnesses' cosignatures on the witness file's checkpoints.

        ``witness_keys`` are the witnesses' verifier keys, from the auditor
        (out of band: keys stored in the vault could be swapped by an
        insider). Every note must verify (a forged cosignature fails) and at
        least one must be cosigned by every given witness. Returns
        ``{"cosigned": notes cosigned by all, "cosigned_size": largest tree}``.
        Run :meth:`verify_audit` too: it checks the notes against the log.
        """
        w = self._live("Vault.verify_cosignatures")
        keys = check.str_seq(w, "witness_keys", witness_keys)
        return self._audit.verify_cosignatures(keys)

    def audit_entries(self, *, record: str | None = None) -> Iterator[dict[str, Any]]:
        """Officer or admin: the log entries (optionally about one record), with hashes."""
        w = self._live("Vault.audit_entries")
        check.str_arg(w, "record", record, optional=True)
        return self._audit.audit_entries(record=record)

    def prove_entry(self, seq: int, *, now: datetime | None = None) -> dict[str, Any]:
        """Officer or admin: an inclusion proof of log entry ``seq`` (``audit prove``).

        If the latest checkpoint does not cover the entry yet, a new one is
        signed (and witnessed) first. The result is a self-contained document
        (format :data:`ENTRY_PROOF_FORMAT`) that :func:`verify_entry_proof`
        checks without the database: the entry as its exact canonical JSON
        text, its leaf hash, the RFC 6962 audit path and the signed checkpoint.
        """
        w = self._live("Vault.prove_entry")
        check.int_arg(w, "seq", seq)
        check.datetime_arg(w, "now", now)
        return self._reports.prove_entry(seq, now=now)

    def reconcile_vault_audit(
        self, vault_audit: Path, *, device: str = "childvault", now: datetime | None = None
    ) -> AuditReconciliation:
        """Officer or admin, Vault mode: the Transit decrypts in Vault's file audit
        log that no childvault approval accounts for (``audit reconcile``)."""
        w = self._live("Vault.reconcile_vault_audit")
        vault_audit = check.path_arg(w, "vault_audit", vault_audit)
        check.str_arg(w, "device", device)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import AuditReconciliation

        return AuditReconciliation.from_json(
            self._reconcile.reconcile(vault_audit, device=device, now=now)
        )

    def signer_vkeys(self) -> list[str]:
        """Verifier keys (signed-note vkey form) of every checkpoint signer."""
        self._live("Vault.signer_vkeys")
        return self._audit.signer_vkeys()
