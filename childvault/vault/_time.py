"""Time helpers. Every function that depends on the time takes it as an argument,
so expiry and retention are tested with an injected clock, never by sleeping."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from childvault._i18n import _t
from childvault.keys import UsageError

Clock = Callable[[], datetime]

#: The vault setting (in ``meta``) naming the institution's time zone.
ZONE_SETTING = "time_zone"


class _Settings(Protocol):
    """Anything with the ``get`` of the backend's ``meta`` repository."""

    def get(self, key: str) -> str | None: ...


def system_clock() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """RFC 3339 UTC text with microseconds, e.g. ``2026-11-24T08:00:00.000000Z``."""
    if moment.tzinfo is None:
        raise ValueError(_t("naive datetime: pass an aware UTC time"))
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """Parse the output of :func:`iso` (or any RFC 3339 time with an offset)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(_t("time without an offset"))
    return moment.astimezone(UTC)


#: The time zone of the dates the law counts (retention, age, deadlines) unless
#: the vault's ``time_zone`` setting names another (issue 15 finding 6): a
#: record due for deletion "today" must not stay approvable until 08:00 in Beijing.
DEFAULT_ZONE = "Asia/Shanghai"


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone ``name`` (``None`` or empty: :data:`DEFAULT_ZONE`).

    UsageError if the name is unknown.
    """
    try:
        return ZoneInfo(name or DEFAULT_ZONE)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(
            _t("unknown time zone {name!r}: use an IANA name such as Asia/Shanghai", name=name)
        ) from exc


def today(moment: datetime, zone_name: str | None = None) -> date:
    """The calendar date of ``moment`` in the institution's time zone (default Asia/Shanghai).

    Every legal date (retention, the fourteenth birthday, deadlines) is
    counted with it; log timestamps stay UTC.
    """
    return moment.astimezone(zone(zone_name)).date()


_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhd]?)\s*$")
_UNITS = {"s": 1, "": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``1h`` or ``2d`` (a bare number means seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(_t("invalid duration {text!r}: use e.g. 30m, 1h or 2d", text=text))
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_when(text: str, *, now: datetime) -> datetime:
    """Parse an absolute time (ISO date or date-time, UTC if no offset) or ``-7d`` style."""
    text = text.strip()
    if text.startswith("-"):
        return now - parse_duration(text[1:])
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(
            _t("invalid time {text!r}: use 2026-11-01, 2026-11-01T08:00 or -7d", text=text)
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def legal_today(settings: _Settings, moment: datetime) -> date:
    """:func:`today` in the zone of the vault's ``time_zone`` setting (default Asia/Shanghai)."""
    return today(moment, settings.get(ZONE_SETTING))
