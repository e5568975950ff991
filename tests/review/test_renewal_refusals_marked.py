"""Review finding RV-2 (session 6, keys renew over a server): the reasons the
server gives when it refuses a key renewal's commit (``check_renewals`` in
``childvault/server/_submitted.py``, once ``VaultHost._check_renewals``) are
English f-strings put inside a marked template, so a zh_CN reader gets
"密钥更新 ...: entry 12 is not their own signed request".
``tests/i18n/test_marked.py`` does not see them: they are arguments of a local
``refuse()``, not the message of a ``raise``.

Fixed: each reason is ``_t(...)`` with a zh_CN entry; this scan keeps it so.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "childvault" / "server" / "_submitted.py"


def _unmarked_reasons(function: str) -> list[str]:
    """The reasons passed to ``refuse(name, why)`` in ``function`` that are not ``_t(...)``."""
    tree = ast.parse(SOURCE.read_text(encoding="utf-8"))
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function
    ]
    assert len(found) == 1, f"{function} not found in {SOURCE}"
    unmarked = []
    for node in ast.walk(found[0]):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "refuse"
            and len(node.args) == 2
        ):
            why = node.args[1]
            marked = (
                isinstance(why, ast.Call) and isinstance(why.func, ast.Name) and why.func.id == "_t"
            )
            if not marked:
                unmarked.append(ast.unparse(why))
    return unmarked


def test_the_scan_sees_refuse_calls() -> None:
    # The scan itself can fail: the function exists and has refuse() calls.
    source = SOURCE.read_text(encoding="utf-8")
    assert "def check_renewals" in source
    assert "refuse(name," in source


def test_key_renewal_refusal_reasons_are_marked() -> None:
    assert _unmarked_reasons("check_renewals") == []
