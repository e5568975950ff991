"""Key-provider faults on a real, persistent (Raft) OpenBao server, injected
mid-run: sealed, restarted, stopped during an approval and during a read,
the token revoked, the token expired, a policy rewritten to remove a
permission. (Stopped mid-import is in tests/integration/test_outages.py.)

Each fault must give ProviderUnavailable (exit 5) or AccessDenied (exit 3)
with a message naming what failed, leave nothing half-written (every record
complete with its log entry or absent; ``audit verify`` passes), and the work
must resume once the fault is gone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from childvault.cli.main import cli
from childvault.keys import (
    AccessDenied,
    ChildVaultError,
    Identity,
    IntegrityError,
    ProviderUnavailable,
)
from childvault.vault._importer import file_digest
from tests._insider import Insider
from tests.conftest import (
    PASSPHRASES,
    ROLES,
    World,
    add_children,
    build_template,
    copy_world,
)
from tests.integration.conftest import BaoServer
from tests.reliability._support import (
    audit_entries,
    check_import_state,
    read_sample,
    record_result,
    table_digests,
    verify,
)
from tests.test_records import marked_rows, write_csv

pytestmark = pytest.mark.vault

POLICY = {"staff": "childvault-staff", "officer": "childvault-officer", "admin": "childvault-admin"}
ROWS = 600


@pytest.fixture(scope="module")
def bao(bao_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    with BaoServer(bao_binary, tmp_path_factory.mktemp("fault-bao"), persistent=True) as srv:
        srv.start()
        srv.setup()
        yield srv


@pytest.fixture(scope="module")
def vault_template(
    bao: BaoServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Identity]]:
    home = tmp_path_factory.mktemp("fault-template") / "home"
    settings = json.loads(bao.settings.to_json())
    return home, build_template(home, provider="vault", vault_settings=settings)


def _healthy(bao: BaoServer) -> None:
    """Put the server back: running, unsealed, original policies."""
    if not bao.running:
        bao.start(same_port=True)
    if bao.api("GET", "sys/seal-status").json().get("sealed"):
        bao.unseal()


@pytest.fixture
def world(
    bao: BaoServer, vault_template: tuple[Path, dict[str, Identity]], tmp_path: Path
) -> Iterator[World]:
    _healthy(bao)
    roles = {"admin": "admin", **{name: r[0] for name, r in ROLES.items()}}
    tokens = {n: bao.token([POLICY[r]], ttl="2h") for n, r in roles.items()}
    src, ids = vault_template
    yield copy_world(src, ids, tmp_path / "w", tokens=tokens, provider="vault")
    _healthy(bao)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return marked_rows(ROWS)


@pytest.fixture
def csv_file(rows: list[dict[str, str]], tmp_path: Path) -> Path:
    return write_csv(tmp_path / "rows.csv", rows)


def _import_with_fault(
    world: World, src: Path, fault: Callable[[], None]
) -> tuple[ChildVaultError, int]:
    """Import ``src``; inject ``fault`` after the first committed batch. Returns the
    error and the number of records committed; asserts nothing is half-written."""
    fired = []

    def progress(done: int, total: int) -> None:
        if not fired:
            fired.append(done)
            fault()

    with world.open("worker1") as v, pytest.raises(ChildVaultError) as info:
        v.import_file(src, progress=progress)
    assert fired, "the fault was never injected"
    committed = check_import_state(world, file_digest(src), ROWS)
    verify(world)
    return info.value, committed


def _resume_and_read(world: World, src: Path, rows: list[dict[str, str]], committed: int) -> None:
    with world.open("worker1") as v:
        report = v.import_file(src)
    assert (report.already_done, report.imported) == (committed, ROWS - committed)
    assert check_import_state(world, file_digest(src), ROWS) == ROWS
    assert read_sample(world, rows, k=20) == 20
    verify(world)


def _kv_salts(bao: BaoServer) -> set[str]:
    """Record ids with a salt document in KV (every test's, on this shared server)."""
    reply = bao.api("LIST", "childvault-kv/metadata/records")
    return set(reply.json()["data"]["keys"]) if reply.status_code == 200 else set()


def _orphan_salts(bao: BaoServer, world: World, before: set[str]) -> int:
    """Salts written since ``before`` whose record was never committed (random
    bytes with no data in them; left behind by a batch that failed)."""
    with Insider(world, "worker1") as insider:
        live = {str(r) for (r,) in insider.rows("records", ["id"])}
    return len((_kv_salts(bao) - before) - live)


def _cli(world: World, user: str, *args: str) -> Any:
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": user,
        "CHILDVAULT_PASSPHRASE": PASSPHRASES[user],
        "VAULT_TOKEN": world.tokens[user],
    }
    return CliRunner().invoke(cli, list(args), env=env)


