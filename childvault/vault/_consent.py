"""The consent basis of a record: who consented, when, to what, for how long.

The rules follow P-9/P-10 (a guardian consents for a child under 14, after a
notice whose version is recorded) and M-12 (from 14 the child consents and the
guardian is informed; if the child cannot express a will, the guardian consents
as well). A consent therefore has exactly one of three bases:

======================  ==========================================  ===============
basis                   fields                                      age on consent
======================  ==========================================  ===============
guardian                by="guardian", guardian_also=False          under 14, or
                                                                    age unknown
child                   by="child", guardian_informed=True          14 or older
guardian for the child  by="guardian", guardian_also=True           14 or older
======================  ==========================================  ===============

Any other combination is refused, so a stored consent is never ambiguous.

Who consented (issue 15): a guardian's consent names its *party*: ``guardian``
(a parent or other person, with the relation such as 母亲), ``institution``
(the welfare institution is itself the statutory guardian) or
``civil_affairs`` (the civil affairs department is); a child's own consent has
party ``child``. The relation is recorded, never the guardian's name: the
consent is kept in clear beside the signed record statement, while the name is
the record's sealed ``guardian_name`` field.

Back-dating (issue 15): ``consented_at`` more than the window (setting
``consent_backdate_days``, default 30) before the day the record is created
needs an officer's confirmation and the SHA-256 of the signed consent form;
both are stored in the consent, which the record statement signs
(:func:`check_backdating`). Each row of an import is held to the same rule,
the officer confirming with ``--confirm-backdated``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta

from childvault._i18n import _t, join
from childvault.keys._errors import ValidationError
from childvault.vault._schema import Schema
from childvault.vault._schema_types import ALL_CONSENT_COLUMNS, CONSENT_COLUMNS
from childvault.vault._validators import check_date

__all__ = [
    "ALL_CONSENT_COLUMNS",
    "CONSENT_AGE",
    "CONSENT_COLUMNS",
    "CONSENT_PARTIES",
    "DEFAULT_BACKDATE_DAYS",
    "Consent",
    "ImportConsents",
    "age_on",
    "backdate_window",
    "check_backdating",
    "check_consent",
    "children_due",
    "fourteenth_birthday",
    "parse_consent_columns",
]

#: Age (completed years) from which the child consents (M-12; P-2 defines a
#: child as under 14).
CONSENT_AGE = 14

_BY = ("guardian", "child")
_NOTICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_PURPOSE_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
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
_PARTY_SPELLINGS = {
    "guardian": "guardian",
    "监护人": "guardian",
    "child": "child",
    "儿童": "child",
    "本人": "child",
    "institution": "institution",
    "机构": "institution",
    "civil_affairs": "civil_affairs",
    "民政部门": "civil_affairs",
}
_MAX_RELATION = 32
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: Days ``consented_at`` may precede the record's creation without an officer's
#: confirmation and the signed form's digest (setting ``consent_backdate_days``).
DEFAULT_BACKDATE_DAYS = 30
BACKDATE_SETTING = "consent_backdate_days"
_TRUE = ("yes", "true", "1", "y", "是")
_FALSE = ("no", "false", "0", "n", "否", "")
_BY_SPELLINGS = {
    "guardian": "guardian",
    "监护人": "guardian",
    "child": "child",
    "儿童": "child",
    "本人": "child",
}


@dataclass(frozen=True)
class Consent:
    """The consent basis of one record (see the module docstring for the rules).

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


def age_on(birth: date, day: date) -> int:
    """Completed years of age on ``day`` for someone born on ``birth``.

    A year is completed on the birthday itself. Someone born on 29 February
    completes a year on 1 March in common years (28 February is still the day
    before the birthday). ValueError if ``day`` is before ``birth``.
    """
    if day < birth:
        raise ValueError(_t("day is before the date of birth"))
    before_birthday = (day.month, day.day) < (birth.month, birth.day)
    return day.year - birth.year - int(before_birthday)


