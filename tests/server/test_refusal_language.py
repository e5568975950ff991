"""A refusal of ``childvault serve`` reads in the reader's language (issue 16).

The server sends a stable reason code; the client describes it from its own
catalog (childvault/vault/_wire_messages.py), keeping the server's English
detail, so a Chinese reader is told why in Chinese and ``str()`` stays English.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from childvault.keys import AccessDenied
from tests.server._vaultserver import VaultServer, make_vault

SAMPLE = Path(__file__).resolve().parents[2] / "childvault" / "vault" / "data" / "sample.csv"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    vs = make_vault(tmp_path_factory.mktemp("vault"))
    vs.start()
    try:
        yield vs
    finally:
        vs.stop()


def test_a_role_refusal_reads_in_chinese_and_keeps_the_english(served: VaultServer) -> None:
    with served.connect("worker1") as staff:
        db = staff._session.db
        with pytest.raises(AccessDenied) as refused, db.transaction():
            db.access.decide("0" * 32, status="approved", by="worker1", at="x", reason=None)
    english = str(refused.value)
    assert english.startswith(
        "the childvault server refused the request: the acting user's roles do not allow "
        "this call ("
    )
    assert "may not call access.decide" in english
    chinese = refused.value.localized("zh_CN")
    assert chinese.startswith("childvault 服务器拒绝了请求：当前用户的角色不允许此调用（")
    # The server's own detail (English, naming the call) is kept for the operator.
    assert "access.decide" in chinese
