"""Lifecycle on the local provider: correction, deletion, consent, retention,
decommissioning and custodian-key rotation (P-12, P-19, P-20, P-23, M-12)."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from childvault.keys import (
    AccessDenied,
    ChildVaultError,
    ConfigError,
    KeySlots,
    NotFound,
    UsageError,
    ValidationError,
)
from childvault.vault import Consent, NewRecordInput
from tests._insider import Insider
from tests.compliance._notice import filled_notice
from tests.conftest import World, add_children, child_values, consent


def _vault_id(world: World) -> str:
    return str(json.loads((world.home / "config.json").read_text())["vault_id"])


def _approve_read(
    world: World, ids: list[str], fields: tuple[str, ...]
) -> dict[str, dict[str, str]]:
    with world.open("worker1") as v:
        req = v.request_access(ids, fields, "case_management", "核对")
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        return v.read_with_grant(token)


@pytest.mark.parametrize("how", ["delete", "withdraw", "sweep", "correct"])
def test_shredded_data_is_gone_from_a_database_copy_after_rotate(
    world: World, tmp_path: Path, how: str
) -> None:
    """A copy of vault.db taken before the shred, restored after `keys rotate`,
    yields nothing: the custodian key it needs no longer exists anywhere."""
    with world.open("worker1") as v:
        ids = v.add_records(
            [
                NewRecordInput("child", child_values(0), consent(retain_until=date(2026, 12, 1))),
                NewRecordInput("child", child_values(1), consent()),
            ]
        )
    old_db = tmp_path / "vault.db.bak"
    with world.open("worker1"):
        pass  # closing checkpoints the WAL into vault.db
    shutil.copy(world.home / "vault.db", old_db)
    with world.open("officer1") as v:
        if how == "delete":
            v.delete(ids[0], "监护人申请")
        elif how == "withdraw":
            v.withdraw_consent(ids[0])
        elif how == "correct":
            v.correct(ids[0], "name", "更正后的名字")
    if how == "sweep":
        world.clock.advance(days=30)
        with world.open("admin") as v:
            assert v.retention_sweep().records == (ids[0],)
    with world.open("officer1") as v:
        v.rotate_keys()
    # The old secret is gone from every key slot.
    for officer in ("officer1", "officer2"):
        entries = KeySlots(world.home / "keyslots.json").open(world.ids[officer], _vault_id(world))
        assert sorted(entries) == ["custodian/2", "db", "index"]
    # Restore the old database into the home: nothing opens.
    (world.home / "vault.db-wal").unlink(missing_ok=True)
    (world.home / "vault.db-shm").unlink(missing_ok=True)
    shutil.copy(old_db, world.home / "vault.db")
    with world.open("worker1") as v:
        req = v.request_access([ids[0]], ["name"], "case_management", "from backup")
    with world.open("officer1") as v, pytest.raises(ChildVaultError):
        v.approve(req)


def test_a_database_copy_before_rotation_is_still_readable(world: World, tmp_path: Path) -> None:
    """The honest limit (SECURITY.md): until `keys rotate`, a copied database is
    as readable as the live one for an officer."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
    shutil.copytree(world.home, tmp_path / "copy")
    with world.open("officer1") as v:
        v.delete(ids[0], "申请删除")
    copy = World(tmp_path / "copy", world.ids, world.clock)
    assert _approve_read(copy, ids, ("name",)) == {ids[0]: {"name": child_values(0)["name"]}}


