"""Issue 13/16: the resume point of an interrupted Vault rotation is checked
against the signed log before use (a real OpenBao dev server).

``vault_rotation_target`` is a meta row every user can edit with plain SQL. A
lowered target would make the resumed rotation skip blobs still on older key
versions, which ``keys rotate --trim`` then deletes (crypto-shredding live
records). The row must equal the log's open ``keys.rotate`` start entry; any
other value, or a removed row, is refused and logged.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from childvault.keys import Identity, IntegrityError
from childvault.vault import OpenBaoCredentials, Vault, _audit
from childvault.vault._audit import Event
from tests._insider import Insider
from tests.conftest import PASSPHRASES, World, add_children
from tests.integration.conftest import BaoServer, module_server
from tests.integration.test_vault_hardening import read_name, world_on

pytestmark = pytest.mark.vault

ROW = "vault_rotation_target"


@pytest.fixture(scope="module")
def rotating_bao(bao_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """A server of its own: the tests rotate and trim its Transit key."""
    with module_server(bao_binary, tmp_path_factory.mktemp("rotating-bao")) as server:
        yield server


@pytest.fixture
def world(rotating_bao: BaoServer, tmp_path: Path) -> World:
    return world_on(rotating_bao, tmp_path)


class Interrupted(Exception):
    """Stands for a crash after the first page of a rotation."""


def _stop(done: int, total: int) -> None:
    raise Interrupted


def _interrupted(world: World) -> tuple[str, int]:
    """A record, then a rotation stopped after its first page: the row is left."""
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    with world.open("admin") as v, pytest.raises(Interrupted):
        v.rotate_keys(progress=_stop)
    with Insider(world, "worker1") as insider:
        ((value,),) = insider.rows("meta", ["value"], where={"key": ROW})
    return rid, int(str(value))


def _set(world: World, value: str | None) -> None:
    with Insider(world, "worker1") as insider:
        insider.delete("meta", where={"key": ROW})
        if value is not None:
            insider.insert("meta", {"key": ROW, "value": value})


def _refusals(world: World) -> list[dict[str, object]]:
    with world.open("admin") as v:
        raw = v._session.db.audit.entries_by_action(("trust.refuse",))
    entries = [_audit.decode_entry(e) for e in raw]
    return [e for e in entries if e["detail"]["on"] == "keys.rotate"]  # type: ignore[index]


@pytest.mark.parametrize("edit", ["lowered", "raised", "removed"])
def test_an_edited_resume_point_is_refused_and_logged(world: World, edit: str) -> None:
    rid, target = _interrupted(world)
    assert target >= 2
    _set(world, {"lowered": str(target - 1), "raised": str(target + 5), "removed": None}[edit])
    with world.open("admin") as v, pytest.raises(IntegrityError, match="resume point"):
        v.rotate_keys()
    assert len(_refusals(world)) == 1
    # Put back as the log says, the rotation resumes and finishes.
    _set(world, str(target))
    with world.open("admin") as v:
        report = v.rotate_keys(trim=True)
    assert report.resumed and report.generation == target
    assert read_name(world, rid)


def test_a_planted_resume_point_without_a_rotation_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 1)
    _set(world, "1")
    with world.open("admin") as v, pytest.raises(IntegrityError, match="resume point"):
        v.rotate_keys()
    assert len(_refusals(world)) == 1


def test_keys_rotate_reader_without_a_verified_state_takes_no_staff_start_entry(
    world: World,
) -> None:
    """Near-copy of the role check (left alone in session 10): without a verified
    state (an admin whose identity holds no anchor) the reader took every
    ``keys.rotate`` start entry, so a staff member's, signed in their own name,
    with the row lowered to match, set the resume point. Through ``role_at``
    no entry counts without the verified registrations: refused and logged."""
    rid, target = _interrupted(world)
    lowered = Event("worker1", "keys.rotate", detail={"phase": "start", "generation": target - 1})
    with world.open("worker1") as v:
        v._session.log([lowered], datetime.now(UTC))
    _set(world, str(target - 1))
    unanchored = Identity.load(world.home / "identities" / "admin.id", PASSPHRASES["admin"])
    unanchored.anchor = None
    assert world.tokens is not None
    token = OpenBaoCredentials(token=world.tokens["admin"])
    # Issue 12: in an upgraded vault an identity without an anchor is refused
    # before it reads the row or any entry.
    with (
        Vault.open(world.home, identity=unanchored, clock=world.clock, credentials=token) as v,
        pytest.raises(IntegrityError, match="childvault upgrade"),
    ):
        v.rotate_keys()
    assert len(_refusals(world)) == 1
    # The anchored admin reads the admin's own start entry: resumed at the target.
    _set(world, str(target))
    with world.open("admin") as v:
        assert v.rotate_keys(trim=True).generation == target
    assert read_name(world, rid)
