"""The message catalogs: every console message has a zh_CN translation, and the
locale is chosen the way the console and (later) the CLI expect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from childvault import _catalog, _i18n

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "childvault" / "locale" / "babel.cfg"
CATALOG = ROOT / "childvault" / "locale" / "zh_CN" / "LC_MESSAGES" / "childvault.po"
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _source_messages() -> dict[str, tuple[str, ...]]:
    """Every message the package asks to translate (console, CLI help and messages,
    library errors): msgid -> forms. The same extraction as
    ``python -m childvault._catalog --missing`` (keywords ``_``, ``_t``, ``N_``...)."""
    with MAPPING.open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle, str(MAPPING))
    for filename, _lineno, message, _comments, _context in extract_from_dir(
        ROOT, method_map, options_map, keywords=_catalog._keywords()
    ):
        forms = message if isinstance(message, tuple) else (message,)
        assert all(forms), f"an empty message is marked for translation in {filename}"
    return _catalog.source_messages()


def test_the_extractor_sees_the_console() -> None:
    # Guards the mapping itself: a broken babel.cfg would make the next test vacuous.
    messages = _source_messages()
    assert "Approval queue" in messages  # a template
    assert "The request was denied." in messages  # the app's Python code
    assert "request approved" in messages  # a label marked with N_
    assert len(messages) > 100


def test_every_console_message_has_a_zh_cn_translation() -> None:
    with CATALOG.open("rb") as handle:
        catalog = read_po(handle, locale="zh_CN")
    problems = []
    for msgid, forms in sorted(_source_messages().items()):
        entry = catalog.get(msgid)
        if entry is None:
            problems.append(f"missing: {msgid!r}")
            continue
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        if entry.fuzzy or not all(strings):
            problems.append(f"untranslated or fuzzy: {msgid!r}")
            continue
        # A translation must use exactly the placeholders of its source, or
        # formatting fails (or silently drops a value) in Chinese only.
        wanted = {name for form in forms for name in _PLACEHOLDER.findall(form)}
        for text in strings:
            if set(_PLACEHOLDER.findall(text)) != wanted:
                problems.append(f"placeholders differ: {msgid!r} -> {text!r}")
    assert not problems, "zh_CN catalog incomplete:\n" + "\n".join(problems)


def test_the_catalog_has_no_stale_entries() -> None:
    # A message removed from the code should leave the catalog too, so translators
    # do not maintain text nobody sees.
    with CATALOG.open("rb") as handle:
        catalog = read_po(handle, locale="zh_CN")
    used = set(_source_messages())
    stale = sorted(m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id)
    stale = [m for m in stale if m not in used]
    assert not stale, f"entries no code uses: {stale}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("zh_CN.UTF-8", "zh_CN"),
        ("zh_CN.GB18030", "zh_CN"),
        ("zh-cn", "zh_CN"),
        ("zh", "zh_CN"),
        ("zh_SG.UTF-8", "zh_CN"),
        ("zh_Hans_CN", "zh_CN"),
        ("zh_TW.UTF-8", "en"),  # Traditional script: no catalog yet
        ("en_US.UTF-8", "en"),
        ("C", "en"),
        ("POSIX", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_locale_names_map_to_shipped_catalogs(value: str | None, expected: str) -> None:
    assert _i18n.normalize_locale(value) == expected


def test_posix_precedence_picks_the_locale() -> None:
    env = {"LANG": "en_US.UTF-8", "LC_MESSAGES": "zh_CN.UTF-8"}
    assert _i18n.environment_locale(env) == "zh_CN"
    assert _i18n.environment_locale({**env, "LC_ALL": "C"}) == "en"
    assert _i18n.environment_locale({"LANG": "zh_CN.UTF-8", "LC_ALL": ""}) == "zh_CN"
    assert _i18n.environment_locale({}) == "en"


def test_translation_and_english_fallback() -> None:
    assert _i18n.gettext("Approval queue", "zh_CN") == "审批队列"
    assert _i18n.gettext("Approval queue", "en") == "Approval queue"
    # Unknown to the catalog: the English source is shown, not an empty string.
    assert _i18n.gettext("no such message here", "zh_CN") == "no such message here"
    assert _i18n.ngettext("%(count)s record", "%(count)s records", 2, "en") == "%(count)s records"
    assert _i18n.ngettext("%(count)s record", "%(count)s records", 2, "zh_CN") == "%(count)s 份档案"
