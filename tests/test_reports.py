"""Subject-access reports (M-17, P-19) and breach-impact reports (P-21).

Proof tampering and the standalone verifier are in ``test_proofs.py``; the
anonymised export is in ``test_export.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from childvault.cli.main import cli
from childvault.keys import AccessDenied, ApprovalInvalid, UsageError
from childvault.vault._reports import SUBJECT_REPORT_FORMAT, verify_subject_report
from tests.conftest import PASSPHRASES, World, add_children, child_values, lower_export_k

FIELDS = ("name", "date_of_birth", "guardian_phone")


@pytest.fixture
def records(world: World) -> Iterator[tuple[World, list[str]]]:
    with world.open("worker1") as v:
        ids = add_children(v, 3, purposes=("case_management", "statistics"))
    yield world, ids


def grant(
    world: World,
    ids: list[str],
    fields: tuple[str, ...] = FIELDS,
    *,
    requester: str = "worker1",
    officer: str = "officer1",
    **kw: object,
) -> str:
    with world.open(requester) as v:
        req = v.request_access(ids, fields, "case_management", "本人查询 subject access")
    with world.open(officer) as v:
        return v.approve(req, **kw).token  # type: ignore[arg-type]


def entries_about(world: World, record_id: str) -> list[dict[str, object]]:
    with world.open("admin") as v:
        return [e["entry"] for e in v.audit_entries(record=record_id)]


# ---------------------------------------------------------------- subject


def test_officer_report_holds_exactly_the_granted_data_consent_and_every_entry(
    records: tuple[World, list[str]],
) -> None:
    world, ids = records
    rid = ids[1]
    # Some history about the record: another read by staff, and a denied attempt.
    token = grant(world, [rid, ids[2]], ("name",))
    world.clock.advance(minutes=5)
    with world.open("worker1") as v:
        v.read_with_grant(token, [rid])
        with pytest.raises(ApprovalInvalid):
            v.read_with_grant(token, [rid])  # its one use is spent: denied, logged
    token = grant(world, [rid], requester="officer2", officer="officer1")
    world.clock.advance(minutes=5)
    with world.open("officer2") as v:
        report = v.subject_report(rid, token)
        vkeys = v.signer_vkeys()

    assert report["format"] == SUBJECT_REPORT_FORMAT
    assert report["record_id"] == rid and report["generated_by"] == "officer2"
    expected = {f: child_values(1)[f] for f in FIELDS}
    assert report["data"] == expected
    assert report["record"]["fields_disclosed"] == list(FIELDS)
    assert "case_notes" in report["record"]["fields_withheld"]
    assert set(report["record"]["fields_held"]) == set(child_values(1))
    assert report["consent"] == {
        "by": "guardian",
        "consented_at": "2026-11-01",
        "notice_version": "2026-1",
        "purposes": ["case_management", "statistics"],
        "guardian_informed": False,
        "guardian_also": False,
        "retain_until": "2032-01-01",
        # Issue 15: the report names who consented (older consents: ``by``).
        "party": "guardian",
    }
    assert report["retention"]["retain_until"] == "2032-01-01"
    assert report["grant"]["purpose"] == "case_management"
    assert "token" not in json.dumps(report)

    # Every entry about the record, as the log holds them, except that another
    # child's record id sharing an entry is redacted (issue 15).
    logged = entries_about(world, rid)
    carried = [json.loads(e["entry"]) for e in report["entries"]]
    assert carried == [
        {**e, "records": [r if r == rid else "another record" for r in e["records"]]}  # type: ignore[attr-defined]
        for e in logged
    ]
    assert ids[2] not in json.dumps(report)
    actions = [e["action"] for e in carried]
    assert actions[0] == "record.create" and actions[-1] == "report.subject"
    assert [e["outcome"] for e in carried if e["action"] == "grant.read"] == ["ok", "denied", "ok"]
    # The officer signed a fresh checkpoint: everything is proven.
    assert all(e["checkpointed"] for e in report["entries"])
    assert report["pending"]["entries"] == 0
    result = verify_subject_report(report, vkeys)
    assert result.complete and result.data_authenticated
    assert list(result.proven) == [e["seq"] for e in report["entries"]]


def test_report_is_logged_with_a_commitment_and_no_values(
    records: tuple[World, list[str]],
) -> None:
    world, ids = records
    token = grant(world, [ids[0]])
    with world.open("worker1") as v:
        report = v.subject_report(ids[0], token)
    entry = entries_about(world, ids[0])[-1]
    assert entry["action"] == "report.subject" and entry["actor"] == "worker1"
    assert entry["detail"]["commitment"] == report["commitment"]
    # How many entries about the record precede it (record.create, request,
    # approval, read), so a verifier can tell none was left out.
    assert entry["detail"]["about"] == 4
    assert entry["fields"] == list(FIELDS)
    text = json.dumps(entries_about(world, ids[0]), ensure_ascii=False)
    for value in child_values(0).values():
        assert value not in text


def test_staff_report_marks_newer_entries_pending_and_an_officer_completes_it(
    records: tuple[World, list[str]],
) -> None:
    world, ids = records
    token = grant(world, [ids[0]])
    world.clock.advance(minutes=1)
    with world.open("worker1") as v:
        report = v.subject_report(ids[0], token)
    with world.open("admin") as v:
        vkeys = v.signer_vkeys()
    pending = [e for e in report["entries"] if not e["checkpointed"]]
    # The approval signed a checkpoint; the read and the report came after it.
    assert [json.loads(e["entry"])["action"] for e in pending] == ["grant.read", "report.subject"]
    assert report["pending"]["entries"] == 2
    assert "audit prove --complete" in report["pending"]["message"]
    result = verify_subject_report(report, vkeys)
    assert result.pending == tuple(e["seq"] for e in pending)
    assert not result.data_authenticated and not result.complete

    with world.open("worker1") as v, pytest.raises(AccessDenied):
        v.complete_subject_report(report)
    with world.open("officer2") as v:
        done = v.complete_subject_report(report)
    assert done["data"] == report["data"]
    assert [e["entry"] for e in done["entries"]] == [e["entry"] for e in report["entries"]]
    result = verify_subject_report(done, vkeys)
    assert result.complete and result.data_authenticated


def test_report_needs_a_grant_for_the_record(records: tuple[World, list[str]]) -> None:
    world, ids = records
    token = grant(world, [ids[0]])
    with world.open("worker1") as v:
        with pytest.raises(ApprovalInvalid):
            v.subject_report(ids[1], token)  # another record
        with pytest.raises(ApprovalInvalid):
            v.subject_report(ids[0], "v4.public.not-a-token")
    with world.open("worker2") as v, pytest.raises(ApprovalInvalid):
        v.subject_report(ids[0], token)  # issued to worker1
    denied = [e for e in entries_about(world, ids[1]) if e["outcome"] == "denied"]
    assert denied and denied[-1]["action"] == "grant.read"
    assert not any(e["action"] == "report.subject" for e in entries_about(world, ids[0]))


def test_cli_report_subject_writes_0600_and_refuses_a_bad_grant_with_exit_3(
    records: tuple[World, list[str]], tmp_path: Path
) -> None:
    world, ids = records
    world.clock.now = datetime.now(UTC)  # the CLI runs on the real clock
    token_file = tmp_path / "grant.token"
    token_file.write_text(grant(world, [ids[0]]))
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "worker1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"],
    }
    out = tmp_path / "report.json"
    r = CliRunner().invoke(
        cli,
        ["--json", "report", "subject", ids[1], "--grant", f"@{token_file}", "--out", str(out)],
        env=env,
    )
    assert r.exit_code == 3, r.output
    assert not out.exists()
    r = CliRunner().invoke(
        cli,
        ["--json", "report", "subject", ids[0], "--grant", f"@{token_file}", "--out", str(out)],
        env=env,
    )
    assert r.exit_code == 0, r.output
    assert out.stat().st_mode & 0o777 == 0o600
    doc = json.loads(out.read_text())
    assert doc["data"]["name"] == child_values(0)["name"]
    assert json.loads(r.stdout)["pending"] == 2


# ---------------------------------------------------------------- incident


def _scripted_reads(world: World) -> tuple[list[str], datetime, datetime]:
    """worker1 and worker2 read at known times; return ids and worker1's window."""
    with world.open("worker1") as v:
        # Dated for the vault's clock (a test may move it to now: the consent of
        # START's day was then 31 days back-dated once the legal day passed it).
        ids = add_children(v, 4)
    # Before the window: worker1 reads record 0.
    t0 = grant(world, [ids[0]], ("name",))
    with world.open("worker1") as v:
        v.read_with_grant(t0)
    world.clock.advance(hours=1)
    since = world.clock.now
    # In the window: worker1 reads records 1 and 2 (twice with a 2-use grant), and
    # worker2 reads record 3; worker1 also has a denied attempt on record 3.
    t1 = grant(world, ids[1:3], ("name", "guardian_phone"), uses=2)
    t2 = grant(world, [ids[3]], ("address",), requester="worker2")
    with world.open("worker1") as v:
        v.read_with_grant(t1)
        world.clock.advance(minutes=10)
        v.read_with_grant(t1, [ids[2]], ["guardian_phone"])
        with pytest.raises(ApprovalInvalid):
            v.read_with_grant(t2)
    with world.open("worker2") as v:
        v.read_with_grant(t2)
    world.clock.advance(minutes=10)
    until = world.clock.now
    # After the window: worker1 reads record 0 again.
    world.clock.advance(hours=1)
    t3 = grant(world, [ids[0]], ("school",))
    with world.open("worker1") as v:
        v.read_with_grant(t3)
    return ids, since, until


