"""Signed vault settings: ``settings list`` and ``settings set`` (docs/trust.md).

A setting is changed only by a ``setting.set`` statement signed by the role
``_settings.SPECS`` names, logged on a ``setting.set`` entry; its effective
value is the latest verified one, else the default. The ``meta`` row of the
same key is kept in step as a readable copy and is never read for a
decision: a row that disagrees is ignored, and ``doctor`` reports it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from childvault._i18n import _t
from childvault.keys import IntegrityError, UsageError
from childvault.vault import _audit, _settings, _statements
from childvault.vault._action_roles import logged_by_role
from childvault.vault._audit import Event
from childvault.vault._registrations import append_with_statements, with_statement
from childvault.vault._session import Session
from childvault.vault._statements import Envelope, TrustState
from childvault.vault._time import iso

#: The log action (and statement kind) of a signed setting.
ACTION = _settings.KIND


def setting_statement(vault_id: str, at: str, key: str, value: str) -> dict[str, Any]:
    """The ``setting.set`` statement giving ``key`` the (canonical) ``value``."""
    return {"v": 1, "kind": ACTION, "vault": vault_id, "at": at, "key": key, "value": value}


class SettingsService:
    """List and set the signed settings; compare them with their ``meta`` rows."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def listing(self) -> list[dict[str, Any]]:
        """Every signed setting: its effective value, default, signer role, source,
        who signed it and, when it disagrees with the effective value, the
        ``meta`` row (ignored; ``doctor`` reports it)."""
        state = self.s.settings_state()
        by: dict[str, str] = {}
        if state is not None:
            # The log was verified up to the state's point; the last ok entry per key.
            for raw in self.s.db.audit.entries_by_action((ACTION,)):
                doc = _audit.decode_entry(raw)
                detail = doc.get("detail")
                # A signer's only: anyone may log an entry in their own name (RV2-2).
                if (
                    doc.get("outcome") == "ok"
                    and isinstance(detail, dict)
                    and logged_by_role(state, doc)
                ):
                    by[str(detail.get("key"))] = str(doc.get("actor"))
        out: list[dict[str, Any]] = []
        for key in sorted(_settings.SPECS):
            spec = _settings.SPECS[key]
            signed = state is not None and key in state.settings
            value = self.s.settings.get(key)
            row = self.s.db.meta.get(key)
            out.append(
                {
                    "key": key,
                    "value": value,
                    "default": spec.default,
                    "signer": spec.signer,
                    "source": "signed" if signed else "default",
                    "signed_by": by.get(key) if signed else None,
                    "meta": row if row is not None and row != value else None,
                }
            )
        return out

    def history(self, key: str) -> list[dict[str, str]]:
        """Every logged ``setting.set`` of ``key``, oldest first: who signed it, when, the value.

        Read from the log after verifying it to its head (``trust``), so a row an
        insider removed or reordered fails that verification first.
        """
        state = self.s.trust()
        out: list[dict[str, str]] = []
        for raw in self.s.db.audit.entries_by_action((ACTION,)):
            doc = _audit.decode_entry(raw)
            detail = doc.get("detail")
            if (
                doc.get("outcome") == "ok"
                and isinstance(detail, dict)
                and detail.get("key") == key
                # A signer's only: anyone may log an entry in their own name (RV2-2).
                and logged_by_role(state, doc)
            ):
                out.append(
                    {
                        "actor": str(doc.get("actor")),
                        "at": str(doc.get("ts")),
                        "value": str(detail.get("value")),
                    }
                )
        return out

    def set(self, key: str, value: str, *, now: datetime | None = None) -> dict[str, Any]:
        """Sign ``key`` = ``value`` as the acting user (the role the setting needs) and log it.

        The value is validated and made canonical first; the statement is
        checked against the verified state before it is logged (nothing
        unverifiable is logged). Returns the new effective setting.
        """
        moment = self.s.now(now)
        spec = _settings.spec(key)
        self.s.require((spec.signer,), ACTION, moment, f"setting {key}")
        canonical = _settings.parse(key, value)
        state = self.s.trust()
        if state is None:
            raise UsageError(
                _t(
                    "your identity holds no trust anchor, so nothing you sign can be verified: "
                    "run `childvault upgrade` first"
                )
            )
        envelope = _statements.sign(
            setting_statement(self.s.vault_id, iso(moment), key, canonical), [self.s.me]
        )
        self._check_applies(state, envelope)
        self._log(key, canonical, envelope, moment)
        return next(item for item in self.listing() if item["key"] == key)

    def _check_applies(self, state: TrustState, envelope: Envelope) -> None:
        anchor = self.s.anchor
        assert anchor is not None  # a state exists only with an anchor
        trial = TrustState.from_bytes(state.to_bytes(), anchor)
        try:
            trial.apply(envelope, seq=self.s.db.audit.head()[0])
        except IntegrityError as exc:
            # A statement that would not verify would stop every later verification.
            raise UsageError(
                _t("the setting would not verify, so it was not logged: {reason}", reason=exc)
            ) from exc

    def _log(self, key: str, value: str, envelope: Envelope, moment: datetime) -> None:
        with self.s.db.transaction():
            append_with_statements(
                self.s.db,
                [
                    (
                        Event(
                            self.s.user,
                            ACTION,
                            detail=with_statement({"key": key, "value": value}, envelope),
                        ),
                        envelope,
                    )
                ],
                moment,
            )
            # A readable copy only; decisions read the verified statement.
            self.s.db.meta.set(key, value)
        self.s.trust()  # the session's verified state now includes the new setting

    def disagreements(self) -> list[tuple[str, str, str]]:
        """Doctor lines: ``meta`` rows of signed settings that differ from the verified value."""
        state = self.s.settings_state()
        if state is None:
            return []
        out: list[tuple[str, str, str]] = []
        for key in sorted(_settings.SPECS):
            row = self.s.db.meta.get(key)
            value = state.setting(key)
            if row is None or row == value:
                continue
            if key in state.settings:
                why = f"the database row says {row!r} but the signed value is {value!r}: ignored"
            else:
                role = _settings.SPECS[key].signer
                why = (
                    f"the database row says {row!r} with no signed statement: the default "
                    f"{value!r} applies until `childvault upgrade` (run by an {role}) or "
                    f"`childvault settings set {key}` signs it"
                )
            out.append(("setting " + key, "warn", why))
        return out

    def sign_unstated(self, moment: datetime) -> list[str]:
        """``childvault upgrade``: sign the ``meta`` values of a vault made before signed
        settings (non-default, valid, never stated) that the acting user's role signs."""
        state = self.s.trust()
        if state is None:
            return []
        signed: list[str] = []
        for key in sorted(_settings.SPECS):
            spec = _settings.SPECS[key]
            row = self.s.db.meta.get(key)
            if (
                key in state.settings
                or row is None
                or row == spec.default
                or not _settings.is_canonical(key, row)
                or not state.is_active(self.s.user, spec.signer)
            ):
                continue
            envelope = _statements.sign(
                setting_statement(self.s.vault_id, iso(moment), key, row), [self.s.me]
            )
            self._check_applies(state, envelope)
            self._log(key, row, envelope, moment)
            state = self.s.trust()
            assert state is not None
            signed.append(key)
        return signed
