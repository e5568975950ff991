"""What the language tests share: the two locales' environments and running the
CLI as one of a test world's users (one copy, not one per test module)."""

from __future__ import annotations

from click.testing import CliRunner, Result

from childvault.cli.main import cli
from tests.conftest import PASSPHRASES, World

#: Chinese, with nothing more specific set that would override ``LANG``.
ZH = {"LANG": "zh_CN.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""}
#: English (the C locale), likewise.
EN = {"LANG": "C.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""}


def user_env(world: World, user: str, lang: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of ``user`` of ``world`` (home, name, passphrase); with
    ``lang`` (:data:`ZH`, :data:`EN`) that language, else the test's own locale
    (conftest pins it, or the ``locale`` marker chooses)."""
    return {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": user,
        "CHILDVAULT_PASSPHRASE": PASSPHRASES[user],
        **(lang or {}),
    }


def run_as(world: World, user: str, *args: str, lang: dict[str, str] | None = None) -> Result:
    """``childvault ARGS`` as ``user`` of ``world`` (exceptions propagate)."""
    return CliRunner().invoke(
        cli, list(args), env=user_env(world, user, lang), catch_exceptions=False
    )
