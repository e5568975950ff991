"""Imports as Chinese offices make them: GBK files from Excel/WPS, Chinese column
headers and purposes, and the same child imported twice (issue 16)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from childvault._i18n import localize
from childvault.cli.main import cli
from childvault.keys import ImportFailed, UsageError
from childvault.vault._importer import PURPOSE_LABELS, column_aliases, field_label
from childvault.vault._schema import Schema
from tests.conftest import PASSPHRASES, World, child_values
from tests.test_records import CONSENT_COLS

LABELS = {
    "name": "姓名",
    "sex": "性别",
    "date_of_birth": "出生日期",
    "id_number": "公民身份号码",
    "guardian_phone": "监护人联系电话",
    "consent_by": "同意人",
    "purposes": "用途",
    "retain_until": "保存期限",
}


def rows(start: int, n: int) -> list[dict[str, str]]:
    """Valid rows of children ``start`` .. ``start + n - 1`` (distinct identity numbers)."""
    keep = ("name", "sex", "date_of_birth", "id_number", "guardian_phone")
    return [
        {**{k: v for k, v in child_values(i).items() if k in keep}, **CONSENT_COLS}
        for i in range(start, start + n)
    ]


def write(path: Path, data: list[dict[str, str]], encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)
    return path


def chinese(data: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same rows with Chinese headers and purposes, as an office's sheet has them."""
    by_name = {v: k for k, v in PURPOSE_LABELS.items()}
    out = []
    for row in data:
        row = dict(row)
        row["purposes"] = ";".join(by_name[p] for p in row["purposes"].split(";"))
        out.append({LABELS.get(k, k): v for k, v in row.items()})
    return out


def test_labels_come_from_the_schema_descriptions() -> None:
    rtype = Schema.default().record_type("child")
    assert field_label("姓名 / Full name") == "姓名"
    assert field_label("no label here") is None
    aliases = column_aliases(rtype)
    assert aliases["姓名"] == "name" and aliases["公民身份号码"] == "id_number"
    assert aliases["同意人"] == "consent_by" and aliases["用途"] == "purposes"
    assert set(PURPOSE_LABELS.values()) <= set(Schema.default().purposes)


def test_gbk_file_with_chinese_headers_imports_with_encoding_gbk(
    world: World, tmp_path: Path
) -> None:
    src = write(tmp_path / "excel.csv", chinese(rows(0, 3)), encoding="gbk")
    with world.open("worker1") as v:
        with pytest.raises(ImportFailed) as info:
            v.import_file(src)
        assert "line 1 of the file is not valid UTF-8" in str(info.value)
        assert "--encoding gbk" in str(info.value)
        report = v.import_file(src, encoding="gbk")
        assert report.imported == 3 and not report.errors
        records = list(v.list_records())
    assert {p for r in records for p in r.purposes} == {"case_management", "statistics"}


