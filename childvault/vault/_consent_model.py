"""What a consent is: the :class:`Consent` dataclass, its stored JSON form and the
names that define it (bases, parties, the age of consent, the notice version's form).

The lowest of the consent modules: the rules (:mod:`childvault.vault._consent_rules`)
and the column parser (:mod:`childvault.vault._consent`) both build on it. The
rules themselves are explained in :mod:`childvault.vault._consent`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from childvault._i18n import _t, join
from childvault.keys._errors import ValidationError
from childvault.vault._validators import check_date

__all__ = ["CONSENT_AGE", "CONSENT_PARTIES", "Consent"]

#: Age (completed years) from which the child consents (M-12; P-2 defines a
#: child as under 14).
CONSENT_AGE = 14

_BY = ("guardian", "child")
_NOTICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_JSON_KEYS = (
    "by",
    "consented_at",
    "notice_version",
    "purposes",
    "retain_until",
    "guardian_informed",
    "guardian_also",
    "notice_sha256",
)
#: Keys a stored consent may lack (added after the first format; absent = empty).
_OPTIONAL_JSON_KEYS = ("child_consent_due", "party", "relation", "form_sha256", "confirmed_by")
#: Who consented: a guardian (a parent or other person), the child from 14, or
#: the institution or the civil affairs department as statutory guardian.
CONSENT_PARTIES = ("guardian", "child", "institution", "civil_affairs")


@dataclass(frozen=True)
class Consent:
    """The consent basis of one record (the rules: :mod:`childvault.vault._consent`).

    ``retain_until`` is the last day the record may be kept: a retention sweep
    destroys it once the date has passed. ``notice_version`` names the version
    of the notice (the P-10 items) that was shown when consent was given.
    """

    by: str
    consented_at: date
    notice_version: str
    purposes: tuple[str, ...]
    retain_until: date
    guardian_informed: bool = False
    guardian_also: bool = False
    #: SHA-256 (hex) of the exact notice text shown; the vault fills it in from
    #: its register of published notices when the consent is stored.
    notice_sha256: str = ""
    #: The day the child turns 14, for a guardian's consent given while the
    #: child was under 14 (M-12): from that day approvals and reads refuse the
    #: record until the child's own consent is recorded. :func:`check_consent`
    #: fills it in from the date of birth; ``None`` when it does not apply.
    child_consent_due: date | None = None
    #: Who consented (:data:`CONSENT_PARTIES`); empty in consents stored
    #: before it was recorded (then ``by`` is all that is known).
    party: str = ""
    #: The consenting guardian's relation to the child (母亲, 祖父, ...), for
    #: party ``guardian``; the name is the record's sealed ``guardian_name``.
    relation: str = ""
    #: SHA-256 (hex) of the signed consent form, required when back-dated.
    form_sha256: str = ""
    #: The officer who confirmed a back-dated ``consented_at`` (set by the vault).
    confirmed_by: str = ""

    @property
    def consenting_party(self) -> str:
        """``party`` if recorded, else what ``by`` says (older consents)."""
        return self.party or self.by

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (dates as ``YYYY-MM-DD``), every key present.

        ``child_consent_due``, ``party``, ``relation``, ``form_sha256`` and
        ``confirmed_by`` are present only when set, so consents that do not
        carry them keep their earlier shape (and their signed bytes).
        """
        due: dict[str, object] = (
            {}
            if self.child_consent_due is None
            else {"child_consent_due": self.child_consent_due.isoformat()}
        )
        extra = {
            key: value
            for key, value in (
                ("party", self.party),
                ("relation", self.relation),
                ("form_sha256", self.form_sha256),
                ("confirmed_by", self.confirmed_by),
            )
            if value
        }
        return {
            **due,
            **extra,
            "by": self.by,
            "consented_at": self.consented_at.isoformat(),
            "notice_version": self.notice_version,
            "purposes": list(self.purposes),
            "retain_until": self.retain_until.isoformat(),
            "guardian_informed": self.guardian_informed,
            "guardian_also": self.guardian_also,
            "notice_sha256": self.notice_sha256,
        }

    @classmethod
    def from_json(cls, obj: object) -> Consent:
        """Rebuild a consent from :meth:`to_json` output; strict about keys and types.

        Only the shape is checked here; :func:`check_consent` checks the rules.
        """
        if not isinstance(obj, dict):
            raise ValidationError(_t("consent: expected a JSON object"), field="consent")
        for key in obj:
            if key not in _JSON_KEYS and key not in _OPTIONAL_JSON_KEYS:
                shown = repr(key[:64]) if isinstance(key, str) else _t("a non-string key")
                raise ValidationError(
                    _t(
                        "consent: unknown key {key}; expected: {keys}",
                        key=shown,
                        keys=join(", ", _JSON_KEYS),
                    ),
                    field="consent",
                )
        for key in _JSON_KEYS:
            if key not in obj:
                raise ValidationError(_t("consent: missing key {key!r}", key=key), field=key)
        by = obj["by"]
        if by not in _BY:
            raise ValidationError(_t("consent: 'by' must be guardian or child"), field="by")
        notice = obj["notice_version"]
        if not isinstance(notice, str):
            raise ValidationError(
                _t("consent: 'notice_version' must be a string"), field="notice_version"
            )
        purposes = obj["purposes"]
        if not isinstance(purposes, list) or not all(isinstance(p, str) for p in purposes):
            raise ValidationError(
                _t("consent: 'purposes' must be an array of strings"), field="purposes"
            )
        flags: dict[str, bool] = {}
        for key in ("guardian_informed", "guardian_also"):
            value = obj[key]
            if not isinstance(value, bool):
                raise ValidationError(
                    _t("consent: {key!r} must be true or false", key=key), field=key
                )
            flags[key] = value
        digest = obj["notice_sha256"]
        if not isinstance(digest, str) or not re.fullmatch(r"(|[0-9a-f]{64})", digest):
            raise ValidationError(
                _t("consent: 'notice_sha256' must be a hex SHA-256"), field="notice_sha256"
            )
        texts: dict[str, str] = {}
        for key in ("party", "relation", "form_sha256", "confirmed_by"):
            value = obj.get(key, "")
            if not isinstance(value, str):
                raise ValidationError(_t("consent: {key!r} must be a string", key=key), field=key)
            texts[key] = value
        return cls(
            party=texts["party"],
            relation=texts["relation"],
            form_sha256=texts["form_sha256"],
            confirmed_by=texts["confirmed_by"],
            by=str(by),
            consented_at=_json_date(obj["consented_at"], "consented_at"),
            notice_version=notice,
            purposes=tuple(purposes),
            retain_until=_json_date(obj["retain_until"], "retain_until"),
            guardian_informed=flags["guardian_informed"],
            guardian_also=flags["guardian_also"],
            notice_sha256=digest,
            child_consent_due=(
                None
                if obj.get("child_consent_due") is None
                else _json_date(obj["child_consent_due"], "child_consent_due")
            ),
        )


def _json_date(value: object, key: str) -> date:
    if not isinstance(value, str):
        raise ValidationError(
            _t("consent: {key!r} must be a date string YYYY-MM-DD", key=key), field=key
        )
    return date.fromisoformat(check_date(value, field=key))
