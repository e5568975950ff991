"""Choosing records of the shipped sample (``childvault/vault/data/sample.csv``) that
do not age.

The sample's guardian-consented children turn 14 over the years, and from that
day approvals and reads refuse their records until the child's own consent is
recorded (M-12). Record ids are random, so a test that takes the first listed
records after importing the whole sample picks different children each run and
starts failing, now and then, as the calendar moves. Tests choose by a property
instead: records the child consented to themselves, which no birthday lapses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

#: The shipped sample.
SAMPLE = Path(__file__).resolve().parents[1] / "childvault" / "vault" / "data" / "sample.csv"


def lasting(records: Iterable[Mapping[str, object]], n: int) -> list[str]:
    """The ids of the first ``n`` listed records (``list --json`` rows, or
    :meth:`RecordInfo.to_json`) whose consent does not lapse with time: given
    by the child (14 or older) themselves. Raises if fewer are listed."""
    ids = [str(r["id"]) for r in records if r.get("consent_by") == "child"]
    if len(ids) < n:
        raise AssertionError(f"the listing has {len(ids)} child-consented records, not {n}")
    return ids[:n]
