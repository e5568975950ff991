"""Issue 13: ``witnessed_size`` and ``witnessed_head_size`` are signed before use.

The rows remember how far the witness file is known to reach (its largest
checkpoint, its largest read head), so a witness later cut short or replaced
by an older copy is noticed. An insider who shortens the witness would lower
the row with plain SQL to hide it. Each row is now a statement signed by the
user whose append raised it, checked against that user's verified key before
``audit verify`` and ``doctor`` use it: an edited row, lowered or raised, is
refused and logged.
"""

from __future__ import annotations

import json

import pytest

from childvault.keys import IntegrityError
from childvault.vault import _audit
from childvault.vault._svc_audit import WITNESSED_HEAD_KEY, WITNESSED_SIZE_KEY
from tests._insider import Insider
from tests.conftest import World, add_children


def _approve_and_read(world: World) -> None:
    """An approval (a checkpoint in the witness) and a read (a read head)."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(ids, ["name"], "case_management", "witness rows")
    with world.open("officer1") as v:
        token = v.approve(req).token
    with world.open("worker1") as v:
        v.read_with_grant(token)


def _row(world: World, key: str) -> str:
    with Insider(world, "worker1") as insider:
        ((value,),) = insider.rows("meta", ["value"], where={"key": key})
    return str(value)


def _set(world: World, key: str, value: str) -> None:
    with Insider(world, "worker1") as insider:
        insider.update("meta", {"value": value}, where={"key": key})


def _refusals(world: World) -> list[dict[str, object]]:
    with world.open("admin") as v:
        raw = v._session.db.audit.entries_by_action(("trust.refuse",))
    entries = [_audit.decode_entry(e) for e in raw]
    return [e for e in entries if e["detail"]["on"] == "audit.verify"]  # type: ignore[index]


def test_the_rows_are_signed_by_the_user_whose_append_raised_them(world: World) -> None:
    _approve_and_read(world)
    size = json.loads(_row(world, WITNESSED_SIZE_KEY))
    head = json.loads(_row(world, WITNESSED_HEAD_KEY))
    assert size["signer"] == "officer1" and head["signer"] == "worker1"
    assert set(size) == set(head) == {"size", "signer", "sig"}
    with world.open("officer1") as v:
        v.verify_audit()
    assert not _refusals(world)


@pytest.mark.parametrize("key", [WITNESSED_SIZE_KEY, WITNESSED_HEAD_KEY])
@pytest.mark.parametrize("edit", ["lowered", "raised", "plain", "zero"])
def test_an_edited_row_is_refused_and_logged(world: World, key: str, edit: str) -> None:
    _approve_and_read(world)
    doc = json.loads(_row(world, key))
    if edit == "plain":
        value = "1"  # an unsigned number, as rows were before
    elif edit == "zero":
        value = "0"
    else:
        doc["size"] += -1 if edit == "lowered" else 1000
        value = json.dumps(doc, sort_keys=True)
    _set(world, key, value)
    with world.open("officer1") as v, pytest.raises(IntegrityError, match=key):
        v.verify_audit()
    assert len(_refusals(world)) == 1


def test_a_row_signed_by_another_user_for_another_key_is_refused(world: World) -> None:
    """The signature binds the key: the head row cannot stand in for the size row."""
    _approve_and_read(world)
    _set(world, WITNESSED_SIZE_KEY, _row(world, WITNESSED_HEAD_KEY))
    with world.open("officer1") as v, pytest.raises(IntegrityError, match=WITNESSED_SIZE_KEY):
        v.verify_audit()


def test_a_shortened_witness_is_still_noticed_and_the_row_heals_on_the_next_append(
    world: World,
) -> None:
    _approve_and_read(world)
    text = world.witness.read_text(encoding="utf-8")
    notes = [line for line in text.splitlines(keepends=True) if '"note"' in line]
    # The insider cuts the witness before its last checkpoint and lowers the row.
    world.witness.write_text(text[: text.rindex(notes[-1])], encoding="utf-8")
    _set(world, WITNESSED_SIZE_KEY, "1")
    with world.open("officer1") as v, pytest.raises(IntegrityError, match=WITNESSED_SIZE_KEY):
        v.verify_audit()
    # Witness put back: the next append replaces the forged row with a signed one.
    world.witness.write_text(text, encoding="utf-8")
    with world.open("officer1") as v:
        v.checkpoint()
        v.verify_audit()
    assert json.loads(_row(world, WITNESSED_SIZE_KEY))["signer"] == "officer1"


def test_checkpoint_re_signs_rows_written_before_they_were_signed(world: World) -> None:
    """A vault upgraded from unsigned rows: refused until an officer's checkpoint."""
    _approve_and_read(world)
    size = json.loads(_row(world, WITNESSED_SIZE_KEY))["size"]
    head = json.loads(_row(world, WITNESSED_HEAD_KEY))["size"]
    _set(world, WITNESSED_SIZE_KEY, str(size))
    _set(world, WITNESSED_HEAD_KEY, str(head))
    with world.open("officer1") as v, pytest.raises(IntegrityError):
        v.verify_audit()
    with world.open("officer1") as v:
        v.checkpoint()
        v.verify_audit()
    assert json.loads(_row(world, WITNESSED_HEAD_KEY)) | {"sig": ""} == {
        "size": head,
        "signer": "officer1",
        "sig": "",
    }
    assert json.loads(_row(world, WITNESSED_SIZE_KEY))["size"] > size