def check_consent(
    consent: Consent, *, date_of_birth: date | None, schema: Schema, today: date
) -> Consent:
    """Check a new consent against the rules and return it; ValidationError naming the column.

    Rules: ``by`` is guardian or child; the notice version is 1-32 characters
    of ``A-Za-z0-9._-``; purposes are non-empty, declared by the schema, without
    duplicates; ``consented_at`` is not in the future nor before the date of
    birth; ``retain_until`` is after ``consented_at`` and not before ``today``;
    the basis matches the age on ``consented_at`` (module docstring).
    """
    _check_rules(consent, date_of_birth=date_of_birth, schema=schema, today=today)
    return replace(consent, child_consent_due=fourteenth_birthday(consent, date_of_birth))


def _check_rules(
    consent: Consent, *, date_of_birth: date | None, schema: Schema, today: date
) -> None:
    """:func:`check_consent`'s checks alone, in its order (an import builds each
    row's consent once, with the results: :class:`ImportConsents`)."""
    if consent.by not in _BY:
        raise ValidationError(_t("consent_by: must be guardian or child"), field="consent_by")
    if not isinstance(consent.notice_version, str) or not _NOTICE_RE.fullmatch(
        consent.notice_version
    ):
        raise ValidationError(
            _t(
                "notice_version: expected 1 to 32 characters of letters, digits, '.', '_' or '-', "
                "naming the version of the notice shown (for example 2026-1)"
            ),
            field="notice_version",
        )
    _check_purposes(consent.purposes, schema)
    if consent.consented_at > today:
        raise ValidationError(
            _t("consented_at: is in the future; expected the day consent was given"),
            field="consented_at",
        )
    _check_after_birth(consent, date_of_birth)
    if consent.retain_until <= consent.consented_at:
        raise ValidationError(_t("retain_until: must be after consented_at"), field="retain_until")
    if consent.retain_until < today:
        raise ValidationError(
            _t("retain_until: has already passed; expected the last day the record may be kept"),
            field="retain_until",
        )
    _check_basis(consent, date_of_birth)
    _check_party(consent)


def _check_after_birth(consent: Consent, date_of_birth: date | None) -> None:
    if date_of_birth is not None and consent.consented_at < date_of_birth:
        raise ValidationError(
            _t("consented_at: is before the date of birth; expected the day consent was given"),
            field="consented_at",
        )


def _check_party(consent: Consent) -> None:
    """The recorded party agrees with ``by``; a relation only for a guardian person."""
    if consent.party and consent.party not in CONSENT_PARTIES:
        raise ValidationError(
            _t(
                "consent_party: expected one of {parties}",
                parties=join(", ", CONSENT_PARTIES),
            ),
            field="consent_party",
        )
    if consent.party and (consent.party == "child") != (consent.by == "child"):
        raise ValidationError(
            _t(
                "consent_party: {party} does not match consent_by={by}: the child consents "
                "as party child, a guardian as guardian, institution or civil_affairs",
                party=consent.party,
                by=consent.by,
            ),
            field="consent_party",
        )
    if consent.relation and consent.consenting_party != "guardian":
        raise ValidationError(
            _t("consent_relation: applies only when a guardian person consents"),
            field="consent_relation",
        )
    if len(consent.relation) > _MAX_RELATION or any(ch in consent.relation for ch in "\n\r\t"):
        raise ValidationError(
            _t("consent_relation: expected one short line (at most 32 characters), such as 母亲"),
            field="consent_relation",
        )
    if consent.form_sha256 and not _SHA256_RE.fullmatch(consent.form_sha256):
        raise ValidationError(
            _t("consent_form_sha256: expected 64 lowercase hex digits (SHA-256)"),
            field="consent_form_sha256",
        )


def backdate_window(settings: Mapping[str, str] | object) -> int:
    """Days of the back-dating window: setting ``consent_backdate_days`` (default 30)."""
    get = getattr(settings, "get", None)
    raw = get(BACKDATE_SETTING) if callable(get) else None
    return int(raw) if isinstance(raw, str) and raw.strip().isdigit() else DEFAULT_BACKDATE_DAYS


