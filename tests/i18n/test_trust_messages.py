"""Issue 16: the trust and audit modules' refusals read in Chinese, English for str().

Each test makes the error happen for real (a tampered log, a damaged witness, a
forged record row, a malformed invite, token or envelope) and checks both
languages: ``str(exc)`` keeps the exact English text that logs, ``--json`` and
the English tests rely on; ``localized("zh_CN")`` is what a Chinese reader sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from childvault._i18n import localize
from childvault.cli.main import cli
from childvault.keys import ApprovalInvalid, IntegrityError
from childvault.vault import Vault, _tokens
from childvault.vault._statements import Envelope
from tests._insider import Insider
from tests.conftest import World, add_children
from tests.i18n._helpers import ZH, user_env


def _populated(world: World) -> list[str]:
    with world.open("worker1") as v:
        return add_children(v, 3)


def _verify_error(world: World) -> IntegrityError:
    with world.open("worker2") as v, pytest.raises(IntegrityError) as info:
        v.verify_audit()
    return info.value


def _edit_entry(world: World, seq: int) -> None:
    with Insider(world, "worker1") as insider:
        ((entry,),) = insider.rows("audit", ["entry"], where={"seq": seq})
        insider.update(
            "audit", {"entry": bytes(entry).replace(b'"worker1"', b'"worker2"')}, where={"seq": seq}
        )


def test_a_modified_log_entry(world: World) -> None:
    _populated(world)
    _edit_entry(world, 9)
    exc = _verify_error(world)
    assert str(exc) == (
        "audit log integrity failure: entry 9 was modified (its bytes do not match its hash)"
    )
    assert exc.localized("zh_CN") == "审计日志完整性校验失败：第 9 条已被修改（其内容与哈希值不符）"


def test_a_deleted_log_entry(world: World) -> None:
    _populated(world)
    with Insider(world, "worker1") as insider:
        insider.delete("audit", where={"seq": 7})
    exc = _verify_error(world)
    assert str(exc) == (
        "audit log integrity failure: entry 7 is missing (next stored entry is 8): "
        "entries were deleted"
    )
    assert exc.localized("zh_CN") == (
        "审计日志完整性校验失败：第 7 条缺失（下一条存储的是第 8 条）：有条目被删除"
    )


def test_a_damaged_witness_line(world: World) -> None:
    _populated(world)
    with world.open("officer1") as v:
        v.checkpoint()
    with world.witness.open("a") as fh:
        fh.write('{"note": "half a line')
    exc = _verify_error(world)
    assert str(exc) == (
        f"witness file {world.witness} line 2 is damaged (tampering or a partial write)"
    )
    assert exc.localized("zh_CN") == f"见证文件 {world.witness} 第 2 行已损坏（被篡改或写入不完整）"


def test_a_forged_checkpoint_names_its_source_in_chinese_too(world: World) -> None:
    _populated(world)
    with world.open("officer1") as v:
        note = v.checkpoint()
    size = note.split("\n")[1]
    forged = note.replace(size, str(int(size) + 5), 1)
    with world.witness.open("a") as fh:
        fh.write(json.dumps({"note": forged}) + "\n")
    exc = _verify_error(world)
    english = str(exc)
    assert english.startswith("audit log integrity failure: witness checkpoint 2 does not verify: ")
    chinese = exc.localized("zh_CN")
    # The source label and the inner reason are translated inside the sentence.
    assert chinese.startswith("审计日志完整性校验失败：见证检查点 2 未通过校验：签名笔记")
    assert "witness" not in chinese


def test_a_truncated_log_against_the_witness(world: World) -> None:
    _populated(world)
    with world.open("officer1") as v:
        note = v.checkpoint()
    size = int(note.split("\n")[1])
    with Insider(world, "worker1") as insider:
        for seq in range(size - 3, size):
            insider.delete("audit", where={"seq": seq})
        insider.delete("checkpoints")
    exc = _verify_error(world)
    assert str(exc) == (
        f"audit log integrity failure: truncated: the log has {size - 3} entries but witness "
        f"checkpoint 1 covers {size} (entries {size - 3} to {size - 1} were removed)"
    )
    assert exc.localized("zh_CN") == (
        f"审计日志完整性校验失败：已截断：日志只有 {size - 3} 条，但见证检查点 1 涵盖 {size} 条"
        f"（第 {size - 3} 至 {size - 1} 条被删除）"
    )


def _one_record_alone(world: World) -> str:
    # One record added alone: its own record statement names the differing member.
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    return rid


def _one_record_of_a_batch(world: World) -> str:
    # Records added together share one batch statement (issue 18, session 6): a
    # changed row no longer reaches the batch's root, which is what the message says.
    (rid, _, _) = _populated(world)
    return rid


@pytest.mark.parametrize(
    ("added", "why_en", "why_zh"),
    [
        (_one_record_alone, "metadata", "metadata"),
        (_one_record_of_a_batch, "it is not in its batch statement", "不在其批次声明中"),
    ],
    ids=["alone", "batch"],
)
def test_a_record_row_that_differs_from_what_its_writer_signed(
    world: World, added: Callable[[World], str], why_en: str, why_zh: str
) -> None:
    rid = added(world)
    with world.open("worker1") as v:
        req = v.request_access([rid], ["name"], "case_management", "家访")
    with Insider(world, "worker2") as insider:
        insider.update("records", {"metadata": '{"forged": true}'}, where={"id": rid})
    with world.open("officer1") as v, pytest.raises(IntegrityError) as info:
        v.approve(req)
    exc = info.value
    assert str(exc) == (
        f"record {rid} version 1 differs from what its writer signed ({why_en}): refused; the "
        "database was altered. Run `childvault audit verify` and alert the officers"
    )
    assert exc.localized("zh_CN") == (
        f"档案 {rid} 第 1 版与写入者签名的内容不符（{why_zh}）：已拒绝；数据库被改动过。"
        "请运行 `childvault audit verify` 并通知保护专员"
    )


def test_a_malformed_invite(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError) as info:
        Vault.enroll(b"{not json", "a-new-passphrase-1", tmp_path / "new.id")
    assert str(info.value) == "enrolment refused: the invite file is not JSON"
    assert info.value.localized("zh_CN") == "注册被拒绝：邀请文件不是 JSON"
    assert not (tmp_path / "new.id").exists()


def test_a_malformed_envelope() -> None:
    with pytest.raises(IntegrityError) as info:
        Envelope.from_bytes(b'{"payloadType": 1}')
    assert str(info.value) == (
        "signed statement refused: the envelope does not have exactly payloadType, payload, "
        "signatures"
    )
    assert info.value.localized("zh_CN") == (
        "签名声明被拒绝：签名信封的成员不恰好是 payloadType、payload、signatures"
    )


def test_a_rejected_token_keeps_its_reason_translatable(world: World) -> None:
    with pytest.raises(ApprovalInvalid) as info:
        _tokens.verify("v4.public.not-a-token", world.ids["officer1"].public.signing_key)
    detail = info.value.detail
    # The opaque message is what the reader sees; the reason goes to the log.
    assert detail == "not a v4.public token with a footer"
    assert localize(detail, "zh_CN") == "不是带尾部的 v4.public 令牌"


@pytest.mark.locale("zh_CN.UTF-8")
def test_audit_verify_reports_tampering_in_chinese(world: World) -> None:
    _populated(world)
    _edit_entry(world, 9)
    env = user_env(world, "worker2", ZH)
    result = CliRunner().invoke(cli, ["audit", "verify"], env=env)
    assert result.exit_code == 4
    assert "审计日志完整性校验失败：第 9 条已被修改（其内容与哈希值不符）" in result.output
    english = CliRunner().invoke(cli, ["--json", "audit", "verify"], env=env)
    assert english.exit_code == 4
    # --json stays English whatever the language.
    assert "entry 9 was modified (its bytes do not match its hash)" in english.output
