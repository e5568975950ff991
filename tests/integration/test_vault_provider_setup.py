"""VaultProvider against a real OpenBao server: failures name what failed
(server down, sealed, silent, TLS, tokens), logins, setup and its audit-device
and Control Groups checks, diagnosis, settings. The contract itself (policies,
grants, shredding, rotation, batching) is in test_vault_provider.py.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from childvault.keys import (
    AccessDenied,
    ConfigError,
    FieldKey,
    Identity,
    ProviderUnavailable,
    RecordKeys,
    Selection,
    UsageError,
    VaultProvider,
    VaultSettings,
    setup_vault,
)

from ._vault_provider_data import (
    ADMIN,
    OFFICER,
    STAFF,
    record,
    salt_doc,
    wrapped,
)
from .conftest import BaoServer, free_port

pytestmark = pytest.mark.vault


# -- failures ----------------------------------------------------------------------------------


def test_server_down_names_the_address(vault_id: str) -> None:
    port = free_port()
    settings = VaultSettings(addr=f"http://127.0.0.1:{port}", timeout=2)
    provider = VaultProvider(settings, vault_id, token="hvs.secret-token-value")
    with pytest.raises(ProviderUnavailable) as info:
        provider.wrap([record()])
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "is the server running? check VAULT_ADDR" in message
    assert "secret-token-value" not in message
    assert info.value.exit_code == 5


def test_stopped_and_sealed_server(
    make: Callable[..., VaultProvider], spare_openbao: BaoServer, alice: Identity
) -> None:
    staff = make("staff", spare_openbao)
    officer = make("officer", spare_openbao)
    rec = record()
    (blob,) = staff.wrap([rec])

    spare_openbao.seal()
    with pytest.raises(ProviderUnavailable, match=r"sealed.*unseal it"):
        staff.wrap([record()])
    with pytest.raises(ProviderUnavailable, match="sealed"):
        officer.release([Selection(wrapped(rec, blob), ["name"])], alice.public, "g")
    report = staff.diagnose()
    assert report["reachable"] is True and report["sealed"] is True and report["ok"] is False
    spare_openbao.unseal()
    material = officer.release([Selection(wrapped(rec, blob), ["name"])], alice.public, "g")

    spare_openbao.stop()
    with pytest.raises(ProviderUnavailable) as info:
        staff.redeem(material, alice, "g")
    assert spare_openbao.addr in str(info.value)
    report = staff.diagnose()
    assert report["reachable"] is False and report["ok"] is False
    assert spare_openbao.addr in report["problems"][0]


def test_server_that_never_answers_times_out(vault_id: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        addr = f"http://127.0.0.1:{listener.getsockname()[1]}"
        provider = VaultProvider(VaultSettings(addr=addr, timeout=0.5), vault_id, token="t")
        with pytest.raises(ProviderUnavailable, match=r"did not answer within 0\.5 s"):
            provider.hmac("f", [b"x"])


def test_tls_to_a_plain_server_names_cacert(openbao: BaoServer, vault_id: str) -> None:
    addr = openbao.addr.replace("http://", "https://")
    provider = VaultProvider(VaultSettings(addr=addr), vault_id, token="t")
    with pytest.raises(ProviderUnavailable, match="VAULT_CACERT"):
        provider.hmac("f", [b"x"])


def test_invalid_or_expired_token_says_log_in_again(openbao: BaoServer, vault_id: str) -> None:
    bogus = "hvs.NotARealTokenButSecretLooking"
    provider = VaultProvider(openbao.settings, vault_id, token=bogus)
    with pytest.raises(ProviderUnavailable, match="log in again") as info:
        provider.wrap([record()])
    assert bogus not in str(info.value) and bogus not in str(info.value.detail)
    short = openbao.token(STAFF, ttl="1s")
    provider = VaultProvider(openbao.settings, vault_id, token=short)
    time.sleep(1.5)
    with pytest.raises(ProviderUnavailable, match="renew VAULT_TOKEN"):
        provider.hmac("f", [b"x"])
    missing = VaultProvider(openbao.settings, vault_id, token="")
    with pytest.raises(ProviderUnavailable, match="set VAULT_TOKEN"):
        missing.hmac("f", [b"x"])


def test_token_from_environment(
    openbao: BaoServer, vault_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", openbao.token(STAFF))
    provider = VaultProvider(openbao.settings, vault_id)
    assert len(provider.hmac("f", [b"x"])) == 1


def test_approle_login_and_relogin(openbao: BaoServer, vault_id: str, alice: Identity) -> None:
    if "approle/" not in openbao.api("GET", "sys/auth").json()["data"]:
        openbao.api("POST", "sys/auth/approle", json={"type": "approle"}).raise_for_status()
    openbao.api(
        "POST",
        "auth/approle/role/cv-staff",
        json={"token_policies": STAFF, "token_ttl": "2s", "token_max_ttl": "2s"},
    ).raise_for_status()
    role_id = openbao.api("GET", "auth/approle/role/cv-staff/role-id").json()["data"]["role_id"]
    secret_id = openbao.api("POST", "auth/approle/role/cv-staff/secret-id").json()["data"][
        "secret_id"
    ]
    provider = VaultProvider(openbao.settings, vault_id, approle=(role_id, secret_id))
    first = provider.hmac("f", [b"x"])
    time.sleep(2.5)  # the AppRole token expires; the provider logs in again
    assert provider.hmac("f", [b"x"]) == first
    wrong = VaultProvider(openbao.settings, vault_id, approle=(role_id, "not-the-secret"))
    with pytest.raises(ProviderUnavailable, match="AppRole login") as info:
        wrong.hmac("f", [b"x"])
    assert "not-the-secret" not in str(info.value)


# -- setup and doctor ---------------------------------------------------------------------------


def test_setup_is_idempotent(openbao: BaoServer) -> None:
    lines = setup_vault(openbao.settings, openbao.root_token, allow_no_audit_device=True)
    assert any("audit device: NONE enabled" in line for line in lines)
    assert lines[-1] == "nothing to change: the server was already set up"
    assert any("already enabled at childvault-transit/" in line for line in lines)
    assert any("policy childvault-officer: already up to date" in line for line in lines)


def test_setup_needs_root_and_refuses_conflicting_mounts(spare_openbao: BaoServer) -> None:
    with pytest.raises(AccessDenied, match="root or bootstrap token"):
        setup_vault(spare_openbao.settings, spare_openbao.token(ADMIN))
    spare_openbao.api(
        "POST", "sys/mounts/wrong-kv", json={"type": "kv", "options": {"version": "1"}}
    ).raise_for_status()
    with pytest.raises(ConfigError, match="wrong-kv"):
        setup_vault(
            VaultSettings(addr=spare_openbao.addr, kv_mount="wrong-kv"), spare_openbao.root_token
        )
    # On OpenBao audit devices are declared in the server configuration.
    with pytest.raises(ConfigError, match='audit "file" "childvault"'):
        spare_openbao.setup(audit_file=str(spare_openbao.workdir / "audit.log"))


def test_setup_without_an_audit_device_is_refused(spare_openbao: BaoServer) -> None:
    """Attack-free misconfiguration (issue 14, 5): nothing would record who decrypted."""
    with pytest.raises(ConfigError, match="no audit device is enabled") as info:
        setup_vault(spare_openbao.settings, spare_openbao.root_token)
    assert "--no-audit-device-i-accept-the-risk" in str(info.value)
    # The admin's doctor says so too (staff tokens may not list audit devices).
    admin = VaultProvider(spare_openbao.settings, "v", token=spare_openbao.token(ADMIN))
    report = admin.diagnose()
    admin.close()
    assert report["audit_devices"] == []
    assert any("no audit device" in p for p in report["problems"])


def test_control_groups_probe_reports_that_openbao_does_not_enforce_them(
    spare_openbao: BaoServer,
) -> None:
    from childvault.keys._openbao._controlgroups import PROBE_POLICY, probe_control_groups

    probe = probe_control_groups(spare_openbao.settings, spare_openbao.root_token)
    assert probe["enforced"] is False, probe
    # The probe leaves nothing behind.
    assert spare_openbao.api("GET", f"sys/policies/acl/{PROBE_POLICY}").status_code == 404
    with pytest.raises(ConfigError, match="does not enforce Control Groups"):
        setup_vault(
            spare_openbao.settings,
            spare_openbao.root_token,
            allow_no_audit_device=True,
            control_groups=True,
        )


def test_setup_finds_a_declared_audit_device_and_the_log_holds_no_key(
    bao_binary: str, tmp_path: Path, alice: Identity
) -> None:
    audit_log = tmp_path / "audit.log"
    server = BaoServer(
        bao_binary,
        tmp_path,
        config_hcl=(
            f'audit "file" "childvault" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n'
        ),
    )
    server.start()
    try:
        first = server.setup(audit_file=str(audit_log))
        assert any("audit device: already writing to" in line for line in first)
        assert server.setup(audit_file=str(audit_log))[-1].startswith("nothing to change")
        staff = VaultProvider(server.settings, "v", token=server.token(STAFF))
        officer = VaultProvider(server.settings, "v", token=server.token(OFFICER))
        rec = record()
        (blob,) = staff.wrap([rec])
        material = officer.release([Selection(wrapped(rec, blob), ["name"])], alice.public, "g")
        staff.redeem(material, alice, "g")
        staff.close()
        officer.close()
        text = audit_log.read_text()
        assert "sys/wrapping/unwrap" in text and "childvault-transit/decrypt" in text
        # The audit device HMACs values: no DEK or salt appears in clear.
        assert base64.b64encode(rec.fields["name"].key).decode() not in text
        assert salt_doc(server, rec.record_id)["salt"] not in text
    finally:
        server.close()


def test_diagnose_live_server_reports_roles(make: Callable[..., VaultProvider]) -> None:
    staff_report = make("staff").diagnose()
    assert staff_report["ok"] is True, staff_report["problems"]
    assert staff_report["reachable"] and staff_report["sealed"] is False
    assert staff_report["version"]
    assert staff_report["mounts"]["transit"]["present"] is True
    assert staff_report["mounts"]["kv"]["options"]["version"] == "2"
    assert staff_report["keys"]["dek"]["derived"] is True
    assert staff_report["keys"]["dek"]["exportable"] is False
    assert staff_report["capabilities"]["decrypt"]["capabilities"] == ["deny"]
    assert staff_report["roles"] == ["staff"]
    assert "childvault-staff" in staff_report["token"]["policies"]
    assert make("officer").diagnose()["roles"] == ["staff", "officer"]
    admin_report = make("admin").diagnose()
    assert admin_report["roles"] == ["admin"]
    assert admin_report["capabilities"]["decrypt"]["capabilities"] == ["deny"]
    json.dumps(staff_report)  # printable with --json


def test_diagnose_dead_server_does_not_raise(vault_id: str) -> None:
    settings = VaultSettings(addr=f"http://127.0.0.1:{free_port()}", timeout=1)
    report = VaultProvider(settings, vault_id, token="t").diagnose()
    assert report["reachable"] is False and report["ok"] is False
    assert settings.addr in report["problems"][0]
    assert report["sealed"] is None


def test_diagnose_with_a_bad_token(openbao: BaoServer, vault_id: str) -> None:
    report = VaultProvider(openbao.settings, vault_id, token="hvs.bad").diagnose()
    assert report["reachable"] is True and report["token"] == {"valid": False}
    assert report["ok"] is False and "log in again" in report["problems"][0]


# -- settings ---------------------------------------------------------------------------------


def test_settings_from_env_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "https://vault.example.org:8200/")
    monkeypatch.setenv("VAULT_NAMESPACE", "welfare/east")
    monkeypatch.setenv("VAULT_CACERT", "/etc/ssl/vault-ca.pem")
    monkeypatch.setenv("VAULT_TOKEN", "hvs.must-not-be-stored")
    settings = VaultSettings.from_env(key_name="dek2")
    assert settings.addr == "https://vault.example.org:8200"
    assert settings.namespace == "welfare/east"
    assert settings.cacert == "/etc/ssl/vault-ca.pem"
    assert settings.key_name == "dek2" and settings.index_key_name == "dek2-index"
    text = settings.to_json()
    assert "must-not-be-stored" not in text and "token" not in text.lower()
    assert VaultSettings.from_json(text) == settings
    assert VaultSettings.from_json(json.loads(text)) == settings
    assert VaultSettings.from_env(addr="http://127.0.0.1:8200").addr == "http://127.0.0.1:8200"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"addr": "vault.example.org"},
        {"addr": "http://x", "transit_mount": "../sys"},
        {"addr": "http://x", "key_name": "a/b"},
        {"addr": "http://x", "timeout": 0},
        {"addr": "http://x", "index_key_version": 0},
        {"addr": "http://x", "wrap_ttl": "forever"},
        {"addr": "http://x", "salt_workers": 0},
        {"addr": "http://x", "salt_workers": 33},
        {"addr": "http://x", "salt_workers": True},
    ],
)
def test_settings_reject_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        VaultSettings(**kwargs)


def test_settings_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    with pytest.raises(ConfigError, match="VAULT_ADDR"):
        VaultSettings.from_env()
    with pytest.raises(ConfigError, match="unknown"):
        VaultSettings.from_env(addr="http://x", token="no")
    with pytest.raises(ConfigError, match="unknown"):
        VaultSettings.from_json('{"addr": "http://x", "token": "no"}')
    with pytest.raises(ConfigError):
        VaultSettings.from_json("not json")


def test_record_ids_cannot_escape_the_salt_path(
    make: Callable[..., VaultProvider],
) -> None:
    staff = make("staff")
    for bad in ("../../sys/policies/acl/x", "a/b", "", "x?y"):
        with pytest.raises(UsageError):
            staff.wrap([RecordKeys(bad, 1, {"n": FieldKey(1, os.urandom(32))})])


def test_rate_limit_and_missing_mounts_are_named(spare_openbao: BaoServer, vault_id: str) -> None:
    # Real conditions, produced on a real server: a rate-limit quota, wrong mount names.
    spare_openbao.api(
        "POST",
        "sys/quotas/rate-limit/childvault-test",
        json={"path": "childvault-transit/", "rate": 1, "interval": "60s"},
    ).raise_for_status()
    provider = VaultProvider(spare_openbao.settings, vault_id, token=spare_openbao.root_token)
    with pytest.raises(ProviderUnavailable, match="rate-limiting"):
        for _ in range(3):
            provider.hmac("f", [b"x"])
    for settings in (
        VaultSettings(addr=spare_openbao.addr, transit_mount="no-transit"),
        VaultSettings(addr=spare_openbao.addr, kv_mount="no-kv"),
    ):
        wrong = VaultProvider(settings, vault_id, token=spare_openbao.root_token)
        with pytest.raises(ConfigError, match="childvault vault setup"):
            wrong.wrap([record()])
