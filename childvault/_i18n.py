"""Message translation for every childvault front end (console now, CLI later).

Catalogs are gettext ``.po`` files under ``childvault/locale/<locale>/LC_MESSAGES/``
(domain ``childvault``), kept as source in the repository. They are loaded at run
time with Babel and compiled in memory, so no generated ``.mo`` file is committed
or has to be built before the package works (an editable install, a wheel and a
source checkout all behave the same). English is the source language: a message
without a translation, or a locale without a catalog, falls back to it.

Babel is imported only when a catalog is actually loaded, so an English session
pays nothing for it.
"""

from __future__ import annotations

import functools
import gettext as _gettext
import importlib.resources
import io
import os
from collections.abc import Mapping

__all__ = [
    "DEFAULT_LOCALE",
    "DOMAIN",
    "LOCALES",
    "N_",
    "environment_locale",
    "gettext",
    "ngettext",
    "normalize_locale",
    "translations",
]

#: The gettext domain of every childvault catalog.
DOMAIN = "childvault"
#: Locales that ship a catalog, besides English (the source language).
LOCALES = ("zh_CN",)
#: The source language, used when nothing else is chosen or found.
DEFAULT_LOCALE = "en"


def N_(message: str) -> str:
    """Mark ``message`` for extraction without translating it now.

    For messages defined at import time (labels in tables) and translated
    later, when the locale is known.
    """
    return message


def normalize_locale(value: str | None) -> str:
    """Map a locale name (``zh_CN.UTF-8``, ``zh-cn``, ``en_US``, ``C``) to a shipped one.

    Chinese in Simplified script (``zh``, ``zh_CN``, ``zh_SG``, ``zh_Hans...``)
    maps to ``zh_CN``; anything else, including Traditional Chinese (no catalog
    yet), maps to English, the source language.
    """
    if not value:
        return DEFAULT_LOCALE
    # Drop the encoding and modifier (``zh_CN.UTF-8@pinyin``); accept BCP 47 dashes.
    base = value.split(".", 1)[0].split("@", 1)[0].replace("-", "_")
    parts = [p.lower() for p in base.split("_") if p]
    if not parts or parts[0] != "zh":
        return DEFAULT_LOCALE
    rest = parts[1:]
    if not rest or rest[0] in ("cn", "sg", "hans"):
        return "zh_CN"
    return DEFAULT_LOCALE


def environment_locale(environ: Mapping[str, str] | None = None) -> str:
    """The locale a command-line user asked for, by POSIX precedence.

    ``LC_ALL`` overrides ``LC_MESSAGES``, which overrides ``LANG``; the first
    one set and non-empty decides (an unset or ``C`` locale means English).
    """
    env = os.environ if environ is None else environ
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name)
        if value:
            return normalize_locale(value)
    return DEFAULT_LOCALE


@functools.cache
def translations(locale: str | None) -> _gettext.NullTranslations:
    """The translations for ``locale`` (cached; English fallback for unknown ones)."""
    name = normalize_locale(locale)
    if name not in LOCALES:
        return _gettext.NullTranslations()
    resource = (
        importlib.resources.files("childvault")
        .joinpath("locale")
        .joinpath(name)
        .joinpath("LC_MESSAGES")
        .joinpath(f"{DOMAIN}.po")
    )
    try:
        source = resource.read_bytes()
    except OSError:
        # A packaging mistake must not stop the program: show English instead.
        return _gettext.NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    # locale=None: the plural rule comes from the catalog's own Plural-Forms header,
    # and Babel need not load its CLDR locale data (which only slows the start).
    catalog = read_po(io.BytesIO(source), locale=None, domain=DOMAIN)
    compiled = io.BytesIO()
    # Fuzzy entries are guesses awaiting review: never shown (write_mo skips them).
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return _gettext.GNUTranslations(compiled)


def gettext(message: str, locale: str | None = None) -> str:
    """``message`` translated into ``locale`` (the environment's locale when None)."""
    chosen = environment_locale() if locale is None else locale
    return translations(chosen).gettext(message)


def ngettext(singular: str, plural: str, n: int, locale: str | None = None) -> str:
    """The singular or plural form for ``n``, translated into ``locale``."""
    chosen = environment_locale() if locale is None else locale
    return translations(chosen).ngettext(singular, plural, n)
