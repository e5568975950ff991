"""Subject reports redact other children's record ids (issue 15 finding 6).

A report about one child carried, byte for byte, every log entry about the
record, including a request or read that named other children's records: the
report disclosed their record ids. Now those ids read "another record", the
entry is marked ``"redacted": true`` and its leaf hash is still proven.
"""

from __future__ import annotations

import copy
import json

import pytest

from childvault.keys import IntegrityError
from childvault.vault import verify_subject_report
from tests.conftest import World, add_children


def _report(world: World) -> tuple[dict[str, object], list[str], list[str]]:
    with world.open("worker1") as v:
        ids = add_children(v, 2)
        shared = v.request_access(ids, ["name"], "case_management", "家访")
    with world.open("officer1") as v:
        v.approve(shared)
    with world.open("worker1") as v:
        own = v.request_access(ids[:1], ["name"], "case_management", "本人查询")
    with world.open("officer1") as v:
        token = v.approve(own).token
    with world.open("officer2") as v:
        vkeys = v.signer_vkeys()
    with world.open("worker1") as v:
        report = v.subject_report(ids[0], token)
    with world.open("officer1") as v:
        report = v.complete_subject_report(report)
    return report, ids, vkeys


def test_other_record_ids_are_redacted_and_the_report_still_verifies(world: World) -> None:
    report, ids, vkeys = _report(world)
    assert ids[1] not in json.dumps(report)
    entries = report["entries"]
    assert isinstance(entries, list)
    redacted = [e for e in entries if e.get("redacted")]
    assert redacted and all(
        sorted(json.loads(e["entry"])["records"]) == sorted([ids[0], "another record"])
        for e in redacted
    )
    result = verify_subject_report(report, vkeys)
    assert result.complete and {e["seq"] for e in redacted} <= set(result.proven)


def test_a_redacted_entry_cannot_hide_a_changed_leaf_or_forged_content(world: World) -> None:
    report, _ids, vkeys = _report(world)
    entries = report["entries"]
    assert isinstance(entries, list)
    at = next(i for i, e in enumerate(entries) if e.get("redacted"))
    # The leaf hash is what is proven: changing it breaks the proof.
    bad = copy.deepcopy(report)
    bad["entries"][at]["leaf_hash"] = "00" * 32  # type: ignore[index]
    with pytest.raises(IntegrityError):
        verify_subject_report(bad, vkeys)
    # Only other record ids may be replaced, and only in a redacted entry.
    forged = copy.deepcopy(report)
    obj = json.loads(forged["entries"][at]["entry"])  # type: ignore[index]
    obj["records"] = ["another record"]
    forged["entries"][at]["entry"] = json.dumps(
        obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False
    )  # type: ignore[index]
    with pytest.raises(IntegrityError, match="not a redacted entry about the record"):
        verify_subject_report(forged, vkeys)


def test_redacted_content_is_bound_to_the_reports_own_entry(world: World) -> None:
    """The shown text of a redacted entry cannot be changed after the report was made."""
    report, _ids, vkeys = _report(world)
    entries = report["entries"]
    assert isinstance(entries, list)
    at = next(i for i, e in enumerate(entries) if e.get("redacted"))
    forged = copy.deepcopy(report)
    obj = json.loads(forged["entries"][at]["entry"])  # type: ignore[index]
    obj["purpose"] = "legal_protection"
    forged["entries"][at]["entry"] = json.dumps(  # type: ignore[index]
        obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False
    )
    with pytest.raises(IntegrityError, match="differ from what the report's own entry logged"):
        verify_subject_report(forged, vkeys)
