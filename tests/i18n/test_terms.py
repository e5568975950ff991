"""One Chinese name for one thing: the vault is 档案库 in every zh_CN message.

The catalog had two words for childvault's vault (档案库 in 64 messages, 保险库
in 25), so one screen could call the same thing by both names (`init` printed
"创建档案库", `audit log` "创建保险库"; two server refusals of the same busy
vault differed only by that word). HashiCorp Vault / OpenBao stays "Vault".
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.pofile import read_po

import childvault

CATALOG = Path(childvault.__file__).parent / "locale" / "zh_CN" / "LC_MESSAGES" / "childvault.po"
#: Words once used for the vault besides the chosen one.
OTHER_NAMES = ("保险库", "金库")


def test_the_vault_has_one_chinese_name() -> None:
    with CATALOG.open("rb") as fh:
        catalog = read_po(fh)
    mixed = []
    for message in catalog:
        texts = message.string if isinstance(message.string, tuple) else (message.string,)
        if any(name in (text or "") for text in texts for name in OTHER_NAMES):
            mixed.append(message.id)
    assert mixed == []
    created = catalog.get("vault created")
    assert created is not None and created.string == "创建档案库"
