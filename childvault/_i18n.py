"""Message translation for every childvault front end (console now, CLI later).

Catalogs are gettext ``.po`` files under ``childvault/locale/<locale>/LC_MESSAGES/``
(domain ``childvault``), kept as source in the repository. They are loaded at run
time with Babel and compiled in memory, so no generated ``.mo`` file is committed
or has to be built before the package works (an editable install, a wheel and a
source checkout all behave the same). English is the source language: a message
without a translation, or a locale without a catalog, falls back to it.

Babel is imported only when a catalog is actually loaded, so an English session
pays nothing for it.

Library errors carry a :class:`Message` (made with :func:`_t`): a ``str`` that is
the English text, so ``str(exc)``, logs and ``--json`` stay English and stable,
and that remembers its template and values, so a front end can show it in the
reader's language (:func:`localize`). The catalog checks (``python -m
childvault._catalog --missing``) live in :mod:`childvault._catalog`: they read
the CLI's help texts, and the CLI imports this module.
"""

from __future__ import annotations

import functools
import gettext as _gettext
import io
import os
from collections.abc import Iterable, Mapping

__all__ = [
    "DEFAULT_LOCALE",
    "DOMAIN",
    "KEYWORDS",
    "LOCALES",
    "N_",
    "SEPARATORS",
    "Message",
    "_t",
    "environment_locale",
    "gettext",
    "join",
    "localize",
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
    # Imported here: an English session never reads a catalog (and
    # importlib.resources pulls in tempfile, zipfile and more at start-up).
    import importlib.resources

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


class Message(str):
    """English text that remembers its template and values, for later translation.

    It *is* the English text (a ``str``), so code that compares, logs or
    serialises it sees English; :meth:`in_locale` renders the template in
    another locale. Templates use ``str.format`` placeholders (``{name}``).
    """

    template: str
    params: dict[str, object]

    def __new__(cls, template: str, /, **params: object) -> Message:
        """The English text of ``template`` filled with ``params``."""
        text = template.format(**params) if params else template
        self = super().__new__(cls, text)
        self.template = template
        self.params = params
        return self

    def __getnewargs__(self) -> tuple[str]:
        # Pickled (an exception crossing a process) as its English text.
        return (str(self),)

    def in_locale(self, locale: str | None = None) -> str:
        """This message in ``locale`` (the environment's when None); English if untranslated."""
        template = getattr(self, "template", None)
        if template is None:
            return str(self)
        params = {
            name: value.in_locale(locale) if isinstance(value, Message) else value
            for name, value in self.params.items()
        }
        translated = gettext(template, locale)
        try:
            return translated.format(**params) if params else translated
        except (KeyError, IndexError, ValueError):
            # A broken translation must not hide the error: show the English text.
            return str(self)


def _t(template: str, /, **params: object) -> Message:
    """Mark a library message for translation, keeping it English for ``str()``.

    ``raise NotFound(_t("no record {id}", id=rid))``: the exception type and its
    English text are unchanged; the CLI shows the message through
    :func:`localize`.
    """
    return Message(template, **params)


#: Separators :func:`join` translates (a zh_CN reader gets "；", "、", "或"). Babel's
#: ``format_list`` would change the English too ("a, b, and c"), which tests and
#: logs pin: only the separator between the parts is translated here.
SEPARATORS: dict[str, str] = {
    "; ": N_("; "),
    ", ": N_(", "),
    " or ": N_(" or "),
}


def join(separator: str, parts: Iterable[str]) -> Message:
    """``separator.join(parts)`` that stays translatable: each marked part is
    translated when the whole is shown (a list of marked items in one message),
    and so is a separator of :data:`SEPARATORS`."""
    # Positional placeholders: the template is never a msgid (gettext finds no
    # translation and returns it as is), only the parts (and the separator) are.
    parts = list(parts)
    params: dict[str, object] = {f"p{i}": part for i, part in enumerate(parts)}
    if separator in SEPARATORS and len(parts) > 1:
        # A nested message, so it also crosses the wire (_wire_messages) translatable.
        params["sep"] = Message(SEPARATORS[separator])
        template = "{sep}".join(f"{{p{i}}}" for i in range(len(parts)))
    else:
        escaped = separator.replace("{", "{{").replace("}", "}}")
        template = escaped.join(f"{{p{i}}}" for i in range(len(parts)))
    return Message(template, **params)


def localize(message: object, locale: str | None = None) -> str:
    """``message`` for a reader in ``locale``: a :class:`Message` translated, other text as is."""
    if isinstance(message, Message):
        return message.in_locale(locale)
    return "" if message is None else str(message)


#: Extraction keywords besides Babel's defaults (``_``, ``gettext``, ``ngettext``, ``N_``...).
KEYWORDS: dict[str, object] = {"_t": None}
