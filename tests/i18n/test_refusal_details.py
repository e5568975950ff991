"""What a server refused reads in the reader's language, to the last word (issue 16).

A refusal of ``childvault serve`` names a reason code (translated by the client
from its own table) and a detail: what was refused. The detail now crosses the
wire with its template and values, like a library error's message, so a
Chinese reader gets it in Chinese; the client rebuilds it only when it renders
to exactly the English the server sent (a tampered template falls back to that
English). The English text, ``--json`` and the server's refusal log stay
byte-identical. The witness's plain-text refusals carry the same template in a
header. Everything here runs against real servers (tests/server).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from childvault._i18n import join, localize
from childvault.keys import AccessDenied, ChildVaultError
from childvault.server._witness import WitnessClient, WitnessFailed
from childvault.vault._remote import RemoteBackend
from childvault.vault._wire_messages import (
    HEADER,
    message_fields,
    message_from,
    message_from_header,
    message_header,
    refusal_message,
)
from tests.server._vaultserver import VaultServer, make_vault
from tests.server.test_witness import Log, WitnessProcess

ZERO = "0" * 32


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    vs = make_vault(
        tmp_path_factory.mktemp("vault"), people=("officer1", "worker1", "worker2", "worker3")
    )
    vs.start()
    try:
        yield vs
    finally:
        vs.stop()


def _backend(v: object) -> RemoteBackend:
    backend = v._session.db  # type: ignore[attr-defined]
    assert isinstance(backend, RemoteBackend)
    return backend


def test_a_role_refusal_names_the_call_in_chinese(served: VaultServer) -> None:
    with served.connect("worker1") as staff:
        db = staff._session.db
        with pytest.raises(AccessDenied) as refused, db.transaction():
            db.access.decide(ZERO, status="approved", by="worker1", at="x", reason=None)
    assert str(refused.value) == (
        "the childvault server refused the request: the acting user's roles do not allow "
        "this call (staff may not call access.decide)"
    )
    assert refused.value.localized("zh_CN") == (
        "childvault 服务器拒绝了请求：当前用户的角色不允许此调用（staff 不得调用 access.decide）"
    )
    # Nothing of the server's side changed: the refusal log keeps the English detail.
    logged = [r for r in served.refusals() if r["reason"] == "role"]
    assert logged and logged[-1]["detail"] == "staff may not call access.decide"


def test_a_malformed_call_and_a_release_refusal_read_in_chinese(served: VaultServer) -> None:
    with served.connect("worker2") as staff:
        backend = _backend(staff)
        with pytest.raises(ChildVaultError) as malformed:
            backend.call("audit", "sync", ("x",), {})
        # A redemption is a call of its own (the server commits its count with it).
        with pytest.raises(AccessDenied) as release:
            backend.call("release", "redeem", (ZERO,), {})
    assert str(malformed.value) == (
        "the server could not read the request (audit.sync takes one entry number (0 or more))"
    )
    assert malformed.value.localized("zh_CN") == (
        "服务器无法读取该请求（audit.sync 接受一个条目编号（0 或更大））"
    )
    assert str(release.value) == (
        "the childvault server refused the request: the server refused to release the keys "
        f"(grant {ZERO}: unknown grant)"
    )
    assert release.value.localized("zh_CN").endswith(f"（授权 {ZERO}：未知的授权）")
    assert "release" not in release.value.localized("zh_CN")


def test_a_replay_is_refused_by_code_alone_and_reads_in_chinese(served: VaultServer) -> None:
    with served.connect("worker2") as staff:
        backend = _backend(staff)
        first = backend._http.get(served.url + "/v1/vault", timeout=60)
        assert first.status_code == 200
        # The very same signed request again: same nonce, a replay.
        again = requests.Session().send(first.request, timeout=60)
        assert again.status_code == 401
        # The signature layer never sends its internal detail, only the code.
        assert again.json() == {"error": "unauthorized", "reason": "replay"}
        with pytest.raises(AccessDenied) as replay:
            backend._answer(again)
    assert str(replay.value) == (
        "the childvault server refused the request: "
        "the request was already received once (a replay)"
    )
    assert "重放" in replay.value.localized("zh_CN")


def test_the_answer_carries_the_template_and_the_same_english(served: VaultServer) -> None:
    with served.connect("worker2") as staff:
        backend = _backend(staff)
        r = backend._http.post(
            served.url + "/v1/rpc",
            data=json.dumps({"repo": "audit", "method": "last", "args": [1]}),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
    doc = r.json()
    assert r.status_code == 400
    assert doc["error"] == "audit.last takes no arguments"
    assert doc["reason"] == "malformed"
    assert doc["template"] == "audit.last takes no arguments" and doc["params"] == {}


def test_a_tampered_template_falls_back_to_the_english() -> None:
    sent = {
        "error": "staff may not call access.decide",
        "reason": "role",
        "template": "{roles} may not call {repo}.{method}",
        "params": {"roles": "staff", "repo": "access", "method": "decide"},
    }
    honest = refusal_message(403, sent)
    assert "staff 不得调用 access.decide" in localize(honest, "zh_CN")
    # A template (or a value) that renders to other text than the English sent:
    # the client shows the English, never what the template would say.
    for tampered in (
        {**sent, "template": "{roles} may call {repo}.{method}"},
        {**sent, "params": {**sent["params"], "roles": "admin"}},
        {**sent, "template": "{roles!a} may not call {repo}.{method}"},
        {**sent, "template": "{roles.__class__} may not call {repo}.{method}"},
        {**sent, "params": {"roles": ["staff"], "repo": "access", "method": "decide"}},
    ):
        shown = localize(refusal_message(403, tampered), "zh_CN")
        assert shown.endswith("（staff may not call access.decide）"), tampered
    # The same check for a plain-text answer's header.
    assert message_from_header("request too large", '{"template":"x","params":{}}') == (
        "request too large"
    )
    assert message_from_header("request too large", "not json") == "request too large"
    assert localize(message_from_header("request too large", None), "zh_CN") == (
        "request too large"
    )


def test_lists_in_messages_use_chinese_separators() -> None:
    roles = join(", ", ["admin", "officer"])
    either = join(" or ", ["csv", "json"])
    several = join("; ", ["a", "b", "c"])
    assert (str(roles), str(either), str(several)) == ("admin, officer", "csv or json", "a; b; c")
    assert localize(roles, "zh_CN") == "admin、officer"
    assert localize(either, "zh_CN") == "csv或json"
    assert localize(several, "zh_CN") == "a；b；c"
    # A list crosses the wire as a nested message and still reads in Chinese.
    fields = message_fields(roles)
    rebuilt = message_from({"error": "admin, officer", **fields})
    assert localize(rebuilt, "zh_CN") == "admin、officer"


def test_the_cli_shows_a_server_refusal_in_chinese_and_json_stays_english(
    served: VaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # worker3's key slot is gone from the server's home (as after an admin's
    # mistake): the server refuses the bootstrap, naming the user.
    slots_file = served.home / "keyslots.json"
    original = slots_file.read_bytes()
    slots = json.loads(original)
    del slots["slots"]["worker3"]
    slots_file.write_text(json.dumps(slots), encoding="utf-8")
    try:
        monkeypatch.setenv("LC_ALL", "zh_CN.UTF-8")
        monkeypatch.setenv("LANG", "zh_CN.UTF-8")
        chinese = served.cli("worker3", "list", expect=None)
        as_json = served.cli("worker3", "--json", "list", expect=None)
        monkeypatch.setenv("LC_ALL", "C.UTF-8")
        monkeypatch.setenv("LANG", "C.UTF-8")
        english = served.cli("worker3", "list", expect=None)
    finally:
        slots_file.write_bytes(original)
    assert chinese.returncode != 0 and english.returncode == chinese.returncode
    detail_en = "(worker3 has no key slot in this vault)"
    assert detail_en in english.stderr.decode()
    assert "（worker3 在此档案库中没有密钥槽）" in chinese.stderr.decode()
    assert detail_en not in chinese.stderr.decode()
    message = json.loads(as_json.stdout)["error"]["message"]
    assert message.endswith(detail_en)


def test_witness_refusals_read_in_chinese(tmp_path: Path) -> None:
    log = Log("example.org/log-key", [b"entry %d" % i for i in range(8)])
    witness = WitnessProcess(tmp_path / "witness", [log.vkey])
    witness.start()
    try:
        # A malformed request: the English text as before, its template in a header.
        bad = witness.add(b"old 0\n")
        assert bad.status_code == 400
        assert bad.text == "request has no blank line before the checkpoint\n"
        shown = message_from_header(bad.text.strip(), bad.headers.get(HEADER))
        assert localize(shown, "zh_CN") == "请求在检查点之前没有空行"
        assert message_header(shown) == bad.headers.get(HEADER)

        # A log server's client sending a proof that does not verify: the refusal
        # it reports quotes the witness's reason, translated.
        client = WitnessClient(witness.url, witness.vkey())
        client.cosign(log.note(3), lambda old: [])
        with pytest.raises(WitnessFailed) as refused:
            client.cosign(log.note(6), lambda old: [b"\0" * 32])
    finally:
        witness.stop()
    assert str(refused.value) == (
        f"the witness {witness.url} refused the checkpoint "
        "(422: the consistency proof does not verify)"
    )
    assert refused.value.localized("zh_CN").endswith("一致性证明验证失败）")
