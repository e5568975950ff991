"""`requests` and `read` in Chinese show labels, not codes (issue 16: "field and
purpose labels from the schema ... shown on output", "all of it works in Chinese").

Found by the issue audit: the status (``pending``), the purpose
(``case_management``) and the fields (``name``) of `requests` stayed English codes
under ``LANG=zh_CN.UTF-8``, and a malformed ``--grant`` showed the token check's
English detail inside the Chinese message. English output is unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import Result

from tests.conftest import World
from tests.i18n._helpers import EN, ZH, run_as
from tests.test_records import marked_rows, write_csv


def run(world: World, user: str, *args: str, lang: dict[str, str]) -> Result:
    return run_as(world, user, *args, lang=lang)


def _request(world: World, tmp_path: Path) -> tuple[str, str]:
    """A record and a pending request for its name and guardian's phone."""
    src = write_csv(tmp_path / "rows.csv", marked_rows(1))
    assert run(world, "worker1", "import", str(src), lang=EN).exit_code == 0
    listed = run(world, "worker1", "--json", "list", lang=EN)
    record = json.loads(listed.stdout)["records"][0]["id"]
    filed = run(
        world,
        "worker1",
        "--json",
        "request",
        "--record",
        record,
        "--field",
        "姓名",
        "--field",
        "guardian_phone",
        "--purpose",
        "个案管理",
        "--reason",
        "家访前核对",
        lang=ZH,
    )
    assert filed.exit_code == 0, filed.output
    return record, str(json.loads(filed.stdout)["request_id"])


def test_requests_shows_status_purpose_and_fields_by_their_chinese_labels(
    world: World, tmp_path: Path
) -> None:
    _record, request_id = _request(world, tmp_path)
    zh = run(world, "officer1", "requests", lang=ZH)
    assert zh.exit_code == 0, zh.output
    line = next(x for x in zh.stdout.splitlines() if x.startswith(request_id))
    assert "待审批" in line and "pending" not in line
    assert "用途 个案管理 (case_management)" in zh.stdout
    assert "字段 姓名 (name)、监护人联系电话 (guardian_phone)" in zh.stdout

    denied = run(world, "officer1", "deny", request_id, "--reason", "不必要", lang=EN)
    assert denied.exit_code == 0, denied.output
    zh = run(world, "officer1", "requests", "--all", lang=ZH)
    assert "由 officer1 决定：已拒绝（不必要）" in zh.stdout
    assert "denied" not in zh.stdout

    # English keeps the codes, as before; --json keeps them in every language.
    en = run(world, "officer1", "requests", "--all", lang=EN)
    assert "purpose case_management  fields name,guardian_phone" in en.stdout
    assert "decided by officer1: denied (不必要)" in en.stdout
    doc = json.loads(run(world, "officer1", "--json", "requests", "--all", lang=ZH).stdout)
    (item,) = [r for r in doc["requests"] if r["id"] == request_id]
    assert (item["status"], item["purpose"]) == ("denied", "case_management")
    assert item["fields"] == ["name", "guardian_phone"]


def test_a_malformed_grant_is_explained_in_chinese(world: World, tmp_path: Path) -> None:
    record, _request_id = _request(world, tmp_path)
    zh = run(world, "worker1", "read", record, "--grant", "v4.public.nonsense", lang=ZH)
    assert zh.exit_code == 2
    assert "不是批准令牌：不是带尾部的 v4.public 令牌" in zh.stderr, zh.stderr
    assert "not a v4.public token" not in zh.stderr
    en = run(world, "worker1", "read", record, "--grant", "v4.public.nonsense", lang=EN)
    assert "not an approval token: not a v4.public token with a footer" in en.stderr


def test_list_shows_purposes_by_their_chinese_labels(world: World, tmp_path: Path) -> None:
    """Found by the issue audit: `list` printed ``case_management;statistics`` codes
    under ``LANG=zh_CN.UTF-8``."""
    record, _request_id = _request(world, tmp_path)
    zh = run(world, "worker1", "list", lang=ZH)
    assert zh.exit_code == 0, zh.output
    line = next(x for x in zh.stdout.splitlines() if x.startswith(record))
    assert "个案管理 (case_management)" in line
    en = run(world, "worker1", "list", lang=EN)
    line = next(x for x in en.stdout.splitlines() if x.startswith(record))
    assert "个案管理" not in line and "case_management" in line


def test_a_role_refusal_names_the_roles_in_chinese(world: World, tmp_path: Path) -> None:
    """Found by the issue audit: a refusal said "需要 officer或admin 角色" with the
    roles as English codes; a Chinese reader gets the role's name and its code."""
    _record, request_id = _request(world, tmp_path)
    zh = run(world, "worker1", "approve", request_id, lang=ZH)
    assert zh.exit_code != 0
    assert "保护专员（officer）" in zh.output, zh.output
    en = run(world, "worker1", "approve", request_id, lang=EN)
    assert "officer" in en.output and "保护专员" not in en.output
