"""Request bases other than consent, and the transfers register (issue 15 finding 3).

Consent was the only basis for a read: breach notification (P-21) and a
child's own subject-access request (M-17) were blocked when a record's consent
was under an older notice; disclosure required by law (P-18, M-6) was
impossible; a read handing data to another organisation recorded no recipient
(P-17, M-4).
"""

from __future__ import annotations

from datetime import date

import pytest

from childvault.keys import AccessDenied, UsageError
from childvault.vault import Basis
from tests.compliance._notice import filled_notice
from tests.conftest import World, add_children


def _outdated(world: World, n: int = 2) -> list[str]:
    """Records whose consent is under a notice that is no longer current."""
    with world.open("worker1") as v:
        ids = add_children(v, n)
    with world.open("admin") as v:
        v.publish_notice("2027-1", filled_notice("修订后的告知书"))
    return ids


def test_breach_notification_reaches_contacts_despite_an_outdated_notice(world: World) -> None:
    """Finding 3: the guardians of leaked records can be told even without fresh consent."""
    ids = _outdated(world)
    with world.open("officer1") as v:
        incident = v.incident_open("leak", world.clock.now)
        v.incident_add_records(incident.id, ids)
    breach = Basis("breach_notification", link=incident.id)
    with world.open("worker1") as v:
        with pytest.raises(UsageError, match="contact fields only"):
            v.request_access(ids, ["case_notes"], "case_management", "通知", basis=breach)
        req = v.request_access(
            ids, ["name", "guardian_phone"], "case_management", "泄露通知", basis=breach
        )
        # The same records under consent are refused (the notice changed).
        plain = v.request_access(ids, ["guardian_phone"], "case_management", "家访")
    with world.open("officer1") as v:
        with pytest.raises(AccessDenied, match="renew the consent"):
            v.approve(plain)
        token = v.approve(req).token
    with world.open("worker1") as v:
        data = v.read_with_grant(token)
    assert set(data) == set(ids) and all(
        set(d) == {"name", "guardian_phone"} for d in data.values()
    )


def test_subject_access_needs_an_open_checked_rights_request(world: World) -> None:
    """Finding 3 (M-17): a child's own request is answered whatever the consent says."""
    ids = _outdated(world)
    with world.open("officer1") as v:
        unchecked = v.rights_open(
            "access", ids[0], requester="child", received=date(2026, 11, 24), identity_checked=False
        )
        rights = v.rights_open(
            "access", ids[0], requester="child", received=date(2026, 11, 24), identity_checked=True
        )
    with world.open("worker1") as v:
        with pytest.raises(UsageError, match="identity checked"):
            v.request_access(
                ids[:1],
                ["name"],
                "case_management",
                "查询",
                basis=Basis("subject_access", link=unchecked.id),
            )
        with pytest.raises(UsageError, match="exactly its subject"):
            v.request_access(
                ids,
                ["name"],
                "case_management",
                "查询",
                basis=Basis("subject_access", link=rights.id),
            )
        req = v.request_access(
            ids[:1],
            ["name", "case_notes"],
            "case_management",
            "本人查询",
            basis=Basis("subject_access", link=rights.id),
        )
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        assert set(v.read_with_grant(token)[ids[0]]) == {"name", "case_notes"}


def test_subject_access_links_an_access_request_only(world: World) -> None:
    """M-17: a correction or erasure request does not open the child's data to a read."""
    ids = _outdated(world, 1)
    with world.open("officer1") as v:
        correct = v.rights_open(
            "correct", ids[0], requester="child", received=date(2026, 11, 24), identity_checked=True
        )
    with world.open("worker1") as v, pytest.raises(UsageError, match="kind access"):
        v.request_access(
            ids,
            ["name"],
            "case_management",
            "本人查询",
            basis=Basis("subject_access", link=correct.id),
        )


