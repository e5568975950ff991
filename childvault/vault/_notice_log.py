"""The notice register as the verified log gives it (docs/trust.md, "Settings and other meta rows").

The ``meta`` rows ``notices`` (version -> digest, date, publisher, and for a
non-substantive change the version it continues) and ``notice_version`` (the
current one) decide which consents are valid, and every user can edit them
with plain SQL. Each ``notice publish`` is logged (``notice.publish``: version,
SHA-256, non-substantive) in an admin's name and signed by them, so the rows
are checked against a fold of those entries before use; any difference is the
caller's to refuse and log.

The founding version (``2026-1``, the packaged template written by ``init``)
is not logged: its digest in the row is taken as it is unless the version was
re-published later (then the logged digest must match).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from childvault.vault import _audit
from childvault.vault._action_roles import role_at
from childvault.vault._backend import Backend
from childvault.vault._statements import TrustState

#: The notice version every vault starts with (``DEFAULTS`` of ``Vault.init``).
FOUNDING_NOTICE = "2026-1"


def notice_problem(
    db: Backend, state: TrustState, register: Mapping[str, Mapping[str, Any]], current: str | None
) -> str | None:
    """What in the register rows disagrees with the verified log, or None.

    ``db``'s log must have been verified (chain and actor signatures) first.
    """
    logged: dict[str, dict[str, Any]] = {}
    now_current = FOUNDING_NOTICE
    for raw in db.audit.entries_by_action(("notice.publish",)):
        doc = _audit.decode_entry(raw)
        if doc.get("outcome") != "ok":
            continue
        seq = int(doc.get("seq", -1))
        detail = doc.get("detail")
        if not isinstance(detail, dict):
            return f"log entry {seq} publishes no notice"
        # "held": a vault upgraded from before statements registers its admins
        # after their earlier entries (covered by the chain only).
        if not role_at(state, doc.get("actor"), "admin", seq, mode="held"):
            return f"the notice published at log entry {seq} was not published by an admin"
        version, digest = str(detail.get("version")), str(detail.get("sha256"))
        if version in logged:
            if logged[version]["sha256"] != digest:
                return f"notice {version} was logged with two texts"
        else:
            first: dict[str, Any] = {"sha256": digest}
            if detail.get("non_substantive") is True and version != FOUNDING_NOTICE:
                first.update(non_substantive=True, continues=now_current)
            logged[version] = first
        now_current = version
    if current != now_current:
        return f"the current notice is {current!r} in the database but {now_current!r} in the log"
    for version, expected in logged.items():
        row = register.get(version)
        if row is None:
            return f"published notice {version} is missing from the register"
        if str(row.get("sha256")) != expected["sha256"]:
            return f"the digest of notice {version} differs from its log entry"
        if bool(row.get("non_substantive")) != bool(expected.get("non_substantive")):
            return f"notice {version} is marked non-substantive differently from its log entry"
        if expected.get("non_substantive") and row.get("continues") != expected["continues"]:
            return f"notice {version} continues another version than its log entry says"
    for version, row in register.items():
        if version in logged:
            continue
        if version != FOUNDING_NOTICE:
            return f"notice {version} is in the register but was never published (no log entry)"
        if row.get("non_substantive") or "continues" in row:
            return f"the founding notice {version} cannot continue another version"
    return None