# ------------------------------------------------------------------ sealed


def test_sealed_mid_import_exit_5_then_resume(
    world: World, bao: BaoServer, csv_file: Path, rows: list[dict[str, str]]
) -> None:
    salts_before = _kv_salts(bao)
    error, committed = _import_with_fault(world, csv_file, bao.seal)
    assert isinstance(error, ProviderUnavailable) and error.exit_code == 5
    assert "sealed" in str(error) and bao.addr in str(error)
    assert committed == 500
    # The CLI says the same while the server stays sealed, and changes nothing.
    before = table_digests(world)
    result = _cli(world, "worker1", "import", str(csv_file))
    assert result.exit_code == 5, result.output
    assert "sealed" in result.stderr and "unseal" in result.stderr
    assert table_digests(world) == before
    bao.unseal()
    orphans = _orphan_salts(bao, world, salts_before)
    _resume_and_read(world, csv_file, rows, committed)
    record_result(
        "test_sealed_mid_import_exit_5_then_resume",
        committed_at_fault=committed,
        orphan_salts_left_in_kv=orphans,
    )


# --------------------------------------------------------------- restarted


def test_restarted_mid_import_completes_or_resumes(
    world: World, bao: BaoServer, csv_file: Path, rows: list[dict[str, str]]
) -> None:
    def restart() -> None:
        bao.stop()
        bao.start(same_port=True)

    fired = []

    def progress(done: int, total: int) -> None:
        if not fired:
            fired.append(done)
            restart()

    outcome = "completed"
    with world.open("worker1") as v:
        try:
            v.import_file(csv_file, progress=progress)
        except ProviderUnavailable as exc:
            outcome = f"failed: {exc}"
            assert bao.addr in str(exc)
    assert fired
    committed = check_import_state(world, file_digest(csv_file), ROWS)
    verify(world)
    if committed < ROWS:
        _resume_and_read(world, csv_file, rows, committed)
    else:
        assert read_sample(world, rows, k=20) == 20
    record_result("test_restarted_mid_import_completes_or_resumes", outcome=outcome[:120])


def test_restart_between_approval_and_read(world: World, bao: BaoServer) -> None:
    """Wrapping tokens live in the server's storage: a restart does not lose a grant."""
    with world.open("worker1") as v:
        ids = add_children(v, 3)
        req = v.request_access(ids, ["name"], "case_management", "restart")
    with world.open("officer1") as v:
        token = v.approve(req).token
    bao.stop()
    bao.start(same_port=True)
    with world.open("worker1") as v:
        assert len(v.read_with_grant(token)) == 3
    verify(world)


# ------------------------------------------------ stopped during approve / read


def test_stopped_during_approval_leaves_request_pending(world: World, bao: BaoServer) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 3)
        req = v.request_access(ids, ["name", "address"], "case_management", "outage")
    before = table_digests(world)
    bao.stop()
    with world.open("officer1") as v, pytest.raises(ProviderUnavailable) as info:
        v.approve(req)
    assert bao.addr in str(info.value) and info.value.exit_code == 5
    # Nothing half-written: no grant, the request still pending, no approval logged.
    assert table_digests(world) == before
    assert not [e for e in audit_entries(world) if e["action"] == "request.approve"]
    verify(world)
    bao.start(same_port=True)
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        assert len(v.read_with_grant(token)) == 3
    verify(world)


