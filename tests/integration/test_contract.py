"""One contract suite, run unchanged against the LocalProvider and the
VaultProvider (a real OpenBao server): write, approve, read, scope, find,
correct, shred, withdraw, retention, rotate."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from childvault.keys import AccessDenied, ApprovalInvalid, ChildVaultError, Identity, NotFound
from childvault.vault import NewRecordInput
from tests.conftest import (
    ROLES,
    World,
    add_children,
    build_template,
    child_values,
    consent,
    copy_world,
)
from tests.integration.conftest import BaoServer, module_server

POLICY = {"staff": "childvault-staff", "officer": "childvault-officer", "admin": "childvault-admin"}


@pytest.fixture(scope="module")
def contract_bao(bao_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """A server of its own: the rotation test rotates its Transit key."""
    with module_server(bao_binary, tmp_path_factory.mktemp("contract-bao")) as server:
        yield server


@pytest.fixture(scope="module")
def vault_template(
    contract_bao: BaoServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Identity], dict[str, str]]:
    home = tmp_path_factory.mktemp("vault-template") / "home"
    settings = json.loads(contract_bao.settings.to_json())
    ids = build_template(home, provider="vault", vault_settings=settings)
    roles = {"admin": "admin", **{name: r[0] for name, r in ROLES.items()}}
    tokens = {name: contract_bao.token([POLICY[role]], ttl="6h") for name, role in roles.items()}
    return home, ids, tokens


@pytest.fixture(params=["local", "vault"])
def any_world(
    request: pytest.FixtureRequest,
    template: tuple[Path, dict[str, Identity]],
    tmp_path: Path,
) -> Iterator[World]:
    if request.param == "local":
        src, ids = template
        yield copy_world(src, ids, tmp_path)
    else:
        src, ids, tokens = request.getfixturevalue("vault_template")
        yield copy_world(src, ids, tmp_path, tokens=tokens, provider="vault")


def approve(world: World, ids: list[str], fields: tuple[str, ...], **kw: object) -> str:
    with world.open("worker1") as v:
        req = v.request_access(ids, fields, "case_management", "核对")
    with world.open("officer1") as v:
        return v.approve(req, **kw).token  # type: ignore[arg-type]


def read(world: World, token: str, *args: object) -> dict[str, dict[str, str]]:
    with world.open("worker1") as v:
        return v.read_with_grant(token, *args)  # type: ignore[arg-type]


def test_write_approve_read(any_world: World) -> None:
    with any_world.open("worker1") as v:
        ids = add_children(v, 3)
    token = approve(any_world, ids[:2], ("name", "id_number"), uses=2)
    assert read(any_world, token) == {
        ids[i]: {"name": child_values(i)["name"], "id_number": child_values(i)["id_number"]}
        for i in range(2)
    }


def test_scope_is_enforced(any_world: World) -> None:
    with any_world.open("worker1") as v:
        ids = add_children(v, 2)
    token = approve(any_world, ids[:1], ("name",), uses=3)
    with pytest.raises(ApprovalInvalid):
        read(any_world, token, [ids[0]], ["health"])
    with pytest.raises(ApprovalInvalid):
        read(any_world, token, [ids[1]], ["name"])
    assert read(any_world, token, [ids[0]], ["name"]) == {ids[0]: {"name": child_values(0)["name"]}}


def test_multi_use_grant(any_world: World) -> None:
    with any_world.open("worker1") as v:
        ids = add_children(v, 1)
    token = approve(any_world, ids, ("name",), uses=2)
    assert read(any_world, token) == read(any_world, token)
    with pytest.raises(ApprovalInvalid):
        read(any_world, token)


def test_find_by_blind_index(any_world: World) -> None:
    with any_world.open("worker1") as v:
        ids = add_children(v, 5)
        found = v.find("id_number", child_values(3)["id_number"])
        assert ids[3] in found
        with pytest.raises(ChildVaultError, match="not searchable"):
            v.find("sex", "male")


def test_correct_writes_new_version_and_shreds_old(any_world: World, tmp_path: Path) -> None:
    with any_world.open("worker1") as v:
        ids = add_children(v, 2)
    backup = tmp_path / "before-correction"
    shutil.copytree(any_world.home, backup)
    with any_world.open("officer1") as v:
        assert v.correct(ids[0], "address", "上海市浦东新区更正路1号") == 2
    token = approve(any_world, ids, ("address",))
    values = read(any_world, token)
    assert values[ids[0]]["address"] == "上海市浦东新区更正路1号"
    assert values[ids[1]]["address"] == child_values(1)["address"]
    with any_world.open("admin") as v:
        entries = [e["entry"] for e in v.audit_entries(record=ids[0])]
    assert [e["action"] for e in entries].count("record.correct") == 1
    assert "更正" not in json.dumps(entries, ensure_ascii=False)
    if any_world.provider == "vault":
        # The pre-correction database copy cannot yield the old value any more.
        old = World(backup, any_world.ids, any_world.clock, any_world.tokens, "vault")
        with old.open("worker1") as v:
            req = v.request_access([ids[0]], ["address"], "case_management", "backup")
        # Transit reports the per-item failure inside the wrapped response, so
        # the officer's approval goes through and the requester's read fails.
        with old.open("officer1") as v:
            token = v.approve(req).token
        with old.open("worker1") as v, pytest.raises(ChildVaultError):
            v.read_with_grant(token)


def test_delete_shreds_live_and_vault_backup(any_world: World, tmp_path: Path) -> None:
    with any_world.open("worker1") as v:
        ids = add_children(v, 2)
    backup = tmp_path / "backup"
    shutil.copytree(any_world.home, backup)
    with any_world.open("officer1") as v:
        v.delete(ids[0], "监护人申请删除")
        with pytest.raises(NotFound):
            v.record_info(ids[0])
        assert v.health()  # doctor data still computes
    with any_world.open("worker1") as v, pytest.raises(NotFound, match="deleted"):
        v.request_access([ids[0]], ["name"], "case_management", "x")
    if any_world.provider == "vault":
        old = World(backup, any_world.ids, any_world.clock, any_world.tokens, "vault")
        with old.open("worker1") as v:
            req = v.request_access([ids[0]], ["name"], "case_management", "backup")
            other = v.request_access([ids[1]], ["name"], "case_management", "backup")
        with old.open("officer1") as v:
            with pytest.raises(ChildVaultError):
                v.approve(req)
            token = v.approve(other).token
        with old.open("worker1") as v:
            assert v.read_with_grant(token) == {ids[1]: {"name": child_values(1)["name"]}}


def test_withdrawal_and_retention_sweep(any_world: World) -> None:
    with any_world.open("worker1") as v:
        keep = add_children(v, 1)
        (short,) = v.add_records(
            [NewRecordInput("child", child_values(7), consent(retain_until=date(2026, 12, 1)))]
        )
        (withdrawn,) = add_children(v, 1)
    with any_world.open("officer1") as v:
        v.withdraw_consent(withdrawn)
    any_world.clock.advance(days=30)
    with any_world.open("admin") as v:
        assert v.retention_sweep(dry_run=True).records == (short,)
        report = v.retention_sweep()
        assert report.records == (short,)
        v.verify_audit()
    with any_world.open("worker1") as v:
        assert [r.id for r in v.list_records()] == keep


def test_rotate_keeps_every_record_readable(any_world: World) -> None:
    with any_world.open("worker1") as v:
        ids = add_children(v, 4)
    rotator = "officer1" if any_world.provider == "local" else "admin"
    with any_world.open(rotator) as v:
        report = v.rotate_keys()
    assert report.resealed == 4
    with any_world.open("worker1") as v:
        more = add_children(v, 1)
    token = approve(any_world, ids + more, ("name",))
    assert {k: x["name"] for k, x in read(any_world, token).items()} == {
        **{ids[i]: child_values(i)["name"] for i in range(4)},
        more[0]: child_values(0)["name"],
    }


def test_roles_are_enforced(any_world: World) -> None:
    with any_world.open("worker1") as v:
        ids = add_children(v, 1)
        with pytest.raises(AccessDenied):
            v.delete(ids[0], "no")
        with pytest.raises(AccessDenied):
            v.correct(ids[0], "name", "x")
    with any_world.open("admin") as v, pytest.raises(AccessDenied):
        v.approve("0" * 32)


def test_expiry_is_checked_with_the_injected_clock(any_world: World) -> None:
    with any_world.open("worker1") as v:
        ids = add_children(v, 1)
    token = approve(any_world, ids, ("name",), ttl=timedelta(minutes=5))
    any_world.clock.advance(minutes=6)
    with pytest.raises(ApprovalInvalid):
        read(any_world, token)
