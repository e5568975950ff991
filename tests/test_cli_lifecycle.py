"""CLI for lookup and lifecycle commands: find, correct, delete, consent,
retention sweep, keys rotate/share, decommission (CliRunner, real unlocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TODAY, World, child_values, years_ahead
from tests.test_cli import js, run
from tests.test_records import marked_rows, write_csv


@pytest.fixture
def two(world: World, tmp_path: Path) -> tuple[World, list[str], list[dict[str, str]]]:
    rows = marked_rows(2)
    run(world, "worker1", "import", str(write_csv(tmp_path / "r.csv", rows)))
    ids = [r["id"] for r in js(run(world, "worker1", "--json", "list"))["records"]]
    # The blind index tells which record holds the first row (2 records: no collision).
    found = js(
        run(world, "worker1", "--json", "find", "--field", f"id_number={rows[0]['id_number']}")
    )["candidates"]
    first = next(rid for rid in ids if rid in found)
    ordered = [first, next(r for r in ids if r != first)]
    return world, ordered, rows


def test_find_correct_delete(two: tuple[World, list[str], list[dict[str, str]]]) -> None:
    world, ids, _rows = two
    r = run(world, "worker1", "--json", "find", "--field", "sex=male")
    assert r.exit_code == 2 and "not searchable" in js(r)["error"]["message"]
    r = run(world, "officer1", "--json", "correct", ids[0], "--field", "school=第二小学")
    assert r.exit_code == 0 and js(r)["field_version"] == 2
    r = run(world, "worker1", "correct", ids[0], "--field", "school=x")
    assert r.exit_code == 3
    r = run(world, "officer1", "--json", "delete", ids[1], "--reason", "监护人申请")
    assert r.exit_code == 0 and js(r)["deleted"]
    r = run(world, "officer1", "delete", ids[1], "--reason", "again")
    assert r.exit_code == 1 and "already deleted" in r.stderr
    listed = [x["id"] for x in js(run(world, "worker1", "--json", "list"))["records"]]
    assert listed == [ids[0]]


def test_consent_commands(two: tuple[World, list[str], list[dict[str, str]]]) -> None:
    world, ids, _ = two
    r = run(
        world,
        "officer1",
        "--json",
        "consent",
        "add-purpose",
        ids[0],
        "--purpose",
        "medical_care",
        "--consent-by",
        "guardian",
    )
    assert r.exit_code == 0, r.output
    assert "medical_care" in js(r)["purposes"]
    r = run(
        world,
        "officer1",
        "consent",
        "renew",
        ids[0],
        "--consent-by",
        "guardian",
        "--retain-until",
        years_ahead(7).isoformat(),  # later than the import's (CONSENT_COLS)
    )
    assert r.exit_code == 0, r.output
    r = run(
        world,
        "officer1",
        "--json",
        "consent",
        "remove-purpose",
        ids[0],
        "--purpose",
        "medical_care",
        "--consent-by",
        "guardian",
    )
    assert r.exit_code == 0, r.output
    assert "medical_care" not in js(r)["purposes"]
    r = run(
        world,
        "officer1",
        "consent",
        "remove-purpose",
        ids[0],
        "--purpose",
        "case_management",
        "--purpose",
        "statistics",
        "--consent-by",
        "guardian",
    )
    assert r.exit_code == 2 and "consent withdraw" in r.stderr
    r = run(world, "officer1", "--json", "consent", "withdraw", ids[1])
    assert r.exit_code == 0 and js(r)["deleted"]


def test_retention_sweep_dry_run_and_keys(world: World) -> None:
    r = run(world, "admin", "--json", "retention", "sweep", "--dry-run")
    assert r.exit_code == 0 and js(r)["dry_run"] and js(r)["due"] == 0
    r = run(world, "officer1", "--json", "keys", "rotate")
    assert r.exit_code == 0, r.output
    assert js(r)["generation"] == 2
    r = run(world, "admin", "keys", "rotate")
    assert r.exit_code == 3
    r = run(world, "officer2", "--json", "user", "list")
    users = {u["name"]: u for u in js(r)["users"]}
    assert users["officer2"]["can_approve"] and users["officer1"]["can_approve"]


def test_decommission_needs_confirm(world: World) -> None:
    r = run(world, "admin", "decommission")
    assert r.exit_code == 2 and "--confirm" in r.stderr
    # P-23: an officer co-signs first, writing the guardian contact list (issue 15).
    contacts = world.home.parent / "contacts.sealed"
    r = run(world, "officer1", "decommission", "--cosign", "--contacts", str(contacts))
    assert r.exit_code == 0, r.output
    r = run(world, "admin", "--json", "decommission", "--confirm")
    assert r.exit_code == 0 and js(r)["records_remaining"] == 0
    assert json.loads((world.home / "decommission-report.json").read_text())["ok"]


def test_record_add_then_staff_sees_own_denied_request(world: World) -> None:
    r = run(
        world,
        "worker1",
        "--json",
        "record",
        "add",
        "--consent-by",
        "guardian",
        "--purpose",
        "case_management",
        "--retain-until",
        years_ahead(5).isoformat(),
        *[a for k, v in child_values(3, today=TODAY).items() for a in ("--field", f"{k}={v}")],
    )
    assert r.exit_code == 0, r.output
    rid = js(r)["record_id"]
    req = js(
        run(
            world,
            "worker1",
            "--json",
            "request",
            "--record",
            rid,
            "--field",
            "name",
            "--purpose",
            "case_management",
            "--reason",
            "核对",
        )
    )["request_id"]
    assert run(world, "officer1", "deny", req, "--reason", "理由不足").exit_code == 0
    r = run(world, "worker1", "--json", "requests", "--all")
    (mine,) = js(r)["requests"]
    assert mine["status"] == "denied" and mine["decision_reason"] == "理由不足"
    assert run(world, "worker2", "--json", "requests", "--all").stdout.count('"id"') == 0


def test_decommission_co_signed_by_the_same_person_exits_3(world: World) -> None:
    """A user holding officer and admin cannot co-sign their own decommissioning:
    refused as any role refusal is (exit 3), and nothing is shredded (issue 15)."""
    pw = "correct horse battery staple 42!"
    with world.open("admin") as v:
        v.add_user("boss", ["officer", "admin"], pw)
    with world.open("officer1") as v:
        v.share_custodian("boss")
    contacts = world.home.parent / "contacts.sealed"
    boss = {"CHILDVAULT_PASSPHRASE": pw}
    r = run(world, "boss", "decommission", "--cosign", "--contacts", str(contacts), env=boss)
    assert r.exit_code == 0, r.output
    r = run(world, "boss", "--json", "decommission", "--confirm", env=boss)
    assert r.exit_code == 3 and "another officer" in js(r)["error"]["message"]
    assert not (world.home / "decommission-report.json").exists()
