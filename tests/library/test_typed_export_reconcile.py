"""``export_anonymized`` and ``reconcile_vault_audit`` return frozen dataclasses
(issue 18) whose ``to_json()`` is exactly what ``--json`` printed before."""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from pathlib import Path

import pytest

from childvault.vault import AnonymizedExport, AuditReconciliation, UnmatchedDecrypt
from tests.conftest import World, add_children, lower_export_k
from tests.test_cli import js, run

#: The keys of ``export anonymized --json`` before the change, in their order.
EXPORT_KEYS = [
    "ok",
    "export",
    "k",
    "records",
    "records_exported",
    "classes",
    "suppressed_classes",
    "l",
    "l_suppressed_groups",
    "subtraction_suppressed_classes",
    "released_sha256",
    "suppressed_records",
    "batches",
    "excluded_no_statistics_consent",
    "excluded_past_retention",
    "excluded_outdated_notice",
    "sha256",
    "out",
    "columns",
    "excluded",
    "export_date",
]


def test_export_returns_a_typed_result_and_the_cli_json_keeps_its_shape(
    world: World, tmp_path: Path
) -> None:
    with world.open("worker1") as v:
        add_children(v, 6, purposes=("case_management", "statistics"))
    out = tmp_path / "s.csv"
    with world.open("officer1") as v:
        lower_export_k(v)
        done = v.export_anonymized(out, k=3)
    assert isinstance(done, AnonymizedExport)
    assert (done.k, done.records, done.l_diversity) == (3, 6, 2)
    assert done.out == out and done.export_date == date(2026, 11, 24)
    assert done.columns[0] == "record_type" and done.columns[-1] == "count"
    assert AnonymizedExport.from_json(done.to_json()) == done
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.k = 2  # type: ignore[misc]

    r = run(world, "officer1", "--json", "export", "anonymized", "--out", str(tmp_path / "c.csv"))
    assert r.exit_code == 0, r.output
    doc = js(r)
    assert list(doc) == EXPORT_KEYS
    assert set(doc["excluded"]) == {"no_statistics_consent", "past_retention", "outdated_notice"}
    assert doc["l"] == 2 and isinstance(doc["columns"], list)


def test_reconciliation_round_trips_its_json_form() -> None:
    doc = {
        "ok": False,
        "vault_audit": "/var/log/openbao/audit.log",
        "decrypts": 3,
        "matched": 2,
        "unmatched": [
            {
                "reason": "",
                "time": "2026-11-24T08:00:00.123456789Z",
                "path": "childvault-transit/decrypt/childvault-dek",
                "vault_request_id": "4a7f",
                "wrapped": True,
                "who": {
                    "display_name": "approle",
                    "entity_id": "e-1",
                    "role_name": "officer1",
                    "policies": ["childvault-officer"],
                    "remote_address": "10.0.0.5",
                },
            }
        ],
        "unwraps": 2,
        "unmatched_unwraps": [
            {
                "reason": "unwrap-no-read",
                "time": "2026-11-24T08:00:01.5Z",
                "path": "sys/wrapping/unwrap",
                "vault_request_id": "5b80",
                "wrapped": True,
                "who": {
                    "display_name": "token",
                    "entity_id": "",
                    "role_name": "",
                    "policies": ["childvault-officer", "default"],
                    "remote_address": "10.0.0.5",
                },
            }
        ],
    }
    report = AuditReconciliation.from_json(doc)
    (unwrap,) = report.unmatched_unwraps
    assert report.unwraps == 2 and unwrap.reason == "unwrap-no-read"
    assert report.vault_audit == Path("/var/log/openbao/audit.log")
    (found,) = report.unmatched
    assert isinstance(found, UnmatchedDecrypt) and found.role_name == "officer1"
    assert found.policies == ("childvault-officer",)
    # Vault's nanoseconds are kept as written.
    assert json.loads(json.dumps(report.to_json())) == doc
