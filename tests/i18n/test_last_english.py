"""The last English messages (issue 16): doctor's lines and the Vault problems it
prints, a missing extra, and a childvault server's answers as the client shows
them, all read in Chinese, with the English text (``str()``, ``--json``) unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from childvault._i18n import Message, _t, join, localize

# Imported at collection (the --version help is translated when shown, not at
# import: tests/i18n/test_access_keys_messages.py pins that).
from childvault.cli.main import cli
from childvault.keys import ExtraRequired, NotFound, ValidationError
from childvault.keys._openbao._diagnose import _lowered_floor
from childvault.vault._svc_health import _vault_checks
from childvault.vault._wire_messages import (
    REFUSALS,
    message_fields,
    message_from,
    refusal_message,
)
from tests.conftest import PASSPHRASES, World


def _has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_the_vault_lines_of_doctor_read_in_chinese() -> None:
    diag: dict[str, Any] = {
        "addr": "https://vault.example:8200",
        "reachable": True,
        "sealed": False,
        "version": "2.7.2",
        "mounts": {
            "transit": {"path": "transit", "present": True},
            "kv": {"path": "childvault-kv", "present": False},
        },
        "capabilities": {"encrypt": {"capabilities": ["update"]}},
        "roles": [],
        "problems": [
            _t("no Transit key {name}: run `childvault vault setup`", name="childvault-dek")
        ],
    }
    lines = _vault_checks(diag)
    english = [message for _, _, message in lines]
    # English unchanged from before the messages were marked.
    assert english == [
        "https://vault.example:8200 reachable, unsealed, version 2.7.2",
        "transit transit present, kv childvault-kv MISSING",
        "acts as no childvault role; capabilities on: encrypt",
        "no Transit key childvault-dek: run `childvault vault setup`",
    ]
    assert [status for _, status, _ in lines] == ["ok", "fail", "ok", "fail"]
    chinese = [localize(message, "zh_CN") for message in english]
    assert all(_has_chinese(line) for line in chinese), chinese
    assert "childvault-kv 缺失" in chinese[1]
    assert "无 childvault 角色" in chinese[2]
    # Values (a path, a key name) are never translated.
    assert "https://vault.example:8200" in chinese[0] and "childvault-dek" in chinese[3]


def test_an_unreachable_or_sealed_server_reads_in_chinese() -> None:
    down = _vault_checks({"addr": "http://127.0.0.1:1", "reachable": False})
    assert down == [
        ("vault", "fail", "http://127.0.0.1:1 is unreachable: is the server running? (VAULT_ADDR)")
    ]
    assert localize(down[0][2], "zh_CN").startswith("无法连接 http://127.0.0.1:1")
    sealed = _vault_checks({"addr": "http://v", "reachable": True, "sealed": True})
    assert localize(sealed[0][2], "zh_CN") == "http://v 已封存：请先解封"


def test_a_lowered_decryption_floor_reads_in_chinese() -> None:
    (problem,) = _lowered_floor(
        "childvault-dek", {"min_decryption_version": 1, "min_encryption_version": 3}
    )
    assert str(problem).startswith("Transit key childvault-dek: min_decryption_version 1 is")
    assert localize(problem, "zh_CN").startswith("Transit 密钥 childvault-dek：")


def test_a_missing_extra_names_the_install_in_chinese() -> None:
    exc = ExtraRequired("vault", _t("the Vault / OpenBao key provider"))
    assert str(exc) == (
        "the Vault / OpenBao key provider needs the optional packages of childvault[vault]: "
        "run pip install 'childvault[vault]'"
    )
    shown = exc.localized("zh_CN")
    assert shown.startswith("Vault / OpenBao 密钥提供方需要 childvault[vault]")
    assert "pip install 'childvault[vault]'" in shown
    assert exc.extra == "vault"


def test_join_translates_each_part_and_keeps_the_english() -> None:
    parts = [_t("{n} record(s)", n=2), _t("none")]
    joined = join(", ", parts)
    assert str(joined) == "2 record(s), none"
    # Issue 16: a separator of SEPARATORS is translated too (zh_CN lists with "、").
    assert localize(joined, "zh_CN") == (
        f"{localize(parts[0], 'zh_CN')}、{localize(parts[1], 'zh_CN')}"
    )
    # Braces in the separator are text, not placeholders.
    assert str(join("{}", ["a", "b"])) == "a{}b"
    assert str(join(", ", [])) == ""


def test_a_library_error_crosses_the_wire_translatable() -> None:
    error = NotFound(_t("no record {record_id}", record_id="ab12"))
    doc = {
        "error": str(error),
        "reason": "error",
        "type": "NotFound",
        **message_fields(error.args[0]),
    }
    assert doc["template"] == "no record {record_id}" and doc["params"] == {"record_id": "ab12"}
    shown = message_from(doc)
    assert isinstance(shown, Message) and str(shown) == "no record ab12"
    assert localize(shown, "zh_CN") == _t("no record {record_id}", record_id="ab12").in_locale(
        "zh_CN"
    )
    assert _has_chinese(localize(shown, "zh_CN"))
    # A message nested in another one is carried too.
    outer = ValidationError(_t("{why} ({detail})", why=_t("none"), detail="x"))
    nested = {"error": str(outer), **message_fields(outer.args[0])}
    assert localize(message_from(nested), "zh_CN") == "无（x）"


def test_the_client_accepts_only_what_renders_to_the_english_sent() -> None:
    base = {"error": "no record ab12", "reason": "error", "type": "NotFound"}
    # A template that does not render to the English text: the English text is shown.
    other = {**base, "template": "record {id} was approved", "params": {"id": "ab12"}}
    assert type(message_from(other)) is str and message_from(other) == "no record ab12"
    # Format specifications and attribute access are refused before formatting
    # (a hostile server must not make the client build a huge string).
    for template in ("{id:>999999999}", "{id.__class__}", "{id[0]}", "{0}"):
        hostile = {**base, "template": template, "params": {"id": "ab12"}}
        assert message_from(hostile) == "no record ab12"
        assert not isinstance(message_from(hostile), Message)
    # Values other than plain ones are refused as well.
    odd = {**base, "template": "no record {id}", "params": {"id": ["ab12"]}}
    assert not isinstance(message_from(odd), Message)
    # An error without a template (an older server) stays as it was.
    assert message_from(base) == "no record ab12"
    # Values that cannot cross (a path) leave the message English-only.
    from pathlib import Path

    assert message_fields(_t("{path} is missing", path=Path("/x"))) == {}
    assert message_fields("plain") == {}


def test_every_refusal_reason_of_the_server_reads_in_chinese() -> None:
    from childvault.server._app import openapi_document

    schema = openapi_document()["components"]["schemas"]["Refusal"]["properties"]
    codes = set(schema["reason"]["enum"]) - {"error"}
    # Every reason the server documents has a text (and no text names an unknown code).
    assert codes == set(REFUSALS)
    for code in sorted(codes):
        shown = refusal_message(403, {"error": "forbidden", "reason": code})
        assert str(shown) == REFUSALS[code]
        assert _has_chinese(localize(shown, "zh_CN")), code
    # A refused call keeps the server's English detail after the translated reason.
    busy = refusal_message(
        503, {"error": "another client's transaction holds the vault", "reason": "busy"}
    )
    assert localize(busy, "zh_CN") == (
        "另一个客户端的事务正占用档案库：请重试（another client's transaction holds the vault）"
    )
    # An unknown code (a newer server): its own text, as before.
    assert refusal_message(418, {"error": "teapot", "reason": "new_code"}) == "teapot"
    assert localize(refusal_message(500, {}), "zh_CN") == "服务器拒绝了请求（500）"


@pytest.mark.locale("zh_CN.UTF-8")
def test_doctor_and_a_wrong_passphrase_in_chinese(world: World) -> None:
    env = {"CHILDVAULT_HOME": str(world.home), "CHILDVAULT_USER": "worker1"}
    wrong = CliRunner().invoke(
        cli, ["list"], env={**env, "CHILDVAULT_PASSPHRASE": "not-the-passphrase-at-all"}
    )
    assert wrong.exit_code == 3
    assert "用户 'worker1' 的口令错误；未做任何更改" in wrong.stderr
    doctor = CliRunner().invoke(
        cli, ["doctor"], env={**env, "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"]}
    )
    lines = doctor.stdout.splitlines()
    users = [line for line in lines if "] users" in line]
    assert users and "个用户" in users[0] and "名保护专员" in users[0], doctor.stdout
    custodian = [line for line in lines if "] custodian" in line]
    assert custodian and "第 1 代（当前）" in custodian[0], doctor.stdout
    # --json stays English.
    as_json = CliRunner().invoke(
        cli, ["--json", "doctor"], env={**env, "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"]}
    )
    checks = {c["name"]: c["message"] for c in json.loads(as_json.stdout)["checks"]}
    assert "user(s)" in checks["users"] and "officer(s)" in checks["users"]
    assert checks["custodian"] == "generation 1 current"
