"""`childvault list` shows a page of records, each verified against its signed
record statement (issues 16 and 18: a command on a session within 0.3 s).

A page costs the same on any vault size; what it shows came from rows a user
with database access can write, so every shown record is checked and one that
was altered is shown marked, logged (``trust.refuse``) and exits 4.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from childvault.cli.main import cli
from childvault.vault import NotFound, UsageError, _audit
from tests._insider import Insider
from tests.conftest import PASSPHRASES, World, add_children


def _run(world: World, *args: str) -> Result:
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "worker1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"],
        "LANG": "C.UTF-8",
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def _listings(world: World) -> list[dict[str, object]]:
    with world.open("admin") as v:
        entries = v._session.db.audit.entries_by_action(("record.list", "trust.refuse"))
        return [_audit.decode_entry(e) for e in entries]


def test_pages_cover_every_record_once_and_all_shows_everything(world: World) -> None:
    with world.open("worker1") as v:
        ids = sorted(add_children(v, 5))
    first = json.loads(_run(world, "--json", "list", "--limit", "2").stdout)
    assert [r["id"] for r in first["records"]] == ids[:2]
    assert first["total"] == 5 and first["next_after"] == ids[1]
    assert first["ok"] is True and first["verified"] is True and first["unverified"] == {}
    second = json.loads(_run(world, "--json", "list", "--limit", "2", "--after", ids[1]).stdout)
    assert [r["id"] for r in second["records"]] == ids[2:4]
    last = json.loads(_run(world, "--json", "list", "--limit", "2", "--after", ids[3]).stdout)
    assert [r["id"] for r in last["records"]] == ids[4:] and last["next_after"] is None
    every = json.loads(_run(world, "--json", "list", "--all", "--limit", "1").stdout)
    assert [r["id"] for r in every["records"]] == ids and every["next_after"] is None
    human = _run(world, "list", "--limit", "3")
    assert human.exit_code == 0, human.output
    assert "3 record(s)" in human.stdout
    assert f"--after {ids[2]}" in human.stdout and "5 in all" in human.stdout
    # Each listing is logged with what it showed.
    logged = [e["detail"] for e in _listings(world) if e["action"] == "record.list"]
    assert {"count": 5, "shown": 2} in logged
    assert {"count": 5, "shown": 2, "after": ids[1]} in logged


def test_a_malformed_after_or_limit_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 1)
        with pytest.raises(NotFound, match="32 lowercase hex"):
            v.list_page(after="not-an-id")
        with pytest.raises(UsageError, match="limit"):
            v.list_page(limit=0)
    r = _run(world, "list", "--after", "zz")
    assert r.exit_code != 0 and "32 lowercase hex" in r.stderr
    assert _run(world, "list", "--limit", "0").exit_code == 2


@pytest.mark.parametrize(
    ("column", "value"),
    [
        # Purposes shown come from the consent column: altered, not the signed consent.
        ("consent", "purposes"),
        # Retention is shown from its own column: it must match the signed consent.
        ("retain_until", "2099-12-31"),
    ],
)
def test_an_altered_record_is_shown_marked_logged_and_exits_4(
    world: World, column: str, value: str
) -> None:
    with world.open("worker1") as v:
        ids = sorted(add_children(v, 3))
        row = v._session.db.records.get(ids[1])
    assert row is not None
    if column == "consent":
        changed = {**row.consent, "purposes": ["case_management", "statistics"]}
        new: object = json.dumps(changed, sort_keys=True)
    else:
        new = value
    with Insider(world, "worker2") as insider:
        assert insider.update("records", {column: new}, {"id": ids[1]}) == 1
    human = _run(world, "list")
    assert human.exit_code == 4
    (marked,) = [line for line in human.stdout.splitlines() if "UNVERIFIED" in line]
    assert marked.startswith(ids[1])
    assert "differ from their signed version" in human.stderr
    doc = json.loads(_run(world, "--json", "list").stdout)
    assert doc["ok"] is False and list(doc["unverified"]) == [ids[1]]
    assert [r["id"] for r in doc["records"]] == ids
    refusals = [e for e in _listings(world) if e["action"] == "trust.refuse"]
    assert refusals and refusals[-1]["records"] == [ids[1]]
    assert refusals[-1]["detail"]["on"] == "record.list"  # type: ignore[index]
    # A page without the altered record lists cleanly.
    clean = _run(world, "list", "--after", ids[1])
    assert clean.exit_code == 0 and "UNVERIFIED" not in clean.stdout


def test_the_library_page_verifies_only_what_it_shows(world: World) -> None:
    with world.open("worker1") as v:
        ids = sorted(add_children(v, 4))
    with Insider(world, "worker2") as insider:
        insider.update("records", {"retain_until": "2099-12-31"}, {"id": ids[3]})
    with world.open("worker1") as v:
        page = v.list_page(limit=2)
        assert [r.id for r in page.records] == ids[:2] and not page.unverified
        assert page.verifiable and page.total == 4 and page.next_after == ids[1]
        rest = v.list_page(after=ids[1], limit=None)
        assert [r.id for r in rest.records] == ids[2:]
        assert list(rest.unverified) == [ids[3]] and rest.next_after is None
