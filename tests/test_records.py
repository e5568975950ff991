"""Writing records: schema enforcement, field-level encryption holding on its own,
imports (streaming, invalid rows, resume without duplicates)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from childvault.keys import AccessDenied, ConfigError, ImportFailed, UsageError, ValidationError
from childvault.vault import NewRecordInput, Vault
from tests._insider import Insider
from tests.conftest import World, add_children, child_values, consent, years_ahead

CONSENT_COLS = {
    "consent_by": "guardian",
    # Empty: the day of the import. A fixed date would leave the back-dating
    # window (30 days, issue 15) as the real clock of the CLI tests moves on.
    "consented_at": "",
    "notice_version": "2026-1",
    "purposes": "case_management;statistics",
    # Six years from today's year: never past retention on the CLI's real clock.
    "retain_until": years_ahead(6).isoformat(),
}
# Distinctive prefixes: any occurrence in a file means a leak.
LATIN_MARK = "ZQXMARK"
CJK_MARK = "鑫淼焱垚"


def marked_rows(n: int) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        values = child_values(
            i,
            name=f"{CJK_MARK}{i}",
            address=f"北京市朝阳区{CJK_MARK}路{i}号",
            case_notes=f"{LATIN_MARK}-{i:05d} 备注",
            guardian_name=f"{LATIN_MARK}G{i}",
        )
        rows.append({**values, **CONSENT_COLS})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_no_plaintext_anywhere_after_importing_1000_records(world: World, tmp_path: Path) -> None:
    rows = marked_rows(1000)
    src = write_csv(tmp_path / "marked.csv", rows)
    with world.open("worker1") as v:
        report = v.import_file(src)
        assert report.imported == 1000
    markers = [LATIN_MARK.encode(), CJK_MARK.encode()]
    id_numbers = [r["id_number"].encode() for r in rows[::20]]
    phones = [r["guardian_phone"].encode() for r in rows[::20]]
    scanned = 0
    for path in world.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            for needle in markers + id_numbers + phones:
                assert needle not in data, f"{needle!r} found in {path}"
    assert scanned >= 6  # db, wal, keyslots, config, schema, identities
    # Field-level encryption must hold on its own: read every table with the key.
    cells = 0
    with Insider(world, "worker1") as insider:
        for table in insider.tables():
            for row in insider.rows(table):
                for cell in row:
                    blob = cell if isinstance(cell, bytes) else str(cell).encode()
                    cells += 1
                    for needle in markers + id_numbers + phones:
                        assert needle not in blob, f"{needle!r} in table {table}"
    assert cells > 10_000


def test_unknown_field_is_refused_naming_it(world: World) -> None:
    with world.open("worker1") as v, pytest.raises(ValidationError) as info:
        v.add_record("child", {**child_values(0), "religion": "x"}, consent())
    assert "religion" in str(info.value) and info.value.exit_code == 2


def test_missing_required_field_is_refused(world: World) -> None:
    values = child_values(0)
    del values["name"]
    with world.open("worker1") as v, pytest.raises(ValidationError, match="name"):
        v.add_record("child", values, consent())


def test_wrong_type_is_refused_without_echoing_the_value(world: World) -> None:
    with world.open("worker1") as v, pytest.raises(ValidationError) as info:
        v.add_record("child", child_values(0, id_number="11010519491231002Y"), consent())
    assert "id_number" in str(info.value) and "11010519491231002Y" not in str(info.value)


def test_undeclared_purpose_is_refused(world: World) -> None:
    with (
        world.open("worker1") as v,
        pytest.raises((ValidationError, UsageError), match="marketing"),
    ):
        v.add_record("child", child_values(0), consent(("marketing",)))


def test_nothing_written_on_rejection(world: World) -> None:
    with world.open("worker1") as v:
        before = v.verify_audit().entries
        with pytest.raises(ValidationError):
            v.add_records(
                [
                    NewRecordInput("child", child_values(0), consent()),
                    NewRecordInput("child", child_values(1, sex="unknown"), consent()),
                ]
            )
        assert v.verify_audit().entries == before
    with Insider(world, "worker1") as insider:
        assert insider.count("records") == 0


def test_admin_cannot_write_records(world: World) -> None:
    with world.open("admin") as v, pytest.raises(AccessDenied):
        add_children(v, 1)


def test_writing_before_any_officer_says_how_to_add_one(tmp_path: Path) -> None:
    from tests.conftest import PASSPHRASES

    with Vault.init(
        tmp_path / "h", institution="x", admin="admin", admin_passphrase=PASSPHRASES["admin"]
    ) as v:
        v.add_user("staffer", ["staff"], "staffer-passphrase")
        v._session.roles = frozenset({"staff"})  # act as staff without another slow unlock
        with pytest.raises(ConfigError, match="user add NAME --role officer"):
            add_children(v, 1)


def test_list_shows_bookkeeping_only(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 3)
        infos = list(v.list_records())
    assert sorted(i.id for i in infos) == sorted(ids)
    blob = json.dumps([i.to_json() for i in infos], ensure_ascii=False)
    assert "测试儿童" not in blob and "case_management" in blob


def test_import_reports_bad_rows_and_writes_nothing(world: World, tmp_path: Path) -> None:
    rows = marked_rows(5)
    rows[1]["sex"] = "maybe"
    rows[3]["id_number"] = "123"
    src = write_csv(tmp_path / "bad.csv", rows)
    with world.open("worker1") as v:
        with pytest.raises(ImportFailed) as info:
            v.import_file(src)
        assert "row 2" in str(info.value) and "row 4" in str(info.value)
        assert "--skip-invalid" in str(info.value)
        assert list(v.list_records()) == []
        report = v.import_file(src, skip_invalid=True)
    assert report.imported == 3 and [r for r, _ in report.errors] == [2, 4]


def test_import_jsonl(world: World, tmp_path: Path) -> None:
    src = tmp_path / "rows.jsonl"
    rows = marked_rows(3)
    rows[0]["purposes"] = ["case_management", "statistics"]  # type: ignore[assignment]
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    with world.open("worker1") as v:
        assert v.import_file(src).imported == 3


def test_interrupted_import_resumes_without_duplicates(world: World, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "big.csv", marked_rows(1200))

    class Interrupt(Exception):
        pass

    def die_after_first_batch(done: int, total: int) -> None:
        if done < total:
            raise Interrupt

    with world.open("worker1") as v:
        with pytest.raises(Interrupt):
            v.import_file(src, progress=die_after_first_batch)
        assert sum(1 for _ in v.list_records()) == 500
        report = v.import_file(src)
        assert report.already_done == 500 and report.imported == 700
        assert sum(1 for _ in v.list_records()) == 1200
        again = v.import_file(src)
        assert again.imported == 0
        v.verify_audit()
    with Insider(world, "worker1") as insider:
        entries = [bytes(e) for (e,) in insider.rows("audit", ["entry"])]
    creates = sum(b'"record.create"' in e for e in entries)
    assert creates == 1200


def test_record_ids_grow_with_time_and_keep_80_random_bits(world: World) -> None:
    # Pins the fix for import throughput falling as the vault grew: random ids
    # put every insert on a random B-tree page (docs/decisions.md).
    before_ms = time.time_ns() // 1_000_000
    with world.open("worker1") as v:
        first = add_children(v, 20)
        second = add_children(v, 20)
    after_ms = time.time_ns() // 1_000_000
    ids = first + second
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids)
    stamps = [int(i[:12], 16) for i in ids]
    assert all(before_ms <= s <= after_ms for s in stamps)
    assert max(int(i[:12], 16) for i in first) <= min(int(i[:12], 16) for i in second)
    assert len({i[12:] for i in ids}) == len(ids)