def check_backdating(
    consent: Consent,
    *,
    created: date,
    window_days: int,
    actor: str,
    officer: bool,
    in_import: bool = False,
) -> Consent:
    """Refuse a ``consented_at`` more than ``window_days`` before ``created`` unless confirmed.

    Within the window the consent is returned as given (without a stale
    ``confirmed_by``). Beyond it, the signed consent form's SHA-256 must be
    given and the acting user must be an officer, whose name is then stored
    as ``confirmed_by``: the record statement signs the consent, so neither
    can be added later without a new signature.

    ``in_import``: a row of ``childvault import``, where ``officer`` means an
    officer runs the import with ``--confirm-backdated``; the messages then
    say what to do with the row (docs/compliance.md, M-12).
    """
    return replace(
        consent,
        confirmed_by=_confirmed_by(
            consent,
            created=created,
            window_days=window_days,
            actor=actor,
            officer=officer,
            in_import=in_import,
        ),
    )


def _confirmed_by(
    consent: Consent,
    *,
    created: date,
    window_days: int,
    actor: str,
    officer: bool,
    in_import: bool,
) -> str:
    """The ``confirmed_by`` :func:`check_backdating` stores ("" within the window),
    or its refusal."""
    earliest = created - timedelta(days=window_days)
    if consent.consented_at >= earliest:
        return ""
    days = (created - consent.consented_at).days
    if in_import:
        return _check_imported_backdating(consent, days, window_days, actor, officer)
    if not consent.form_sha256:
        raise ValidationError(
            _t(
                "consented_at: is {days} days before the record was created (the window is "
                "{window} days): back-dating needs an officer's confirmation and the SHA-256 "
                "of the signed consent form (--consent-form FILE, or the consent_form_sha256 "
                "column)",
                days=days,
                window=window_days,
            ),
            field="consented_at",
        )
    if not officer:
        raise ValidationError(
            _t(
                "consented_at: is {days} days before the record was created (the window is "
                "{window} days): an officer must confirm a back-dated consent; ask an officer "
                "to record it",
                days=days,
                window=window_days,
            ),
            field="consented_at",
        )
    return actor


def _check_imported_backdating(
    consent: Consent, days: int, window_days: int, actor: str, confirmed: bool
) -> str:
    """:func:`_confirmed_by` for one import row beyond the window (see
    :func:`check_backdating`)."""
    # Both conditions are named at once, so a worker migrating a register
    # learns from one refusal everything the row needs.
    if not consent.form_sha256:
        raise ValidationError(
            _t(
                "consented_at: is {days} days before the import (the window is {window} "
                "days): a back-dated row needs the SHA-256 of its signed consent form (column "
                "consent_form_sha256, 同意书摘要) and an officer running the import with "
                "--confirm-backdated",
                days=days,
                window=window_days,
            ),
            field="consented_at",
        )
    if not confirmed:
        raise ValidationError(
            _t(
                "consented_at: is {days} days before the import (the window is {window} "
                "days): an officer must confirm back-dated rows by running the import with "
                "--confirm-backdated",
                days=days,
                window=window_days,
            ),
            field="consented_at",
        )
    return actor


def fourteenth_birthday(consent: Consent, date_of_birth: date | None) -> date | None:
    """The day a guardian's consent for a child under 14 stops sufficing (M-12).

    ``None`` for a consent by the child, a guardian's consent for a child who
    cannot express a will (``guardian_also``), or no known date of birth.
    Someone born on 29 February turns 14 on 1 March in a common year
    (:func:`age_on`).
    """
    if date_of_birth is None or consent.by != "guardian" or consent.guardian_also:
        return None
    if age_on(date_of_birth, consent.consented_at) >= CONSENT_AGE:
        return None
    year = date_of_birth.year + CONSENT_AGE
    if (date_of_birth.month, date_of_birth.day) == (2, 29):
        try:
            return date(year, 2, 29)
        except ValueError:
            return date(year, 3, 1)
    return date(year, date_of_birth.month, date_of_birth.day)


