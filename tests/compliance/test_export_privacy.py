"""Export: k at least 3, l-diversity on the category, no subtraction (issue 15 finding 5).

k = 2 was accepted and published a class of two children identified by sex,
age band, district and category; repeated exports could be subtracted.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from childvault.keys import IntegrityError, UsageError
from childvault.vault import NewRecordInput, Vault
from childvault.vault._svc_export import SUPPRESSED, against_releases, l_diverse
from tests.conftest import World, child_values, consent, lower_export_k


def _add(v: Vault, indices: range, category: str = "poverty") -> list[str]:
    return v.add_records(
        [
            NewRecordInput(
                "child", child_values(i, difficulty_category=category), consent(("statistics",))
            )
            for i in indices
        ]
    )


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


def test_k_below_3_is_refused_and_5_is_the_default(world: World, tmp_path: Path) -> None:
    """Finding 5: k defaults to 5 and the smallest k defaults to 5 too (the
    `export_min_k` setting, settable higher, never below 3)."""
    with world.open("worker1") as v:
        _add(v, range(12))
    with world.open("officer1") as v:
        for k in (2, 3, 4):
            with pytest.raises(UsageError, match="from 5"):
                v.export_anonymized(tmp_path / "s.csv", k=k)
        assert v.export_anonymized(tmp_path / "s.csv").k == 5
        with pytest.raises(UsageError):
            v.set_setting("export_min_k", "2")
        lower_export_k(v)  # an officer may lower it to the floor, 3
        with pytest.raises(UsageError, match="from 3"):
            v.export_anonymized(tmp_path / "s.csv", k=2)
        assert v.export_anonymized(tmp_path / "t.csv", k=3).k == 3


def test_a_category_shared_by_the_whole_group_is_suppressed(world: World, tmp_path: Path) -> None:
    """Finding 5: publishing "all six girls aged 6-11 in this district are poor" discloses
    each girl's category; the group's category is suppressed unless it shows two values."""
    with world.open("worker1") as v:
        _add(v, range(12))  # 6 girls, 6 boys, all "poverty"
    out = tmp_path / "s.csv"
    with world.open("officer1") as v:
        lower_export_k(v)
        summary = v.export_anonymized(out, k=3)
    assert {r["difficulty_category"] for r in _rows(out)} == {SUPPRESSED}
    assert summary.l_suppressed_groups == 2
    assert "poverty" not in out.read_text(encoding="utf-8-sig")


def test_a_diverse_group_keeps_its_categories() -> None:
    counts = {
        ("child", "female", "6-11", "d", "poverty"): 4,
        ("child", "female", "6-11", "d", "orphan"): 3,
        ("child", "male", "6-11", "d", "poverty"): 5,
        ("child", "male", "6-11", "d", "orphan"): 1,
    }
    out, coarsened = l_diverse(counts, [4], 3)
    assert out[("child", "female", "6-11", "d", "orphan")] == 3
    assert out[("child", "male", "6-11", "d", SUPPRESSED)] == 6 and coarsened == 1


def test_a_later_export_cannot_be_subtracted_from_an_earlier_one(
    world: World, tmp_path: Path
) -> None:
    """Finding 5: one child added between two exports would be the difference of a class."""
    with world.open("worker1") as v:
        _add(v, range(0, 12, 2))  # six girls
    with world.open("officer1") as v:
        lower_export_k(v)
        first = v.export_anonymized(tmp_path / "a.csv", k=3)
    assert [r["count"] for r in _rows(tmp_path / "a.csv")] == ["6"]
    with world.open("worker1") as v:
        _add(v, range(12, 14, 2))  # one more girl
    with world.open("officer1") as v:
        second = v.export_anonymized(tmp_path / "b.csv", k=3)
    # 7 - 6 = 1 < k: the class is withheld rather than let the new child be isolated.
    assert _rows(tmp_path / "b.csv") == []
    assert second.subtraction_suppressed_classes == 1 and first.classes == 1
    with world.open("worker1") as v:
        _add(v, range(14, 20, 2))  # three more: a difference of 4 >= k is publishable
    with world.open("officer1") as v:
        v.export_anonymized(tmp_path / "c.csv", k=3)
    assert [r["count"] for r in _rows(tmp_path / "c.csv")] == ["10"]


def test_the_release_record_is_verified_against_the_log(world: World, tmp_path: Path) -> None:
    """The record of releases decides what may be published: a forged one fails closed."""
    with world.open("worker1") as v:
        _add(v, range(0, 12, 2))
    with world.open("officer1") as v:
        lower_export_k(v)
        v.export_anonymized(tmp_path / "a.csv", k=3)
        db = v._session.db
        with db.transaction():
            db.meta.set("export_releases", _forged(db))
        with pytest.raises(IntegrityError):
            v.export_anonymized(tmp_path / "b.csv", k=3)


def _forged(db: object) -> str:
    releases = json.loads(db.meta.get("export_releases"))  # type: ignore[attr-defined]
    for classes in releases.values():
        for row in classes:
            row[-1] = 1000  # pretend the earlier count was something else
    return json.dumps(releases)


def test_against_releases_keeps_unchanged_and_far_counts() -> None:
    key = ("child", "female")
    kept, dropped = against_releases([(key, 6)], {"e": [[*key, 6]]}, 5)
    assert kept == [(key, 6)] and dropped == 0
    kept, dropped = against_releases([(key, 8)], {"e": [[*key, 6]]}, 5)
    assert kept == [] and dropped == 1


def test_a_group_cannot_be_subtracted_across_its_suppressed_category(
    world: World, tmp_path: Path
) -> None:
    """Audit probe: the first export shows a group with its category suppressed
    (five girls), the next by category (four poverty, three orphans); the identical-row
    check compared nothing, and 7 - 5 singled out the two girls added between them."""
    with world.open("worker1") as v:
        _add(v, range(0, 8, 2))  # four girls, poverty
        _add(v, range(8, 10, 2), "orphan")  # one girl, orphan
    with world.open("officer1") as v:
        lower_export_k(v)
        v.export_anonymized(tmp_path / "a.csv", k=3)
    first = _rows(tmp_path / "a.csv")
    assert [(r["difficulty_category"], r["count"]) for r in first] == [(SUPPRESSED, "5")]
    with world.open("worker1") as v:
        _add(v, range(10, 14, 2), "orphan")  # two more girls, orphans
    with world.open("officer1") as v:
        second = v.export_anonymized(tmp_path / "b.csv", k=3)
    assert _rows(tmp_path / "b.csv") == []  # the group's total moved by 2 < k: withheld
    assert second.subtraction_suppressed_classes == 2
    with world.open("worker1") as v:
        _add(v, range(14, 20, 2), "orphan")  # three more: 10 - 5 >= k is publishable
    with world.open("officer1") as v:
        v.export_anonymized(tmp_path / "c.csv", k=3)
    got = {r["difficulty_category"]: r["count"] for r in _rows(tmp_path / "c.csv")}
    assert got == {"poverty": "4", "orphan": "6"}


def test_against_releases_compares_group_totals_over_the_category() -> None:
    coarse = ("child", "female", SUPPRESSED)
    poor, orphan = ("child", "female", "poverty"), ("child", "female", "orphan")
    later = [(orphan, 3), (poor, 4)]
    kept, dropped = against_releases(later, {"e": [[*coarse, 5]]}, 3, [2])
    assert kept == [] and dropped == 2
    kept, dropped = against_releases(later, {"e": [[*coarse, 4]]}, 3, [2])
    assert kept == later and dropped == 0  # 7 - 4 = 3 >= k
    kept, dropped = against_releases(
        [(("child", "male", "poverty"), 6)], {"e": [[*coarse, 5]]}, 3, [2]
    )
    assert dropped == 0  # another group
