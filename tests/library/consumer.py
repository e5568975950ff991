"""A program embedding childvault, written against the documented API only.

``tests/library/test_consumer.py`` type-checks this file with ``mypy --strict``
(so every public name it uses must be typed precisely: no ``Any`` leaking
from a lazy import, no ``dict[str, Any]`` where a result type is documented)
and runs it. It imports nothing whose name starts with ``_``.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from childvault.keys import VaultSettings as KeysVaultSettings
from childvault.keys import setup_vault as keys_setup_vault
from childvault.testing import FakeClock
from childvault.vault import (
    AccessDenied,
    Approval,
    ApprovalInvalid,
    BackupReport,
    ChildVaultError,
    Consent,
    DecommissionCosign,
    DecommissionReport,
    DisabledUser,
    ExtraRequired,
    GcReport,
    Identity,
    ImportReport,
    InviteSummary,
    KeyRenewal,
    KeyRenewalRequest,
    LocalKeys,
    NewRecordInput,
    OpenBaoCredentials,
    OpenBaoKeys,
    RecordInfo,
    RequestInfo,
    RotationReport,
    Schema,
    SweepReport,
    Transfer,
    UpgradeReport,
    UsageError,
    UserInfo,
    UserInvite,
    Vault,
    VaultSettings,
    VerifyReport,
    setup_vault,
)

PASSPHRASES = {
    "admin": "admin-passphrase",
    "zhang": "zhang-passphrase",
    "li": "li-passphrase",
    "wang": "wang-passphrase",
}


def child(today: date, name: str) -> dict[str, str]:
    """Valid values of a nine-year-old."""
    return {
        "name": name,
        "sex": "男",
        "date_of_birth": date(today.year - 9, 3, 1).isoformat(),
        "guardian_phone": "+86 138 0013 8000",
    }


def create(home: Path, clock: FakeClock) -> None:
    """Make a vault with an officer and a worker."""
    with Vault.init(
        home,
        institution="示例儿童福利院",
        admin="admin",
        admin_passphrase=PASSPHRASES["admin"],
        keys=LocalKeys(),
        clock=clock,
    ) as admin:
        officer: UserInfo = admin.add_user("zhang", ["officer"], PASSPHRASES["zhang"])
        worker: UserInfo = admin.add_user("li", ("staff",), PASSPHRASES["li"])
        assert officer.can_approve and not worker.can_approve
        created: datetime = worker.created_at
        assert created.tzinfo is not None
        assert [u.name for u in admin.users()] == ["admin", "li", "zhang"]


def write(home: Path, li: Identity, clock: FakeClock) -> tuple[list[str], str]:
    """The worker adds records and files a request."""
    with Vault.open(home, identity=li, clock=clock) as v:
        today = v.now().date()
        max_ttl: int = v.setting("max_ttl_s")
        notice: str = v.setting("notice_version")
        assert max_ttl == 8 * 3600
        consent = Consent(
            by="guardian",
            consented_at=today,
            notice_version=notice,
            purposes=("case_management",),
            retain_until=today + timedelta(days=10),
        )
        first = v.add_record("child", child(today, "王小明"), consent)
        more = v.add_records([NewRecordInput("child", child(today, "李小红"), consent)])
        csv = home.parent / "rows.csv"
        csv.write_text(
            "name,sex,date_of_birth,consent_by,consented_at,notice_version,purposes,"
            "retain_until\n"
            f"张三,男,{date(today.year - 9, 3, 1)},guardian,{today},{notice},"
            f"case_management,{today + timedelta(days=10)}\n",
            encoding="utf-8",
        )
        report: ImportReport = v.import_file(csv)
        assert report.imported == 1
        infos: list[RecordInfo] = list(v.list_records())
        retain: date = infos[0].retain_until
        assert retain == today + timedelta(days=10)
        assert v.record_info(first).created_at <= v.now()
        assert v.consent_of(first).purposes == ("case_management",)
        request_id = v.request_access([first], ["name"], "case_management", "家访")
        try:
            v.requests("pendng")  # type: ignore[arg-type]
        except UsageError:
            pass
        else:
            raise AssertionError("a misspelt status must be refused")
        return [first, *more], request_id


def approve(home: Path, zhang: Identity, clock: FakeClock, request_id: str) -> Approval:
    """The officer approves the request."""
    with Vault.open(home, identity=zhang, clock=clock) as v:
        pending: list[RequestInfo] = v.requests()
        assert [r.id for r in pending] == [request_id]
        filed: datetime = pending[0].created_at
        approval = v.approve(request_id, ttl=timedelta(minutes=30), uses=1)
        assert approval.expires_at == filed + timedelta(minutes=30)
        v.checkpoint()
        report: VerifyReport = v.verify_audit()
        assert report.witnessed >= 1
        assert v.signer_vkeys()
        return approval


def read(home: Path, li: Identity, clock: FakeClock, token: str, record_id: str) -> None:
    """The worker reads with the token, once."""
    with Vault.open(home, identity=li, clock=clock) as v:
        values: dict[str, dict[str, str]] = v.read_with_grant(token)
        assert values == {record_id: {"name": "王小明"}}
        try:
            v.read_with_grant(token)
        except ApprovalInvalid:
            pass
        else:
            raise AssertionError("a one-use token works once")


def people(home: Path, clock: FakeClock) -> None:
    """Enrolment by invite, key renewal, disabling, upgrade, transfers and vault gc."""
    admin = Identity.unlock(home, "admin", PASSPHRASES["admin"])
    with Vault.open(home, identity=admin, clock=clock) as v:
        invite: UserInvite = v.invite_user("wang", ["staff"], valid_for=timedelta(days=1))
        assert invite.roles == ("staff",) and invite.expires == clock() + timedelta(days=1)
    summary: InviteSummary = Vault.read_invite(invite.invite)
    assert (summary.user, summary.fingerprint) == ("wang", invite.fingerprint)
    assert summary.expires == invite.expires and summary.expires.tzinfo is not None
    identity_file = home / "identities" / "wang.id"
    request = Vault.enroll(invite.invite, PASSPHRASES["wang"], identity_file, clock=clock)
    with Vault.open(home, identity=admin, clock=clock) as v:
        assert v.add_user_from_request(request).name == "wang"
    wang = Identity.unlock(home, "wang", PASSPHRASES["wang"])
    with Vault.open(home, identity=wang, clock=clock) as v:
        pending: KeyRenewalRequest = v.request_key_renewal("wang-new-passphrase")
        assert pending.user == "wang" and pending.identity.exists()
    with Vault.open(home, identity=admin, clock=clock) as v:
        renewed: KeyRenewal = v.approve_key_renewal("wang")
        assert renewed.request == pending.request
        disabled: DisabledUser = v.disable_user("wang", reason="moved to another office")
        assert disabled.revoked_grants == () and not disabled.rotation_required
        copy: BackupReport = v.backup(home.parent / "backup")
        assert (copy.backup / "vault.db").exists() and "vault.db" in copy.files
        transfers: list[Transfer] = v.transfers()
        assert transfers == []
        try:
            gc: GcReport = v.vault_gc(grace=timedelta(days=1))
        except UsageError:
            pass  # vault gc is for the Vault/OpenBao provider
        else:
            raise AssertionError(f"a local vault has no Vault salts: {gc}")
    upgraded: UpgradeReport = Vault.upgrade(
        home, "admin", PASSPHRASES["admin"], confirm=lambda shown: True, clock=clock
    )
    assert upgraded.user == "admin" and upgraded.fingerprint == invite.fingerprint
    assert upgraded.pending == ()


def lifecycle(home: Path, zhang: Identity, clock: FakeClock) -> None:
    """Rotation, the retention sweep and decommissioning."""
    with Vault.open(home, identity=zhang, clock=clock) as v:
        rotation: RotationReport = v.rotate_keys()
        assert rotation.generation == 2 and rotation.trimmed is None
    clock.advance(days=11)
    with Vault.open(home, identity=zhang, clock=clock) as v:
        # Decommissioning needs an officer's co-signature, which first writes
        # the guardian contact list sealed to that officer (P-23).
        cosigned: DecommissionCosign = v.cosign_decommission(home.parent / "contacts.bin")
        assert cosigned.records == 3 and len(cosigned.sha256) == 64
    admin = Identity.unlock(home, "admin", PASSPHRASES["admin"])
    with Vault.open(home, identity=admin, clock=clock) as v:
        sweep: SweepReport = v.retention_sweep(dry_run=True)
        assert sweep.due == 3 and sweep.day == clock().date()
        done: DecommissionReport = v.decommission(confirm=True)
        assert done.records_shredded == 3
        assert v.setting("accepting_records") is False


def main(tmp: Path) -> None:
    """The whole flow in ``tmp``."""
    home = tmp / "home"
    clock = FakeClock(datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
    create(home, clock)
    li = Identity.unlock(home, "li", PASSPHRASES["li"])
    zhang = Identity.unlock(str(home), "zhang", PASSPHRASES["zhang"])
    ids, request_id = write(home, li, clock)
    approval = approve(home, zhang, clock, request_id)
    read(home, li, clock, approval.token, ids[0])
    people(home, clock)
    lifecycle(home, zhang, clock)
    # Closed vaults, wrong types and the Vault provider's configuration.
    v = Vault.open(home, identity=li, clock=clock)
    v.close()
    try:
        list(v.list_records())
    except UsageError as exc:
        assert "closed" in str(exc)
    else:
        raise AssertionError("a closed vault must say so")
    settings: VaultSettings = KeysVaultSettings("http://127.0.0.1:8200")
    keys = OpenBaoKeys(settings, token="root")
    assert keys.credentials == OpenBaoCredentials(token="root")
    assert setup_vault is keys_setup_vault
    assert issubclass(ExtraRequired, ChildVaultError)
    assert issubclass(AccessDenied, ChildVaultError)
    assert Schema.default().types


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
    sys.stdout.write("ok\n")