def test_regression_outage_during_read_used_up_the_grant(world: World, bao: BaoServer) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
        req = v.request_access(ids, ["name"], "case_management", "outage")
    with world.open("officer1") as v:
        token = v.approve(req).token
    bao.stop()
    with world.open("worker1") as v, pytest.raises(ProviderUnavailable) as info:
        v.read_with_grant(token)
    assert bao.addr in str(info.value)
    verify(world)
    bao.start(same_port=True)
    # The failed attempt must not have used up the grant: the read works now.
    with world.open("worker1") as v:
        values = v.read_with_grant(token)
    assert set(values) == set(ids)
    reads = [e for e in audit_entries(world) if e["action"] == "grant.read"]
    # Logged before the attempt, then the failure (the use was given back), then the read.
    assert [e["outcome"] for e in reads] == ["ok", "error", "ok"]
    assert reads[1]["detail"]["reason"] == "key provider: ProviderUnavailable"
    verify(world)
    # The log counts exactly the one use taken (the failed attempt gave its use
    # back): a counter reset by SQL now is refused, and logged.
    grant = reads[0]["grant"]
    with Insider(world, "worker1") as insider:
        insider.update("grants", {"uses": 0}, where={"id": grant})
    with world.open("worker1") as v, pytest.raises(IntegrityError, match="spent in the log"):
        v.read_with_grant(token)
    refused = [e for e in audit_entries(world) if e["action"] == "trust.refuse"]
    assert [e["detail"]["on"] for e in refused] == ["grant.read"]


# ------------------------------------------------------------------ tokens


def test_token_revoked_mid_import_exit_5_then_resume(
    world: World, bao: BaoServer, csv_file: Path, rows: list[dict[str, str]]
) -> None:
    old = world.tokens["worker1"]

    def revoke() -> None:
        bao.api("POST", "auth/token/revoke", json={"token": old}).raise_for_status()

    error, committed = _import_with_fault(world, csv_file, revoke)
    assert isinstance(error, ProviderUnavailable)
    assert "revoked or expired" in str(error) and bao.addr in str(error)
    result = _cli(world, "worker1", "import", str(csv_file))
    assert result.exit_code == 5 and "revoked or expired" in result.stderr, result.output
    world.tokens["worker1"] = bao.token([POLICY["staff"]], ttl="2h")
    _resume_and_read(world, csv_file, rows, committed)
    record_result("test_token_revoked_mid_import_exit_5_then_resume", committed_at_fault=committed)


def test_token_expired_mid_import_exit_5_then_resume(
    world: World, bao: BaoServer, csv_file: Path, rows: list[dict[str, str]]
) -> None:
    short = bao.token([POLICY["staff"]], ttl="5s")
    world.tokens["worker1"] = short

    def wait_for_expiry() -> None:
        limit = time.monotonic() + 60
        while bao.api("GET", "auth/token/lookup-self", token=short).status_code == 200:
            assert time.monotonic() < limit, "token did not expire"
            time.sleep(0.2)

    fired = []

    def progress(done: int, total: int) -> None:
        if not fired:
            fired.append(done)
            wait_for_expiry()

    with world.open("worker1") as v, pytest.raises(ProviderUnavailable) as info:
        v.import_file(csv_file, progress=progress)
    assert "revoked or expired" in str(info.value) or "refused the token" in str(info.value)
    committed = check_import_state(world, file_digest(csv_file), ROWS)
    verify(world)
    world.tokens["worker1"] = bao.token([POLICY["staff"]], ttl="2h")
    _resume_and_read(world, csv_file, rows, committed)
    record_result(
        "test_token_expired_mid_import_exit_5_then_resume",
        committed_at_fault=committed,
        expired_after_first_batch=bool(fired),
    )


