"""The command line for a Chinese-speaking officer, through the ``locale`` marker:
``list``, ``requests``, ``audit log`` and ``demo`` speak Chinese when ``LANG``
says so, while what came from data or another person is still escaped."""

from __future__ import annotations

import json

import pytest
from click.testing import Result

from childvault.cli.main import cli
from tests.conftest import World, add_children
from tests.i18n._helpers import run_as

ZH = "zh_CN.UTF-8"
#: A reason written to mislead the officer's terminal: title, clear screen, CR, bidi.
ESCAPES = "家访\x1b]0;pwned\x07\x1b[2J\rfake line\u202e"


def run(world: World, user: str, *args: str) -> Result:
    # No LANG here: the test's locale (conftest's pinning or the marker) decides.
    return run_as(world, user, *args)


def _request(world: World, reason: str) -> tuple[str, str]:
    with world.open("worker1") as v:
        (record_id,) = add_children(v, 1)
    r = run(
        world,
        "worker1",
        "--json",
        "request",
        "--record",
        record_id,
        "--field",
        "name",
        "--purpose",
        "case_management",
        "--reason",
        reason,
    )
    assert r.exit_code == 0, r.output
    return record_id, str(json.loads(r.stdout)["request_id"])


def test_tests_run_in_english_unless_they_ask(world: World) -> None:
    import os

    assert os.environ["LANG"] == "C.UTF-8"
    assert "LC_ALL" not in os.environ and "LC_MESSAGES" not in os.environ
    with world.open("worker1") as v:
        add_children(v, 1)
    r = run(world, "worker1", "list")
    assert r.exit_code == 0 and "retain until" in r.stdout


@pytest.mark.locale(ZH)
def test_list_and_requests_in_chinese_with_escaped_data(world: World) -> None:
    record_id, request_id = _request(world, ESCAPES)
    listed = run(world, "worker1", "list")
    assert listed.exit_code == 0, listed.output
    assert record_id in listed.stdout and "保存至" in listed.stdout
    assert "retain until" not in listed.stdout
    queue = run(world, "officer1", "requests")
    assert queue.exit_code == 0, queue.output
    out = queue.stdout
    assert request_id in out and "申请人 worker1" in out and "共 1 项申请" in out
    # Chinese labels around the reason do not stop it being escaped.
    assert "家访\\x1b]0;pwned\\x07\\x1b[2J\\x0dfake line\\u202e" in out
    assert not any(ch in out for ch in "\x1b\x07\r\u202e")
    # --json stays English and keeps the raw value (JSON-escaped).
    doc = json.loads(run(world, "officer1", "--json", "requests").stdout)
    assert doc["requests"][0]["reason"] == ESCAPES and doc["requests"][0]["status"] == "pending"


@pytest.mark.locale(ZH)
def test_audit_log_shows_action_labels_in_chinese(world: World) -> None:
    _record_id, request_id = _request(world, "核对")
    denied = run(world, "officer1", "deny", request_id, "--reason", "不必要\x1b[2J")
    assert denied.exit_code == 0, denied.output
    r = run(world, "officer1", "audit", "log")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "创建档案库（vault.init）" in out and "申请访问（request.create）" in out
    assert "完成" in out and "\x1b" not in out
    # The log's own codes stay for --action filters and in --json.
    doc = json.loads(run(world, "officer1", "--json", "audit", "log").stdout)
    assert {e["entry"]["action"] for e in doc["entries"]} >= {"vault.init", "request.deny"}


def test_audit_log_in_english_is_unchanged(world: World) -> None:
    r = run(world, "officer1", "audit", "log", "--action", "vault.init")
    assert r.exit_code == 0, r.output
    (line,) = r.stdout.splitlines()
    assert " vault.init " in line and " ok " in line and "（" not in line


@pytest.mark.locale(ZH)
def test_the_demo_narrates_in_chinese(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["demo"], prog_name="childvault", standalone_mode=False)
    out = capsys.readouterr().out
    assert code in (None, 0), out
    assert "== 1. 管理员创建档案库（本地密钥提供方，无需服务器）。" in out
    assert "== 12. 任何人都可以校验这份哈希链接、带检查点的审计日志。" in out
    assert "演示完成。" in out and "（退出码 3）" in out
    # The commands' own output is Chinese too (they run in the same locale).
    assert "共 1 项申请" in out
    assert "Demo complete." not in out and "(exit code" not in out
