"""Back-dated consent and who consented (issue 15 finding 2 and section "What to build").

A record created today could carry a consent dated any day before, freely;
and a consent said only "guardian" or "child", not which guardian, nor that the
institution or the civil affairs department was itself the statutory guardian.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from datetime import date
from pathlib import Path

import pytest

from childvault.keys import ValidationError
from childvault.vault import Consent
from tests.conftest import World, child_values, consent

FORM = hashlib.sha256(b"signed consent form, scanned").hexdigest()
# The test clock starts on 2026-11-24; the window is 30 days by default.
OLD = date(2026, 9, 1)


def test_backdated_consent_is_refused_without_an_officer_and_the_form(world: World) -> None:
    """Finding 2: back-dating beyond the window needs an officer and the form's SHA-256."""
    old = consent(consented_at=OLD)
    with world.open("worker1") as v:
        with pytest.raises(ValidationError, match="back-dating needs an officer"):
            v.add_record("child", child_values(0), old)
        # The form alone is not enough: an officer confirms.
        with pytest.raises(ValidationError, match="an officer must confirm"):
            v.add_record("child", child_values(0), dataclasses.replace(old, form_sha256=FORM))
        # Within the window nothing more is asked.
        recent = v.add_record("child", child_values(1), consent(consented_at=date(2026, 10, 30)))
        assert v.consent_of(recent).confirmed_by == ""
    with world.open("officer1") as v:
        with pytest.raises(ValidationError, match="back-dating needs an officer"):
            v.add_record("child", child_values(2), old)
        rid = v.add_record("child", child_values(2), dataclasses.replace(old, form_sha256=FORM))
        stored = v.consent_of(rid)
    assert (stored.form_sha256, stored.confirmed_by) == (FORM, "officer1")


def test_backdating_window_is_a_setting(world: World) -> None:
    # A signed officer's setting (issue 12/15: a meta row an insider can edit is ignored).
    with world.open("officer1") as v:
        v.set_setting("consent_backdate_days", "120")
    with world.open("worker1") as v:
        rid = v.add_record("child", child_values(0), consent(consented_at=OLD))
        assert v.consent_of(rid).consented_at == OLD


def test_backdated_consent_update_needs_the_form(world: World) -> None:
    """A new consent recorded later is measured from the record's creation too."""
    with world.open("worker1") as v:
        rid = v.add_record("child", child_values(0), consent())
    with world.open("officer1") as v:
        with pytest.raises(ValidationError, match="back-dating needs an officer"):
            v.update_consent(rid, consent(consented_at=OLD))
        v.update_consent(rid, dataclasses.replace(consent(consented_at=OLD), form_sha256=FORM))
        assert v.consent_of(rid).confirmed_by == "officer1"


def test_consent_records_the_consenting_party(world: World) -> None:
    """The guardian who consented (relation), or the institution / civil affairs as guardian."""
    mother = dataclasses.replace(consent(), party="guardian", relation="母亲")
    with world.open("worker1") as v:
        a = v.add_record("child", child_values(0), mother)
        b = v.add_record(
            "child", child_values(1), dataclasses.replace(consent(), party="civil_affairs")
        )
        with pytest.raises(ValidationError, match="consent_party"):
            v.add_record("child", child_values(2), dataclasses.replace(consent(), party="child"))
        with pytest.raises(ValidationError, match="consent_relation"):
            v.add_record(
                "child",
                child_values(2),
                dataclasses.replace(consent(), party="institution", relation="院长"),
            )
        assert (v.consent_of(a).party, v.consent_of(a).relation) == ("guardian", "母亲")
        assert v.consent_of(b).consenting_party == "civil_affairs"
    # Older consents name only ``by``; that is what they report.
    assert consent().consenting_party == "guardian"
    legacy = consent().to_json()
    assert "party" not in legacy and Consent.from_json(legacy) == consent()


def test_consent_party_is_an_import_column(world: World, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    row = {
        **child_values(0),
        "consent_by": "guardian",
        "purposes": "case_management",
        "retain_until": "2032-01-01",
        "consent_party": "institution",
    }
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    with world.open("worker1") as v:
        report = v.import_file(path, type_name="child")
        (rid,) = report.record_ids
        assert v.consent_of(rid).party == "institution"