# -------------------------------------------------------------- permissions


def _rewrite_policy(bao: BaoServer, name: str, drop: str) -> str:
    """Remove the ``path "...drop..." { }`` stanza from a policy; return the original."""
    reply = bao.api("GET", f"sys/policies/acl/{name}")
    reply.raise_for_status()
    original = str(reply.json()["data"]["policy"])
    kept, skipping = [], False
    for line in original.splitlines():
        if line.startswith("path ") and drop in line:
            skipping = True
        if not skipping:
            kept.append(line)
        if skipping and line.startswith("}"):
            skipping = False
    changed = "\n".join(kept) + "\n"
    assert changed != original
    bao.api("PUT", f"sys/policies/acl/{name}", json={"policy": changed}).raise_for_status()
    return original


def _restore_policy(bao: BaoServer, name: str, text: str) -> None:
    bao.api("PUT", f"sys/policies/acl/{name}", json={"policy": text}).raise_for_status()


def test_encrypt_permission_removed_mid_import_exit_3_then_resume(
    world: World, bao: BaoServer, csv_file: Path, rows: list[dict[str, str]]
) -> None:
    original: list[str] = []
    salts_before = _kv_salts(bao)

    def remove() -> None:
        original.append(_rewrite_policy(bao, POLICY["staff"], "/encrypt/"))

    try:
        error, committed = _import_with_fault(world, csv_file, remove)
        orphans = _orphan_salts(bao, world, salts_before)
        assert isinstance(error, AccessDenied) and error.exit_code == 3
        assert "encrypt" in str(error) and "lacks" in str(error)
        result = _cli(world, "worker1", "import", str(csv_file))
        assert result.exit_code == 3 and "encrypt" in result.stderr, result.output
    finally:
        if original:
            _restore_policy(bao, POLICY["staff"], original[0])
    _resume_and_read(world, csv_file, rows, committed)
    record_result(
        "test_encrypt_permission_removed_mid_import_exit_3_then_resume",
        committed_at_fault=committed,
        orphan_salts_left_in_kv=orphans,
    )


def test_decrypt_permission_removed_before_approval_exit_3(world: World, bao: BaoServer) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
        req = v.request_access(ids, ["name"], "case_management", "policy")
    before = table_digests(world)
    original = _rewrite_policy(bao, POLICY["officer"], "/decrypt/")
    try:
        with world.open("officer1") as v, pytest.raises(AccessDenied) as info:
            v.approve(req)
        assert "decrypt" in str(info.value)
        assert table_digests(world) == before
        verify(world)
    finally:
        _restore_policy(bao, POLICY["officer"], original)
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        assert len(v.read_with_grant(token)) == 2


def test_unwrap_permission_removed_before_read_exit_3_then_read(
    world: World, bao: BaoServer
) -> None:
    """The requester loses ``sys/wrapping/unwrap`` (granted by both the staff and
    the default policy): the read is refused naming the path, and once the
    permission is back the same token still reads (the failed try used no use).
    (``sys/wrapping/lookup`` cannot be taken away: OpenBao serves it without
    authentication.)"""
    with world.open("worker1") as v:
        ids = add_children(v, 2)
        req = v.request_access(ids, ["name"], "case_management", "policy")
    with world.open("officer1") as v:
        token = v.approve(req).token
    originals = {
        name: _rewrite_policy(bao, name, "sys/wrapping/unwrap")
        for name in (POLICY["staff"], "default")
    }
    try:
        with world.open("worker1") as v, pytest.raises(AccessDenied) as info:
            v.read_with_grant(token)
        assert "sys/wrapping/unwrap" in str(info.value) and info.value.exit_code == 3
        verify(world)
    finally:
        for name, text in originals.items():
            _restore_policy(bao, name, text)
    with world.open("worker1") as v:
        assert len(v.read_with_grant(token)) == 2
    verify(world)
