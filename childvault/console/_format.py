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

#: Audit actions, as officers read them.
ACTION_LABELS = {
    "vault.init": N_("vault created"),
    "user.add": N_("user added"),
    "custodian.create": N_("custodian key created"),
    "custodian.share": N_("custodian key shared"),
    "record.create": N_("record created"),
    "record.list": N_("records listed"),
    "record.find": N_("record searched"),
    "record.correct": N_("record corrected"),
    "record.delete": N_("record deleted"),
    "request.create": N_("access requested"),
    "request.list": N_("requests listed"),
    "request.approve": N_("request approved"),
    "request.deny": N_("request denied"),
    "grant.read": N_("record read with a grant"),
    "grant.revoke": N_("grant revoked"),
    "audit.checkpoint": N_("log checkpoint"),
    "audit.read": N_("log read"),
    "consent.withdraw": N_("consent withdrawn"),
    "consent.add_purpose": N_("consent purpose added"),
    "consent.renew": N_("consent renewed"),
    "retention.sweep": N_("retention sweep"),
    "export.anonymized": N_("anonymised export"),
    "report.subject": N_("subject-access report"),
    "report.incident": N_("incident report"),
    "keys.rotate": N_("keys rotated"),
    "vault.decommission": N_("vault decommissioned"),
    "notice.publish": N_("notice published"),
}

# Actions logged since this table was written (re-signing, invites, renewals,
# registers...) take their label from the one table of every front end.
for _action, _label in _labels.ACTION_LABELS.items():
    ACTION_LABELS.setdefault(_action, _label)

OUTCOME_LABELS = {"ok": N_("done"), "denied": N_("refused"), "error": N_("failed")}

STATUS_LABELS = {
    "pending": N_("pending"),
    "approved": N_("approved"),
    "denied": N_("denied"),
    "active": N_("active"),
    "expired": N_("expired"),
    "revoked": N_("revoked"),
}

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