def test_gb18030_and_a_utf8_bom_are_read(world: World, tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", chinese(rows(0, 2)), encoding="gb18030")
    b = write(tmp_path / "b.csv", chinese(rows(2, 2)), encoding="utf-8-sig")
    with world.open("worker1") as v:
        assert v.import_file(a, encoding="gb18030").imported == 2
        assert v.import_file(b).imported == 2


def test_an_unknown_encoding_is_a_usage_error(world: World, tmp_path: Path) -> None:
    src = write(tmp_path / "a.csv", rows(0, 1))
    with world.open("worker1") as v, pytest.raises(UsageError, match="gbk or gb18030"):
        v.import_file(src, encoding="latin-1")


def test_duplicates_within_a_file_are_refused_by_row(world: World, tmp_path: Path) -> None:
    data = rows(0, 3)
    data.append(dict(data[1], name="另一个名字"))  # row 4 repeats row 2's identity number
    src = write(tmp_path / "dup.csv", data)
    with world.open("worker1") as v:
        with pytest.raises(ImportFailed) as info:
            v.import_file(src)
        message = str(info.value)
        assert "row 4: same id_number as row 2" in message
        assert data[1]["id_number"] not in message  # the value itself is never shown
        assert list(v.list_records()) == []
        report = v.import_file(src, skip_invalid=True)
        assert report.imported == 3 and [r for r, _m in report.errors] == [4]


def test_duplicate_messages_name_fields_by_their_labels_in_chinese(
    world: World, tmp_path: Path
) -> None:
    """In Chinese the duplicate reasons name the fields as ``list`` and ``read`` do
    (``公民身份号码 (id_number)``); in English by name; never the values."""
    data = rows(0, 3)
    data.append(dict(data[1], name="另一个名字"))
    with world.open("worker1") as v:
        report = v.import_file(write(tmp_path / "dup.csv", data), skip_invalid=True)
        ((row, within),) = report.errors
        again = v.import_file(write(tmp_path / "again.csv", rows(0, 1)), skip_invalid=True)
        ((_row, in_vault),) = again.errors
    assert row == 4
    assert str(within).startswith("same id_number as row 2")
    chinese = localize(within, "zh_CN")
    assert chinese.startswith("公民身份号码 (id_number) 与第 2 行相同"), chinese
    both = localize(in_vault, "zh_CN")
    assert "公民身份号码 (id_number)、监护人联系电话 (guardian_phone)" in both, both
    assert "id_number, guardian_phone" in str(in_vault)
    for text in (chinese, both, str(within)):
        assert data[1]["id_number"] not in text and data[1]["guardian_phone"] not in text


def test_duplicates_of_records_in_the_vault_are_refused(world: World, tmp_path: Path) -> None:
    first = write(tmp_path / "first.csv", rows(0, 3))
    # Another file (another export of the same sheet) with two children already in.
    again = write(tmp_path / "again.csv", [*rows(1, 2), *rows(10, 1)])
    with world.open("worker1") as v:
        ids = v.import_file(first).record_ids
        with pytest.raises(ImportFailed) as info:
            v.import_file(again)
        assert "row 1: a record with the same id_number, guardian_phone may already exist" in str(
            info.value
        )
        assert ids[1] in str(info.value) and ids[2] in str(info.value)
        assert len(list(v.list_records())) == 3
        report = v.import_file(again, allow_duplicates=True)
        assert report.imported == 3 and not report.errors
        assert len(list(v.list_records())) == 6


def test_reimporting_the_same_file_is_still_nothing_to_do(world: World, tmp_path: Path) -> None:
    src = write(tmp_path / "a.csv", rows(0, 2))
    with world.open("worker1") as v:
        assert v.import_file(src).imported == 2
        again = v.import_file(src)
    assert again.imported == 0 and again.already_done == 2


def _cli(world: World, *args: str, lang: str = "C.UTF-8") -> Result:
    env = {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "worker1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"],
        "LANG": lang,
        "LC_ALL": "",
        "LC_MESSAGES": "",
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_cli_encoding_and_allow_duplicates(world: World, tmp_path: Path) -> None:
    src = write(tmp_path / "excel.csv", chinese(rows(0, 2)), encoding="gbk")
    bad = _cli(world, "import", str(src), lang="zh_CN.UTF-8")
    assert bad.exit_code == 1
    assert "--encoding gbk" in bad.stderr and "不是有效的 UTF-8" in bad.stderr
    ok = _cli(world, "--json", "import", "--encoding", "gbk", str(src))
    assert json.loads(ok.stdout)["imported"] == 2
    dup = write(tmp_path / "dup.csv", rows(0, 1))
    refused = _cli(world, "--json", "import", str(dup))
    assert refused.exit_code == 1
    assert "--allow-duplicates" in json.loads(refused.stdout)["error"]["message"]
    forced = _cli(world, "--json", "import", "--allow-duplicates", str(dup))
    assert json.loads(forced.stdout)["imported"] == 1


def test_one_colliding_truncated_tag_is_not_a_duplicate() -> None:
    # Tags are 16 bits: one field's tag matches unrelated records all the time.
    from childvault.vault._importer import DuplicateFinder, DuplicateKey

    key = DuplicateKey(identity=("id_number",), searchable=("id_number", "guardian_phone"))
    vault = {"id_number": ["r1", "r2"], "guardian_phone": ["r2"]}

    def finder(matches: dict[str, list[str]]) -> DuplicateFinder:
        return DuplicateFinder(
            key, lambda f, vs: [b"\0\0"] * len(vs), lambda f, ts: [matches.get(f, []) for _t in ts]
        )

    row = {"id_number": "110105201603010012", "guardian_phone": "13800000001"}
    every = {"against_vault": lambda n: True}
    assert finder({"id_number": ["r1"]}).check([(1, row)], **every) == {}
    assert set(finder(vault).check([(1, row)], **every)) == {1}
    assert "(r2)" in finder(vault).check([(1, row)], **every)[1]
    # Without a second searchable field the vault is not asked: within the file only.
    only_id = {"id_number": row["id_number"]}
    assert finder(vault).check([(1, only_id)], **every) == {}
    # Within the file the comparison is exact (no truncation): a different number is no match.
    other = {"id_number": "110105201603010020"}
    assert finder({}).check([(1, only_id), (2, other), (3, only_id)], **every).keys() == {3}
    # Rows an interrupted run already wrote are not compared with the vault.
    assert finder(vault).check([(1, row)], against_vault=lambda n: False) == {}
