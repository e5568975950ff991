"""Compliance, schema and report messages in Chinese (issue 16): an import's
refused rows, schema file errors, consent rules, the lifecycle and register
services, subject-report verification. Each is triggered for real; the reader
sees Chinese, while ``str(exc)`` and ``--json`` keep the English text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result

from childvault._i18n import localize
from childvault.keys import ImportFailed, IntegrityError, UsageError, ValidationError
from childvault.vault import Schema
from childvault.vault._note import vkey
from childvault.vault._reports import verify_subject_report
from childvault.vault._svc_notices import notice_problems
from childvault.vault._wire_messages import message_fields, message_from
from tests.conftest import World, child_values
from tests.i18n._helpers import ZH, run_as
from tests.test_records import CONSENT_COLS, write_csv


def _run(world: World, user: str, *args: str) -> Result:
    return run_as(world, user, *args, lang=ZH)


def _bad_rows() -> list[dict[str, str]]:
    # One valid row, then one mistake a worker typically makes per row.
    rows = [{**child_values(i), **CONSENT_COLS} for i in range(5)]
    rows[1]["name"] = ""  # a required field left empty
    rows[2]["sex"] = "boy"  # not an allowed value
    rows[3]["guardian_phone"] = "12345"  # not a phone number
    rows[4]["consent_by"] = "child"  # a ten-year-old cannot consent alone
    return rows


def test_refused_import_rows_read_in_chinese_and_json_stays_english(
    world: World, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "rows.csv", _bad_rows())
    zh = _run(world, "worker1", "import", str(src))
    assert zh.exit_code == 1, zh.output
    err = zh.stderr
    assert "name：必填字段缺失或为空；应为不超过" in err
    assert "第 3 行：sex：不是允许的值；应为以下之一：male、female（或 男、女" in err
    assert "guardian_phone：" in err
    assert "consent_by：儿童在 consented_at 当天为" in err
    assert "required field is missing" not in err and "not an allowed value" not in err

    doc = json.loads(_run(world, "worker1", "--json", "import", str(src)).stdout)
    message = doc["error"]["message"]
    assert doc["error"]["type"] == "ImportFailed"
    assert "row 2: name: required field is missing or empty; expected text of at most" in message
    assert "row 3: sex: not an allowed value; expected one of: male, female (or 男, 女" in message
    assert (
        "row 5: consent_by: the child was 10 on consented_at; under 14 the parent or other "
        "guardian must consent (P-9, M-12)"
    ) in message


def test_skipped_rows_are_listed_in_chinese(world: World, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "rows.csv", _bad_rows())
    zh = _run(world, "worker1", "import", "--skip-invalid", str(src))
    assert zh.exit_code == 0, zh.output
    assert "name：必填字段缺失或为空" in zh.stderr
    assert "consent_by：儿童在 consented_at 当天为" in zh.stderr


def test_schema_file_errors_name_the_key_in_chinese() -> None:
    bad = b"colour = 'blue'\n" + Schema.default().source
    with pytest.raises(UsageError) as caught:
        Schema.loads(bad)
    exc = caught.value
    assert str(exc).startswith("schema: unknown key 'colour'; allowed here: ")
    assert exc.localized("zh_CN").startswith("模式：未知的键 'colour'；此处允许：")

    with pytest.raises(UsageError) as caught:
        Schema.loads(b"[schema\n")
    assert str(caught.value).startswith("schema: not valid TOML: ")
    assert caught.value.localized("zh_CN").startswith("模式：不是有效的 TOML：")


def test_field_errors_translate_their_nested_parts() -> None:
    schema = Schema.default()
    with pytest.raises(ValidationError) as caught:
        schema.validate_field("child", "name", "a\x01b")
    exc = caught.value
    assert str(exc) == (
        "name: contains the control character U+0001 (only line breaks and tabs are "
        "allowed); remove it"
    )
    assert exc.localized("zh_CN") == "name：含有控制字符 U+0001（只允许换行符和制表符）；请删除"

    with pytest.raises(UsageError) as caught:
        schema.record_type("adult")
    assert str(caught.value) == "unknown record type 'adult'; the schema 'child' declares: child"
    assert caught.value.localized("zh_CN") == (
        "未知的档案类型 'adult'；模式 'child' 声明的类型：child"
    )


def test_lifecycle_and_register_refusals_in_chinese(world: World) -> None:
    with world.open("officer1") as v:
        with pytest.raises(UsageError) as caught:
            v.incident_open("flood", datetime.now(UTC) - timedelta(hours=1))
        assert str(caught.value) == "--kind must be one of leak, damage, loss"
        assert caught.value.localized("zh_CN") == "--kind 必须是以下之一：leak、damage、loss"

        with pytest.raises(UsageError) as caught:
            v.incident_open("leak", datetime.now(UTC) + timedelta(days=2))
        assert str(caught.value) == "--discovered is in the future"
        assert caught.value.localized("zh_CN") == "--discovered 是将来的时间"

        with pytest.raises(UsageError) as caught:
            v.delete("ab" * 16, "x" * 1001)
        assert str(caught.value) == "--reason must say why, in at most 1000 characters"
        assert caught.value.localized("zh_CN") == "--reason 必须说明理由，最多 1000 个字符"


def test_notice_problems_are_marked_one_by_one() -> None:
    problems = notice_problems("告知书\n".encode())
    assert "no refusal option (我拒绝 / I refuse)" in problems
    assert "没有拒绝选项（我拒绝 / I refuse）" in [localize(p, "zh_CN") for p in problems]
    assert localize(problems[0], "zh_CN") == "未列出 P-10 第一项（P-10 item 1）"


def test_subject_report_verification_failures_in_chinese() -> None:
    with pytest.raises(IntegrityError) as caught:
        verify_subject_report({"format": "something else"}, vkey("example.org/log", bytes(32)))
    exc = caught.value
    assert (
        str(exc) == "proof verification failed: the report does not have exactly the expected keys"
    )
    assert exc.localized("zh_CN") == "证明校验失败：报告的键与预期不完全一致"


def test_refused_rows_cross_a_server_answer_translatable(world: World, tmp_path: Path) -> None:
    # A remote import's refusal travels as template and values (_wire_messages),
    # which allow only a few levels of nesting: the row list must stay within them.
    src = write_csv(tmp_path / "rows.csv", _bad_rows())
    with world.open("worker1") as v, pytest.raises(ImportFailed) as caught:
        v.import_file(src)
    english = str(caught.value)
    fields = message_fields(caught.value.args[0])
    assert fields, "the refusal would reach a remote client in English only"
    rebuilt = message_from({"error": english, **fields})
    assert rebuilt == english
    shown = localize(rebuilt, "zh_CN")
    assert "第 2 行：name：必填字段缺失或为空" in shown
    assert "consent_by：儿童在 consented_at 当天为 10 周岁" in shown
