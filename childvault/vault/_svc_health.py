"""Health: what `childvault doctor` reports about users, keys and the provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from childvault._i18n import _t, join
from childvault.keys import ChildVaultError
from childvault.vault._consent import children_due
from childvault.vault._session import Session
from childvault.vault._svc_notices import NoticeService, packaged_notice_sha256
from childvault.vault._time import legal_today


def _generation(generation: int, state: str) -> str:
    """One custodian generation and its stored state, as doctor shows it."""
    if state == "current":
        return _t("generation {g} current", g=generation)
    if state == "pending":
        return _t("generation {g} pending", g=generation)
    if state == "retired":
        return _t("generation {g} retired", g=generation)
    return _t("generation {g} {state}", g=generation, state=state)


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
        counted = _t(
            "{users} user(s), {officers} officer(s)", users=len(users), officers=len(officers)
        )
        if not officers:
            counted = _t("{counted}: add an officer before writing records", counted=counted)
        out.append(("users", "ok" if officers else "warn", counted))
        out.append(("records", "ok", _t("{n} record(s)", n=self.s.db.records.count())))
        try:
            problem = self.s.notice_problem()
        except ChildVaultError as exc:
            problem = str(exc)
        if problem is not None:
            # Reported, not logged: doctor only reads (the next use refuses and logs it).
            out.append(
                ("notice", "fail", _t("{problem}: the notice rows were altered", problem=problem))
            )
        elif (
            self._notices.notices()
            .get(current := self.s.setting("notice_version"), {})
            .get("sha256")
            == packaged_notice_sha256()
        ):
            out.append(
                (
                    "notice",
                    "warn",
                    _t(
                        "the current notice {version} is the unfilled template: publish your "
                        "institution's notice with `childvault notice publish` (P-10)",
                        version=current,
                    ),
                )
            )
        pending = self.s.db.records.pending_shreds()
        if pending:
            out.append(
                (
                    "shredding",
                    "warn",
                    _t(
                        "{n} deleted record(s) whose key material is not yet destroyed in the "
                        "provider: run `childvault retention sweep`",
                        n=len(pending),
                    ),
                )
            )
        if self.s.keys.custodial:
            gens = self.s.db.custodians.all()
            listed = join(", ", [_generation(g, st) for g, _, st in gens])
            states: str = listed if gens else _t("none")
            status = "ok" if any(st == "current" for _, _, st in gens) else "warn"
            if any(st == "pending" for _, _, st in gens):
                status = "warn"
                states = _t(
                    "{states}: a key rotation was interrupted; run `childvault keys rotate` again",
                    states=listed,
                )
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

        # The state settings use (the user's own last one if the log does not
        # verify: `audit verify` reports that): a doctor line, not a decision.
        rows = RightsService(self.s).rows(state=self.s.settings_state())
        late = [r for r in rows if r["overdue"]]
        if not late:
            return []
        listed = join(
            ", ",
            [
                _t(
                    "{id} ({kind}, due {deadline})",
                    id=r["id"],
                    kind=r["kind"],
                    deadline=r["deadline"],
                )
                for r in late[:20]
            ],
        )
        return [
            (
                "rights requests",
                "warn",
                _t(
                    "{n} rights request(s) past their deadline: answer and close them "
                    "(`childvault rights close`): {list}",
                    n=len(late),
                    list=listed,
                ),
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
        listed = join(", ", (f"{rid} ({when})" for rid, when in due[:20]))
        return [
            (
                "turning 14",
                "warn",
                _t(
                    "{n} record(s) whose child turns 14 within 30 days or already has "
                    "({overdue} already refused): record the child's own consent (M-12): "
                    "{list}",
                    n=len(due),
                    overdue=overdue,
                    list=listed,
                )
                if len(due) <= 20
                else _t(
                    "{n} record(s) whose child turns 14 within 30 days or already has "
                    "({overdue} already refused): record the child's own consent (M-12): "
                    "{list} and {more} more",
                    n=len(due),
                    overdue=overdue,
                    list=listed,
                    more=len(due) - 20,
                ),
            )
        ]


def _vault_checks(diag: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Doctor lines from ``VaultProvider.diagnose()``."""
    addr = diag.get("addr")
    if not diag.get("reachable"):
        return [
            (
                "vault",
                "fail",
                _t("{addr} is unreachable: is the server running? (VAULT_ADDR)", addr=addr),
            )
        ]
    if diag.get("sealed"):
        return [("vault", "fail", _t("{addr} is sealed: unseal it", addr=addr))]
    out: list[tuple[str, str, str]] = [
        (
            "vault",
            "ok",
            _t(
                "{addr} reachable, unsealed, version {version}",
                addr=addr,
                version=diag.get("version"),
            ),
        )
    ]
    found = list((diag.get("mounts") or {}).items())
    mounts = join(
        ", ",
        [
            _t("{label} {path} present", label=label, path=m.get("path"))
            if m.get("present")
            else _t("{label} {path} MISSING", label=label, path=m.get("path"))
            for label, m in found
        ],
    )
    complete = bool(found) and all(m.get("present") for _, m in found)
    out.append(("vault mounts", "ok" if complete else "fail", mounts))
    caps = diag.get("capabilities") or {}
    granted = sorted(
        label for label, c in caps.items() if c.get("capabilities") not in ([], ["deny"])
    )
    out.append(
        (
            "vault token",
            "ok",
            _t(
                "acts as {roles}; capabilities on: {granted}",
                roles=join(", ", diag.get("roles") or []) or _t("no childvault role"),
                granted=join(", ", granted) or _t("none"),
            ),
        )
    )
    for problem in diag.get("problems") or []:
        # Kept as given: the provider marks its problems for translation.
        out.append(("vault", "fail", problem if isinstance(problem, str) else str(problem)))
    return out
