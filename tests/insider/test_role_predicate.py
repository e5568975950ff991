"""Issue 12 follow-up (RV9-1, RV9-4, RV9-5): the three role checks of log entries
read the role from the verified registrations only (``_action_roles.role_at``).

An insider (a staff member with their own database key) gives themselves a role
in the ``users`` table with plain SQL and then logs, in their own name and
signed by their own key, the entry only that role may log. Each reader must
still refuse it; each test also shows the entry of the role's real holder
counting, so it can fail.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from childvault.keys import AccessDenied, Identity, IntegrityError
from childvault.server._release_keys import Terms, logged_terms
from childvault.vault import Basis, NewRecordInput, Vault
from childvault.vault._audit import Event
from tests._insider import Insider
from tests.conftest import PASSPHRASES, World, child_values, consent

_LEGAL = Basis("legal_obligation", recipient="court", provision="s.110", assessment="P")


def _promote(world: World, who: str, roles: str) -> None:
    """``who`` writes ``roles`` into their own ``users`` row, as an insider would."""
    with Insider(world, who) as insider:
        assert insider.update("users", {"roles": roles}, {"name": who}) == 1


def _legal_request(world: World) -> str:
    """A staff member's request on a legal-obligation basis (needs two officers)."""
    with world.open("worker1") as v:
        (rid,) = v.add_records(
            [NewRecordInput("child", child_values(2), consent(("case_management",)))]
        )
        return v.request_access([rid], ["name"], "legal_protection", "court", basis=_LEGAL)


def _cosign_event(world: World, who: str, request_id: str) -> Event:
    with world.open("worker1") as v:
        info = v._session.db.access.request(request_id)
    assert info is not None
    return Event(
        who,
        "request.cosign",
        records=info.records,
        fields=info.fields,
        purpose=info.purpose,
        request=request_id,
    )


def test_a_cosignature_by_a_staff_member_promoted_in_the_users_row_is_no_officers(
    world: World,
) -> None:
    """RV9-1 (``_cosigners``, "was_active"): the ``users`` row says officer, the
    verified registration says staff: no second officer for the approval."""
    req = _legal_request(world)
    _promote(world, "worker2", "officer")
    with world.open("worker2") as v:
        v._session.log([_cosign_event(world, "worker2", req)], datetime.now(UTC))
    with world.open("officer1") as v, pytest.raises(AccessDenied, match="two officers"):
        v.approve(req)
    # The real second officer's co-signature counts (the check can pass).
    with world.open("officer2") as v:
        v.cosign(req)
    with world.open("officer1") as v:
        assert v.approve(req).request_id == req


def test_without_a_verified_state_the_users_row_names_no_cosigner(world: World) -> None:
    """RV9-1's old fallback: an officer whose identity holds no anchor (nothing
    verified) took co-signers from the ``users`` rows, which a staff member
    edits. Now such an identity approves nothing in an upgraded vault (issue 12:
    it is told to run `childvault upgrade`)."""
    req = _legal_request(world)
    _promote(world, "worker2", "officer")
    with world.open("worker2") as v:
        v._session.log([_cosign_event(world, "worker2", req)], datetime.now(UTC))
    path = world.home / "identities" / "officer1.id"
    unanchored = Identity.load(path, PASSPHRASES["officer1"])
    unanchored.anchor = None
    with Vault.open(world.home, identity=unanchored, clock=world.clock) as v:
        with pytest.raises(IntegrityError, match="childvault upgrade"):
            v._session.trust()
        with pytest.raises(IntegrityError, match="childvault upgrade"):
            v.approve(req)


def test_a_decommission_start_by_a_staff_member_promoted_to_admin_ends_no_collection(
    world: World,
) -> None:
    """RV9-5 (``accepting_records``, "held"): the ``users`` row says admin, the
    registration says staff: collection stays open."""
    _promote(world, "worker2", "admin")
    start = Event("worker2", "vault.decommission", detail={"phase": "start"})
    with world.open("worker2") as v:
        v._session.log([start], datetime.now(UTC))
    with world.open("worker1") as v:
        assert v._session.accepting_records()
        (rid,) = v.add_records(
            [NewRecordInput("child", child_values(3), consent(("case_management",)))]
        )
        assert rid
    # The same entry in the admin's name ends collection: the row that still says
    # "accepting" is refused.
    with world.open("admin") as v:
        v._session.log([Event("admin", "vault.decommission", detail={"phase": "start"})], v.now())
    with world.open("worker1") as v, pytest.raises(IntegrityError, match="decommissioned"):
        v._session.accepting_records()


def _terms(world: World, grant_id: str) -> Terms | str:
    """What a server reads from the log about ``grant_id`` (its verified state)."""
    with world.open("officer2") as v:
        state = v._session.trust()
        assert state is not None
        return logged_terms(v._session.db, lambda _seq: state, grant_id)


def test_a_revocation_by_a_staff_member_promoted_in_the_users_row_revokes_nothing(
    world: World,
) -> None:
    """RV9-4 (``logged_terms``, "held"): a signed ``grant.revoke`` of a staff member
    whose ``users`` row says officer does not deny the requester their reads."""
    with world.open("worker1") as v:
        (rid,) = v.add_records(
            [NewRecordInput("child", child_values(4), consent(("case_management",)))]
        )
        req = v.request_access([rid], ["name"], "case_management", "visit")
    with world.open("officer1") as v:
        grant = v.approve(req)
    _promote(world, "worker2", "officer")
    planted = Event("worker2", "grant.revoke", request=req, grant=grant.grant_id)
    with world.open("worker2") as v:
        v._session.log([planted], datetime.now(UTC))
    terms = _terms(world, grant.grant_id)
    assert isinstance(terms, Terms) and not terms.revoked
    # An officer's revocation counts.
    with world.open("officer1") as v:
        v.revoke(grant.grant_id)
    terms = _terms(world, grant.grant_id)
    assert isinstance(terms, Terms) and terms.revoked
