"""Health: what `childvault doctor` reports about users, keys and the provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from childvault.keys import ChildVaultError
from childvault.vault._consent import children_due
from childvault.vault._session import Session
from childvault.vault._svc_notices import NoticeService, packaged_notice_sha256
from childvault.vault._time import legal_today


class HealthService:
    """Checks for doctor."""

    def __init__(self, session: Session, notices: NoticeService) -> None:
        self.s = session
        self._notices = notices

    def health(self) -> list[tuple[str, str, str]]:
        """(check, ok|warn|fail, message) about users, keys and the provider, for doctor."""
        out: list[tuple[str, str, str]] = []
        users = self.s.db.users.all()
        officers = [u for u in users if "officer" in u.roles]
        out.append(
            (
                "users",
                "ok" if officers else "warn",
                f"{len(users)} user(s), {len(officers)} officer(s)"
                + ("" if officers else ": add an officer before writing records"),
            )
        )
        out.append(("records", "ok", f"{self.s.db.records.count()} record(s)"))
        try:
            problem = self.s.notice_problem()
        except ChildVaultError as exc:
            problem = str(exc)
        if problem is not None:
            # Reported, not logged: doctor only reads (the next use refuses and logs it).
            out.append(("notice", "fail", f"{problem}: the notice rows were altered"))
        elif (
            self._notices.notices().get(self.s.setting("notice_version"), {}).get("sha256")
            == packaged_notice_sha256()
        ):
            current = self.s.setting("notice_version")
            out.append(
                (
                    "notice",
                    "warn",
                    f"the current notice {current} is the unfilled template: publish your "
                    "institution's notice with `childvault notice publish` (P-10)",
                )
            )
        pending = self.s.db.records.pending_shreds()
        if pending:
            out.append(
                (
                    "shredding",
                    "warn",
                    f"{len(pending)} deleted record(s) whose key material is not yet "
                    "destroyed in the provider: run `childvault retention sweep`",
                )
            )
        if self.s.keys.custodial:
            gens = self.s.db.custodians.all()
            states = ", ".join(f"generation {g} {s}" for g, _, s in gens) or "none"
            status = "ok" if any(s == "current" for _, _, s in gens) else "warn"
            if any(s == "pending" for _, _, s in gens):
                status = "warn"
                states += ": a key rotation was interrupted; run `childvault keys rotate` again"
            out.append(("custodian", status, states))
        diagnosable = self.s.keys.diagnosable()
        if diagnosable is not None:
            out.extend(_vault_checks(diagnosable.diagnose()))
        from childvault.vault._svc_settings import SettingsService

        out.extend(SettingsService(self.s).disagreements())
        out.extend(self.turning_14())
        out.extend(self.overdue_rights())
        return out

    def overdue_rights(self) -> list[tuple[str, str, str]]:
        """Doctor line for open rights requests past their deadline (P-19, M-17)."""
        from childvault.vault._svc_rights import RightsService

        late = [r for r in RightsService(self.s).rows() if r["overdue"]]
        if not late:
            return []
        listed = ", ".join(f"{r['id']} ({r['kind']}, due {r['deadline']})" for r in late[:20])
        return [
            (
                "rights requests",
                "warn",
                f"{len(late)} rights request(s) past their deadline: answer and close them "
                "(`childvault rights close`): " + listed,
            )
        ]

    # -- compliance checks (issue 15) ---------------------------------------

    def turning_14(self) -> list[tuple[str, str, str]]:
        """Doctor lines for guardian consents whose child turns 14 within 30 days (M-12).

        Record ids and dates only (no child data); records already due are
        refused by approvals until the child's own consent is recorded.
        """
        day = legal_today(self.s.settings, self.s.now(None))
        due: list[tuple[str, str]] = []
        after = ""
        while page := self.s.db.records.page(after=after, limit=1000):
            due.extend(children_due(((r.id, r.consent) for r in page), day))
            after = page[-1].id
        if not due:
            return []
        overdue = sum(1 for _, when in due if when <= day.isoformat())
        listed = ", ".join(f"{rid} ({when})" for rid, when in due[:20])
        more = f" and {len(due) - 20} more" if len(due) > 20 else ""
        return [
            (
                "turning 14",
                "warn",
                f"{len(due)} record(s) whose child turns 14 within 30 days or already has "
                f"({overdue} already refused): record the child's own consent (M-12): "
                + listed
                + more,
            )
        ]


def _vault_checks(diag: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Doctor lines from ``VaultProvider.diagnose()``."""
    addr = diag.get("addr")
    if not diag.get("reachable"):
        return [("vault", "fail", f"{addr} is unreachable: is the server running? (VAULT_ADDR)")]
    if diag.get("sealed"):
        return [("vault", "fail", f"{addr} is sealed: unseal it")]
    out = [("vault", "ok", f"{addr} reachable, unsealed, version {diag.get('version')}")]
    mounts = ", ".join(
        f"{label} {m.get('path')} {'present' if m.get('present') else 'MISSING'}"
        for label, m in (diag.get("mounts") or {}).items()
    )
    out.append(("vault mounts", "ok" if mounts and "MISSING" not in mounts else "fail", mounts))
    caps = diag.get("capabilities") or {}
    granted = sorted(
        label for label, c in caps.items() if c.get("capabilities") not in ([], ["deny"])
    )
    out.append(
        (
            "vault token",
            "ok",
            f"acts as {', '.join(diag.get('roles') or []) or 'no childvault role'}"
            f"; capabilities on: {', '.join(granted) or 'none'}",
        )
    )
    for problem in diag.get("problems") or []:
        out.append(("vault", "fail", str(problem)))
    return out