def children_due(
    consents: Iterable[tuple[str, Mapping[str, object]]], day: date, *, within_days: int = 30
) -> list[tuple[str, str]]:
    """(record id, due date) of guardian consents whose child turns 14 by ``day`` + window.

    For ``doctor``: records already due (approvals refuse them) and those due
    within ``within_days``, soonest first (M-12).
    """
    limit = (day + timedelta(days=within_days)).isoformat()
    due = [
        (rid, str(c["child_consent_due"]))
        for rid, c in consents
        if isinstance(c.get("child_consent_due"), str) and str(c["child_consent_due"]) <= limit
    ]
    return sorted(due, key=lambda item: (item[1], item[0]))


def _check_purposes(purposes: tuple[str, ...], schema: Schema) -> None:
    if not purposes:
        raise ValidationError(
            _t(
                "purposes: at least one purpose is required; the schema declares: {purposes}",
                purposes=join(", ", schema.purposes),
            ),
            field="purposes",
        )
    seen: set[str] = set()
    for purpose in purposes:
        if not isinstance(purpose, str) or purpose not in schema.purposes:
            shown = repr(purpose[:64]) if isinstance(purpose, str) else _t("a non-string")
            raise ValidationError(
                _t(
                    "purposes: {purpose} is not a purpose of the schema; expected some of: "
                    "{purposes}",
                    purpose=shown,
                    purposes=join(", ", schema.purposes),
                ),
                field="purposes",
            )
        if purpose in seen:
            raise ValidationError(
                _t("purposes: {purpose!r} is listed twice", purpose=purpose), field="purposes"
            )
        seen.add(purpose)


def _check_basis(consent: Consent, date_of_birth: date | None) -> None:
    if consent.by == "guardian" and consent.guardian_informed:
        # The guardian who consents is informed by definition; the flag
        # records that a consenting child's guardian was told (M-12).
        raise ValidationError(
            _t(
                "guardian_informed: applies only to a consent by the child; leave it no "
                "when the guardian consents"
            ),
            field="guardian_informed",
        )
    if date_of_birth is None:
        if consent.by != "guardian":
            raise ValidationError(
                _t(
                    "consent_by: without a date of birth the child's age cannot be shown to be "
                    "{consent_age} or more, so the guardian must consent",
                    consent_age=CONSENT_AGE,
                ),
                field="consent_by",
            )
        if consent.guardian_also:
            raise ValidationError(
                _t(
                    "guardian_also: needs a date of birth showing the child is {consent_age} "
                    "or older",
                    consent_age=CONSENT_AGE,
                ),
                field="guardian_also",
            )
        return
    age = age_on(date_of_birth, consent.consented_at)
    if age < CONSENT_AGE:
        if consent.by != "guardian":
            raise ValidationError(
                _t(
                    "consent_by: the child was {age} on consented_at; under {consent_age} the "
                    "parent or other guardian must consent (P-9, M-12)",
                    age=age,
                    consent_age=CONSENT_AGE,
                ),
                field="consent_by",
            )
        if consent.guardian_also:
            raise ValidationError(
                _t(
                    "guardian_also: applies only from age {consent_age} (the child was {age} "
                    "on consented_at); leave it no",
                    consent_age=CONSENT_AGE,
                    age=age,
                ),
                field="guardian_also",
            )
        return
    if consent.by == "child":
        if not consent.guardian_informed:
            raise ValidationError(
                _t(
                    "guardian_informed: a child of {consent_age} or older consents and the "
                    "guardian must be told explicitly (M-12); set it to yes once they are",
                    consent_age=CONSENT_AGE,
                ),
                field="guardian_informed",
            )
        if consent.guardian_also:
            raise ValidationError(
                _t(
                    "guardian_also: means the child cannot express a will, which contradicts a "
                    "consent by the child; use consent_by=guardian with guardian_also=yes"
                ),
                field="guardian_also",
            )
        return
    if not consent.guardian_also:
        raise ValidationError(
            _t(
                "consent_by: the child was {age} on consented_at; from {consent_age} the child "
                "consents (with the guardian informed), and the guardian consents only if the "
                "child cannot express a will: then set guardian_also=yes (M-12)",
                age=age,
                consent_age=CONSENT_AGE,
            ),
            field="consent_by",
        )


