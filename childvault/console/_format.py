"""How the console shows values: local time, labels, and data made visible.

Labels are marked with :func:`childvault._i18n.N_` so the catalog extractor sees
them; they are translated when a page is rendered, in the session's language.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from childvault import _labels
from childvault._i18n import N_

#: Officers work in China: times are shown in Beijing time.
try:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        LOCAL_TZ: tzinfo = ZoneInfo("Asia/Shanghai")
    except ZoneInfoNotFoundError:
        # No tz database on this machine: China has kept UTC+8 without DST since 1991.
        LOCAL_TZ = timezone(timedelta(hours=8), "CST")
except ImportError:  # pragma: no cover - zoneinfo is in the standard library since 3.9
    LOCAL_TZ = timezone(timedelta(hours=8), "CST")

#: Audit actions and outcomes, as officers read them: the one table every front
#: end uses (``childvault._labels``).
ACTION_LABELS = _labels.ACTION_LABELS
OUTCOME_LABELS = _labels.OUTCOME_LABELS

STATUS_LABELS = _labels.STATUS_LABELS

SENSITIVITY_LABELS = {"low": N_("low"), "medium": N_("medium"), "high": N_("high")}

#: The default schema's purposes; a custom schema's other purposes show their name.
PURPOSE_LABELS = {
    "case_management": N_("case management"),
    "social_assistance": N_("social assistance"),
    "education_support": N_("education support"),
    "medical_care": N_("medical care"),
    "legal_protection": N_("legal protection"),
    "statistics": N_("statistics"),
}

#: The rights register (``childvault rights``): kinds, who asked, outcomes.
RIGHTS_KIND_LABELS = {
    "access": N_("access or copy"),
    "correct": N_("correction"),
    "delete": N_("deletion"),
    "object": N_("objection"),
}
RIGHTS_BY_LABELS = {"child": N_("the child"), "guardian": N_("a guardian")}
RIGHTS_OUTCOME_LABELS = {
    "done": N_("done"),
    "refused": N_("refused"),
    "withdrawn": N_("withdrawn"),
}
#: The incident register (``childvault incident``): kinds and who was notified.
INCIDENT_KIND_LABELS = {"leak": N_("leak"), "damage": N_("damage"), "loss": N_("loss")}
AUDIENCE_LABELS = {"guardians": N_("the guardians"), "authority": N_("the authority")}
#: An entry of either register.
REGISTER_STATUS_LABELS = {"open": N_("open"), "closed": N_("closed")}

# C0/C1 controls, DEL, and the bidirectional overrides/isolates (which make shown
# text differ from stored text): shown as escapes so a reason written to mislead
# cannot hide, reorder or restyle what the officer reads. Newlines and tabs stay.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(value: object) -> str:
    """``value`` as text with control characters shown as ``\\x1b``-style escapes.

    HTML escaping is left to the template engine (autoescape), which runs after.
    """
    text = "" if value is None else str(value)

    def show(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"

    return _INVISIBLE.sub(show, text)


def parse_time(value: str) -> datetime | None:
    """An RFC 3339 UTC time from the library, or None if it is not one."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def local_time(value: datetime | str | None) -> str:
    """A library time shown in Beijing time to the minute, e.g. ``2026-11-24 17:00``."""
    if not value:
        return ""
    # The public types hold aware datetimes; stored texts are parsed.
    moment = value if isinstance(value, datetime) else parse_time(value)
    if moment is None:
        return visible(value)
    return moment.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")


def split_label(description: str) -> tuple[str, str]:
    """A schema description ``"姓名 / Full name"`` as (Chinese label, English label).

    A description without the ``" / "`` separator is used for both.
    """
    if " / " in description:
        chinese, english = description.split(" / ", 1)
        return chinese.strip(), english.strip()
    return description.strip(), description.strip()