def test_incident_report_lists_exactly_the_actors_reads_in_the_window(world: World) -> None:
    ids, since, until = _scripted_reads(world)
    with world.open("officer2") as v:
        doc = v.incident_report("worker1", since, until)
    assert doc["actor"] == "worker1"
    assert [r["record_id"] for r in doc["records"]] == sorted(ids[1:3])
    by_id = {r["record_id"]: r for r in doc["records"]}
    assert by_id[ids[1]]["read"] == {"events": 1, "fields": {"name": 1, "guardian_phone": 1}}
    assert by_id[ids[2]]["read"] == {"events": 2, "fields": {"name": 1, "guardian_phone": 2}}
    assert all(r["status"] == "live" for r in doc["records"])
    assert doc["fields"] == {
        "guardian_phone": {"read": 3, "exported": 0, "records": 2},
        "name": {"read": 2, "exported": 0, "records": 2},
    }
    assert doc["denied"]["attempts"] == 1
    assert doc["denied"]["records"] == {ids[3]: 1}
    assert doc["totals"]["read_events"] == 3
    # No values, and no contact details: only a pointer to the approval route.
    text = json.dumps(doc, ensure_ascii=False)
    for i in range(4):
        for value in child_values(i).values():
            assert value not in text
    assert "approve" in doc["contact_details"]

    with world.open("officer2") as v:
        other = v.incident_report("worker2", since, until)
    assert [r["record_id"] for r in other["records"]] == [ids[3]]
    with world.open("admin") as v:
        everything = v.incident_report("worker1", since - timedelta(days=1))
    assert {r["record_id"] for r in everything["records"]} == {ids[0], ids[1], ids[2]}
    with world.open("admin") as v:
        logged = [
            e["entry"] for e in v.audit_entries() if e["entry"]["action"] == "report.incident"
        ]
    assert len(logged) == 3 and logged[0]["detail"]["actor"] == "worker1"


