"""Labels of the audit log's actions and outcomes, as people read them.

One table for every front end: ``audit log`` on the command line and the
officers' console show an entry's action by its label in the reader's
language (the action's code stays in ``--json`` and in the log itself).
Labels are marked with :func:`childvault._i18n.N_` so the catalog extractor
sees them; they are translated when shown. ``tests/i18n/test_labels.py``
fails when an action the library logs has no label here.
"""

from __future__ import annotations

from childvault._i18n import N_

__all__ = [
    "ACTION_LABELS",
    "OUTCOME_LABELS",
    "STATUS_LABELS",
    "action_label",
    "outcome_label",
    "status_label",
]

#: Every audit action (``childvault.vault._audit.ACTIONS``) -> its English label.
ACTION_LABELS: dict[str, str] = {
    "vault.init": N_("vault created"),
    "vault.upgrade": N_("vault upgraded"),
    "vault.backup": N_("vault backed up"),
    "vault.gc": N_("orphaned Vault salts destroyed"),
    "vault.decommission": N_("vault decommissioned"),
    "decommission.read_contacts": N_("decommissioning contact list opened"),
    "user.add": N_("user added"),
    "user.invite": N_("user invited"),
    "user.countersign": N_("registration countersigned"),
    "user.renew": N_("keys renewed"),
    "user.disable": N_("user disabled"),
    "trust.refuse": N_("unverifiable change refused"),
    "custodian.create": N_("custodian key created"),
    "custodian.share": N_("custodian key shared"),
    "record.create": N_("record created"),
    "record.list": N_("records listed"),
    "record.find": N_("record searched"),
    "record.correct": N_("record corrected"),
    "record.delete": N_("record deleted"),
    "record.resign": N_("record re-signed"),
    "request.create": N_("access requested"),
    "request.list": N_("requests listed"),
    "request.approve": N_("request approved"),
    "request.deny": N_("request denied"),
    "request.cosign": N_("request co-signed"),
    "grant.read": N_("record read with a grant"),
    "grant.revoke": N_("grant revoked"),
    "audit.checkpoint": N_("log checkpoint"),
    "audit.read": N_("log read"),
    "audit.rebaseline": N_("log rebaselined after a restore"),
    "consent.withdraw": N_("consent withdrawn"),
    "consent.add_purpose": N_("consent purpose added"),
    "consent.renew": N_("consent renewed"),
    "retention.sweep": N_("retention sweep"),
    "export.anonymized": N_("anonymised export"),
    "report.subject": N_("subject-access report"),
    "report.incident": N_("incident report"),
    "report.transfers": N_("transfers listed"),
    "keys.rotate": N_("keys rotated"),
    "notice.publish": N_("notice published"),
    "rights.open": N_("rights request registered"),
    "rights.close": N_("rights request closed"),
    "rights.list": N_("rights register read"),
    "rights.link": N_("operation linked to a rights request"),
    "incident.open": N_("incident registered"),
    "incident.add_records": N_("records added to an incident"),
    "incident.notify": N_("incident notification recorded"),
    "incident.close": N_("incident closed"),
    "incident.list": N_("incident register read"),
    "incident.contacts": N_("incident contact list written"),
    "server.refuse": N_("request refused by the server"),
    "setting.set": N_("setting signed"),
}

#: Outcomes of an entry -> their English label.
OUTCOME_LABELS: dict[str, str] = {"ok": N_("done"), "denied": N_("refused"), "error": N_("failed")}

#: Statuses of requests and grants -> their English label (the code stays in ``--json``).
STATUS_LABELS: dict[str, str] = {
    "pending": N_("pending"),
    "approved": N_("approved"),
    "denied": N_("denied"),
    "active": N_("active"),
    "expired": N_("expired"),
    "revoked": N_("revoked"),
}


def action_label(action: str, locale: str | None = None) -> str:
    """``action``'s label in ``locale`` (the environment's when None); the code if unknown."""
    from childvault._i18n import gettext

    label = ACTION_LABELS.get(action)
    return action if label is None else gettext(label, locale)


def outcome_label(outcome: str, locale: str | None = None) -> str:
    """``outcome``'s label in ``locale`` (the environment's when None); as is if unknown."""
    from childvault._i18n import gettext

    label = OUTCOME_LABELS.get(outcome)
    return outcome if label is None else gettext(label, locale)


def status_label(status: str, locale: str | None = None) -> str:
    """``status``'s label in ``locale`` (the environment's when None); as is if unknown."""
    from childvault._i18n import gettext

    label = STATUS_LABELS.get(status)
    return status if label is None else gettext(label, locale)
