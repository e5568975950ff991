"""The zh_CN catalog covers every message of the package, and its translations
keep the placeholders of their source (a translation that drops or renames one
would fail, or lose a value, in Chinese only)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

from childvault import _catalog, _i18n

CATALOG = Path(_i18n.__file__).parent / "locale" / "zh_CN" / "LC_MESSAGES" / "childvault.po"
#: str.format fields (``{name}``, ``{n:8}``, ``{x!r}``) and %-format fields.
_FIELD = re.compile(r"\{([^{}]*)\}|%\((\w+)\)s")


def _fields(text: str) -> set[str]:
    return {brace or percent for brace, percent in _FIELD.findall(text)}


def test_the_extractor_sees_cli_library_console_and_click() -> None:
    # Guards the extraction itself: a broken mapping would make the next test vacuous.
    messages = _catalog.source_messages()
    assert "Added record {id}." in messages  # a CLI message, _()
    assert (
        "List pending access requests: officers see everyone's, staff their own." in messages
    )  # a command's help
    assert "Acting user (or CHILDVAULT_USER)." in messages  # an option's help
    assert "{path}: the header row is not valid CSV" in messages  # a library _t message
    assert "Usage:" in messages  # click's own
    assert "Approval queue" in messages  # the console's templates
    assert len(messages) > 400


def test_every_message_has_a_zh_cn_translation() -> None:
    missing = _catalog.missing_messages("zh_CN")
    assert not missing, (
        f"{len(missing)} msgid(s) have no zh_CN translation; list them with "
        "`python -m childvault._catalog --missing` and append entries to "
        f"{CATALOG.relative_to(CATALOG.parents[4])}:\n" + "\n".join(map(repr, missing))
    )


def test_translations_keep_the_placeholders_of_their_source() -> None:
    with CATALOG.open("rb") as handle:
        catalog = read_po(handle, locale=None)
    problems = []
    for message in catalog:
        if not message.id or not message.string:
            continue
        forms = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        allowed = set().union(*(_fields(f) for f in forms))
        for text in strings:
            got = _fields(text)
            # One plural form in Chinese: it may use the fields of any source form.
            ok = got <= allowed if len(forms) > 1 else got == _fields(forms[0])
            if text and not ok:
                problems.append(f"{forms[0]!r} -> {text!r}")
    assert not problems, "placeholders differ:\n" + "\n".join(problems)


def test_the_missing_command_lists_nothing_and_says_so() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "childvault._catalog", "--missing"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert re.match(r"0 of \d+ msgids have no zh_CN translation", result.stderr)
