"""Issue 18: an import validates each row once and keeps the valid rows for the
write pass within a memory bound; a larger file is read and validated again.
Both paths must import the same rows, skip the same invalid ones and read back
the same values."""

from __future__ import annotations

from pathlib import Path

import pytest

from childvault.vault import _svc_records_import
from tests.conftest import World
from tests.test_records import marked_rows, write_csv


def _import(world: World, src: Path) -> tuple[int, int, list[str]]:
    with world.open("worker1") as v:
        report = v.import_file(src, skip_invalid=True)
        types = sorted(info.type for info in v.list_records())
    return report.imported, report.skipped_invalid, types


@pytest.mark.parametrize("keep", [_svc_records_import._KEEP_BYTES, 0, 2000])
def test_kept_and_reread_rows_import_the_same(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: int
) -> None:
    """``keep`` 0: no row is kept, the write pass reads the file again; 2000: the
    bound is crossed part-way through the file."""
    monkeypatch.setattr(_svc_records_import, "_KEEP_BYTES", keep)
    rows = marked_rows(12)
    rows[4]["sex"] = "maybe"
    rows[9]["id_number"] = "123"
    src = write_csv(tmp_path / "rows.csv", rows)
    imported, invalid, types = _import(world, src)
    assert (imported, invalid) == (10, 2)
    assert types == ["child"] * 10


def test_a_kept_import_writes_what_it_validated(world: World, tmp_path: Path) -> None:
    """A padded value passes the one validation (normalised), and the duplicate
    check, which now takes the validated values, still finds a repeated child."""
    rows = marked_rows(3)
    rows[0]["name"] = "  " + rows[0]["name"] + "  "
    rows[2] = dict(rows[1])  # the same child twice: a duplicate row
    src = write_csv(tmp_path / "rows.csv", rows)
    with world.open("worker1") as v:
        report = v.import_file(src, skip_invalid=True)
    assert (report.imported, report.skipped_invalid) == (2, 1)
    assert "duplicate" in dict(report.errors)[3]