def test_incident_report_over_several_users_records_or_an_incident(world: World) -> None:
    """Issue 15: a breach rarely has one culprit; the report takes any set of users or records."""
    ids, since, until = _scripted_reads(world)
    with world.open("officer2") as v:
        both = v.incident_report(["worker1", "worker2"], since, until)
        by_record = v.incident_report(None, since, until, records=[ids[2], ids[3]])
        narrowed = v.incident_report(["worker1"], since, until, records=[ids[2], ids[3]])
    assert both["actors"] == ["worker1", "worker2"] and both["actor"] is None
    assert [r["record_id"] for r in both["records"]] == sorted(ids[1:4])
    assert both["users"] == {
        "worker1": {"read": 2, "exported": 0},
        "worker2": {"read": 1, "exported": 0},
    }
    assert both["totals"]["read_events"] == 4 and both["denied"]["attempts"] == 1
    # Any reader of the records: worker1 read record 2 twice, worker2 record 3 once;
    # record 1 (read in the same entry as record 2) is left out.
    rows = {r["record_id"]: r for r in by_record["records"]}
    assert set(rows) == {ids[2], ids[3]}
    assert rows[ids[2]]["users"] == {"worker1": 2} and rows[ids[3]]["users"] == {"worker2": 1}
    assert by_record["fields"]["guardian_phone"] == {"read": 2, "exported": 0, "records": 1}
    assert by_record["denied"]["records"] == {ids[3]: 1}
    # The filters combine: what worker1 read of those records.
    assert [r["record_id"] for r in narrowed["records"]] == [ids[2]]
    assert narrowed["denied"]["attempts"] == 1

    with world.open("officer1") as v:
        inc = v.incident_open("leak", world.clock.now)
        v.incident_add_records(inc.id, [ids[1], ids[3]])
        of_incident = v.incident_report([], since, until, incident=inc.id)
        with pytest.raises(UsageError, match="--incident"):
            v.incident_report([], since, until)
    assert of_incident["incident"] == inc.id
    assert of_incident["records_asked"] == [ids[1], ids[3]]
    assert [r["record_id"] for r in of_incident["records"]] == sorted([ids[1], ids[3]])
    assert "incident contacts" in of_incident["contact_details"]
    with world.open("admin") as v:
        logged = [
            e["entry"]["detail"]
            for e in v.audit_entries()
            if e["entry"]["action"] == "report.incident"
        ]
    assert logged[0]["actors"] == ["worker1", "worker2"]
    assert logged[1]["records"] == [ids[2], ids[3]] and "actors" not in logged[1]
    assert logged[-1]["incident"] == inc.id


