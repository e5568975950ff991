"""``childvault audit reconcile``: every Vault decrypt accounted for by our log.

Vault mode only. An officer's Vault token may decrypt (response-wrapped) any
record directly, around childvault (docs/vault.md, section 4). Vault's audit
device records every such decrypt; this service reads that file and reports
each Transit decrypt on the vault's key whose wrapping accessor was not
recorded by a childvault approval (``request.approve``, ``vault_accessors``),
with who, when and which path. It also reports each unwrap of such a
decrypt's wrapping token that childvault's log does not account for: a token
no approval recorded, one unwrapped under another person's AppRole role than
the grant's requester, or one with no logged read by the requester that found
it unused (an officer unwrapping an approved grant before or instead of the
requester).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from childvault._i18n import _t
from childvault.keys import UsageError
from childvault.vault import _audit
from childvault.vault._session import Session
from childvault.vault._svc_access_approvals import officer_approval_accessors

__all__ = ["ReconcileService"]

#: What a read logs when Vault found its wrapping token already unwrapped
#: (``_wrapping.py``: "wrapping token is used, expired or unknown").
_USED = "wrapping token is used"


@runtime_checkable
class _ReadsVaultAudit(Protocol):
    """A provider that can compare Vault's audit log with recorded accessors."""

    def reconcile_audit_log(
        self,
        audit_file: Path,
        device: str,
        accessors: Sequence[str],
        owners: Mapping[str, tuple[str, bool]] | None = None,
    ) -> dict[str, Any]: ...


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
        return list(self.recorded_owners())

    def recorded_owners(self) -> dict[str, tuple[str, bool]]:
        """Each recorded wrapping accessor (:meth:`recorded_accessors`) with its
        grant's requester and whether the requester's read of it was logged."""
        state = self.s.trust()
        out: dict[str, tuple[str, bool]] = {}
        for _, entry, _digest in self.s.db.audit.entries():
            obj = _audit.decode_entry(entry)
            if obj.get("action") != "request.approve":
                continue
            accessors = officer_approval_accessors(state, obj)
            grant_id = obj.get("grant")
            if accessors is None or not isinstance(grant_id, str):
                continue
            grant = self.s.db.access.grant(grant_id)
            if grant is None:
                continue
            owner = (grant.requester, self._read_logged(grant.id, grant.requester))
            out.update((a, owner) for a in accessors if a)
        return out

    def _read_logged(self, grant_id: str, requester: str) -> bool:
        """Whether ``requester`` read grant ``grant_id`` through childvault and the
        read found the wrapping tokens unused.

        A read logs ``grant.read`` ``ok`` before it unwraps; if the tokens were
        already unwrapped (by an officer, or the requester around childvault),
        the same read then logs ``error`` with the reason Vault gave, so that
        one does not account for the unwrap.
        """
        read = False
        for raw in self.s.db.audit.entries_by_ref(("grant.read",), grant=grant_id):
            doc = json.loads(raw)
            if (doc.get("action"), doc.get("grant"), doc.get("actor")) != (
                "grant.read",
                grant_id,
                requester,
            ):
                continue
            reason = str((doc.get("detail") or {}).get("reason") or "")
            if doc.get("outcome") == "error" and _USED in reason:
                return False
            read = read or doc.get("outcome") == "ok"
        return read

    def reconcile(
        self, vault_audit: Path, *, device: str = "childvault", now: datetime | None = None
    ) -> dict[str, Any]:
        """Report Transit decrypts and their unwraps in ``vault_audit`` that no
        childvault approval and read explains.

        ``device`` is the audit device's path in Vault (``childvault`` for the
        stanza ``vault setup`` prints); its HMAC key is used to compare. The
        report's ``unmatched`` (decrypts) and ``unmatched_unwraps`` entries name
        who (display name, entity, AppRole role, policies), when and which
        path; ``ok`` is False if there is any.
        """
        moment = self.s.now(now)
        self.s.require(("officer", "admin"), "audit.read", moment, _t("reconciling the audit log"))
        provider = self.s.keys.shared() if not self.s.keys.custodial else None
        if not isinstance(provider, _ReadsVaultAudit):
            raise UsageError(
                _t("audit reconcile is for vaults that use the Vault/OpenBao provider")
            )
        owners = self.recorded_owners()
        found = provider.reconcile_audit_log(vault_audit, device, list(owners), owners)
        unmatched, unwraps = found["unmatched"], found["unmatched_unwraps"]
        return {
            "ok": not unmatched and not unwraps,
            "vault_audit": str(vault_audit),
            "decrypts": found["decrypts"],
            "matched": found["decrypts"] - len(unmatched),
            "unmatched": unmatched,
            "unwraps": found["unwraps"],
            "unmatched_unwraps": unwraps,
        }
