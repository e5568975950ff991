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

from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Any, Literal

from childvault.vault import _settings
from childvault.vault._statements import TrustState

_OFFICER = frozenset({"officer"})
_ADMIN = frozenset({"admin"})
_OFFICER_ADMIN = frozenset({"admin", "officer"})
#: The roles that write records and request access (``_session.WRITERS``).
_WRITERS = frozenset({"staff", "officer"})

#: A successful entry of each action may be logged only by a holder of one of its
#: roles (the roles its command requires). Refined per entry by
#: :func:`reserved_roles`: a setting by its signer role, a decommissioning by
#: phase, a rights request's link and closing by the answer, a user's own
#: registration or renewal request by anyone. Every action the package logs is
#: here or in :data:`ANY_USER_ACTIONS` (tests/attack/test_role_actions.py).
ROLE_ACTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        # Settings, releases and the vault's life.
        "setting.set": _OFFICER_ADMIN,
        "export.anonymized": _OFFICER,
        "vault.decommission": _OFFICER_ADMIN,
        # The co-signing officer opens the contact list (also after decommissioning).
        "decommission.read_contacts": _OFFICER,
        "notice.publish": _ADMIN,
        "vault.init": _ADMIN,
        "vault.upgrade": _ADMIN,
        "vault.gc": _ADMIN,
        "vault.backup": _OFFICER_ADMIN,
        # Access.
        "request.create": _WRITERS,
        "request.approve": _OFFICER,
        "request.deny": _OFFICER,
        "request.cosign": _OFFICER,
        "grant.revoke": _OFFICER,
        # Records and consent.
        "record.create": _WRITERS,
        "record.find": _WRITERS,
        "record.correct": _OFFICER,
        "record.delete": _OFFICER_ADMIN,
        "consent.withdraw": _OFFICER_ADMIN,
        "consent.renew": _OFFICER,
        "consent.add_purpose": _OFFICER,
        "retention.sweep": _OFFICER_ADMIN,
        # The registers folded from the log (incidents, rights requests).
        "incident.open": _OFFICER,
        "incident.add_records": _OFFICER,
        "incident.notify": _OFFICER,
        "incident.close": _OFFICER,
        "incident.contacts": _OFFICER,
        "incident.list": _OFFICER_ADMIN,
        "rights.open": _OFFICER,
        "rights.link": _OFFICER,
        "rights.close": _OFFICER,
        "rights.list": _OFFICER_ADMIN,
        # Reports and the log.
        "report.incident": _OFFICER_ADMIN,
        "report.transfers": _OFFICER_ADMIN,
        "audit.read": _OFFICER_ADMIN,
        "audit.checkpoint": _OFFICER_ADMIN,
        "audit.rebaseline": _OFFICER,
        # Users and keys (their statements are verified on their own as well).
        "user.add": _ADMIN,
        "user.invite": _ADMIN,
        "user.disable": _ADMIN,
        "user.renew": _ADMIN,
        "user.countersign": _OFFICER_ADMIN,
        "custodian.create": _OFFICER_ADMIN,
        "custodian.share": _OFFICER,
        "keys.rotate": _OFFICER_ADMIN,
    }
)

#: Actions any user may log, each for its reason: a read through one's own grant
#: and the subject report made with it, a listing every role may make, a
#: record re-signed under its own record statement (checked by its own rules,
#: _record_trust), and the refusals logged in the name of whoever was refused.
ANY_USER_ACTIONS: frozenset[str] = frozenset(
    {
        "grant.read",
        "report.subject",
        "record.list",
        "request.list",
        "record.resign",
        "trust.refuse",
        "server.refuse",
    }
)

#: ``vault.decommission`` by phase: an officer lists the contacts and co-signs,
#: an admin starts and finishes.
_DECOMMISSION = MappingProxyType(
    {"contacts": _OFFICER, "cosign": _OFFICER, "start": _ADMIN, "done": _ADMIN}
)

#: ``rights.link`` and ``rights.close`` by the operation that answered the request
#: (``_svc_rights.RIGHTS_ANSWERS``): whoever may make it links it. A subject
#: report is made by any user holding a grant for the record (None: anyone).
_RIGHTS_ANSWERS: Mapping[str, frozenset[str] | None] = MappingProxyType(
    {"record.correct": _OFFICER, "record.delete": _OFFICER_ADMIN, "report.subject": None}
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
    if action in ("rights.link", "rights.close"):
        answer = detail.get("answer")
        if isinstance(answer, str) and answer in _RIGHTS_ANSWERS:
            return _RIGHTS_ANSWERS[answer]
        return roles
    if action in ("user.add", "user.renew") and detail.get("user") == doc.get("actor"):
        # A user's own registration (``upgrade``) or renewal request: pending
        # until an admin countersigns it (its statement says so).
        return None
    return roles


#: How :func:`role_at` reads a verified registration's span (see its docstring).
Mode = Literal["was_active", "held"]


def role_at(
    state: TrustState | None,
    actor: object,
    roles: str | Collection[str],
    seq: object,
    *,
    mode: Mode,
) -> bool:
    """Whether ``actor`` held one of ``roles`` at log position ``seq``, by its
    verified registration in ``state`` only (the one role predicate).

    Fails closed: no verified state (an identity made before anchors), an actor
    with no verified registration, or a position that is no whole number is no
    role. The ``users`` row is never read: every user can edit it with SQL.

    ``mode="was_active"``: registered at or before ``seq`` and not disabled
    before it. For an entry that lets something go now: a co-signature counted
    for an approval (``_svc_access`` ``_cosigners``, RV9-1) and the approval a
    server releases keys on (``_release_keys.logged_terms``). It must have been
    made under the verified registration: an entry from before it (a vault
    upgraded from before statements, covered by the chain only) lets nothing go.

    ``mode="held"``: holds the role and was not disabled before ``seq``; the
    registration may come later (an upgraded vault registers its users after
    their earlier entries). For entries where counting one is the safe side or
    that stay readable across an upgrade: a revocation (``logged_terms``,
    RV9-4: one more counted denies reads), the end of collection
    (``Session.accepting_records``, RV9-5: an admin's start from before the
    upgrade still ends it), and the entries of :data:`ROLE_ACTIONS` as
    :func:`logged_by_role` reads them (a setting's signer, a logged release).
    """
    wanted = {roles} if isinstance(roles, str) else set(roles)
    user = state.users.get(actor) if state is not None and isinstance(actor, str) else None
    if user is None or type(seq) is not int or not wanted & set(user.roles):
        return False
    if user.active_until is not None and seq >= user.active_until:
        return False
    return mode == "held" or user.active_from <= seq


def logged_by_role(state: TrustState | None, doc: Mapping[str, Any]) -> bool:
    """Whether entry ``doc`` counts: its action is no role's, or its author held
    the role at its position in the verified ``state``. The log must have been
    verified (chain, signatures) first; with no state (a vault from before
    anchors, nothing verified) every entry counts, as before."""
    roles = reserved_roles(doc)
    if roles is None or state is None:
        return True
    return role_at(state, doc.get("actor"), roles, doc.get("seq"), mode="held")