def _parse_flag(row: Mapping[str, str], column: str) -> bool:
    raw = row.get(column)
    if raw is None:
        return False
    if not isinstance(raw, str):
        raise ValidationError(_t("{column}: expected yes or no", column=column), field=column)
    value = raw.strip().casefold()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValidationError(
        _t("{column}: expected yes or no (also true/false, 1/0; empty means no)", column=column),
        field=column,
    )


def _cell(row: Mapping[str, str], column: str) -> str:
    raw = row.get(column)
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ValidationError(_t("{column}: expected text", column=column), field=column)
    return raw.strip()


def _parse_date(row: Mapping[str, str], column: str, default: date | None) -> date:
    text = _cell(row, column)
    if not text:
        if default is None:
            raise ValidationError(
                _t("{column}: required; expected a date as YYYY-MM-DD", column=column), field=column
            )
        return default
    return date.fromisoformat(check_date(text, field=column))


def parse_consent_columns(row: Mapping[str, str], *, default_notice: str, today: date) -> Consent:
    """Read the consent columns of an import row or CLI options into a Consent.

    Columns (other keys of ``row`` are ignored): ``consent_by`` (guardian or
    child; 监护人 / 儿童 accepted), ``consented_at`` (default ``today``),
    ``notice_version`` (default ``default_notice``), ``purposes`` (separated by
    ``;``), ``retain_until``, ``guardian_informed`` and ``guardian_also``
    (yes/no, true/false, 1/0; default no). Only the spelling is checked:
    call :func:`check_consent` for the rules.
    """
    by_text = _cell(row, "consent_by")
    by = _BY_SPELLINGS.get(by_text.casefold())
    if by is None:
        raise ValidationError(
            _t("consent_by: required; expected guardian or child"), field="consent_by"
        )
    consented_at = _parse_date(row, "consented_at", today)
    notice = _cell(row, "notice_version") or default_notice
    if not _NOTICE_RE.fullmatch(notice):
        raise ValidationError(
            _t("notice_version: expected 1 to 32 characters of letters, digits, '.', '_' or '-'"),
            field="notice_version",
        )
    # A full-width semicolon is what a Chinese input method types.
    parts = [p.strip() for p in _cell(row, "purposes").replace("；", ";").split(";")]
    purposes = tuple(p for p in parts if p)
    if not purposes:
        raise ValidationError(
            _t("purposes: required; expected purpose names separated by ';'"), field="purposes"
        )
    for purpose in purposes:
        if not _PURPOSE_RE.fullmatch(purpose):
            raise ValidationError(
                _t(
                    "purposes: {purpose!r} is not a purpose name; expected names such as "
                    "case_management separated by ';'",
                    purpose=purpose[:64],
                ),
                field="purposes",
            )
    retain_until = _parse_date(row, "retain_until", None)
    party_text = _cell(row, "consent_party")
    party = _PARTY_SPELLINGS.get(party_text.casefold(), party_text) if party_text else ""
    if party and party not in CONSENT_PARTIES:
        raise ValidationError(
            _t(
                "consent_party: expected one of {parties}",
                parties=join(", ", CONSENT_PARTIES),
            ),
            field="consent_party",
        )
    form = _cell(row, "consent_form_sha256").casefold()
    return Consent(
        party=party,
        relation=_cell(row, "consent_relation"),
        form_sha256=form,
        by=by,
        consented_at=consented_at,
        notice_version=notice,
        purposes=purposes,
        retain_until=retain_until,
        guardian_informed=_parse_flag(row, "guardian_informed"),
        guardian_also=_parse_flag(row, "guardian_also"),
    )


#: Most distinct consent-cell combinations :class:`ImportConsents` remembers.
_MEMO_SIZE = 4096


