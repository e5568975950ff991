"""``childvault audit reconcile``: every Vault decrypt accounted for by our log.

Vault mode only. An officer's Vault token may decrypt (response-wrapped) any
record directly, around childvault (docs/vault.md, section 4). Vault's audit
device records every such decrypt; this service reads that file and reports
each Transit decrypt on the vault's key whose wrapping accessor was not
recorded by a childvault approval (``request.approve``, ``vault_accessors``),
with who, when and which path.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from childvault._i18n import _t
from childvault.keys import UsageError
from childvault.vault import _audit
from childvault.vault._session import Session
from childvault.vault._svc_access_approvals import officer_approval_accessors

__all__ = ["ReconcileService"]


@runtime_checkable
class _ReadsVaultAudit(Protocol):
    """A provider that can compare Vault's audit log with recorded accessors."""

    def reconcile_audit_log(
        self, audit_file: Path, device: str, accessors: Sequence[str]
    ) -> tuple[int, list[dict[str, Any]]]: ...


class ReconcileService:
    """Matches Vault's audit log to childvault's log (officer or admin)."""

    def __init__(self, session: Session) -> None:
        """Operate on ``session``."""
        self.s = session

    def recorded_accessors(self) -> list[str]:
        """Every wrapping accessor childvault logged at an approval.

        The rule ``revoke`` uses (:func:`officer_approval_accessors`): only an
        officer's approval entry for a grant that exists counts. Any user may
        log a ``request.approve`` entry naming any accessors in their own name;
        taking theirs would let an insider make their own direct decrypts look
        approved. Read after ``require`` verified the log.
        """
        state = self.s.trust()
        out: list[str] = []
        for _, entry, _digest in self.s.db.audit.entries():
            obj = _audit.decode_entry(entry)
            if obj.get("action") != "request.approve":
                continue
            accessors = officer_approval_accessors(state, obj)
            grant = obj.get("grant")
            if accessors is None or not isinstance(grant, str):
                continue
            if self.s.db.access.grant(grant) is None:
                continue
            out.extend(a for a in accessors if a)
        return out

    def reconcile(
        self, vault_audit: Path, *, device: str = "childvault", now: datetime | None = None
    ) -> dict[str, Any]:
        """Report Transit decrypts in ``vault_audit`` that no childvault approval explains.

        ``device`` is the audit device's path in Vault (``childvault`` for the
        stanza ``vault setup`` prints); its HMAC key is used to compare. The
        report's ``unmatched`` entries name who (display name, entity, AppRole
        role, policies), when and which path; ``ok`` is False if there is any.
        """
        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "audit.read", moment, _t("reconciling the audit log"))
        provider = self.s.keys.shared() if not self.s.keys.custodial else None
        if not isinstance(provider, _ReadsVaultAudit):
            raise UsageError(
                _t("audit reconcile is for vaults that use the Vault/OpenBao provider")
            )
        accessors = self.recorded_accessors()
        seen, unmatched = provider.reconcile_audit_log(vault_audit, device, accessors)
        return {
            "ok": not unmatched,
            "vault_audit": str(vault_audit),
            "decrypts": seen,
            "matched": seen - len(unmatched),
            "unmatched": unmatched,
        }
