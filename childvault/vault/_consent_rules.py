"""The rules a consent is checked against: the basis for the child's age (P-9, M-12),
purposes, dates, the consenting party, back-dating (issue 15) and the fourteenth
birthday from which a guardian's consent no longer suffices.

Separate from the consent itself (:mod:`childvault.vault._consent_model`) and from
reading it from an import row (:mod:`childvault.vault._consent`, whose module
docstring states the rules; it re-exports the public names defined here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import date, timedelta

from childvault._i18n import _t, join
from childvault.keys._errors import ValidationError
from childvault.vault._consent_model import (
    _BY,
    _NOTICE_RE,
    CONSENT_AGE,
    CONSENT_PARTIES,
    Consent,
)
from childvault.vault._schema import Schema

__all__ = [
    "BACKDATE_SETTING",
    "DEFAULT_BACKDATE_DAYS",
    "age_on",
    "backdate_window",
    "check_backdating",
    "check_consent",
    "children_due",
    "fourteenth_birthday",
]

_MAX_RELATION = 32
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: Days ``consented_at`` may precede the record's creation without an officer's
#: confirmation and the signed form's digest (setting ``consent_backdate_days``).
DEFAULT_BACKDATE_DAYS = 30
BACKDATE_SETTING = "consent_backdate_days"


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
    the basis matches the age on ``consented_at`` (:mod:`childvault.vault._consent`).
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