def test_incident_report_counts_export_batches(world: World, tmp_path: Path) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 3, purposes=("statistics",))
    with world.open("officer1") as v:
        lower_export_k(v)
        v.export_anonymized(tmp_path / "stats.csv", k=3)
        doc = v.incident_report("officer1", world.clock.now - timedelta(minutes=1))
    assert sorted(r["record_id"] for r in doc["records"]) == sorted(ids)
    assert all(r["exported"]["events"] == 1 and r["read"]["events"] == 0 for r in doc["records"])
    assert "name" not in doc["fields"] and "date_of_birth" in doc["fields"]


def test_staff_cannot_run_an_incident_report_and_it_is_logged(world: World) -> None:
    with world.open("worker1") as v, pytest.raises(AccessDenied):
        v.incident_report("worker2", datetime(2026, 1, 1, tzinfo=UTC))
    with world.open("admin") as v:
        last = [e["entry"] for e in v.audit_entries()][-1]
    assert (last["action"], last["outcome"], last["actor"]) == (
        "report.incident",
        "denied",
        "worker1",
    )


def test_incident_report_rejects_a_reversed_window_and_bad_names(world: World) -> None:
    now = world.clock.now
    with world.open("officer1") as v:
        with pytest.raises(UsageError):
            v.incident_report("worker1", now, now - timedelta(days=1))
        with pytest.raises(UsageError):
            v.incident_report("Robert'); DROP", now - timedelta(days=1))


def test_cli_incident_report_with_relative_time(world: World) -> None:
    # The CLI runs on the real clock: script the reads in the three hours before it.
    world.clock.now = datetime.now(UTC) - timedelta(hours=3)
    _scripted_reads(world)
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "officer1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["officer1"],
    }
    r = CliRunner().invoke(
        cli, ["--json", "report", "incident", "--actor", "worker1", "--since", "-3650d"], env=env
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["totals"]["read_events"] == 5
    r = CliRunner().invoke(
        cli,
        ["report", "incident", "--actor", "worker1", "--actor", "worker2", "--since", "-3650d"],
        env=env,
    )
    assert r.exit_code == 0, r.output
    assert "worker1, worker2" in r.stdout and "incident contacts" in r.stdout
    assert date.fromisoformat(doc["since"][:10]) < date.fromisoformat(doc["until"][:10])
