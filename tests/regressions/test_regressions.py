"""Today's verdict on every asset in this folder (see README.md)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from childvault.keys import IntegrityError
from childvault.vault._reports import verify_subject_report

HERE = Path(__file__).resolve().parent


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((HERE / name).read_text(encoding="utf-8"))
    return doc


def test_report_over_a_rewritten_log_fails_against_the_earlier_report() -> None:
    """An insider rewrote one ``grant.read`` entry about the record into a
    valid chain and removed the stored checkpoints and the witness file; an
    unaware officer then signed a checkpoint over the rewritten log. Nothing in
    the database shows the edit any more: only the report the child kept does.
    Both reports verify on their own; the later must fail against the earlier,
    and the earlier's entries must not prove against the later checkpoint."""
    doc = load("rewritten_log_reports.json")
    vkeys, seq = doc["vkeys"], doc["rewritten_seq"]
    earlier, later = doc["earlier"], doc["later"]
    assert verify_subject_report(earlier, vkeys).complete
    assert verify_subject_report(later, vkeys).complete
    with pytest.raises(IntegrityError, match=f"entry {seq} of the earlier report"):
        verify_subject_report(later, vkeys, previous=earlier)
    mixed = copy.deepcopy(earlier)
    mixed["checkpoint"] = later["checkpoint"]
    new_proofs = {e["seq"]: e["proof"] for e in later["entries"]}
    for e in mixed["entries"]:
        e["proof"] = new_proofs[e["seq"]]
    with pytest.raises(IntegrityError, match=f"entry {seq} does not lead"):
        verify_subject_report(mixed, vkeys)
