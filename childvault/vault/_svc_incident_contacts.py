"""The guardian contact list of an incident (P-21): ``incident contacts``.

Kept apart from :mod:`._svc_incidents` because it uses the access service
(requests, reads), which itself consults the incident register: one module
importing both keeps the import graph free of cycles.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from childvault._i18n import _t
from childvault.keys import DecryptionFailed, UsageError
from childvault.keys._files import atomic_write
from childvault.vault._audit import Event
from childvault.vault._policy import CONTACT_FIELDS
from childvault.vault._svc_access import AccessService, Basis
from childvault.vault._svc_incidents import IncidentService

#: Format of the guardian contact list ``incident contacts`` writes (sealed).
CONTACTS_FORMAT = "childvault-incident-contacts/1"


def contacts(
    service: IncidentService,
    access: AccessService,
    incident_id: str,
    *,
    tokens: Sequence[str] = (),
    out: Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Officer: the guardian contact list of an incident, in two steps (P-21).

    Without ``tokens``: file ``breach_notification`` requests for the contact
    fields of the incident's live records (one per ``max_records`` records)
    and return their ids; another officer approves them (four eyes: nobody
    approves their own request). With the approval ``tokens`` and ``out``:
    read through each grant (each read logged like any other), check that
    every grant is a breach notification of this incident, and write the list
    sealed to the acting officer's own key (mode 0600); the ``incident.contacts``
    entry carries the file's SHA-256 and the count. Open it with
    :func:`open_contacts`. Deleted records have no contacts left to list.
    """
    s = service.s
    moment = s.now(now)
    s.require(("officer",), "incident.contacts", moment, _t("listing the contacts of an incident"))
    row = service._open_row(incident_id)
    if not tokens:
        live = [r for r in row["records"] if s.db.records.get(r) is not None]
        if not live:
            raise UsageError(
                _t(
                    "incident {id} names no live record: there are no contacts to list",
                    id=row["id"],
                )
            )
        fields = [f for f in CONTACT_FIELDS if any(f in t.fields for t in s.schema.types.values())]
        purpose = (
            "case_management" if "case_management" in s.schema.purposes else s.schema.purposes[0]
        )
        cap = int(s.setting("max_records"))
        basis = Basis("breach_notification", link=row["id"])
        requests = [
            access.request_access(
                live[at : at + cap],
                fields,
                purpose,
                f"incident {row['id']}: guardian contact list (P-21)",
                now=moment,
                basis=basis,
            )
            for at in range(0, len(live), cap)
        ]
        return {"incident": row["id"], "requests": requests, "records": len(live)}
    if out is None:
        raise UsageError(_t("--grant needs --out FILE for the sealed contact list"))
    if not out.parent.is_dir():
        raise UsageError(_t("the directory of --out ({dir}) does not exist", dir=out.parent))
    listed: dict[str, dict[str, str]] = {}
    for token in tokens:
        # The grant's basis is checked before the read, so a stray token's use
        # is not spent (the token itself is verified by _check_grant).
        claims = access._check_grant(token, None, None, moment)
        basis = access.basis_of(claims.req, claims.sub)
        if basis.kind != "breach_notification" or basis.link != row["id"]:
            raise UsageError(
                _t(
                    "grant {grant} is not a breach notification of incident {id}",
                    grant=claims.jti,
                    id=row["id"],
                )
            )
        listed.update(access.read_with_claims(token, None, None, moment)[1])
    rows = [{"record_id": rid, **listed[rid]} for rid in sorted(listed)]
    doc = {
        "format": CONTACTS_FORMAT,
        "vault_id": s.vault_id,
        "incident": row["id"],
        "contacts": rows,
    }
    sealed = s.me.public.seal(json.dumps(doc, ensure_ascii=False).encode("utf-8"))
    atomic_write(out, sealed, mode=0o600)
    digest = hashlib.sha256(sealed).hexdigest()
    s.log(
        [
            Event(
                s.user,
                "incident.contacts",
                records=sorted(listed),
                detail={"incident": row["id"], "sha256": digest, "count": len(rows)},
            )
        ],
        moment,
    )
    return {"incident": row["id"], "out": str(out), "records": len(rows), "sha256": digest}


def open_contacts(service: IncidentService, path: Path) -> dict[str, Any]:
    """Officer: open a contact list sealed to the acting officer (:func:`contacts`)."""
    s = service.s
    try:
        doc = json.loads(s.me.unseal(path.read_bytes()))
    except (OSError, ValueError, DecryptionFailed):
        raise UsageError(_t("{path} is not a contact list sealed to you", path=path)) from None
    if not isinstance(doc, dict) or doc.get("format") != CONTACTS_FORMAT:
        raise UsageError(_t("{path} is not a contact list sealed to you", path=path))
    if doc.get("vault_id") != s.vault_id:
        raise UsageError(_t("this contact list is from another vault"))
    return doc
