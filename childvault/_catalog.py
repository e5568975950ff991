"""The message catalog checks: what the package asks to translate, and what is missing.

``python -m childvault._catalog --missing`` lists the msgids without a zh_CN
translation (exit 1 if any). A module of its own, apart from :mod:`childvault._i18n`,
because it reads every help text of the CLI, and the CLI imports ``_i18n``: kept
there, the two would import each other.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from childvault._i18n import DOMAIN, KEYWORDS

__all__ = ["missing_messages", "source_messages"]


def _keywords() -> dict[str, object]:
    from babel.messages.extract import DEFAULT_KEYWORDS

    return {**DEFAULT_KEYWORDS, **KEYWORDS}


def _source_folder(path: str) -> bool:
    name = os.path.basename(path)
    return not name.startswith(".") and name != "__pycache__"


def source_messages() -> dict[str, tuple[str, ...]]:
    """Every msgid the package asks to translate: msgid -> its forms (singular, plural).

    Found by Babel over the sources (``locale/babel.cfg``: ``_``, ``_t``, ``N_``...)
    and, for the command line, in the help of every click command and option
    (help texts stay plain English in the source and are translated when shown).
    """
    from babel.messages.extract import extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    package = Path(__file__).resolve().parent
    mapping = package / "locale" / "babel.cfg"
    with mapping.open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle, str(mapping))  # type: ignore[no-untyped-call]
    found: dict[str, tuple[str, ...]] = {}
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        package.parent,
        method_map,
        options_map,
        keywords=_keywords(),  # type: ignore[arg-type]
        # Babel skips folders starting with "_" by default: ours (_sqlcipher,
        # _postgres, _openbao) hold messages too.
        directory_filter=_source_folder,
    ):
        forms = message if isinstance(message, tuple) else (message,)
        if forms and forms[0]:
            found.setdefault(forms[0], tuple(f for f in forms if f))
    from childvault.cli.main import help_messages

    for text in help_messages():
        found.setdefault(text, (text,))
    return found


def missing_messages(locale: str = "zh_CN") -> list[str]:
    """The msgids with no (or only a fuzzy or empty) translation in ``locale``'s catalog."""
    from babel.messages.pofile import read_po

    path = Path(__file__).resolve().parent / "locale" / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=None, domain=DOMAIN)
    missing = []
    for msgid in sorted(source_messages()):
        entry = catalog.get(msgid)
        raw = None if entry is None else entry.string
        strings = tuple(raw) if isinstance(raw, tuple | list) else (raw,)
        if entry is None or entry.fuzzy or not all(strings):
            missing.append(msgid)
    return missing


def _main(argv: list[str] | None = None) -> int:
    """``python -m childvault._catalog --missing``: list untranslated msgids (exit 1 if any)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m childvault._catalog", description="childvault message catalog checks"
    )
    parser.add_argument("--missing", action="store_true", help="list msgids without a translation")
    parser.add_argument("--locale", default="zh_CN", help="catalog to check (default zh_CN)")
    args = parser.parse_args(argv)
    if not args.missing:
        parser.print_help()
        return 2
    missing = missing_messages(args.locale)
    total = len(source_messages())
    for msgid in missing:
        # JSON-quoted: one msgid per line even when it spans lines.
        print(json.dumps(msgid, ensure_ascii=False))
    print(f"{len(missing)} of {total} msgids have no {args.locale} translation", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(_main())
