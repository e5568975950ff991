"""Decision-bearing vault settings: which exist, who signs them, which values are valid.

A setting that decides anything (how long consent may be back-dated, the
legal time zone, the rights deadlines, the approval limits, the smallest k of
an export) is a signed ``setting.set`` statement in the log (docs/trust.md,
"Settings and other meta rows"), never a ``meta`` row: every user can write
``meta`` with plain SQL. This module is pure: the services and the trust
replay ask it whether a value is valid and who must sign it.

Two signer roles (docs/decisions.md):

- the approval limits (``max_ttl_s``, ``default_ttl_s``, ``max_records``,
  ``max_uses``) bound what officers approve, so an active **admin** signs them
  (an officer must not widen their own limits);
- the witnesses' verifier keys (``witness_keys``, issue 13) decide which
  cosignatures ``audit verify``, ``doctor`` and ``serve`` accept by default,
  so an active **admin** signs them, as the other trust settings;
- the compliance settings (``consent_backdate_days``,
  ``rights_deadline_days.<kind>``, ``time_zone``, ``export_min_k``) are an
  **officer**'s: the role that answers for compliance and already holds the
  custodian key, so a second signature would add little against them, while an
  admin (who cannot decrypt) must not move the legal dates.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from childvault._i18n import _t, join
from childvault.keys._errors import IntegrityError, UsageError
from childvault.vault._note import parse_vkey

#: The statement kind that sets one setting.
KIND = "setting.set"
#: The answer periods the rights register knows (``_svc_rights.RIGHTS_KINDS``).
RIGHTS_KINDS = ("access", "correct", "delete", "object")
_INT = re.compile(r"[0-9]{1,9}")
_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}")


@dataclass(frozen=True)
class Spec:
    """One setting: its default, who signs it, and how a value is checked."""

    key: str
    default: str
    signer: str
    check: Callable[[str, str], str]
    help: str


def _int_in(low: int, high: int) -> Callable[[str, str], str]:
    def check(key: str, value: str) -> str:
        if not _INT.fullmatch(value) or not low <= int(value) <= high:
            raise UsageError(
                _t(
                    "setting {key}: expected a whole number from {low} to {high}",
                    key=key,
                    low=low,
                    high=high,
                )
            )
        return str(int(value))  # one spelling per value: "007" is "7"

    return check


def _time_zone(key: str, value: str) -> str:
    # The pattern first: ZoneInfo reads files named by the key, so no path tricks.
    if len(value) <= 64 and _ZONE.fullmatch(value):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
        else:
            return value
    raise UsageError(_t("setting {key}: use an IANA time zone such as Asia/Shanghai", key=key))


#: At most this many witness keys are recorded (a few witnesses is the design).
MAX_WITNESS_KEYS = 16


def _witness_keys(key: str, value: str) -> str:
    """Verifier keys of HTTP witnesses, comma-separated; canonical: sorted, unique."""
    keys = sorted({k.strip() for k in value.replace("\n", ",").split(",") if k.strip()})
    names: set[str] = set()
    for text in keys:
        try:
            name, _ = parse_vkey(text)
        except IntegrityError as exc:
            raise UsageError(
                _t(
                    "setting {key}: {vkey!r} is not a verifier key ({why})",
                    key=key,
                    vkey=text,
                    why=exc,
                )
            ) from exc
        if name in names:
            raise UsageError(
                _t("setting {key}: two witness keys are named {name!r}", key=key, name=name)
            )
        names.add(name)
    if len(keys) > MAX_WITNESS_KEYS:
        raise UsageError(
            _t("setting {key}: at most {count} witness keys", key=key, count=MAX_WITNESS_KEYS)
        )
    return ",".join(keys)


def witness_keys(value: str) -> list[str]:
    """The witness keys a canonical ``witness_keys`` value names (empty: none)."""
    return [k for k in value.split(",") if k]


_DAY = 86400
SPECS: dict[str, Spec] = {
    spec.key: spec
    for spec in (
        Spec("max_ttl_s", str(8 * 3600), "admin", _int_in(60, 30 * _DAY), "longest grant (s)"),
        Spec("default_ttl_s", "3600", "admin", _int_in(60, 30 * _DAY), "default grant (s)"),
        Spec("max_records", "50", "admin", _int_in(1, 10_000), "records per request"),
        Spec("max_uses", "10", "admin", _int_in(1, 1000), "uses per grant"),
        Spec("consent_backdate_days", "30", "officer", _int_in(0, 366), "back-dating window (d)"),
        Spec("time_zone", "Asia/Shanghai", "officer", _time_zone, "zone of legal dates"),
        Spec("export_min_k", "5", "officer", _int_in(3, 1000), "smallest export k"),
        Spec("witness_keys", "", "admin", _witness_keys, "witnesses' verifier keys"),
        *(
            Spec(
                f"rights_deadline_days.{kind}",
                "15",
                "officer",
                _int_in(1, 90),
                f"answer period of {kind} requests (d)",
            )
            for kind in RIGHTS_KINDS
        ),
    )
}


def spec(key: str) -> Spec:
    """The spec of ``key``; UsageError naming the settings that exist."""
    found = SPECS.get(key) if isinstance(key, str) else None
    if found is None:
        raise UsageError(
            _t("unknown setting {key!r}: one of {keys}", key=key, keys=join(", ", sorted(SPECS)))
        )
    return found


def parse(key: str, value: str) -> str:
    """The canonical text of ``value`` for ``key`` (UsageError if unknown or invalid)."""
    found = spec(key)
    if not isinstance(value, str):
        raise UsageError(_t("setting {key}: the value must be text", key=key))
    return found.check(key, value.strip())


def is_canonical(key: str, value: object) -> bool:
    """Whether ``value`` is a valid value of ``key`` exactly as :func:`parse` spells it."""
    if not isinstance(value, str):
        return False
    try:
        return parse(key, value) == value
    except UsageError:
        return False
