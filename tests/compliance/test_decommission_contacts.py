"""The co-signing officer opens the guardian contact list of a decommissioning with
a command, also after the vault is decommissioned (P-23, compliance gap 9).

End to end through the command line (CliRunner, real identities and SQLCipher):
the officer opens it and writes a CSV, another officer cannot, an edited file or
another vault's is refused with one error, and the log holds each opening.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from childvault.keys import Identity
from tests.conftest import World, add_children, child_values, copy_world
from tests.test_cli import js, run

_REFUSED = "is not the guardian contact list of this vault's co-signed decommissioning"


def _entries(world: World, action: str) -> list[dict[str, object]]:
    with world.open("admin") as v:
        return [row["entry"] for row in v.audit_entries() if row["entry"]["action"] == action]


def _cosigned(world: World, sealed: Path, n: int) -> list[str]:
    with world.open("worker1") as v:
        ids = add_children(v, n)
    r = run(world, "officer1", "decommission", "--cosign", "--contacts", str(sealed))
    assert r.exit_code == 0, r.output
    return ids


def test_officer_opens_the_list_after_decommissioning_and_the_log_holds_it(
    world: World, tmp_path: Path
) -> None:
    sealed = tmp_path / "contacts.sealed"
    ids = _cosigned(world, sealed, 2)
    r = run(world, "admin", "--json", "decommission", "--confirm")
    assert r.exit_code == 0 and js(r)["records_shredded"] == 2, r.output
    # The custodian key is gone; the officer's own identity still opens the list.
    r = run(world, "officer1", "--json", "decommission", "--read-contacts", str(sealed))
    assert r.exit_code == 0, r.output
    doc = js(r)
    assert {c["record_id"] for c in doc["contacts"]} == set(ids)
    assert {c["guardian_phone"] for c in doc["contacts"]} == {
        child_values(i)["guardian_phone"] for i in range(2)
    }
    r = run(world, "officer1", "decommission", "--read-contacts", str(sealed))
    assert r.exit_code == 0 and child_values(1)["guardian_name"] in r.output, r.output
    out = tmp_path / "families.csv"
    r = run(world, "officer1", "decommission", "--read-contacts", str(sealed), "--out", str(out))
    assert r.exit_code == 0 and "2 record(s)" in r.output, r.output
    assert out.stat().st_mode & 0o777 == 0o600
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert {row["record_id"] for row in rows} == set(ids)
    assert {row["guardian_name"] for row in rows} == {
        child_values(i)["guardian_name"] for i in range(2)
    }
    # Never over an existing file (the CSV holds personal data).
    r = run(world, "officer1", "decommission", "--read-contacts", str(sealed), "--out", str(out))
    assert r.exit_code != 0 and "exists" in r.output
    digest = js(run(world, "officer1", "--json", "decommission", "--read-contacts", str(sealed)))[
        "sha256"
    ]
    opened = [e for e in _entries(world, "decommission.read_contacts") if e["outcome"] == "ok"]
    assert [e["actor"] for e in opened] == ["officer1"] * 4
    assert [e["detail"]["csv"] for e in opened] == [False, False, True, False]  # type: ignore[index]
    assert {e["detail"]["sha256"] for e in opened} == {digest}  # type: ignore[index]
    r = run(world, "admin", "audit", "verify")
    assert r.exit_code == 0, r.output


def test_another_officer_cannot_open_it_and_the_attempt_is_logged(
    world: World, tmp_path: Path
) -> None:
    sealed = tmp_path / "contacts.sealed"
    _cosigned(world, sealed, 1)
    r = run(world, "officer2", "--json", "decommission", "--read-contacts", str(sealed))
    assert r.exit_code == 3 and _REFUSED in js(r)["error"]["message"], r.output
    assert child_values(0)["guardian_phone"] not in r.output
    logged = _entries(world, "decommission.read_contacts")
    assert [(e["actor"], e["outcome"]) for e in logged] == [("officer2", "denied")]
    # Staff and admins are refused by role.
    r = run(world, "worker1", "decommission", "--read-contacts", str(sealed))
    assert r.exit_code == 3


def test_an_edited_or_older_file_is_refused_with_the_same_error(
    world: World, tmp_path: Path
) -> None:
    sealed = tmp_path / "contacts.sealed"
    _cosigned(world, sealed, 1)
    older = tmp_path / "older.sealed"
    older.write_bytes(sealed.read_bytes())
    edited = tmp_path / "edited.sealed"
    raw = bytearray(sealed.read_bytes())
    raw[-1] ^= 1
    edited.write_bytes(bytes(raw))
    r = run(world, "officer1", "--json", "decommission", "--read-contacts", str(edited))
    assert r.exit_code == 3, r.output
    messages = {js(r)["error"]["message"].replace(str(edited), "FILE")}
    # A record added makes a new co-signature necessary; the list made before it
    # no longer is the one decommissioning counts.
    with world.open("worker1") as v:
        add_children(v, 1)
    r = run(world, "officer1", "decommission", "--cosign", "--contacts", str(sealed))
    assert r.exit_code == 0, r.output
    r = run(world, "officer1", "--json", "decommission", "--read-contacts", str(older))
    assert r.exit_code == 3, r.output
    messages.add(js(r)["error"]["message"].replace(str(older), "FILE"))
    assert len(messages) == 1 and _REFUSED in messages.pop()
    r = run(world, "officer1", "--json", "decommission", "--read-contacts", str(sealed))
    assert r.exit_code == 0 and len(js(r)["contacts"]) == 2


def test_another_vaults_list_is_refused(
    world: World,
    template: tuple[Path, dict[str, Identity]],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A list the same officer (same keys) co-signed in another vault, here a copy
    of this one's template with other records: not a list this vault's log holds."""
    sealed = tmp_path / "here.sealed"
    _cosigned(world, sealed, 1)
    other = copy_world(*template, tmp_path_factory.mktemp("other"))
    foreign = tmp_path / "there.sealed"
    with other.open("worker1") as v:
        add_children(v, 3)
    with other.open("officer1") as v:
        v.cosign_decommission(foreign)
    r = run(world, "officer1", "--json", "decommission", "--read-contacts", str(foreign))
    assert r.exit_code == 3 and _REFUSED in js(r)["error"]["message"], r.output
