"""Back-dating through an import (docs/compliance.md, formerly known gap 1; M-12, P-9).

``import`` was exempt from the back-dating window, so a worker could create a
record whose consent was dated when the child was 13 (a guardian's consent
then sufficed) with a one-row file, where ``record add`` would have asked for
an officer and the signed form's SHA-256. An import row beyond the window now
needs both: the form's digest in the row, and an officer running the import
with ``--confirm-backdated``. Other rows are refused one by one, as any bad row.
"""

from __future__ import annotations

import csv
import hashlib
from datetime import date
from pathlib import Path

import pytest

from childvault.keys import AccessDenied, ImportFailed
from childvault.vault._validators import make_id_number
from tests.conftest import World, child_values
from tests.test_cli import run

FORM = hashlib.sha256(b"signed consent form of 2026-05-01, scanned").hexdigest()
# The test clock starts on 2026-11-24. A child born on 2012-06-01 is 14 today
# and was 13 on 2026-05-01, when (so the row says) the guardian consented.
BORN = date(2012, 6, 1)
AT_13 = "2026-05-01"


def _row(i: int, consented_at: str, form: str | None = None) -> dict[str, str]:
    """A row for child ``i``; a consent dated before 2026-11 is that of the child born on BORN."""
    values = (
        child_values(i)
        if consented_at >= "2026-11"
        else child_values(
            i,
            date_of_birth=BORN.isoformat(),
            id_number=make_id_number("110105", BORN, 500 + 2 * i + i % 2),
        )
    )
    row = {
        **values,
        "consent_by": "guardian",
        "consented_at": consented_at,
        "notice_version": "2026-1",
        "purposes": "case_management",
        "retain_until": "2032-01-01",
    }
    if form is not None:
        row["consent_form_sha256"] = form
    return row


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_one_row_import_backdated_to_when_the_child_was_13_is_refused(
    world: World, tmp_path: Path
) -> None:
    """The gap itself: a worker's one-row import cannot back-date a consent."""
    path = _write(tmp_path / "one.csv", [_row(0, AT_13)])
    with world.open("worker1") as v:
        with pytest.raises(ImportFailed) as refused:
            v.import_file(path)
        assert "row 1: consented_at" in str(refused.value)
        assert "--confirm-backdated" in str(refused.value)
        # In Chinese too, row by row (the CLI shows ``localized()``).
        assert "同意书摘要" in refused.value.localized("zh_CN")
        assert "第 1 行" in refused.value.localized("zh_CN")
        assert list(v.list_records()) == []
        # With the form's digest a worker still cannot confirm it ...
        with pytest.raises(ImportFailed, match="an officer must confirm back-dated rows"):
            v.import_file(_write(tmp_path / "form.csv", [_row(0, AT_13, FORM)]))
        # ... nor claim to be confirming (refused before any row is read).
        with pytest.raises(AccessDenied):
            v.import_file(path, confirm_backdated=True)
        assert list(v.list_records()) == []


def test_staff_migration_imports_the_valid_rows_and_names_the_backdated_ones(
    world: World, tmp_path: Path
) -> None:
    """A staff member migrating a register loses nothing: the rows within the
    window go in, each back-dated row is reported, and an officer imports those
    rows (with their forms' digests) confirming them."""
    recent = "2026-11-10"
    register = _write(
        tmp_path / "register.csv",
        [_row(0, recent), _row(1, AT_13), _row(2, recent, ""), _row(3, "2026-05-20", "")],
    )
    with world.open("worker1") as v:
        report = v.import_file(register, skip_invalid=True)
        assert report.imported == 2
        assert [row for row, _ in report.errors] == [2, 4]
        assert all("--confirm-backdated" in reason for _, reason in report.errors), report.errors
        # The reasons keep their translation for the CLI.
        assert all(
            "同意书摘要" in reason.in_locale("zh_CN")  # type: ignore[attr-defined]
            for _, reason in report.errors
        )
    rest = _write(tmp_path / "backdated.csv", [_row(1, AT_13, FORM), _row(3, "2026-05-20", FORM)])
    with world.open("officer1") as v:
        # An officer who does not say --confirm-backdated confirms nothing.
        with pytest.raises(ImportFailed, match="an officer must confirm back-dated rows"):
            v.import_file(rest)
        confirmed = v.import_file(rest, confirm_backdated=True)
        assert confirmed.imported == 2 and confirmed.errors == ()
        for rid in confirmed.record_ids:
            stored = v.consent_of(rid)
            assert (stored.form_sha256, stored.confirmed_by) == (FORM, "officer1")
        # Within the window nothing is confirmed or asked for.
        assert v.consent_of(report.record_ids[0]).confirmed_by == ""


def test_cli_names_the_refused_row_in_chinese(world: World, tmp_path: Path) -> None:
    path = _write(tmp_path / "one.csv", [_row(0, "2020-01-01")])
    zh = {"LANG": "zh_CN.UTF-8"}
    r = run(world, "worker1", "import", str(path), "--skip-invalid", env=zh)
    assert r.exit_code == 0, r.output
    assert "已跳过第 1 行" in r.stderr
    assert "同意书摘要" in r.stderr and "--confirm-backdated" in r.stderr
    r = run(world, "worker1", "import", str(path), "--confirm-backdated")
    assert r.exit_code == 3, r.output