class ImportConsents:
    """The consent of each row of one import, parsed and checked into its final object once.

    What a row's consent depends on besides its cells is fixed for the whole
    import: the default notice version, today, the creation day and the
    back-dating window, the acting user, whether an officer confirms
    back-dated rows, and the register of published notices. So:

    - :meth:`parse` is :func:`parse_consent_columns`, remembered for rows
      whose consent cells are the same (a pure function of them; a register
      repeats its notice, purposes and retention from row to row). Refusals
      are not remembered: such a row is parsed, and refused, again.
    - :meth:`checked` applies :func:`check_consent`'s rules, the back-dating
      rule of an import row (:func:`check_backdating`) and the notice's digest,
      in that order, and builds the stored consent once, with every result,
      instead of copying it once per rule.
    """

    __slots__ = (
        "_actor",
        "_confirmed",
        "_created",
        "_default_notice",
        "_notice_sha256",
        "_parsed",
        "_passed",
        "_schema",
        "_today",
        "_window",
    )

    def __init__(
        self,
        *,
        schema: Schema,
        default_notice: str,
        today: date,
        created: date,
        window_days: int,
        actor: str,
        confirmed: bool,
        notice_sha256: Callable[[str], str],
    ) -> None:
        """``confirmed``: an officer runs the import with ``--confirm-backdated``;
        ``notice_sha256``: the register's digest of a notice version (or its refusal)."""
        self._schema = schema
        self._default_notice = default_notice
        self._today = today
        self._created = created
        self._window = window_days
        self._actor = actor
        self._confirmed = confirmed
        self._notice_sha256 = notice_sha256
        self._parsed: dict[tuple[object, ...], Consent] = {}
        # By id() of a parsed consent that passed every rule once: the consent
        # itself (so the id cannot be reused while the entry lives), its
        # confirmed_by and its notice's digest.
        self._passed: dict[int, tuple[Consent, str, str]] = {}

    def parse(self, row: Mapping[str, str]) -> Consent:
        """:func:`parse_consent_columns` of ``row`` (other keys are ignored)."""
        key = tuple(map(row.get, ALL_CONSENT_COLUMNS))
        try:
            known = self._parsed.get(key)
        except TypeError:  # an unhashable cell (a library caller's): refused below
            known = None
        if known is not None:
            return known
        parsed = parse_consent_columns(row, default_notice=self._default_notice, today=self._today)
        # Only text cells parse (every column is type-checked), so the key is hashable.
        if len(self._parsed) >= _MEMO_SIZE:
            self._parsed.clear()
        self._parsed[key] = parsed
        return parsed

    def checked(self, parsed: Consent, date_of_birth: date | None) -> Consent:
        """The stored consent of a row: ``parsed`` (:meth:`parse`) checked against the
        rules for a child born on ``date_of_birth``, with its due date, its officer's
        confirmation and its notice's digest; ValidationError naming the column.

        A parsed consent (one object per distinct consent cells, :meth:`parse`)
        that passed once is checked again only against the rules that depend
        on the date of birth: the others, its back-dating and its notice's
        digest depend on nothing else that changes within an import. The
        first problem is the same: the rules skipped passed.
        """
        passed = self._passed.get(id(parsed))
        if passed is not None and passed[0] is parsed:
            _, confirmed_by, notice_sha256 = passed
            # _check_rules' checks that read the date of birth, in its order.
            _check_after_birth(parsed, date_of_birth)
            _check_basis(parsed, date_of_birth)
        else:
            _check_rules(
                parsed, date_of_birth=date_of_birth, schema=self._schema, today=self._today
            )
            confirmed_by = _confirmed_by(
                parsed,
                created=self._created,
                window_days=self._window,
                actor=self._actor,
                officer=self._confirmed,
                in_import=True,
            )
            notice_sha256 = self._notice_sha256(parsed.notice_version)
            if len(self._passed) >= _MEMO_SIZE:
                self._passed.clear()
            self._passed[id(parsed)] = (parsed, confirmed_by, notice_sha256)
        return Consent(
            by=parsed.by,
            consented_at=parsed.consented_at,
            notice_version=parsed.notice_version,
            purposes=parsed.purposes,
            retain_until=parsed.retain_until,
            guardian_informed=parsed.guardian_informed,
            guardian_also=parsed.guardian_also,
            notice_sha256=notice_sha256,
            child_consent_due=fourteenth_birthday(parsed, date_of_birth),
            party=parsed.party,
            relation=parsed.relation,
            form_sha256=parsed.form_sha256,
            confirmed_by=confirmed_by,
        )