def test_correction_replaces_value_key_and_index(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    new_id = child_values(1)["id_number"]  # a valid number, different from record 0's
    with world.open("officer1") as v:
        assert v.correct(ids[0], "id_number", new_id) == 2
        assert v.correct(ids[0], "id_number", child_values(0)["id_number"]) == 3
    with world.open("worker1") as v:
        assert v.find("id_number", child_values(0)["id_number"]) == [ids[0]]
    assert _approve_read(world, ids[:1], ("id_number",)) == {
        ids[0]: {"id_number": child_values(0)["id_number"]}
    }


def test_correction_is_validated_and_needs_an_officer(world: World) -> None:
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
        with pytest.raises(AccessDenied):
            v.correct(rid, "name", "x")
    with world.open("officer1") as v:
        with pytest.raises(ValidationError, match="sex"):
            v.correct(rid, "sex", "unknown")
        with pytest.raises(UsageError, match="religion"):
            v.correct(rid, "religion", "x")


def test_delete_leaves_a_tombstone_and_logs_no_reason_text(world: World) -> None:
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    with world.open("officer1") as v:
        v.delete(rid, "张三的监护人申请删除")
        with pytest.raises(NotFound, match="already deleted"):
            v.delete(rid, "again")
    with Insider(world, "worker1") as insider:
        (stone,) = insider.rows("tombstones", ["reason", "key_destroyed"])
        assert stone == ("张三的监护人申请删除", 1)
        for table in ("records", "fields", "keyblobs", "blind_index"):
            assert insider.count(table) == 0
        log = b"".join(bytes(e) for (e,) in insider.rows("audit", ["entry"]))
    assert "张三".encode() not in log and b'"category":"request"' in log


def test_consent_age_rule_at_13_years_364_days_and_at_14(world: World) -> None:
    """Consent basis is checked against the date of birth when recorded (M-12)."""
    dob = date(2012, 11, 25)  # 14 on 2026-11-25
    values = child_values(0, date_of_birth=dob.isoformat())
    from childvault.vault._validators import make_id_number

    values["id_number"] = make_id_number("110105", dob, 102)
    values["sex"] = "female"
    child_at_13 = consent(by="child", guardian_informed=True, consented_at=date(2026, 11, 24))
    child_at_14 = consent(by="child", guardian_informed=True, consented_at=date(2026, 11, 25))
    with world.open("worker1") as v, pytest.raises(ValidationError):
        v.add_record("child", values, child_at_13)
    world.clock.advance(days=1)
    with world.open("worker1") as v:
        rid = v.add_record("child", values, child_at_14)
    assert rid


def test_add_purpose_and_notice_renewal(world: World) -> None:
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
        req = v.request_access([rid], ["name"], "education_support", "助学")
    with world.open("officer1") as v:
        with pytest.raises(AccessDenied, match="no consent"):
            v.approve(req)
        old = v.consent_of(rid)
        v.update_consent(
            rid,
            Consent(
                by="guardian",
                consented_at=date(2026, 11, 24),
                notice_version="2026-1",
                purposes=(*old.purposes, "education_support"),
                retain_until=old.retain_until,
            ),
        )
    with world.open("worker1") as v:
        req = v.request_access([rid], ["name"], "education_support", "助学")
    with world.open("officer1") as v:
        assert v.approve(req).grant_id
    # A new notice version requires fresh consent before further use.
    with world.open("admin") as v:
        v.publish_notice("2027-1", filled_notice("修订后的告知书"))
    with world.open("worker1") as v:
        req = v.request_access([rid], ["name"], "education_support", "助学")
    with world.open("officer1") as v:
        with pytest.raises(AccessDenied, match="renew the consent"):
            v.approve(req)
        old = v.consent_of(rid)
        v.update_consent(
            rid,
            Consent(
                by="guardian",
                consented_at=date(2026, 11, 24),
                notice_version="2027-1",
                purposes=old.purposes,
                retain_until=old.retain_until,
            ),
        )
        assert v.approve(req).grant_id


def test_decommission(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 3)
    with world.open("officer1") as v:  # P-23: an officer co-signs first (issue 15)
        v.cosign_decommission(world.home.parent / "contacts.sealed")
    with world.open("admin") as v:
        with pytest.raises(UsageError, match="--confirm"):
            v.decommission(confirm=False)
        report = v.decommission(confirm=True)
    assert report.records_shredded == 3 and report.records_remaining == 0
    assert json.loads((world.home / "decommission-report.json").read_text())["ok"]
    with world.open("worker1") as v:
        with pytest.raises(AccessDenied, match="decommissioned"):
            add_children(v, 1)
        assert v.verify_audit().witnessed >= 1


def test_rotation_is_resumable(world: World) -> None:
    """A rotation interrupted after its start completes when run again."""
    with world.open("worker1") as v:
        ids = add_children(v, 3)

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        raise Stop

    with world.open("officer1") as v, pytest.raises(Stop):
        v.rotate_keys(progress=stop)
    with world.open("officer2") as v:
        report = v.rotate_keys()
    assert report.resumed and report.generation == 2
    assert set(_approve_read(world, ids, ("name",))) == set(ids)


def test_keys_share_gives_a_later_officer_the_custodian(tmp_path: Path) -> None:
    from childvault.vault import Vault
    from tests.conftest import PASSPHRASES

    with Vault.init(
        tmp_path / "h", institution="x", admin="admin", admin_passphrase=PASSPHRASES["admin"]
    ) as v:
        v.add_user("first", ["officer"], "first-passphrase")
        info = v.add_user("second", ["officer"], "second-passphrase")
        assert not info.can_approve
    from childvault.keys import Identity

    first = Identity.load(tmp_path / "h/identities/first.id", "first-passphrase")
    with Vault.open(tmp_path / "h", identity=first) as v:
        v.share_custodian("second")
        assert {u.name: u.can_approve for u in v.users()} == {
            "admin": False,
            "first": True,
            "second": True,
        }


def test_notice_publication_and_hash_in_consent(world: World, tmp_path: Path) -> None:
    """P-10: the version and hash of the notice shown are kept with each consent;
    a new version requires fresh consent before further use."""
    import hashlib

    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
        stored = v.consent_of(rid)
        assert stored.notice_sha256 == v.notices()["2026-1"]["sha256"]
        with pytest.raises(ValidationError, match="never published"):
            v.add_record("child", child_values(1), consent(notice_version="2027-1"))
    text = filled_notice("新版告知书 / new notice")
    with world.open("worker1") as v, pytest.raises(AccessDenied):
        v.publish_notice("2027-1", text)
    with world.open("admin") as v:
        assert v.publish_notice("2027-1", text)["sha256"] == hashlib.sha256(text).hexdigest()
        with pytest.raises(UsageError, match="new version"):
            v.publish_notice("2027-1", text + b"changed")
    with world.open("worker1") as v:
        req = v.request_access([rid], ["name"], "case_management", "核对")
        new = v.add_record("child", child_values(2), consent(notice_version="2027-1"))
        assert v.consent_of(new).notice_sha256 == hashlib.sha256(text).hexdigest()
    with world.open("officer1") as v, pytest.raises(AccessDenied, match="renew"):
        v.approve(req)


def _actions(world: World) -> list[dict[str, object]]:
    with world.open("admin") as v:
        return [e["entry"] for e in v.audit_entries()]


def test_reads_recheck_consent_and_retention(world: World) -> None:
    """A grant issued earlier stops working once consent for its purpose is
    narrowed or the record's retention date passes (P-12, P-14)."""
    with world.open("worker1") as v:
        narrowed = v.add_records(
            [
                NewRecordInput(
                    "child", child_values(0), consent(("case_management", "education_support"))
                )
            ]
        )
        expiring = v.add_records(
            [NewRecordInput("child", child_values(1), consent(retain_until=date(2026, 11, 24)))]
        )
        req1 = v.request_access(narrowed, ["name"], "education_support", "助学")
        req2 = v.request_access(expiring, ["name"], "case_management", "核对")
    # Legal dates are counted in Asia/Shanghai (issue 15): 14:00 UTC is 22:00
    # in Beijing on the last retention day.
    world.clock.advance(hours=5)
    with world.open("officer1") as v:
        t1 = v.approve(req1, uses=3).token
        t2 = v.approve(req2, uses=3, ttl=timedelta(hours=8)).token
        old = v.consent_of(narrowed[0])
        v.update_consent(
            narrowed[0],
            Consent(
                by="guardian",
                consented_at=date(2026, 11, 24),
                notice_version="2026-1",
                purposes=("case_management",),
                retain_until=old.retain_until,
            ),
        )
    from childvault.keys import ApprovalInvalid

    with world.open("worker1") as v:
        with pytest.raises(ApprovalInvalid):
            v.read_with_grant(t1)
        assert v.read_with_grant(t2)  # still within retention today
        world.clock.advance(hours=5)  # 03:00 the next day in Beijing; the token is still valid
        with pytest.raises(ApprovalInvalid):
            v.read_with_grant(t2)
    reasons = [
        str(e["detail"].get("reason"))
        for e in _actions(world)  # type: ignore[union-attr]
        if e["action"] == "grant.read" and e["outcome"] == "denied"
    ]
    assert any("no longer has consent" in r for r in reasons)
    assert any("past its retention date" in r for r in reasons)


def test_consent_change_logs_the_age_check_decryption(world: World) -> None:
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    with world.open("officer1") as v:
        old = v.consent_of(rid)
        v.update_consent(
            rid,
            Consent(
                by="guardian",
                consented_at=date(2026, 11, 24),
                notice_version="2026-1",
                purposes=(*old.purposes, "medical_care"),
                retain_until=old.retain_until,
            ),
        )
    entries = [e for e in _actions(world) if e.get("records") == [rid]]
    check = next(e for e in entries if e["detail"] == {"phase": "age check"})
    assert check["fields"] == ["date_of_birth"] and check["actor"] == "officer1"
    assert entries[-1]["action"] == "consent.add_purpose"
    assert entries[-1]["detail"]["added"] == ["medical_care"]  # type: ignore[index]


def test_listings_and_lookups_are_logged(world: World) -> None:
    """P-15: who looked at which records, even without reading values."""
    with world.open("worker1") as v:
        add_children(v, 2)
        list(v.list_records())
        v.find("id_number", child_values(0)["id_number"])
        v.requests()
    actions = [(e["actor"], e["action"]) for e in _actions(world)]
    for action in ("record.list", "record.find", "request.list"):
        assert ("worker1", action) in actions


def test_decommission_destroys_the_custodian_key(world: World, tmp_path: Path) -> None:
    """After decommissioning, a database copy from before it opens nothing."""
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    with world.open("worker1"):
        pass
    with world.open("officer1") as v:  # P-23: an officer co-signs first (issue 15)
        v.cosign_decommission(world.home.parent / "contacts.sealed")
    shutil.copy(world.home / "vault.db", tmp_path / "before.db")
    with world.open("admin") as v:
        v.decommission(confirm=True)
    for officer in ("officer1", "officer2"):
        entries = KeySlots(world.home / "keyslots.json").open(world.ids[officer], _vault_id(world))
        assert sorted(entries) == ["db", "index"]
    (world.home / "vault.db-wal").unlink(missing_ok=True)
    (world.home / "vault.db-shm").unlink(missing_ok=True)
    shutil.copy(tmp_path / "before.db", world.home / "vault.db")
    with world.open("worker1") as v:
        req = v.request_access(ids, ["name"], "case_management", "from backup")
    with world.open("officer1") as v, pytest.raises(ChildVaultError):
        v.approve(req)


def test_regression_keys_rotate_after_decommission_was_an_internal_error(world: World) -> None:
    """`keys rotate` after `decommission` ended in StopIteration ("internal error")."""
    with world.open("officer1") as v:  # P-23: an officer co-signs first (issue 15)
        v.cosign_decommission(world.home.parent / "contacts.sealed")
    with world.open("admin") as v:
        v.decommission(confirm=True)
    with world.open("officer1") as v, pytest.raises(ConfigError, match="decommissioned"):
        v.rotate_keys()


def test_doctor_warns_while_the_notice_is_the_unfilled_template(world: World) -> None:
    with world.open("admin") as v:
        assert any(name == "notice" and status == "warn" for name, status, _ in v.health())
        v.publish_notice("2027-1", filled_notice("本机构告知书 / our notice"))
        assert not any(name == "notice" for name, _, _ in v.health())
