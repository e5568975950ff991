"""Every message a person reads in the modules below goes through ``_t``.

A new ``raise SomeError("plain text")`` (or an f-string) in these modules would
be shown in English to a Chinese reader: this test finds it by reading the
source, so it fails the day such a message is added. Extend :data:`MODULES`
when a module's messages are all marked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import childvault
from childvault.keys import _errors

PACKAGE = Path(childvault.__file__).resolve().parent

#: Every module of the library, the server and the console (the CLI marks its
#: own text with ``_()``, checked by tests/i18n/test_cli_marked*.py). Since the
#: fifth session of round 2 no module is exempt: a module whose messages are not
#: all marked fails here.
MODULES = sorted(
    path
    for path in PACKAGE.rglob("*.py")
    if path.relative_to(PACKAGE).parts[0] not in ("cli", "locale")
)

#: Their argument is a detail for the audit log, never shown: the message a
#: person reads is the class's own (translated) text.
OPAQUE = {"ApprovalInvalid", "DecryptionFailed"}
#: Takes the name of an extra and a description, not a message.
NOT_A_MESSAGE = {"ExtraRequired"}


def _error_names() -> set[str]:
    found: set[str] = set()
    todo: list[type] = [_errors.ChildVaultError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    # Builtin errors raised for malformed input in these modules reach people too
    # (as the cause of a refusal): marked as well.
    return (found | {"ValueError", "TypeError", "RuntimeError"}) - OPAQUE - NOT_A_MESSAGE


def _is_plain_text(node: ast.expr) -> bool:
    """A literal message: a string, an f-string, a concatenation or ``.format`` of one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return _is_plain_text(node.left) or _is_plain_text(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "format" and _is_plain_text(node.func.value)
    return False


def unmarked(source: str, filename: str = "<source>") -> list[str]:
    """``file:line: Error(...)`` for every error built from plain text in ``source``."""
    names = _error_names()
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        # ``lines.append(...)``: the report lines ``vault setup`` prints;
        # ``problems.append(...)`` / ``out.append(...)``: the lines ``doctor`` prints.
        report_line = (
            name == "append"
            and isinstance(func, ast.Attribute)
            and ast.unparse(func.value) in ("lines", "problems", "out")
        )
        if name not in names and not report_line:
            continue
        args = list(node.args[:1]) + [k.value for k in node.keywords if k.arg == "message"]
        if report_line and ast.unparse(func.value) == "out":
            # A doctor line is a tuple (check, status, message): the message is last.
            # Other ``out`` lists (role names, codes) hold no message.
            args = [a.elts[-1] for a in node.args[:1] if isinstance(a, ast.Tuple) and a.elts]
        if any(_is_plain_text(a) for a in args):
            problems.append(f"{filename}:{node.lineno}: {name}({ast.unparse(args[0])[:60]})")
    return problems


def test_the_scan_finds_plain_messages_and_accepts_marked_ones() -> None:
    # Guards the scanner: a scan that finds nothing would make the next test vacuous.
    bad = (
        "raise UsageError('no')\n"
        "raise ConfigError(f'bad {x}')\n"
        "return ProviderUnavailable('a' 'b')\n"
        "raise errors.NotFound('missing {id}'.format(id=i))\n"
        "raise ValueError('x' + y)\n"
        "lines.append(f'policy {name}: written')\n"
        "problems.append(f'no mount at {path}')\n"
        "out.append(('vault', 'fail', f'{addr} is sealed'))\n"
    )
    assert len(unmarked(bad)) == 8
    good = (
        "raise UsageError(_t('no'))\n"
        "raise ConfigError(_t('bad {x}', x=x))\n"
        "raise DecryptionFailed('detail for the log')\n"
        "raise ApprovalInvalid(f'expired at {t}')\n"
        "raise UsageError(message)\n"
        "lines.append(_t('setup complete'))\n"
        "problems.append(_t('no mount at {path}', path=p))\n"
        "out.append(('vault', 'fail', _t('{addr} is sealed', addr=a)))\n"
        "other.append('not a report line')\n"
        "out.append('staff')\n"
    )
    assert unmarked(good) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_error_message_is_marked_for_translation(path: Path) -> None:
    problems = unmarked(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE)))
    assert not problems, (
        "wrap these messages in childvault._i18n._t (and add zh_CN translations):\n"
        + "\n".join(problems)
    )


def test_marked_messages_of_these_modules_read_in_chinese() -> None:
    from childvault.keys import ConfigError, IntegrityError
    from childvault.keys._openbao._settings import VaultSettings
    from childvault.vault._note import verify_note

    with pytest.raises(ConfigError) as bad_addr:
        VaultSettings("ftp://vault")
    assert str(bad_addr.value).startswith("invalid Vault address 'ftp://vault'")
    assert bad_addr.value.localized("zh_CN").startswith("无效的 Vault 地址 'ftp://vault'")
    with pytest.raises(IntegrityError) as bad_note:
        verify_note("no signature block\n", {})
    assert bad_note.value.localized("zh_CN").startswith("签名笔记")
    assert str(bad_note.value).startswith("signed note")