def test_legal_obligation_needs_two_officers_and_is_a_recorded_transfer(world: World) -> None:
    """Finding 3 (P-17, P-18, M-6): disclosure required by law, with its recipient."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    legal = Basis(
        "legal_obligation",
        recipient="某区人民法院",
        provision="《未成年人保护法》第一百一十条",
        assessment="PIA-2026-07",
    )
    with world.open("worker1") as v:
        with pytest.raises(UsageError, match="--provision"):
            v.request_access(
                ids,
                ["name"],
                "legal_protection",
                "协助调查",
                basis=Basis("legal_obligation", recipient="法院"),
            )
        req = v.request_access(
            ids, ["name", "address"], "legal_protection", "协助调查", basis=legal
        )
    with world.open("officer1") as v, pytest.raises(AccessDenied, match="two officers"):
        v.approve(req)
    with world.open("officer2") as v:
        v.cosign(req)
    with world.open("officer2") as v, pytest.raises(AccessDenied, match="two officers"):
        v.approve(req)  # the co-signer cannot also be the approver
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        v.read_with_grant(token)
    with world.open("admin") as v:
        transfers = v.transfers()
    assert len(transfers) == 1
    t = transfers[0]
    # Typed since issue 18 (a Transfer, not a dict); the JSON form is unchanged.
    assert (t.recipient, t.provision, t.assessment) == (
        "某区人民法院",
        "《未成年人保护法》第一百一十条",
        "PIA-2026-07",
    )
    assert list(t.records) == ids and t.fields == ("name", "address") and t.reader == "worker1"
    assert t.at.tzinfo is not None and t.to_json()["records"] == ids


def test_a_forged_basis_index_fails_closed(world: World) -> None:
    """The meta index of a basis is checked against the logged request before use."""
    from childvault.keys import IntegrityError

    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(ids, ["name"], "case_management", "家访")
    with world.open("officer1") as v:
        db = v._session.db
        with db.transaction():
            db.meta.set(f"request_basis:{req}", '{"basis": "subject_access"}')
        with pytest.raises(IntegrityError):
            v.approve(req)


def test_a_transfer_under_consent_names_its_recipient_and_is_registered(world: World) -> None:
    """DESIGN: every disclosure to another organisation is a transfer (P-17), consent too."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    with world.open("worker1") as v:
        with pytest.raises(UsageError, match="--assessment"):
            v.request_access(
                ids, ["name"], "case_management", "转介", basis=Basis(recipient="某社工机构")
            )
        with pytest.raises(UsageError, match="--provision"):
            v.request_access(
                ids, ["name"], "case_management", "转介", basis=Basis(provision="第一条")
            )
        req = v.request_access(
            ids,
            ["name", "school"],
            "case_management",
            "转介至社工机构",
            basis=Basis(recipient="某社工机构", assessment="PIA-2026-09"),
        )
        plain = v.request_access(ids, ["name"], "case_management", "家访")
    with world.open("officer1") as v:
        token = v.approve(req).token  # consent: one officer, as any consent request
        plain_token = v.approve(plain).token
    with world.open("worker1") as v:
        v.read_with_grant(token)
        v.read_with_grant(plain_token)
    with world.open("admin") as v:
        transfers = v.transfers()
        reads = [e["entry"] for e in v.audit_entries() if e["entry"]["action"] == "grant.read"]
    assert len(transfers) == 1  # the plain read handed nothing to another organisation
    t = transfers[0]
    assert (t.recipient, t.assessment, t.provision, t.basis) == (
        "某社工机构",
        "PIA-2026-09",
        None,
        "consent",
    )
    assert t.fields == ("name", "school") and list(t.records) == ids
    assert reads[0]["detail"]["recipient"] == "某社工机构" and "recipient" not in reads[1]["detail"]


def test_removing_a_consent_transfers_index_fails_closed(world: World) -> None:
    """Deleting the index would turn a transfer into a plain read: refused."""
    from childvault.keys import IntegrityError

    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(
            ids,
            ["name"],
            "case_management",
            "转介",
            basis=Basis(recipient="某机构", assessment="A-1"),
        )
    with world.open("officer1") as v:
        db = v._session.db
        with db.transaction():
            db.meta.delete(f"request_basis:{req}")
        with pytest.raises(IntegrityError):
            v.approve(req)
