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

What a consent is, with its stored form, is in :mod:`childvault.vault._consent_model`;
the rules above in :mod:`childvault.vault._consent_rules`. This module reads the
consent columns of an import row or CLI options (:func:`parse_consent_columns`,
:class:`ImportConsents`) and re-exports the others' public names, so every
consent name is still imported from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date

from childvault._i18n import _t, join
from childvault.keys._errors import ValidationError
from childvault.vault._consent_model import _NOTICE_RE, CONSENT_AGE, CONSENT_PARTIES, Consent
from childvault.vault._consent_rules import BACKDATE_SETTING as BACKDATE_SETTING
from childvault.vault._consent_rules import (
    DEFAULT_BACKDATE_DAYS,
    _check_after_birth,
    _check_basis,
    _check_rules,
    _confirmed_by,
    age_on,
    backdate_window,
    check_backdating,
    check_consent,
    children_due,
    fourteenth_birthday,
)
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

_PURPOSE_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
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
_TRUE = ("yes", "true", "1", "y", "是")
_FALSE = ("no", "false", "0", "n", "否", "")
_BY_SPELLINGS = {
    "guardian": "guardian",
    "监护人": "guardian",
    "child": "child",
    "儿童": "child",
    "本人": "child",
}


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
