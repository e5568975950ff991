"""The command line in Chinese: chosen by LC_ALL / LC_MESSAGES / LANG, English
otherwise; --json stays English and stable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from childvault.cli.main import cli
from tests.conftest import TODAY, World, years_ahead
from tests.i18n._helpers import EN, ZH, run_as
from tests.test_records import marked_rows, write_csv


def run(world: World, user: str, *args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI as ``user``, in English unless ``env`` names another language."""
    return run_as(world, user, *args, lang=env or EN)


def _requested(world: World, tmp_path: Path) -> str:
    src = write_csv(tmp_path / "rows.csv", marked_rows(2))
    assert run(world, "worker1", "import", str(src)).exit_code == 0
    ids = [r["id"] for r in json.loads(run(world, "worker1", "--json", "list").stdout)["records"]]
    result = run(
        world,
        "worker1",
        "--json",
        "request",
        "--record",
        ids[0],
        "--field",
        "name",
        "--purpose",
        "case_management",
        "--reason",
        "家访前核对",
    )
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["request_id"])


def test_requests_in_chinese_with_lang(world: World, tmp_path: Path) -> None:
    request_id = _requested(world, tmp_path)
    zh = run(world, "officer1", "requests", env=ZH)
    assert zh.exit_code == 0, zh.output
    assert request_id in zh.stdout
    assert "申请人 worker1" in zh.stdout and "理由：家访前核对" in zh.stdout
    assert "共 1 项申请" in zh.stdout
    en = run(world, "officer1", "requests", env=EN)
    assert "requested by worker1" in en.stdout and "1 request(s)" in en.stdout


def test_lc_all_overrides_lang(world: World, tmp_path: Path) -> None:
    _requested(world, tmp_path)
    result = run(world, "officer1", "requests", env={"LANG": "zh_CN.UTF-8", "LC_ALL": "C"})
    assert "requested by" in result.stdout


def test_json_output_stays_english(world: World, tmp_path: Path) -> None:
    _requested(world, tmp_path)
    doc = json.loads(run(world, "officer1", "--json", "requests", env=ZH).stdout)
    assert set(doc) == {"ok", "requests"} and doc["requests"][0]["status"] == "pending"


def test_library_errors_are_shown_in_chinese_and_json_keeps_english(
    world: World, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text('"unbalanced\n', encoding="utf-8")
    zh = run(world, "worker1", "import", str(bad), env=ZH)
    assert zh.exit_code == 1
    assert "错误：" in zh.stderr and "表头行不是有效的 CSV" in zh.stderr
    js = run(world, "worker1", "--json", "import", str(bad), env=ZH)
    error = json.loads(js.stdout)["error"]
    assert error["type"] == "ImportFailed"
    assert error["message"].endswith("the header row is not valid CSV")


def test_usage_errors_and_click_messages_in_chinese(world: World) -> None:
    missing = run(world, "officer1", "approve", env=ZH)
    assert missing.exit_code == 2
    assert "用法:" in missing.stderr and "缺少参数" in missing.stderr
    typo = run(world, "officer1", "lisst", env=ZH)
    assert "没有命令 'lisst'" in typo.stderr and "'list'" in typo.stderr
    grant = run(world, "officer1", "read", "ab" * 16, "--grant", "not-a-token", env=ZH)
    assert grant.exit_code == 2 and "不是批准令牌" in grant.stderr


def test_help_in_chinese_and_back_to_english_in_the_same_process() -> None:
    runner = CliRunner()
    # English first: click creates each --help option once and keeps it.
    assert "Show this message" in runner.invoke(cli, ["requests", "--help"], env=EN).stdout
    zh = runner.invoke(cli, ["requests", "--help"], env=ZH)
    assert "列出待审批的访问申请：保护专员看到所有人的，工作人员只看到自己的。" in zh.stdout
    assert "包括已处理的申请。" in zh.stdout and "显示此帮助并退出。" in zh.stdout
    top = runner.invoke(cli, ["--help"], env=ZH)
    assert "requests" in top.stdout and "列出待审批的访问申请" in top.stdout
    # The msgids stay the English source even while the tree shows Chinese.
    from childvault.cli.main import help_messages

    assert not [t for t in help_messages() if "列出" in t or "。" in t]
    en = runner.invoke(cli, ["requests", "--help"], env=EN)
    assert "Show this message" in en.stdout
    assert "List pending access requests: officers see everyone's, staff their own." in en.stdout
    assert "Include decided requests." in en.stdout and "列出" not in en.stdout


def test_the_installed_command_speaks_chinese(tmp_path: Path) -> None:
    env = {**os.environ, **ZH, "CHILDVAULT_HOME": str(tmp_path / "nohome")}
    env.pop("CHILDVAULT_USER", None)
    result = subprocess.run(
        [sys.executable, "-c", "from childvault.cli.main import main; main()", "requests"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "未指定操作用户" in result.stderr


def test_chinese_field_and_purpose_labels_on_input_and_output(world: World) -> None:
    from tests.conftest import child_values

    values = child_values(7, today=TODAY)
    labelled = {"姓名": values["name"], "性别": values["sex"], "出生日期": values["date_of_birth"]}
    args = [f"--field={k}={v}" for k, v in labelled.items()]
    added = run(
        world,
        "worker1",
        "--json",
        "record",
        "add",
        *args,
        "--consent-by",
        "guardian",
        "--purpose",
        "个案管理",
        "--retain-until",
        years_ahead(6).isoformat(),
    )
    assert added.exit_code == 0, added.output
    record_id = json.loads(added.stdout)["record_id"]
    listed = json.loads(run(world, "worker1", "--json", "list").stdout)["records"]
    assert listed[0]["purposes"] == ["case_management"]
    asked = run(
        world,
        "worker1",
        "--json",
        "request",
        "--record",
        record_id,
        "--field",
        "姓名",
        "--purpose",
        "个案管理",
        "--reason",
        "核对",
    )
    assert asked.exit_code == 0, asked.output
    request_id = json.loads(asked.stdout)["request_id"]
    approved = run(world, "officer1", "--json", "approve", request_id)
    token = json.loads(approved.stdout)["token"]
    zh = run(world, "worker1", "read", record_id, "--grant", token, "--field", "姓名", env=ZH)
    assert zh.exit_code == 0, zh.output
    assert f"  姓名 (name): {values['name']}" in zh.stdout


def test_converted_library_errors_in_chinese(world: World) -> None:
    when = run(world, "officer1", "audit", "log", "--since", "yesterday", env=ZH)
    assert when.exit_code == 2
    assert "无效的时间 'yesterday'" in when.stderr
    en = run(world, "officer1", "--json", "audit", "log", "--since", "yesterday", env=ZH)
    assert json.loads(en.stdout)["error"]["message"].startswith("invalid time 'yesterday'")
