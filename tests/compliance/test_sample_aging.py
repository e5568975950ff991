"""Tests over the shipped sample do not depend on today's date (issue 18).

The sample's guardian-consented children turn 14 as the years pass, and from
that day their records are refused until the child consents (M-12). Tests
that import the whole sample choose records by a property
(:func:`tests._sample.lasting`: the child's own consent), not by position.
This test imports the sample with the clock today and two years ahead and
shows that every record so chosen is approved and read on both days, while
the clock really moved (some guardian consents have lapsed by then).
"""

from __future__ import annotations

import pytest

from tests._sample import SAMPLE, lasting
from tests.conftest import World


@pytest.mark.parametrize("years", [0, 2])
def test_the_sample_reads_the_same_two_years_ahead(world: World, years: int) -> None:
    world.clock.advance(days=365 * years + years // 4)
    today = world.clock().date()
    with world.open("officer1") as v:
        report = v.import_file(SAMPLE, confirm_backdated=True)
        assert report.to_json()["imported"] == 200
    with world.open("worker1") as v:
        listed = [r.to_json() for r in v.list_records()]
        chosen = lasting(listed, len(listed) // 10)
        req = v.request_access(chosen, ["name"], "case_management", "aging check")
    with world.open("officer1") as v:
        token = v.approve(req).token
        lapsed = [
            r["id"]
            for r in listed
            if r["consent_by"] == "guardian"
            and (due := v.consent_of(str(r["id"])).child_consent_due) is not None
            and due <= today
        ]
    with world.open("worker1") as v:
        read = v.read_with_grant(token)
    assert set(read) == set(chosen) and all(read[r]["name"] for r in chosen)
    # The clock is what the vault used: more guardian consents have lapsed later.
    assert len(lapsed) >= (8 if years == 0 else 20)
