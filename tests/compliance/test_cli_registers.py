"""The CLI of the registers and bases: rights, incident, request --basis, cosign,
report transfers (issue 15 findings 3, 4)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.conftest import World, add_children, born_years_ago, years_ahead
from tests.test_cli import js, run


def test_cli_rights_incident_basis_and_transfers(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
    r = run(
        world,
        "officer1",
        "--json",
        "rights",
        "open",
        ids[0],
        "--kind",
        "access",
        "--by",
        "guardian",
        "--received",
        "2026-11-24",
        "--identity-checked",
    )
    assert r.exit_code == 0, r.output
    rights = js(r)["rights"]
    assert rights["deadline"] == "2026-12-09" and rights["identity_checked"]
    listed = js(run(world, "officer1", "--json", "rights", "list"))["rights"]
    assert [x["id"] for x in listed] == [rights["id"]]
    r = run(world, "officer1", "--json", "rights", "close", rights["id"], "--outcome", "done")
    assert r.exit_code == 0 and js(r)["rights"]["status"] == "closed"

    r = run(
        world, "officer1", "--json", "incident", "open", "--kind", "leak", "--discovered", "-1h"
    )
    assert r.exit_code == 0, r.output
    inc = js(r)["incident"]["id"]
    r = run(world, "officer1", "--json", "incident", "add-records", inc, "--record", ids[1])
    assert js(r)["incident"]["records"] == [ids[1]]
    r = run(world, "officer1", "incident", "close", inc)
    assert r.exit_code == 2 and "authorities" in r.stderr
    for to in ("guardians", "authority"):
        assert run(world, "officer1", "incident", "notify", inc, "--to", to).exit_code == 0
    assert run(world, "officer1", "incident", "close", inc).exit_code == 0

    r = run(
        world,
        "worker1",
        "--json",
        "request",
        "--record",
        ids[0],
        "--field",
        "name",
        "--purpose",
        "legal_protection",
        "--reason",
        "协助调查",
        "--basis",
        "legal_obligation",
        "--recipient",
        "某区公安分局",
        "--provision",
        "《刑事诉讼法》第五十四条",
        "--assessment",
        "PIA-1",
    )
    assert r.exit_code == 0, r.output
    req = js(r)["request_id"]
    assert run(world, "officer1", "approve", req).exit_code == 3  # needs a co-signature
    assert run(world, "officer2", "cosign", req).exit_code == 0
    r = run(world, "officer1", "--json", "approve", req)
    assert r.exit_code == 0, r.output
    token = js(r)["token"]
    assert run(world, "worker1", "read", ids[0], "--grant", token).exit_code == 0
    transfers = js(run(world, "admin", "--json", "report", "transfers"))["transfers"]
    assert [t["recipient"] for t in transfers] == ["某区公安分局"]


def test_cli_backdated_consent_form_party_and_rights_links(world: World, tmp_path: Path) -> None:
    """Issue 15 items 1, 2, 6, 7 through the command line."""
    form = tmp_path / "同意书.pdf"
    form.write_bytes(b"%PDF signed consent form")
    base = [
        "--json",
        "record",
        "add",
        "--consent-by",
        "guardian",
        "--consent-party",
        "guardian",
        "--consent-relation",
        "祖母",
        "--consented-at",
        "2026-09-01",
        "--purpose",
        "case_management",
        "--retain-until",
        years_ahead(5).isoformat(),
        "--field",
        "name=李四",
        "--field",
        f"date_of_birth={born_years_ago(11).isoformat()}",
        "--field",
        "sex=男",
    ]
    r = run(world, "worker1", *base)
    assert r.exit_code == 2 and "back-dating needs an officer" in js(r)["error"]["message"]
    r = run(world, "officer1", *base, "--consent-form", str(form))
    assert r.exit_code == 0, r.output
    rid = js(r)["record_id"]
    with world.open("officer1") as v:
        stored = v.consent_of(rid)
    assert stored.form_sha256 == hashlib.sha256(form.read_bytes()).hexdigest()
    assert (stored.relation, stored.confirmed_by) == ("祖母", "officer1")

    r = run(
        world,
        "officer1",
        "--json",
        "rights",
        "open",
        rid,
        "--kind",
        "correct",
        "--by",
        "guardian",
        "--received",
        "2026-11-24",
        "--identity-checked",
    )
    rights = js(r)["rights"]["id"]
    r = run(world, "officer1", "rights", "close", rights, "--outcome", "done")
    assert r.exit_code == 2 and "--rights-request" in r.stderr
    r = run(world, "officer1", "correct", rid, "--field", "name=李四四", "--rights-request", rights)
    assert r.exit_code == 0, r.output
    r = run(world, "officer1", "--json", "rights", "close", rights, "--outcome", "done")
    assert r.exit_code == 0, r.output
    assert [link["action"] for link in js(r)["rights"]["links"]] == ["record.correct"]

    inc = js(
        run(
            world, "officer1", "--json", "incident", "open", "--kind", "leak", "--discovered", "-1h"
        )
    )["incident"]["id"]
    run(world, "officer1", "incident", "add-records", inc, "--record", rid)
    r = run(world, "officer1", "--json", "incident", "contacts", inc)
    assert r.exit_code == 0, r.output
    (req,) = js(r)["requests"]
    token = js(run(world, "officer2", "--json", "approve", req))["token"]
    out = tmp_path / "contacts.sealed"
    r = run(world, "officer1", "incident", "contacts", inc, "--grant", token, "--out", str(out))
    assert r.exit_code == 0, r.output
    r = run(world, "officer1", "--json", "incident", "read-contacts", str(out))
    assert r.exit_code == 0 and js(r)["contacts"][0]["name"] == "李四四"
