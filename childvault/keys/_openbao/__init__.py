"""The HashiCorp Vault / OpenBao key provider, one module per engine.

- :mod:`._settings`: :class:`VaultSettings` (pure configuration).
- :mod:`._formats`: derivation context, key blob, salt document, grant
  material, blind-index input (pure functions, no I/O).
- :mod:`._http`: the connection (one ``requests.Session``, token or AppRole
  login, error mapping with scrubbed messages).
- :mod:`._transit`, :mod:`._salts`, :mod:`._wrapping`: the Transit engine, the
  KV v2 salt documents, response wrapping.
- :mod:`._provider`: :class:`VaultProvider`, composed from those engines.
- :mod:`._setup`, :mod:`._diagnose`: server preparation and ``doctor`` checks.
- :mod:`._identity`: per-person Vault identities (AppRole role, entity, group).

hvac and requests are optional (``pip install 'childvault[vault]'``) and heavy
to import, so the modules that need them are loaded on first use: importing
this package (or :mod:`._formats`, :mod:`._settings`) does not import them, and
using them without the extra raises :class:`~childvault.keys.ExtraRequired`.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

from childvault._i18n import _t
from childvault.keys._errors import ExtraRequired
from childvault.keys._openbao._policies import POLICY_NAMES
from childvault.keys._openbao._settings import VaultSettings

if TYPE_CHECKING:
    from childvault.keys._openbao._identity import add_person
    from childvault.keys._openbao._provider import VaultProvider
    from childvault.keys._openbao._setup import render_policies, setup

__all__ = [
    "POLICY_NAMES",
    "VaultProvider",
    "VaultSettings",
    "add_person",
    "load",
    "render_policies",
    "setup",
]

#: The distributions the ``vault`` extra installs (their import names).
_EXTRA_MODULES = ("hvac", "requests", "urllib3")

# Public name -> the module that defines it (those that import hvac).
_WHERE = {
    "VaultProvider": "_provider",
    "add_person": "_identity",
    "render_policies": "_setup",
    "setup": "_setup",
}


def load(module: str) -> ModuleType:
    """Import ``childvault.keys._openbao.<module>``; a missing hvac/requests is an
    :class:`ExtraRequired` naming ``pip install 'childvault[vault]'``."""
    try:
        return import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _EXTRA_MODULES:
            raise ExtraRequired("vault", _t("the Vault / OpenBao key provider")) from exc
        raise


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(load(module), name)
