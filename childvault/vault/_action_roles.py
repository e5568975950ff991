"""Which roles may log which actions (review RV2-2, docs/trust.md "Entries reserved to a role").

Any user may append a log entry of any action in their own name, signed by
their own key: the chain and the signature say who wrote it, not that they
were allowed to. An entry of an action reserved to a role decides something
for its readers (who signed a setting, which anonymised releases exist, who
co-signed a decommissioning), so it counts only when its author held that
role. The one table below is read by the server, which refuses such an entry
at ``audit.append`` from a user without the role, and by each reader in the
embedded mode, which ignores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from childvault.vault import _settings
from childvault.vault._statements import TrustState

_OFFICER = frozenset({"officer"})
_ADMIN = frozenset({"admin"})
_ANY = frozenset({"staff", "officer", "admin"})

#: A successful entry of each action may be logged only by a holder of one of its
#: roles (the role its command requires). Refined per entry by
#: :func:`reserved_roles`: a setting by its signer role, a decommissioning by phase.
ROLE_ACTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "setting.set": frozenset({"admin", "officer"}),
        "export.anonymized": _OFFICER,
        "vault.decommission": frozenset({"admin", "officer"}),
        "notice.publish": _ADMIN,
        "grant.revoke": _OFFICER,
        "request.cosign": _OFFICER,
        # The registers (review RV10-1): a rights request opened with the identity
        # checked is a basis consent cannot block (subject_access), an incident's
        # records one for their contacts (breach_notification); a closing or a
        # notification ends a deadline.
        "rights.open": _OFFICER,
        "rights.close": _OFFICER,
        "rights.link": _OFFICER,
        "incident.open": _OFFICER,
        "incident.add_records": _OFFICER,
        "incident.notify": _OFFICER,
        "incident.close": _OFFICER,
    }
)

#: ``rights.link`` and ``rights.close`` naming the operation that answered the
#: request: logged by whoever may run it (``correct`` an officer, ``delete`` an
#: officer or admin, ``report subject`` any user with a grant). Readers also
#: check that the answer is the one of the request's kind (``_svc_rights``).
_ANSWERS = MappingProxyType(
    {
        "record.correct": _OFFICER,
        "record.delete": frozenset({"officer", "admin"}),
        "report.subject": _ANY,
    }
)

#: ``vault.decommission`` by phase: an officer lists the contacts and co-signs,
#: an admin starts and finishes.
_DECOMMISSION = MappingProxyType(
    {"contacts": _OFFICER, "cosign": _OFFICER, "start": _ADMIN, "done": _ADMIN}
)


def reserved_roles(doc: Mapping[str, Any]) -> frozenset[str] | None:
    """The roles one of which the author of entry ``doc`` must hold, or None when
    any user may log it (other actions, and every entry not ``ok``: a refused
    attempt is logged in the name of whoever tried)."""
    action = doc.get("action")
    if doc.get("outcome") != "ok" or not isinstance(action, str):
        return None
    roles = ROLE_ACTIONS.get(action)
    if roles is None:
        return None
    detail = doc.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    if action == "setting.set":
        key = detail.get("key")
        spec = _settings.SPECS.get(key) if isinstance(key, str) else None
        return roles if spec is None else frozenset({spec.signer})
    if action == "vault.decommission":
        phase = detail.get("phase")
        return _DECOMMISSION.get(phase, roles) if isinstance(phase, str) else roles
    if action in ("rights.link", "rights.close") and "answer" in detail:
        answer = detail["answer"]
        return _ANSWERS.get(answer, roles) if isinstance(answer, str) else roles
    return roles


def held(state: TrustState, actor: object, roles: frozenset[str], seq: int) -> bool:
    """Whether ``actor`` is a verified user holding one of ``roles``, not disabled
    before ``seq``.

    Not "active at seq" (as ``_notice_log._admin``): a vault upgraded from before
    statements registers its users after their earlier entries.
    """
    user = state.users.get(actor) if isinstance(actor, str) else None
    return (
        user is not None
        and bool(roles & frozenset(user.roles))
        and (user.active_until is None or seq < user.active_until)
    )


def logged_by_role(state: TrustState | None, doc: Mapping[str, Any]) -> bool:
    """Whether entry ``doc`` counts: its action is no role's, or its author held
    the role at its position in the verified ``state``. The log must have been
    verified (chain, signatures) first; with no state (a vault from before
    anchors, nothing verified) every entry counts, as before."""
    roles = reserved_roles(doc)
    if roles is None or state is None:
        return True
    seq = doc.get("seq")
    return type(seq) is int and held(state, doc.get("actor"), roles, seq)
